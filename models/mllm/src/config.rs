//! `config.json` and `generation_config.json` of an ILLUME+ MLLM checkpoint directory.
//!
//! The checkpoint is a Hugging Face `save_pretrained` folder of `IllumeQwen2ForCausalLM`
//! (`model_type: illume_qwen2`): the Qwen2 fields plus the multimodal ones
//! (`mm_vision_tower`, `mm_hidden_size`, `special_tokens_ids`, ...).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{MllmError, Result};

/// The Qwen2 decoder's hyper-parameters (the fields of transformers' `Qwen2Config` that
/// inference uses).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Rows of the embedding matrix and of the LM head (text + image vocabulary + padding).
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

impl DecoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Qwen2.5-0.5B-Instruct's shape (the bench's small reference model).
    pub fn qwen2_5_0_5b() -> Self {
        Self {
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            vocab_size: 151_936,
            tie_word_embeddings: true,
            max_position_embeddings: 32_768,
        }
    }

    /// ILLUME+ 3B's decoder: Qwen2.5-3B-Instruct with 283,047 vocabulary rows.
    pub fn illume_plus_3b() -> Self {
        Self {
            hidden_size: 2048,
            intermediate_size: 11_008,
            num_hidden_layers: 36,
            num_attention_heads: 16,
            num_key_value_heads: 2,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            vocab_size: 283_047,
            tie_word_embeddings: true,
            max_position_embeddings: 32_768,
        }
    }

    /// Parameters of the decoder (embedding counted once when tied); saturates instead of
    /// overflowing, since it is computed from an unchecked config before anything is built.
    pub fn parameter_count(&self) -> u64 {
        let [h, i, kv, vocab, layers] = [
            self.hidden_size,
            self.intermediate_size,
            self.num_key_value_heads.saturating_mul(self.head_dim()),
            self.vocab_size,
            self.num_hidden_layers,
        ]
        .map(|n| n as u64);
        let attention = [h.saturating_mul(h), h, 2 * kv, h.saturating_mul(h)]
            .into_iter()
            .chain([h.saturating_mul(kv).saturating_mul(2)])
            .fold(0u64, u64::saturating_add);
        let layer = attention
            .saturating_add(h.saturating_mul(i).saturating_mul(3))
            .saturating_add(2 * h);
        let embedding = vocab.saturating_mul(h);
        let head = if self.tie_word_embeddings {
            0
        } else {
            embedding
        };
        layers
            .saturating_mul(layer)
            .saturating_add(embedding)
            .saturating_add(h)
            .saturating_add(head)
    }

    /// [`Self::parameter_count`] with the fields behind it, checked against the checkpoint
    /// before the decoder is built.
    pub fn declared_size(&self, config: &Path) -> illume_weights::DeclaredSize {
        illume_weights::DeclaredSize {
            model: "Qwen2 decoder".into(),
            config: config.to_path_buf(),
            parameters: self.parameter_count(),
            fields: format!(
                "num_hidden_layers={} hidden_size={} intermediate_size={} vocab_size={}",
                self.num_hidden_layers, self.hidden_size, self.intermediate_size, self.vocab_size
            ),
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let fail = |reason: String| Err(MllmError::config(path, reason));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!(
                "head dimension {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return fail(format!(
                "rope_theta {} must be a positive number",
                self.rope_theta
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return fail(format!(
                "rms_norm_eps {} must be a positive number",
                self.rms_norm_eps
            ));
        }
        if self.num_hidden_layers == 0 || self.intermediate_size == 0 || self.vocab_size == 0 {
            return fail(
                "num_hidden_layers, intermediate_size and vocab_size must be positive".into(),
            );
        }
        Ok(())
    }
}

/// `mm_vision_tower` of the config: the DualVisionTower's preprocessing limits.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionTowerSettings {
    /// Pixel budget of the MoVQ image processor's smart resize (`min_pixels`, `max_pixels`).
    pub min_pixels: usize,
    pub max_pixels: usize,
    /// The DualViTok config file the official code builds the tower from (informative).
    pub vq_config: Option<String>,
}

/// Everything `config.json` says that the runtime uses.
#[derive(Debug, Clone, PartialEq)]
pub struct MllmConfig {
    pub decoder: DecoderConfig,
    pub vision_tower: VisionTowerSettings,
    /// Input widths of the two projectors: `[semantic (ViT merger out), pixel (MoVQ z)]`.
    pub mm_hidden_size: [usize; 2],
    /// `[<start_of_image>, <end_of_image>, <end_of_line>, <start_of_level0>,
    /// <end_of_level0>, <start_of_level1>, <end_of_level1>]`.
    pub special_tokens_ids: [u32; 7],
    /// Spliced sequences are truncated to this length by the official code.
    pub tokenizer_model_max_length: Option<usize>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    vocab_size: usize,
    /// transformers' `Qwen2Config` defaults to untied embeddings.
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    rope_scaling: Value,
    #[serde(default)]
    use_sliding_window: bool,
    mm_hidden_size: Option<Vec<usize>>,
    special_tokens_ids: Option<Vec<u32>>,
    mm_vision_tower: Option<Value>,
    tokenizer_model_max_length: Option<usize>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_positions() -> usize {
    32_768
}
fn default_act() -> String {
    "silu".into()
}

/// Pixel limits of the official `DualVisionTower` when the config does not set them.
const DEFAULT_TOWER_PIXELS: usize = 256 * 256;

impl MllmConfig {
    /// Read `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MllmError::io(path, e))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| MllmError::config(path, format!("not an ILLUME+ MLLM config: {e}")))?;
        let fail = |reason: String| Err(MllmError::config(path, reason));
        match raw.model_type.as_deref() {
            Some("illume_qwen2") => {}
            other => {
                return fail(format!(
                    "model_type is {other:?}, expected \"illume_qwen2\" (an ILLUME+ MLLM checkpoint \
                     such as ILLUME-MLLM/illume_plus-qwen2_5-3b)"
                ));
            }
        }
        if raw.hidden_act != "silu" {
            return fail(format!(
                "hidden_act {:?} is not supported (Qwen2 uses \"silu\")",
                raw.hidden_act
            ));
        }
        if !raw.rope_scaling.is_null() {
            return fail(format!(
                "rope_scaling {} is not supported (ILLUME+ uses plain RoPE)",
                raw.rope_scaling
            ));
        }
        if raw.use_sliding_window {
            return fail(
                "use_sliding_window=true is not supported (ILLUME+ uses full attention)".into(),
            );
        }
        let decoder = DecoderConfig {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            vocab_size: raw.vocab_size,
            tie_word_embeddings: raw.tie_word_embeddings,
            max_position_embeddings: raw.max_position_embeddings,
        };
        decoder.validate(path)?;
        let mm_hidden_size = match raw.mm_hidden_size.as_deref() {
            Some([semantic, pixel]) => [*semantic, *pixel],
            other => {
                return fail(format!(
                    "mm_hidden_size must be [semantic, pixel], found {other:?}"
                ));
            }
        };
        let special_tokens_ids: [u32; 7] = match raw.special_tokens_ids {
            Some(ids) => ids.try_into().map_err(|ids: Vec<u32>| {
                MllmError::config(
                    path,
                    format!("special_tokens_ids must list 7 ids, found {}", ids.len()),
                )
            })?,
            None => {
                return fail("special_tokens_ids is missing (the 7 image structure tokens)".into());
            }
        };
        if let Some(id) = special_tokens_ids
            .iter()
            .find(|&&id| id as usize >= decoder.vocab_size)
        {
            return fail(format!(
                "special token id {id} is outside the vocabulary ({} rows)",
                decoder.vocab_size
            ));
        }
        let tower = raw.mm_vision_tower.unwrap_or(Value::Null);
        let pixels = |key: &str| -> Result<usize> {
            match tower.get(key) {
                None | Some(Value::Null) => Ok(DEFAULT_TOWER_PIXELS),
                Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| {
                    MllmError::config(path, format!("mm_vision_tower.{key} must be an integer"))
                }),
            }
        };
        let vision_tower = VisionTowerSettings {
            min_pixels: pixels("min_pixels")?,
            max_pixels: pixels("max_pixels")?,
            vq_config: tower
                .get("vq_config")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        if vision_tower.min_pixels == 0 || vision_tower.min_pixels > vision_tower.max_pixels {
            return fail(format!(
                "mm_vision_tower pixel limits are inconsistent: min {} max {}",
                vision_tower.min_pixels, vision_tower.max_pixels
            ));
        }
        Ok(Self {
            decoder,
            vision_tower,
            mm_hidden_size,
            special_tokens_ids,
            tokenizer_model_max_length: raw.tokenizer_model_max_length,
        })
    }
}

/// What the official `generate` takes from `generation_config.json`, and how we apply it.
///
/// - `eos_token_id` (int or list): generation stops at any of them (as HF does), in addition
///   to `<|im_end|>`, which the official chat code passes explicitly.
/// - `repetition_penalty` (≠ 1): applied as transformers' `RepetitionPenaltyLogitsProcessor`
///   to the raw conditional logits of already *generated* ids (the official `generate` runs
///   on `inputs_embeds`, so the prompt is not penalised), before the ILLUME processors.
/// - `do_sample`, `temperature`, `top_k`, `top_p`, `max_new_tokens`, `max_length`: every
///   official call passes its own values, which override the file's; ignored.
/// - `bos_token_id`, `pad_token_id`: not used by decoder-only generation at batch size 1.
/// - Any other field that would change the logits (`no_repeat_ngram_size`, `min_new_tokens`,
///   `bad_words_ids`, `typical_p`, ...) with a non-default value is refused with an error
///   rather than silently ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub eos_token_ids: Vec<u32>,
    pub repetition_penalty: f32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            eos_token_ids: Vec::new(),
            repetition_penalty: 1.0,
        }
    }
}

/// Logits-changing fields of transformers' `GenerationConfig` this runtime does not
/// implement, with their neutral values.
const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    ("no_repeat_ngram_size", "0"),
    ("encoder_no_repeat_ngram_size", "0"),
    ("bad_words_ids", "null"),
    ("min_length", "0"),
    ("min_new_tokens", "null"),
    ("forced_bos_token_id", "null"),
    ("forced_eos_token_id", "null"),
    ("suppress_tokens", "null"),
    ("begin_suppress_tokens", "null"),
    ("sequence_bias", "null"),
    ("exponential_decay_length_penalty", "null"),
    ("epsilon_cutoff", "0.0"),
    ("eta_cutoff", "0.0"),
    ("typical_p", "1.0"),
    ("min_p", "null"),
    ("guidance_scale", "null"),
    ("renormalize_logits", "false"),
    ("num_beams", "1"),
];

impl GenerationConfig {
    /// Read `dir/generation_config.json`; a directory without one gets the defaults.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| MllmError::io(&path, e))?;
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| MllmError::config(path, format!("not JSON: {e}")))?;
        let ids = |v: &Value| -> Option<Vec<u32>> {
            match v {
                Value::Null => Some(Vec::new()),
                Value::Number(n) => n.as_u64().map(|id| vec![id as u32]),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_u64().map(|id| id as u32))
                    .collect(),
                _ => None,
            }
        };
        let eos_token_ids =
            ids(value.get("eos_token_id").unwrap_or(&Value::Null)).ok_or_else(|| {
                MllmError::config(path, "eos_token_id must be an id or a list of ids")
            })?;
        let repetition_penalty = match value.get("repetition_penalty") {
            None | Some(Value::Null) => 1.0,
            Some(v) => v.as_f64().filter(|p| *p > 0.0).ok_or_else(|| {
                MllmError::config(path, "repetition_penalty must be a positive number")
            })? as f32,
        };
        for (field, neutral) in UNSUPPORTED_FIELDS {
            if let Some(v) = value.get(*field) {
                let neutral: Value = serde_json::from_str(neutral).expect("valid literal");
                let same = match (v.as_f64(), neutral.as_f64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => *v == neutral,
                };
                if !same {
                    return Err(MllmError::config(
                        path,
                        format!(
                            "{field}={v} changes the logits in transformers' generate and is not supported here"
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            eos_token_ids,
            repetition_penalty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../demo/config.json");

    #[test]
    fn reads_the_fixture_config() {
        let config = MllmConfig::parse(FIXTURE, Path::new("config.json")).unwrap();
        assert_eq!(config.decoder.head_dim(), 16);
        assert_eq!(config.decoder.num_key_value_heads, 2);
        assert!(config.decoder.tie_word_embeddings);
        assert_eq!(config.mm_hidden_size, [48, 16]);
        assert_eq!(config.special_tokens_ids[0], 240);
        assert_eq!(config.vision_tower.min_pixels, 32 * 32);
        assert_eq!(config.vision_tower.max_pixels, 768 * 768);
    }

    #[test]
    fn refuses_other_models_and_unsupported_features() {
        let other = FIXTURE.replace("illume_qwen2", "llama");
        let err = MllmConfig::parse(&other, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("illume_qwen2"), "{err}");
        let scaled = FIXTURE.replace(
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"type\": \"yarn\"}",
        );
        let err = MllmConfig::parse(&scaled, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rope_scaling"), "{err}");
        let err = MllmConfig::parse("{}", Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an ILLUME+ MLLM config"), "{err}");
    }

    #[test]
    fn generation_config_fields() {
        let g = GenerationConfig::parse(
            r#"{"eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "top_k": 20, "temperature": 0.7}"#,
            Path::new("g.json"),
        )
        .unwrap();
        assert_eq!(g.eos_token_ids, vec![151645, 151643]);
        assert!((g.repetition_penalty - 1.05).abs() < 1e-6);
        let err = GenerationConfig::parse(r#"{"no_repeat_ngram_size": 3}"#, Path::new("g.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_repeat_ngram_size"), "{err}");
        assert!(GenerationConfig::parse(r#"{"typical_p": 1.0}"#, Path::new("g.json")).is_ok());
    }

    #[test]
    fn parameter_counts_match_the_published_sizes() {
        // Qwen2.5-0.5B: 494 M parameters; ILLUME+ 3B decoder: 2.775 B + 0.580 B embedding.
        let small = DecoderConfig::qwen2_5_0_5b().parameter_count() as f64 / 1e9;
        assert!((small - 0.494).abs() < 0.001, "{small}");
        let big = DecoderConfig::illume_plus_3b().parameter_count() as f64 / 1e9;
        assert!((big - 3.355).abs() < 0.002, "{big}");
    }
}
