//! Images in and out: decoding any common format, the official preprocessing resizes, and the
//! `[-1, 1]` ↔ 8-bit conversions of `vision_tokenizer/app.py`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use image::{ImageEncoder, RgbImage};

use crate::error::{Error, Result};
use crate::pil_resize::{pil_resize_rgb, PilFilter};

/// Largest image file read (the decoders' own limits bound the decoded pixels).
const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Decode an image file (PNG, JPEG, WebP, BMP, GIF, TIFF) to 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let failed = |reason: String| Error::ImageRead {
        path: path.to_path_buf(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| failed(e.to_string()))?
        .len();
    if size > MAX_IMAGE_FILE_BYTES {
        return Err(failed(format!(
            "{size} bytes is larger than the {MAX_IMAGE_FILE_BYTES} an image file may have"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| failed(e.to_string()))?;
    // The JPEG decoder fills a truncated scan with grey instead of failing.
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_end_marker(&bytes) {
        return Err(failed(
            "the JPEG is truncated (no end-of-image marker after its scan)".into(),
        ));
    }
    let image = reader
        .decode()
        .map_err(|e| failed(format!("not a readable image ({e})")))?;
    let rgb = image.to_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(Error::EmptyImage {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
        });
    }
    Ok(rgb)
}

/// Whether an end-of-image marker (FF D9) follows the first start-of-scan (FF DA). Inside
/// entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so the
/// pair cannot occur there by accident.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Encode `image` as PNG at `path`, atomically ([`write_atomically`]).
pub fn write_png(image: &RgbImage, path: &Path) -> Result<()> {
    write_atomically(path, |file| {
        image::codecs::png::PngEncoder::new(file)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| e.to_string())
    })
    .map_err(|reason| Error::ImageWrite {
        path: path.to_path_buf(),
        reason,
    })
}

/// Write a file whole or not at all: into a temporary file beside `path`, flushed to disk,
/// then renamed over `path`. A failed or interrupted write (a full disk, SIGINT) leaves any
/// previous file at `path` intact.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let temporary = temporary_beside(path);
    let written = (|| {
        let file = File::create(&temporary)
            .map_err(|e| format!("cannot create {}: {e}", temporary.display()))?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.error().to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&temporary, path).map_err(|e| e.to_string())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// `.NAME.partial-PID` in the directory of `path`: the rename stays on one file system.
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Check, before any computation, that a file can be written at `path`: it is not a
/// directory, and its directory exists and accepts a new file (probed with the temporary
/// file the write will use). The format (the extension) is the caller's to check.
pub fn check_writable(path: &Path) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::ImageWrite {
            path: path.to_path_buf(),
            reason,
        })
    };
    if path.is_dir() {
        return refuse("is a directory".into());
    }
    let temporary = temporary_beside(path);
    match File::create(&temporary) {
        Ok(_) => {
            let _ = std::fs::remove_file(&temporary);
            Ok(())
        }
        Err(e) => refuse(format!("its directory does not accept a new file ({e})")),
    }
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

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("illume-image-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_leaves_no_partial_file() {
        let path = scratch("kept.png");
        std::fs::write(&path, b"previous").unwrap();
        let err = write_atomically(&path, |out| {
            use std::io::Write;
            out.write_all(b"half an ima").unwrap();
            Err("disk full".into())
        })
        .unwrap_err();
        assert_eq!(err, "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
        assert!(!temporary_beside(&path).exists());
        let image = RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]));
        write_png(&image, &path).unwrap();
        assert_eq!(read_rgb(&path).unwrap(), image);
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let image = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 9]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&image)
            .unwrap();
        let whole = scratch("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        assert_eq!(read_rgb(&whole).unwrap().dimensions(), (64, 48));
        let cut = scratch("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
        let err = read_rgb(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.jpg") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn png_outputs_are_checked_before_any_work() {
        let ok = scratch("out.PNG");
        check_writable(&ok).unwrap();
        assert!(!ok.exists() && !temporary_beside(&ok).exists());
        let missing = scratch("no-such-dir").join("out.png");
        let err = check_writable(&missing).unwrap_err().to_string();
        assert!(
            err.contains("no-such-dir") && err.contains("directory"),
            "{err}"
        );
        let dir = scratch("a-dir.png");
        std::fs::create_dir_all(&dir).unwrap();
        let err = check_writable(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

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
