//! `illume reconstruct`: an image → DualViTok tokens → the pixel decoder's image.

use std::path::PathBuf;

use illume::backends::{BackendTask, IllumeBackend};
use illume::dualvitok::{image_io, tokenizer::DEFAULT_MAX_PIXELS, DualTokens};

use super::tokenize::{load, spinner, tokenizer_path};

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
    /// Where to write the reconstruction (PNG).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS, value_parser = super::values::positive)]
    pub max_pixels: usize,
}

struct Reconstruct<'a> {
    args: &'a Args,
    checkpoint: PathBuf,
}

impl BackendTask for Reconstruct<'_> {
    /// The tokens and the size of the written image.
    type Output = Result<(DualTokens, [u32; 2]), Box<dyn std::error::Error>>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let bar = spinner();
        let result = (|| {
            let image = image_io::read_rgb(&self.args.image)?;
            let tokenizer = load::<B>(&self.checkpoint, self.args.max_pixels, &device, &bar)?;
            bar.set_message(format!("tokenizing {}x{}", image.width(), image.height()));
            let tokens = tokenizer.encode_rgb(&image, &device)?;
            bar.set_message("decoding");
            let reconstruction = tokenizer.decode_rgb(&tokens)?;
            bar.set_message(format!("writing {}", self.args.output.display()));
            image_io::write_png(&reconstruction, &self.args.output)?;
            Ok((tokens, [reconstruction.width(), reconstruction.height()]))
        })();
        bar.finish_and_clear();
        result
    }
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    image_io::check_png_output(&args.output)?;
    let checkpoint = tokenizer_path(args.tokenizer.as_deref())?;
    let (tokens, [width, height]) = compute.run(Reconstruct {
        args: &args,
        checkpoint,
    })??;
    let [h1, w1] = tokens.semantic.shape;
    let [h2, w2] = tokens.pixel.shape;
    println!(
        "wrote {} ({width}x{height}) from {h1}x{w1} semantic + {h2}x{w2} pixel tokens",
        args.output.display()
    );
    Ok(())
}
