//! Pillow's `Image.resize` on 8-bit RGB, bit for bit: a mirror of Pillow 13's
//! `src/libImaging/Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResample{Horizontal,Vertical}_8bpc`, `ImagingResampleInner`).
//!
//! Every resize the official pipeline does with Pillow goes through here: the MLLM image
//! processor's and the tokenizer app's `BICUBIC`, the editing letterbox's and restore's
//! `LANCZOS`. (The resizes the official code does with PyTorch are in [`crate::resize`].)
//!
//! The algorithm, per axis that changes size: for each output sample a window of input
//! samples around its centre, filter support stretched by the reduction factor when
//! downsampling, taps normalised to sum 1 in f64, then converted to fixed point with
//! [`PRECISION_BITS`] fractional bits (negative taps rounded away from zero). Each pass
//! accumulates in a 32-bit integer from ½ and clips to 8 bits, so the order of the passes
//! matters: Pillow 13 runs the vertical pass first when the height shrinks by more than
//! twice what the width does (see [`horizontal_first`]).

use image::RgbImage;

use crate::error::{Error, Result};

/// The Pillow resampling filters the official pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BICUBIC`: Keys' cubic with a = −0.5, support 2.
    Bicubic,
    /// `Image.LANCZOS`: sinc windowed by sinc(x/3), support 3.
    Lanczos,
}

impl PilFilter {
    /// Half-width of the kernel at scale 1 (`struct filter.support`).
    fn support(self) -> f64 {
        match self {
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    /// The kernel (`bicubic_filter`, `lanczos_filter`), evaluated in f64 as the C does.
    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// `sinc_filter`: `sin(πx)/(πx)`. Rust's `f64::sin` is the platform libm's, the same one the
/// C calls on Linux.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fractional bits of the fixed-point taps: 8 bits of result and 2 of headroom for taps
/// summing outside [0, 1] leave 22 of a 32-bit accumulator.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The taps of one output sample: the first input index and the fixed-point weights.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `input` samples to `out`
/// (the whole axis: Pillow's box is `(0, size)` here).
fn coefficients(input: usize, out: usize, filter: PilFilter) -> Vec<Taps> {
    let scale = input as f64 / out as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let inv_filterscale = 1.0 / filterscale;
    let one = (1i64 << PRECISION_BITS) as f64;
    (0..out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // `(int)` truncates toward zero, as `as` does; then clamped to the axis.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut taps: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight((x as f64 - center + 0.5) * inv_filterscale))
                .collect();
            let total: f64 = taps.iter().sum();
            if total != 0.0 {
                taps.iter_mut().for_each(|t| *t /= total);
            }
            let weights = taps
                .into_iter()
                .map(|t| {
                    if t < 0.0 {
                        (-0.5 + t * one) as i32
                    } else {
                        (0.5 + t * one) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// `clip8`: the accumulator's integer part, clamped to 0..=255 (the C's lookup table covers
/// every value a 32-bit accumulator can shift down to).
fn clip8(accumulated: i32) -> u8 {
    (accumulated >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One tap sum as the C computes it: `int` accumulator starting at ½. The 2 headroom bits
/// keep it in range for these filters (Σ|tap| < 2); wrapping mirrors C `int` should a sum
/// ever leave it, instead of panicking.
fn accumulate(samples: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let sum = samples
        .zip(weights)
        .fold(1i32 << (PRECISION_BITS - 1), |acc, (v, &w)| {
            acc.wrapping_add((v as i32).wrapping_mul(w))
        });
    clip8(sum)
}

/// `ImagingResampleHorizontal_8bpc` on rows `first_row .. first_row + rows` of an RGB buffer
/// `width` pixels wide.
fn horizontal(
    pixels: &[u8],
    width: usize,
    first_row: usize,
    rows: usize,
    taps: &[Taps],
) -> Vec<u8> {
    let out_w = taps.len();
    let mut out = vec![0u8; out_w * rows * 3];
    for y in 0..rows {
        let row = &pixels[(first_row + y) * width * 3..(first_row + y + 1) * width * 3];
        let out_row = &mut out[y * out_w * 3..(y + 1) * out_w * 3];
        for (x, t) in taps.iter().enumerate() {
            for c in 0..3 {
                let samples = row[t.start * 3 + c..].iter().step_by(3).copied();
                out_row[x * 3 + c] = accumulate(samples, &t.weights);
            }
        }
    }
    out
}

/// `ImagingResampleVertical_8bpc` on an RGB buffer `width` pixels wide; `taps` index rows of
/// `pixels` (already shifted by the horizontal pass's first row).
fn vertical(pixels: &[u8], width: usize, taps: &[Taps]) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; stride * taps.len()];
    for (y, t) in taps.iter().enumerate() {
        let out_row = &mut out[y * stride..(y + 1) * stride];
        for (i, value) in out_row.iter_mut().enumerate() {
            let samples = pixels[t.start * stride + i..]
                .iter()
                .step_by(stride)
                .copied();
            *value = accumulate(samples, &t.weights);
        }
    }
    out
}

/// `ImagingResampleInner`'s pass order (new in Pillow 13): vertical first when the height
/// shrinks by more than twice as many pixels as the width does, horizontal first otherwise.
fn horizontal_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let dh = in_h as i64 - out_h as i64;
    let dw = in_w as i64 - out_w as i64;
    !(dh > 0 && dh > dw * 2)
}

/// Pillow's `image.resize((width, height), filter)` on an 8-bit RGB image. Only the passes
/// whose axis changes run; same size returns a copy.
pub fn pil_resize_rgb(
    image: &RgbImage,
    width: usize,
    height: usize,
    filter: PilFilter,
) -> Result<RgbImage> {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    if in_w == 0 || in_h == 0 {
        return Err(Error::EmptyImage {
            width: in_w,
            height: in_h,
        });
    }
    if width == 0 || height == 0 {
        return Err(Error::EmptyResizeTarget { width, height });
    }
    let pixels = image.as_raw();
    let (need_h, need_v) = (width != in_w, height != in_h);
    let out = match (need_h, need_v) {
        (false, false) => pixels.clone(),
        (true, false) => horizontal(pixels, in_w, 0, in_h, &coefficients(in_w, width, filter)),
        (false, true) => vertical(pixels, in_w, &coefficients(in_h, height, filter)),
        (true, true) => {
            let cols = coefficients(in_w, width, filter);
            let mut rows = coefficients(in_h, height, filter);
            if horizontal_first(in_w, in_h, width, height) {
                // The horizontal pass covers only the rows the vertical taps read.
                let first = rows[0].start;
                let last = rows
                    .last()
                    .map(|t| t.start + t.weights.len())
                    .unwrap_or(first);
                rows.iter_mut().for_each(|t| t.start -= first);
                let temp = horizontal(pixels, in_w, first, last - first, &cols);
                vertical(&temp, width, &rows)
            } else {
                let temp = vertical(pixels, in_w, &rows);
                horizontal(&temp, in_w, 0, height, &cols)
            }
        }
    };
    RgbImage::from_raw(width as u32, height as u32, out).ok_or_else(|| {
        Error::Shape(format!(
            "Pillow resize to {width}x{height} produced a buffer of another size"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_images_stay_flat_and_same_size_is_a_copy() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 10, 99]));
        for filter in [PilFilter::Bicubic, PilFilter::Lanczos] {
            let resized = pil_resize_rgb(&flat, 32, 16, filter).unwrap();
            assert!(resized.pixels().all(|p| p.0 == [200, 10, 99]));
        }
        let noisy = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 50) as u8, (y * 60) as u8, 7]));
        assert_eq!(
            pil_resize_rgb(&noisy, 5, 4, PilFilter::Bicubic).unwrap(),
            noisy
        );
    }

    #[test]
    fn fixed_point_taps_round_negatives_away_from_zero() {
        // 4 → 8 bicubic, output 0: centre 0.25, window [max(int(−1.25), 0), int(2.75)) = inputs 0..2
        // at distances 0.25 and 1.25: k = 0.8671875 and −0.0703125, sum 0.796875. Normalised
        // in units of 2^-22: 0.8671875/0.796875·4194304 = 4564389.65 → 4564390 and
        // −0.0703125/0.796875·4194304 = −370085.65 → −370086 (away from zero, not −370085).
        let taps = coefficients(4, 8, PilFilter::Bicubic);
        assert_eq!(
            taps[0],
            Taps {
                start: 0,
                weights: vec![4564390, -370086]
            }
        );
    }

    #[test]
    fn pass_order_switches_when_the_height_shrinks_most() {
        // Pillow 13: vertical first iff (in_h − out_h) > 0 and > 2·(in_w − out_w).
        assert!(horizontal_first(50, 90, 48, 96));
        assert!(!horizontal_first(90, 50, 96, 48));
        assert!(horizontal_first(100, 100, 90, 80), "20 == 2·10 is not more");
        assert!(!horizontal_first(100, 100, 90, 79));
    }

    #[test]
    fn empty_input_or_target_is_an_error() {
        let image = RgbImage::new(4, 4);
        assert!(matches!(
            pil_resize_rgb(&image, 0, 3, PilFilter::Lanczos),
            Err(Error::EmptyResizeTarget {
                width: 0,
                height: 3
            })
        ));
        assert!(matches!(
            pil_resize_rgb(&RgbImage::new(0, 4), 3, 3, PilFilter::Bicubic),
            Err(Error::EmptyImage {
                width: 0,
                height: 4
            })
        ));
    }
}
