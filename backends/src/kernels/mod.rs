//! Fused CubeCL kernels for the hot-path operations, used by the CubeCL backends (wgpu, cuda).
//!
//! One file per operation: the `#[cube]` kernel and the launcher that takes and returns
//! [`CubeTensor`]s. [`crate::ops`] routes the [`crate::IllumeBackend`] methods of
//! `CubeBackend` here; [`crate::fusion`] does the same for `Fusion<CubeBackend>` through
//! custom fusion operations. The generic compositions of [`crate::reference`] are the
//! definition every kernel is tested against.

pub mod attention;
pub mod group_norm;
pub mod nearest_code;
pub mod rms_norm;
pub mod rotary;
pub mod silu_mul;

use burn_cubecl::{ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

/// Sum of `value` over all units of the cube (a power of two, `cube_size` units), returned
/// to every unit. Safe to call several times in one kernel.
#[cube]
pub(crate) fn cube_sum(value: f32, #[comptime] cube_size: usize) -> f32 {
    let mut shared = SharedMemory::<f32>::new(cube_size);
    let unit = UNIT_POS as usize;
    shared[unit] = value;
    sync_cube();
    let mut stride = comptime!(cube_size / 2).runtime();
    while stride > 0 {
        if unit < stride {
            shared[unit] = shared[unit] + shared[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    // Nobody may overwrite the shared buffer of a later call before everyone has read.
    sync_cube();
    total
}

/// A contiguous, uninitialised tensor with the shape and dtype of `like`.
pub(crate) fn empty_like<R: CubeRuntime>(like: &CubeTensor<R>) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        like.meta.shape().clone(),
        like.dtype,
    )
}

/// Widest vector (1, 2 or 4 elements) that divides a row of `width` elements.
pub(crate) fn vector_size<R: CubeRuntime>(client: &ComputeClient<R>, width: usize) -> usize {
    let max = client.properties().hardware.max_vector_size;
    [4, 2, 1]
        .into_iter()
        .find(|&v| v <= max && width.is_multiple_of(v))
        .unwrap_or(1)
}

/// Units of a cube that reduces one row of `width` vectors: a power of two in 32..=256,
/// so that every unit has a few vectors to read.
pub(crate) fn row_cube_size(width: usize) -> usize {
    width.div_ceil(4).next_power_of_two().clamp(32, 256)
}

/// Enough cubes for `n` independent work items of one cube each, spread over x and y so
/// that no dimension exceeds the runtime's limit; kernels read `CUBE_POS` and skip
/// positions past `n`.
pub(crate) fn rows_cube_count<R: CubeRuntime>(client: &ComputeClient<R>, n: usize) -> CubeCount {
    let max_x = client
        .properties()
        .hardware
        .max_cube_count
        .0
        .clamp(1, 65535) as usize;
    let x = n.clamp(1, max_x);
    let y = n.div_ceil(x).max(1);
    CubeCount::Static(x as u32, y as u32, 1)
}
