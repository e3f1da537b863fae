//! `illume understand`: an image and a question → the MLLM's answer, streamed as it is
//! generated.

use std::path::PathBuf;

use illume::dualvitok::image_io;
use illume::mllm::{Decoding, SamplingParams, TextRequest};
use illume::pipeline::UnderstandRequest;

use super::common::{generation_config_help, ModelArgs};
use super::progress::Progress;

#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "The image is resized to multiples of 16 within the checkpoint's pixel limits (Pillow \
bicubic, as the official image processor), encoded by the vision tower into semantic and pixel \
features, wrapped in the image structure tokens and spliced into the Qwen chat prompt \
`<image>\\n{question}`. The answer is decoded greedily by default (as the official evaluation) \
with image tokens masked, and printed as it is generated.\n\n",
    generation_config_help!(),
    "\n\nExamples:\n  illume understand cat.png \"What is in this picture?\"      (demo model)\n  \
illume understand --model ILLUME-MLLM/illume_plus-qwen2_5-3b cat.png \"Describe this image.\""
))]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// The image to ask about (PNG, JPEG, WebP, BMP, GIF, TIFF).
    pub image: PathBuf,
    /// The question.
    pub question: String,
    /// Stop after this many tokens.
    #[arg(long, default_value_t = 1024, value_parser = super::values::positive)]
    pub max_new_tokens: usize,
    /// Sample instead of greedy decoding, with this seed (ChaCha8).
    #[arg(long, value_name = "SEED")]
    pub sample: Option<u64>,
    /// Temperature when sampling (> 0).
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true, value_parser = super::values::temperature)]
    pub temperature: f32,
    /// Top-k when sampling (0 = off).
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Top-p when sampling, in (0, 1] (1 = off).
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true, value_parser = super::values::top_p)]
    pub top_p: f32,
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    let image = image_io::read_rgb(&args.image)?;
    let mut request = UnderstandRequest::new(image, args.question.clone());
    request.text = TextRequest {
        max_new_tokens: args.max_new_tokens,
        decoding: match args.sample {
            Some(seed) => Decoding::Sample { seed },
            None => Decoding::Greedy,
        },
        sampling: SamplingParams::new(args.temperature, args.top_k, args.top_p),
    };
    let pipeline = compute.open(args.models.builder())?;
    let answer = pipeline.understand(&request, &mut Progress::new())?;
    println!();
    eprintln!(
        "{} tokens in {:.1} s ({:.1} tokens/s, image encoding included)",
        answer.tokens,
        answer.seconds,
        answer.tokens as f64 / answer.seconds.max(1e-9)
    );
    Ok(())
}
