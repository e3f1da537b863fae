//! [`IllumeMllm`]: the whole ILLUME+ MLLM loaded from its checkpoint directory, with the
//! three tasks of the official demo: understanding, text-to-image and editing.
//!
//! The output of text-to-image and editing is the image's token grids
//! ([`illume_dualvitok::DualTokens`]); DualViTok's pixel decoder (or the diffusion decoder)
//! turns them into pixels.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor};
use illume_backends::{DeviceLimits, IllumeBackend};
use illume_dualvitok::{DualTokens, DualViTokConfig, TokenGrid};
use illume_weights::{Checkpoint, LoadOptions};
use image::RgbImage;

use crate::config::{GenerationConfig, MllmConfig};
use crate::decoder::LanguageModel;
use crate::editing;
use crate::error::{MllmError, Result};
use crate::generate::{generate, CfgMode, Decoding, GenerateOptions, Observer};
use crate::processor::{Chain, ImageGrid, LevelSampling, LogitsProcessor};
use crate::projector::{self, MixedProjector};
use crate::sampling::SamplingParams;
use crate::splice;
use crate::text::{Prompt, TextTokenizer, Turn};
use crate::vision::{self, DualVisionTower};
use crate::vocab::VocabLayout;
use crate::vocab_shards::default_rows_per_shard;

/// How an image is generated (text-to-image and editing).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    /// Output size for text-to-image (editing uses the input's anchor). Multiples of 64 up
    /// to 1024; the model was trained on [`editing::ANCHORS`] and 256×256.
    pub height: usize,
    pub width: usize,
    /// Classifier-free guidance scale (1 disables the unconditional stream).
    pub guidance: f32,
    pub chain: Chain,
    /// Text-mode, level-0 and level-1 sampling.
    pub sampling: LevelSampling,
    pub decoding: Decoding,
    pub cfg_mode: CfgMode,
    /// Text-to-image only: what the unconditional CFG stream describes instead of "a random
    /// image". The official `InferenceConfig.unconditional_prompt` replaces the
    /// unconditional user message (HF: `negative_image_prompt_ids`); a negative prompt here
    /// is that message in the conditional prompt's own words (`Generate an image of
    /// <tag>, the content of image is {negative}`), so guidance steers away from it.
    pub negative_prompt: Option<String>,
}

impl ImageRequest {
    /// The official text-to-image settings (`inference_text_to_image.sh`, app tips):
    /// CFG 2.0, temperature 1.0, top-k 2048 (level 1: 6144), top-p 1.0, sampled with seed
    /// 42, the evaluation chain with `<start_of_image>` forced.
    pub fn text_to_image(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            guidance: 2.0,
            chain: Chain::Eval {
                force_image_start: true,
            },
            sampling: LevelSampling::from_global(SamplingParams::new(1.0, 2048, 1.0)),
            decoding: Decoding::Sample { seed: 42 },
            cfg_mode: CfgMode::Batched,
            negative_prompt: None,
        }
    }

    /// The official editing settings (app tips / notebook): CFG 1.5, temperature 0.7,
    /// top-k 512 (level 1: 1536), top-p 0.8.
    pub fn editing() -> Self {
        Self {
            guidance: 1.5,
            sampling: LevelSampling::from_global(SamplingParams::new(0.7, 512, 0.8)),
            ..Self::text_to_image(512, 512)
        }
    }

    /// Refuse sampling values that would silently mean something else: a temperature
    /// that is not finite or not > 0, a top-p outside (0, 1], a CFG scale below 1 or NaN.
    pub fn validate(&self) -> Result<()> {
        let p = [
            self.sampling.text,
            self.sampling.level0,
            self.sampling.level1,
        ];
        let invalid = |p: &SamplingParams| {
            !p.temperature.is_finite()
                || p.temperature <= 0.0
                || p.top_p.is_nan()
                || p.top_p <= 0.0
                || p.top_p > 1.0
        };
        if p.iter().any(invalid) {
            return Err(MllmError::Generation(
                "temperatures must be > 0 and top-p in (0, 1]".into(),
            ));
        }
        if !self.guidance.is_finite() || self.guidance < 1.0 {
            return Err(MllmError::Generation(format!(
                "the CFG scale must be >= 1 (got {})",
                self.guidance
            )));
        }
        Ok(())
    }
}

/// How text is generated for understanding.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRequest {
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// Temperature/top-k/top-p when sampling.
    pub sampling: SamplingParams,
}

impl Default for TextRequest {
    /// Greedy, up to 1024 new tokens (the official notebook and lmms-eval).
    fn default() -> Self {
        Self {
            max_new_tokens: 1024,
            decoding: Decoding::Greedy,
            sampling: SamplingParams::new(0.7, 20, 0.8),
        }
    }
}

/// A generated image as token grids, with where it was generated.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    pub tokens: DualTokens,
    /// Every generated id (structure tokens included).
    pub ids: Vec<u32>,
    /// `(height, width)` the image was generated at (the decoder's output size).
    pub size: (usize, usize),
}

/// The ILLUME+ MLLM.
#[derive(Debug)]
pub struct IllumeMllm<B: Backend> {
    pub config: MllmConfig,
    pub generation_config: GenerationConfig,
    pub tokenizer: TextTokenizer,
    pub layout: VocabLayout,
    pub lm: LanguageModel<B>,
    pub vision_tower: DualVisionTower<B>,
    pub projector: MixedProjector<B>,
    device: B::Device,
}

impl<B: IllumeBackend> IllumeMllm<B> {
    /// Load a checkpoint directory (`config.json`, `generation_config.json`,
    /// `tokenizer.json`, `model.safetensors` or a sharded index). `vision` is the DualViTok
    /// architecture the vision tower is built with (its weights come from this checkpoint)
    /// and whose codebook sizes place the image codes when the tokenizer does not list them.
    pub fn load(dir: &Path, vision: &DualViTokConfig, device: &B::Device) -> Result<Self> {
        check_dir(dir)?;
        let config = MllmConfig::from_dir(dir)?;
        let rows = default_rows_per_shard(config.decoder.hidden_size);
        Self::load_with_shards(dir, vision, rows, device)
    }

    /// [`IllumeMllm::load`] with an explicit number of vocabulary rows per shard.
    pub fn load_with_shards(
        dir: &Path,
        vision: &DualViTokConfig,
        rows_per_shard: usize,
        device: &B::Device,
    ) -> Result<Self> {
        check_dir(dir)?;
        let config = MllmConfig::from_dir(dir)?;
        let generation_config = GenerationConfig::from_dir(dir)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let codebooks = [
            vision.semantic_quantizer.codebook_size,
            vision.pixel_quantizer.codebook_size,
        ];
        let layout = VocabLayout::derive(&config, tokenizer.inner(), Some(codebooks))?;
        let expected = [vision.vit.hidden_size, vision.pixel_encoder.z_channels];
        if expected != config.mm_hidden_size {
            return Err(MllmError::config(
                dir.join("config.json"),
                format!(
                    "mm_hidden_size {:?} does not match the DualViTok architecture's features {expected:?}",
                    config.mm_hidden_size
                ),
            ));
        }
        let checkpoint = Checkpoint::open(dir)?;
        // Refuse a config that cannot describe this checkpoint before building anything:
        // the decoder and the vision tower's ViT are both stored here.
        let mut size = config.decoder.declared_size(&dir.join("config.json"));
        size.parameters = size
            .parameters
            .saturating_add(vision.vit.min_parameter_count());
        size.model = "Qwen2 decoder with its vision tower".into();
        size.check(
            &checkpoint,
            DeviceLimits::host_bytes_per_weight::<B>(device),
        )?;
        let lm = LanguageModel::load(
            &checkpoint,
            &config.decoder,
            rows_per_shard,
            &["vision_tower.", "mm_projector."],
            device,
        )?;
        let vision_tower = DualVisionTower::load(&checkpoint, vision, device)?;
        let projector = checkpoint
            .subtree("model.mm_projector")
            .renamed(|n| Some(projector::to_module_path(n)))
            .load_into(
                MixedProjector::new(config.mm_hidden_size, config.decoder.hidden_size, device),
                &LoadOptions::named("MixedProjector"),
            )?;
        Ok(Self {
            config,
            generation_config,
            tokenizer,
            layout,
            lm,
            vision_tower,
            projector,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The embedding sequence of an input image (preprocessing, vision tower, projector,
    /// structure tokens), `[positions, hidden]`.
    pub fn encode_image(&self, image: &RgbImage) -> Result<Tensor<B, 2>> {
        let pixels = vision::preprocess_rgb(image, &self.config.vision_tower, &self.device)?;
        let features = self.vision_tower.forward(pixels);
        let (semantic, pixel) = self.projector.forward(features.semantic, features.pixel);
        splice::image_sequence(
            &self.lm,
            &self.layout.structure,
            semantic,
            features.semantic_grid,
            pixel,
            features.pixel_grid,
        )
    }

    /// Prompt embeddings `[1, L, hidden]` with `images` at its placeholders.
    pub fn embed_prompt(&self, prompt: &Prompt, images: &[Tensor<B, 2>]) -> Result<Tensor<B, 3>> {
        let tokens = self.tokenizer.encode(prompt)?;
        splice::splice(
            &self.lm,
            &tokens,
            images,
            self.config.tokenizer_model_max_length,
        )
    }

    /// What the official `generate` stops on.
    fn stop_tokens(&self) -> Vec<u32> {
        let mut stop = self.generation_config.eos_token_ids.clone();
        stop.push(self.layout.end_of_text);
        stop
    }

    /// Answer `question` about `image`; the generated ids go through `observer` as they
    /// come (stream them with [`crate::text::TextStream`]). Returns the answer text.
    pub fn understand(
        &self,
        image: &RgbImage,
        question: &str,
        request: &TextRequest,
        observer: &mut dyn Observer,
    ) -> Result<String> {
        let prompt = Prompt::understanding(question);
        self.answer(&prompt, std::slice::from_ref(image), request, observer)
    }

    /// The next assistant answer of a conversation ([`Prompt::chat`]); `images` fill the
    /// turns' image places in order.
    pub fn chat(
        &self,
        turns: &[Turn],
        images: &[RgbImage],
        request: &TextRequest,
        observer: &mut dyn Observer,
    ) -> Result<String> {
        self.answer(&Prompt::chat(turns)?, images, request, observer)
    }

    fn answer(
        &self,
        prompt: &Prompt,
        images: &[RgbImage],
        request: &TextRequest,
        observer: &mut dyn Observer,
    ) -> Result<String> {
        if prompt.image_count() != images.len() {
            return Err(MllmError::Prompt(format!(
                "the conversation has {} image places and {} images were given",
                prompt.image_count(),
                images.len()
            )));
        }
        let encoded = images
            .iter()
            .map(|image| self.encode_image(image))
            .collect::<Result<Vec<_>>>()?;
        let prompt = self.embed_prompt(prompt, &encoded)?;
        // ILLUME/app.py's chat processor: no CFG, no image grid, text mode masked.
        let sampling = LevelSampling {
            text: request.sampling,
            level0: SamplingParams::new(1.0, 2048, 1.0),
            level1: SamplingParams::new(1.0, 2048 * 3, 1.0),
        };
        let mut processor = LogitsProcessor::new(
            Chain::Eval {
                force_image_start: false,
            },
            self.layout.clone(),
            None,
            1.0,
            sampling,
        );
        let options = GenerateOptions {
            max_new_tokens: request.max_new_tokens,
            decoding: request.decoding,
            // The chat code passes its temperature/top-k/top-p to `generate` as well.
            warpers: request.sampling,
            stop_tokens: self.stop_tokens(),
            repetition_penalty: self.generation_config.repetition_penalty,
            cfg_mode: CfgMode::Batched,
        };
        let ids = generate(&self.lm, prompt, None, &mut processor, &options, observer)?;
        self.tokenizer.decode(&ids)
    }

    /// Generate an image of `description` at `request.height × request.width`.
    pub fn text_to_image(
        &self,
        description: &str,
        request: &ImageRequest,
        observer: &mut dyn Observer,
    ) -> Result<GeneratedImage> {
        let (h, w) = (request.height, request.width);
        self.layout.resolution_tag(h, w)?;
        let prompt = self.embed_prompt(&Prompt::text_to_image(description, h, w), &[])?;
        let uncond = Prompt::text_to_image_guidance(request.negative_prompt.as_deref(), h, w);
        let uncond = self.embed_prompt(&uncond, &[])?;
        self.generate_image(prompt, uncond, (h, w), request, observer)
    }

    /// Edit `image` following `instruction`: letterboxed to its nearest anchor, generated at
    /// that anchor; returns the tokens at the anchor size (see [`IllumeMllm::restore_edit`]).
    pub fn edit(
        &self,
        image: &RgbImage,
        instruction: &str,
        request: &ImageRequest,
        observer: &mut dyn Observer,
    ) -> Result<GeneratedImage> {
        if request.negative_prompt.is_some() {
            return Err(MllmError::Prompt(
                "a negative prompt applies to text-to-image; editing's unconditional prompt \
                 is the official \"reconstruct the image\""
                    .into(),
            ));
        }
        let (w, h) = (image.width() as usize, image.height() as usize);
        let anchor = editing::nearest_anchor(w, h, &editing::ANCHORS);
        let boxed = editing::letterbox(image, anchor)?;
        let encoded = self.encode_image(&boxed)?;
        let (ah, aw) = anchor;
        let prompt = self.embed_prompt(
            &Prompt::editing(instruction, ah, aw),
            std::slice::from_ref(&encoded),
        )?;
        let uncond = self.embed_prompt(&Prompt::editing_unconditional(ah, aw), &[encoded])?;
        self.generate_image(prompt, uncond, anchor, request, observer)
    }

    /// An edited image decoded at its anchor size → the input's size (padding removed).
    pub fn restore_edit(
        decoded: &RgbImage,
        original_width: usize,
        original_height: usize,
    ) -> Result<RgbImage> {
        editing::unpad_and_resize_back(decoded, original_width, original_height)
    }

    fn generate_image(
        &self,
        prompt: Tensor<B, 3>,
        uncond: Tensor<B, 3>,
        (h, w): (usize, usize),
        request: &ImageRequest,
        observer: &mut dyn Observer,
    ) -> Result<GeneratedImage> {
        request.validate()?;
        let grid = ImageGrid::for_size(h, w);
        let mut processor = LogitsProcessor::new(
            request.chain,
            self.layout.clone(),
            Some(grid),
            request.guidance,
            request.sampling,
        );
        let options = GenerateOptions {
            max_new_tokens: grid.max_new_tokens(),
            decoding: request.decoding,
            warpers: match request.chain {
                // generation_eval passes its global temperature/top-k/top-p to `generate`.
                Chain::Eval { .. } => request.sampling.text,
                Chain::App => SamplingParams::NEUTRAL,
            },
            stop_tokens: self.stop_tokens(),
            repetition_penalty: self.generation_config.repetition_penalty,
            cfg_mode: request.cfg_mode,
        };
        let uncond = (request.guidance != 1.0).then_some(uncond);
        let ids = generate(&self.lm, prompt, uncond, &mut processor, &options, observer)?;
        let tokens = image_tokens(&ids, &self.layout, grid)?;
        Ok(GeneratedImage {
            tokens,
            ids,
            size: (h, w),
        })
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(MllmError::config(
        dir,
        "not a directory: pass the MLLM checkpoint folder (config.json, tokenizer.json, weights)",
    ))
}

/// The token grids of the first image in generated ids (code id − level start, row-major).
pub fn image_tokens(ids: &[u32], layout: &VocabLayout, grid: ImageGrid) -> Result<DualTokens> {
    let s = layout.structure;
    let start = ids
        .iter()
        .position(|&t| t == s.start_of_image)
        .ok_or_else(|| MllmError::Generation("the model did not start an image".into()))?;
    let end = ids[start..]
        .iter()
        .position(|&t| t == s.end_of_image)
        .map(|e| start + e)
        .unwrap_or(ids.len());
    let mut codes = [Vec::new(), Vec::new()];
    for &id in &ids[start..end] {
        if let Some((level, code)) = layout.code_of(id) {
            codes[level].push(code);
        }
    }
    let level = |l: usize, name: &str| {
        let shape = grid.level(l);
        let found = codes[l].len();
        TokenGrid::new(shape, codes[l].clone()).map_err(|_| {
            MllmError::Generation(format!(
                "the image is incomplete: {found} {name} codes for a {}x{} grid",
                shape[0], shape[1]
            ))
        })
    };
    Ok(DualTokens {
        semantic: level(0, "semantic")?,
        pixel: level(1, "pixel")?,
    })
}
