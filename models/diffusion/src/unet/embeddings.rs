//! Timestep embeddings: diffusers `get_timestep_embedding` (sinusoids, computed on the host
//! in f32 in the same operation order as PyTorch) and `TimestepEmbedding` (Linear, SiLU,
//! Linear).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{activation, backend::Backend, Tensor};

use crate::layers::linear;

/// Sinusoidal embeddings of `values`, `dim` wide each, row-major `[values.len(), dim]`:
/// `[sin(v·f_i), cos(v·f_i)]` with `f_i = exp(−ln(10000)·i / (dim/2 − freq_shift))`, halves
/// swapped to `[cos, sin]` when `flip_sin_to_cos` (SDXL), zero-padded when `dim` is odd.
pub fn sinusoidal_embedding(
    values: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Vec<f32> {
    let half = dim / 2;
    // PyTorch: exp(-math.log(10000) * arange(half, dtype=f32) / (half - shift)), all in f32.
    let neg_log_period = -(10000f64.ln()) as f32;
    let divisor = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (neg_log_period * i as f32 / divisor).exp())
        .collect();
    let mut out = Vec::with_capacity(values.len() * dim);
    for &v in values {
        let args: Vec<f32> = freqs.iter().map(|f| v * f).collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        if !dim.is_multiple_of(2) {
            out.push(0.0);
        }
    }
    out
}

/// `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    linear_1: Linear<B>,
    linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn new(in_dim: usize, out_dim: usize, device: &B::Device) -> Self {
        Self {
            linear_1: linear(in_dim, out_dim, true, device),
            linear_2: linear(out_dim, out_dim, true, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2
            .forward(activation::silu(self.linear_1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_match_diffusers_layout() {
        // dim 4, flip: [cos(t), cos(t/100), sin(t), sin(t/100)] (f_1 = 10000^(-1/2)).
        let e = sinusoidal_embedding(&[0.0, 2.0], 4, true, 0.0);
        assert_eq!(&e[..4], &[1.0, 1.0, 0.0, 0.0]);
        let expected = [2f32.cos(), 0.02f32.cos(), 2f32.sin(), 0.02f32.sin()];
        for (a, b) in e[4..].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // freq_shift 1: f_1 = 10000^(-1/(2-1)).
        let e = sinusoidal_embedding(&[1.0], 4, false, 1.0);
        assert!((e[1] - 1e-4f32.sin()).abs() < 1e-9);
        assert_eq!(sinusoidal_embedding(&[1.0], 5, true, 0.0).len(), 5);
    }
}
