//! `silu(gate) · up`: one element-wise pass over both inputs.

use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::{empty_like, vector_size};

#[cube(launch)]
fn silu_mul_kernel<F: Float, N: Size>(
    gate: &Tensor<Vector<F, N>>,
    up: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let g = Vector::<f32, N>::cast_from(gate[i]);
    let silu = g / (Vector::new(1.0f32) + (-g).exp());
    out[i] = Vector::<F, N>::cast_from(silu * Vector::<f32, N>::cast_from(up[i]));
}

/// `silu(gate) · up` for two tensors of the same shape.
pub fn silu_mul<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>) -> CubeTensor<R> {
    let gate = into_contiguous(gate);
    let up = into_contiguous(up);
    let out = empty_like(&gate);
    let n = gate.meta.shape().num_elements();
    if n == 0 {
        return out;
    }
    let vec = vector_size(&gate.client, n);
    let units = n / vec;
    let cube_dim = CubeDim::new(&gate.client, units);
    let cube_count = calculate_cube_count_elemwise(&gate.client, units, cube_dim);
    silu_mul_kernel::launch::<R>(
        &gate.client,
        cube_count,
        cube_dim,
        vec,
        gate.clone().into_tensor_arg(),
        up.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        gate.dtype.into(),
    );
    out
}
