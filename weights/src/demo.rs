//! Deterministic demo weights: a module's parameters filled from a fixed seed and written as
//! a safetensors file with PyTorch names and layouts, so demo checkpoints go through exactly
//! the loaders that official checkpoints do.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};

use crate::error::WeightsError;

/// SplitMix64: tiny, fast, and identical on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values of one demo tensor, from its PyTorch name and shape alone: 1-D `weight`s (norm
/// scales) are ones, 1-D `bias`es zeros, everything else N(0, 1/fan_in) where fan_in is the
/// product of all but the first dimension. Each tensor has its own stream (seed ^ hash(name)),
/// so values do not depend on the order tensors are visited.
pub fn demo_values(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    if shape.len() == 1 {
        let value = if name.ends_with("weight") { 1.0 } else { 0.0 };
        return vec![value; numel];
    }
    let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
    let std = 1.0 / (fan_in as f64).sqrt();
    let mut rng = SplitMix64(seed ^ fnv1a(name));
    (0..numel).map(|_| (rng.normal() * std) as f32).collect()
}

/// Write `module`'s parameters, as demo values, to `path` (safetensors, f32, PyTorch names
/// and layouts: Linear weights `[out, in]`, norm `weight`/`bias`). `rename` maps each Burn
/// path to the checkpoint name where the two differ (the documented remaps).
pub fn write_demo_checkpoint<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
    seed: u64,
    rename: impl Fn(&str) -> String,
) -> Result<(), WeightsError> {
    let snapshots = module.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = snapshots
        .iter()
        .map(|snapshot| {
            let name = rename(&snapshot.full_path());
            let shape = snapshot.shape.to_vec();
            let bytes = demo_values(&name, &shape, seed)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (name, shape, bytes)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            reason: format!("cannot build demo tensors: {e}"),
        })?;
    let bytes = safetensors::serialize(views, None).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        reason: format!("cannot serialize demo tensors: {e}"),
    })?;
    // Write then rename, so an interrupted first run never leaves a half file behind.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| WeightsError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| WeightsError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_scaled() {
        let a = demo_values("layer.weight", &[64, 256], 7);
        assert_eq!(a, demo_values("layer.weight", &[64, 256], 7));
        assert_ne!(a, demo_values("other.weight", &[64, 256], 7));
        let var = a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            (var * 256.0 - 1.0).abs() < 0.1,
            "variance {var} should be ~1/256"
        );
        assert_eq!(demo_values("norm.weight", &[3], 7), vec![1.0; 3]);
        assert_eq!(demo_values("proj.bias", &[2], 7), vec![0.0; 2]);
    }
}
