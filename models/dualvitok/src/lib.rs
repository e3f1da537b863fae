//! DualViTok, the dual visual tokenizer of ILLUME+ (arXiv 2504.01934), on Burn.
//!
//! An image is tokenized twice: a *semantic* grid (Qwen2-VL ViT → extra vision blocks →
//! SimVQ, 28 px per token) and a *pixel* grid (MoVQ encoder → SimVQ, 16 px per token). The
//! pixel decoder reconstructs the image from both. Every network is generic over
//! [`illume_backends::IllumeBackend`] and mirrors the official checkpoint's key hierarchy
//! (the few documented exceptions are in [`names`]).
//!
//! ```no_run
//! # use illume_backends::NdArray;
//! use illume_dualvitok::{image_io, DualViTok};
//! let device = Default::default();
//! let tokenizer = DualViTok::<NdArray>::load("dualvitok/".as_ref(), &device)?;
//! let image = image_io::read_rgb("cat.png".as_ref())?;
//! let tokens = tokenizer.encode_rgb(&image, &device)?;
//! let reconstruction = tokenizer.decode_rgb(&tokens)?;
//! # Ok::<(), illume_dualvitok::Error>(())
//! ```
//!
//! Modules usable on their own: [`preprocess`] (the ViT's scaling layer), [`vit`] (Qwen2-VL
//! ViT + patch merger), [`movq`] (pixel encoder/decoder), [`simvq`] (codebooks),
//! [`merge`] (`merge_quants`), [`resize`] (PyTorch resampling), [`pil_resize`] (Pillow
//! resampling), [`image_io`].

pub mod config;
pub mod demo;
mod error;
pub mod image_io;
pub mod layers;
pub mod merge;
pub mod movq;
pub mod names;
pub mod pil_resize;
pub mod preprocess;
pub mod resize;
pub mod semantic;
pub mod simvq;
pub mod tokenizer;
pub mod vit;

pub use config::DualViTokConfig;
pub use error::{Error, Result};
pub use merge::merge_quants;
pub use tokenizer::{DualTokens, DualViTok, DualViTokModel, TokenGrid, VisionFeatures};
