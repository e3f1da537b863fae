//! The operations models call through the backend, so that a backend can swap the generic
//! composition for a fused kernel without the model code changing.

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

    /// What the device allows (binding and shared-memory sizes, half-precision support), so
    /// that models can size their buffers (e.g. vocabulary shards of an LM head).
    fn limits(_device: &Self::Device) -> DeviceLimits {
        DeviceLimits::unbounded()
    }
}

#[cfg(feature = "ndarray")]
impl IllumeBackend for crate::NdArray {}

#[cfg(feature = "flex")]
impl IllumeBackend for crate::Flex {}
