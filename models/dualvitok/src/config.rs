//! DualViTok hyper-parameters, read from the official config schema (`vq_model.config`, as in
//! `configs/example/dualvitok/*.py`) plus the hub config of the Qwen2-VL ViT
//! (`semantic_encoder_vit_config`), with the official release configuration built in.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The Qwen2-VL vision transformer of the semantic branch (hub config of
/// `Emova-ollm/qwen2vit600m`, the Qwen2-VL-7B ViT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionTransformerConfig {
    pub depth: usize,
    pub embed_dim: usize,
    /// Output width of the patch merger (3584 for Qwen2-VL-7B).
    pub hidden_size: usize,
    pub num_heads: usize,
    #[serde(default = "defaults::mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "defaults::three")]
    pub in_channels: usize,
    #[serde(default = "defaults::patch_size")]
    pub patch_size: usize,
    #[serde(default = "defaults::two")]
    pub spatial_merge_size: usize,
    #[serde(default = "defaults::two")]
    pub temporal_patch_size: usize,
    #[serde(default = "defaults::quick_gelu")]
    pub hidden_act: String,
}

impl VisionTransformerConfig {
    /// The Qwen2-VL-7B vision tower used by the released DualViTok and ILLUME+.
    pub fn qwen2_vl_7b() -> Self {
        Self {
            depth: 32,
            embed_dim: 1280,
            hidden_size: 3584,
            num_heads: 16,
            mlp_ratio: 4.0,
            in_channels: 3,
            patch_size: 14,
            spatial_merge_size: 2,
            temporal_patch_size: 2,
            hidden_act: "quick_gelu".into(),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    pub fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Values of one flattened patch: channels × temporal × patch × patch.
    pub fn patch_values(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// A lower bound of the ViT's parameters: per block qkv + proj (4d²) and fc1 + fc2
    /// (2·d·mlp); the merger 4d→4d→hidden.
    pub fn min_parameter_count(&self) -> u64 {
        let d = self.embed_dim as u64;
        let block = d
            .saturating_mul(d)
            .saturating_mul(4)
            .saturating_add(d.saturating_mul(self.mlp_dim() as u64).saturating_mul(2));
        let wide = d.saturating_mul(4);
        let merger = wide
            .saturating_mul(wide)
            .saturating_add(wide.saturating_mul(self.hidden_size as u64));
        block
            .saturating_mul(self.depth as u64)
            .saturating_add(merger)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        // The scaling layer that feeds the ViT is constructed with these constants in the
        // official code, whatever the ViT config says.
        let fixed = [
            ("patch_size", self.patch_size, 14),
            ("temporal_patch_size", self.temporal_patch_size, 2),
            ("spatial_merge_size", self.spatial_merge_size, 2),
            ("in_channels", self.in_channels, 3),
        ];
        for (name, value, expected) in fixed {
            if value != expected {
                return Err(format!(
                    "semantic_encoder_vit_config.{name} is {value}; DualViTok's scaling layer \
                     hard-codes {expected}"
                ));
            }
        }
        if self.hidden_act != "quick_gelu" {
            return Err(format!(
                "semantic_encoder_vit_config.hidden_act `{}` is not supported (quick_gelu)",
                self.hidden_act
            ));
        }
        check_heads(
            "semantic_encoder_vit_config",
            self.embed_dim,
            self.num_heads,
        )?;
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_dim() > 0) {
            return Err(format!(
                "semantic_encoder_vit_config.mlp_ratio {} must be a positive number giving a \
                 positive MLP width",
                self.mlp_ratio
            ));
        }
        positive("semantic_encoder_vit_config.depth", self.depth)?;
        positive("semantic_encoder_vit_config.hidden_size", self.hidden_size)
    }
}

/// Heads of the extra vision blocks of the semantic encoder and decoder: built as
/// `Qwen2VLVisionConfig(depth=n, embed_dim=d)`, so the class defaults apply (16 heads, MLP
/// ratio 4, quick_gelu, LayerNorm eps 1e-6).
pub const SEMANTIC_BLOCK_HEADS: usize = 16;
/// MLP ratio of the extra vision blocks (class default of `Qwen2VLVisionConfig`).
pub const SEMANTIC_BLOCK_MLP_RATIO: usize = 4;

/// `SemanticEncoder`: LayerNorm target + projection + extra vision blocks + projection to z.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticEncoderConfig {
    pub num_blocks: usize,
    #[serde(default = "defaults::linear")]
    pub proj_layer: String,
    pub z_channels: usize,
    #[serde(default)]
    pub double_z: bool,
    pub embed_dim: usize,
    #[serde(default = "defaults::norm")]
    pub target_mlp: String,
}

/// `SemanticDecoder` (training-time regression head; its weights ship in the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SemanticDecoderConfig {
    pub z_channels: usize,
    pub embed_dim: usize,
    pub num_blocks: usize,
    pub output_channels: usize,
    #[serde(default = "defaults::linear")]
    pub proj_layer: String,
}

/// `SimVQ(dim, codebook_size)`: frozen Gaussian codebook + learned linear transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimVqConfig {
    pub dim: usize,
    pub codebook_size: usize,
}

/// MoVQ encoder or decoder (`get_movqgan_config(**cfg)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoVqConfig {
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Level indices (not spatial sizes) that get attention blocks.
    pub attn_resolutions: Vec<usize>,
    pub z_channels: usize,
    pub embed_dim: usize,
    #[serde(default = "defaults::three")]
    pub in_channels: usize,
    #[serde(default = "defaults::three")]
    pub out_channels: usize,
    #[serde(default)]
    pub double_z: bool,
    #[serde(default)]
    pub use_dc_up_down_blocks: bool,
}

impl MoVqConfig {
    /// Channels at level `i` (`ch * ch_mult[i]`).
    pub fn level_channels(&self, level: usize) -> usize {
        self.ch * self.ch_mult[level]
    }

    /// Channels at the lowest resolution.
    pub fn bottom_channels(&self) -> usize {
        self.level_channels(self.ch_mult.len() - 1)
    }

    /// Spatial reduction of the encoder (2 per level but the last).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }

    fn validate(&self, name: &str) -> std::result::Result<(), String> {
        if self.ch_mult.is_empty() {
            return Err(format!("{name}.ch_mult is empty"));
        }
        if !self.use_dc_up_down_blocks {
            return Err(format!(
                "{name}.use_dc_up_down_blocks is false: only the DC down/up blocks of the \
                 released DualViTok are implemented"
            ));
        }
        if self.double_z {
            return Err(format!("{name}.double_z is true: not supported"));
        }
        positive(&format!("{name}.num_res_blocks"), self.num_res_blocks)?;
        positive(&format!("{name}.z_channels"), self.z_channels)?;
        positive(&format!("{name}.embed_dim"), self.embed_dim)?;
        for level in 0..self.ch_mult.len() {
            let c = self.level_channels(level);
            if c == 0 || !c.is_multiple_of(32) {
                return Err(format!(
                    "{name}: level {level} has {c} channels; GroupNorm(32) needs a positive \
                     multiple of 32"
                ));
            }
        }
        Ok(())
    }
}

/// Every hyper-parameter of a DualViTok.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DualViTokConfig {
    pub vit: VisionTransformerConfig,
    pub semantic_encoder: SemanticEncoderConfig,
    pub semantic_quantizer: SimVqConfig,
    pub semantic_decoder: SemanticDecoderConfig,
    pub pixel_encoder: MoVqConfig,
    pub pixel_quantizer: SimVqConfig,
    pub pixel_decoder: MoVqConfig,
}

/// The official schema: `vq_model.config` holds everything but the ViT, whose hub config is
/// stored beside it (the fixtures' `config.json`).
#[derive(Deserialize)]
struct OfficialVqConfig {
    semantic_encoder: SemanticEncoderConfig,
    semantic_quantizer: SimVqConfig,
    semantic_decoder: SemanticDecoderConfig,
    pixel_encoder: MoVqConfig,
    pixel_quantizer: SimVqConfig,
    pixel_decoder: MoVqConfig,
    #[serde(default = "defaults::cat")]
    semantic_detail_merge_type: String,
}

/// Where the configuration in use came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No recognisable config beside the checkpoint: the official release configuration.
    BuiltIn {
        reason: String,
    },
}

impl DualViTokConfig {
    /// `configs/example/dualvitok/dualvitok_anyres_max512.py` with the Qwen2-VL-7B ViT: the
    /// configuration of the released `ILLUME-MLLM/dualvitok`.
    pub fn official() -> Self {
        let movq = |ch: usize, z: usize| MoVqConfig {
            ch,
            ch_mult: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![4],
            z_channels: z,
            embed_dim: z,
            in_channels: 3,
            out_channels: 3,
            double_z: false,
            use_dc_up_down_blocks: true,
        };
        Self {
            vit: VisionTransformerConfig::qwen2_vl_7b(),
            semantic_encoder: SemanticEncoderConfig {
                num_blocks: 4,
                proj_layer: "linear".into(),
                z_channels: 32,
                double_z: false,
                embed_dim: 1280,
                target_mlp: "norm".into(),
            },
            semantic_quantizer: SimVqConfig {
                dim: 32,
                codebook_size: 32768,
            },
            semantic_decoder: SemanticDecoderConfig {
                z_channels: 32,
                embed_dim: 1280,
                num_blocks: 4,
                output_channels: 3584,
                proj_layer: "linear_norm".into(),
            },
            pixel_encoder: movq(128, 32),
            pixel_quantizer: SimVqConfig {
                dim: 32,
                codebook_size: 98304,
            },
            pixel_decoder: movq(384, 64),
        }
    }

    /// Parse a `config.json`: `{"vq_model": {"config": {...}}, "semantic_encoder_vit_config":
    /// {...}}` (the fixture layout), or the `vq_model.config` object itself with an optional
    /// `semantic_encoder_vit_config` beside it. Without a ViT config the Qwen2-VL-7B one is used.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        let vq = value
            .pointer("/vq_model/config")
            .or_else(|| value.get("config"))
            .unwrap_or(value);
        let official: OfficialVqConfig = serde_json::from_value(vq.clone())
            .map_err(|e| format!("not a DualViTok config: {e}"))?;
        let vit = match value.get("semantic_encoder_vit_config") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("semantic_encoder_vit_config: {e}"))?,
            None => VisionTransformerConfig::qwen2_vl_7b(),
        };
        if official.semantic_detail_merge_type != "cat" {
            return Err(format!(
                "semantic_detail_merge_type `{}` is not supported (cat)",
                official.semantic_detail_merge_type
            ));
        }
        let config = Self {
            vit,
            semantic_encoder: official.semantic_encoder,
            semantic_quantizer: official.semantic_quantizer,
            semantic_decoder: official.semantic_decoder,
            pixel_encoder: official.pixel_encoder,
            pixel_quantizer: official.pixel_quantizer,
            pixel_decoder: official.pixel_decoder,
        };
        config.validate()?;
        Ok(config)
    }

    /// Read and validate a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&value).map_err(|reason| Error::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The config for a checkpoint path (file or folder): `config.json` beside it when it is
    /// in the DualViTok schema (then it must be valid), else the official release
    /// configuration. The released repository's config file is not known; a file in another
    /// schema is reported in [`ConfigSource::BuiltIn`], not guessed at.
    pub fn for_checkpoint(checkpoint: &Path) -> Result<(Self, ConfigSource)> {
        let dir = if checkpoint.is_dir() {
            checkpoint
        } else {
            checkpoint.parent().unwrap_or(Path::new("."))
        };
        let candidate = dir.join("config.json");
        let built_in = |reason: String| Ok((Self::official(), ConfigSource::BuiltIn { reason }));
        if !candidate.is_file() {
            return built_in(format!("no config.json in {}", dir.display()));
        }
        let text = std::fs::read_to_string(&candidate).map_err(|source| Error::Io {
            path: candidate.clone(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: candidate.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let vq = value
            .pointer("/vq_model/config")
            .or_else(|| value.get("config"))
            .unwrap_or(&value);
        if vq.get("semantic_encoder").is_none() || vq.get("pixel_encoder").is_none() {
            return built_in(format!(
                "{} is not in the DualViTok config schema",
                candidate.display()
            ));
        }
        let config = Self::from_json(&value).map_err(|reason| Error::Config {
            path: candidate.clone(),
            reason,
        })?;
        Ok((config, ConfigSource::File(candidate)))
    }

    /// Check the constraints the official code relies on (and that this port implements).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.vit.validate()?;
        let se = &self.semantic_encoder;
        if se.proj_layer != "linear" {
            return Err(format!(
                "semantic_encoder.proj_layer `{}` is not supported (linear)",
                se.proj_layer
            ));
        }
        if se.target_mlp != "norm" && se.target_mlp != "identity" {
            return Err(format!(
                "semantic_encoder.target_mlp `{}` is not supported (norm, identity)",
                se.target_mlp
            ));
        }
        if se.double_z {
            return Err("semantic_encoder.double_z is true: not supported".into());
        }
        check_heads("semantic_encoder", se.embed_dim, SEMANTIC_BLOCK_HEADS)?;
        let sd = &self.semantic_decoder;
        if sd.proj_layer != "linear_norm" && sd.proj_layer != "linear" {
            return Err(format!(
                "semantic_decoder.proj_layer `{}` is not supported (linear_norm, linear)",
                sd.proj_layer
            ));
        }
        check_heads("semantic_decoder", sd.embed_dim, SEMANTIC_BLOCK_HEADS)?;
        if self.semantic_quantizer.dim != se.z_channels || sd.z_channels != se.z_channels {
            return Err(format!(
                "semantic z widths disagree: encoder {}, quantizer {}, decoder {}",
                se.z_channels, self.semantic_quantizer.dim, sd.z_channels
            ));
        }
        let pe = &self.pixel_encoder;
        let pd = &self.pixel_decoder;
        pe.validate("pixel_encoder")?;
        pd.validate("pixel_decoder")?;
        if !pe.bottom_channels().is_multiple_of(pe.z_channels) {
            return Err(format!(
                "pixel_encoder: {} bottom channels are not a multiple of z_channels {}",
                pe.bottom_channels(),
                pe.z_channels
            ));
        }
        if self.pixel_quantizer.dim != pe.embed_dim {
            return Err(format!(
                "pixel_quantizer.dim {} differs from pixel_encoder.embed_dim {}",
                self.pixel_quantizer.dim, pe.embed_dim
            ));
        }
        if pd.embed_dim != se.z_channels + pe.embed_dim {
            return Err(format!(
                "pixel_decoder.embed_dim {} must be semantic z {} + pixel embed {} (cat merge)",
                pd.embed_dim, se.z_channels, pe.embed_dim
            ));
        }
        if pd.z_channels != pd.embed_dim || !pd.bottom_channels().is_multiple_of(pd.embed_dim) {
            return Err(format!(
                "pixel_decoder: z_channels {} must equal embed_dim {} and divide the {} bottom \
                 channels (input shortcut)",
                pd.z_channels,
                pd.embed_dim,
                pd.bottom_channels()
            ));
        }
        for (name, q) in [
            ("semantic_quantizer", &self.semantic_quantizer),
            ("pixel_quantizer", &self.pixel_quantizer),
        ] {
            positive(&format!("{name}.codebook_size"), q.codebook_size)?;
            if q.codebook_size > u32::MAX as usize {
                return Err(format!("{name}.codebook_size is absurdly large"));
            }
        }
        Ok(())
    }

    /// A lower bound of the model's parameter count, from the config alone: the linear
    /// layers of every transformer block, the 3×3 convolutions of every residual block and
    /// the codebooks. Checked against the checkpoint before the model is built.
    pub fn min_parameter_count(&self) -> u64 {
        let square = |n: usize| (n as u64).saturating_mul(n as u64);
        let times = |a: usize, b: usize| (a as u64).saturating_mul(b as u64);
        let semantic_block = |width: usize| square(width).saturating_mul(12);
        // Per level, every residual block's second 3×3 convolution and all but the first
        // one's first (that one may change the width): (2·blocks − 1)·9c²; the decoder has
        // one block more per level. The middle: two residual blocks at the bottom width.
        let movq = |c: &MoVqConfig, blocks: usize| {
            let convs = (2 * blocks as u64).saturating_sub(1);
            (0..c.ch_mult.len())
                .map(|level| square(c.level_channels(level)).saturating_mul(9))
                .fold(0u64, u64::saturating_add)
                .saturating_mul(convs)
                .saturating_add(square(c.bottom_channels()).saturating_mul(36))
        };
        let codebook = |q: &SimVqConfig| times(q.codebook_size, q.dim);
        [
            self.vit.min_parameter_count(),
            semantic_block(self.semantic_encoder.embed_dim)
                .saturating_mul(self.semantic_encoder.num_blocks as u64),
            semantic_block(self.semantic_decoder.embed_dim)
                .saturating_mul(self.semantic_decoder.num_blocks as u64),
            times(
                self.semantic_decoder.embed_dim,
                self.semantic_decoder.output_channels,
            ),
            movq(&self.pixel_encoder, self.pixel_encoder.num_res_blocks),
            movq(&self.pixel_decoder, self.pixel_decoder.num_res_blocks + 1),
            codebook(&self.semantic_quantizer),
            codebook(&self.pixel_quantizer),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }

    /// [`Self::min_parameter_count`] with the fields behind it, for a refusal message.
    pub fn declared_size(&self, config: &Path) -> illume_weights::DeclaredSize {
        illume_weights::DeclaredSize {
            model: "DualViTok".into(),
            config: config.to_path_buf(),
            parameters: self.min_parameter_count(),
            fields: format!(
                "semantic_encoder_vit_config.depth={} embed_dim={} hidden_size={}, \
                 pixel_encoder.ch={} pixel_decoder.ch={}, codebook_size={}/{}",
                self.vit.depth,
                self.vit.embed_dim,
                self.vit.hidden_size,
                self.pixel_encoder.ch,
                self.pixel_decoder.ch,
                self.semantic_quantizer.codebook_size,
                self.pixel_quantizer.codebook_size
            ),
        }
    }

    /// Pixel grid edge: image pixels per pixel token along each axis (16 for the release).
    pub fn pixel_patch(&self) -> usize {
        self.pixel_encoder.downsample_factor()
    }
}

fn check_heads(name: &str, dim: usize, heads: usize) -> std::result::Result<(), String> {
    if heads == 0 || dim == 0 || !dim.is_multiple_of(heads) || !(dim / heads).is_multiple_of(4) {
        return Err(format!(
            "{name}: width {dim} with {heads} heads; 2-D RoPE needs a head width that is a \
             multiple of 4"
        ));
    }
    Ok(())
}

fn positive(name: &str, value: usize) -> std::result::Result<(), String> {
    if value == 0 {
        Err(format!("{name} must be positive"))
    } else {
        Ok(())
    }
}

mod defaults {
    pub fn mlp_ratio() -> f64 {
        4.0
    }
    pub fn three() -> usize {
        3
    }
    pub fn two() -> usize {
        2
    }
    pub fn patch_size() -> usize {
        14
    }
    pub fn quick_gelu() -> String {
        "quick_gelu".into()
    }
    pub fn linear() -> String {
        "linear".into()
    }
    pub fn norm() -> String {
        "norm".into()
    }
    pub fn cat() -> String {
        "cat".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_config_is_valid() {
        DualViTokConfig::official().validate().unwrap();
    }

    #[test]
    fn demo_config_parses_in_the_fixture_schema() {
        let value: serde_json::Value =
            serde_json::from_str(include_str!("../demo/config.json")).unwrap();
        let config = DualViTokConfig::from_json(&value).unwrap();
        assert_eq!(config.vit.depth, 2);
        assert_eq!(config.pixel_decoder.embed_dim, 32);
        assert_eq!(config.pixel_quantizer.codebook_size, 768);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let mut config = DualViTokConfig::official();
        config.pixel_encoder.use_dc_up_down_blocks = false;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("use_dc_up_down_blocks"));
        let err = DualViTokConfig::from_json(&serde_json::json!({"hello": 1})).unwrap_err();
        assert!(err.contains("not a DualViTok config"), "{err}");
    }
}
