//! Flag groups shared by the verbs, and the pipeline they open.

use std::path::{Path, PathBuf};

use illume::diffusion::vae::VaeTiling;
use illume::diffusion::{CodePrecision, DecodeOptions};
use illume::mllm::{
    CfgMode, Chain, Decoding, ImageRequest, LevelSampling, SamplingParams, TextRequest,
};
use illume::pipeline::{
    Answer, DiffusionSettings, GeneratedImage, ModelSource, Pipeline, PipelineBuilder,
};
use serde_json::{json, Value};

/// What `--help` says about `generation_config.json` (shared by the three MLLM verbs).
macro_rules! generation_config_help {
    () => {
        "generation_config.json of the checkpoint is applied as the official transformers \
`generate` applies it: eos_token_id ends generation (with <|im_end|>); repetition_penalty (if \
not 1) penalises already generated ids before the ILLUME processors; temperature/top_k/top_p/\
do_sample are overridden by this command's flags, as the official calls pass their own; any \
other logits-changing field is refused with an error."
    };
}
pub(super) use generation_config_help;

/// `--model` and `--tokenizer`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The ILLUME+ MLLM checkpoint folder (config.json, tokenizer.json, safetensors) or a
    /// Hugging Face repo id in the local cache. Default: the built-in demo model.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The DualViTok checkpoint (decodes generated images; its architecture builds the
    /// MLLM's vision tower). Default: with --model, the released architecture (and weights
    /// from --tokenizer when decoding is needed); without, the demo DualViTok.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
}

/// Sampling flags of image generation.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Classifier-free guidance scale, 1 (off) to 100 [default: 2.0 for generate, 1.5 for
    /// edit].
    #[arg(long, value_name = "SCALE", allow_negative_numbers = true, value_parser = super::values::guidance_f32)]
    pub cfg: Option<f32>,
    /// Seed of the sampler (ChaCha8).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Pick the most likely token instead of sampling (deterministic, usually dull images).
    #[arg(long)]
    pub greedy: bool,
    /// Global (text) temperature (> 0), default for both image levels [default: 1.0 for
    /// generate, 0.7 for edit].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub temperature: Option<f32>,
    /// Global top-k (0 = off), default for the semantic level, x3 for the pixel level
    /// [default: 2048 for generate, 512 for edit].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Global top-p in (0, 1] (1 = off) [default: 1.0 for generate, 0.8 for edit].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub top_p: Option<f32>,
    /// Semantic-level (level 0) temperature [default: --temperature].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub semantic_temperature: Option<f32>,
    /// Semantic-level top-k [default: --top-k].
    #[arg(long)]
    pub semantic_top_k: Option<usize>,
    /// Semantic-level top-p [default: --top-p].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub semantic_top_p: Option<f32>,
    /// Pixel-level (level 1) temperature [default: the semantic one].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub pixel_temperature: Option<f32>,
    /// Pixel-level top-k [default: 3x the semantic one].
    #[arg(long)]
    pub pixel_top_k: Option<usize>,
    /// Pixel-level top-p [default: the semantic one].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub pixel_top_p: Option<f32>,
    /// Logits processor chain: `eval` (generation_eval) or `app` (ILLUME/app.py).
    #[arg(long, value_parser = ["eval", "app"], default_value = "eval")]
    pub preset: String,
    /// Run the unconditional CFG stream as a second model call per step (the official
    /// form) instead of batching it with the conditional row.
    #[arg(long)]
    pub sequential_cfg: bool,
}

/// Decoding flags of text answers (`understand`, `chat`).
#[derive(Debug, Clone, clap::Args)]
pub struct TextArgs {
    /// Stop after this many tokens.
    #[arg(long, default_value_t = 1024, value_parser = super::values::positive)]
    pub max_new_tokens: usize,
    /// Sample instead of greedy decoding, with this seed (ChaCha8).
    #[arg(long, value_name = "SEED")]
    pub sample: Option<u64>,
    /// Temperature when sampling (> 0).
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub temperature: f32,
    /// Top-k when sampling (0 = off).
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Top-p when sampling, in (0, 1] (1 = off).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub top_p: f32,
}

impl TextArgs {
    pub(super) fn request(&self) -> TextRequest {
        TextRequest {
            max_new_tokens: self.max_new_tokens,
            decoding: match self.sample {
                Some(seed) => Decoding::Sample { seed },
                None => Decoding::Greedy,
            },
            sampling: SamplingParams::new(self.temperature, self.top_k, self.top_p),
        }
    }
}

/// Print one JSON document on stdout (`--json`).
pub(super) fn print_json(value: &Value) -> super::CliResult {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// A written image as `--json` reports it.
pub(super) fn image_json(path: &Path, image: &GeneratedImage) -> Value {
    let metadata: serde_json::Map<String, Value> = image
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "path": path,
        "width": image.image.width(),
        "height": image.image.height(),
        "generated_tokens": image.generated_tokens,
        "generation_seconds": image.generation_seconds,
        "metadata": metadata,
    })
}

/// A text answer as `--json` reports it.
pub(super) fn answer_json(answer: &Answer) -> Value {
    json!({
        "answer": answer.text,
        "tokens": answer.tokens,
        "seconds": answer.seconds,
    })
}

/// The timing line of a text answer (stderr).
pub(super) fn answer_timing(answer: &Answer) -> String {
    format!(
        "{} tokens in {:.1} s ({:.1} tokens/s, image encoding included)",
        answer.tokens,
        answer.seconds,
        answer.tokens as f64 / answer.seconds.max(1e-9)
    )
}

/// The timing line of a generated image (stderr).
pub(super) fn generation_timing(image: &GeneratedImage) -> String {
    format!(
        "{} tokens in {:.1} s ({:.1} tokens/s)",
        image.generated_tokens,
        image.generation_seconds,
        image.generated_tokens as f64 / image.generation_seconds.max(1e-9)
    )
}

/// Report written images: a line each, or one JSON document `{"images": [...]}`.
pub(super) fn report_images(json: bool, written: &[(PathBuf, GeneratedImage)]) -> super::CliResult {
    if json {
        let images: Vec<Value> = written.iter().map(|(p, i)| image_json(p, i)).collect();
        return print_json(&json!({ "images": images }));
    }
    for (path, image) in written {
        println!(
            "wrote {} ({}x{})",
            path.display(),
            image.image.width(),
            image.image.height()
        );
    }
    Ok(())
}

impl ModelArgs {
    /// The builder with these models (the demo ones where absent).
    pub(super) fn builder(&self) -> PipelineBuilder {
        let mut builder = Pipeline::builder().mllm(source(self.model.as_ref()));
        if let Some(path) = &self.tokenizer {
            builder = builder.tokenizer(ModelSource::Path(path.clone()));
        }
        builder
    }
}

/// A flag's path, or the built-in demo model when the flag is absent.
pub(super) fn source(path: Option<&PathBuf>) -> ModelSource {
    match path {
        Some(path) => ModelSource::Path(path.clone()),
        None => ModelSource::Demo,
    }
}

/// The official recommendations (app tips): generation and editing differ.
pub(super) struct SamplingDefaults {
    pub cfg: f32,
    pub global: SamplingParams,
}

/// Text-to-image: CFG 2.0, temperature 1.0, top-k 2048, top-p 1.0.
pub(super) const GENERATION_DEFAULTS: SamplingDefaults = SamplingDefaults {
    cfg: 2.0,
    global: SamplingParams::new(1.0, 2048, 1.0),
};

/// Editing: CFG 1.5, temperature 0.7, top-k 512, top-p 0.8 (official app tips).
pub(super) const EDITING_DEFAULTS: SamplingDefaults = SamplingDefaults {
    cfg: 1.5,
    global: SamplingParams::new(0.7, 512, 0.8),
};

impl SamplingArgs {
    /// The request: the official InferenceConfig defaulting, level 1 top-k = 3x level 0.
    pub(super) fn request(
        &self,
        height: usize,
        width: usize,
        defaults: &SamplingDefaults,
    ) -> ImageRequest {
        let global = SamplingParams::new(
            self.temperature.unwrap_or(defaults.global.temperature),
            self.top_k.unwrap_or(defaults.global.top_k),
            self.top_p.unwrap_or(defaults.global.top_p),
        );
        let level0 = SamplingParams::new(
            self.semantic_temperature.unwrap_or(global.temperature),
            self.semantic_top_k.unwrap_or(global.top_k),
            self.semantic_top_p.unwrap_or(global.top_p),
        );
        let level1 = SamplingParams::new(
            self.pixel_temperature.unwrap_or(level0.temperature),
            self.pixel_top_k.unwrap_or(level0.top_k * 3),
            self.pixel_top_p.unwrap_or(level0.top_p),
        );
        let (chain, text) = match self.preset.as_str() {
            // app.py: default text sampling 0.7/20/0.8, levels from the UI values.
            "app" => (Chain::App, SamplingParams::new(0.7, 20, 0.8)),
            _ => (
                Chain::Eval {
                    force_image_start: true,
                },
                global,
            ),
        };
        ImageRequest {
            height,
            width,
            guidance: self.cfg.unwrap_or(defaults.cfg),
            chain,
            sampling: LevelSampling {
                text,
                level0,
                level1,
            },
            decoding: if self.greedy {
                Decoding::Greedy
            } else {
                Decoding::Sample { seed: self.seed }
            },
            cfg_mode: if self.sequential_cfg {
                CfgMode::Sequential
            } else {
                CfgMode::Batched
            },
            negative_prompt: None,
        }
    }
}

/// Flags of the diffusion decoder, shared by `upscale` and `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffusionArgs {
    /// The diffusion decoder: the diffusers folder of ILLUME-MLLM/dualvitok-sdxl-decoder
    /// (model_index.json, unet/, vae/, scheduler/) or its repo id in the local cache.
    /// `upscale` defaults to the built-in demo decoder; `generate` uses DualViTok's pixel
    /// decoder without it.
    #[arg(long, value_name = "DIR")]
    pub diffusion: Option<PathBuf>,
    /// Denoising steps of the diffusion decoder, 1 to 1000 (the official demos use 20,
    /// evaluation 50).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = super::values::steps)]
    pub steps: usize,
    /// Classifier-free guidance of the diffusion decoder against an all-zero code map
    /// (1 = off, up to 100; the official demos use 1.5 or 2.0).
    #[arg(long, value_name = "SCALE", default_value_t = 1.5, allow_negative_numbers = true, value_parser = super::values::guidance)]
    pub diffusion_cfg: f64,
    /// Precision of the DualViTok code map: f16 as the official pipeline computes it, or f32.
    #[arg(long, value_name = "P", value_parser = ["f16", "f32"], default_value = "f16")]
    pub code_precision: String,
    /// Decode the VAE in strips of at most this many MiB per activation (bounds device
    /// memory for large images). Each strip carries its full receptive field, so the
    /// result equals whole decoding up to float summation order: a few pixels may differ
    /// by 1 of 255.
    #[arg(long, value_name = "MIB", value_parser = super::values::positive)]
    pub vae_strip_mib: Option<usize>,
}

impl DiffusionArgs {
    /// The decoder's settings, with `seed` for the initial latents.
    pub(super) fn settings(&self, seed: u64) -> DiffusionSettings {
        DiffusionSettings {
            options: DecodeOptions {
                size: None,
                steps: self.steps,
                guidance_scale: self.diffusion_cfg,
                seed,
                vae_tiling: self.vae_strip_mib.map(|mib| VaeTiling {
                    strip_bytes: mib << 20,
                }),
            },
            code_precision: match self.code_precision.as_str() {
                "f32" => CodePrecision::Float32,
                _ => CodePrecision::Float16,
            },
            // The CLI shows bars, not pictures.
            latent_preview: false,
        }
    }
}
