//! Embedding illume-rs in an application: load the ILLUME+ models from paths and run image
//! understanding, text-to-image and editing through the public API.
//!
//! ```sh
//! cargo run --release --example embed -- MLLM_DIR DUALVITOK_PATH IMAGE
//! cargo run --release --example embed            # the built-in demo models (random weights)
//! ```
//!
//! Writes `embed_generated.png` and `embed_edited.png` in the current directory.

use std::error::Error;
use std::path::PathBuf;

use illume::backends::NdArray;
use illume::dualvitok::{image_io, DualViTok};
use illume::mllm::generate::Silent;
use illume::mllm::text::TextStream;
use illume::mllm::{generate::Observer, IllumeMllm, ImageRequest, TextRequest};

/// Prints the answer as it is generated.
struct Print<'a> {
    mllm: &'a IllumeMllm<NdArray>,
    stream: TextStream,
}

impl Observer for Print<'_> {
    fn token(&mut self, _step: usize, token: u32) {
        if let Ok(Some(text)) = self.stream.push(&self.mllm.tokenizer, token) {
            print!("{text}");
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (mllm_dir, tokenizer_path, image) = match args.as_slice() {
        [mllm, tokenizer, image] => (mllm.clone(), tokenizer.clone(), image_io::read_rgb(image)?),
        [] => {
            eprintln!("{}", illume::demo::NOTICE);
            let mllm = illume::demo::materialize("mllm", illume::mllm::demo::write)?;
            let tokenizer = illume::demo::materialize("dualvitok", illume::dualvitok::demo::write)?;
            let image =
                image::RgbImage::from_fn(160, 120, |x, y| image::Rgb([x as u8, y as u8, 96]));
            (mllm, tokenizer, image)
        }
        _ => return Err("usage: embed [MLLM_DIR DUALVITOK_PATH IMAGE]".into()),
    };
    let device = Default::default();

    // DualViTok decodes generated tokens; its architecture also builds the MLLM's vision
    // tower (whose weights are the MLLM checkpoint's own).
    let tokenizer = DualViTok::<NdArray>::load(&tokenizer_path, &device)?;
    let mllm = IllumeMllm::<NdArray>::load(&mllm_dir, &tokenizer.config, &device)?;

    // Understanding: greedy, streamed.
    let mut print = Print {
        mllm: &mllm,
        stream: TextStream::default(),
    };
    let request = TextRequest {
        max_new_tokens: 64,
        ..TextRequest::default()
    };
    mllm.understand(&image, "Describe this image.", &request, &mut print)?;
    println!();

    // Text-to-image at 256x256 with the official settings (CFG 2.0, seeded sampling).
    let generated = mllm.text_to_image(
        "a red fox in the snow",
        &ImageRequest::text_to_image(256, 256),
        &mut Silent,
    )?;
    let [h1, w1] = generated.tokens.semantic.shape;
    let [h2, w2] = generated.tokens.pixel.shape;
    println!("generated {h1}x{w1} semantic + {h2}x{w2} pixel tokens");
    image_io::write_png(
        &tokenizer.decode_rgb(&generated.tokens)?,
        "embed_generated.png".as_ref(),
    )?;

    // Editing: generated at the input's anchor, then restored to the input's size.
    let edited = mllm.edit(
        &image,
        "make it look like winter",
        &ImageRequest::editing(),
        &mut Silent,
    )?;
    let decoded = tokenizer.decode_rgb(&edited.tokens)?;
    let restored = IllumeMllm::<NdArray>::restore_edit(
        &decoded,
        image.width() as usize,
        image.height() as usize,
    )?;
    image_io::write_png(&restored, "embed_edited.png".as_ref())?;
    println!("wrote embed_generated.png and embed_edited.png");
    Ok(())
}
