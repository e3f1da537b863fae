//! `DualViTok.merge_quants`: the decoder's (and the SDXL decoder's) input code map.

use burn::tensor::{backend::Backend, Tensor};

use crate::resize;

/// Semantic codes `[1, c_s, h1, w1]` resized to the pixel grid with PyTorch bicubic
/// (`align_corners=False`, no antialias, A = −0.75, border-clamped taps), concatenated before
/// the pixel codes `[1, c_p, h2, w2]` → `[1, c_s + c_p, h2, w2]`.
pub fn merge_quants<B: Backend>(semantic: Tensor<B, 4>, pixel: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = pixel.dims();
    let resized = resize::bicubic(semantic, [h, w]);
    Tensor::cat(vec![resized, pixel], 1)
}
