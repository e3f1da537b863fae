//! Images in and out: decoding any common format, the official preprocessing resizes, and the
//! `[-1, 1]` ↔ 8-bit conversions of `vision_tokenizer/app.py`.

use std::path::Path;

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::pil_resize::{pil_resize_rgb, PilFilter};

/// Decode an image file (PNG, JPEG, WebP, BMP, GIF, TIFF) to 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::ImageRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .with_guessed_format()
        .map_err(|e| Error::ImageRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let image = reader.decode().map_err(|e| Error::ImageRead {
        path: path.to_path_buf(),
        reason: format!("not a readable image ({e})"),
    })?;
    let rgb = image.to_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(Error::EmptyImage {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
        });
    }
    Ok(rgb)
}

/// Encode `image` as PNG at `path`.
pub fn write_png(image: &RgbImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::ImageWrite {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The tokenizer app's preprocessing (`vision_tokenizer/app.py`): resize to
/// `(W // 16 · 16, H // 16 · 16)` with Pillow's bicubic (a no-op when already aligned).
/// `multiple` is the pixel-token edge (16 for the release).
pub fn resize_to_multiple(image: &RgbImage, multiple: usize) -> Result<RgbImage> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::EmptyImage {
            width: w,
            height: h,
        });
    }
    let (tw, th) = (w / multiple * multiple, h / multiple * multiple);
    if tw == 0 || th == 0 {
        return Err(Error::ImageTooSmall {
            width: w,
            height: h,
        });
    }
    pil_resize_rgb(image, tw, th, PilFilter::Bicubic)
}

/// Python's `round` (half to even), which `smart_resize` relies on.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// `smart_resize` of the MLLM's image processor (`image_processing_movqgan.py`): the
/// `(height, width)` to resize to, multiples of `factor` with a pixel count within
/// `[min_pixels, max_pixels]`, close to the input aspect ratio.
pub fn smart_resize_dims(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> [usize; 2] {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let mut hb = round_half_even(h / f) * f;
    let mut wb = round_half_even(w / f) * f;
    if hb * wb > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        hb = (h / beta / f).floor() * f;
        wb = (w / beta / f).floor() * f;
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    [(hb as usize).max(factor), (wb as usize).max(factor)]
}

/// `ToTensor + Normalize(0.5, 0.5)`: 8-bit RGB → `[1, 3, H, W]` in `[-1, 1]`,
/// `(v / 255 − 0.5) / 0.5` in f32 exactly as torchvision computes it.
pub fn to_tensor<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let values: Vec<f32> = image
        .as_raw()
        .iter()
        .map(|&v| (v as f32 / 255.0 - 0.5) / 0.5)
        .collect();
    Tensor::<B, 3>::from_data(TensorData::new(values, [h, w, 3]), device)
        .permute([2, 0, 1])
        .reshape([1, 3, h, w])
}

/// `clamp(127.5·x + 128, 0, 255).to(uint8)` (truncation) of a `[1, 3, H, W]` image.
pub fn to_rgb<B: Backend>(image: Tensor<B, 4>) -> RgbImage {
    let [_, _, h, w] = image.dims();
    let scaled = image
        .cast(DType::F32)
        .mul_scalar(127.5)
        .add_scalar(128.0)
        .clamp(0.0, 255.0)
        .reshape([3, h, w])
        .permute([1, 2, 0]);
    let values: Vec<f32> = scaled
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float image");
    let bytes = values.into_iter().map(|v| v as u8).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes).expect("buffer matches the size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_rounds_half_to_even_and_respects_limits() {
        // 40/16 = 2.5 → 2 (Python round), not 3.
        assert_eq!(smart_resize_dims(40, 56, 16, 16 * 16, 1 << 20), [32, 64]);
        assert_eq!(
            smart_resize_dims(512, 512, 16, 256 * 256, 256 * 256),
            [256, 256]
        );
        assert_eq!(smart_resize_dims(10, 10, 16, 32 * 32, 768 * 768), [32, 32]);
    }

    /// Literal outputs of the official `smart_resize` (`image_processing_movqgan.py:39-69`),
    /// printed by Python 3 with
    /// `[((h, w), smart_resize(h, w, 16, MIN, MAX)) for h, w in CASES]`.
    #[test]
    fn smart_resize_matches_python_at_halfway_cases() {
        // MIN, MAX = 16 * 16, 1 << 20: no pixel limit applies, so only `round` acts. Every
        // side here but 39, 41 and 50 is an exact .5 multiple of 16 (24/16 = 1.5 → 2,
        // 40/16 = 2.5 → 2, 56 → 4, 72 → 4, 88 → 6, 104 → 6, 120 → 8, 136 → 8, 1000 → 62,
        // 1016 → 64, 8/16 = 0.5 → 0 → the 16 floor).
        let unlimited = [
            ((24, 40), (32, 32)),
            ((56, 72), (64, 64)),
            ((88, 104), (96, 96)),
            ((120, 136), (128, 128)),
            ((1000, 1016), (992, 1024)),
            ((8, 8), (16, 16)),
            ((39, 41), (32, 48)),
            ((90, 50), (96, 48)),
        ];
        // MIN, MAX = 32 * 32, 768 * 768 (the stage-3 limits): the floor/ceil branches.
        let staged = [
            ((1000, 1016), (752, 768)),
            ((8, 1000), (16, 368)),
            ((5000, 3000), (976, 592)),
            ((200, 2), (320, 16)),
            ((24, 40), (32, 32)),
        ];
        for (cases, min, max) in [
            (&unlimited[..], 16 * 16, 1 << 20),
            (&staged[..], 32 * 32, 768 * 768),
        ] {
            for ((h, w), (eh, ew)) in cases.iter().copied() {
                assert_eq!(
                    smart_resize_dims(h, w, 16, min, max),
                    [eh, ew],
                    "smart_resize({h}, {w}, 16, {min}, {max})"
                );
            }
        }
    }

    #[test]
    fn too_small_images_are_refused() {
        let tiny = RgbImage::new(15, 40);
        assert!(matches!(
            resize_to_multiple(&tiny, 16),
            Err(Error::ImageTooSmall { width: 15, .. })
        ));
        let ok = resize_to_multiple(&RgbImage::new(33, 40), 16).unwrap();
        assert_eq!(ok.dimensions(), (32, 32));
    }
}
