//! `illume upscale`: an image → DualViTok tokens → the SDXL diffusion decoder at twice the
//! token-image size. Also the diffusion flags and the decode-to-PNG step that `generate
//! --diffusion` shares.

use std::path::{Path, PathBuf};
use std::time::Instant;

use illume::backends::{BackendTask, IllumeBackend};
use illume::diffusion::resolution::{nearest_aspect, resolution_index};
use illume::diffusion::vae::VaeTiling;
use illume::diffusion::{
    write_png, CodeEmbedder, CodePrecision, DecodeOptions, DiffusionDecoder, ImageSize,
};
use illume::dualvitok::pil_resize::{pil_resize_rgb, PilFilter};
use illume::dualvitok::{image_io, DualTokens, DualViTok};
use indicatif::{ProgressBar, ProgressStyle};

use super::tokenize::{load, spinner, tokenizer_path};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "What happens, as in the official tokenizer app's super-resolution \
mode: the output size is the trained resolution whose aspect ratio is nearest to the image's \
(or --size); the image is resized (Pillow bicubic) to half of it, tokenized by DualViTok, and \
the tokens are rendered by the diffusion decoder at the full size. The PNG's text chunks record \
the parameters.\n\nTrained output sizes (WxH): 1024x1024, 768x1024, 1024x768, 512x2048, \
2048x512, 640x1920, 1920x640, 768x1536, 1536x768, 768x1152, 1152x768, 512x512.\n\n\
Examples:\n  illume upscale photo.jpg -o photo_2x.png      (demo models)\n  illume upscale \
--tokenizer ILLUME-MLLM/dualvitok --diffusion ILLUME-MLLM/dualvitok-sdxl-decoder photo.jpg \
--steps 20 -o photo_2x.png"
)]
pub struct Args {
    /// DualViTok checkpoint: a folder or file, or a Hugging Face repo id in the local
    /// cache. Default: the built-in demo model.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub diffusion: DiffusionArgs,
    /// The image to upscale (PNG, JPEG, WebP, BMP, GIF, TIFF).
    pub image: PathBuf,
    /// Where to write the result (PNG).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Output size WxH, one of the trained sizes [default: the one nearest in aspect ratio].
    #[arg(long, value_name = "WxH", value_parser = parse_output_size)]
    pub size: Option<ImageSize>,
    /// Seed of the initial latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flags of the diffusion decoder, shared by `upscale` and `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffusionArgs {
    /// The diffusion decoder: the diffusers folder of ILLUME-MLLM/dualvitok-sdxl-decoder
    /// (model_index.json, unet/, vae/, scheduler/) or its repo id in the local cache.
    /// `upscale` defaults to the built-in demo decoder; `generate` uses DualViTok's pixel
    /// decoder without it.
    #[arg(long, value_name = "DIR")]
    pub diffusion: Option<PathBuf>,
    /// Denoising steps of the diffusion decoder, 1 to 1000 (the official demos use 20,
    /// evaluation 50).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = super::values::steps)]
    pub steps: usize,
    /// Classifier-free guidance of the diffusion decoder against an all-zero code map
    /// (1 = off, up to 100; the official demos use 1.5 or 2.0).
    #[arg(long, value_name = "SCALE", default_value_t = 1.5, allow_negative_numbers = true, value_parser = super::values::guidance)]
    pub diffusion_cfg: f64,
    /// Precision of the DualViTok code map: f16 as the official pipeline computes it, or f32.
    #[arg(long, value_name = "P", value_parser = ["f16", "f32"], default_value = "f16")]
    pub code_precision: String,
    /// Decode the VAE in strips of at most this many MiB per activation (bounds device
    /// memory for large images). Each strip carries its full receptive field, so the
    /// result equals whole decoding up to float summation order: a few pixels may differ
    /// by 1 of 255.
    #[arg(long, value_name = "MIB", value_parser = super::values::positive)]
    pub vae_strip_mib: Option<usize>,
}

fn parse_output_size(text: &str) -> Result<ImageSize, String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{text}` is not WxH (e.g. 1024x768)"))?;
    let side = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{text}` is not WxH (e.g. 1024x768)"))
    };
    let size = ImageSize::new(side(w)?, side(h)?);
    resolution_index(size).map_err(|e| e.to_string())?;
    Ok(size)
}

impl DiffusionArgs {
    /// The decoder folder: the given path (or cached repo id), else the demo decoder (the
    /// caller prints the demo notice). Its files are checked here, before any computation.
    pub(super) fn decoder_path(&self) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let dir = match &self.diffusion {
            Some(path) => illume::weights::resolve_path(path)?,
            None => illume::demo::materialize("diffusion", illume::diffusion::demo::write)?,
        };
        illume::diffusion::check_decoder_folder(&dir)?;
        Ok(dir)
    }

    fn precision(&self) -> CodePrecision {
        match self.code_precision.as_str() {
            "f32" => CodePrecision::Float32,
            _ => CodePrecision::Float16,
        }
    }
}

/// Render `tokens` with the diffusion decoder at `dir` (codes from `tokenizer`), with a
/// progress bar per denoising step, and write the PNG with the parameters as text chunks
/// (`extra` first). Returns the seconds per step.
#[allow(clippy::too_many_arguments)]
pub(super) fn render_to_png<B: IllumeBackend>(
    tokens: &DualTokens,
    tokenizer: &DualViTok<B>,
    dir: &Path,
    args: &DiffusionArgs,
    size: Option<ImageSize>,
    seed: u64,
    output: &Path,
    extra: Vec<(String, String)>,
    device: &B::Device,
    bar: &ProgressBar,
) -> Result<f64, Box<dyn std::error::Error>> {
    bar.set_message(format!(
        "loading the diffusion decoder from {}",
        dir.display()
    ));
    let decoder = DiffusionDecoder::<B>::load(dir, device)?;
    let codes = CodeEmbedder::new(tokenizer, args.precision());
    let options = DecodeOptions {
        size,
        steps: args.steps,
        guidance_scale: args.diffusion_cfg,
        seed,
        vae_tiling: args.vae_strip_mib.map(|mib| VaeTiling {
            strip_bytes: mib << 20,
        }),
    };
    bar.set_length(args.steps as u64);
    bar.set_position(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("denoising");
    bar.reset_elapsed();
    let started = Instant::now();
    let mut per_step = 0.0;
    let image = decoder.decode(&codes, tokens, &options, |step| {
        per_step = started.elapsed().as_secs_f64() / (step.index + 1) as f64;
        bar.set_message(format!("denoising, {per_step:.2} s/step"));
        bar.set_position(step.index as u64 + 1);
    })?;
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.set_message("wrote the image");
    let [h1, w1] = tokens.semantic.shape;
    let [h2, w2] = tokens.pixel.shape;
    let mut text = extra;
    text.extend([
        (
            "Software".to_string(),
            format!("illume-rs {}", env!("CARGO_PKG_VERSION")),
        ),
        ("illume.decoder".to_string(), "diffusion".to_string()),
        ("illume.diffusion".to_string(), dir.display().to_string()),
        (
            "illume.scheduler".to_string(),
            decoder.scheduler().class_name().to_string(),
        ),
        ("illume.steps".to_string(), args.steps.to_string()),
        (
            "illume.diffusion_cfg".to_string(),
            args.diffusion_cfg.to_string(),
        ),
        ("illume.seed".to_string(), seed.to_string()),
        (
            "illume.size".to_string(),
            format!("{}x{}", image.width(), image.height()),
        ),
        (
            "illume.code_precision".to_string(),
            args.code_precision.clone(),
        ),
        (
            "illume.tokens".to_string(),
            format!("{h1}x{w1} semantic + {h2}x{w2} pixel"),
        ),
    ]);
    write_png(output, &image, &text)?;
    Ok(per_step)
}

struct Upscale<'a> {
    args: &'a Args,
    tokenizer: PathBuf,
    decoder: PathBuf,
}

impl BackendTask for Upscale<'_> {
    /// Input size, output size, seconds per step.
    type Output = Result<([u32; 2], ImageSize, f64), Box<dyn std::error::Error>>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let bar = spinner();
        let result = (|| {
            let args = self.args;
            let image = image_io::read_rgb(&args.image)?;
            let (w, h) = (image.width() as usize, image.height() as usize);
            let size = args.size.unwrap_or_else(|| nearest_aspect(w, h));
            let (tw, th) = (size.width / 2, size.height / 2);
            let tokenizer = load::<B>(&self.tokenizer, tw * th, &device, &bar)?;
            bar.set_message(format!("tokenizing at {tw}x{th}"));
            let resized = pil_resize_rgb(&image, tw, th, PilFilter::Bicubic)?;
            let tokens = tokenizer.encode_rgb(&resized, &device)?;
            let extra = vec![
                ("illume.pipeline".to_string(), "upscale".to_string()),
                (
                    "illume.source".to_string(),
                    args.image.display().to_string(),
                ),
                (
                    "illume.tokenizer".to_string(),
                    self.tokenizer.display().to_string(),
                ),
            ];
            let per_step = render_to_png(
                &tokens,
                &tokenizer,
                &self.decoder,
                &args.diffusion,
                Some(size),
                args.seed,
                &args.output,
                extra,
                &device,
                &bar,
            )?;
            Ok(([image.width(), image.height()], size, per_step))
        })();
        bar.finish_and_clear();
        result
    }
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    image_io::check_png_output(&args.output)?;
    // `tokenizer_path` prints the demo notice for a demo tokenizer.
    let tokenizer = tokenizer_path(args.tokenizer.as_deref())?;
    if args.tokenizer.is_some() && args.diffusion.diffusion.is_none() {
        eprintln!("{}", illume::demo::NOTICE);
    }
    let decoder = args.diffusion.decoder_path()?;
    let ([w, h], size, per_step) = compute.run(Upscale {
        args: &args,
        tokenizer,
        decoder,
    })??;
    println!(
        "wrote {} ({size}) from the {w}x{h} input tokenized at {}x{} ({per_step:.2} s/step)",
        args.output.display(),
        size.width / 2,
        size.height / 2
    );
    Ok(())
}
