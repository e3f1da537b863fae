//! Nearest codebook row (SimVQ look-up): squared distances and the running arg-min are fused,
//! so the `n × k` distance matrix never exists.
//!
//! Each unit owns one row of `z` (in registers) and streams the codes of its range straight
//! from memory (the units of a cube read the same code at the same time: one broadcast
//! load on GPUs; no barrier, which Mesa's lavapipe compiles slowly). The codebook is split
//! in ranges scanned by different cubes (more parallel work when `n` is small); a second
//! kernel keeps the best of the ranges, first index on ties.

use burn::tensor::DType;
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
    CubeRuntime,
};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::vector_size;

/// Rows of `z` per cube (one per unit).
const ROWS: u32 = 64;
/// Cubes worth launching before splitting the codebook further.
const TARGET_CUBES: usize = 512;
/// Largest code dimension kept in registers; wider codebooks use the reference.
pub const MAX_DIM: usize = 256;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn nearest_code_ranges_kernel<F: Float, N: Size>(
    z: &Tensor<Vector<F, N>>,
    codebook: &Tensor<Vector<F, N>>,
    best_distance: &mut Tensor<f32>,
    best_index: &mut Tensor<u32>,
    rows: usize,
    k: usize,
    codes_per_range: usize,
    #[comptime] vectors: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = (CUBE_POS_X * ROWS + UNIT_POS) as usize;
    if row >= rows {
        terminate!();
    }
    let range = CUBE_POS_Y as usize;

    let mut z_row = Array::<Vector<f32, N>>::new(vectors);
    for jv in 0..vectors {
        z_row[jv] = Vector::<f32, N>::cast_from(z[row * vectors + jv]);
    }
    let start = range * codes_per_range;
    let end = min(start + codes_per_range, k);
    let mut best = f32::max_value();
    let mut best_at = 0u32;
    for code in start..end {
        let mut sum = Vector::<f32, N>::new(0.0);
        for jv in 0..vectors {
            let diff = z_row[jv] - Vector::<f32, N>::cast_from(codebook[code * vectors + jv]);
            sum += diff * diff;
        }
        let mut distance = 0.0f32;
        #[unroll]
        for l in 0..sum.size() {
            distance += sum[l];
        }
        // Strictly smaller: the first index wins ties, codes are scanned in order.
        if distance < best {
            best = distance;
            best_at = u32::cast_from(code);
        }
    }
    best_distance[range * rows + row] = best;
    best_index[range * rows + row] = best_at;
}

#[cube(launch)]
fn nearest_code_merge_kernel<I: Int>(
    best_distance: &Tensor<f32>,
    best_index: &Tensor<u32>,
    out: &mut Tensor<I>,
    rows: usize,
    ranges: usize,
    #[define(I)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= rows {
        terminate!();
    }
    let mut best = best_distance[row];
    let mut best_at = best_index[row];
    for r in 1..ranges {
        let distance = best_distance[r * rows + row];
        if distance < best {
            best = distance;
            best_at = best_index[r * rows + row];
        }
    }
    out[row] = I::cast_from(best_at);
}

/// Index of the nearest row of `codebook` `[k, d]` for every row of `z` `[n, d]` (squared
/// Euclidean distance, first index on ties), as an `[n]` tensor of `int_dtype`.
/// `d` must be at most [`MAX_DIM`].
pub fn nearest_code<R: CubeRuntime>(
    z: CubeTensor<R>,
    codebook: CubeTensor<R>,
    int_dtype: DType,
) -> CubeTensor<R> {
    let z = into_contiguous(z);
    let codebook = into_contiguous(codebook);
    let [n, d] = z.meta.shape().dims::<2>();
    let k = codebook.meta.shape()[0];
    let client = z.client.clone();
    let out =
        empty_device_contiguous_dtype(client.clone(), z.device.clone(), [n].into(), int_dtype);
    if n == 0 {
        return out;
    }
    assert!(k > 0, "nearest_code: the codebook is empty");
    assert!(
        d <= MAX_DIM,
        "nearest_code kernel: code dimension {d} exceeds {MAX_DIM}"
    );

    let row_blocks = n.div_ceil(ROWS as usize);
    let ranges = TARGET_CUBES.div_ceil(row_blocks).clamp(1, k.min(65535));
    let codes_per_range = k.div_ceil(ranges);
    let ranges = k.div_ceil(codes_per_range);

    let buffer = |dtype: DType| {
        empty_device_contiguous_dtype(client.clone(), z.device.clone(), [ranges * n].into(), dtype)
    };
    let best_distance = buffer(DType::F32);
    let best_index = buffer(DType::U32);
    let vec = vector_size(&client, d);
    nearest_code_ranges_kernel::launch::<R>(
        &client,
        CubeCount::Static(row_blocks as u32, ranges as u32, 1),
        CubeDim::new_1d(ROWS),
        vec,
        z.clone().into_tensor_arg(),
        codebook.into_tensor_arg(),
        best_distance.clone().into_tensor_arg(),
        best_index.clone().into_tensor_arg(),
        n,
        k,
        codes_per_range,
        d / vec,
        z.dtype.into(),
    );

    let cube_dim = CubeDim::new(&client, n);
    nearest_code_merge_kernel::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, n, cube_dim),
        cube_dim,
        best_distance.into_tensor_arg(),
        best_index.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        n,
        ranges,
        int_dtype.into(),
    );
    out
}
