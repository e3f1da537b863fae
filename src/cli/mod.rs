//! Argument parsing and dispatch of the `illume` verbs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use illume::backends::{BackendChoice, Precision};
use illume::pipeline::{Pipeline, PipelineBuilder, PipelineError};

mod bench;
mod chat;
mod common;
mod decode;
mod doctor;
mod edit;
mod generate;
mod inspect;
mod progress;
mod reconstruct;
#[cfg(feature = "serve")]
mod serve;
mod tokenize;
mod understand;
mod upscale;
mod values;

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
    /// Compute backend: auto (CUDA if a device answers, else a wgpu adapter that is a real
    /// GPU, else the fast CPU backend), cpu (flex where compiled in), flex, ndarray (the CPU
    /// reference), wgpu (Vulkan/Metal/DX12/GL) or cuda; only backends compiled into this
    /// binary are available (cargo features flex, ndarray, wgpu, cuda).
    #[arg(long, global = true, env = "ILLUME_BACKEND", default_value = "auto")]
    backend: BackendChoice,

    /// Float precision of the computation: auto (bf16 on CUDA GPUs that have it, f16 on
    /// other GPUs that have it, f32 on CPUs), f32, f16 or bf16. Half precision halves the
    /// weights' memory; norms, softmax, the VQ code search and the diffusion latents and VAE
    /// stay in f32 as in the official code.
    #[arg(long, global = true, env = "ILLUME_PRECISION", default_value = "auto")]
    precision: Precision,

    /// CPU threads the CPU backends (flex, ndarray) compute on, and that feed GPU backends.
    /// Default: every core of this machine.
    #[arg(long, global = true, env = "ILLUME_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Machine-readable output: the verb's result as one JSON document on stdout (chat: one
    /// line per answer, bench: one line per row) instead of text; progress stays on stderr.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Say what a checkpoint file or directory is: kind, tensors, parameters, dtypes, config.
    Inspect(inspect::Args),
    /// Measure throughput on each compiled backend and print one table per backend.
    Bench(bench::Args),
    /// Check this machine's backends: device, limits, and parity of every component with the CPU.
    Doctor(doctor::Args),
    /// Tokenize an image with DualViTok: print its semantic and pixel token grids.
    Tokenize(tokenize::Args),
    /// Round-trip an image through DualViTok tokens and write the reconstruction.
    Reconstruct(reconstruct::Args),
    /// Ask the MLLM about one or more images; the answer streams as it is generated.
    Understand(understand::Args),
    /// Converse with the MLLM over several turns, with images (interactive without MESSAGE).
    Chat(chat::Args),
    /// Generate an image from a text prompt (MLLM tokens, decoded by DualViTok).
    Generate(generate::Args),
    /// Render token grids (from `tokenize --json`) to an image.
    Decode(decode::Args),
    /// Edit an image following an instruction.
    Edit(edit::Args),
    /// Upscale an image 2x: DualViTok tokens rendered by the SDXL diffusion decoder.
    Upscale(upscale::Args),
    /// Serve the models over an OpenAI-compatible HTTP API (chat, image generation, edits).
    #[cfg(feature = "serve")]
    Serve(serve::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        // Before any tensor exists, so the backends' first use finds this pool.
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(threads))
            .build_global()
        {
            eprintln!("error: --threads {threads}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let compute = Compute {
        backend: cli.backend,
        precision: cli.precision,
    };
    let json = cli.json;
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args, json),
        Command::Bench(args) => bench::run(args, cli.precision, json),
        Command::Doctor(args) => doctor::run(args, cli.precision, json),
        Command::Tokenize(args) => tokenize::run(args, compute, json),
        Command::Reconstruct(args) => reconstruct::run(args, compute, json),
        Command::Understand(args) => understand::run(args, compute, json),
        Command::Chat(args) => chat::run(args, compute, json),
        Command::Generate(args) => generate::run(args, compute, json),
        Command::Decode(args) => decode::run(args, compute, json),
        Command::Edit(args) => edit::run(args, compute, json),
        Command::Upscale(args) => upscale::run(args, compute, json),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(args, compute),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                // A script reading stdout gets a document either way.
                println!("{}", serde_json::json!({ "error": e.to_string() }));
            }
            ExitCode::FAILURE
        }
    }
}

/// Where a verb computes: the backend and the float precision asked for.
#[derive(Debug, Clone, Copy)]
pub struct Compute {
    pub backend: BackendChoice,
    pub precision: Precision,
}

impl Compute {
    /// Build the pipeline on this backend, saying on stderr where it computes.
    pub fn open(self, builder: PipelineBuilder) -> Result<Pipeline, PipelineError> {
        let pipeline = builder
            .backend(self.backend)
            .precision(self.precision)
            .build()?;
        eprintln!(
            "computing on {} in {}",
            pipeline.backend(),
            pipeline.dtype()
        );
        Ok(pipeline)
    }
}

/// Errors of the CLI are displayed, never debug-printed or panicked.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;
