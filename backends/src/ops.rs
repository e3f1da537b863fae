//! The operations models call through the backend, so that a backend can swap the generic
//! composition for a fused kernel without the model code changing.

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{backend::Backend, Int, Tensor};

use crate::{reference, DeviceLimits};

/// The per-element modulation of a MoVQ SpatialNorm: `normalised · scale + shift`, both
/// `[n, c, h, w]` (the 1×1 convolutions `conv_y`/`conv_b` of the code map).
#[derive(Debug, Clone)]
pub struct Modulation<B: Backend> {
    pub scale: Tensor<B, 4>,
    pub shift: Tensor<B, 4>,
}

/// A Burn backend plus the illume hot-path operations. Every method defaults to the
/// reference composition in [`crate::reference`]; CubeCL backends override some with fused
/// kernels. Model code is generic over `B: IllumeBackend`.
pub trait IllumeBackend: Backend {
    fn rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        reference::rms_norm(x, weight, eps)
    }

    fn silu_mul<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        reference::silu_mul(gate, up)
    }

    fn rotary(x: Tensor<Self, 4>, cos: Tensor<Self, 2>, sin: Tensor<Self, 2>) -> Tensor<Self, 4> {
        reference::rotary(x, cos, sin)
    }

    fn group_norm(
        x: Tensor<Self, 4>,
        groups: usize,
        gamma: Option<Tensor<Self, 1>>,
        beta: Option<Tensor<Self, 1>>,
        eps: f64,
        silu: bool,
    ) -> Tensor<Self, 4> {
        reference::group_norm(x, groups, gamma, beta, eps, silu)
    }

    /// GroupNorm (with its affine), then `· scale + shift` per element, optionally SiLU:
    /// the MoVQ decoder's SpatialNorm (and the SiLU that follows it in resblocks) in one pass.
    fn spatial_norm(
        x: Tensor<Self, 4>,
        groups: usize,
        gamma: Option<Tensor<Self, 1>>,
        beta: Option<Tensor<Self, 1>>,
        eps: f64,
        modulation: Modulation<Self>,
        silu: bool,
    ) -> Tensor<Self, 4> {
        reference::spatial_norm(x, groups, gamma, beta, eps, modulation, silu)
    }

    fn nearest_code(z: Tensor<Self, 2>, codebook: Tensor<Self, 2>) -> Tensor<Self, 1, Int> {
        reference::nearest_code(z, codebook, reference::NEAREST_CODE_TILE)
    }

    /// See [`reference::attention`]: K/V may have fewer heads than Q (grouped-query
    /// attention) and more positions (KV cache, bottom-right causal mask).
    fn attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        scale: f64,
        causal: bool,
    ) -> Tensor<Self, 4> {
        reference::attention(q, k, v, scale, causal)
    }

    /// A 2-D convolution, `weight` `[out, in/groups, kh, kw]`. Defaults to Burn's own
    /// (implicit GEMM on CubeCL, im2col + gemm on flex); ndarray computes stride-1
    /// convolutions as matmuls ([`crate::unfolded_conv`]).
    fn convolve2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 1>>,
        options: PaddedConvOptions<2>,
    ) -> Tensor<Self, 4> {
        burn::tensor::module::conv2d(x, weight, bias, options)
    }

    /// What the device allows (binding and shared-memory sizes, half-precision support), so
    /// that models can size their buffers (e.g. vocabulary shards of an LM head).
    fn limits(_device: &Self::Device) -> DeviceLimits {
        DeviceLimits::unbounded()
    }
}

#[cfg(feature = "ndarray")]
impl IllumeBackend for crate::NdArray {
    fn convolve2d(
        x: Tensor<Self, 4>,
        weight: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 1>>,
        options: PaddedConvOptions<2>,
    ) -> Tensor<Self, 4> {
        if crate::unfolded_conv::supports(&options) {
            crate::unfolded_conv::conv2d(x, weight, bias, &options)
        } else {
            burn::tensor::module::conv2d(x, weight, bias, options)
        }
    }
}

/// `conv.forward(x)` through [`IllumeBackend::convolve2d`], so that a model's `nn::Conv2d`
/// layers get each backend's fastest convolution.
pub fn conv2d<B: IllumeBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let (start, end) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => ([top, left], [bottom, right]),
        PaddingConfig2d::Valid => ([0, 0], [0, 0]),
        // Burn computes "same" padding from the input size internally; no model here uses it.
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options =
        PaddedConvOptions::asymmetric(conv.stride, start, end, conv.dilation, conv.groups);
    B::convolve2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

#[cfg(feature = "flex")]
impl IllumeBackend for crate::Flex {}
