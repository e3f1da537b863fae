//! `illume upscale`: an image → DualViTok tokens → the SDXL diffusion decoder at twice the
//! token-image size.

use std::path::PathBuf;

use illume::diffusion::resolution::resolution_index;
use illume::diffusion::ImageSize;
use illume::dualvitok::image_io;
use illume::pipeline::{check_output, UpscaleRequest};

use super::common::{report_images, source, DiffusionArgs};
use super::progress::Progress;
use super::tokenize::tokenizer_only;

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
    /// Where to write the result (.png, .jpg/.jpeg or .webp; the parameters go into
    /// its metadata).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Output size WxH, one of the trained sizes [default: the one nearest in aspect ratio].
    #[arg(long, value_name = "WxH", value_parser = parse_output_size)]
    pub size: Option<ImageSize>,
    /// Seed of the initial latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    check_output(&args.output)?;
    let image = image_io::read_rgb(&args.image)?;
    let (w, h) = (image.width(), image.height());
    let builder = tokenizer_only(args.tokenizer.as_ref())
        .diffusion(source(args.diffusion.diffusion.as_ref()));
    let mut request = UpscaleRequest::new(image);
    request.diffusion = args.diffusion.settings(args.seed);
    request.diffusion.options.size = args.size;
    let pipeline = compute.open(builder)?;
    let upscaled = pipeline.upscale(&request, &mut Progress::new(json))?;
    upscaled.save(&args.output)?;
    if json {
        return report_images(json, &[(args.output, upscaled)]);
    }
    let (out_w, out_h) = (upscaled.image.width(), upscaled.image.height());
    println!(
        "wrote {} ({out_w}x{out_h}) from the {w}x{h} input tokenized at {}x{}",
        args.output.display(),
        out_w / 2,
        out_h / 2
    );
    Ok(())
}
