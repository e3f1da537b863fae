//! `POST /v1/images/generations` and `POST /v1/images/edits`: images out as base64 PNG
//! (`b64_json`), with the ILLUME+ extensions (seed, negative prompt, guidance, decoder,
//! steps).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{decode_image, png_base64};
use super::{jobs, unix_now, AppState};
use crate::diffusion::ImageSize;
use crate::mllm::editing::ANCHORS;
use crate::mllm::Decoding;
use crate::pipeline::{
    Decoder, DiffusionSettings, EditRequest, GenerateRequest, GeneratedImage, ImageFormat,
    MAX_IMAGES,
};

#[derive(Debug, Default, Deserialize)]
pub struct GenerationRequest {
    prompt: String,
    n: Option<usize>,
    size: Option<String>,
    response_format: Option<String>,
    #[serde(flatten)]
    extensions: Extensions,
}

/// The ILLUME+ knobs beyond OpenAI's fields.
#[derive(Debug, Default, Deserialize)]
struct Extensions {
    seed: Option<u64>,
    negative_prompt: Option<String>,
    /// The MLLM's classifier-free guidance (default 2.0 for generation, 1.5 for edits).
    guidance_scale: Option<f32>,
    /// `pixel` (DualViTok's decoder, the default) or `diffusion` (the SDXL decoder, which
    /// renders twice the token size).
    decoder: Option<String>,
    /// Denoising steps of the diffusion decoder (default 20).
    steps: Option<usize>,
}

/// The sizes (WxH) the pixel decoder serves: the trained anchors and 256x256.
fn pixel_sizes() -> Vec<String> {
    let mut sizes: Vec<String> = ANCHORS.iter().map(|(h, w)| format!("{w}x{h}")).collect();
    sizes.push("256x256".into());
    sizes
}

/// The sizes (WxH) the diffusion decoder serves: its trained resolutions whose half is a
/// size the MLLM generates.
fn diffusion_sizes() -> Vec<String> {
    crate::diffusion::RESOLUTIONS
        .iter()
        .filter(|s| pixel_sizes().contains(&format!("{}x{}", s.width / 2, s.height / 2)))
        .map(|s| format!("{}x{}", s.width, s.height))
        .collect()
}

/// The decoder a request asks for.
fn decoder(extensions: &Extensions, seed: u64) -> Result<Decoder, ApiError> {
    match extensions.decoder.as_deref().unwrap_or("pixel") {
        "pixel" => {
            if extensions.steps.is_some() {
                return Err(ApiError::invalid(
                    "steps",
                    "steps apply to the diffusion decoder: add \"decoder\": \"diffusion\"",
                ));
            }
            Ok(Decoder::Pixel)
        }
        "diffusion" => {
            let mut settings = DiffusionSettings::default();
            settings.options.seed = seed;
            if let Some(steps) = extensions.steps {
                settings.options.steps = steps;
            }
            Ok(Decoder::Diffusion(settings))
        }
        other => Err(ApiError::invalid(
            "decoder",
            format!("`{other}`: pixel or diffusion"),
        )),
    }
}

/// `size` "WxH" → the token image's `(height, width)` for `decoder`.
fn token_size(size: Option<&str>, decoder: &Decoder) -> Result<(usize, usize), ApiError> {
    let diffusion = matches!(decoder, Decoder::Diffusion(_));
    let (default, supported) = if diffusion {
        ("1024x1024", diffusion_sizes())
    } else {
        ("512x512", pixel_sizes())
    };
    let size = size.unwrap_or(default);
    if !supported.iter().any(|s| s == size) {
        return Err(ApiError::invalid(
            "size",
            format!(
                "`{size}` is not served{}: one of {}",
                if diffusion {
                    " by the diffusion decoder"
                } else {
                    ""
                },
                supported.join(", ")
            ),
        ));
    }
    let (w, h) = size.split_once('x').expect("a listed size");
    let (w, h): (usize, usize) = (w.parse().expect("digits"), h.parse().expect("digits"));
    Ok(if diffusion { (h / 2, w / 2) } else { (h, w) })
}

fn check_count(n: Option<usize>) -> Result<usize, ApiError> {
    let n = n.unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("{n}: ask for 1 to {MAX_IMAGES} images"),
        ));
    }
    Ok(n)
}

fn check_format(format: Option<&str>) -> Result<(), ApiError> {
    match format.unwrap_or("b64_json") {
        "b64_json" => Ok(()),
        "url" => Err(ApiError::invalid(
            "response_format",
            "`url` is not served (the server keeps no files): use b64_json",
        )),
        other => Err(ApiError::invalid(
            "response_format",
            format!("`{other}`: b64_json"),
        )),
    }
}

/// The OpenAI images response: each image as base64 PNG with its parameters in text chunks.
fn response(images: &[GeneratedImage]) -> Result<Json<Value>, ApiError> {
    let mut data = Vec::with_capacity(images.len());
    for image in images {
        let png = image.encode(ImageFormat::Png)?;
        data.push(json!({ "b64_json": png_base64(&png) }));
    }
    Ok(Json(json!({ "created": unix_now(), "data": data })))
}

pub async fn generations(
    State(state): State<Arc<AppState>>,
    body: Result<Json<GenerationRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    check_format(body.response_format.as_deref())?;
    let count = check_count(body.n)?;
    let seed = body.extensions.seed.unwrap_or(42);
    let decoder = decoder(&body.extensions, seed)?;
    let (h, w) = token_size(body.size.as_deref(), &decoder)?;
    let mut request = GenerateRequest::new(body.prompt, h, w);
    request.count = count;
    request.decoder = decoder;
    request.image.decoding = Decoding::Sample { seed };
    request.image.negative_prompt = body.extensions.negative_prompt;
    if let Some(g) = body.extensions.guidance_scale {
        request.image.guidance = g;
    }
    let place = state.queue.admit()?;
    let images = jobs::run(state.clone(), place, move |pipeline, events| {
        pipeline.generate(&request, events)
    })
    .await?;
    for image in &images {
        state
            .metrics
            .generated(image.generated_tokens, image.generation_seconds);
    }
    response(&images)
}

/// The text fields of an edit's multipart form.
#[derive(Default)]
struct EditForm {
    image: Option<Vec<u8>>,
    prompt: Option<String>,
    n: Option<usize>,
    size: Option<String>,
    response_format: Option<String>,
    extensions: Extensions,
}

async fn read_form(mut multipart: Multipart) -> Result<EditForm, ApiError> {
    let mut form = EditForm::default();
    let bad = |name: &str, e: String| ApiError::invalid(name.to_string(), e);
    while let Some(field) = multipart.next_field().await.map_err(|e| {
        let status = e.status();
        let mut error =
            ApiError::invalid("body", format!("not a multipart form: {}", e.body_text()));
        error.status = status;
        error
    })? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "image" || name == "image[]" {
            if form.image.is_some() {
                return Err(bad("image", "one image per edit".into()));
            }
            let bytes = field
                .bytes()
                .await
                .map_err(|e| bad("image", e.body_text()))?;
            form.image = Some(bytes.to_vec());
            continue;
        }
        let text = field.text().await.map_err(|e| bad(&name, e.body_text()))?;
        let number = |text: &str| -> Result<u64, ApiError> {
            text.trim()
                .parse()
                .map_err(|_| bad(&name, format!("`{text}` is not a whole number")))
        };
        match name.as_str() {
            "prompt" => form.prompt = Some(text),
            "n" => form.n = Some(number(&text)? as usize),
            "size" => form.size = Some(text),
            "response_format" => form.response_format = Some(text),
            "seed" => form.extensions.seed = Some(number(&text)?),
            "negative_prompt" => form.extensions.negative_prompt = Some(text),
            "guidance_scale" => {
                form.extensions.guidance_scale = Some(
                    text.trim()
                        .parse()
                        .map_err(|_| bad(&name, format!("`{text}` is not a number")))?,
                )
            }
            "decoder" => form.extensions.decoder = Some(text),
            "steps" => form.extensions.steps = Some(number(&text)? as usize),
            "mask" => {
                return Err(bad(
                    "mask",
                    "masks are not supported: the instruction says what to edit".into(),
                ))
            }
            // model, user, quality, ...: accepted and ignored.
            _ => {}
        }
    }
    Ok(form)
}

pub async fn edits(
    State(state): State<Arc<AppState>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let multipart = multipart.map_err(|e| {
        let mut error = ApiError::invalid("body", e.body_text());
        error.status = e.status();
        error
    })?;
    let form = read_form(multipart).await?;
    check_format(form.response_format.as_deref())?;
    let count = check_count(form.n)?;
    let bytes = form
        .image
        .ok_or_else(|| ApiError::invalid("image", "the form needs an `image` file"))?;
    let prompt = form
        .prompt
        .ok_or_else(|| ApiError::invalid("prompt", "the form needs a `prompt`"))?;
    let image = decode_image(&bytes, state.config.max_image_pixels, "image")?;
    let seed = form.extensions.seed.unwrap_or(42);
    let decoder = decoder(&form.extensions, seed)?;
    // The edit comes back at the input's size unless a served size is asked for.
    let resize = match form.size.as_deref() {
        Some(size) => {
            let (h, w) = token_size(Some(size), &Decoder::Pixel)?;
            Some(ImageSize::new(w, h))
        }
        None => None,
    };
    if form.extensions.negative_prompt.is_some() {
        return Err(ApiError::invalid(
            "negative_prompt",
            "applies to generations; an edit's unconditional prompt is the official one",
        ));
    }
    let mut requests = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let mut request = EditRequest::new(image.clone(), prompt.clone());
        request.decoder = decoder.clone();
        request.sampling.decoding = Decoding::Sample { seed: seed + i };
        if let Some(g) = form.extensions.guidance_scale {
            request.sampling.guidance = g;
        }
        requests.push(request);
    }
    let place = state.queue.admit()?;
    let mut images = jobs::run(state.clone(), place, move |pipeline, events| {
        requests
            .iter()
            .map(|request| pipeline.edit(request, events))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    for image in &mut images {
        state
            .metrics
            .generated(image.generated_tokens, image.generation_seconds);
        if let Some(size) = resize {
            image.image = image::imageops::resize(
                &image.image,
                size.width as u32,
                size.height as u32,
                image::imageops::FilterType::Lanczos3,
            );
            // The file's parameters say the size it has now.
            for (key, value) in &mut image.metadata {
                if key == "illume.output_size" {
                    *value = format!("{}x{}", size.width, size.height);
                }
            }
        }
    }
    response(&images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_trained_ones_and_diffusion_renders_twice() {
        assert_eq!(token_size(None, &Decoder::Pixel).unwrap(), (512, 512));
        assert_eq!(
            token_size(Some("768x384"), &Decoder::Pixel).unwrap(),
            (384, 768)
        );
        let err = token_size(Some("640x480"), &Decoder::Pixel).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("size"));
        assert!(
            err.message.contains("512x512") && err.message.contains("256x256"),
            "{}",
            err.message
        );
        let diffusion = Decoder::Diffusion(DiffusionSettings::default());
        assert_eq!(
            token_size(Some("1024x1024"), &diffusion).unwrap(),
            (512, 512)
        );
        assert_eq!(token_size(Some("512x512"), &diffusion).unwrap(), (256, 256));
        assert!(token_size(Some("2048x512"), &diffusion).is_ok());
        assert!(token_size(Some("768x384"), &diffusion).is_err());
    }
}
