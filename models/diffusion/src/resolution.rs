//! The output sizes the decoder was trained on, and the rule that picks one.
//!
//! The official pipeline conditions the UNet on `add_time_ids = [0, 0, 0, 0, 0, index]`,
//! the index of the string `f"({width}, {height})"` in its `resolution_group`, and rejects
//! any other size. ILLUME+ asks for twice the token-image size (2× super-resolution).

use crate::error::DiffusionError;

/// An image size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageSize {
    pub width: usize,
    pub height: usize,
}

impl ImageSize {
    pub const fn new(width: usize, height: usize) -> Self {
        Self { width, height }
    }
}

impl std::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// `resolution_group` of `sdxl_decoder_pipe.py`, as (width, height), in index order.
pub const RESOLUTIONS: [ImageSize; 12] = [
    ImageSize::new(1024, 1024),
    ImageSize::new(768, 1024),
    ImageSize::new(1024, 768),
    ImageSize::new(512, 2048),
    ImageSize::new(2048, 512),
    ImageSize::new(640, 1920),
    ImageSize::new(1920, 640),
    ImageSize::new(768, 1536),
    ImageSize::new(1536, 768),
    ImageSize::new(768, 1152),
    ImageSize::new(1152, 768),
    ImageSize::new(512, 512),
];

/// Output pixels per pixel-level token: DualViTok's 16 pixels per token, times the 2×
/// super-resolution of the decoder.
pub const PIXELS_PER_TOKEN: usize = 32;

fn rejected(size: ImageSize, hint: String) -> DiffusionError {
    DiffusionError::Resolution {
        width: size.width,
        height: size.height,
        valid: RESOLUTIONS.iter().map(|s| (s.width, s.height)).collect(),
        hint,
    }
}

/// The micro-conditioning index of `size`, or the error listing the valid sizes.
pub fn resolution_index(size: ImageSize) -> Result<usize, DiffusionError> {
    RESOLUTIONS
        .iter()
        .position(|s| *s == size)
        .ok_or_else(|| rejected(size, String::new()))
}

/// The size ILLUME+ decodes a pixel-token grid `[rows, cols]` at: twice the token image
/// (16 pixels per token), which must be one of [`RESOLUTIONS`].
pub fn output_size_for_grid(rows: usize, cols: usize) -> Result<ImageSize, DiffusionError> {
    let size = ImageSize::new(cols * PIXELS_PER_TOKEN, rows * PIXELS_PER_TOKEN);
    resolution_index(size).map(|_| size).map_err(|_| {
        rejected(
            size,
            format!(
                " (a {cols}x{rows} pixel-token grid is a {}x{} token image; the decoder renders \
                 at twice the token-image size)",
                cols * 16,
                rows * 16
            ),
        )
    })
}

/// The listed size whose aspect ratio is nearest to `width / height` (ties: the first in
/// list order), as the official tokenizer demo snaps a target size (`assign_ratio`).
pub fn nearest_aspect(width: usize, height: usize) -> ImageSize {
    let ratio = width as f64 / height.max(1) as f64;
    *RESOLUTIONS
        .iter()
        .min_by(|a, b| {
            let da = (a.width as f64 / a.height as f64 - ratio).abs();
            let db = (b.width as f64 / b.height as f64 - ratio).abs();
            da.total_cmp(&db)
        })
        .expect("non-empty list")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_two_x_rule() {
        assert_eq!(resolution_index(ImageSize::new(512, 512)).unwrap(), 11);
        assert_eq!(resolution_index(ImageSize::new(768, 1024)).unwrap(), 1);
        // 256x256 token image = 16x16 pixel tokens -> 512x512.
        assert_eq!(
            output_size_for_grid(16, 16).unwrap(),
            ImageSize::new(512, 512)
        );
        // 384x512 (h x w) token image -> 24x32 tokens -> 1024 wide, 768 high.
        assert_eq!(
            output_size_for_grid(24, 32).unwrap(),
            ImageSize::new(1024, 768)
        );
        let err = output_size_for_grid(4, 4).unwrap_err().to_string();
        assert!(
            err.contains("128x128") && err.contains("512x512") && err.contains("twice"),
            "{err}"
        );
        assert_eq!(nearest_aspect(300, 100), ImageSize::new(1920, 640));
        assert_eq!(nearest_aspect(640, 480), ImageSize::new(1024, 768));
    }
}
