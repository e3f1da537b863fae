//! `MoVQDecoder`: `(z, zq)` on the pixel-token grid → image `[1, 3, 16·h2, 16·w2]`, every
//! normalisation a SpatialNorm conditioned on `zq`, the merged code map.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;
use illume_weights::Checkpoint;

use super::blocks::{AttnBlock, DcUpBlock, MoVqNorm, ResnetBlock, SpatialNorm};
use crate::config::MoVqConfig;
use crate::error::Result;
use crate::layers::{conv2d, conv_config};
use crate::names;

/// One resolution level (`up.i`; run from the coarsest level `up.{n-1}` down to `up.0`):
/// `num_res_blocks + 1` residual blocks, attention after each at attention levels, then a DC
/// up block except at level 0.
#[derive(Module, Debug)]
pub struct DecoderLevel<B: Backend> {
    pub block: Vec<ResnetBlock<B, SpatialNorm<B>>>,
    pub attn: Vec<AttnBlock<B, SpatialNorm<B>>>,
    pub upsample: Option<DcUpBlock<B>>,
}

#[derive(Module, Debug)]
pub struct DecoderMid<B: Backend> {
    pub block_1: ResnetBlock<B, SpatialNorm<B>>,
    pub attn_1: AttnBlock<B, SpatialNorm<B>>,
    pub block_2: ResnetBlock<B, SpatialNorm<B>>,
}

/// The pixel decoder.
#[derive(Module, Debug)]
pub struct MoVqDecoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid: DecoderMid<B>,
    /// Indexed by level as in the checkpoint (`up.0` is the finest).
    pub up: Vec<DecoderLevel<B>>,
    pub norm_out: SpatialNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> MoVqDecoder<B> {
    pub fn new(config: &MoVqConfig, device: &B::Device) -> Self {
        let zq = config.embed_dim;
        let norm = |c: usize| SpatialNorm::new(c, zq, device);
        let levels = config.ch_mult.len();
        let mut block_in = config.bottom_channels();
        let mid = DecoderMid {
            block_1: ResnetBlock::new(block_in, block_in, norm, device),
            attn_1: AttnBlock::new(block_in, norm(block_in), device),
            block_2: ResnetBlock::new(block_in, block_in, norm, device),
        };
        let mut up: Vec<DecoderLevel<B>> = (0..levels)
            .rev()
            .map(|level| {
                let block_out = config.level_channels(level);
                let with_attn = config.attn_resolutions.contains(&level);
                let mut block = Vec::new();
                let mut attn = Vec::new();
                for _ in 0..=config.num_res_blocks {
                    block.push(ResnetBlock::new(block_in, block_out, norm, device));
                    block_in = block_out;
                    if with_attn {
                        attn.push(AttnBlock::new(block_in, norm(block_in), device));
                    }
                }
                DecoderLevel {
                    block,
                    attn,
                    upsample: (level != 0).then(|| DcUpBlock::new(block_in, device)),
                }
            })
            .collect();
        up.reverse();
        Self {
            conv_in: conv_config(config.z_channels, config.bottom_channels(), 3).init(device),
            mid,
            up,
            norm_out: norm(block_in),
            conv_out: conv_config(block_in, config.out_channels, 3).init(device),
        }
    }

    /// Build the tree of `config` and load it from `checkpoint` (names relative to the
    /// decoder, e.g. `subtree("pixel_decoder")` of a DualViTok).
    pub fn load(checkpoint: &Checkpoint, config: &MoVqConfig, device: &B::Device) -> Result<Self> {
        names::load(checkpoint, Self::new(config, device), "MoVQ pixel decoder")
    }
}

impl<B: IllumeBackend> MoVqDecoder<B> {
    /// `conv_in(z)` plus the shortcut `repeat_interleave(z, C_bottom / z_channels, dim=1)`.
    pub fn stem(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = z.dims();
        let c_out = self.conv_in.weight.dims()[0];
        let repeats = c_out / c;
        let shortcut = z
            .clone()
            .reshape([b, c, 1, h, w])
            .expand([b, c, repeats, h, w])
            .reshape([b, c_out, h, w]);
        conv2d(&self.conv_in, z) + shortcut
    }

    /// `mid.block_1 → mid.attn_1 → mid.block_2`.
    pub fn middle(&self, h: Tensor<B, 4>, zq: &Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.mid.block_1.forward(h, zq);
        let h = self.mid.attn_1.forward(h, zq);
        self.mid.block_2.forward(h, zq)
    }

    /// The up levels, coarsest first, then `norm_out · SiLU · conv_out`.
    pub fn upsample(&self, mut h: Tensor<B, 4>, zq: &Tensor<B, 4>) -> Tensor<B, 4> {
        for level in self.up.iter().rev() {
            for (i, block) in level.block.iter().enumerate() {
                h = block.forward(h, zq);
                if let Some(attn) = level.attn.get(i) {
                    h = attn.forward(h, zq);
                }
            }
            if let Some(up) = &level.upsample {
                h = up.forward(h);
            }
        }
        conv2d(&self.conv_out, self.norm_out.norm(h, zq, true))
    }

    /// `z = pixel_post_quant_conv(zq)` and `zq` (merged codes) → image in about `[-1, 1]`.
    pub fn forward(&self, z: Tensor<B, 4>, zq: &Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.middle(self.stem(z), zq);
        self.upsample(h, zq)
    }
}
