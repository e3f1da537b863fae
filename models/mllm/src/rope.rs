//! 1-D rotary position embedding of Qwen2 (rotate-half layout, θ from the config).
//!
//! Position ids are plain `0..L` over the spliced embedding sequence (ILLUME+ has no M-RoPE).
//! Tables are computed on the host for the positions of one forward call (a decode step
//! needs one row), in f32 exactly as transformers 4.44 does: `inv_freq` in f32, the angle
//! `position · inv_freq` as one f32 product, cos/sin of it.

use std::ops::Range;

use burn::tensor::{backend::Backend, Tensor, TensorData};

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (theta as f32).powf(exponent)
            })
            .collect();
        Self { inv_freq }
    }

    pub fn head_dim(&self) -> usize {
        self.inv_freq.len() * 2
    }

    /// `(cos, sin)`, each `[positions.len(), head_dim]`: the angles of every frequency,
    /// repeated twice along the head dimension (rotate-half layout).
    pub fn tables<B: Backend>(
        &self,
        positions: Range<usize>,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let n = positions.len();
        let d = self.head_dim();
        let mut cos = Vec::with_capacity(n * d);
        let mut sin = Vec::with_capacity(n * d);
        for position in positions {
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| position as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [n, d]), device),
            Tensor::from_data(TensorData::new(sin, [n, d]), device),
        )
    }
}
