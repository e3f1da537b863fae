//! `Fusion<B>` (the default wgpu and cuda backends) runs each hot-path operation as one
//! custom operation of the fusion stream, executed by the inner backend `B` (the CubeCL
//! kernels of [`crate::cube`]).
//!
//! The operation is registered lazily like any other: the fusion optimiser keeps fusing the
//! element-wise work before and after it, and the kernel sees materialised inputs.

use std::marker::PhantomData;

use burn::tensor::{
    backend::Backend,
    ops::{FloatTensor, IntTensor},
    DType, Element, Int, Shape, Tensor, TensorPrimitive,
};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend, FusionRuntime, FusionTensor,
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use crate::{ops::Modulation, DeviceLimits, IllumeBackend};

/// What a custom operation produces on the inner backend.
enum Produced<B: Backend> {
    Float(FloatTensor<B>),
    Int(IntTensor<B>),
}

/// One hot-path call in the fusion stream: the inputs are float tensors, `run` calls the
/// inner backend's operation on them.
struct HotPathOp<B, Run> {
    desc: CustomOpIr,
    run: Run,
    _backend: PhantomData<fn() -> B>,
}

impl<B, Run> std::fmt::Debug for HotPathOp<B, Run> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HotPathOp({})", self.desc.id)
    }
}

impl<B, Run> Operation<B::FusionRuntime> for HotPathOp<B, Run>
where
    B: FusionBackend,
    Run: Fn(Vec<FloatTensor<B>>) -> Produced<B> + Send + Sync + 'static,
{
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = self
            .desc
            .inputs
            .iter()
            .map(|input| handles.get_float_tensor::<B>(input))
            .collect();
        let output = &self.desc.outputs[0].id;
        match (self.run)(inputs) {
            Produced::Float(t) => handles.register_float_tensor::<B>(output, t),
            Produced::Int(t) => handles.register_int_tensor::<B>(output, t),
        }
    }
}

/// Register `run` as the custom operation `name` over `inputs`, producing one tensor of
/// `shape` and `dtype`.
fn register<B, Run>(
    name: &'static str,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    shape: Shape,
    dtype: DType,
    run: Run,
) -> FusionTensor<B::FusionRuntime>
where
    B: FusionBackend,
    Run: Fn(Vec<FloatTensor<B>>) -> Produced<B> + Send + Sync + 'static,
{
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let output = TensorIr::uninit(client.create_empty_handle(), shape, dtype);
    let inputs: Vec<TensorIr> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let desc = CustomOpIr::new(name, &inputs, &[output]);
    let op = HotPathOp {
        desc: desc.clone(),
        run,
        _backend: PhantomData,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .output()
}

fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The float output of an inner-backend call.
fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> Produced<B> {
    Produced::Float(primitive(t))
}

/// A fusion tensor's shape and dtype, for an output shaped like it.
fn like<R: FusionRuntime>(t: &FusionTensor<R>) -> (Shape, DType) {
    (t.shape.clone(), t.dtype)
}

impl<B: FusionBackend + IllumeBackend> IllumeBackend for Fusion<B> {
    fn rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        weight: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        let x = primitive(x);
        let (shape, dtype) = like(&x);
        let inputs = vec![x, primitive(weight)];
        tensor(register::<B, _>(
            "illume.rms_norm",
            inputs,
            shape,
            dtype,
            move |t| {
                let [x, w] = fixed(t);
                float(B::rms_norm::<D>(tensor(x), tensor(w), eps))
            },
        ))
    }

    fn silu_mul<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        let gate = primitive(gate);
        let (shape, dtype) = like(&gate);
        let inputs = vec![gate, primitive(up)];
        tensor(register::<B, _>(
            "illume.silu_mul",
            inputs,
            shape,
            dtype,
            |t| {
                let [gate, up] = fixed(t);
                float(B::silu_mul::<D>(tensor(gate), tensor(up)))
            },
        ))
    }

    fn rotary(x: Tensor<Self, 4>, cos: Tensor<Self, 2>, sin: Tensor<Self, 2>) -> Tensor<Self, 4> {
        let x = primitive(x);
        let (shape, dtype) = like(&x);
        let inputs = vec![x, primitive(cos), primitive(sin)];
        tensor(register::<B, _>(
            "illume.rotary",
            inputs,
            shape,
            dtype,
            |t| {
                let [x, cos, sin] = fixed(t);
                float(B::rotary(tensor(x), tensor(cos), tensor(sin)))
            },
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
        let x = primitive(x);
        let (shape, dtype) = like(&x);
        let (has_gamma, has_beta) = (gamma.is_some(), beta.is_some());
        let mut inputs = vec![x];
        inputs.extend(gamma.map(primitive));
        inputs.extend(beta.map(primitive));
        tensor(register::<B, _>(
            "illume.group_norm",
            inputs,
            shape,
            dtype,
            move |t| {
                let mut t = t.into_iter();
                let x = tensor(t.next().expect("input"));
                let gamma = has_gamma.then(|| tensor(t.next().expect("gamma")));
                let beta = has_beta.then(|| tensor(t.next().expect("beta")));
                float(B::group_norm(x, groups, gamma, beta, eps, silu))
            },
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
        let x = primitive(x);
        let (shape, dtype) = like(&x);
        let (has_gamma, has_beta) = (gamma.is_some(), beta.is_some());
        let mut inputs = vec![x, primitive(modulation.scale), primitive(modulation.shift)];
        inputs.extend(gamma.map(primitive));
        inputs.extend(beta.map(primitive));
        tensor(register::<B, _>(
            "illume.spatial_norm",
            inputs,
            shape,
            dtype,
            move |t| {
                let mut t = t.into_iter();
                let x = tensor(t.next().expect("input"));
                let modulation = Modulation {
                    scale: tensor(t.next().expect("scale")),
                    shift: tensor(t.next().expect("shift")),
                };
                let gamma = has_gamma.then(|| tensor(t.next().expect("gamma")));
                let beta = has_beta.then(|| tensor(t.next().expect("beta")));
                float(B::spatial_norm(
                    x, groups, gamma, beta, eps, modulation, silu,
                ))
            },
        ))
    }

    fn nearest_code(z: Tensor<Self, 2>, codebook: Tensor<Self, 2>) -> Tensor<Self, 1, Int> {
        let z = primitive(z);
        let shape = Shape::new([z.shape[0]]);
        let inputs = vec![z, primitive(codebook)];
        let dtype = <B::IntElem as Element>::dtype();
        Tensor::from_primitive(register::<B, _>(
            "illume.nearest_code",
            inputs,
            shape,
            dtype,
            |t| {
                let [z, codebook] = fixed(t);
                Produced::Int(B::nearest_code(tensor(z), tensor(codebook)).into_primitive())
            },
        ))
    }

    fn attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        scale: f64,
        causal: bool,
    ) -> Tensor<Self, 4> {
        let q = primitive(q);
        let (shape, dtype) = like(&q);
        let inputs = vec![q, primitive(k), primitive(v)];
        tensor(register::<B, _>(
            "illume.attention",
            inputs,
            shape,
            dtype,
            move |t| {
                let [q, k, v] = fixed(t);
                float(<B as IllumeBackend>::attention(
                    tensor(q),
                    tensor(k),
                    tensor(v),
                    scale,
                    causal,
                ))
            },
        ))
    }

    fn limits(device: &Self::Device) -> DeviceLimits {
        B::limits(device)
    }
}

/// The inputs of a custom operation with a fixed arity.
fn fixed<T, const N: usize>(inputs: Vec<T>) -> [T; N] {
    match inputs.try_into() {
        Ok(array) => array,
        Err(inputs) => unreachable!("registered with {N} inputs, executed with {}", inputs.len()),
    }
}
