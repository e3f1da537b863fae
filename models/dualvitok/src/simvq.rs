//! SimVQ (`vector_quantize_pytorch/sim_vq.py`): a frozen Gaussian codebook mapped through a
//! learned linear transform; quantisation is the Euclidean nearest code.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use illume_backends::IllumeBackend;
use illume_weights::Checkpoint;

use crate::config::SimVqConfig;
use crate::error::{Error, Result};
use crate::layers::contiguous;
use crate::names;

/// The quantizer's parameters as stored: `frozen_codebook` `[K, d]` (a persistent buffer)
/// and `code_transform` (Linear d → d, no bias).
#[derive(Module, Debug)]
pub struct SimVq<B: Backend> {
    pub frozen_codebook: Param<Tensor<B, 2>>,
    pub code_transform: Linear<B>,
}

impl<B: Backend> SimVq<B> {
    pub fn new(config: &SimVqConfig, device: &B::Device) -> Self {
        let std = 1.0 / (config.dim as f64).sqrt();
        Self {
            frozen_codebook: Initializer::Normal { mean: 0.0, std }
                .init([config.codebook_size, config.dim], device),
            code_transform: LinearConfig::new(config.dim, config.dim)
                .with_bias(false)
                .init(device),
        }
    }

    /// Load from a checkpoint subtree (`subtree("pixel_quantizer")` of a DualViTok).
    pub fn load(checkpoint: &Checkpoint, config: &SimVqConfig, device: &B::Device) -> Result<Self> {
        names::load(checkpoint, Self::new(config, device), "SimVQ quantizer")
    }

    /// The implicit codebook `code_transform(frozen_codebook)`, computed once.
    pub fn codebook(&self) -> Codebook<B> {
        Codebook {
            codes: self.code_transform.forward(self.frozen_codebook.val()),
        }
    }
}

/// The effective codebook `[K, d]` of a SimVQ level, ready for search and lookup.
#[derive(Debug, Clone)]
pub struct Codebook<B: Backend> {
    codes: Tensor<B, 2>,
}

impl<B: Backend> Codebook<B> {
    /// A codebook from explicit codes `[K, d]`.
    pub fn from_codes(codes: Tensor<B, 2>) -> Self {
        Self { codes }
    }

    pub fn codes(&self) -> &Tensor<B, 2> {
        &self.codes
    }

    /// Number of codes K.
    pub fn size(&self) -> usize {
        self.codes.dims()[0]
    }

    /// Code width d.
    pub fn dim(&self) -> usize {
        self.codes.dims()[1]
    }

    /// Check host indices against the codebook size; `level` names the codebook in errors.
    pub fn check_indices(&self, indices: &[u32], level: &'static str) -> Result<()> {
        let size = self.size();
        match indices.iter().position(|&i| i as usize >= size) {
            Some(position) => Err(Error::TokenOutOfRange {
                level,
                index: indices[position],
                position,
                codebook_size: size,
            }),
            None => Ok(()),
        }
    }

    /// `indices_to_codes`: codes of row-major indices on a `[h, w]` grid → `[1, d, h, w]`.
    /// Indices must be in range ([`Codebook::check_indices`]).
    pub fn lookup(&self, indices: Tensor<B, 1, Int>, grid: [usize; 2]) -> Tensor<B, 4> {
        let d = self.dim();
        self.codes
            .clone()
            .select(0, indices)
            .reshape([1, grid[0], grid[1], d])
            .permute([0, 3, 1, 2])
    }

    /// [`Codebook::lookup`] of host indices.
    pub fn lookup_host(&self, indices: &[u32], grid: [usize; 2]) -> Tensor<B, 4> {
        let device = self.codes.device();
        let ints: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let tensor =
            Tensor::<B, 1, Int>::from_data(TensorData::new(ints, [indices.len()]), &device);
        self.lookup(tensor, grid)
    }
}

impl<B: IllumeBackend> Codebook<B> {
    /// Index of the nearest code (Euclidean, first index on ties) for each row of `z`
    /// `[n, d]`, searched tile by tile (`B::nearest_code`).
    pub fn nearest(&self, z: Tensor<B, 2>) -> Tensor<B, 1, Int> {
        B::nearest_code(z, self.codes.clone())
    }

    /// Quantise a channel-first map `[1, d, h, w]` → row-major indices `[h·w]`.
    pub fn quantize(&self, z: Tensor<B, 4>) -> Tensor<B, 1, Int> {
        let [_, d, h, w] = z.dims();
        self.nearest(contiguous(z.reshape([d, h * w]).transpose()))
    }
}

/// Read indices back to the host.
pub fn indices_to_host<B: Backend>(indices: Tensor<B, 1, Int>) -> Vec<u32> {
    indices
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("integer tensor")
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use illume_backends::{reference, NdArray};

    type B = NdArray;

    /// The tiled search (tiles far smaller than the codebook, uneven last tile) finds exactly
    /// what one untiled pass finds, including the first index on exact ties.
    #[test]
    fn blockwise_search_equals_untiled_search() {
        let device = Default::default();
        let codes = Tensor::<B, 2>::random([1000, 8], Distribution::Normal(0.0, 1.0), &device);
        // Duplicate a few codes far apart so ties cross tile boundaries.
        let codes = codes
            .clone()
            .slice_assign([900..903, 0..8], codes.slice([5..8, 0..8]));
        let z = Tensor::<B, 2>::random([77, 8], Distribution::Normal(0.0, 1.0), &device);
        // Two queries sit exactly on duplicated codes: the first copy must win.
        let z = Tensor::cat(vec![z, codes.clone().slice([5..7, 0..8])], 0);
        let untiled = indices_to_host(reference::nearest_code(z.clone(), codes.clone(), 1000));
        for tile in [1, 7, 64, 333] {
            let tiled = indices_to_host(reference::nearest_code(z.clone(), codes.clone(), tile));
            assert_eq!(tiled, untiled, "tile {tile}");
        }
        assert_eq!(&untiled[77..], &[5, 6], "first index wins exact ties");
        // Brute force on the host, first index on ties.
        let c: Vec<f32> = codes.into_data().to_vec().unwrap();
        let zs: Vec<f32> = z.into_data().to_vec().unwrap();
        for (row, &found) in untiled.iter().enumerate() {
            let dist = |k: usize| -> f32 {
                (0..8)
                    .map(|j| (zs[row * 8 + j] - c[k * 8 + j]).powi(2))
                    .sum()
            };
            let best = (0..1000).fold(0, |b, k| if dist(k) < dist(b) { k } else { b });
            assert!(
                dist(found as usize) <= dist(best) + 1e-4,
                "row {row}: {found} vs brute force {best}"
            );
        }
    }
}
