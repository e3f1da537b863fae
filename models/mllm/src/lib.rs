//! The ILLUME+ MLLM (arXiv 2504.01934): Qwen2.5 with an image vocabulary, on Burn.
//!
//! - [`config`]: `config.json` / `generation_config.json` of the official checkpoint.
//! - [`decoder`]: the Qwen2 decoder ([`attention`], [`mlp`], [`rope`]) with a preallocated
//!   [`kv_cache`] and a vocabulary-sharded embedding/LM head ([`vocab_shards`]).
//! - [`text`]: tokenizer, chat template and task prompts; [`vocab`]: the image vocabulary's
//!   ids and ranges, derived from config and tokenizer.
//! - [`processor`]: the interleaved logits processor (structure masks, CFG, per-level
//!   sampling) of both official chains; [`sampling`]: the score transforms and the seeded
//!   sampler; [`generate`]: the generation loop with batched CFG.
//! - [`vision`]: the vision tower (DualViTok's ViT and pixel encoder with the MLLM's own
//!   weights) and its image preprocessing; [`projector`]: the MixedProjector; [`splice`]:
//!   the image's embedding sequence spliced into the prompt.

pub mod attention;
pub mod config;
pub mod decoder;
pub mod demo;
pub mod editing;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod mlp;
pub mod model;
pub mod processor;
pub mod projector;
pub mod rope;
pub mod sampling;
pub mod splice;
pub mod text;
pub mod vision;
pub mod vocab;
pub mod vocab_shards;

pub use config::{DecoderConfig, GenerationConfig, MllmConfig};
pub use decoder::LanguageModel;
pub use error::MllmError;
pub use generate::{generate, CfgMode, Decoding, GenerateOptions};
pub use model::{GeneratedImage, IllumeMllm, ImageRequest, TextRequest};
pub use processor::{Chain, ImageGrid, LevelSampling, LogitsProcessor};
pub use sampling::SamplingParams;
pub use text::{Prompt, PromptToken, Role, TextTokenizer, Turn};
pub use vocab::VocabLayout;
