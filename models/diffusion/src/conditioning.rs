//! The code map the UNet is conditioned on, from DualViTok token indices: the official
//! `DualViTok2ImageEmbedder` = `merge_quants(indices_to_codes(semantic, pixel))`, which
//! the official pipeline computes with the DualViTok cast to float16.
//!
//! [`CodePrecision::Float16`] reproduces that: the SimVQ `frozen_codebook` and
//! `code_transform` are rounded to f16, the transform accumulates in f32 (as PyTorch's CPU
//! half GEMM does) and its result is rounded to f16, and the bicubic resize of the semantic
//! codes runs in f32 on f16 inputs and is rounded back to f16 — every point where the
//! official code holds f16 values. [`CodePrecision::Float32`] keeps everything in f32.

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use half::f16;
use illume_backends::IllumeBackend;
use illume_dualvitok::simvq::{Codebook, SimVq};
use illume_dualvitok::{merge_quants, DualTokens, DualViTok};

use crate::error::DiffusionError;

/// Precision of the code-map computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodePrecision {
    /// As the official pipeline: the embedder's DualViTok in float16.
    #[default]
    Float16,
    /// Everything in float32 (not what the decoder was run with).
    Float32,
}

/// Values of `t` rounded to the nearest float16 (ties to even), kept as f32.
pub fn round_to_f16<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    let device = t.device();
    let shape = t.shape();
    let values: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float tensor")
        .into_iter()
        .map(|v| f16::from_f32(v).to_f32())
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &device)
}

/// The two SimVQ codebooks of a DualViTok at the chosen precision, and the
/// indices → code map computation.
#[derive(Debug, Clone)]
pub struct CodeEmbedder<B: Backend> {
    semantic: Codebook<B>,
    pixel: Codebook<B>,
    precision: CodePrecision,
}

/// `code_transform(frozen_codebook)` with f16 inputs and an f16 result.
fn f16_codebook<B: Backend>(quantizer: &SimVq<B>) -> Codebook<B> {
    let frozen = round_to_f16(quantizer.frozen_codebook.val());
    // Burn's Linear weight is [in, out]: `x · W` is PyTorch's `x · Wᵀ`.
    let weight = round_to_f16(Param::val(&quantizer.code_transform.weight));
    Codebook::from_codes(round_to_f16(frozen.matmul(weight)))
}

impl<B: IllumeBackend> CodeEmbedder<B> {
    pub fn new(tokenizer: &DualViTok<B>, precision: CodePrecision) -> Self {
        let (semantic, pixel) = match precision {
            CodePrecision::Float32 => (
                tokenizer.semantic_codebook().clone(),
                tokenizer.pixel_codebook().clone(),
            ),
            CodePrecision::Float16 => (
                f16_codebook(&tokenizer.model.semantic_quantizer),
                f16_codebook(&tokenizer.model.pixel_quantizer),
            ),
        };
        Self {
            semantic,
            pixel,
            precision,
        }
    }

    pub fn precision(&self) -> CodePrecision {
        self.precision
    }

    /// Channels of the code map (semantic + pixel code widths).
    pub fn channels(&self) -> usize {
        self.semantic.dim() + self.pixel.dim()
    }

    /// The code map `[1, c_s + c_p, h2, w2]` of `tokens`: semantic codes bicubic-resized to
    /// the pixel grid, then the pixel codes.
    pub fn code_map(&self, tokens: &DualTokens) -> Result<Tensor<B, 4>, DiffusionError> {
        for (grid, level) in [(&tokens.semantic, "semantic"), (&tokens.pixel, "pixel")] {
            let [h, w] = grid.shape;
            if h == 0 || w == 0 || h * w != grid.indices.len() {
                return Err(DiffusionError::Input(format!(
                    "the {level} token grid is {h}x{w} but holds {} indices",
                    grid.indices.len()
                )));
            }
        }
        self.semantic
            .check_indices(&tokens.semantic.indices, "semantic")?;
        self.pixel.check_indices(&tokens.pixel.indices, "pixel")?;
        let semantic = self
            .semantic
            .lookup_host(&tokens.semantic.indices, tokens.semantic.shape);
        let pixel = self
            .pixel
            .lookup_host(&tokens.pixel.indices, tokens.pixel.shape);
        let merged = merge_quants(semantic, pixel);
        Ok(match self.precision {
            CodePrecision::Float16 => round_to_f16(merged),
            CodePrecision::Float32 => merged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use illume_backends::NdArray;

    #[test]
    fn f16_rounding_is_ties_to_even() {
        let t = Tensor::<NdArray, 1>::from_floats(
            [1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 1e-8, 70000.0],
            &Default::default(),
        );
        let r: Vec<f32> = round_to_f16(t).into_data().to_vec().unwrap();
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1); 1 + 3·2^-11 → 1 + 2^-9.
        assert_eq!(r[0], 1.0);
        assert_eq!(r[1], 1.0 + 4.0 / 2048.0);
        assert_eq!(r[2], 0.0);
        assert!(r[3].is_infinite());
    }
}
