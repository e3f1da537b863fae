//! The ILLUME+ diffusion decoder: the DualViTok-conditioned SDXL pipeline of the official
//! `vision_tokenizer/tokenizer/sdxl_decoder_pipe.py`, generic over the backend.
//!
//! It loads the `ILLUME-MLLM/dualvitok-sdxl-decoder` diffusers folder as published
//! (`model_index.json`, `unet/`, `vae/`, `scheduler/`) and renders DualViTok codes at twice
//! the token-image size:
//!
//! - [`unet`]: `UNet2DConditionModel` built from `unet/config.json` (SDXL blocks, the
//!   `text_time` add-embedding, the conv_in widened by the code channels);
//! - [`scheduler`]: Euler (what the release ships), Euler-ancestral and DDIM;
//! - [`vae`]: the `AutoencoderKL` decoder, whole or in exact strips;
//! - [`DiffusionDecoder`]: the pipeline loop (code map, zero text context, time ids,
//!   classifier-free guidance against a zero code map).

mod config;
pub mod demo;
mod error;
mod layers;
mod noise;
mod output;
mod pipeline;
pub mod resolution;
pub mod scheduler;
pub mod unet;
pub mod vae;

pub use config::PerBlock;
pub use error::DiffusionError;
pub use layers::CrossAttentionContext;
pub use noise::NoiseSource;
pub use output::{to_rgb, write_png};
pub use pipeline::{
    DenoiseOptions, DiffusionDecoder, StepProgress, POOLED_TEXT_WIDTH, TEXT_TOKENS, TEXT_WIDTH,
    TIME_IDS,
};
pub use resolution::{ImageSize, RESOLUTIONS};
