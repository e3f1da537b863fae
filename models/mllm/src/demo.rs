//! The demo MLLM: the reference fixtures' tiny configuration (copies of its `config.json`,
//! `generation_config.json` and `tokenizer.json`) with deterministic weights written in the
//! official names and layout, so it loads through [`crate::IllumeMllm::load`] like a
//! downloaded checkpoint. Its vision tower has the demo DualViTok's architecture
//! ([`illume_dualvitok::demo::config`]).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::NdArray;
use illume_dualvitok::DualViTokConfig;

use crate::config::MllmConfig;
use crate::decoder::{DecoderLayer, RmsNorm};
use crate::error::{MllmError, Result};
use crate::projector::{self, MixedProjector};
use crate::vision::DualVisionTower;

pub const CONFIG_JSON: &str = include_str!("../demo/config.json");
pub const GENERATION_CONFIG_JSON: &str = include_str!("../demo/generation_config.json");
pub const TOKENIZER_JSON: &str = include_str!("../demo/tokenizer.json");
/// Seed of the demo weights.
pub const SEED: u64 = 0x1111_0004;

/// The DualViTok architecture of the demo vision tower.
pub fn vision_config() -> DualViTokConfig {
    illume_dualvitok::demo::config()
}

/// The checkpoint's module tree, embedding included, for writing demo weights.
#[derive(Module, Debug)]
struct Checkpoint<B: Backend> {
    model: CheckpointModel<B>,
}

#[derive(Module, Debug)]
struct CheckpointModel<B: Backend> {
    embed_tokens: Embedding<B>,
    layers: Vec<DecoderLayer<B>>,
    norm: RmsNorm<B>,
    vision_tower: DualVisionTower<B>,
    mm_projector: MixedProjector<B>,
}

#[derive(Module, Debug)]
struct Embedding<B: Backend> {
    weight: Param<Tensor<B, 2>>,
}

/// Module path → official checkpoint name (the documented remaps of the vision tower and
/// the projector).
fn official_name(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("model.vision_tower.") {
        return format!(
            "model.vision_tower.{}",
            illume_dualvitok::names::to_official_name(rest)
        );
    }
    if let Some(rest) = path.strip_prefix("model.mm_projector.") {
        return format!("model.mm_projector.{}", projector::to_official_name(rest));
    }
    path.to_string()
}

/// Write the demo MLLM to `dir`.
pub fn write(dir: &Path) -> Result<()> {
    let io = |e| MllmError::io(dir, e);
    std::fs::create_dir_all(dir).map_err(io)?;
    for (name, text) in [
        ("config.json", CONFIG_JSON),
        ("generation_config.json", GENERATION_CONFIG_JSON),
        ("tokenizer.json", TOKENIZER_JSON),
    ] {
        std::fs::write(dir.join(name), text).map_err(io)?;
    }
    let config = MllmConfig::parse(CONFIG_JSON, &dir.join("config.json"))?;
    let d = &config.decoder;
    let device = Default::default();
    let module = Checkpoint::<NdArray> {
        model: CheckpointModel {
            embed_tokens: Embedding {
                weight: Param::from_tensor(Tensor::zeros([d.vocab_size, d.hidden_size], &device)),
            },
            layers: (0..d.num_hidden_layers)
                .map(|_| DecoderLayer::new(d, &device))
                .collect(),
            norm: RmsNorm::new(d.hidden_size, d.rms_norm_eps, &device),
            vision_tower: DualVisionTower::new(&vision_config(), &device),
            mm_projector: MixedProjector::new(config.mm_hidden_size, d.hidden_size, &device),
        },
    };
    illume_weights::demo::write_demo_checkpoint(
        &module,
        &dir.join("model.safetensors"),
        SEED,
        official_name,
    )?;
    Ok(())
}
