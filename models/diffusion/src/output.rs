//! Decoded tensors to 8-bit RGB as diffusers' `VaeImageProcessor.postprocess` computes
//! them, and PNG files that carry the generation parameters as text chunks.

use std::path::Path;

use burn::tensor::{backend::Backend, DType, Tensor};
use image::RgbImage;

use crate::error::DiffusionError;

/// `round(255 · clamp(x/2 + 0.5, 0, 1))` (numpy rounds half to even), `[1, 3, h, w]` → RGB.
pub fn to_rgb<B: Backend>(decoded: Tensor<B, 4>) -> RgbImage {
    let [_, c, h, w] = decoded.dims();
    assert_eq!(c, 3, "an RGB image has 3 channels");
    let unit = decoded
        .slice([0..1, 0..3, 0..h, 0..w])
        .cast(DType::F32)
        .div_scalar(2.0)
        .add_scalar(0.5)
        .clamp(0.0, 1.0);
    let values = unit
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 image");
    let plane = h * w;
    let mut rgb = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for ch in 0..3 {
            rgb.push((values[ch * plane + i] * 255.0).round_ties_even() as u8);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, rgb).expect("buffer of the image's size")
}

/// Write `image` as PNG with one text chunk per `(keyword, text)`: `tEXt` when the text is
/// Latin-1, `iTXt` (UTF-8) otherwise (e.g. a prompt in another script).
pub fn write_png(
    path: &Path,
    image: &RgbImage,
    text: &[(String, String)],
) -> Result<(), DiffusionError> {
    illume_dualvitok::image_io::write_atomically(path, |file| encode_png_to(file, image, text))
        .map_err(|reason| DiffusionError::Output {
            path: path.to_path_buf(),
            reason,
        })
}

/// [`write_png`]'s bytes, in memory.
pub fn encode_png(image: &RgbImage, text: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    encode_png_to(&mut bytes, image, text)?;
    Ok(bytes)
}

fn encode_png_to(
    out: impl std::io::Write,
    image: &RgbImage,
    text: &[(String, String)],
) -> Result<(), String> {
    let mut encoder = png::Encoder::new(out, image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (keyword, value) in text {
        let added = if value.chars().all(|c| (c as u32) < 0x100) {
            encoder.add_text_chunk(keyword.clone(), value.clone())
        } else {
            encoder.add_itxt_chunk(keyword.clone(), value.clone())
        };
        added.map_err(|e| e.to_string())?;
    }
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(image.as_raw())
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_keeps_text_chunks() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let path = std::env::temp_dir().join(format!("illume-png-{}.png", std::process::id()));
        let text = vec![
            ("illume:steps".to_string(), "20".to_string()),
            ("illume:prompt".to_string(), "一只猫".to_string()),
        ];
        write_png(&path, &image, &text).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        let latin1 = &reader.info().uncompressed_latin1_text;
        assert_eq!(latin1[0].keyword, "illume:steps");
        assert_eq!(latin1[0].text, "20");
        let utf8 = &reader.info().utf8_text;
        assert_eq!(utf8[0].keyword, "illume:prompt");
        assert_eq!(utf8[0].get_text().unwrap(), "一只猫");
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, image);
        std::fs::remove_file(path).ok();
    }
}
