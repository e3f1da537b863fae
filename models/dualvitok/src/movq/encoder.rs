//! `MoVQEncoder`: image `[1, 3, H, W]` in `[-1, 1]` → `[1, z, H/16, W/16]` (release config).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;
use illume_weights::Checkpoint;

use super::blocks::{group_norm, AttnBlock, DcDownBlock, MoVqNorm, ResnetBlock};
use crate::config::MoVqConfig;
use crate::error::Result;
use crate::layers::{conv2d, conv_config};
use crate::names;

/// One resolution level: residual blocks (each followed by attention at attention levels),
/// then a DC down block except at the last level.
#[derive(Module, Debug)]
pub struct EncoderLevel<B: Backend> {
    pub block: Vec<ResnetBlock<B, GroupNorm<B>>>,
    pub attn: Vec<AttnBlock<B, GroupNorm<B>>>,
    pub downsample: Option<DcDownBlock<B>>,
}

#[derive(Module, Debug)]
pub struct EncoderMid<B: Backend> {
    pub block_1: ResnetBlock<B, GroupNorm<B>>,
    pub attn_1: AttnBlock<B, GroupNorm<B>>,
    pub block_2: ResnetBlock<B, GroupNorm<B>>,
}

/// The pixel encoder. Its output (before `pixel_quant_conv`) is also the pixel feature of the
/// ILLUME+ MLLM's vision tower.
#[derive(Module, Debug)]
pub struct MoVqEncoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down: Vec<EncoderLevel<B>>,
    pub mid: EncoderMid<B>,
    pub norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> MoVqEncoder<B> {
    pub fn new(config: &MoVqConfig, device: &B::Device) -> Self {
        let norm = |c: usize| group_norm::<B>(c, device);
        let levels = config.ch_mult.len();
        let mut block_in = config.ch;
        let down = (0..levels)
            .map(|level| {
                let block_out = config.level_channels(level);
                let with_attn = config.attn_resolutions.contains(&level);
                let mut block = Vec::new();
                let mut attn = Vec::new();
                for _ in 0..config.num_res_blocks {
                    block.push(ResnetBlock::new(block_in, block_out, norm, device));
                    block_in = block_out;
                    if with_attn {
                        attn.push(AttnBlock::new(block_in, norm(block_in), device));
                    }
                }
                EncoderLevel {
                    block,
                    attn,
                    downsample: (level + 1 < levels).then(|| DcDownBlock::new(block_in, device)),
                }
            })
            .collect();
        Self {
            conv_in: conv_config(config.in_channels, config.ch, 3).init(device),
            down,
            mid: EncoderMid {
                block_1: ResnetBlock::new(block_in, block_in, norm, device),
                attn_1: AttnBlock::new(block_in, norm(block_in), device),
                block_2: ResnetBlock::new(block_in, block_in, norm, device),
            },
            norm_out: norm(block_in),
            conv_out: conv_config(block_in, config.z_channels, 3).init(device),
        }
    }

    /// Build the tree of `config` and load it from `checkpoint` (official names relative to
    /// the encoder: `conv_in.weight`, `down.0.block.0.…`): `subtree("pixel_encoder")` of a
    /// DualViTok, `subtree("model.vision_tower.pixel_encoder")` of an ILLUME+ MLLM.
    pub fn load(checkpoint: &Checkpoint, config: &MoVqConfig, device: &B::Device) -> Result<Self> {
        names::load(checkpoint, Self::new(config, device), "MoVQ pixel encoder")
    }
}

impl<B: IllumeBackend> MoVqEncoder<B> {
    /// Everything up to and including `mid.block_2`: `[1, C_bottom, H/16, W/16]`.
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = conv2d(&self.conv_in, x);
        for level in &self.down {
            for (i, block) in level.block.iter().enumerate() {
                h = block.forward(h, &());
                if let Some(attn) = level.attn.get(i) {
                    h = attn.forward(h, &());
                }
            }
            if let Some(down) = &level.downsample {
                h = down.forward(h);
            }
        }
        let h = self.mid.block_1.forward(h, &());
        let h = self.mid.attn_1.forward(h, &());
        self.mid.block_2.forward(h, &())
    }

    /// `norm_out · SiLU · conv_out` plus the shortcut: the mean over groups of consecutive
    /// channels of the normalised features (`C_bottom / z` channels per group).
    pub fn head(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.norm_out.norm(features, &(), true);
        let [b, c, height, width] = h.dims();
        let z = self.conv_out.weight.dims()[0];
        let shortcut = h
            .clone()
            .reshape([b, z, c / z, height, width])
            .mean_dim(2)
            .reshape([b, z, height, width]);
        conv2d(&self.conv_out, h) + shortcut
    }

    /// Image `[1, 3, H, W]` in `[-1, 1]` (H, W multiples of 16) → `[1, z, H/16, W/16]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.head(self.features(x))
    }
}
