//! diffusers `UNet2DConditionModel`, built from `unet/config.json` (block types, widths,
//! layer counts, heads, projections, embeddings all come from the config).
//!
//! The module tree mirrors the checkpoint keys, with two documented remaps (a Rust field
//! cannot be named `0`, and a field has one type): `ff.net.0.proj` / `ff.net.2` ↔
//! `ff.geglu.proj` / `ff.linear_out`, and for 1×1-convolution projections
//! (`use_linear_projection: false`) `proj_in` / `proj_out` ↔ `proj_in_conv` / `proj_out_conv`.

mod blocks;
pub mod config;
mod embeddings;
mod transformer;

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::{activation, backend::Backend, Tensor, TensorData};
use illume_backends::{DeviceLimits, IllumeBackend};
use illume_weights::{Checkpoint, LoadOptions};

use self::blocks::{BlockInputs, DownBlock, MidBlock, Shared, UpBlock};
pub use self::config::UNetConfig;
pub use self::embeddings::sinusoidal_embedding;
use self::embeddings::TimestepEmbedding;
use crate::error::DiffusionError;
use crate::layers::{conv2d, group_norm, group_norm_config, CrossAttentionContext};

/// Conditioning inputs of one UNet call besides the sample and the timestep.
#[derive(Debug, Clone)]
pub struct UNetConditioning<B: Backend> {
    /// Cross-attention context (SDXL's text-encoder states; all zeros in ILLUME+).
    pub context: CrossAttentionContext<B>,
    /// Pooled text embedding of the `text_time` add-embedding, `[batch, width]`;
    /// `None` is all zeros (ILLUME+).
    pub text_embeds: Option<Tensor<B, 2>>,
    /// Micro-conditioning time ids of the `text_time` add-embedding, one row shared by the
    /// whole batch (ILLUME+: `[0, 0, 0, 0, 0, resolution_index]`).
    pub time_ids: Vec<f32>,
}

#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    conv_in: Conv2d<B>,
    time_embedding: TimestepEmbedding<B>,
    add_embedding: Option<TimestepEmbedding<B>>,
    down_blocks: Vec<DownBlock<B>>,
    mid_block: Option<MidBlock<B>>,
    up_blocks: Vec<UpBlock<B>>,
    conv_norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    #[module(skip)]
    config: UNetConfig,
}

impl<B: IllumeBackend> UNet2DConditionModel<B> {
    /// The network for `config`, with uninitialised (lazy) parameters.
    pub fn new(config: &UNetConfig, device: &B::Device) -> Self {
        let c0 = config.block_out_channels[0];
        let shared = Shared {
            temb_channels: config.time_embed_dim,
            groups: config.norm_groups,
            eps: config.norm_eps,
            linear_projection: config.use_linear_projection,
        };
        let (kin, kout) = (config.conv_in_kernel, config.conv_out_kernel);
        Self {
            conv_in: conv2d([config.in_channels, c0], kin, 1, kin / 2, device),
            time_embedding: TimestepEmbedding::new(c0, config.time_embed_dim, device),
            add_embedding: config
                .text_time
                .as_ref()
                .map(|t| TimestepEmbedding::new(t.input_dim, config.time_embed_dim, device)),
            down_blocks: config
                .down_blocks
                .iter()
                .map(|s| DownBlock::new(s, &shared, config.downsample_padding, device))
                .collect(),
            mid_block: config
                .mid_block
                .as_ref()
                .map(|s| MidBlock::new(s, &shared, device)),
            up_blocks: config
                .up_blocks
                .iter()
                .map(|s| UpBlock::new(s, &shared, device))
                .collect(),
            conv_norm_out: group_norm_config(config.norm_groups, c0, config.norm_eps).init(device),
            conv_out: conv2d([c0, config.out_channels], kout, 1, kout / 2, device),
            config: config.clone(),
        }
    }

    /// Build from `unet/config.json` and load `unet/diffusion_pytorch_model.*` (strict).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, DiffusionError> {
        let config_path = dir.join("config.json");
        let config = UNetConfig::from_file(&config_path)?;
        let linear_projection = config.use_linear_projection;
        let checkpoint =
            Checkpoint::open(dir)?.renamed(|key| Some(module_key(key, linear_projection)));
        // Refuse a config too large for this checkpoint before building anything.
        config.declared_size(&config_path).check(
            &checkpoint,
            DeviceLimits::host_bytes_per_weight::<B>(device),
        )?;
        let module = Self::new(&config, device);
        Ok(checkpoint.load_into(module, &LoadOptions::named("UNet2DConditionModel"))?)
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Checkpoint name of a parameter path of this module (inverse of the load remaps).
    pub fn checkpoint_key(&self, module_path: &str) -> String {
        checkpoint_key(module_path, self.config.use_linear_projection)
    }

    /// Predict the noise of `sample` `[batch, in_channels, h, w]` at `timestep`.
    ///
    /// With a `text_time` add-embedding, `cond.time_ids` holds one row of ids and the
    /// text embedding must be `input_dim − ids·addition_time_embed_dim` wide.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: f32,
        cond: &UNetConditioning<B>,
    ) -> Tensor<B, 4> {
        let config = &self.config;
        let [batch, _, _, _] = sample.dims();
        let device = sample.device();
        let sample = if config.center_input_sample {
            sample.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            sample
        };

        let c0 = config.block_out_channels[0];
        let t_proj = sinusoidal_embedding(
            &vec![timestep; batch],
            c0,
            config.flip_sin_to_cos,
            config.freq_shift,
        );
        let t_proj = Tensor::<B, 2>::from_data(TensorData::new(t_proj, [batch, c0]), &device);
        let mut emb = self.time_embedding.forward(t_proj);
        if let (Some(add), Some(text_time)) = (&self.add_embedding, &config.text_time) {
            let time_row = sinusoidal_embedding(
                &cond.time_ids,
                text_time.time_embed_dim,
                config.flip_sin_to_cos,
                config.freq_shift,
            );
            let time_width = time_row.len();
            let time_embeds = Tensor::<B, 2>::from_data(
                TensorData::new(time_row.repeat(batch), [batch, time_width]),
                &device,
            );
            let text_width = text_time.input_dim - time_width;
            let text_embeds = cond
                .text_embeds
                .clone()
                .unwrap_or_else(|| Tensor::zeros([batch, text_width], &device));
            emb = emb + add.forward(Tensor::cat(vec![text_embeds, time_embeds], 1));
        }
        let temb_silu = activation::silu(emb);
        let inputs = BlockInputs {
            temb_silu: &temb_silu,
            context: &cond.context,
        };

        let mut x = illume_backends::conv2d(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(x, &inputs, &mut skips);
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(x, &inputs);
        }
        for block in &self.up_blocks {
            x = block.forward(x, &inputs, &mut skips);
        }
        illume_backends::conv2d(&self.conv_out, group_norm(&self.conv_norm_out, x, true))
    }
}

/// Checkpoint key → module path (the documented remaps).
fn module_key(key: &str, linear_projection: bool) -> String {
    let key = key
        .replace(".ff.net.0.", ".ff.geglu.")
        .replace(".ff.net.2.", ".ff.linear_out.");
    if linear_projection {
        key
    } else {
        key.replace(".proj_in.", ".proj_in_conv.")
            .replace(".proj_out.", ".proj_out_conv.")
    }
}

/// Module path → checkpoint key.
fn checkpoint_key(path: &str, linear_projection: bool) -> String {
    let path = path
        .replace(".ff.geglu.", ".ff.net.0.")
        .replace(".ff.linear_out.", ".ff.net.2.");
    if linear_projection {
        path
    } else {
        path.replace(".proj_in_conv.", ".proj_in.")
            .replace(".proj_out_conv.", ".proj_out.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use illume_backends::NdArray;

    /// The size check runs before `new`: building 3·100000 resnets with their transformer
    /// stacks would take minutes and gigabytes even with lazy parameters.
    #[test]
    fn an_inflated_config_is_refused_before_building() {
        let mut config: serde_json::Value =
            serde_json::from_str(include_str!("../../configs/sdxl/unet_config.json")).unwrap();
        config["layers_per_block"] = 100_000.into();
        let dir = crate::config::one_value_folder("unet-size", &config.to_string());
        let err = UNet2DConditionModel::<NdArray>::load(&dir, &Default::default())
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(err.contains("config.json"), "{err}");
        assert!(
            err.contains("layers_per_block=[100000, 100000, 100000]"),
            "{err}"
        );
        assert!(err.contains("holds only 1 values"), "{err}");
    }

    #[test]
    fn remaps_are_inverse() {
        for key in [
            "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
            "mid_block.attentions.0.transformer_blocks.3.ff.net.2.bias",
            "up_blocks.0.attentions.1.proj_in.weight",
            "conv_in.weight",
        ] {
            for linear in [true, false] {
                assert_eq!(checkpoint_key(&module_key(key, linear), linear), key);
            }
        }
        assert_eq!(
            module_key("a.attentions.0.proj_out.bias", false),
            "a.attentions.0.proj_out_conv.bias"
        );
    }
}
