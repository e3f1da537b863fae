use std::path::PathBuf;

use illume::weights;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A checkpoint file (.safetensors, .bin, .pt, *.index.json) or a directory holding one
    /// (an MLLM folder, a DualViTok folder, a diffusers pipeline folder), or a Hugging Face
    /// repo id present in the local cache.
    path: PathBuf,
}

pub fn run(args: Args) -> super::CliResult {
    let path = weights::resolve_path(&args.path)?;
    let inspection = weights::inspect(&path)?;
    print!("{inspection}");
    Ok(())
}
