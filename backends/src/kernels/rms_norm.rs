//! RMSNorm: one cube per row, a shared-memory sum of squares, then the scaled write.

use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::{cube_sum, empty_like, row_cube_size, rows_cube_count, vector_size};

#[cube(launch)]
fn rms_norm_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    weight: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
    rows: usize,
    eps: f32,
    #[comptime] cube_size: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = CUBE_POS;
    if row >= rows {
        terminate!();
    }
    let width = weight.len();
    let base = row * width;
    let unit = UNIT_POS as usize;

    let mut sum = 0.0f32;
    let mut i = unit;
    while i < width {
        let v = Vector::<f32, N>::cast_from(x[base + i]);
        let sq = v * v;
        #[unroll]
        for l in 0..sq.size() {
            sum += sq[l];
        }
        i += cube_size;
    }
    let total = cube_sum(sum, cube_size);
    let d = f32::cast_from(width * x.vector_size());
    let inv = Vector::<f32, N>::new((total / d + eps).inverse_sqrt());

    let mut i = unit;
    while i < width {
        let v = Vector::<f32, N>::cast_from(x[base + i]) * inv;
        out[base + i] = Vector::<F, N>::cast_from(v) * weight[i];
        i += cube_size;
    }
}

/// `x / sqrt(mean(x², last dim) + eps) * weight` over the last dimension of `x`.
pub fn rms_norm<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    eps: f64,
) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let weight = into_contiguous(weight);
    let dims = x.meta.shape().clone();
    let d = dims[dims.len() - 1];
    let rows = dims.num_elements() / d.max(1);
    let out = empty_like(&x);
    if rows == 0 || d == 0 {
        return out;
    }
    let vec = vector_size(&x.client, d);
    let cube_size = row_cube_size(d / vec);
    rms_norm_kernel::launch::<R>(
        &x.client,
        rows_cube_count(&x.client, rows),
        CubeDim::new_1d(cube_size as u32),
        vec,
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        eps as f32,
        cube_size,
        x.dtype.into(),
    );
    out
}
