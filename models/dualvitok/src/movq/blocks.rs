//! MoVQ building blocks: residual and attention blocks (generic over their normalisation),
//! SpatialNorm, and the DC down/up blocks.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::{activation, backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use crate::layers::{
    avg_pool_2x2, contiguous, conv2d, conv_config, modulate_nearest, pixel_shuffle,
    pixel_unshuffle, upsample_nearest,
};

/// Every MoVQ normalisation is `GroupNorm(32, eps=1e-6, affine=True)`.
pub const GROUPS: usize = 32;
pub const NORM_EPS: f64 = 1e-6;

pub(crate) fn group_norm<B: Backend>(channels: usize, device: &B::Device) -> GroupNorm<B> {
    GroupNormConfig::new(GROUPS, channels)
        .with_epsilon(NORM_EPS)
        .init(device)
}

fn apply_group_norm<B: IllumeBackend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    silu: bool,
) -> Tensor<B, 4> {
    B::group_norm(
        x,
        norm.num_groups,
        norm.gamma.as_ref().map(|g| g.val()),
        norm.beta.as_ref().map(|b| b.val()),
        norm.epsilon,
        silu,
    )
}

/// The normalisation of a MoVQ block, optionally followed by SiLU (the blocks' activation).
/// The encoder uses plain GroupNorm; the decoder [`SpatialNorm`], conditioned on the code map.
pub trait MoVqNorm<B: IllumeBackend>: Module<B> {
    /// What the normalisation is conditioned on: nothing, or the merged code map.
    type Condition;
    fn norm(&self, x: Tensor<B, 4>, condition: &Self::Condition, silu: bool) -> Tensor<B, 4>;
}

impl<B: IllumeBackend> MoVqNorm<B> for GroupNorm<B> {
    type Condition = ();
    fn norm(&self, x: Tensor<B, 4>, _: &(), silu: bool) -> Tensor<B, 4> {
        apply_group_norm(self, x, silu)
    }
}

/// `MoVQSpatialNorm`: `GroupNorm(x) · conv_y(zq) + conv_b(zq)` with `zq` (the merged code map)
/// nearest-resized to `x`. The 1×1 convolutions commute with nearest upsampling, so they run
/// on the code grid and the result is broadcast, never materialised at image size.
#[derive(Module, Debug)]
pub struct SpatialNorm<B: Backend> {
    pub norm_layer: GroupNorm<B>,
    pub conv_y: Conv2d<B>,
    pub conv_b: Conv2d<B>,
}

impl<B: Backend> SpatialNorm<B> {
    pub fn new(channels: usize, zq_channels: usize, device: &B::Device) -> Self {
        Self {
            norm_layer: group_norm(channels, device),
            conv_y: conv_config(zq_channels, channels, 1).init(device),
            conv_b: conv_config(zq_channels, channels, 1).init(device),
        }
    }
}

impl<B: IllumeBackend> MoVqNorm<B> for SpatialNorm<B> {
    type Condition = Tensor<B, 4>;
    fn norm(&self, x: Tensor<B, 4>, zq: &Tensor<B, 4>, silu: bool) -> Tensor<B, 4> {
        let normalized = apply_group_norm(&self.norm_layer, x, false);
        let scale = conv2d(&self.conv_y, zq.clone());
        let shift = conv2d(&self.conv_b, zq.clone());
        let y = modulate_nearest(normalized, scale, shift);
        if silu {
            activation::silu(y)
        } else {
            y
        }
    }
}

/// `MoVQResnetBlock`: norm·SiLU·conv3×3 twice, plus the input (through a 1×1 `nin_shortcut`
/// when the width changes).
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend, N: Module<B>> {
    pub norm1: N,
    pub conv1: Conv2d<B>,
    pub norm2: N,
    pub conv2: Conv2d<B>,
    pub nin_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend, N: Module<B>> ResnetBlock<B, N> {
    pub fn new(c_in: usize, c_out: usize, norm: impl Fn(usize) -> N, device: &B::Device) -> Self {
        Self {
            norm1: norm(c_in),
            conv1: conv_config(c_in, c_out, 3).init(device),
            norm2: norm(c_out),
            conv2: conv_config(c_out, c_out, 3).init(device),
            nin_shortcut: (c_in != c_out).then(|| conv_config(c_in, c_out, 1).init(device)),
        }
    }
}

impl<B: IllumeBackend, N: MoVqNorm<B>> ResnetBlock<B, N> {
    pub fn forward(&self, x: Tensor<B, 4>, condition: &N::Condition) -> Tensor<B, 4> {
        let h = conv2d(&self.conv1, self.norm1.norm(x.clone(), condition, true));
        let h = conv2d(&self.conv2, self.norm2.norm(h, condition, true));
        let shortcut = match &self.nin_shortcut {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        shortcut + h
    }
}

/// `MoVQAttnBlock`: single-head self-attention over all positions (scale 1/√C) with 1×1
/// q/k/v/out projections, residual.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend, N: Module<B>> {
    pub norm: N,
    pub q: Conv2d<B>,
    pub k: Conv2d<B>,
    pub v: Conv2d<B>,
    pub proj_out: Conv2d<B>,
}

impl<B: Backend, N: Module<B>> AttnBlock<B, N> {
    pub fn new(channels: usize, norm: N, device: &B::Device) -> Self {
        let proj = || conv_config(channels, channels, 1).init(device);
        Self {
            norm,
            q: proj(),
            k: proj(),
            v: proj(),
            proj_out: proj(),
        }
    }
}

impl<B: IllumeBackend, N: MoVqNorm<B>> AttnBlock<B, N> {
    pub fn forward(&self, x: Tensor<B, 4>, condition: &N::Condition) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = self.norm.norm(x.clone(), condition, false);
        // [b, c, h, w] → [b, 1, h·w, c]
        let tokens = |conv: &Conv2d<B>| {
            contiguous(
                conv2d(conv, normed.clone())
                    .reshape([b, 1, c, h * w])
                    .swap_dims(2, 3),
            )
        };
        let scale = 1.0 / (c as f64).sqrt();
        let attended = <B as IllumeBackend>::attention(
            tokens(&self.q),
            tokens(&self.k),
            tokens(&self.v),
            scale,
            false,
        )
        .swap_dims(2, 3)
        .reshape([b, c, h, w]);
        x + conv2d(&self.proj_out, attended)
    }
}

/// `DCDownBlock2d`: `pixel_unshuffle(conv3×3(x → C/4))` plus the shortcut
/// `pixel_unshuffle(x)` averaged over groups of 4 channels, i.e. 2×2 average pooling.
#[derive(Module, Debug)]
pub struct DcDownBlock<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> DcDownBlock<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv_config(channels, channels / 4, 3).init(device),
        }
    }
}

impl<B: IllumeBackend> DcDownBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        pixel_unshuffle(conv2d(&self.conv, x.clone())) + avg_pool_2x2(x)
    }
}

/// `DCUpBlock2d`: `pixel_shuffle(conv3×3(x → 4C))` plus the shortcut
/// `pixel_shuffle(repeat_interleave(x, 4))`, i.e. 2× nearest upsampling.
#[derive(Module, Debug)]
pub struct DcUpBlock<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> DcUpBlock<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv_config(channels, channels * 4, 3).init(device),
        }
    }
}

impl<B: IllumeBackend> DcUpBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        pixel_shuffle(conv2d(&self.conv, x.clone())) + upsample_nearest(x, 2)
    }
}
