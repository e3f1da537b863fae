//! The MLLM's vision tower (`DualVisionTower`, `multimodal_encoder/dual_encoder.py`) and the
//! preprocessing of its input image.
//!
//! The tower is DualViTok's Qwen2-VL ViT (+ patch merger) and MoVQ pixel encoder, reused from
//! the `illume-dualvitok` crate, with the MLLM checkpoint's own, fine-tuned weights
//! (`model.vision_tower.semantic_encoder.*`, `model.vision_tower.pixel_encoder.*`). Its
//! outputs are continuous: the merger output (no DualViTok LayerNorm target, no quantizer)
//! and the pixel encoder output before `pixel_quant_conv`.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;
use illume_dualvitok::movq::MoVqEncoder;
use illume_dualvitok::pil_resize::{pil_resize_rgb, PilFilter};
use illume_dualvitok::vit::VisionTransformer;
use illume_dualvitok::{image_io, preprocess, DualViTokConfig};
use illume_weights::Checkpoint;
use image::RgbImage;

use crate::config::VisionTowerSettings;
use crate::error::{MllmError, Result};
use crate::processor::PIXEL_FACTOR;

/// Checkpoint prefix of the tower.
pub const PREFIX: &str = "model.vision_tower";

#[derive(Module, Debug)]
pub struct DualVisionTower<B: Backend> {
    pub semantic_encoder: VisionTransformer<B>,
    pub pixel_encoder: MoVqEncoder<B>,
}

/// The tower's outputs for one image.
#[derive(Debug, Clone)]
pub struct TowerFeatures<B: Backend> {
    /// ViT merger output `[h1·w1, vit_hidden]`, row-major.
    pub semantic: Tensor<B, 2>,
    /// `(h1, w1)`.
    pub semantic_grid: [usize; 2],
    /// Pixel encoder output as tokens `[h2·w2, z]`, row-major.
    pub pixel: Tensor<B, 2>,
    /// `(h2, w2)`.
    pub pixel_grid: [usize; 2],
}

impl<B: Backend> DualVisionTower<B> {
    /// The tower of a DualViTok architecture (placeholder parameters, initialised lazily).
    pub fn new(config: &DualViTokConfig, device: &B::Device) -> Self {
        Self {
            semantic_encoder: VisionTransformer::new(&config.vit, device),
            pixel_encoder: MoVqEncoder::new(&config.pixel_encoder, device),
        }
    }

    /// Load the tower from an MLLM checkpoint (`model.vision_tower.*`), built with the
    /// DualViTok architecture `config` (the official code builds it from the DualViTok
    /// config the MLLM config names).
    pub fn load(
        checkpoint: &Checkpoint,
        config: &DualViTokConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let part = |name: &str| checkpoint.subtree(&format!("{PREFIX}.{name}"));
        let vision = |e: illume_dualvitok::Error| MllmError::Image(format!("vision tower: {e}"));
        Ok(Self {
            semantic_encoder: VisionTransformer::load(
                &part("semantic_encoder"),
                &config.vit,
                device,
            )
            .map_err(vision)?,
            pixel_encoder: MoVqEncoder::load(&part("pixel_encoder"), &config.pixel_encoder, device)
                .map_err(vision)?,
        })
    }
}

impl<B: IllumeBackend> DualVisionTower<B> {
    /// `DualVisionTower.forward` on one image `[1, 3, H, W]` in `[-1, 1]` (H, W multiples
    /// of 16).
    pub fn forward(&self, image: Tensor<B, 4>) -> TowerFeatures<B> {
        let input = preprocess::scaling_layer(image.clone());
        let semantic = self.semantic_encoder.forward(&input);
        let pixel = self.pixel_encoder.forward(image);
        let [_, z, h2, w2] = pixel.dims();
        TowerFeatures {
            semantic,
            semantic_grid: input.merged_grid(),
            pixel: pixel.reshape([z, h2 * w2]).transpose(),
            pixel_grid: [h2, w2],
        }
    }
}

/// The MLLM's image processor (`MoVQImageProcessor`): `smart_resize` to multiples of 16
/// within the config's pixel limits (Python's round-half-even), Pillow's bicubic on the
/// 8-bit image, then `(v/255 − 0.5)/0.5` → `[1, 3, H, W]`.
pub fn preprocess_rgb<B: Backend>(
    image: &RgbImage,
    settings: &VisionTowerSettings,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(MllmError::Image(format!("the image is empty ({w}x{h})")));
    }
    let [th, tw] =
        image_io::smart_resize_dims(h, w, PIXEL_FACTOR, settings.min_pixels, settings.max_pixels);
    let resized = pil_resize_rgb(image, tw, th, PilFilter::Bicubic)
        .map_err(|e| MllmError::Image(e.to_string()))?;
    Ok(image_io::to_tensor(&resized, device))
}
