//! `illume tokenize`: an image → DualViTok's semantic and pixel token grids.

use std::path::{Path, PathBuf};
use std::time::Duration;

use illume::backends::{BackendTask, IllumeBackend};
use illume::dualvitok::{image_io, tokenizer::DEFAULT_MAX_PIXELS, DualTokens, DualViTok};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The image is resized to multiples of 16 pixels (Pillow bicubic, as the \
official tokenizer app does), then tokenized twice: a semantic grid (one token per 28x28 \
pixels of the ViT input, e.g. 9x9 for 256x256, 18x18 for 512x512) and a pixel grid (one token \
per 16x16 pixels, e.g. 16x16 for 256x256).\n\nExamples:\n  illume tokenize --tokenizer \
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
    /// Print the grids as JSON: {"semantic":{"shape":[h,w],"indices":[...]},"pixel":{...}}.
    #[arg(long)]
    pub json: bool,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS, value_parser = super::values::positive)]
    pub max_pixels: usize,
}

/// The tokenizer folder to load: the given path (or cached repo id), else the demo model.
pub(super) fn tokenizer_path(given: Option<&Path>) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match given {
        Some(path) => Ok(illume::weights::resolve_path(path)?),
        None => {
            eprintln!("{}", illume::demo::NOTICE);
            illume::demo::materialize("dualvitok", illume::dualvitok::demo::write)
        }
    }
}

/// A spinner on stderr naming the current stage.
pub(super) fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Load the tokenizer on the task's backend, with a spinner.
pub(super) fn load<B: IllumeBackend>(
    path: &Path,
    max_pixels: usize,
    device: &B::Device,
    bar: &ProgressBar,
) -> Result<DualViTok<B>, Box<dyn std::error::Error>> {
    bar.set_message(format!("loading DualViTok from {}", path.display()));
    Ok(DualViTok::load(path, device)?.with_max_pixels(max_pixels))
}

struct Tokenize<'a> {
    args: &'a Args,
    checkpoint: PathBuf,
}

impl BackendTask for Tokenize<'_> {
    /// The tokens and the size the image was tokenized at.
    type Output = Result<(DualTokens, [usize; 2]), Box<dyn std::error::Error>>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let bar = spinner();
        let result = (|| {
            let image = image_io::read_rgb(&self.args.image)?;
            let tokenizer = load::<B>(&self.checkpoint, self.args.max_pixels, &device, &bar)?;
            bar.set_message(format!("tokenizing {}x{}", image.width(), image.height()));
            let tokens = tokenizer.encode_rgb(&image, &device)?;
            let patch = tokenizer.pixel_patch();
            let [h2, w2] = tokens.pixel.shape;
            Ok((tokens, [w2 * patch, h2 * patch]))
        })();
        bar.finish_and_clear();
        result
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

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    let checkpoint = tokenizer_path(args.tokenizer.as_deref())?;
    let (tokens, [width, height]) = compute.run(Tokenize {
        args: &args,
        checkpoint,
    })??;
    if args.json {
        println!("{}", serde_json::to_string(&tokens)?);
    } else {
        println!(
            "{}: tokenized at {width}x{height} pixels",
            args.image.display()
        );
        print_grid("semantic", tokens.semantic.shape, &tokens.semantic.indices);
        print_grid("pixel", tokens.pixel.shape, &tokens.pixel.indices);
    }
    Ok(())
}
