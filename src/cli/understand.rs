//! `illume understand`: one or more images and a question → the MLLM's answer, streamed as
//! it is generated.

use std::path::PathBuf;

use illume::dualvitok::image_io;
use illume::pipeline::UnderstandRequest;

use super::common::{
    answer_json, answer_timing, generation_config_help, print_json, ModelArgs, TextArgs,
};
use super::progress::Progress;

#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "Each image is resized to multiples of 16 within the checkpoint's pixel limits (Pillow \
bicubic, as the official image processor), encoded by the vision tower into semantic and pixel \
features, wrapped in the image structure tokens and spliced into the Qwen chat prompt \
`<image>\\n{question}` (one `<image>\\n` per image, in order: IMAGE, then each --image). The \
answer is decoded greedily by default (as the official evaluation) with image tokens masked, \
and printed as it is generated. For several turns, use `illume chat`.\n\n",
    generation_config_help!(),
    "\n\nExamples:\n  illume understand cat.png \"What is in this picture?\"      (demo model)\n  \
illume understand --model ILLUME-MLLM/illume_plus-qwen2_5-3b cat.png \"Describe this image.\"\n  \
illume understand before.png \"What changed?\" --image after.png --json"
))]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// The image to ask about (PNG, JPEG, WebP, BMP, GIF, TIFF).
    pub image: PathBuf,
    /// The question.
    pub question: String,
    /// Another image the question is about (repeatable; they follow IMAGE in the prompt).
    #[arg(long = "image", value_name = "PATH")]
    pub more_images: Vec<PathBuf>,
    #[command(flatten)]
    pub text: TextArgs,
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    let mut images = Vec::with_capacity(1 + args.more_images.len());
    for path in std::iter::once(&args.image).chain(&args.more_images) {
        images.push(image_io::read_rgb(path)?);
    }
    let mut request = UnderstandRequest::with_images(images, args.question.clone());
    request.text = args.text.request();
    let pipeline = compute.open(args.models.builder())?;
    let answer = pipeline.understand(&request, &mut Progress::new(json))?;
    if json {
        return print_json(&answer_json(&answer));
    }
    println!();
    eprintln!("{}", answer_timing(&answer));
    Ok(())
}
