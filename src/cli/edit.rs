//! `illume edit`: an image and an instruction → the edited image.

use std::path::PathBuf;

use illume::dualvitok::image_io;
use illume::mllm::editing::{nearest_anchor, ANCHORS};
use illume::pipeline::{check_output, Decoder, EditRequest};

use super::common::{
    generation_config_help, generation_timing, report_images, source, DiffusionArgs, ModelArgs,
    SamplingArgs, EDITING_DEFAULTS,
};
use super::progress::Progress;

#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "The input is letterboxed (white bars) to the trained anchor closest to its aspect ratio, \
encoded by the vision tower, and the MLLM generates the edited image at that anchor with \
classifier-free guidance against `Reconstruct the image according to the given image` on the \
same input. DualViTok decodes it; the bars are cropped and the result is resized back to the \
input's size. Defaults: the official app's editing recommendation (--temperature 0.7 \
--top-k 512 --top-p 0.8 --cfg 1.5).\n\n",
    generation_config_help!(),
    "\n\nExamples:\n  illume edit photo.jpg \"make the sky purple\" -o edited.png      (demo model)\n  \
illume edit --model ILLUME-MLLM/illume_plus-qwen2_5-3b --tokenizer ILLUME-MLLM/dualvitok \
photo.jpg \"make the sky purple\" -o edited.png"
))]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// The image to edit (PNG, JPEG, WebP, BMP, GIF, TIFF).
    pub image: PathBuf,
    /// What to change.
    pub instruction: String,
    /// Where to write the edited image (the input's size): .png, .jpg/.jpeg or .webp.
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// With --diffusion, the edit is rendered by the SDXL diffusion decoder (at twice the
    /// anchor size, then restored to the input's size) instead of DualViTok's pixel decoder.
    #[command(flatten)]
    pub diffusion: DiffusionArgs,
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    check_output(&args.output)?;
    let image = image_io::read_rgb(&args.image)?;
    let (h, w) = nearest_anchor(image.width() as usize, image.height() as usize, &ANCHORS);
    let mut builder = args.models.builder();
    let mut request = EditRequest::new(image, args.instruction.clone());
    request.sampling = args.sampling.request(h, w, &EDITING_DEFAULTS);
    if let Some(dir) = &args.diffusion.diffusion {
        builder = builder.diffusion(source(Some(dir)));
        request.decoder = Decoder::Diffusion(args.diffusion.settings(args.sampling.seed));
    }
    let pipeline = compute.open(builder)?;
    let edited = pipeline.edit(&request, &mut Progress::new(json))?;
    edited.save(&args.output)?;
    eprintln!("{} at the {w}x{h} anchor", generation_timing(&edited));
    report_images(json, &[(args.output, edited)])
}
