//! The CubeCL backends (`CubeBackend<R, ..>`: wgpu, cuda) route the hot-path operations to
//! the fused kernels of [`crate::kernels`], falling back to the reference composition for
//! shapes a kernel does not take.

use burn::tensor::{backend::Backend, ops::FloatTensor, DType, Int, Tensor, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::ir::{ElemType, FloatKind};

use crate::{kernels, ops::Modulation, reference, DeviceLimits, IllumeBackend};

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

impl<R, F, I, BT> IllumeBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        float(kernels::rms_norm::rms_norm(
            primitive(x),
            primitive(weight),
            eps,
        ))
    }

    fn silu_mul<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        float(kernels::silu_mul::silu_mul(primitive(gate), primitive(up)))
    }

    fn rotary(x: Tensor<Self, 4>, cos: Tensor<Self, 2>, sin: Tensor<Self, 2>) -> Tensor<Self, 4> {
        float(kernels::rotary::rotary(
            primitive(x),
            primitive(cos),
            primitive(sin),
        ))
    }

    fn group_norm(
        x: Tensor<Self, 4>,
        groups: usize,
        gamma: Option<Tensor<Self, 1>>,
        beta: Option<Tensor<Self, 1>>,
        eps: f64,
        silu: bool,
    ) -> Tensor<Self, 4> {
        float(kernels::group_norm::group_norm(
            primitive(x),
            groups,
            gamma.map(primitive),
            beta.map(primitive),
            eps,
            None,
            silu,
        ))
    }

    fn spatial_norm(
        x: Tensor<Self, 4>,
        groups: usize,
        gamma: Option<Tensor<Self, 1>>,
        beta: Option<Tensor<Self, 1>>,
        eps: f64,
        modulation: Modulation<Self>,
        silu: bool,
    ) -> Tensor<Self, 4> {
        let modulation = kernels::group_norm::Modulation {
            scale: primitive(modulation.scale),
            shift: primitive(modulation.shift),
        };
        float(kernels::group_norm::group_norm(
            primitive(x),
            groups,
            gamma.map(primitive),
            beta.map(primitive),
            eps,
            Some(modulation),
            silu,
        ))
    }

    fn nearest_code(z: Tensor<Self, 2>, codebook: Tensor<Self, 2>) -> Tensor<Self, 1, Int> {
        if z.dims()[1] > kernels::nearest_code::MAX_DIM {
            return reference::nearest_code(z, codebook, reference::NEAREST_CODE_TILE);
        }
        // Distances in f32 whatever the compute type: a half-precision arg-min would pick
        // other codes than the official f32 search.
        Tensor::from_primitive(kernels::nearest_code::nearest_code(
            primitive(z.cast(DType::F32)),
            primitive(codebook.cast(DType::F32)),
            I::dtype(),
        ))
    }

    fn attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        scale: f64,
        causal: bool,
    ) -> Tensor<Self, 4> {
        if !kernels::attention::supports(&q.dims(), &k.dims(), &v.dims()) {
            return reference::attention(q, k, v, scale, causal);
        }
        float(kernels::attention::attention(
            primitive(q),
            primitive(k),
            primitive(v),
            scale,
            causal,
        ))
    }

    fn limits(device: &Self::Device) -> DeviceLimits {
        let client = R::client(device);
        let properties = client.properties();
        DeviceLimits {
            max_storage_binding_size: Some(properties.memory.max_page_size),
            max_shared_memory_size: Some(properties.hardware.max_shared_memory_size),
            f16: properties.supports_type(ElemType::Float(FloatKind::F16)),
            bf16: properties.supports_type(ElemType::Float(FloatKind::BF16)),
            host_memory: false,
        }
    }
}
