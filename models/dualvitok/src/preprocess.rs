//! The semantic branch's input: `ScalingLayerForQwen2ViT` (`dualvitok_model.py`), which turns
//! a `[-1, 1]` image into the Qwen2-VL ViT's flattened patches.
//!
//! `[-1,1]` → `[0,1]` → antialiased bicubic resize to the `RESOLUTION_MAPPING` size (or the
//! size floored to a multiple of 28) → clamp → CLIP mean/std → the frame repeated twice
//! (temporal patch 2) → `[gh·gw, 3·2·14·14]` patches in 2×2 merge-window order.

use burn::tensor::{backend::Backend, Tensor};

use crate::resize;

/// ViT patch edge in pixels.
pub const PATCH_SIZE: usize = 14;
/// Patches merged into one token per axis by the PatchMerger.
pub const MERGE_SIZE: usize = 2;
/// Frames per temporal patch (a still image is repeated this many times).
pub const TEMPORAL_PATCH_SIZE: usize = 2;
/// Image pixels per semantic token along each axis.
pub const SEMANTIC_FACTOR: usize = PATCH_SIZE * MERGE_SIZE;

/// OpenAI CLIP normalisation used by the scaling layer (digits as in the official code).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `RESOLUTION_MAPPING`: input (H, W) → ViT input (H', W'), chosen to keep the aspect ratio
/// of the generation anchors exact.
pub const RESOLUTION_MAPPING: [((usize, usize), (usize, usize)); 12] = [
    ((256, 256), (252, 252)),
    ((512, 512), (504, 504)),
    ((512, 384), (448, 336)),
    ((384, 512), (336, 448)),
    ((768, 384), (728, 364)),
    ((384, 768), (364, 728)),
    ((1024, 256), (1008, 252)),
    ((256, 1024), (252, 1008)),
    ((384, 576), (336, 504)),
    ((576, 384), (504, 336)),
    ((960, 320), (924, 308)),
    ((320, 960), (308, 924)),
];

/// The size the scaling layer resizes an `height × width` image to.
pub fn vit_input_size(height: usize, width: usize) -> [usize; 2] {
    match RESOLUTION_MAPPING
        .iter()
        .find(|(from, _)| *from == (height, width))
    {
        Some((_, (h, w))) => [*h, *w],
        None => [
            (height / SEMANTIC_FACTOR * SEMANTIC_FACTOR).max(SEMANTIC_FACTOR),
            (width / SEMANTIC_FACTOR * SEMANTIC_FACTOR).max(SEMANTIC_FACTOR),
        ],
    }
}

/// The semantic token grid `(h1, w1)` of an `height × width` image.
pub fn semantic_grid(height: usize, width: usize) -> [usize; 2] {
    let [h, w] = vit_input_size(height, width);
    [h / SEMANTIC_FACTOR, w / SEMANTIC_FACTOR]
}

/// Flattened ViT patches of one image and their grid.
#[derive(Debug, Clone)]
pub struct VitInput<B: Backend> {
    /// `[gh·gw, 1176]`, rows in merge-window order `(a, c, k, l)` = patch `(2a+k, 2c+l)`,
    /// columns `(channel, t, py, px)`.
    pub patches: Tensor<B, 2>,
    /// Patch grid `(gh, gw)` (`image_grid_thw[1..]`; t is always 1).
    pub grid: [usize; 2],
}

impl<B: Backend> VitInput<B> {
    /// Token grid after the 2×2 patch merger.
    pub fn merged_grid(&self) -> [usize; 2] {
        [self.grid[0] / MERGE_SIZE, self.grid[1] / MERGE_SIZE]
    }
}

/// `[1, 3, H, W]` in `[-1, 1]` → `[1, 3, H', W']` in `[0, 1]`: rescale, antialiased bicubic
/// resize, clamp.
pub fn resize01<B: Backend>(image: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = image.dims();
    let x = image.add_scalar(1.0).div_scalar(2.0);
    resize::bicubic_antialias(x, vit_input_size(h, w)).clamp(0.0, 1.0)
}

/// `(x − mean) / std` per channel with the OpenAI CLIP statistics.
pub fn normalize<B: Backend>(x01: Tensor<B, 4>) -> Tensor<B, 4> {
    let device = x01.device();
    let mean = Tensor::<B, 1>::from_floats(CLIP_MEAN, &device).reshape([1, 3, 1, 1]);
    let std = Tensor::<B, 1>::from_floats(CLIP_STD, &device).reshape([1, 3, 1, 1]);
    (x01 - mean) / std
}

/// `[1, 3, H', W']` normalised image (H', W' multiples of 28) → merge-ordered patches.
pub fn patchify<B: Backend>(normalized: Tensor<B, 4>) -> VitInput<B> {
    let [_, c, h, w] = normalized.dims();
    let (gh, gw) = (h / PATCH_SIZE, w / PATCH_SIZE);
    let (p, m) = (PATCH_SIZE, MERGE_SIZE);
    // NdArray tensors have at most 6 dimensions: split rows in two steps.
    let rows = normalized
        // (channel, a, k, py, column, px) with column = 2c + l
        .reshape([c, gh / m, m, p, gw, p])
        // (a, k, column, channel, py, px) = (a, k, c, l, values)
        .permute([1, 2, 4, 0, 3, 5])
        .reshape([gh / m, m, gw / m, m, c * p * p])
        // (a, c, k, l, values)
        .permute([0, 2, 1, 3, 4]);
    let patches = rows
        .reshape([gh * gw, c, 1, p * p])
        .expand([gh * gw, c, TEMPORAL_PATCH_SIZE, p * p])
        .reshape([gh * gw, c * TEMPORAL_PATCH_SIZE * p * p]);
    VitInput {
        patches,
        grid: [gh, gw],
    }
}

/// The whole scaling layer: `[1, 3, H, W]` in `[-1, 1]` → ViT patches.
pub fn scaling_layer<B: Backend>(image: Tensor<B, 4>) -> VitInput<B> {
    patchify(normalize(resize01(image)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_mapping_or_floor_to_28() {
        assert_eq!(vit_input_size(512, 384), [448, 336]);
        assert_eq!(vit_input_size(64, 64), [56, 56]);
        assert_eq!(vit_input_size(80, 112), [56, 112]);
        assert_eq!(vit_input_size(16, 300), [28, 280]);
        assert_eq!(semantic_grid(512, 512), [18, 18]);
        assert_eq!(semantic_grid(384, 768), [13, 26]);
    }
}
