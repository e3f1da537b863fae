//! `illume tokenize`: an image → DualViTok's semantic and pixel token grids.

use std::path::PathBuf;

use illume::dualvitok::{image_io, tokenizer::DEFAULT_MAX_PIXELS};
use illume::pipeline::{ModelSource, Pipeline, PipelineBuilder};

use super::progress::Progress;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The image is resized to multiples of 16 pixels (Pillow bicubic, as the \
official tokenizer app does), then tokenized twice: a semantic grid (one token per 28x28 \
pixels of the ViT input, e.g. 9x9 for 256x256, 18x18 for 512x512) and a pixel grid (one token \
per 16x16 pixels, e.g. 16x16 for 256x256). With --json the grids are printed as \
{\"semantic\":{\"shape\":[h,w],\"indices\":[...]},\"pixel\":{...}}, the input of `illume decode`.\n\nExamples:\n  illume tokenize --tokenizer \
ILLUME-MLLM/dualvitok cat.png\n  illume tokenize --tokenizer ./dualvitok cat.jpg --json > \
tokens.json"
)]
pub struct Args {
    /// DualViTok checkpoint: a folder or file (`pytorch_model.bin`, `model.safetensors`) or a
    /// Hugging Face repo id in the local cache. Default: the built-in demo model.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// The image to tokenize (PNG, JPEG, WebP, BMP, GIF, TIFF).
    pub image: PathBuf,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS, value_parser = super::values::positive)]
    pub max_pixels: usize,
}

/// A pipeline of DualViTok alone: `--tokenizer`, else the demo one.
pub(super) fn tokenizer_only(tokenizer: Option<&PathBuf>) -> PipelineBuilder {
    match tokenizer {
        Some(path) => Pipeline::builder().tokenizer(ModelSource::Path(path.clone())),
        None => Pipeline::builder(),
    }
}

fn print_grid(name: &str, shape: [usize; 2], indices: &[u32]) {
    println!(
        "{name} tokens: {}x{} ({})",
        shape[0],
        shape[1],
        indices.len()
    );
    for row in indices.chunks(shape[1]) {
        let cells: Vec<String> = row.iter().map(u32::to_string).collect();
        println!("  {}", cells.join(" "));
    }
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    let image = image_io::read_rgb(&args.image)?;
    let pipeline = compute.open(tokenizer_only(args.tokenizer.as_ref()))?;
    let tokens = pipeline.tokenize(&image, args.max_pixels, &mut Progress::new(json))?;
    if json {
        println!("{}", serde_json::to_string(&tokens)?);
    } else {
        // The pixel branch works on 16x16 patches.
        let [h2, w2] = tokens.pixel.shape;
        println!(
            "{}: tokenized at {}x{} pixels",
            args.image.display(),
            w2 * 16,
            h2 * 16
        );
        print_grid("semantic", tokens.semantic.shape, &tokens.semantic.indices);
        print_grid("pixel", tokens.pixel.shape, &tokens.pixel.indices);
    }
    Ok(())
}
