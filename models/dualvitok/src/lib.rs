//! DualViTok, the dual visual tokenizer of ILLUME+ (arXiv 2504.01934), on Burn.
//!
//! An image is tokenized twice: a *semantic* grid (Qwen2-VL ViT → extra vision blocks →
//! SimVQ, 28 px per token) and a *pixel* grid (MoVQ encoder → SimVQ, 16 px per token). The
//! pixel decoder reconstructs the image from both. Every network is generic over
//! [`illume_backends::IllumeBackend`] and mirrors the official checkpoint's key hierarchy
//! (the few documented exceptions are in [`names`]).
//!
//! Modules usable on their own: [`preprocess`] (the ViT's scaling layer), [`vit`] (Qwen2-VL
//! ViT + patch merger), [`movq`] (pixel encoder/decoder), [`resize`] (PyTorch/Pillow
//! resampling).

pub mod config;
mod error;
pub mod layers;
pub mod movq;
pub mod names;
pub mod preprocess;
pub mod resize;
pub mod vit;

pub use config::DualViTokConfig;
pub use error::{Error, Result};
