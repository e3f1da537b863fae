//! `unet/config.json` of a diffusers `UNet2DConditionModel`, resolved into per-block
//! settings the way `UNet2DConditionModel.__init__` (diffusers 0.31) resolves them.

use std::path::Path;

use serde::Deserialize;

use crate::config::{
    check_groups, inconsistent, positive, positive_finite, total, unsupported, weight, PerBlock,
};
use crate::error::DiffusionError;

/// The JSON as written by diffusers; absent fields take diffusers' defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct RawUNetConfig {
    in_channels: usize,
    out_channels: usize,
    center_input_sample: bool,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    down_block_types: Vec<String>,
    mid_block_type: Option<String>,
    up_block_types: Vec<String>,
    only_cross_attention: PerBlock<bool>,
    block_out_channels: Vec<usize>,
    layers_per_block: PerBlock<usize>,
    downsample_padding: usize,
    mid_block_scale_factor: f64,
    act_fn: String,
    norm_num_groups: Option<usize>,
    norm_eps: f64,
    cross_attention_dim: PerBlock<usize>,
    transformer_layers_per_block: PerBlock<PerBlock<usize>>,
    reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>>,
    encoder_hid_dim: Option<usize>,
    attention_head_dim: PerBlock<usize>,
    num_attention_heads: Option<PerBlock<usize>>,
    dual_cross_attention: bool,
    use_linear_projection: bool,
    class_embed_type: Option<String>,
    addition_embed_type: Option<String>,
    addition_time_embed_dim: Option<usize>,
    num_class_embeds: Option<usize>,
    resnet_time_scale_shift: String,
    resnet_skip_time_act: bool,
    time_embedding_type: String,
    time_embedding_dim: Option<usize>,
    time_embedding_act_fn: Option<String>,
    timestep_post_act: Option<String>,
    time_cond_proj_dim: Option<usize>,
    conv_in_kernel: usize,
    conv_out_kernel: usize,
    projection_class_embeddings_input_dim: Option<usize>,
    attention_type: String,
    class_embeddings_concat: bool,
    mid_block_only_cross_attention: Option<bool>,
    cross_attention_norm: Option<String>,
}

impl Default for RawUNetConfig {
    /// `UNet2DConditionModel.__init__` defaults.
    fn default() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "DownBlock2D".into(),
            ],
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: vec![
                "UpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
            ],
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(PerBlock::One(1)),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            resnet_time_scale_shift: "default".into(),
            resnet_skip_time_act: false,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            projection_class_embeddings_input_dim: None,
            attention_type: "default".into(),
            class_embeddings_concat: false,
            mid_block_only_cross_attention: None,
            cross_attention_norm: None,
        }
    }
}

/// Settings of one `Transformer2DModel` stack inside a block.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSettings {
    /// Number of `BasicTransformerBlock`s behind each resnet of the block.
    pub layers: Vec<usize>,
    pub heads: usize,
    pub cross_attention_dim: usize,
}

/// One down block (`DownBlock2D`, or `CrossAttnDownBlock2D` when `attention` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct DownBlockSettings {
    pub in_channels: usize,
    pub out_channels: usize,
    pub resnets: usize,
    pub attention: Option<AttentionSettings>,
    pub downsample: bool,
}

impl DownBlockSettings {
    /// Input channels of resnet `i`: the first takes the previous block's width.
    pub fn resnet_in_channels(&self, i: usize) -> usize {
        if i == 0 {
            self.in_channels
        } else {
            self.out_channels
        }
    }
}

/// The `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MidBlockSettings {
    pub channels: usize,
    pub attention: AttentionSettings,
    pub output_scale_factor: f64,
}

/// One up block (`UpBlock2D`, or `CrossAttnUpBlock2D` when `attention` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct UpBlockSettings {
    /// Channels of the deepest skip connection this block consumes (`in_channels`).
    pub in_channels: usize,
    pub out_channels: usize,
    pub prev_output_channels: usize,
    pub resnets: usize,
    pub attention: Option<AttentionSettings>,
    pub upsample: bool,
}

impl UpBlockSettings {
    /// Input channels of resnet `i`: its input concatenated with the skip connection it
    /// consumes. The last resnet takes the block's input-side skip, the others skips of
    /// this level; the first also takes the previous up block's output.
    pub fn resnet_in_channels(&self, i: usize) -> usize {
        let skip = if i + 1 == self.resnets {
            self.in_channels
        } else {
            self.out_channels
        };
        let input = if i == 0 {
            self.prev_output_channels
        } else {
            self.out_channels
        };
        // Saturating: also called on unchecked widths, by the parameter count.
        input.saturating_add(skip)
    }
}

/// The SDXL `text_time` additional embedding: pooled text + sinusoids of the time ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTimeSettings {
    /// Sinusoid width per time id (`addition_time_embed_dim`).
    pub time_embed_dim: usize,
    /// Input width of `add_embedding.linear_1` (`projection_class_embeddings_input_dim`).
    pub input_dim: usize,
}

/// A `UNet2DConditionModel` configuration, resolved per block.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub block_out_channels: Vec<usize>,
    pub down_blocks: Vec<DownBlockSettings>,
    pub mid_block: Option<MidBlockSettings>,
    pub up_blocks: Vec<UpBlockSettings>,
    pub norm_groups: usize,
    pub norm_eps: f64,
    pub downsample_padding: usize,
    pub use_linear_projection: bool,
    /// Width of the timestep embedding (`time_embedding.linear_2` output).
    pub time_embed_dim: usize,
    pub text_time: Option<TextTimeSettings>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
}

impl UNetConfig {
    /// Read `unet/config.json`.
    pub fn from_file(path: &Path) -> Result<Self, DiffusionError> {
        let raw: RawUNetConfig = crate::config::read(path)?;
        Self::resolve(raw, path)
    }

    /// Parse a config given as JSON text (`path` names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, DiffusionError> {
        let raw: RawUNetConfig = serde_json::from_str(text).map_err(|e| DiffusionError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::resolve(raw, path)
    }

    fn resolve(raw: RawUNetConfig, path: &Path) -> Result<Self, DiffusionError> {
        reject_unsupported(&raw, path)?;
        let blocks = raw.down_block_types.len();
        if blocks == 0
            || raw.up_block_types.len() != blocks
            || raw.block_out_channels.len() != blocks
        {
            return Err(DiffusionError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "{} down block types, {} up block types and {} block_out_channels must agree",
                    blocks,
                    raw.up_block_types.len(),
                    raw.block_out_channels.len()
                ),
            });
        }
        let norm_groups = raw
            .norm_num_groups
            .ok_or_else(|| unsupported(path, "norm_num_groups", "null", "a group count"))?;
        check_ranges(&raw, norm_groups, path)?;
        let layers = raw
            .layers_per_block
            .resolve(blocks, "layers_per_block", path)?;
        check_layers(&layers, path)?;
        let cross_dims = raw
            .cross_attention_dim
            .resolve(blocks, "cross_attention_dim", path)?;
        if cross_dims.contains(&0) {
            return Err(unsupported(
                path,
                "cross_attention_dim",
                &cross_dims,
                "positive widths",
            ));
        }
        // diffusers' historical naming: without `num_attention_heads`, the config's
        // `attention_head_dim` is the number of heads (SDXL: [5, 10, 20] heads of 64).
        let heads = raw
            .num_attention_heads
            .as_ref()
            .unwrap_or(&raw.attention_head_dim)
            .resolve(blocks, "num_attention_heads", path)?;
        let transformer_layers = raw.transformer_layers_per_block.resolve(
            blocks,
            "transformer_layers_per_block",
            path,
        )?;
        let per_layer = |counts: &PerBlock<usize>, n: usize, what: &str| {
            counts.resolve(n, &format!("{what} (per layer)"), path)
        };

        let mut down_blocks = Vec::with_capacity(blocks);
        let mut output_channels = raw.block_out_channels[0];
        for (i, kind) in raw.down_block_types.iter().enumerate() {
            let input_channels = output_channels;
            output_channels = raw.block_out_channels[i];
            let attention = match kind.as_str() {
                "DownBlock2D" => None,
                "CrossAttnDownBlock2D" => Some(AttentionSettings {
                    layers: per_layer(
                        &transformer_layers[i],
                        layers[i],
                        "transformer_layers_per_block",
                    )?,
                    heads: heads[i],
                    cross_attention_dim: cross_dims[i],
                }),
                other => {
                    return Err(unsupported(
                        path,
                        "down_block_types",
                        other,
                        "DownBlock2D, CrossAttnDownBlock2D",
                    ));
                }
            };
            if let Some(a) = &attention {
                check_heads(output_channels, a.heads, path)?;
            }
            down_blocks.push(DownBlockSettings {
                in_channels: input_channels,
                out_channels: output_channels,
                resnets: layers[i],
                attention,
                downsample: i + 1 < blocks,
            });
        }

        let last = blocks - 1;
        let mid_block = match raw.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => {
                let channels = raw.block_out_channels[last];
                check_heads(channels, heads[last], path)?;
                Some(MidBlockSettings {
                    channels,
                    attention: AttentionSettings {
                        // UNetMidBlock2DCrossAttn has one attention layer and reads the first
                        // count of a per-layer list.
                        layers: vec![match &transformer_layers[last] {
                            PerBlock::One(n) => *n,
                            PerBlock::Each(v) => v.first().copied().unwrap_or(1),
                        }],
                        heads: heads[last],
                        cross_attention_dim: cross_dims[last],
                    },
                    output_scale_factor: raw.mid_block_scale_factor,
                })
            }
            Some(other) => {
                return Err(unsupported(
                    path,
                    "mid_block_type",
                    other,
                    "UNetMidBlock2DCrossAttn or null",
                ));
            }
        };

        let reversed_channels: Vec<usize> = raw.block_out_channels.iter().rev().copied().collect();
        let reversed_transformer_layers: Vec<PerBlock<usize>> =
            match &raw.reverse_transformer_layers_per_block {
                Some(r) if r.len() == blocks => r.clone(),
                Some(r) => {
                    return Err(DiffusionError::Config {
                        path: path.to_path_buf(),
                        reason: format!(
                        "reverse_transformer_layers_per_block has {} entries for {blocks} blocks",
                        r.len()
                    ),
                    });
                }
                None => transformer_layers.iter().rev().cloned().collect(),
            };
        let mut up_blocks = Vec::with_capacity(blocks);
        let mut output_channels = reversed_channels[0];
        for (i, kind) in raw.up_block_types.iter().enumerate() {
            let prev_output_channels = output_channels;
            output_channels = reversed_channels[i];
            let input_channels = reversed_channels[(i + 1).min(last)];
            let resnets = layers[last - i] + 1;
            let attention = match kind.as_str() {
                "UpBlock2D" => None,
                "CrossAttnUpBlock2D" => Some(AttentionSettings {
                    layers: per_layer(
                        &reversed_transformer_layers[i],
                        resnets,
                        "reverse_transformer_layers_per_block",
                    )?,
                    heads: heads[last - i],
                    cross_attention_dim: cross_dims[last - i],
                }),
                other => {
                    return Err(unsupported(
                        path,
                        "up_block_types",
                        other,
                        "UpBlock2D, CrossAttnUpBlock2D",
                    ));
                }
            };
            if let Some(a) = &attention {
                check_heads(output_channels, a.heads, path)?;
            }
            up_blocks.push(UpBlockSettings {
                in_channels: input_channels,
                out_channels: output_channels,
                prev_output_channels,
                resnets,
                attention,
                upsample: i < last,
            });
        }

        let time_embed_dim = raw
            .time_embedding_dim
            .unwrap_or(raw.block_out_channels[0] * 4);
        let text_time = match raw.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                let time_embed_dim = raw.addition_time_embed_dim.ok_or_else(|| {
                    unsupported(
                        path,
                        "addition_time_embed_dim",
                        "null",
                        "a width for text_time",
                    )
                })?;
                let input_dim = raw.projection_class_embeddings_input_dim.ok_or_else(|| {
                    unsupported(
                        path,
                        "projection_class_embeddings_input_dim",
                        "null",
                        "a width for text_time",
                    )
                })?;
                Some(TextTimeSettings {
                    time_embed_dim,
                    input_dim,
                })
            }
            Some(other) => {
                return Err(unsupported(
                    path,
                    "addition_embed_type",
                    other,
                    "text_time or null",
                ));
            }
        };
        for (field, k) in [
            ("conv_in_kernel", raw.conv_in_kernel),
            ("conv_out_kernel", raw.conv_out_kernel),
        ] {
            if k.is_multiple_of(2) {
                return Err(unsupported(path, field, k, "an odd kernel size"));
            }
        }
        Ok(Self {
            in_channels: raw.in_channels,
            out_channels: raw.out_channels,
            center_input_sample: raw.center_input_sample,
            flip_sin_to_cos: raw.flip_sin_to_cos,
            freq_shift: raw.freq_shift,
            block_out_channels: raw.block_out_channels,
            down_blocks,
            mid_block,
            up_blocks,
            norm_groups,
            norm_eps: raw.norm_eps,
            downsample_padding: raw.downsample_padding,
            use_linear_projection: raw.use_linear_projection,
            time_embed_dim,
            text_time,
            conv_in_kernel: raw.conv_in_kernel,
            conv_out_kernel: raw.conv_out_kernel,
        })
    }
}

/// Resnets of the whole UNet (Σ `layers_per_block`) at most: resolution expands per-layer
/// lists to this length before the size check against the checkpoint can run, so an
/// absurd count must not allocate first. Real UNets have a handful.
const MAX_RESNETS: usize = 1 << 20;

/// Ranges of the fields the network's arithmetic or construction depends on.
fn check_ranges(raw: &RawUNetConfig, groups: usize, path: &Path) -> Result<(), DiffusionError> {
    positive(path, "in_channels", raw.in_channels)?;
    positive(path, "out_channels", raw.out_channels)?;
    if raw.block_out_channels.contains(&0) {
        return Err(unsupported(
            path,
            "block_out_channels",
            &raw.block_out_channels,
            "positive channel counts",
        ));
    }
    check_groups(path, groups, &raw.block_out_channels)?;
    positive_finite(path, "norm_eps", raw.norm_eps)?;
    // The mid block's output is divided by it.
    positive_finite(path, "mid_block_scale_factor", raw.mid_block_scale_factor)?;
    if let Some(width) = raw.time_embedding_dim {
        positive(path, "time_embedding_dim", width)?;
    }
    if raw.downsample_padding > 1 {
        return Err(unsupported(
            path,
            "downsample_padding",
            raw.downsample_padding,
            "0 or 1",
        ));
    }
    // The sinusoid frequencies are exp(−ln(10000)·i / (width/2 − freq_shift)): the divisor
    // must be positive for every embedded width (zero gives NaN, negative exploding ones).
    let mut widths = vec![("block_out_channels[0]", raw.block_out_channels[0])];
    if raw.addition_embed_type.as_deref() == Some("text_time") {
        if let Some(width) = raw.addition_time_embed_dim {
            positive(path, "addition_time_embed_dim", width)?;
            widths.push(("addition_time_embed_dim", width));
        }
    }
    for (field, width) in widths {
        let half = (width / 2) as f64;
        if !(raw.freq_shift.is_finite() && (half == 0.0 || raw.freq_shift < half)) {
            return Err(inconsistent(
                path,
                format!(
                    "freq_shift {} must be a finite number below half the sinusoid width \
                     ({field} {width} / 2 = {half})",
                    raw.freq_shift
                ),
            ));
        }
    }
    Ok(())
}

/// Every block needs a resnet (without one a block cannot change its width), and the
/// total is bounded by [`MAX_RESNETS`].
fn check_layers(layers: &[usize], path: &Path) -> Result<(), DiffusionError> {
    let resnets = layers.iter().fold(0usize, |n, l| n.saturating_add(*l));
    if layers.contains(&0) || resnets > MAX_RESNETS {
        return Err(unsupported(
            path,
            "layers_per_block",
            layers,
            &format!("at least 1 per block, at most {MAX_RESNETS} in all"),
        ));
    }
    Ok(())
}

impl UNetConfig {
    /// A lower bound of the parameters of the network built from this config: the weights
    /// of every convolution and linear layer (biases and norms left out), with saturating
    /// arithmetic since nothing bounds the widths and counts yet. Checked against the
    /// checkpoint before the network is built.
    pub fn min_parameter_count(&self) -> u64 {
        let t = self.time_embed_dim;
        // conv1, conv2, time_emb_proj, and the 1×1 conv_shortcut when the width changes.
        let resnet = |cin: usize, cout: usize| {
            let shortcut = if cin == cout { 0 } else { weight(&[cin, cout]) };
            total([
                weight(&[9, cin, cout]),
                weight(&[9, cout, cout]),
                weight(&[t, cout]),
                shortcut,
            ])
        };
        // Per Transformer2DModel: proj_in and proj_out (c² each, Linear or 1×1 conv); per
        // BasicTransformerBlock: attn1 4c², attn2 2c² + 2·cross·c, the GEGLU feed-forward
        // c·8c + 4c·c.
        let transformers = |c: usize, a: Option<&AttentionSettings>| {
            let Some(a) = a else { return 0 };
            let cross = a.cross_attention_dim;
            let block = total([weight(&[18, c, c]), weight(&[2, cross, c])]);
            let stack = |layers: usize| block.saturating_mul(layers as u64);
            total(
                a.layers
                    .iter()
                    .map(|&layers| total([weight(&[2, c, c]), stack(layers)])),
            )
        };
        let resample = |c: usize, present: bool| if present { weight(&[9, c, c]) } else { 0 };
        let c0 = self.block_out_channels[0];
        let (kin, kout) = (self.conv_in_kernel, self.conv_out_kernel);
        let embeddings = total([
            weight(&[kin, kin, self.in_channels, c0]),
            weight(&[c0, t]),
            weight(&[t, t]),
            self.text_time
                .as_ref()
                .map_or(0, |tt| total([weight(&[tt.input_dim, t]), weight(&[t, t])])),
            weight(&[kout, kout, c0, self.out_channels]),
        ]);
        let down = self.down_blocks.iter().map(|b| {
            total([
                total((0..b.resnets).map(|i| resnet(b.resnet_in_channels(i), b.out_channels))),
                transformers(b.out_channels, b.attention.as_ref()),
                resample(b.out_channels, b.downsample),
            ])
        });
        let mid = self.mid_block.iter().map(|m| {
            let resnets = (m.attention.layers.len() as u64).saturating_add(1);
            total([
                resnet(m.channels, m.channels).saturating_mul(resnets),
                transformers(m.channels, Some(&m.attention)),
            ])
        });
        let up = self.up_blocks.iter().map(|b| {
            total([
                total((0..b.resnets).map(|i| resnet(b.resnet_in_channels(i), b.out_channels))),
                transformers(b.out_channels, b.attention.as_ref()),
                resample(b.out_channels, b.upsample),
            ])
        });
        total([embeddings, total(down), total(mid), total(up)])
    }

    /// [`Self::min_parameter_count`] with the fields behind it, for a refusal message.
    pub fn declared_size(&self, config: &Path) -> illume_weights::DeclaredSize {
        let attentions = || {
            self.down_blocks
                .iter()
                .filter_map(|b| b.attention.as_ref())
                .chain(self.mid_block.iter().map(|m| &m.attention))
                .chain(self.up_blocks.iter().filter_map(|b| b.attention.as_ref()))
        };
        let transformer_blocks =
            total(attentions().flat_map(|a| a.layers.iter().map(|&n| n as u64)));
        let layers: Vec<usize> = self.down_blocks.iter().map(|b| b.resnets).collect();
        illume_weights::DeclaredSize {
            model: "UNet2DConditionModel".into(),
            config: config.to_path_buf(),
            parameters: self.min_parameter_count(),
            fields: format!(
                "block_out_channels={:?} layers_per_block={layers:?} \
                 transformer_layers_per_block (transformer blocks in all)={transformer_blocks} \
                 cross_attention_dim={} in_channels={} time_embed_dim={}",
                self.block_out_channels,
                attentions()
                    .map(|a| a.cross_attention_dim)
                    .max()
                    .unwrap_or(0),
                self.in_channels,
                self.time_embed_dim,
            ),
        }
    }
}

fn check_heads(channels: usize, heads: usize, path: &Path) -> Result<(), DiffusionError> {
    if heads == 0 || !channels.is_multiple_of(heads) {
        return Err(DiffusionError::Config {
            path: path.to_path_buf(),
            reason: format!("{channels} channels cannot be split into {heads} attention heads"),
        });
    }
    Ok(())
}

/// Options of `UNet2DConditionModel` that the ILLUME+ decoder (an SDXL UNet) does not use:
/// each is a clear error naming the field instead of a silently different network.
fn reject_unsupported(raw: &RawUNetConfig, path: &Path) -> Result<(), DiffusionError> {
    let only_cross = match &raw.only_cross_attention {
        PerBlock::One(v) => *v,
        PerBlock::Each(v) => v.iter().any(|x| *x),
    };
    let checks: [(&str, bool, String, &str); 15] = [
        ("only_cross_attention", only_cross, "true".into(), "false"),
        ("act_fn", raw.act_fn != "silu", raw.act_fn.clone(), "silu"),
        (
            "encoder_hid_dim",
            raw.encoder_hid_dim.is_some(),
            format!("{:?}", raw.encoder_hid_dim),
            "null",
        ),
        (
            "dual_cross_attention",
            raw.dual_cross_attention,
            "true".into(),
            "false",
        ),
        (
            "class_embed_type",
            raw.class_embed_type.is_some(),
            format!("{:?}", raw.class_embed_type),
            "null",
        ),
        (
            "num_class_embeds",
            raw.num_class_embeds.is_some(),
            format!("{:?}", raw.num_class_embeds),
            "null",
        ),
        (
            "resnet_time_scale_shift",
            raw.resnet_time_scale_shift != "default",
            raw.resnet_time_scale_shift.clone(),
            "default",
        ),
        (
            "resnet_skip_time_act",
            raw.resnet_skip_time_act,
            "true".into(),
            "false",
        ),
        (
            "time_embedding_type",
            raw.time_embedding_type != "positional",
            raw.time_embedding_type.clone(),
            "positional",
        ),
        (
            "time_embedding_act_fn",
            raw.time_embedding_act_fn.is_some(),
            format!("{:?}", raw.time_embedding_act_fn),
            "null",
        ),
        (
            "timestep_post_act",
            raw.timestep_post_act.is_some(),
            format!("{:?}", raw.timestep_post_act),
            "null",
        ),
        (
            "time_cond_proj_dim",
            raw.time_cond_proj_dim.is_some(),
            format!("{:?}", raw.time_cond_proj_dim),
            "null",
        ),
        (
            "attention_type",
            raw.attention_type != "default",
            raw.attention_type.clone(),
            "default",
        ),
        (
            "class_embeddings_concat",
            raw.class_embeddings_concat,
            "true".into(),
            "false",
        ),
        (
            "cross_attention_norm",
            raw.cross_attention_norm.is_some(),
            format!("{:?}", raw.cross_attention_norm),
            "null",
        ),
    ];
    for (field, bad, value, supported) in checks {
        if bad {
            return Err(unsupported(path, field, value, supported));
        }
    }
    if raw.mid_block_only_cross_attention == Some(true) {
        return Err(unsupported(
            path,
            "mid_block_only_cross_attention",
            "true",
            "false or null",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<UNetConfig, DiffusionError> {
        UNetConfig::from_json(json, Path::new("unet/config.json"))
    }

    #[test]
    fn sdxl_base_resolves_like_diffusers() {
        // SDXL-base values (stabilityai/stable-diffusion-xl-base-1.0 unet/config.json) with
        // the ILLUME+ widened input.
        let config = parse(
            r#"{"in_channels": 68, "block_out_channels": [320, 640, 1280],
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
                "cross_attention_dim": 2048, "use_linear_projection": true,
                "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816}"#,
        )
        .unwrap();
        assert_eq!(config.time_embed_dim, 1280);
        assert_eq!(config.down_blocks[0].attention, None);
        let d2 = &config.down_blocks[2];
        assert_eq!(
            (d2.in_channels, d2.out_channels, d2.downsample),
            (640, 1280, false)
        );
        assert_eq!(d2.attention.as_ref().unwrap().layers, vec![10, 10]);
        assert_eq!(d2.attention.as_ref().unwrap().heads, 20);
        let mid = config.mid_block.as_ref().unwrap();
        assert_eq!(
            (mid.channels, mid.attention.layers.clone()),
            (1280, vec![10])
        );
        let u0 = &config.up_blocks[0];
        assert_eq!(
            (
                u0.in_channels,
                u0.out_channels,
                u0.prev_output_channels,
                u0.resnets
            ),
            (640, 1280, 1280, 3)
        );
        assert_eq!(u0.attention.as_ref().unwrap().layers, vec![10, 10, 10]);
        let u2 = &config.up_blocks[2];
        assert_eq!(
            (
                u2.in_channels,
                u2.out_channels,
                u2.prev_output_channels,
                u2.upsample
            ),
            (320, 320, 640, false)
        );
    }

    const SDXL: &str = include_str!("../../configs/sdxl/unet_config.json");
    const DEMO: &str = include_str!("../../configs/demo/unet/config.json");
    /// Parameters of the ILLUME+ SDXL UNet: SDXL-base's 2,567,463,684 plus the conv_in
    /// widened from 4 to 68 input channels (64·320·3·3 = 184,320 more). Both counted by a
    /// script mirroring the module construction, which gives the fixture checkpoint's
    /// exact value count on the demo config.
    const SDXL_PARAMETERS: u64 = 2_567_648_004;
    /// Values of the fixture checkpoint `sdxl_decoder/unet` (the demo config).
    const DEMO_PARAMETERS: u64 = 1_073_828;

    /// The SDXL config with `field` replaced by `value`.
    fn sdxl_with(field: &str, value: serde_json::Value) -> Result<UNetConfig, DiffusionError> {
        let mut json: serde_json::Value = serde_json::from_str(SDXL).unwrap();
        json[field] = value;
        parse(&json.to_string())
    }

    fn rejects(field: &str, value: serde_json::Value) {
        let err = sdxl_with(field, value.clone())
            .expect_err(&format!("{field} = {value} was accepted"))
            .to_string();
        assert!(
            err.contains(field) && err.contains("unet/config.json"),
            "{err}"
        );
    }

    #[test]
    fn official_and_demo_configs_parse() {
        parse(SDXL).unwrap();
        parse(DEMO).unwrap();
    }

    #[test]
    fn out_of_range_values_are_named() {
        use serde_json::json;
        rejects("norm_num_groups", json!(0));
        // 320 is not a multiple of 48.
        rejects("norm_num_groups", json!(48));
        rejects("block_out_channels", json!([320, 0, 1280]));
        rejects("in_channels", json!(0));
        rejects("out_channels", json!(0));
        rejects("norm_eps", json!(0.0));
        rejects("norm_eps", json!(-1e-5));
        rejects("mid_block_scale_factor", json!(0));
        rejects("freq_shift", json!(160));
        rejects("layers_per_block", json!(0));
        rejects("layers_per_block", json!([2, 0, 2]));
        rejects("layers_per_block", json!(1u64 << 40));
        rejects("cross_attention_dim", json!(0));
        rejects("time_embedding_dim", json!(0));
        rejects("addition_time_embed_dim", json!(0));
        rejects("downsample_padding", json!(2));
        // A shift of 1 (DDPM's) is fine: 320/2 − 1 and 256/2 − 1 are positive.
        sdxl_with("freq_shift", json!(1)).unwrap();
    }

    #[test]
    fn parameter_bound_is_below_and_near_the_real_count() {
        for (json, real) in [(SDXL, SDXL_PARAMETERS), (DEMO, DEMO_PARAMETERS)] {
            let bound = parse(json).unwrap().min_parameter_count();
            assert!(bound <= real, "{bound} > {real}");
            assert!(bound * 2 >= real, "{bound} is loose against {real}");
        }
    }

    #[test]
    fn inflated_configs_declare_far_more_than_the_real_count() {
        use serde_json::json;
        let deep = sdxl_with("layers_per_block", json!(100_000)).unwrap();
        assert!(deep.min_parameter_count() > 1000 * SDXL_PARAMETERS);
        let fields = deep.declared_size(Path::new("unet/config.json")).fields;
        assert!(
            fields.contains("layers_per_block=[100000, 100000, 100000]"),
            "{fields}"
        );
        let wide = sdxl_with("block_out_channels", json!([1_000_000, 640, 1280])).unwrap();
        assert!(wide.min_parameter_count() > 1000 * SDXL_PARAMETERS);
        // Values whose products overflow u64 saturate instead of wrapping to small ones.
        let huge = sdxl_with("transformer_layers_per_block", json!(u64::MAX)).unwrap();
        assert_eq!(huge.min_parameter_count(), u64::MAX);
    }

    #[test]
    fn unsupported_values_are_named() {
        let err = parse(r#"{"class_embed_type": "timestep"}"#).unwrap_err();
        assert!(err.to_string().contains("class_embed_type"), "{err}");
        let err = parse(r#"{"down_block_types": ["SimpleDownBlock2D"], "up_block_types": ["UpBlock2D"], "block_out_channels": [32]}"#).unwrap_err();
        assert!(err.to_string().contains("SimpleDownBlock2D"), "{err}");
        let err = parse(r#"{"layers_per_block": [1, 2]}"#).unwrap_err();
        assert!(err.to_string().contains("layers_per_block"), "{err}");
    }
}
