//! Embedding illume-rs in an application through its front door, `illume::pipeline`: load
//! once, ask about an image, generate with progress and a cancel, edit, decode tokens.
//!
//! ```sh
//! cargo run --release --example embed -- MLLM_DIR DUALVITOK_PATH IMAGE
//! cargo run --release --example embed            # the built-in demo models (random weights)
//! ```
//!
//! Writes `embed_generated.png` and `embed_edited.png` in the current directory.

use std::error::Error;
use std::path::PathBuf;

use illume::pipeline::{
    DecodeRequest, Decoder, EditRequest, Event, Flow, GenerateRequest, ModelSource, NoEvents,
    Pipeline, PipelineError, TokenKind, UnderstandRequest,
};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    // The backend is chosen at run time (`auto`: CUDA, a real GPU, else the CPU); the
    // application code is the same on each.
    let (builder, image) = match args.as_slice() {
        [mllm, tokenizer, image] => (
            Pipeline::builder()
                .mllm(ModelSource::Path(mllm.clone()))
                .tokenizer(ModelSource::Path(tokenizer.clone())),
            image::open(image)?.to_rgb8(),
        ),
        [] => (
            Pipeline::builder(), // every model: the built-in demo
            image::RgbImage::from_fn(160, 120, |x, y| image::Rgb([x as u8, y as u8, 96])),
        ),
        _ => return Err("usage: embed [MLLM_DIR DUALVITOK_PATH IMAGE]".into()),
    };
    let pipeline = builder.build()?;
    println!(
        "computing on {} in {}",
        pipeline.backend(),
        pipeline.dtype()
    );

    // Understanding: the answer streams as text events.
    let mut request = UnderstandRequest::new(image.clone(), "Describe this image.");
    request.text.max_new_tokens = 64;
    let answer = pipeline.understand(&request, &mut |event: &Event| {
        if let Event::Token {
            kind: TokenKind::Text(text),
            ..
        } = event
        {
            print!("{text}");
        }
        Flow::Continue
    })?;
    println!("\n({} tokens in {:.1} s)", answer.tokens, answer.seconds);

    // Text-to-image, cancelled after 10 tokens: the pipeline stays usable.
    let request = GenerateRequest::new("a red fox in the snow", 256, 256);
    let cancelled = pipeline.generate(&request, &mut |event: &Event| match event {
        Event::Token { index, .. } if *index >= 9 => Flow::Cancel,
        _ => Flow::Continue,
    });
    assert!(matches!(cancelled, Err(PipelineError::Cancelled)));

    // The same request to the end, with a progress line.
    let images = pipeline.generate(&request, &mut |event: &Event| {
        if let Event::Token { index, max, .. } = event {
            eprint!("\rtoken {}/{max}", index + 1);
        }
        Flow::Continue
    })?;
    eprintln!();
    images[0].save("embed_generated.png".as_ref())?;

    // Editing: generated at the input's anchor, restored to the input's size.
    let edited = pipeline.edit(
        &EditRequest::new(image, "make it look like winter"),
        &mut NoEvents,
    )?;
    edited.save("embed_edited.png".as_ref())?;

    // Token grids back to pixels (here the generated image's own).
    let decoded = pipeline.decode(
        &DecodeRequest::new(images[0].tokens.clone(), Decoder::Pixel),
        &mut NoEvents,
    )?;
    assert_eq!(decoded.image, images[0].image);
    println!("wrote embed_generated.png and embed_edited.png");
    Ok(())
}
