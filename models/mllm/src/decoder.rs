//! The Qwen2 decoder stack (`model.layers.*`, `model.norm`) and the language model around
//! it: vocabulary-sharded embedding and LM head, rotary positions, KV-cached forward.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;
use illume_weights::{Checkpoint, LoadOptions};

use crate::attention::{Qwen2Attention, RowPositions};
use crate::config::DecoderConfig;
use crate::error::{MllmError, Result};
use crate::kv_cache::KvCache;
use crate::mlp::Qwen2Mlp;
use crate::rope::RotaryEmbedding;
use crate::vocab_shards::VocabShards;

/// Qwen2's RMSNorm: `x / sqrt(mean(x²) + eps) · weight` (f32 compute).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(size: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([size], device)),
            eps,
        }
    }
}

impl<B: IllumeBackend> RmsNorm<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        B::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// One pre-norm decoder block: attention and SwiGLU MLP, each with a residual.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Qwen2Attention<B>,
    pub mlp: Qwen2Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        Self {
            self_attn: Qwen2Attention::new(config, device),
            mlp: Qwen2Mlp::new(config, device),
            input_layernorm: RmsNorm::new(config.hidden_size, config.rms_norm_eps, device),
            post_attention_layernorm: RmsNorm::new(config.hidden_size, config.rms_norm_eps, device),
        }
    }
}

impl<B: IllumeBackend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        layer: usize,
        positions: &[RowPositions<B>],
    ) -> Tensor<B, 3> {
        let attended = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cache,
            layer,
            positions,
        );
        let x = x + attended;
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// The decoder blocks and the final norm: the checkpoint's `model.layers.*` and
/// `model.norm.weight` (the embedding, `model.embed_tokens`, is read into vocabulary
/// shards separately).
#[derive(Module, Debug)]
pub struct Qwen2Decoder<B: Backend> {
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
}

impl<B: Backend> Qwen2Decoder<B> {
    /// Parameters are created lazily: loading from a checkpoint never initialises them.
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        Self {
            layers: (0..config.num_hidden_layers)
                .map(|_| DecoderLayer::new(config, device))
                .collect(),
            norm: RmsNorm::new(config.hidden_size, config.rms_norm_eps, device),
        }
    }
}

/// Output of one forward call.
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// Final-norm hidden states, `[rows, n, hidden]`.
    pub hidden: Tensor<B, 3>,
    /// The output of every decoder layer (before the final norm), when asked for.
    pub layer_outputs: Vec<Tensor<B, 3>>,
}

/// The Qwen2 language model: embedding, decoder, LM head.
#[derive(Debug)]
pub struct LanguageModel<B: Backend> {
    pub config: DecoderConfig,
    pub decoder: Qwen2Decoder<B>,
    pub embed_tokens: VocabShards<B>,
    /// The same shards as `embed_tokens` when the config ties them.
    pub lm_head: VocabShards<B>,
    rope: RotaryEmbedding,
}

/// Checkpoint name of the embedding matrix.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";
/// Checkpoint name of an untied LM head.
pub const LM_HEAD: &str = "lm_head.weight";

impl<B: Backend> LanguageModel<B> {
    pub fn from_parts(
        config: DecoderConfig,
        decoder: Qwen2Decoder<B>,
        embed_tokens: VocabShards<B>,
        lm_head: Option<VocabShards<B>>,
    ) -> Self {
        let rope = RotaryEmbedding::new(config.head_dim(), config.rope_theta);
        let lm_head = lm_head.unwrap_or_else(|| embed_tokens.clone());
        Self {
            config,
            decoder,
            embed_tokens,
            lm_head,
            rope,
        }
    }

    /// Load the decoder of an HF Qwen2 checkpoint (`model.*`, `lm_head.weight`). Tensors
    /// under `extra_prefixes` (e.g. the vision tower, loaded by its owner) may be present.
    pub fn load(
        checkpoint: &Checkpoint,
        config: &DecoderConfig,
        rows_per_shard: usize,
        extra_prefixes: &[&str],
        device: &B::Device,
    ) -> Result<Self> {
        let (vocab, hidden) = (config.vocab_size, config.hidden_size);
        let mut options = LoadOptions::named("Qwen2 decoder").allow_unused("embed_tokens.");
        for prefix in extra_prefixes {
            options = options.allow_unused(*prefix);
        }
        let unknown: Vec<&str> = checkpoint
            .names()
            .filter(|n| !n.starts_with("model.") && *n != LM_HEAD)
            .take(8)
            .collect();
        if !unknown.is_empty() {
            return Err(MllmError::Weights(
                illume_weights::WeightsError::WrongCheckpoint {
                    path: checkpoint.path().to_path_buf(),
                    what: "this checkpoint".into(),
                    expected: "ILLUME+ MLLM (IllumeQwen2ForCausalLM)".into(),
                    reason: format!("tensors outside `model.` and `lm_head.weight`: {unknown:?}"),
                },
            ));
        }
        let decoder = checkpoint
            .subtree("model")
            .load_into(Qwen2Decoder::new(config, device), &options)?;
        let embed_tokens = VocabShards::from_checkpoint(
            checkpoint,
            EMBED_TOKENS,
            [vocab, hidden],
            rows_per_shard,
            device,
        )?;
        // A tied checkpoint may still store a copy of the head (transformers writes the tied
        // tensor once, but some exports keep both); the config decides, as in transformers.
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(VocabShards::from_checkpoint(
                checkpoint,
                LM_HEAD,
                [vocab, hidden],
                rows_per_shard,
                device,
            )?)
        };
        Ok(Self::from_parts(
            config.clone(),
            decoder,
            embed_tokens,
            lm_head,
        ))
    }

    pub fn device(&self) -> B::Device {
        self.embed_tokens.device()
    }

    /// Embeddings `[1, n, hidden]` of token ids (each `< vocab_size`).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor<B, 3>> {
        if let Some(id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(MllmError::Generation(format!(
                "token id {id} is outside the vocabulary ({} rows)",
                self.config.vocab_size
            )));
        }
        if ids.is_empty() {
            return Err(MllmError::Generation("no token to embed".into()));
        }
        Ok(self.embed_tokens.embed(ids).unsqueeze_dim(0))
    }

    /// Logits `[n, vocab]` of final hidden states `[n, hidden]`.
    pub fn logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        self.lm_head.logits(hidden)
    }

    /// A KV cache for `rows` sequences of up to `capacity` positions.
    pub fn new_cache(&self, rows: usize, capacity: usize) -> KvCache<B> {
        KvCache::new(&self.config, rows, capacity, &self.device())
    }
}

impl<B: IllumeBackend> LanguageModel<B> {
    /// Run `embeds` (`[rows.len(), n, hidden]`) through the decoder: batch row `i` continues
    /// the sequence in cache row `rows[i]` (positions from that row's current length).
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        rows: &[usize],
        capture_layers: bool,
    ) -> Result<DecoderOutput<B>> {
        let [batch, n, _] = embeds.dims();
        if batch != rows.len() {
            return Err(MllmError::Generation(format!(
                "{batch} embedding rows for {} cache rows",
                rows.len()
            )));
        }
        for &row in rows {
            cache.reserve(row, n)?;
        }
        let device = embeds.device();
        let positions: Vec<RowPositions<B>> = rows
            .iter()
            .map(|&row| {
                let start = cache.len(row);
                let (cos, sin) = self.rope.tables(start..start + n, &device);
                RowPositions { row, cos, sin }
            })
            .collect();
        let mut x = embeds;
        let mut layer_outputs = Vec::new();
        for (index, layer) in self.decoder.layers.iter().enumerate() {
            x = layer.forward(x, cache, index, &positions);
            if capture_layers {
                layer_outputs.push(x.clone());
            }
        }
        for &row in rows {
            cache.advance(row, n);
        }
        Ok(DecoderOutput {
            hidden: self.decoder.norm.forward(x),
            layer_outputs,
        })
    }

    /// Forward `embeds` and return the logits of each row's last position, `[rows, vocab]`.
    pub fn forward_last_logits(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        rows: &[usize],
    ) -> Result<Tensor<B, 2>> {
        let hidden = self.forward(embeds, cache, rows, false)?.hidden;
        let [batch, n, width] = hidden.dims();
        let last = hidden
            .slice([0..batch, n - 1..n, 0..width])
            .reshape([batch, width]);
        Ok(self.logits(last))
    }
}
