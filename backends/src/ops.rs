//! The operations models call through the backend, so that a backend can swap the generic
//! composition for a fused kernel without the model code changing.

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::reference;

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

    fn nearest_code(z: Tensor<Self, 2>, codebook: Tensor<Self, 2>) -> Tensor<Self, 1, Int> {
        reference::nearest_code(z, codebook, reference::NEAREST_CODE_TILE)
    }

    fn attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        scale: f64,
        causal: bool,
    ) -> Tensor<Self, 4> {
        reference::attention(q, k, v, scale, causal)
    }
}

#[cfg(feature = "ndarray")]
impl IllumeBackend for crate::NdArray {}

#[cfg(feature = "cubecl")]
impl<R, F, I, BT> IllumeBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
}

#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend> IllumeBackend for burn_fusion::Fusion<B> {}
