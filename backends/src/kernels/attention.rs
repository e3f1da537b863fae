//! Flash-style attention: one pass over the keys with an online softmax, so the `sq × sk`
//! score matrix never exists. Causal masking is bottom-right aligned (query `i` sees keys
//! `j ≤ i + sk − sq`), which is also the KV-cache decoding mode (`sk > sq`).
//!
//! Each unit owns one query row: the query and its output accumulator stay in registers and
//! the unit streams the keys and values straight from memory (the units of a cube read the
//! same key at the same time, which GPUs serve as one broadcast load). The kernel has no
//! barrier: Mesa's lavapipe compiles barriers into coroutines whose frames hold every live
//! register, which made a shared-memory tiled version take minutes to compile.
//!
//! When there are few query rows (decoding), the keys are split in ranges processed by
//! different cubes, each producing a partial `(max, sum, accumulator)`; a second kernel
//! merges them (flash-decoding).
//!
//! K/V may have fewer heads than Q (grouped-query attention): query head `h` reads key head
//! `h / (heads / kv_heads)`. Q, K and V are read through their strides (no copies for
//! transposed views).

use burn::tensor::DType;
use burn_cubecl::{ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor, CubeRuntime};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::empty_like;

/// Query rows per cube (one per unit).
const ROWS: u32 = 32;
/// Largest head dimension kept in registers; wider heads use the reference composition.
pub const MAX_HEAD_DIM: usize = 256;
/// Keys per range when the keys are split, and the cube count below which they are.
const KEYS_PER_RANGE: usize = 256;
const SPLIT_BELOW_CUBES: usize = 128;

#[cube]
fn load_vector<F: Float, N: Size>(
    t: &Tensor<F>,
    base: usize,
    first: usize,
    stride: usize,
) -> Vector<f32, N> {
    let mut lanes = Vector::<f32, N>::empty();
    #[unroll]
    for l in 0..lanes.size() {
        lanes[l] = f32::cast_from(t[base + (first + l) * stride]);
    }
    lanes
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn flash_attention_kernel<F: Float, N: Size>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    partial_max: &mut Tensor<f32>,
    partial_sum: &mut Tensor<f32>,
    partial_acc: &mut Tensor<f32>,
    scale: f32,
    keys_per_range: usize,
    #[comptime] vectors: usize,
    #[comptime] causal: bool,
    #[comptime] split: bool,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let sq = q.shape(2);
    let sk = k.shape(2);
    let batch_head = CUBE_POS_Y as usize;
    let b = batch_head / heads;
    let h = batch_head % heads;
    let kv_head = h / (heads / k.shape(1));
    let row = (CUBE_POS_X * ROWS + UNIT_POS) as usize;
    if row >= sq {
        terminate!();
    }
    let range = CUBE_POS_Z as usize;

    let mut q_row = Array::<Vector<f32, N>>::new(vectors);
    let mut acc = Array::<Vector<f32, N>>::new(vectors);
    let width = q_row.vector_size();
    let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    let scale_v = Vector::<f32, N>::new(scale);
    for jv in 0..vectors {
        q_row[jv] = load_vector::<F, N>(q, q_base, jv * width, q.stride(3)) * scale_v;
        acc[jv] = Vector::new(0.0);
    }

    // The keys this unit attends to: its range, cut by the causal mask.
    let first = range * keys_per_range;
    let mut end = min(first + keys_per_range, sk);
    if causal {
        // Visible: key + sq ≤ row + sk.
        end = min(end, row + sk + 1 - min(row + sk + 1, sq));
    }

    let k_base = b * k.stride(0) + kv_head * k.stride(1);
    let v_base = b * v.stride(0) + kv_head * v.stride(1);
    let mut running_max = f32::new(-1.0e30);
    let mut denominator = 0.0f32;
    for key in first..end {
        let k_at = k_base + key * k.stride(2);
        let mut dot = Vector::<f32, N>::new(0.0);
        for jv in 0..vectors {
            dot += q_row[jv] * load_vector::<F, N>(k, k_at, jv * width, k.stride(3));
        }
        let mut score = 0.0f32;
        #[unroll]
        for l in 0..dot.size() {
            score += dot[l];
        }
        if score > running_max {
            // A new maximum: rescale what was accumulated against the old one.
            let correction = Vector::<f32, N>::new((running_max - score).exp());
            denominator *= (running_max - score).exp();
            for jv in 0..vectors {
                acc[jv] = acc[jv] * correction;
            }
            running_max = score;
        }
        let p = (score - running_max).exp();
        denominator += p;
        let weight = Vector::<f32, N>::new(p);
        let v_at = v_base + key * v.stride(2);
        for jv in 0..vectors {
            acc[jv] += weight * load_vector::<F, N>(v, v_at, jv * width, v.stride(3));
        }
    }

    if split {
        let at = (range * CUBE_COUNT_Y as usize + batch_head) * sq + row;
        partial_max[at] = running_max;
        partial_sum[at] = denominator;
        for jv in 0..vectors {
            let lanes = acc[jv];
            #[unroll]
            for l in 0..lanes.size() {
                partial_acc[at * vectors * width + jv * width + l] = lanes[l];
            }
        }
    } else {
        let mut inv = 0.0f32;
        if denominator > 0.0 {
            inv = 1.0 / denominator;
        }
        let out_base = (batch_head * sq + row) * vectors * width;
        for jv in 0..vectors {
            let lanes = acc[jv];
            #[unroll]
            for l in 0..lanes.size() {
                out[out_base + jv * width + l] = F::cast_from(lanes[l] * inv);
            }
        }
    }
}

/// Merge the partial results of the key ranges: `out = Σ accᵣ·e^(mᵣ−M) / Σ sumᵣ·e^(mᵣ−M)`.
#[cube(launch)]
fn merge_ranges_kernel<F: Float>(
    partial_max: &Tensor<f32>,
    partial_sum: &Tensor<f32>,
    partial_acc: &Tensor<f32>,
    out: &mut Tensor<F>,
    rows: usize,
    ranges: usize,
    dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    // One unit per output value; `rows` = batch·heads·sq.
    let i = ABSOLUTE_POS;
    if i >= rows * dim {
        terminate!();
    }
    let row = i / dim;
    let j = i % dim;
    let mut max_all = f32::new(-1.0e30);
    for r in 0..ranges {
        max_all = max(max_all, partial_max[r * rows + row]);
    }
    let mut denominator = 0.0f32;
    let mut value = 0.0f32;
    for r in 0..ranges {
        let at = r * rows + row;
        let weight = (partial_max[at] - max_all).exp();
        denominator += partial_sum[at] * weight;
        value += partial_acc[at * dim + j] * weight;
    }
    let mut result = 0.0f32;
    if denominator > 0.0 {
        result = value / denominator;
    }
    out[i] = F::cast_from(result);
}

/// Whether the kernel handles these shapes (`q` `[b, h, sq, d]`, `k`/`v` `[b, hk, sk, d]`).
pub fn supports(q: &[usize], k: &[usize], v: &[usize]) -> bool {
    let d = q[3];
    (1..=MAX_HEAD_DIM).contains(&d)
        && k[3] == d
        && v[3] == d
        && k[1] > 0
        && q[1].is_multiple_of(k[1])
        && k[1] == v[1]
        && k[0] == q[0]
        && v[0] == q[0]
        && k[2] == v[2]
        && q[1] * q[0] <= 65535
}

/// `softmax(q·kᵀ·scale [+ causal mask]) · v`; see the module documentation.
pub fn attention<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    scale: f64,
    causal: bool,
) -> CubeTensor<R> {
    let [b, h, sq, d] = q.meta.shape().dims::<4>();
    let sk = k.meta.shape()[2];
    let out = empty_like(&q);
    if b * h * sq * d == 0 {
        return out;
    }
    let client = q.client.clone();
    let vec = [4usize, 2, 1].into_iter().find(|v| d % v == 0).unwrap_or(1);
    let row_blocks = sq.div_ceil(ROWS as usize);
    let ranges = if row_blocks * b * h < SPLIT_BELOW_CUBES {
        sk.div_ceil(KEYS_PER_RANGE).clamp(1, 65535)
    } else {
        1
    };
    let keys_per_range = if ranges == 1 {
        sk.max(1)
    } else {
        KEYS_PER_RANGE
    };
    let split = ranges > 1;
    let rows = b * h * sq;
    let f32_buffer = |len: usize| {
        empty_device_contiguous_dtype(client.clone(), q.device.clone(), [len].into(), DType::F32)
    };
    // Without a split the partial buffers are never written: bind one-element placeholders.
    let (pmax, psum, pacc) = if split {
        (
            f32_buffer(ranges * rows),
            f32_buffer(ranges * rows),
            f32_buffer(ranges * rows * d),
        )
    } else {
        (f32_buffer(1), f32_buffer(1), f32_buffer(1))
    };
    flash_attention_kernel::launch::<R>(
        &client,
        CubeCount::Static(row_blocks as u32, (b * h) as u32, ranges as u32),
        CubeDim::new_1d(ROWS),
        vec,
        q.clone().into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        pmax.clone().into_tensor_arg(),
        psum.clone().into_tensor_arg(),
        pacc.clone().into_tensor_arg(),
        scale as f32,
        keys_per_range,
        d / vec,
        causal,
        split,
        q.dtype.into(),
    );
    if split {
        let units = rows * d;
        let cube_dim = CubeDim::new(&client, units);
        merge_ranges_kernel::launch::<R>(
            &client,
            calculate_cube_count_elemwise(&client, units, cube_dim),
            cube_dim,
            pmax.into_tensor_arg(),
            psum.into_tensor_arg(),
            pacc.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows,
            ranges,
            d,
            q.dtype.into(),
        );
    }
    out
}
