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
//! - [`CodeEmbedder`]: DualViTok token indices → code map, in float16 as the official
//!   embedder computes it (or float32);
//! - [`DiffusionDecoder`]: the pipeline loop (code map, zero text context, time ids,
//!   classifier-free guidance against a zero code map).
//!
//! ```no_run
//! # use illume_backends::NdArray;
//! use illume_diffusion::{CodeEmbedder, CodePrecision, DecodeOptions, DiffusionDecoder};
//! use illume_dualvitok::DualViTok;
//! let device = Default::default();
//! let tokenizer = DualViTok::<NdArray>::load("dualvitok/".as_ref(), &device)?;
//! let decoder = DiffusionDecoder::<NdArray>::load("dualvitok-sdxl-decoder/".as_ref(), &device)?;
//! let codes = CodeEmbedder::new(&tokenizer, CodePrecision::Float16);
//! # let tokens: illume_dualvitok::DualTokens = unimplemented!();
//! let image = decoder.decode(&codes, &tokens, &DecodeOptions::default(), |step| {
//!     println!("step {}/{}", step.index + 1, step.total);
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! image.save("out.png")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conditioning;
mod config;
pub mod demo;
mod error;
mod layers;
mod noise;
mod output;
mod pipeline;
mod preview;
pub mod resolution;
pub mod scheduler;
pub mod unet;
pub mod vae;

pub use conditioning::{round_to_f16, CodeEmbedder, CodePrecision};
pub use config::PerBlock;
pub use error::DiffusionError;
pub use layers::CrossAttentionContext;
pub use noise::NoiseSource;
pub use output::{encode_png, to_rgb, write_png};
pub use pipeline::{
    check_decoder_folder, DecodeOptions, DenoiseOptions, DiffusionDecoder, StepProgress,
    POOLED_TEXT_WIDTH, TEXT_TOKENS, TEXT_WIDTH, TIME_IDS,
};
pub use preview::latent_preview;
pub use resolution::{ImageSize, RESOLUTIONS};
pub use unet::UNetConditioning;
