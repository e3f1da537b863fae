//! Seeded Gaussian noise for the initial latents and ancestral sampling, drawn on the host
//! so that a seed gives the same numbers on every backend and platform.
//!
//! The numbers differ from PyTorch's `torch.randn` for the same seed (a different
//! generator); parity with the official pipeline is checked with given initial latents.

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A stream of N(0, 1) samples from a seed.
pub struct NoiseSource {
    rng: ChaCha8Rng,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A tensor of standard normal samples, in f32 (the latents stay f32 whatever the UNet
    /// computes in, as in diffusers' schedulers).
    pub fn normal<B: Backend>(&mut self, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
        let count = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect();
        Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
    }
}
