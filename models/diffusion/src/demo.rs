//! The demo decoder: the tiny configuration of the reference fixture (a 36-channel UNet for
//! the tiny DualViTok's 32 code channels, a 4-level VAE, the SDXL Euler scheduler) with
//! deterministic random weights, written as a diffusers folder so that it loads through
//! exactly the code path of the official checkpoint. Its images are meaningless.

use std::path::Path;

use illume_backends::NdArray;
use illume_weights::demo::write_demo_checkpoint;

use crate::error::DiffusionError;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};

const MODEL_INDEX: &str = include_str!("../configs/demo/model_index.json");
const UNET_CONFIG: &str = include_str!("../configs/demo/unet/config.json");
const VAE_CONFIG: &str = include_str!("../configs/demo/vae/config.json");
const SCHEDULER_CONFIG: &str = include_str!("../configs/demo/scheduler/scheduler_config.json");
const SDXL_UNET_CONFIG: &str = include_str!("../configs/sdxl/unet_config.json");
const SDXL_VAE_CONFIG: &str = include_str!("../configs/sdxl/vae_config.json");

/// Seed of the demo weights.
const SEED: u64 = 0x5D_A1;

fn write_file(path: &Path, text: &str) -> Result<(), DiffusionError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DiffusionError::io(parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| DiffusionError::io(path, e))
}

/// The UNet the real decoder is expected to have (SDXL-base with the 68-channel conv_in of
/// 4 latent + 64 DualViTok code channels, illume_plus.md §5): for benchmarks at real size.
pub fn sdxl_unet_config() -> UNetConfig {
    UNetConfig::from_json(SDXL_UNET_CONFIG, Path::new("configs/sdxl/unet_config.json"))
        .expect("the embedded SDXL UNet config is valid")
}

/// The SDXL VAE configuration, for benchmarks at real size.
pub fn sdxl_vae_config() -> VaeConfig {
    VaeConfig::from_json(SDXL_VAE_CONFIG, Path::new("configs/sdxl/vae_config.json"))
        .expect("the embedded SDXL VAE config is valid")
}

/// The demo UNet configuration (the fixture's tiny one).
pub fn demo_unet_config() -> UNetConfig {
    UNetConfig::from_json(UNET_CONFIG, Path::new("configs/demo/unet/config.json"))
        .expect("the embedded demo UNet config is valid")
}

/// The demo VAE configuration (the fixture's tiny one).
pub fn demo_vae_config() -> VaeConfig {
    VaeConfig::from_json(VAE_CONFIG, Path::new("configs/demo/vae/config.json"))
        .expect("the embedded demo VAE config is valid")
}

/// Write the demo decoder folder into `dir`.
pub fn write(dir: &Path) -> Result<(), DiffusionError> {
    write_file(&dir.join("model_index.json"), MODEL_INDEX)?;
    write_file(&dir.join("unet/config.json"), UNET_CONFIG)?;
    write_file(&dir.join("vae/config.json"), VAE_CONFIG)?;
    write_file(
        &dir.join("scheduler/scheduler_config.json"),
        SCHEDULER_CONFIG,
    )?;
    let device = Default::default();
    let unet_config = UNetConfig::from_file(&dir.join("unet/config.json"))?;
    let unet = UNet2DConditionModel::<NdArray>::new(&unet_config, &device);
    write_demo_checkpoint(
        &unet,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        SEED,
        |path| unet.checkpoint_key(path),
    )?;
    let vae_config = VaeConfig::from_file(&dir.join("vae/config.json"))?;
    let vae = AutoencoderKL::<NdArray>::new(&vae_config, &device);
    write_demo_checkpoint(
        &vae,
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        SEED,
        str::to_owned,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CodeEmbedder, CodePrecision, DecodeOptions, DiffusionDecoder, ImageSize};
    use illume_dualvitok::{DualTokens, DualViTok, TokenGrid};

    #[test]
    fn embedded_configs_resolve() {
        assert_eq!(sdxl_unet_config().in_channels, 68);
        assert_eq!(sdxl_vae_config().scale_factor(), 8);
        assert_eq!(demo_unet_config().in_channels, 36);
        assert_eq!(demo_vae_config().scale_factor(), 8);
    }

    /// The demo folders load through the official-format loaders, and the demo tokenizer's
    /// 16x16 pixel grid renders at a listed size (512x512).
    #[test]
    fn demo_decoder_renders_demo_tokens() {
        let root =
            std::env::temp_dir().join(format!("illume-diffusion-demo-{}", std::process::id()));
        write(&root.join("diffusion")).unwrap();
        illume_dualvitok::demo::write(&root.join("dualvitok")).unwrap();
        let device = Default::default();
        let decoder = DiffusionDecoder::<NdArray>::load(&root.join("diffusion"), &device).unwrap();
        let tokenizer = DualViTok::<NdArray>::load(&root.join("dualvitok"), &device).unwrap();
        let codes = CodeEmbedder::new(&tokenizer, CodePrecision::Float16);
        let grid = |side: usize, k: u32| {
            TokenGrid::new(
                [side, side],
                (0..(side * side) as u32).map(|i| i % k).collect(),
            )
            .unwrap()
        };
        let tokens = DualTokens {
            semantic: grid(9, 7),
            pixel: grid(16, 11),
        };
        let options = DecodeOptions {
            steps: 1,
            ..DecodeOptions::default()
        };
        let mut steps = 0;
        let image = decoder
            .decode(&codes, &tokens, &options, |_| {
                steps += 1;
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(steps, 1);
        assert_eq!(
            ImageSize::new(image.width() as usize, image.height() as usize),
            ImageSize::new(512, 512)
        );
        std::fs::remove_dir_all(root).ok();
    }
}
