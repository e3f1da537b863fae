//! `illume reconstruct`: an image → DualViTok tokens → the pixel decoder's image.

use std::path::PathBuf;

use illume::dualvitok::{image_io, tokenizer::DEFAULT_MAX_PIXELS};
use illume::pipeline::check_output;

use super::common::report_images;

use super::progress::Progress;
use super::tokenize::tokenizer_only;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Round trip through both token grids, as the official tokenizer app \
does: resize to multiples of 16, encode, decode with the pixel decoder, write a PNG of the \
aligned size.\n\nExample:\n  illume reconstruct --tokenizer ILLUME-MLLM/dualvitok cat.jpg -o \
cat_recon.png"
)]
pub struct Args {
    /// DualViTok checkpoint: a folder or file (`pytorch_model.bin`, `model.safetensors`) or a
    /// Hugging Face repo id in the local cache. Default: the built-in demo model.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// The image to reconstruct (PNG, JPEG, WebP, BMP, GIF, TIFF).
    pub image: PathBuf,
    /// Where to write the reconstruction (.png, .jpg/.jpeg or .webp; the parameters go into
    /// its metadata).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS, value_parser = super::values::positive)]
    pub max_pixels: usize,
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    check_output(&args.output)?;
    let image = image_io::read_rgb(&args.image)?;
    let pipeline = compute.open(tokenizer_only(args.tokenizer.as_ref()))?;
    let reconstruction = pipeline.reconstruct(&image, args.max_pixels, &mut Progress::new(json))?;
    reconstruction.save(&args.output)?;
    if json {
        return report_images(json, &[(args.output, reconstruction)]);
    }
    let [h1, w1] = reconstruction.tokens.semantic.shape;
    let [h2, w2] = reconstruction.tokens.pixel.shape;
    println!(
        "wrote {} ({}x{}) from {h1}x{w1} semantic + {h2}x{w2} pixel tokens",
        args.output.display(),
        reconstruction.image.width(),
        reconstruction.image.height()
    );
    Ok(())
}
