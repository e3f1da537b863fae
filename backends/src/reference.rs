//! Reference compositions of the hot-path operations, written once with Burn tensor ops.
//!
//! They are the definition the fused kernels are tested against, and what every backend
//! without a fused kernel (ndarray in particular) runs.
//!
//! On half-precision tensors they upcast where the official PyTorch code does: norm
//! statistics, the attention softmax and the nearest-code distances are computed in f32
//! (a no-op cast on f32 tensors).

use burn::nn::LayerNorm;
use burn::tensor::{activation, backend::Backend, DType, Int, Tensor};

use crate::ops::Modulation;

/// `x / sqrt(mean(x², last dim) + eps) * weight` (Qwen2 RMSNorm: normalised in f32, cast
/// back to the input's dtype, then scaled).
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1);
    // Divide rather than multiply by `recip()`: burn-ndarray computes `recip` with the
    // approximate AVX-512 `rcp14` instruction (relative error ~6e-5), far above f32 rounding.
    let normalized = x / mean_square.add_scalar(eps).sqrt();
    normalized.cast(dtype) * weight.unsqueeze()
}

/// LayerNorm over the last dimension (biased variance, as PyTorch), optional affine. The
/// statistics and the affine are computed in f32 and the result returned in the input's
/// dtype, as PyTorch's half-precision LayerNorm does: a square in f16 overflows past 256.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let mean = x.clone().mean_dim(D - 1);
    let centered = x - mean;
    let var = centered.clone().powi_scalar(2).mean_dim(D - 1);
    // Divide: burn-ndarray's `recip` is an approximation (relative error ~6e-5).
    let normalized = centered / var.add_scalar(eps).sqrt();
    let scaled = match gamma {
        Some(g) => normalized * g.cast(DType::F32).unsqueeze(),
        None => normalized,
    };
    let shifted = match beta {
        Some(b) => scaled + b.cast(DType::F32).unsqueeze(),
        None => scaled,
    };
    shifted.cast(dtype)
}

/// A loaded `nn.LayerNorm` applied through [`layer_norm`] (Burn's `LayerNorm::forward`
/// would square in the compute type). `eps` is the module's epsilon, which Burn keeps private.
pub fn apply_layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
    eps: f64,
) -> Tensor<B, D> {
    layer_norm(
        x,
        Some(norm.gamma.val()),
        norm.beta.as_ref().map(|b| b.val()),
        eps,
    )
}

/// `silu(gate) * up`, the gated activation of SwiGLU MLPs.
pub fn silu_mul<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    activation::silu(gate) * up
}

/// Rotary embedding in the rotate-half layout: `x·cos + rotate_half(x)·sin`, with
/// `rotate_half([a, b]) = [-b, a]` over the last dimension.
///
/// `x` is `[batch, heads, seq, head_dim]`; `cos`/`sin` are `[seq, head_dim]`. The same
/// operation serves the LLM's 1-D RoPE and the ViT's 2-D RoPE: only the tables differ.
pub fn rotary<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let [b, h, s, d] = x.dims();
    let half = d / 2;
    let first = x.clone().slice([0..b, 0..h, 0..s, 0..half]);
    let second = x.clone().slice([0..b, 0..h, 0..s, half..d]);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.unsqueeze::<4>() + rotated * sin.unsqueeze::<4>()
}

/// GroupNorm over `[n, c, h, w]` (biased variance, as PyTorch), optional per-channel affine,
/// optionally followed by SiLU. Computed in f32, returned in the input's dtype.
pub fn group_norm<B: Backend>(
    x: Tensor<B, 4>,
    groups: usize,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
    silu: bool,
) -> Tensor<B, 4> {
    let dtype = x.dtype();
    let [n, c, h, w] = x.dims();
    let grouped = x
        .cast(DType::F32)
        .reshape([n, groups, (c / groups) * h * w]);
    let mean = grouped.clone().mean_dim(2);
    let centered = grouped - mean;
    let var = centered.clone().powi_scalar(2).mean_dim(2);
    let normalized = (centered / var.add_scalar(eps).sqrt()).reshape([n, c, h, w]);
    let scaled = match gamma {
        Some(g) => normalized * g.cast(DType::F32).reshape([1, c, 1, 1]),
        None => normalized,
    };
    let shifted = match beta {
        Some(b) => scaled + b.cast(DType::F32).reshape([1, c, 1, 1]),
        None => scaled,
    };
    let out = if silu {
        activation::silu(shifted)
    } else {
        shifted
    };
    out.cast(dtype)
}

/// [`group_norm`] (without SiLU), then `· scale + shift`, then SiLU if asked: the MoVQ
/// SpatialNorm.
pub fn spatial_norm<B: Backend>(
    x: Tensor<B, 4>,
    groups: usize,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
    modulation: Modulation<B>,
    silu: bool,
) -> Tensor<B, 4> {
    let normalized = group_norm(x, groups, gamma, beta, eps, false);
    let modulated = normalized * modulation.scale + modulation.shift;
    if silu {
        activation::silu(modulated)
    } else {
        modulated
    }
}

/// Rows of the codebook scanned per step by [`nearest_code`]: bounds the distance tile to
/// `n × NEAREST_CODE_TILE` values whatever the codebook size (the official SimVQ searches in
/// blocks of the same size).
pub const NEAREST_CODE_TILE: usize = 32768;

/// Index of the nearest codebook row (Euclidean) for every row of `z`, first index on ties.
///
/// `z` is `[n, d]`, `codebook` `[k, d]`. Distances are `‖c‖² − 2 z·c` (the `‖z‖²` term does
/// not change the arg-min), computed in f32 tile by tile of `tile` codebook rows.
pub fn nearest_code<B: Backend>(
    z: Tensor<B, 2>,
    codebook: Tensor<B, 2>,
    tile: usize,
) -> Tensor<B, 1, Int> {
    let z = z.cast(DType::F32);
    let codebook = codebook.cast(DType::F32);
    let [n, _] = z.dims();
    let [k, d] = codebook.dims();
    let mut best: Option<(Tensor<B, 2>, Tensor<B, 2, Int>)> = None;
    let mut start = 0;
    while start < k {
        let end = (start + tile).min(k);
        let block = codebook.clone().slice([start..end, 0..d]);
        let norms = block
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .reshape([1, end - start]);
        let dist = norms - z.clone().matmul(block.transpose()).mul_scalar(2.0);
        let (min, idx) = dist.min_dim_with_indices(1);
        let idx = idx.add_scalar(start as i64);
        best = Some(match best {
            None => (min, idx),
            Some((best_min, best_idx)) => {
                let better = min.clone().lower(best_min.clone());
                (
                    best_min.mask_where(better.clone(), min),
                    best_idx.mask_where(better, idx),
                )
            }
        });
        start = end;
    }
    let (_, idx) = best.expect("codebook has at least one row");
    idx.reshape([n])
}

/// Scaled dot-product attention. `q` is `[b, h, sq, d]`, `k`/`v` `[b, hk, sk, d]` where
/// `hk` divides `h` (grouped-query attention: query head `i` uses key/value head
/// `i / (h / hk)`). With `causal`, query `i` sees keys `j ≤ i + sk − sq` (bottom-right
/// aligned, so it also serves KV-cached decoding).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    causal: bool,
) -> Tensor<B, 4> {
    let [_, h, sq, _] = q.dims();
    let [_, hk, sk, _] = k.dims();
    let (k, v) = if hk < h {
        (repeat_heads(k, h / hk), repeat_heads(v, h / hk))
    } else {
        (k, v)
    };
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = if causal && sq > 1 {
        let device = scores.device();
        let rows = Tensor::<B, 1, Int>::arange(0..sq as i64, &device).reshape([sq, 1]);
        let cols = Tensor::<B, 1, Int>::arange(0..sk as i64, &device).reshape([1, sk]);
        let future = cols.greater(rows.add_scalar((sk - sq) as i64));
        scores.mask_fill(future.unsqueeze::<4>(), f32::NEG_INFINITY)
    } else {
        scores
    };
    // Softmax in f32, as Qwen2's eager attention (`softmax(.., dtype=torch.float32)`).
    let dtype = scores.dtype();
    activation::softmax(scores.cast(DType::F32), 3)
        .cast(dtype)
        .matmul(v)
}

/// `[b, hk, s, d]` → `[b, hk·group, s, d]`, each head repeated `group` times in place.
fn repeat_heads<B: Backend>(x: Tensor<B, 4>, group: usize) -> Tensor<B, 4> {
    let [b, hk, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, hk, group, s, d])
        .reshape([b, hk * group, s, d])
}
