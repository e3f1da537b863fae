//! `illume understand`: an image and a question → the MLLM's answer, streamed as it is
//! generated.

use std::io::Write;
use std::path::PathBuf;

use illume::backends::{BackendTask, IllumeBackend};
use illume::dualvitok::image_io;
use illume::mllm::generate::Observer;
use illume::mllm::text::{TextStream, TextTokenizer};
use illume::mllm::{Decoding, SamplingParams, TextRequest};

use super::generate::{generation_config_help, spinner, ModelArgs, Models};

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

/// Prints each new piece of text as soon as it is complete.
struct Streamer<'a> {
    tokenizer: &'a TextTokenizer,
    stream: TextStream,
    count: usize,
    error: Option<illume::mllm::MllmError>,
}

impl Observer for Streamer<'_> {
    fn token(&mut self, _step: usize, token: u32) {
        self.count += 1;
        match self.stream.push(self.tokenizer, token) {
            Ok(Some(text)) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            Ok(None) => {}
            Err(e) => self.error = Some(e),
        }
    }
}

struct Understand<'a> {
    args: &'a Args,
    models: Models,
}

impl BackendTask for Understand<'_> {
    type Output = Result<(usize, f64), Box<dyn std::error::Error>>;

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let image = image_io::read_rgb(&self.args.image)?;
        let bar = spinner();
        let mllm = match self.models.load_mllm::<B>(&device, &bar) {
            Ok(m) => m,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        bar.set_message(format!(
            "reading the {}x{} image",
            image.width(),
            image.height()
        ));
        let request = TextRequest {
            max_new_tokens: self.args.max_new_tokens,
            decoding: match self.args.sample {
                Some(seed) => Decoding::Sample { seed },
                None => Decoding::Greedy,
            },
            sampling: SamplingParams::new(self.args.temperature, self.args.top_k, self.args.top_p),
        };
        let mut streamer = Streamer {
            tokenizer: &mllm.tokenizer,
            stream: TextStream::default(),
            count: 0,
            error: None,
        };
        // The spinner covers the image encoding and the prompt; text streams after it.
        struct FirstToken<'a, 'b>(&'a indicatif::ProgressBar, &'a mut Streamer<'b>);
        impl Observer for FirstToken<'_, '_> {
            fn token(&mut self, step: usize, token: u32) {
                if step == 0 {
                    self.0.finish_and_clear();
                }
                self.1.token(step, token);
            }
        }
        let started = std::time::Instant::now();
        let result = mllm.understand(
            &image,
            &self.args.question,
            &request,
            &mut FirstToken(&bar, &mut streamer),
        );
        bar.finish_and_clear();
        result?;
        println!();
        if let Some(e) = streamer.error {
            return Err(e.into());
        }
        Ok((streamer.count, started.elapsed().as_secs_f64()))
    }
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    let models = args.models.resolve(false)?;
    let (tokens, seconds) = compute.run(Understand {
        args: &args,
        models,
    })??;
    eprintln!(
        "{tokens} tokens in {seconds:.1} s ({:.1} tokens/s, image encoding included)",
        tokens as f64 / seconds.max(1e-9)
    );
    Ok(())
}
