//! Images that arrive in requests: data URLs with base64 PNG/JPEG/WebP, multipart files;
//! size-checked before they are decoded.

use std::io::Cursor;

use base64::Engine;
use image::{ImageFormat, ImageReader, RgbImage};

use super::error::ApiError;

/// The formats accepted in requests.
const ACCEPTED: [ImageFormat; 3] = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP];

/// `data:image/png;base64,...` → the image. Any other URL is refused: the server fetches
/// nothing.
pub fn image_from_url(url: &str, max_pixels: u64, param: &str) -> Result<RgbImage, ApiError> {
    let Some(rest) = url.strip_prefix("data:") else {
        let scheme = url.split(':').next().unwrap_or_default();
        return Err(ApiError::invalid(
            param,
            format!(
                "only data: URLs are accepted (data:image/png;base64,...); this server fetches \
                 nothing, so a {scheme}: URL cannot be used"
            ),
        )
        .with_code("invalid_image_url"));
    };
    let (header, payload) = rest.split_once(',').ok_or_else(|| {
        ApiError::invalid(param, "a data: URL needs a `,` before its data")
            .with_code("invalid_image_url")
    })?;
    if !header.ends_with(";base64") {
        return Err(ApiError::invalid(
            param,
            "the data: URL must be base64 (data:image/png;base64,...)",
        )
        .with_code("invalid_image_url"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| {
            ApiError::invalid(param, format!("the image data is not valid base64: {e}"))
                .with_code("invalid_base64")
        })?;
    decode_image(&bytes, max_pixels, param)
}

/// PNG, JPEG or WebP bytes → RGB, refusing images above `max_pixels` before decoding.
pub fn decode_image(bytes: &[u8], max_pixels: u64, param: &str) -> Result<RgbImage, ApiError> {
    let bad = |reason: String| ApiError::invalid(param, reason).with_code("invalid_image");
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("unreadable image: {e}")))?;
    match reader.format() {
        Some(format) if ACCEPTED.contains(&format) => {}
        Some(format) => {
            return Err(bad(format!(
                "{format:?} images are not accepted: send PNG, JPEG or WebP"
            )))
        }
        None => return Err(bad("not a PNG, JPEG or WebP image".into())),
    }
    let (w, h) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .and_then(|r| r.into_dimensions().map_err(std::io::Error::other))
        .map_err(|e| bad(format!("unreadable image: {e}")))?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(bad(format!(
            "{w}x{h} is more than the server's limit of {max_pixels} pixels"
        )));
    }
    let image = reader
        .decode()
        .map_err(|e| bad(format!("unreadable image: {e}")))?;
    Ok(image.to_rgb8())
}

/// PNG bytes of `image`, base64 (the `b64_json` of a response).
pub fn png_base64(png: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(png)
}
