//! `vae/config.json` of a diffusers `AutoencoderKL` (only what the decoder needs).

use std::path::Path;

use serde::Deserialize;

use crate::config::unsupported;
use crate::error::DiffusionError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct RawVaeConfig {
    out_channels: usize,
    up_block_types: Vec<String>,
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    act_fn: String,
    latent_channels: usize,
    norm_num_groups: usize,
    scaling_factor: f64,
    latents_mean: Option<Vec<f64>>,
    latents_std: Option<Vec<f64>>,
    mid_block_add_attention: bool,
    use_post_quant_conv: bool,
}

impl Default for RawVaeConfig {
    /// `AutoencoderKL.__init__` defaults.
    fn default() -> Self {
        Self {
            out_channels: 3,
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            latents_mean: None,
            latents_std: None,
            mid_block_add_attention: true,
            use_post_quant_conv: true,
        }
    }
}

/// An `AutoencoderKL` decoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_groups: usize,
    pub scaling_factor: f64,
    /// Per-channel latent statistics: when both are given, the pipeline decodes
    /// `latents · std / scaling_factor + mean` instead of `latents / scaling_factor`.
    pub latents_mean_std: Option<(Vec<f64>, Vec<f64>)>,
    pub mid_block_attention: bool,
    pub post_quant_conv: bool,
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self, DiffusionError> {
        Self::resolve(crate::config::read(path)?, path)
    }

    /// Parse a config given as JSON text (`path` names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, DiffusionError> {
        let raw = serde_json::from_str(text).map_err(|e| DiffusionError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::resolve(raw, path)
    }

    fn resolve(raw: RawVaeConfig, path: &Path) -> Result<Self, DiffusionError> {
        if let Some(other) = raw.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(unsupported(
                path,
                "up_block_types",
                other,
                "UpDecoderBlock2D",
            ));
        }
        if raw.act_fn != "silu" {
            return Err(unsupported(path, "act_fn", &raw.act_fn, "silu"));
        }
        if raw.up_block_types.len() != raw.block_out_channels.len() {
            return Err(DiffusionError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "{} up block types for {} block_out_channels",
                    raw.up_block_types.len(),
                    raw.block_out_channels.len()
                ),
            });
        }
        let latents_mean_std = match (raw.latents_mean, raw.latents_std) {
            (Some(mean), Some(std)) => {
                if mean.len() != raw.latent_channels || std.len() != raw.latent_channels {
                    return Err(DiffusionError::Config {
                        path: path.to_path_buf(),
                        reason: format!(
                            "latents_mean/latents_std need {} values each",
                            raw.latent_channels
                        ),
                    });
                }
                Some((mean, std))
            }
            // The SDXL pipeline applies them only when both are present.
            _ => None,
        };
        Ok(Self {
            out_channels: raw.out_channels,
            block_out_channels: raw.block_out_channels,
            layers_per_block: raw.layers_per_block,
            latent_channels: raw.latent_channels,
            norm_groups: raw.norm_num_groups,
            scaling_factor: raw.scaling_factor,
            latents_mean_std,
            mid_block_attention: raw.mid_block_add_attention,
            post_quant_conv: raw.use_post_quant_conv,
        })
    }

    /// Pixels per latent position: 2^(levels − 1).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}
