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

/// Seed of the demo weights.
const SEED: u64 = 0x5D_A1;

fn write_file(path: &Path, text: &str) -> Result<(), DiffusionError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DiffusionError::io(parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| DiffusionError::io(path, e))
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
