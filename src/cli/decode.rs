//! `illume decode`: token grids (as `tokenize --json` writes them) → an image.

use std::path::PathBuf;

use illume::dualvitok::DualTokens;
use illume::pipeline::{check_output, DecodeRequest, Decoder};

use super::common::{report_images, source, DiffusionArgs};
use super::progress::Progress;
use super::tokenize::tokenizer_only;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The tokens are DualViTok's semantic and pixel grids in the JSON form \
`illume tokenize --json` prints: {\"semantic\":{\"shape\":[h,w],\"indices\":[...]},\
\"pixel\":{...}}. They are rendered by DualViTok's pixel decoder at 16 pixels per pixel \
token, or with --diffusion by the SDXL diffusion decoder at twice that size. The tokenizer \
must be the one that made the tokens.\n\nExample:\n  illume tokenize cat.png --json > \
cat.json && illume decode cat.json -o cat_decoded.png      (demo model)"
)]
pub struct Args {
    /// DualViTok checkpoint: a folder or file, or a Hugging Face repo id in the local
    /// cache. Default: the built-in demo model.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// The token grids (JSON).
    pub tokens: PathBuf,
    /// Where to write the image (.png, .jpg/.jpeg or .webp; the parameters go into
    /// its metadata).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    /// With --diffusion: seed of the initial latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub diffusion: DiffusionArgs,
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    check_output(&args.output)?;
    let text = std::fs::read_to_string(&args.tokens)
        .map_err(|e| format!("{}: {e}", args.tokens.display()))?;
    let tokens: DualTokens = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not the token JSON of `illume tokenize --json`: {e}",
            args.tokens.display()
        )
    })?;
    let mut builder = tokenizer_only(args.tokenizer.as_ref());
    let decoder = match &args.diffusion.diffusion {
        Some(dir) => {
            builder = builder.diffusion(source(Some(dir)));
            Decoder::Diffusion(args.diffusion.settings(args.seed))
        }
        None => Decoder::Pixel,
    };
    let pipeline = compute.open(builder)?;
    let image = pipeline.decode(
        &DecodeRequest::new(tokens, decoder),
        &mut Progress::new(json),
    )?;
    image.save(&args.output)?;
    report_images(json, &[(args.output, image)])
}
