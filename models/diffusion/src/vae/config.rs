//! `vae/config.json` of a diffusers `AutoencoderKL` (only what the decoder needs).

use std::path::Path;

use serde::Deserialize;

use crate::config::{check_groups, positive, positive_finite, total, unsupported, weight};
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
        check_ranges(&raw, path)?;
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
                // The decoder input is latents · std / scaling_factor + mean.
                if let Some(v) = mean.iter().find(|v| !v.is_finite()) {
                    return Err(unsupported(path, "latents_mean", v, "finite values"));
                }
                if let Some(v) = std.iter().find(|v| !v.is_finite() || **v == 0.0) {
                    return Err(unsupported(path, "latents_std", v, "finite nonzero values"));
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

    /// A lower bound of the decoder's parameters: the weights of every convolution and
    /// linear layer (biases and norms left out), with saturating arithmetic since nothing
    /// bounds the widths and counts yet. Checked against the checkpoint before the decoder
    /// is built.
    pub fn min_parameter_count(&self) -> u64 {
        // conv1, conv2, and the 1×1 conv_shortcut when the width changes.
        let resnet = |cin: usize, cout: usize| {
            let shortcut = if cin == cout { 0 } else { weight(&[cin, cout]) };
            total([weight(&[9, cin, cout]), weight(&[9, cout, cout]), shortcut])
        };
        let top = *self.block_out_channels.last().expect("validated levels");
        let c0 = self.block_out_channels[0];
        let latent = self.latent_channels;
        let mid = total([
            resnet(top, top).saturating_mul(2),
            // to_q, to_k, to_v, to_out.0.
            if self.mid_block_attention {
                weight(&[4, top, top])
            } else {
                0
            },
        ]);
        // Each UpDecoderBlock2D: layers_per_block + 1 resnets, the first from the previous
        // block's width; an upsampling 3×3 convolution except on the last.
        let mut prev = top;
        let levels = self.block_out_channels.len();
        let up = self
            .block_out_channels
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &out)| {
                let first = resnet(prev, out);
                prev = out;
                total([
                    first,
                    resnet(out, out).saturating_mul(self.layers_per_block as u64),
                    if i + 1 < levels {
                        weight(&[9, out, out])
                    } else {
                        0
                    },
                ])
            });
        total([
            if self.post_quant_conv {
                weight(&[latent, latent])
            } else {
                0
            },
            weight(&[9, latent, top]),
            mid,
            total(up),
            weight(&[9, c0, self.out_channels]),
        ])
    }

    /// [`Self::min_parameter_count`] with the fields behind it, for a refusal message.
    pub fn declared_size(&self, config: &Path) -> illume_weights::DeclaredSize {
        illume_weights::DeclaredSize {
            model: "AutoencoderKL decoder".into(),
            config: config.to_path_buf(),
            parameters: self.min_parameter_count(),
            fields: format!(
                "block_out_channels={:?} layers_per_block={} latent_channels={} out_channels={}",
                self.block_out_channels,
                self.layers_per_block,
                self.latent_channels,
                self.out_channels
            ),
        }
    }
}

/// Ranges of the fields the decoder's arithmetic or construction depends on.
fn check_ranges(raw: &RawVaeConfig, path: &Path) -> Result<(), DiffusionError> {
    let levels = raw.block_out_channels.len();
    // At least one level; the pixel scale 2^(levels − 1) must be representable.
    let scale = levels
        .checked_sub(1)
        .and_then(|shift| u32::try_from(shift).ok())
        .and_then(|shift| 1usize.checked_shl(shift));
    if scale.is_none() {
        return Err(unsupported(
            path,
            "block_out_channels",
            &raw.block_out_channels,
            &format!("1 to {} levels", usize::BITS),
        ));
    }
    if raw.block_out_channels.contains(&0) {
        return Err(unsupported(
            path,
            "block_out_channels",
            &raw.block_out_channels,
            "positive channel counts",
        ));
    }
    check_groups(path, raw.norm_num_groups, &raw.block_out_channels)?;
    positive(path, "out_channels", raw.out_channels)?;
    positive(path, "latent_channels", raw.latent_channels)?;
    // The latents are divided by it (0 decodes an all-white image).
    positive_finite(path, "scaling_factor", raw.scaling_factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SDXL: &str = include_str!("../../configs/sdxl/vae_config.json");
    const DEMO: &str = include_str!("../../configs/demo/vae/config.json");
    /// Decoder parameters (with post_quant_conv) of the SDXL VAE: its 83,653,863 in all
    /// less the encoder's 34,163,664 (with quant_conv), both counted by a script mirroring
    /// the module construction, which gives the fixture checkpoint's exact decoder value
    /// count on the demo config.
    const SDXL_DECODER_PARAMETERS: u64 = 49_490_199;
    /// Decoder values (all but `encoder.*` and `quant_conv.*`) of the fixture checkpoint
    /// `sdxl_decoder/vae` (the demo config).
    const DEMO_DECODER_PARAMETERS: u64 = 194_967;

    fn parse(json: &str) -> Result<VaeConfig, DiffusionError> {
        VaeConfig::from_json(json, Path::new("vae/config.json"))
    }

    /// The SDXL config with `field` replaced by `value`.
    fn sdxl_with(field: &str, value: serde_json::Value) -> Result<VaeConfig, DiffusionError> {
        let mut config: serde_json::Value = serde_json::from_str(SDXL).unwrap();
        config[field] = value;
        parse(&config.to_string())
    }

    fn rejects(field: &str, value: serde_json::Value) {
        let err = sdxl_with(field, value.clone())
            .expect_err(&format!("{field} = {value} was accepted"))
            .to_string();
        assert!(
            err.contains(field) && err.contains("vae/config.json"),
            "{err}"
        );
    }

    #[test]
    fn official_and_demo_configs_parse() {
        assert_eq!(parse(SDXL).unwrap().scale_factor(), 8);
        assert_eq!(parse(DEMO).unwrap().scale_factor(), 8);
    }

    #[test]
    fn out_of_range_values_are_named() {
        rejects("norm_num_groups", json!(0));
        // 128 is not a multiple of 48.
        rejects("norm_num_groups", json!(48));
        rejects("scaling_factor", json!(0));
        rejects("scaling_factor", json!(-0.13025));
        rejects("out_channels", json!(0));
        rejects("latent_channels", json!(0));
        let mut config: serde_json::Value = serde_json::from_str(SDXL).unwrap();
        config["up_block_types"] = json!([]);
        config["block_out_channels"] = json!([]);
        let err = parse(&config.to_string()).unwrap_err().to_string();
        assert!(err.contains("block_out_channels"), "{err}");
        config["up_block_types"] = json!(["UpDecoderBlock2D"]);
        config["block_out_channels"] = json!([0]);
        let err = parse(&config.to_string()).unwrap_err().to_string();
        assert!(err.contains("block_out_channels"), "{err}");
    }

    #[test]
    fn latent_std_must_be_nonzero() {
        let with = |mean: serde_json::Value, std: serde_json::Value| {
            let mut config: serde_json::Value = serde_json::from_str(SDXL).unwrap();
            config["latents_mean"] = mean;
            config["latents_std"] = std;
            parse(&config.to_string())
        };
        let ok = with(json!([0.1, 0.2, 0.3, 0.4]), json!([1.0, 2.0, 3.0, 4.0])).unwrap();
        assert!(ok.latents_mean_std.is_some());
        let err = with(json!([0.1, 0.2, 0.3, 0.4]), json!([1.0, 0.0, 3.0, 4.0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("latents_std"), "{err}");
    }

    #[test]
    fn parameter_bound_is_below_and_near_the_real_count() {
        for (json, real) in [
            (SDXL, SDXL_DECODER_PARAMETERS),
            (DEMO, DEMO_DECODER_PARAMETERS),
        ] {
            let bound = parse(json).unwrap().min_parameter_count();
            assert!(bound <= real, "{bound} > {real}");
            assert!(bound * 2 >= real, "{bound} is loose against {real}");
        }
    }

    #[test]
    fn inflated_configs_declare_far_more_than_the_real_count() {
        let deep = sdxl_with("layers_per_block", json!(100_000)).unwrap();
        assert!(deep.min_parameter_count() > 1000 * SDXL_DECODER_PARAMETERS);
        let fields = deep.declared_size(Path::new("vae/config.json")).fields;
        assert!(fields.contains("layers_per_block=100000"), "{fields}");
        let wide = sdxl_with("block_out_channels", json!([128, 256, 512, 1 << 20])).unwrap();
        assert!(wide.min_parameter_count() > 1000 * SDXL_DECODER_PARAMETERS);
        let endless = sdxl_with("layers_per_block", json!(u64::MAX)).unwrap();
        assert_eq!(endless.min_parameter_count(), u64::MAX);
    }
}
