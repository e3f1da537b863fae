//! A low-cost picture of the latents while the decoder denoises: each latent pixel mapped to
//! RGB by a fixed linear fit of the SDXL VAE decoder, one output pixel per 8x8 of the image.
//! No VAE call, so it costs a copy of the latents per step.

use burn::tensor::{backend::Backend, DType, Tensor};
use image::RgbImage;

/// Latent channel → (R, G, B) weights and the bias of the fit, in the model's latent space
/// (the VAE's latents times its scaling factor, as the denoising loop holds them). These are
/// the factors ComfyUI's SDXL previews use.
const SDXL_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
const SDXL_LATENT_RGB_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// `[1, 4, h, w]` latents → an `w × h` RGB picture; `None` for latents of another channel
/// count (the fit is for SDXL's 4 channels).
pub fn latent_preview<B: Backend>(latents: &Tensor<B, 4>) -> Option<RgbImage> {
    let [_, channels, h, w] = latents.dims();
    if channels != SDXL_LATENT_RGB.len() {
        return None;
    }
    let values = latents
        .clone()
        .slice([0..1, 0..channels, 0..h, 0..w])
        .cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .ok()?;
    Some(latents_to_rgb(&values, h, w))
}

/// Channel-major `[4, h, w]` values → RGB, `[-1, 1]` mapped to `[0, 255]`.
fn latents_to_rgb(values: &[f32], h: usize, w: usize) -> RgbImage {
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = y as usize * w + x as usize;
        let mut rgb = SDXL_LATENT_RGB_BIAS;
        for (c, weights) in SDXL_LATENT_RGB.iter().enumerate() {
            let v = values[c * plane + at];
            for (out, weight) in rgb.iter_mut().zip(weights) {
                *out += v * weight;
            }
        }
        image::Rgb(rgb.map(|v| ((v + 1.0) * 127.5).clamp(0.0, 255.0).round() as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_latents_show_the_bias_and_one_channel_its_weights() {
        let (h, w) = (2, 3);
        let zero = latents_to_rgb(&vec![0.0; 4 * h * w], h, w);
        assert_eq!(zero.dimensions(), (3, 2));
        // (bias + 1) · 127.5: 0.1084 → 141.32, -0.0175 → 125.27, -0.0011 → 127.36.
        assert!(zero.pixels().all(|p| p.0 == [141, 125, 127]));
        // Channel 0 at 1.0 in pixel (x 1, y 0) only: bias + the first row of weights.
        let mut values = vec![0.0; 4 * h * w];
        values[1] = 1.0;
        let one = latents_to_rgb(&values, h, w);
        // (0.3651 + 0.1084 + 1) · 127.5 = 187.87; (0.4232 - 0.0175 + 1) · 127.5 = 179.23;
        // (0.4341 - 0.0011 + 1) · 127.5 = 182.71.
        assert_eq!(one.get_pixel(1, 0).0, [188, 179, 183]);
        assert_eq!(one.get_pixel(0, 0).0, [141, 125, 127]);
        // Far outside [-1, 1] clamps: all channels 10 give R (-0.0971 · 10 + 0.1084 + 1)
        // · 127.5 = 17.5, G and B past 255.
        let bright = latents_to_rgb(&[10.0; 4], 1, 1);
        let dark = latents_to_rgb(&[-10.0, 10.0, -10.0, 10.0], 1, 1);
        assert_eq!(bright.get_pixel(0, 0).0, [18, 255, 255]);
        assert_eq!(dark.get_pixel(0, 0).0, [0, 0, 0]);
    }
}
