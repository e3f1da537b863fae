//! The official `StableDiffusionXLDecoderPipeline` loop: the DualViTok code map, nearest-
//! resized to the latent grid, concatenated to the latents as extra UNet input channels;
//! zero text context and pooled embedding; `[0,0,0,0,0,resolution_index]` time ids;
//! classifier-free guidance against an all-zero code map; scheduler steps; VAE decode.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor};
use illume_backends::{compute_dtype, IllumeBackend};
use illume_dualvitok::DualTokens;
use illume_weights::Checkpoint;
use image::RgbImage;

use crate::conditioning::CodeEmbedder;

use crate::error::DiffusionError;
use crate::layers::{nearest_resize, CrossAttentionContext};
use crate::noise::NoiseSource;
use crate::output::to_rgb;
use crate::resolution::{output_size_for_grid, resolution_index, ImageSize, RESOLUTIONS};
use crate::scheduler::{self, InferenceSchedule, Scheduler};
use crate::unet::{UNet2DConditionModel, UNetConditioning};
use crate::vae::{AutoencoderKL, VaeTiling};

/// Token count of the (zero) text context the pipeline feeds the cross-attention.
pub const TEXT_TOKENS: usize = 77;
/// Width of that context (SDXL's concatenated CLIP encoders).
pub const TEXT_WIDTH: usize = 2048;
/// Width of the (zero) pooled text embedding of the `text_time` add-embedding.
pub const POOLED_TEXT_WIDTH: usize = 1280;
/// Time ids per sample: `[0, 0, 0, 0, 0, resolution_index]`.
pub const TIME_IDS: usize = 6;

/// Settings of one denoising run.
#[derive(Debug, Clone, PartialEq)]
pub struct DenoiseOptions {
    /// Output size; must be one of [`crate::RESOLUTIONS`].
    pub size: ImageSize,
    pub steps: usize,
    /// Classifier-free guidance scale; guidance runs when it is above 1.
    pub guidance_scale: f64,
}

/// Settings of [`DiffusionDecoder::decode`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Output size; `None` renders at twice the token-image size (ILLUME+'s rule). Any
    /// size of [`crate::RESOLUTIONS`] is accepted (the code map is resized to it).
    pub size: Option<ImageSize>,
    pub steps: usize,
    /// Classifier-free guidance scale (against an all-zero code map); off at 1 or below.
    pub guidance_scale: f64,
    /// Seed of the initial latents (this crate's generator, not PyTorch's).
    pub seed: u64,
    /// Decode the VAE in exact strips (bounded device memory) instead of whole.
    pub vae_tiling: Option<VaeTiling>,
}

impl Default for DecodeOptions {
    /// 20 steps and guidance 1.5, as the official tokenizer demo runs the decoder (the
    /// pipeline's own defaults, 50 steps and 2.0, are for evaluation).
    fn default() -> Self {
        Self {
            size: None,
            steps: 20,
            guidance_scale: 1.5,
            seed: 0,
            vae_tiling: None,
        }
    }
}

/// Reported to the per-step callback after each scheduler step.
pub struct StepProgress<'a, B: IllumeBackend> {
    /// 0-based step index.
    pub index: usize,
    pub total: usize,
    /// Timestep the UNet was called with.
    pub timestep: f32,
    /// The latents after this step.
    pub latents: &'a Tensor<B, 4>,
}

/// The loaded diffusion decoder: UNet, VAE and scheduler of a diffusers folder.
pub struct DiffusionDecoder<B: IllumeBackend> {
    unet: UNet2DConditionModel<B>,
    vae: AutoencoderKL<B>,
    scheduler: Scheduler,
    device: B::Device,
    dir: PathBuf,
}

/// Check a diffusion decoder folder without building anything (`model_index.json`, the
/// scheduler config, and that `unet/` and `vae/` hold readable checkpoints), so a wrong
/// path fails before the tokens it would render are generated. Returns the scheduler.
pub fn check_decoder_folder(dir: &Path) -> Result<Scheduler, DiffusionError> {
    let index_path = dir.join("model_index.json");
    let index: crate::config::ModelIndex = crate::config::read(&index_path)?;
    for (component, entry, class) in [
        ("unet", &index.unet, "UNet2DConditionModel"),
        ("vae", &index.vae, "AutoencoderKL"),
    ] {
        match entry {
            Some((_, c)) if c == class => {}
            other => {
                return Err(DiffusionError::Config {
                    path: index_path.clone(),
                    reason: format!(
                        "component `{component}` is {other:?}, expected [\"diffusers\", \"{class}\"] \
                         (is this the ILLUME-MLLM/dualvitok-sdxl-decoder folder?)"
                    ),
                });
            }
        }
    }
    let scheduler_class = index.scheduler.as_ref().map(|(_, class)| class.as_str());
    let scheduler = Scheduler::from_file(&scheduler::config_path(dir), scheduler_class)?;
    for component in ["unet", "vae"] {
        Checkpoint::open(dir.join(component))?;
    }
    Ok(scheduler)
}

impl<B: IllumeBackend> DiffusionDecoder<B> {
    /// Load the official `ILLUME-MLLM/dualvitok-sdxl-decoder` folder as published:
    /// `model_index.json`, `unet/`, `vae/`, `scheduler/`. Everything is built from the
    /// configs; a mismatch with the pipeline's fixed inputs is an error here, not later.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, DiffusionError> {
        let scheduler = check_decoder_folder(dir)?;
        let unet = UNet2DConditionModel::load(&dir.join("unet"), device)?;
        let vae = AutoencoderKL::load(&dir.join("vae"), device)?;
        let decoder = Self {
            unet,
            vae,
            scheduler,
            device: device.clone(),
            dir: dir.to_path_buf(),
        };
        decoder.check_pipeline_inputs()?;
        Ok(decoder)
    }

    /// The official pipeline feeds fixed-width zero text tensors and hard-codes the time-id
    /// layout: a UNet built for other widths could not run it.
    fn check_pipeline_inputs(&self) -> Result<(), DiffusionError> {
        let path = self.dir.join("unet").join("config.json");
        let config = self.unet.config();
        let bad = |reason: String| DiffusionError::Config {
            path: path.clone(),
            reason,
        };
        let text_time = config.text_time.as_ref().ok_or_else(|| {
            bad("the decoder pipeline needs addition_embed_type \"text_time\"".into())
        })?;
        let expected = TIME_IDS * text_time.time_embed_dim + POOLED_TEXT_WIDTH;
        if text_time.input_dim != expected {
            return Err(bad(format!(
                "projection_class_embeddings_input_dim is {}, the pipeline feeds {TIME_IDS}·{} + \
                 {POOLED_TEXT_WIDTH} = {expected}",
                text_time.input_dim, text_time.time_embed_dim
            )));
        }
        let cross_dims = config
            .down_blocks
            .iter()
            .filter_map(|b| b.attention.as_ref())
            .chain(config.up_blocks.iter().filter_map(|b| b.attention.as_ref()))
            .chain(config.mid_block.iter().map(|m| &m.attention))
            .map(|a| a.cross_attention_dim);
        if let Some(d) = cross_dims.into_iter().find(|d| *d != TEXT_WIDTH) {
            return Err(bad(format!(
                "cross_attention_dim {d}: the pipeline feeds a {TEXT_WIDTH}-wide text context"
            )));
        }
        if config.in_channels <= self.latent_channels() {
            return Err(bad(format!(
                "in_channels {} leaves no room for the code map beside {} latent channels",
                config.in_channels,
                self.latent_channels()
            )));
        }
        if config.out_channels != self.latent_channels() {
            return Err(bad(format!(
                "out_channels {} differs from the VAE's {} latent channels",
                config.out_channels,
                self.latent_channels()
            )));
        }
        // The latent grid is the output size over the VAE's pixel scale, exactly.
        let scale = self.vae.config().scale_factor();
        if let Some(size) = RESOLUTIONS
            .iter()
            .find(|s| !(s.width.is_multiple_of(scale) && s.height.is_multiple_of(scale)))
        {
            return Err(DiffusionError::Config {
                path: self.dir.join("vae").join("config.json"),
                reason: format!(
                    "{} block_out_channels levels give a pixel scale of {scale}, which does not \
                     divide the output size {size}",
                    self.vae.config().block_out_channels.len()
                ),
            });
        }
        Ok(())
    }

    pub fn unet(&self) -> &UNet2DConditionModel<B> {
        &self.unet
    }

    pub fn vae(&self) -> &AutoencoderKL<B> {
        &self.vae
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Latent channels of the VAE (4 for SDXL; the official pipeline hard-codes 4).
    pub fn latent_channels(&self) -> usize {
        self.vae.config().latent_channels
    }

    /// Channels of the code map the UNet expects beside the latents (2·z of DualViTok).
    pub fn code_channels(&self) -> usize {
        self.unet.config().in_channels - self.latent_channels()
    }

    /// Latent grid `[height, width]` of an output size.
    pub fn latent_size(&self, size: ImageSize) -> [usize; 2] {
        let f = self.vae.config().scale_factor();
        [size.height / f, size.width / f]
    }

    /// Seeded initial latents `N(0, 1)` for `size` (before `init_noise_sigma`).
    pub fn initial_noise(&self, size: ImageSize, noise: &mut NoiseSource) -> Tensor<B, 4> {
        let [h, w] = self.latent_size(size);
        noise.normal([1, self.latent_channels(), h, w], &self.device)
    }

    /// The conditioning the pipeline gives every UNet call for `size`.
    pub fn conditioning(&self, size: ImageSize) -> Result<UNetConditioning<B>, DiffusionError> {
        let index = resolution_index(size)?;
        let mut time_ids = vec![0.0; TIME_IDS];
        time_ids[TIME_IDS - 1] = index as f32;
        Ok(UNetConditioning {
            context: CrossAttentionContext::Zeros {
                tokens: TEXT_TOKENS,
            },
            text_embeds: None,
            time_ids,
        })
    }

    /// The UNet input channels besides the latents: the code map nearest-resized to the
    /// latent grid, behind an all-zero map for the unconditional half when guiding.
    pub fn code_channels_input(
        &self,
        code_map: Tensor<B, 4>,
        size: ImageSize,
        guided: bool,
    ) -> Result<Tensor<B, 4>, DiffusionError> {
        let [batch, channels, _, _] = code_map.dims();
        if batch != 1 || channels != self.code_channels() {
            return Err(DiffusionError::Input(format!(
                "the code map is {:?}; this UNet takes [1, {}, h, w] ({} input channels = {} \
                 latent + {} code channels)",
                code_map.dims(),
                self.code_channels(),
                self.unet.config().in_channels,
                self.latent_channels(),
                self.code_channels()
            )));
        }
        let resized = nearest_resize(code_map, self.latent_size(size));
        Ok(if guided {
            Tensor::cat(vec![resized.zeros_like(), resized], 0)
        } else {
            resized
        })
    }

    /// Run the denoising loop from `initial_noise` (`[1, latent, h/8, w/8]`, N(0,1)) and
    /// return the final latents. `on_step` is called after every scheduler step; its
    /// `ControlFlow::Break` stops the loop with [`DiffusionError::Cancelled`].
    pub fn denoise(
        &self,
        code_map: Tensor<B, 4>,
        initial_noise: Tensor<B, 4>,
        options: &DenoiseOptions,
        noise: &mut NoiseSource,
        mut on_step: impl FnMut(StepProgress<'_, B>) -> ControlFlow<()>,
    ) -> Result<Tensor<B, 4>, DiffusionError> {
        // diffusers skips guidance for any scale <= 1 (NaN included): refuse instead of
        // silently ignoring what was asked.
        if !(options.guidance_scale.is_finite() && options.guidance_scale >= 1.0) {
            return Err(DiffusionError::Input(format!(
                "guidance_scale must be a finite number >= 1 (1 turns guidance off), got {}",
                options.guidance_scale
            )));
        }
        let schedule: InferenceSchedule = self.scheduler.plan(options.steps)?;
        let cond = self.conditioning(options.size)?;
        let guided = options.guidance_scale > 1.0;
        let codes = self.code_channels_input(code_map, options.size, guided)?;
        let expected = [1, self.latent_channels()];
        let latent_hw = self.latent_size(options.size);
        let [n, c, h, w] = initial_noise.dims();
        if [n, c] != expected || [h, w] != latent_hw {
            return Err(DiffusionError::Input(format!(
                "initial latents {:?}, expected [1, {}, {}, {}]",
                initial_noise.dims(),
                expected[1],
                latent_hw[0],
                latent_hw[1]
            )));
        }
        // Latents and scheduler arithmetic in f32; the UNet in the device's compute type.
        let unet_dtype = compute_dtype::<B>(&self.device);
        let codes = codes.cast(unet_dtype);
        let mut latents = initial_noise
            .cast(DType::F32)
            .mul_scalar(schedule.init_noise_sigma);
        let total = schedule.len();
        for (i, &t) in schedule.timesteps.iter().enumerate() {
            let model_in = if guided {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let model_in = schedule.scale_model_input(model_in, i).cast(unet_dtype);
            let model_in = Tensor::cat(vec![model_in, codes.clone()], 1);
            let prediction = self.unet.forward(model_in, t, &cond).cast(DType::F32);
            let prediction = if guided {
                let [uncond, cond] = prediction
                    .chunk(2, 0)
                    .try_into()
                    .expect("a guided batch has two halves");
                uncond.clone() + (cond - uncond).mul_scalar(options.guidance_scale)
            } else {
                prediction
            };
            latents = schedule.step(i, prediction, latents, noise);
            let flow = on_step(StepProgress {
                index: i,
                total,
                timestep: t,
                latents: &latents,
            });
            if flow.is_break() {
                return Err(DiffusionError::Cancelled);
            }
        }
        Ok(latents)
    }

    /// Render DualViTok tokens: the code map from `codes`, seeded initial latents, the
    /// denoising loop (`on_step` after every step), the VAE, 8-bit RGB.
    pub fn decode(
        &self,
        codes: &CodeEmbedder<B>,
        tokens: &DualTokens,
        options: &DecodeOptions,
        on_step: impl FnMut(StepProgress<'_, B>) -> ControlFlow<()>,
    ) -> Result<RgbImage, DiffusionError> {
        let size = match options.size {
            Some(size) => {
                resolution_index(size)?;
                size
            }
            None => output_size_for_grid(tokens.pixel.shape[0], tokens.pixel.shape[1])?,
        };
        let mut noise = NoiseSource::new(options.seed);
        let initial = self.initial_noise(size, &mut noise);
        self.decode_from(codes, tokens, size, initial, options, &mut noise, on_step)
    }

    /// [`DiffusionDecoder::decode`] at `size` from given initial latents
    /// (`[1, latent, h/8, w/8]`, N(0, 1)), e.g. to reproduce a PyTorch run; `noise` feeds
    /// ancestral sampling.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_from(
        &self,
        codes: &CodeEmbedder<B>,
        tokens: &DualTokens,
        size: ImageSize,
        initial: Tensor<B, 4>,
        options: &DecodeOptions,
        noise: &mut NoiseSource,
        on_step: impl FnMut(StepProgress<'_, B>) -> ControlFlow<()>,
    ) -> Result<RgbImage, DiffusionError> {
        if codes.channels() != self.code_channels() {
            return Err(DiffusionError::Input(format!(
                "the tokenizer's codes have {} channels, this decoder's UNet takes {} (is the \
                 tokenizer the DualViTok this decoder was trained with?)",
                codes.channels(),
                self.code_channels()
            )));
        }
        let code_map = codes.code_map(tokens)?;
        let denoise = DenoiseOptions {
            size,
            steps: options.steps,
            guidance_scale: options.guidance_scale,
        };
        let latents = self.denoise(code_map, initial, &denoise, noise, on_step)?;
        Ok(to_rgb(self.latents_to_pixels(latents, options.vae_tiling)))
    }

    /// `vae.decode(unscaled latents)`: the image tensor `[1, 3, H, W]` in about [-1, 1],
    /// whole or in exact strips (`tiling`).
    pub fn latents_to_pixels(
        &self,
        latents: Tensor<B, 4>,
        tiling: Option<VaeTiling>,
    ) -> Tensor<B, 4> {
        let z = self.vae.unscale_latents(latents);
        match tiling {
            Some(tiling) => self.vae.decode_tiled(z, tiling),
            None => self.vae.decode(z),
        }
    }
}
