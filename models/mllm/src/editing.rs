//! Image editing's geometry (`aspect_ratio_utils.py`, `data_utils.py`): the input is
//! letterboxed to the generation anchor closest in aspect ratio, the edited image is
//! generated at that anchor, then un-padded and resized back to the input's size.
//!
//! Both resizes are Pillow's `LANCZOS`, bit-exact ([`pil_resize_rgb`]), as the official
//! code's `img.resize(size, Image.LANCZOS)`.

use illume_dualvitok::pil_resize::{pil_resize_rgb, PilFilter};
use image::imageops;
use image::{Rgb, RgbImage};

use crate::error::{MllmError, Result};

/// The official generation anchors `RATIOS`, `(height, width)`.
pub const ANCHORS: [(usize, usize); 11] = [
    (512, 512),
    (384, 512),
    (512, 384),
    (384, 768),
    (768, 384),
    (384, 576),
    (576, 384),
    (320, 960),
    (960, 320),
    (256, 1024),
    (1024, 256),
];

/// `AspectRatioCrop._find_size`: the anchor `(height, width)` whose aspect ratio `w/h` is
/// closest to the image's; ties go to the anchor closest in size.
pub fn nearest_anchor(width: usize, height: usize, anchors: &[(usize, usize)]) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let diff = |(h, w): (usize, usize)| (w as f64 / h as f64 - aspect).abs();
    let min = anchors
        .iter()
        .map(|&a| diff(a))
        .fold(f64::INFINITY, f64::min);
    let distance = |(h, w): (usize, usize)| {
        let (dh, dw) = (height as i64 - h as i64, width as i64 - w as i64);
        dh * dh + dw * dw
    };
    anchors
        .iter()
        .copied()
        .filter(|&a| diff(a) == min)
        .min_by_key(|&a| distance(a))
        .expect("at least one anchor")
}

/// The region of the letterboxed image that holds the input: `(left, top, width, height)`,
/// as `resize_with_padding` / `unpad_and_resize_back` compute it.
fn content_box(width: usize, height: usize, target: (usize, usize)) -> (u32, u32, u32, u32) {
    let (th, tw) = target;
    let ratio = (tw as f64 / width as f64).min(th as f64 / height as f64);
    let (nw, nh) = (
        ((width as f64 * ratio) as usize).max(1),
        ((height as f64 * ratio) as usize).max(1),
    );
    (
        ((tw - nw) / 2) as u32,
        ((th - nh) / 2) as u32,
        nw as u32,
        nh as u32,
    )
}

/// `resize_with_padding`: fit the image inside `target` `(height, width)` keeping its aspect
/// ratio, centred on white.
pub fn letterbox(image: &RgbImage, target: (usize, usize)) -> Result<RgbImage> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(MllmError::Image(format!("the image is empty ({w}x{h})")));
    }
    let (left, top, nw, nh) = content_box(w, h, target);
    let resized = pil_resize_rgb(image, nw as usize, nh as usize, PilFilter::Lanczos)
        .map_err(|e| MllmError::Image(format!("letterbox: {e}")))?;
    let mut canvas = RgbImage::from_pixel(target.1 as u32, target.0 as u32, Rgb([255, 255, 255]));
    imageops::replace(&mut canvas, &resized, left as i64, top as i64);
    Ok(canvas)
}

/// `unpad_and_resize_back`: crop the content region of an image generated at the anchor
/// and resize it to the original `width × height`.
pub fn unpad_and_resize_back(padded: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(MllmError::Image(format!(
            "cannot restore an edit to an empty size ({width}x{height})"
        )));
    }
    let target = (padded.height() as usize, padded.width() as usize);
    let (left, top, nw, nh) = content_box(width, height, target);
    let cropped = imageops::crop_imm(padded, left, top, nw, nh).to_image();
    pil_resize_rgb(&cropped, width, height, PilFilter::Lanczos)
        .map_err(|e| MllmError::Image(format!("restoring the edit to {width}x{height}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_the_aspect_ratio() {
        assert_eq!(nearest_anchor(1000, 1000, &ANCHORS), (512, 512));
        assert_eq!(nearest_anchor(640, 480, &ANCHORS), (384, 512));
        assert_eq!(nearest_anchor(480, 640, &ANCHORS), (512, 384));
        assert_eq!(nearest_anchor(1920, 600, &ANCHORS), (320, 960));
        assert_eq!(nearest_anchor(100, 2000, &ANCHORS), (1024, 256));
    }

    #[test]
    fn letterbox_then_unpad_restores_the_geometry() {
        let image = RgbImage::from_fn(300, 150, |x, _| Rgb([(x % 256) as u8, 0, 0]));
        let anchor = nearest_anchor(300, 150, &ANCHORS);
        assert_eq!(anchor, (384, 768));
        let boxed = letterbox(&image, anchor).unwrap();
        assert_eq!((boxed.width(), boxed.height()), (768, 384));
        // 300x150 scaled by 2.56 fills the anchor exactly: no padding.
        assert_eq!(*boxed.get_pixel(0, 0), *boxed.get_pixel(0, 383));
        let square = letterbox(&RgbImage::from_pixel(100, 80, Rgb([0, 0, 0])), (512, 512)).unwrap();
        assert_eq!(
            *square.get_pixel(256, 10),
            Rgb([255, 255, 255]),
            "white bars above"
        );
        assert_eq!(*square.get_pixel(256, 256), Rgb([0, 0, 0]));
        let back = unpad_and_resize_back(&square, 100, 80).unwrap();
        assert_eq!((back.width(), back.height()), (100, 80));
        assert!(
            back.pixels().all(|p| p.0[0] < 8),
            "the white bars were cropped away"
        );
    }
}
