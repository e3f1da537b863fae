//! Rotary embedding (rotate-half layout): one unit per rotated pair `(j, j + d/2)`.
//!
//! `x` is read through its strides, so the usual `[b, s, h, d] → [b, h, s, d]` view of a
//! projection needs no copy; the output is contiguous.

use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::empty_like;

#[cube(launch)]
fn rotary_kernel<F: Float>(
    x: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    out: &mut Tensor<F>,
    pairs: usize,
    #[define(F)] _dtype: StorageType,
) {
    let p = ABSOLUTE_POS;
    if p >= pairs {
        terminate!();
    }
    let heads = x.shape(1);
    let seq = x.shape(2);
    let d = x.shape(3);
    let half = d / 2;

    let j = p % half;
    let rest = p / half;
    let s = rest % seq;
    let rest = rest / seq;
    let h = rest % heads;
    let b = rest / heads;

    let x_base = b * x.stride(0) + h * x.stride(1) + s * x.stride(2);
    let first = f32::cast_from(x[x_base + j * x.stride(3)]);
    let second = f32::cast_from(x[x_base + (j + half) * x.stride(3)]);

    let t = s * d;
    let out_base = ((b * heads + h) * seq + s) * d;
    out[out_base + j] =
        F::cast_from(first * f32::cast_from(cos[t + j]) - second * f32::cast_from(sin[t + j]));
    out[out_base + j + half] = F::cast_from(
        second * f32::cast_from(cos[t + j + half]) + first * f32::cast_from(sin[t + j + half]),
    );
}

/// `x·cos + rotate_half(x)·sin`; `x` is `[b, h, s, d]` (any strides), `cos`/`sin` `[s, d]`.
pub fn rotary<R: CubeRuntime>(
    x: CubeTensor<R>,
    cos: CubeTensor<R>,
    sin: CubeTensor<R>,
) -> CubeTensor<R> {
    let cos = into_contiguous(cos);
    let sin = into_contiguous(sin);
    let out = empty_like(&x);
    let pairs = x.meta.shape().num_elements() / 2;
    if pairs == 0 {
        return out;
    }
    let cube_dim = CubeDim::new(&x.client, pairs);
    let cube_count = calculate_cube_count_elemwise(&x.client, pairs, cube_dim);
    rotary_kernel::launch::<R>(
        &x.client,
        cube_count,
        cube_dim,
        x.clone().into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        pairs,
        x.dtype.into(),
    );
    out
}
