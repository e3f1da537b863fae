//! The official pipeline's PyTorch resizes (`F.interpolate`), on tensors.
//!
//! - [`bicubic_antialias`]: `F.interpolate(mode='bicubic', align_corners=False,
//!   antialias=True)`, the ViT input resize (PyTorch's separable PIL-style filter, a = −0.5,
//!   support scaled by the reduction factor, float arithmetic).
//! - [`bicubic`]: `F.interpolate(mode='bicubic', align_corners=False)`, the semantic-code
//!   upsampling of `merge_quants` (Keys cubic, A = −0.75, taps clamped at the border).
//!
//! These mirror PyTorch; the official code's Pillow resizes are in [`crate::pil_resize`].
//! Both are separable linear maps, applied as two matmuls with per-axis weight
//! matrices computed on the host (they are tiny: output × input per axis).

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Resampling weights of one axis: a dense `[out, in]` matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisWeights {
    pub out: usize,
    pub input: usize,
    pub weights: Vec<f32>,
}

impl AxisWeights {
    fn zeros(out: usize, input: usize) -> Self {
        Self {
            out,
            input,
            weights: vec![0.0; out * input],
        }
    }

    fn tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(self.weights.clone(), [self.out, self.input]),
            device,
        )
    }

    /// `[in, out]`, built row-major on the host (a right matmul operand; see
    /// [`crate::layers::contiguous`] for why not a transposed view).
    fn tensor_transposed<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        let mut t = vec![0.0; self.weights.len()];
        for i in 0..self.out {
            for j in 0..self.input {
                t[j * self.out + i] = self.weights[i * self.input + j];
            }
        }
        Tensor::from_data(TensorData::new(t, [self.input, self.out]), device)
    }
}

/// Keys' cubic convolution kernel with parameter `a`, in f32 as PyTorch evaluates it.
fn cubic(x: f32, a: f32) -> f32 {
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// PyTorch's antialiased bicubic weights (`_compute_weights_aa`, float): for each output
/// sample a window of `±2·max(in/out, 1)` input samples around its centre, filter a = −0.5
/// stretched by the reduction factor, normalised to sum 1.
pub fn antialias_weights(input: usize, out: usize) -> AxisWeights {
    let mut w = AxisWeights::zeros(out, input);
    let scale = input as f32 / out as f32;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    for i in 0..out {
        let center = scale * (i as f32 + 0.5);
        // The C++ mixes float variables with double literals: mirror its promotions.
        let xmin = ((center - support) as f64 + 0.5) as i64;
        let xmax = ((center + support) as f64 + 0.5) as i64;
        let (xmin, xmax) = (xmin.max(0) as usize, xmax.min(input as i64) as usize);
        let taps: Vec<f32> = (xmin..xmax)
            .map(|j| {
                let x = ((j as f32 - center) as f64 + 0.5) * invscale as f64;
                cubic(x as f32, -0.5)
            })
            .collect();
        let total: f32 = taps.iter().sum();
        for (k, tap) in taps.into_iter().enumerate() {
            let value = if total != 0.0 { tap / total } else { tap };
            w.weights[i * input + xmin + k] = value;
        }
    }
    w
}

/// PyTorch's bicubic weights without antialiasing (`align_corners=False`, A = −0.75): the
/// four taps around `scale·(i + 0.5) − 0.5`, indices clamped to the border (clamped taps
/// accumulate on the edge sample).
pub fn cubic_weights(input: usize, out: usize) -> AxisWeights {
    let mut w = AxisWeights::zeros(out, input);
    let scale = input as f32 / out as f32;
    for i in 0..out {
        let real = scale * (i as f32 + 0.5) - 0.5;
        let index = (real.floor() as i64).min(input as i64 - 1);
        let t = (real - index as f32).clamp(0.0, 1.0);
        let coefficients = [
            cubic(t + 1.0, -0.75),
            cubic(t, -0.75),
            cubic(1.0 - t, -0.75),
            cubic(2.0 - t, -0.75),
        ];
        for (k, c) in coefficients.into_iter().enumerate() {
            let j = (index - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            w.weights[i * input + j] += c;
        }
    }
    w
}

/// `out = Wh · x · Wwᵀ` over the last two axes of `[b, c, h, w]`, width first (as PyTorch's
/// separable kernel does).
pub fn resample<B: Backend>(
    x: Tensor<B, 4>,
    rows: &AxisWeights,
    cols: &AxisWeights,
) -> Tensor<B, 4> {
    let device = x.device();
    let [b, c, h, w] = x.dims();
    assert_eq!(
        (h, w),
        (rows.input, cols.input),
        "resample weights built for another size"
    );
    let x = if cols.out == w && is_identity(cols) {
        x
    } else {
        let wt = cols
            .tensor_transposed::<B>(&device)
            .reshape([1, 1, w, cols.out]);
        x.matmul(wt)
    };
    if rows.out == h && is_identity(rows) {
        return x;
    }
    let wh = rows.tensor::<B>(&device).reshape([1, 1, rows.out, h]);
    let y = wh.matmul(x);
    debug_assert_eq!(y.dims(), [b, c, rows.out, cols.out]);
    y
}

fn is_identity(w: &AxisWeights) -> bool {
    w.out == w.input
        && (0..w.out).all(|i| {
            (0..w.input).all(|j| w.weights[i * w.input + j] == if i == j { 1.0 } else { 0.0 })
        })
}

/// `F.interpolate(x, size, mode='bicubic', align_corners=False, antialias=True)`.
pub fn bicubic_antialias<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    resample(
        x,
        &antialias_weights(h, size[0]),
        &antialias_weights(w, size[1]),
    )
}

/// `F.interpolate(x, size, mode='bicubic', align_corners=False)` (no antialiasing).
pub fn bicubic<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    resample(x, &cubic_weights(h, size[0]), &cubic_weights(w, size[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(w: &AxisWeights, i: usize) -> &[f32] {
        &w.weights[i * w.input..(i + 1) * w.input]
    }

    #[test]
    fn same_size_is_identity_for_both_filters() {
        for w in [antialias_weights(7, 7), cubic_weights(7, 7)] {
            assert!(is_identity(&w), "{w:?}");
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for (input, out) in [(64, 56), (9, 16), (5, 3), (3, 28), (112, 112)] {
            for w in [antialias_weights(input, out), cubic_weights(input, out)] {
                for i in 0..out {
                    let s: f32 = row(&w, i).iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{input}->{out} row {i}: {s}");
                }
            }
        }
    }

    #[test]
    fn upsampling_by_two_uses_keys_quarter_phase_taps() {
        // scale 0.5: sample 2 maps to 0.75 → taps at -1..2 with t = 0.75 (A = -0.75).
        let w = cubic_weights(4, 8);
        let expected = [
            cubic(1.75, -0.75),
            cubic(0.75, -0.75),
            cubic(0.25, -0.75),
            cubic(1.25, -0.75),
        ];
        // Tap -1 is clamped onto sample 0.
        let r = row(&w, 2);
        assert!((r[0] - (expected[0] + expected[1])).abs() < 1e-7);
        assert!((r[1] - expected[2]).abs() < 1e-7);
        assert!((r[2] - expected[3]).abs() < 1e-7);
    }
}
