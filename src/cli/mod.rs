//! Argument parsing and dispatch of the `illume` verbs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use illume::backends::BackendKind;

mod bench;
mod inspect;

/// ILLUME+ in pure Rust: understand images, generate and edit them, on CUDA, WGPU or CPU.
#[derive(Debug, Parser)]
#[command(name = "illume", version, propagate_version = true)]
#[command(long_about = "ILLUME+ (arXiv 2504.01934) in pure Rust on Burn.\n\n\
Official checkpoints (download them yourself, e.g. with `huggingface-cli download`):\n  \
ILLUME-MLLM/illume_plus-qwen2_5-3b   the MLLM (--model)\n  \
ILLUME-MLLM/dualvitok                the dual visual tokenizer (--tokenizer)\n  \
ILLUME-MLLM/dualvitok-sdxl-decoder   the diffusion decoder (--diffusion)\n\
A path may be a local directory/file or a Hugging Face repo id found in the local HF cache \
($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); nothing is downloaded.")]
struct Cli {
    /// Compute backend: ndarray (CPU), wgpu (Vulkan/Metal/DX12/GL) or cuda; only backends
    /// compiled into this binary are available (cargo features ndarray, wgpu, cuda).
    #[arg(long, global = true, env = "ILLUME_BACKEND", default_value = "ndarray")]
    backend: BackendKind,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Say what a checkpoint file or directory is: kind, tensors, parameters, dtypes, config.
    Inspect(inspect::Args),
    /// Measure throughput on each compiled backend and print one table per backend.
    Bench(bench::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of the CLI are displayed, never debug-printed or panicked.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;
