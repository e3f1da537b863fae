//! Typed requests of the pipeline's tasks, each validated before any model loads.

use std::time::Duration;

use illume_diffusion::resolution::resolution_index;
use illume_diffusion::scheduler::MAX_STEPS;
use illume_diffusion::{CodePrecision, DecodeOptions, ImageSize};
use illume_dualvitok::DualTokens;
use illume_mllm::vocab::{is_resolution_side, MAX_RESOLUTION, RESOLUTION_STEP};
use illume_mllm::{ImageRequest, Prompt, TextRequest, Turn};
use image::RgbImage;

use super::PipelineError;

/// How image tokens become pixels.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decoder {
    /// DualViTok's pixel decoder, at the token image's size.
    Pixel,
    /// The SDXL diffusion decoder, by default at twice the token image's size.
    Diffusion(DiffusionSettings),
}

/// Settings of the diffusion decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionSettings {
    /// Steps, guidance, seed of the initial latents, output size, VAE strips.
    pub options: DecodeOptions,
    /// Precision of the DualViTok code map (f16 as the official pipeline).
    pub code_precision: CodePrecision,
    /// Send a low-cost picture of the latents with every step event.
    pub latent_preview: bool,
}

impl Default for DiffusionSettings {
    /// The official demos: 20 steps, guidance 1.5, f16 code map.
    fn default() -> Self {
        Self {
            options: DecodeOptions::default(),
            code_precision: CodePrecision::Float16,
            latent_preview: false,
        }
    }
}

/// Text-to-image.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GenerateRequest {
    pub prompt: String,
    /// Size, CFG, per-level sampling and seed of the MLLM (image `i` of `count` uses the
    /// seed + `i`).
    pub image: ImageRequest,
    /// How many images (1 to [`MAX_IMAGES`]).
    pub count: usize,
    pub decoder: Decoder,
    /// Send [`super::Event::Preview`]s of the grids so far, at most this often (`None`:
    /// none). Each decodes the whole grid with the pixel decoder: on a CPU that costs about
    /// as much as the final decode, so keep it seconds apart there.
    pub preview_every: Option<Duration>,
}

/// The most images one request may ask for.
pub const MAX_IMAGES: usize = 16;

impl GenerateRequest {
    /// One image of `prompt` at `height × width` with the official settings, pixel decoder.
    pub fn new(prompt: impl Into<String>, height: usize, width: usize) -> Self {
        Self {
            prompt: prompt.into(),
            image: ImageRequest::text_to_image(height, width),
            count: 1,
            decoder: Decoder::Pixel,
            preview_every: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        check_size(self.image.height, self.image.width)?;
        if !(1..=MAX_IMAGES).contains(&self.count) {
            return Err(invalid(
                "count",
                format!("{} images: ask for 1 to {MAX_IMAGES}", self.count),
            ));
        }
        check_sampling(&self.image)?;
        if self.image.negative_prompt.is_some() && self.image.guidance <= 1.0 {
            return Err(invalid(
                "negative_prompt",
                "needs a CFG scale above 1: at 1 the unconditional stream it replaces does not run",
            ));
        }
        check_decoder(&self.decoder)?;
        if let Decoder::Diffusion(settings) = &self.decoder {
            if settings.options.size.is_none() {
                // Rendered at twice the token image: that size must be a trained one.
                let twice = ImageSize::new(2 * self.image.width, 2 * self.image.height);
                resolution_index(twice).map_err(|e| invalid("size", e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Editing an image following an instruction.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EditRequest {
    pub image: RgbImage,
    pub instruction: String,
    /// CFG and sampling; the size is the input's nearest anchor, not these fields.
    pub sampling: ImageRequest,
    pub decoder: Decoder,
    /// As [`GenerateRequest::preview_every`].
    pub preview_every: Option<Duration>,
}

impl EditRequest {
    /// The official editing settings (CFG 1.5, temperature 0.7, top-k 512, top-p 0.8).
    pub fn new(image: RgbImage, instruction: impl Into<String>) -> Self {
        Self {
            image,
            instruction: instruction.into(),
            sampling: ImageRequest::editing(),
            decoder: Decoder::Pixel,
            preview_every: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        check_input_image("image", &self.image)?;
        check_sampling(&self.sampling)?;
        if self.sampling.negative_prompt.is_some() {
            return Err(invalid(
                "negative_prompt",
                "applies to text-to-image; editing's unconditional prompt is the official \
                 \"reconstruct the image\"",
            ));
        }
        check_decoder(&self.decoder)
    }
}

/// A question about one or more images (`<image>\n` per image, then the question).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UnderstandRequest {
    pub images: Vec<RgbImage>,
    pub question: String,
    pub text: TextRequest,
}

impl UnderstandRequest {
    /// Greedy, up to 1024 new tokens (the official evaluation).
    pub fn new(image: RgbImage, question: impl Into<String>) -> Self {
        Self::with_images(vec![image], question)
    }

    /// A question about several images at once.
    pub fn with_images(images: Vec<RgbImage>, question: impl Into<String>) -> Self {
        Self {
            images,
            question: question.into(),
            text: TextRequest::default(),
        }
    }

    /// The one-turn conversation this question is.
    pub(crate) fn turns(&self) -> Vec<Turn> {
        vec![Turn::user(self.question.clone(), self.images.len())]
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        if self.images.is_empty() {
            return Err(invalid(
                "images",
                "an understanding question needs an image",
            ));
        }
        for image in &self.images {
            check_input_image("images", image)?;
        }
        check_text(&self.text)
    }
}

fn check_text(text: &TextRequest) -> Result<(), PipelineError> {
    if text.max_new_tokens == 0 {
        return Err(invalid("max_new_tokens", "must be at least 1"));
    }
    let s = text.sampling;
    if !(s.temperature.is_finite() && s.temperature > 0.0) {
        return Err(invalid(
            "temperature",
            format!("{}: must be a finite number > 0", s.temperature),
        ));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(invalid("top_p", format!("{}: must be in (0, 1]", s.top_p)));
    }
    Ok(())
}

/// The next answer of a multi-turn conversation (`conv_qwen2`, as the official chat).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The turns so far, ending with the user's; user turns say how many images they hold.
    pub turns: Vec<Turn>,
    /// The images of every turn, in order.
    pub images: Vec<RgbImage>,
    pub text: TextRequest,
}

impl ChatRequest {
    pub fn new(turns: Vec<Turn>, images: Vec<RgbImage>) -> Self {
        Self {
            turns,
            images,
            text: TextRequest::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        Prompt::chat(&self.turns).map_err(|e| invalid("turns", e.to_string()))?;
        let places: usize = self.turns.iter().map(|t| t.images).sum();
        if places != self.images.len() {
            return Err(invalid(
                "images",
                format!(
                    "{} images for {places} image places in the turns",
                    self.images.len()
                ),
            ));
        }
        for image in &self.images {
            check_input_image("images", image)?;
        }
        check_text(&self.text)
    }
}

/// An image rendered 2x by the diffusion decoder from its DualViTok tokens.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UpscaleRequest {
    pub image: RgbImage,
    /// `options.size` is the output size (one of the decoder's trained resolutions; `None`:
    /// the one nearest to the image's aspect ratio); the image is tokenized at half of it.
    pub diffusion: DiffusionSettings,
}

impl UpscaleRequest {
    pub fn new(image: RgbImage) -> Self {
        Self {
            image,
            diffusion: DiffusionSettings::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        check_input_image("image", &self.image)?;
        check_diffusion(&self.diffusion)
    }
}

/// Given token grids (e.g. `tokenize --json` output) rendered to an image.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DecodeRequest {
    pub tokens: DualTokens,
    pub decoder: Decoder,
}

impl DecodeRequest {
    pub fn new(tokens: DualTokens, decoder: Decoder) -> Self {
        Self { tokens, decoder }
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        for (name, grid) in [
            ("tokens.semantic", &self.tokens.semantic),
            ("tokens.pixel", &self.tokens.pixel),
        ] {
            let [h, w] = grid.shape;
            if h == 0 || w == 0 || h.checked_mul(w) != Some(grid.indices.len()) {
                return Err(invalid(
                    name,
                    format!(
                        "shape {h}x{w} does not hold its {} indices",
                        grid.indices.len()
                    ),
                ));
            }
        }
        check_decoder(&self.decoder)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> PipelineError {
    PipelineError::InvalidRequest {
        field,
        reason: reason.into(),
    }
}

fn check_size(height: usize, width: usize) -> Result<(), PipelineError> {
    if is_resolution_side(height) && is_resolution_side(width) {
        return Ok(());
    }
    Err(invalid(
        "size",
        format!(
            "{width}x{height}: width and height must be multiples of {RESOLUTION_STEP} from \
             {RESOLUTION_STEP} to {MAX_RESOLUTION}"
        ),
    ))
}

fn check_input_image(field: &'static str, image: &RgbImage) -> Result<(), PipelineError> {
    if image.width() == 0 || image.height() == 0 {
        return Err(invalid(field, "the image is empty (0 pixels)"));
    }
    Ok(())
}

fn check_sampling(request: &ImageRequest) -> Result<(), PipelineError> {
    request
        .validate()
        .map_err(|e| invalid("sampling", e.to_string()))
}

fn check_decoder(decoder: &Decoder) -> Result<(), PipelineError> {
    match decoder {
        Decoder::Pixel => Ok(()),
        Decoder::Diffusion(settings) => check_diffusion(settings),
    }
}

fn check_diffusion(settings: &DiffusionSettings) -> Result<(), PipelineError> {
    let o = &settings.options;
    if !(1..=MAX_STEPS).contains(&o.steps) {
        return Err(invalid(
            "diffusion.steps",
            format!("{}: must be 1 to {MAX_STEPS}", o.steps),
        ));
    }
    if !(o.guidance_scale.is_finite() && o.guidance_scale >= 1.0) {
        return Err(invalid(
            "diffusion.guidance",
            format!(
                "{}: must be a finite number >= 1 (1 turns guidance off)",
                o.guidance_scale
            ),
        ));
    }
    if let Some(size) = o.size {
        resolution_index(size).map_err(|e| invalid("diffusion.size", e.to_string()))?;
    }
    if let Some(tiling) = o.vae_tiling {
        if tiling.strip_bytes == 0 {
            return Err(invalid("diffusion.vae_tiling", "strips of 0 bytes"));
        }
    }
    Ok(())
}

/// The output size of an upscale: the given one, or the nearest trained aspect ratio.
pub(crate) fn upscale_size(request: &UpscaleRequest) -> ImageSize {
    request.diffusion.options.size.unwrap_or_else(|| {
        illume_diffusion::resolution::nearest_aspect(
            request.image.width() as usize,
            request.image.height() as usize,
        )
    })
}
