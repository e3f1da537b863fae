//! `illume generate`: text → image tokens with the MLLM → pixels with DualViTok's decoder.
//!
//! Also the MLLM helpers `understand` and `edit` share: resolving `--model`/`--tokenizer`
//! (or the demo models), the sampling flags, and the token progress bar.

use std::path::{Path, PathBuf};

use illume::backends::{BackendTask, IllumeBackend};
use illume::dualvitok::{image_io, DualTokens, DualViTok, DualViTokConfig};
use illume::mllm::generate::Observer;
use illume::mllm::{
    CfgMode, Chain, Decoding, IllumeMllm, ImageRequest, LevelSampling, SamplingParams,
};
use indicatif::{ProgressBar, ProgressStyle};

pub(super) use super::tokenize::spinner;
use super::upscale::{render_to_png, DiffusionArgs};

/// What `--help` says about `generation_config.json` (shared by the three MLLM verbs).
macro_rules! generation_config_help {
    () => {
        "generation_config.json of the checkpoint is applied as the official transformers \
`generate` applies it: eos_token_id ends generation (with <|im_end|>); repetition_penalty (if \
not 1) penalises already generated ids before the ILLUME processors; temperature/top_k/top_p/\
do_sample are overridden by this command's flags, as the official calls pass their own; any \
other logits-changing field is refused with an error."
    };
}
pub(super) use generation_config_help;

#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Pipeline: the prompt goes through the Qwen chat template (`Generate an image of \
<height_H><width_W>, the content of image is ...`), the MLLM samples the image's semantic and \
pixel token grids under the interleaved logits processor with classifier-free guidance (the \
unconditional prompt is `Generate a random image of <height_H><width_W>`), and DualViTok's \
pixel decoder turns the tokens into a PNG of --size (WxH; the prompt's tags are height first).\n\n\
Sampling: --temperature/--top-k/--top-p are the global values; the semantic level defaults \
to them and the pixel level to the semantic values with 3x the top-k, as in the official \
InferenceConfig. The `eval` preset (default) is generation_eval's InterleavedLogitsProcessor \
(CFG inside the image only, <start_of_image> forced; when sampling, transformers' warpers \
apply the global values again, as the official call does); `app` is ILLUME/app.py's chain \
(CFG on every step, text default 0.7/20/0.8). Sampling uses a ChaCha8 RNG seeded by --seed \
(reproducible everywhere, not torch's stream). CFG runs the conditional and unconditional \
rows in one batched forward.\n\n",
    generation_config_help!(),
    "\n\nExamples:\n  illume generate \"a red fox in the snow\" -o fox.png      (demo model)\n  \
illume generate --model ILLUME-MLLM/illume_plus-qwen2_5-3b --tokenizer ILLUME-MLLM/dualvitok \
\"a red fox in the snow\" --size 512x512 --seed 7 -o fox.png"
))]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// What the image should show.
    pub prompt: String,
    /// Where to write the image (PNG).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Image size WxH (width first, as `upscale --size`): multiples of 64 up to 1024.
    /// Trained anchors: 512x512, 384x512, 512x384, 384x768, 768x384, 384x576, 576x384,
    /// 320x960, 960x320, 256x1024, 1024x256, and 256x256.
    #[arg(long, value_name = "WxH", default_value = "512x512", value_parser = parse_size)]
    pub size: HeightWidth,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// With --diffusion, the tokens are rendered at twice the image size by the SDXL
    /// diffusion decoder instead of DualViTok's pixel decoder.
    #[command(flatten)]
    pub diffusion: DiffusionArgs,
}

/// `--model` and `--tokenizer`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// The ILLUME+ MLLM checkpoint folder (config.json, tokenizer.json, safetensors) or a
    /// Hugging Face repo id in the local cache. Default: the built-in demo model.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// The DualViTok checkpoint (decodes generated images; its architecture builds the
    /// MLLM's vision tower). Default: with --model, the released architecture (and weights
    /// from --tokenizer when decoding is needed); without, the demo DualViTok.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
}

/// Sampling flags of image generation.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Classifier-free guidance scale, 1 (off) to 100 [default: 2.0 for generate, 1.5 for
    /// edit].
    #[arg(long, value_name = "SCALE", allow_negative_numbers = true, value_parser = super::values::guidance_f32)]
    pub cfg: Option<f32>,
    /// Seed of the sampler (ChaCha8).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Pick the most likely token instead of sampling (deterministic, usually dull images).
    #[arg(long)]
    pub greedy: bool,
    /// Global (text) temperature (> 0), default for both image levels [default: 1.0 for
    /// generate, 0.7 for edit].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub temperature: Option<f32>,
    /// Global top-k (0 = off), default for the semantic level, x3 for the pixel level
    /// [default: 2048 for generate, 512 for edit].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Global top-p in (0, 1] (1 = off) [default: 1.0 for generate, 0.8 for edit].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub top_p: Option<f32>,
    /// Semantic-level (level 0) temperature [default: --temperature].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub semantic_temperature: Option<f32>,
    /// Semantic-level top-k [default: --top-k].
    #[arg(long)]
    pub semantic_top_k: Option<usize>,
    /// Semantic-level top-p [default: --top-p].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub semantic_top_p: Option<f32>,
    /// Pixel-level (level 1) temperature [default: the semantic one].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub pixel_temperature: Option<f32>,
    /// Pixel-level top-k [default: 3x the semantic one].
    #[arg(long)]
    pub pixel_top_k: Option<usize>,
    /// Pixel-level top-p [default: the semantic one].
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub pixel_top_p: Option<f32>,
    /// Logits processor chain: `eval` (generation_eval) or `app` (ILLUME/app.py).
    #[arg(long, value_parser = ["eval", "app"], default_value = "eval")]
    pub preset: String,
    /// Run the unconditional CFG stream as a second model call per step (the official
    /// form) instead of batching it with the conditional row.
    #[arg(long)]
    pub sequential_cfg: bool,
}

/// The official recommendations (app tips): generation and editing differ.
pub(super) struct SamplingDefaults {
    pub cfg: f32,
    pub global: SamplingParams,
}

/// Text-to-image: CFG 2.0, temperature 1.0, top-k 2048, top-p 1.0.
pub(super) const GENERATION_DEFAULTS: SamplingDefaults = SamplingDefaults {
    cfg: 2.0,
    global: SamplingParams::new(1.0, 2048, 1.0),
};

impl SamplingArgs {
    /// The request: the official InferenceConfig defaulting, level 1 top-k = 3x level 0.
    pub(super) fn request(
        &self,
        height: usize,
        width: usize,
        defaults: &SamplingDefaults,
    ) -> ImageRequest {
        let global = SamplingParams::new(
            self.temperature.unwrap_or(defaults.global.temperature),
            self.top_k.unwrap_or(defaults.global.top_k),
            self.top_p.unwrap_or(defaults.global.top_p),
        );
        let level0 = SamplingParams::new(
            self.semantic_temperature.unwrap_or(global.temperature),
            self.semantic_top_k.unwrap_or(global.top_k),
            self.semantic_top_p.unwrap_or(global.top_p),
        );
        let level1 = SamplingParams::new(
            self.pixel_temperature.unwrap_or(level0.temperature),
            self.pixel_top_k.unwrap_or(level0.top_k * 3),
            self.pixel_top_p.unwrap_or(level0.top_p),
        );
        let (chain, text) = match self.preset.as_str() {
            // app.py: default text sampling 0.7/20/0.8, levels from the UI values.
            "app" => (Chain::App, SamplingParams::new(0.7, 20, 0.8)),
            _ => (
                Chain::Eval {
                    force_image_start: true,
                },
                global,
            ),
        };
        ImageRequest {
            height,
            width,
            guidance: self.cfg.unwrap_or(defaults.cfg),
            chain,
            sampling: LevelSampling {
                text,
                level0,
                level1,
            },
            decoding: if self.greedy {
                Decoding::Greedy
            } else {
                Decoding::Sample { seed: self.seed }
            },
            cfg_mode: if self.sequential_cfg {
                CfgMode::Sequential
            } else {
                CfgMode::Batched
            },
        }
    }
}

/// An image size as the MLLM's resolution tags hold it: `(height, width)`.
pub type HeightWidth = (usize, usize);

/// `WxH` (e.g. `768x384`: 768 wide, 384 high) → `(height, width)`, each a size the MLLM
/// has a resolution tag for (checked here so the message keeps the user's WxH order).
fn parse_size(text: &str) -> Result<HeightWidth, String> {
    use illume::mllm::vocab::{MAX_RESOLUTION, RESOLUTION_STEP};
    let bad = || format!("`{text}` is not WxH (e.g. 512x512, or 768x384 for a wide image)");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
    let (w, h) = (side(w)?, side(h)?);
    let tagged = |n: usize| n.is_multiple_of(RESOLUTION_STEP) && (1..=MAX_RESOLUTION).contains(&n);
    if !(tagged(w) && tagged(h)) {
        return Err(format!(
            "{w}x{h}: width and height must be multiples of {RESOLUTION_STEP} from \
             {RESOLUTION_STEP} to {MAX_RESOLUTION}"
        ));
    }
    Ok((h, w))
}

/// The resolved checkpoint folders.
pub(super) struct Models {
    pub mllm: PathBuf,
    /// The DualViTok checkpoint, when one is given or the demo is used.
    pub tokenizer: Option<PathBuf>,
    pub demo: bool,
}

impl ModelArgs {
    /// Resolve paths; materialise the demo models when `--model` is absent. `need_decoder`:
    /// the verb decodes images, so a DualViTok checkpoint is required.
    pub(super) fn resolve(&self, need_decoder: bool) -> Result<Models, Box<dyn std::error::Error>> {
        let Some(model) = &self.model else {
            eprintln!("{}", illume::demo::NOTICE);
            let mllm = illume::demo::materialize("mllm", illume::mllm::demo::write)?;
            let tokenizer = match &self.tokenizer {
                Some(path) => illume::weights::resolve_path(path)?,
                None => illume::demo::materialize("dualvitok", illume::dualvitok::demo::write)?,
            };
            return Ok(Models {
                mllm,
                tokenizer: Some(tokenizer),
                demo: true,
            });
        };
        let tokenizer = match &self.tokenizer {
            Some(path) => {
                let path = illume::weights::resolve_path(path)?;
                // Read its header now: a wrong path fails before the generation, not after.
                illume::weights::Checkpoint::open(&path)?;
                Some(path)
            }
            None if need_decoder => {
                return Err(
                    "--tokenizer is required with --model: DualViTok decodes the generated \
                            image (e.g. --tokenizer ILLUME-MLLM/dualvitok)"
                        .into(),
                )
            }
            None => None,
        };
        Ok(Models {
            mllm: illume::weights::resolve_path(model)?,
            tokenizer,
            demo: false,
        })
    }
}

impl Models {
    /// The DualViTok architecture of the vision tower: the demo's, the given tokenizer's,
    /// or the released one.
    pub(super) fn vision_config(&self) -> Result<DualViTokConfig, Box<dyn std::error::Error>> {
        if self.demo {
            return Ok(illume::dualvitok::demo::config());
        }
        match &self.tokenizer {
            Some(path) => Ok(DualViTokConfig::for_checkpoint(path)?.0),
            None => Ok(DualViTokConfig::official()),
        }
    }

    pub(super) fn load_mllm<B: IllumeBackend>(
        &self,
        device: &B::Device,
        bar: &ProgressBar,
    ) -> Result<IllumeMllm<B>, Box<dyn std::error::Error>> {
        bar.set_message(format!("loading the MLLM from {}", self.mllm.display()));
        Ok(IllumeMllm::load(
            &self.mllm,
            &self.vision_config()?,
            device,
        )?)
    }
}

/// Turns `bar` into a token counter with tokens/s.
pub(super) struct TokenProgress {
    pub bar: ProgressBar,
}

impl TokenProgress {
    pub(super) fn new(bar: &ProgressBar, total: usize, what: &str) -> Self {
        bar.set_length(total as u64);
        bar.set_position(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} tokens ({per_sec}, {elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar.reset_elapsed();
        Self { bar: bar.clone() }
    }
}

impl Observer for TokenProgress {
    fn token(&mut self, _step: usize, _token: u32) {
        self.bar.inc(1);
    }
}

/// Decode image tokens to pixels with DualViTok's pixel decoder. (The diffusion decoder is
/// the other way to turn tokens into pixels.)
pub(super) fn decode_tokens<B: IllumeBackend>(
    tokens: &DualTokens,
    tokenizer: &Path,
    device: &B::Device,
    bar: &ProgressBar,
) -> Result<image::RgbImage, Box<dyn std::error::Error>> {
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.set_message(format!("loading DualViTok from {}", tokenizer.display()));
    let decoder = DualViTok::<B>::load(tokenizer, device)?;
    bar.set_message("decoding the tokens to pixels");
    Ok(decoder.decode_rgb(tokens)?)
}

struct Generate<'a> {
    args: &'a Args,
    models: Models,
    /// The diffusion decoder folder, with --diffusion.
    decoder: Option<PathBuf>,
}

impl BackendTask for Generate<'_> {
    type Output = Result<(usize, f64), Box<dyn std::error::Error>>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let bar = spinner();
        let result = (|| {
            let (h, w) = self.args.size;
            let request = self.args.sampling.request(h, w, &GENERATION_DEFAULTS);
            let mllm = self.models.load_mllm::<B>(&device, &bar)?;
            let total = illume::mllm::ImageGrid::for_size(h, w).max_new_tokens();
            let mut progress = TokenProgress::new(&bar, total, &format!("generating {h}x{w}"));
            let started = std::time::Instant::now();
            let image = mllm.text_to_image(&self.args.prompt, &request, &mut progress)?;
            let seconds = started.elapsed().as_secs_f64();
            let tokenizer = self
                .models
                .tokenizer
                .as_deref()
                .expect("checked by resolve");
            match &self.decoder {
                None => {
                    let pixels = decode_tokens::<B>(&image.tokens, tokenizer, &device, &bar)?;
                    image_io::write_png(&pixels, &self.args.output)?;
                }
                Some(decoder) => {
                    bar.set_message(format!("loading DualViTok from {}", tokenizer.display()));
                    let codes = DualViTok::<B>::load(tokenizer, &device)?;
                    let extra = vec![
                        ("illume.pipeline".to_string(), "generate".to_string()),
                        ("illume.prompt".to_string(), self.args.prompt.clone()),
                        (
                            "illume.mllm".to_string(),
                            self.models.mllm.display().to_string(),
                        ),
                        (
                            "illume.tokenizer".to_string(),
                            tokenizer.display().to_string(),
                        ),
                    ];
                    render_to_png(
                        &image.tokens,
                        &codes,
                        decoder,
                        &self.args.diffusion,
                        None,
                        self.args.sampling.seed,
                        &self.args.output,
                        extra,
                        &device,
                        &bar,
                    )?;
                }
            }
            Ok((image.ids.len(), seconds))
        })();
        bar.finish_and_clear();
        result
    }
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    // Every path is checked before the generation, not after it.
    image_io::check_png_output(&args.output)?;
    let models = args.models.resolve(true)?;
    let decoder = match &args.diffusion.diffusion {
        Some(_) => Some(args.diffusion.decoder_path()?),
        None => None,
    };
    let (tokens, seconds) = compute.run(Generate {
        args: &args,
        models,
        decoder,
    })??;
    eprintln!(
        "{tokens} tokens in {seconds:.1} s ({:.1} tokens/s)",
        tokens as f64 / seconds.max(1e-9)
    );
    let (h, w) = args.size;
    let scale = if args.diffusion.diffusion.is_some() {
        2
    } else {
        1
    };
    println!(
        "wrote {} ({}x{})",
        args.output.display(),
        scale * w,
        scale * h
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn size_is_width_by_height() {
        assert_eq!(parse_size("768x384"), Ok((384, 768)));
        assert_eq!(parse_size("256X1024"), Ok((1024, 256)));
        let err = parse_size("512").unwrap_err();
        assert!(err.contains("WxH"), "{err}");
        assert!(parse_size("ax512").is_err());
        let err = parse_size("513x511").unwrap_err();
        assert!(err.starts_with("513x511:"), "{err}");
        assert!(parse_size("1088x64").is_err());
    }
}
