//! `illume edit`: an image and an instruction → the edited image.

use std::path::PathBuf;

use illume::backends::{BackendTask, IllumeBackend};
use illume::dualvitok::image_io;
use illume::mllm::editing::{nearest_anchor, ANCHORS};
use illume::mllm::{IllumeMllm, ImageGrid};

use illume::mllm::SamplingParams;

use super::generate::{
    decode_tokens, generation_config_help, spinner, ModelArgs, Models, SamplingArgs,
    SamplingDefaults, TokenProgress,
};

/// Editing: CFG 1.5, temperature 0.7, top-k 512, top-p 0.8 (official app tips).
const EDITING_DEFAULTS: SamplingDefaults = SamplingDefaults {
    cfg: 1.5,
    global: SamplingParams::new(0.7, 512, 0.8),
};

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
    /// Where to write the edited image (PNG, the input's size).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

struct Edit<'a> {
    args: &'a Args,
    models: Models,
}

impl BackendTask for Edit<'_> {
    type Output = Result<(usize, f64, (usize, usize)), Box<dyn std::error::Error>>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let image = image_io::read_rgb(&self.args.image)?;
        let bar = spinner();
        let result = (|| {
            let (w, h) = (image.width() as usize, image.height() as usize);
            let anchor = nearest_anchor(w, h, &ANCHORS);
            let request = self
                .args
                .sampling
                .request(anchor.0, anchor.1, &EDITING_DEFAULTS);
            let mllm = self.models.load_mllm::<B>(&device, &bar)?;
            bar.set_message("encoding the input image");
            let total = ImageGrid::for_size(anchor.0, anchor.1).max_new_tokens();
            let mut progress = TokenProgress::new(
                &bar,
                total,
                &format!("editing at {}x{}", anchor.0, anchor.1),
            );
            let started = std::time::Instant::now();
            let edited = mllm.edit(&image, &self.args.instruction, &request, &mut progress)?;
            let seconds = started.elapsed().as_secs_f64();
            let tokenizer = self
                .models
                .tokenizer
                .as_deref()
                .expect("checked by resolve");
            let decoded = decode_tokens::<B>(&edited.tokens, tokenizer, &device, &bar)?;
            let restored = IllumeMllm::<B>::restore_edit(&decoded, w, h)?;
            image_io::write_png(&restored, &self.args.output)?;
            Ok((edited.ids.len(), seconds, anchor))
        })();
        bar.finish_and_clear();
        result
    }
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    image_io::check_png_output(&args.output)?;
    let models = args.models.resolve(true)?;
    let (tokens, seconds, (h, w)) = compute.run(Edit {
        args: &args,
        models,
    })??;
    eprintln!(
        "{tokens} tokens at the {h}x{w} anchor in {seconds:.1} s ({:.1} tokens/s)",
        tokens as f64 / seconds.max(1e-9)
    );
    println!("wrote {}", args.output.display());
    Ok(())
}
