//! GroupNorm (+ per-channel affine, + per-element modulation, + SiLU) in three passes:
//! chunk statistics, per-group combination, and one element-wise apply.
//!
//! A group of `[n, c, h, w]` is a contiguous run of `c/groups · h · w` values. Splitting it
//! in chunks keeps every cube busy even when there are few groups and they are large (the
//! MoVQ decoder at full resolution has 32 groups of millions of values). Each chunk stores
//! its mean and its sum of squared deviations; they are combined exactly
//! (`M2 = Σ M2ₖ + nₖ(meanₖ − mean)²`), which keeps the variance accurate where
//! `E[x²] − E[x]²` would cancel.

use burn::tensor::DType;
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
    CubeRuntime,
};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::{cube_sum, empty_like, rows_cube_count, vector_size};

/// Units per statistics cube, and vectors each unit reads per chunk.
const STATS_CUBE: usize = 256;
const VECTORS_PER_UNIT: usize = 16;

#[cube]
fn vector_total<N: Size>(v: Vector<f32, N>) -> f32 {
    let mut total = 0.0f32;
    #[unroll]
    for l in 0..v.size() {
        total += v[l];
    }
    total
}

#[cube(launch)]
fn chunk_stats_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    means: &mut Tensor<f32>,
    m2s: &mut Tensor<f32>,
    group_len: usize,
    chunk_len: usize,
    chunks: usize,
    total_chunks: usize,
    #[comptime] cube_size: usize,
    #[define(F)] _dtype: StorageType,
) {
    let cube = CUBE_POS;
    if cube >= total_chunks {
        terminate!();
    }
    let base = (cube / chunks) * group_len;
    let start = (cube % chunks) * chunk_len;
    let end = min(start + chunk_len, group_len);
    let unit = UNIT_POS as usize;

    let mut sum = 0.0f32;
    let mut i = start + unit;
    while i < end {
        sum += vector_total(Vector::<f32, N>::cast_from(x[base + i]));
        i += cube_size;
    }
    let count = f32::cast_from((end - start) * x.vector_size());
    let mean = cube_sum(sum, cube_size) / count;

    let centre = Vector::<f32, N>::new(mean);
    let mut m2 = 0.0f32;
    let mut i = start + unit;
    while i < end {
        let dev = Vector::<f32, N>::cast_from(x[base + i]) - centre;
        m2 += vector_total(dev * dev);
        i += cube_size;
    }
    let m2 = cube_sum(m2, cube_size);
    if unit == 0 {
        means[cube] = mean;
        m2s[cube] = m2;
    }
}

#[cube(launch)]
fn combine_stats_kernel(
    means: &Tensor<f32>,
    m2s: &Tensor<f32>,
    group_mean: &mut Tensor<f32>,
    group_rstd: &mut Tensor<f32>,
    group_len: usize,
    chunk_len: usize,
    chunks: usize,
    groups: usize,
    eps: f32,
    #[comptime] vector: usize,
    #[comptime] cube_size: usize,
) {
    let group = CUBE_POS;
    if group >= groups {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let first = group * chunks;
    let total = f32::cast_from(group_len * vector);

    let mut weighted = 0.0f32;
    let mut k = unit;
    while k < chunks {
        let n = f32::cast_from((min((k + 1) * chunk_len, group_len) - k * chunk_len) * vector);
        weighted += n * means[first + k];
        k += cube_size;
    }
    let mean = cube_sum(weighted, cube_size) / total;

    let mut m2 = 0.0f32;
    let mut k = unit;
    while k < chunks {
        let n = f32::cast_from((min((k + 1) * chunk_len, group_len) - k * chunk_len) * vector);
        let dev = means[first + k] - mean;
        m2 += m2s[first + k] + n * dev * dev;
        k += cube_size;
    }
    let var = cube_sum(m2, cube_size) / total;
    if unit == 0 {
        group_mean[group] = mean;
        group_rstd[group] = (var + eps).inverse_sqrt();
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn apply_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    group_mean: &Tensor<f32>,
    group_rstd: &Tensor<f32>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    scale: &Tensor<Vector<F, N>>,
    shift: &Tensor<Vector<F, N>>,
    out: &mut Tensor<Vector<F, N>>,
    channels: usize,
    plane_len: usize,
    channels_per_group: usize,
    #[comptime] has_gamma: bool,
    #[comptime] has_beta: bool,
    #[comptime] modulated: bool,
    #[comptime] silu: bool,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let plane = i / plane_len;
    let channel = plane % channels;
    let group = plane / channels_per_group;
    let mut y = (Vector::<f32, N>::cast_from(x[i]) - Vector::new(group_mean[group]))
        * Vector::new(group_rstd[group]);
    if has_gamma {
        y *= Vector::new(f32::cast_from(gamma[channel]));
    }
    if has_beta {
        y += Vector::new(f32::cast_from(beta[channel]));
    }
    if modulated {
        y = y * Vector::<f32, N>::cast_from(scale[i]) + Vector::<f32, N>::cast_from(shift[i]);
    }
    if silu {
        y = y / (Vector::new(1.0f32) + (-y).exp());
    }
    out[i] = Vector::<F, N>::cast_from(y);
}

/// `scale`/`shift` applied after the normalisation and the affine, before the SiLU.
pub struct Modulation<R: CubeRuntime> {
    pub scale: CubeTensor<R>,
    pub shift: CubeTensor<R>,
}

/// GroupNorm of `x` `[n, c, h, w]` (biased variance), optional affine `gamma`/`beta` `[c]`,
/// optional modulation `· scale + shift` (`[n, c, h, w]`), optional SiLU.
pub fn group_norm<R: CubeRuntime>(
    x: CubeTensor<R>,
    groups: usize,
    gamma: Option<CubeTensor<R>>,
    beta: Option<CubeTensor<R>>,
    eps: f64,
    modulation: Option<Modulation<R>>,
    silu: bool,
) -> CubeTensor<R> {
    let x = into_contiguous(x);
    let dims = x.meta.shape().clone();
    let (n, c) = (dims[0], dims[1]);
    let plane = dims[2] * dims[3];
    let out = empty_like(&x);
    if n * c * plane == 0 {
        return out;
    }
    let client = x.client.clone();
    let vec = vector_size(&client, plane);
    let channels_per_group = c / groups;
    let group_len = channels_per_group * plane / vec;
    let total_groups = n * groups;

    // Pass 1: statistics of chunks.
    let chunk_len = STATS_CUBE * VECTORS_PER_UNIT;
    let chunks = group_len.div_ceil(chunk_len);
    let total_chunks = total_groups * chunks;
    let f32_buffer = |len: usize| {
        empty_device_contiguous_dtype(client.clone(), x.device.clone(), [len].into(), DType::F32)
    };
    let means = f32_buffer(total_chunks);
    let m2s = f32_buffer(total_chunks);
    chunk_stats_kernel::launch::<R>(
        &client,
        rows_cube_count(&client, total_chunks),
        CubeDim::new_1d(STATS_CUBE as u32),
        vec,
        x.clone().into_tensor_arg(),
        means.clone().into_tensor_arg(),
        m2s.clone().into_tensor_arg(),
        group_len,
        chunk_len,
        chunks,
        total_chunks,
        STATS_CUBE,
        x.dtype.into(),
    );

    // Pass 2: one mean and reciprocal standard deviation per group.
    let combine_cube = chunks.next_power_of_two().clamp(32, 256);
    let group_mean = f32_buffer(total_groups);
    let group_rstd = f32_buffer(total_groups);
    combine_stats_kernel::launch::<R>(
        &client,
        rows_cube_count(&client, total_groups),
        CubeDim::new_1d(combine_cube as u32),
        means.into_tensor_arg(),
        m2s.into_tensor_arg(),
        group_mean.clone().into_tensor_arg(),
        group_rstd.clone().into_tensor_arg(),
        group_len,
        chunk_len,
        chunks,
        total_groups,
        eps as f32,
        vec,
        combine_cube,
    );

    // Pass 3: normalise, affine, modulate, activate. Absent operands are bound to `x` and
    // never read (the flags are compile-time).
    let (has_gamma, has_beta, modulated) = (gamma.is_some(), beta.is_some(), modulation.is_some());
    let gamma = gamma.map(into_contiguous).unwrap_or_else(|| x.clone());
    let beta = beta.map(into_contiguous).unwrap_or_else(|| x.clone());
    let (scale, shift) = match modulation {
        Some(m) => (into_contiguous(m.scale), into_contiguous(m.shift)),
        None => (x.clone(), x.clone()),
    };
    let units = n * c * plane / vec;
    let cube_dim = CubeDim::new(&client, units);
    let cube_count = calculate_cube_count_elemwise(&client, units, cube_dim);
    apply_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        vec,
        x.clone().into_tensor_arg(),
        group_mean.into_tensor_arg(),
        group_rstd.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        scale.into_tensor_arg(),
        shift.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        c,
        plane / vec,
        channels_per_group,
        has_gamma,
        has_beta,
        modulated,
        silu,
        x.dtype.into(),
    );
    out
}
