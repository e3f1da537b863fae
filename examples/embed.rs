//! Embedding illume-rs in an application through its front door, `illume::pipeline`: load
//! once, chat about two images over two turns, generate with progress, previews and a
//! cancel, edit, decode tokens.
//!
//! ```sh
//! cargo run --release --example embed -- MLLM_DIR DUALVITOK_PATH IMAGE
//! cargo run --release --example embed            # the built-in demo models (random weights)
//! ```
//!
//! Writes `embed_generated.png` and `embed_edited.webp` in the current directory.

use std::error::Error;
use std::path::PathBuf;

use std::time::Duration;

use illume::pipeline::{
    ChatRequest, DecodeRequest, Decoder, EditRequest, Event, Flow, GenerateRequest, ModelSource,
    NoEvents, Pipeline, PipelineError, TokenKind, Turn,
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

    // A conversation: two images in the first turn, then a text-only follow-up; every
    // answer is generated from the whole conversation.
    let images = vec![image.clone(), image::imageops::flip_horizontal(&image)];
    let mut turns = vec![Turn::user("How do these two images differ?", 2)];
    let first = ask(&pipeline, &turns, &images)?;
    turns.push(Turn::assistant(first));
    turns.push(Turn::user("And what do they have in common?", 0));
    ask(&pipeline, &turns, &images)?;

    // Text-to-image, cancelled after 10 tokens: the pipeline stays usable.
    let request = GenerateRequest::new("a red fox in the snow", 256, 256);
    let cancelled = pipeline.generate(&request, &mut |event: &Event| match event {
        Event::Token { index, .. } if *index >= 9 => Flow::Cancel,
        _ => Flow::Continue,
    });
    assert!(matches!(cancelled, Err(PipelineError::Cancelled)));

    // The same request to the end, with a progress line and a preview of the picture
    // forming (the grids so far, decoded at most every 2 s).
    let mut request = request;
    request.preview_every = Some(Duration::from_secs(2));
    let images = pipeline.generate(&request, &mut |event: &Event| {
        match event {
            Event::Token { index, max, .. } => eprint!("\rtoken {}/{max}", index + 1),
            Event::Preview { picture, rows, .. } => {
                // An app would show `picture`; here it is saved.
                let _ = picture.save("embed_preview.png");
                eprint!(" (preview: {} + {} rows)", rows[0], rows[1]);
            }
            _ => {}
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
    // The format follows the extension; the parameters go into the file's metadata.
    edited.save("embed_edited.webp".as_ref())?;

    // Token grids back to pixels (here the generated image's own).
    let decoded = pipeline.decode(
        &DecodeRequest::new(images[0].tokens.clone(), Decoder::Pixel),
        &mut NoEvents,
    )?;
    assert_eq!(decoded.image, images[0].image);
    println!("wrote embed_generated.png and embed_edited.webp");
    Ok(())
}

/// The next answer of a conversation, streamed to stdout as its text events arrive.
fn ask(
    pipeline: &Pipeline,
    turns: &[Turn],
    images: &[image::RgbImage],
) -> Result<String, PipelineError> {
    let mut request = ChatRequest::new(turns.to_vec(), images.to_vec());
    request.text.max_new_tokens = 48;
    let answer = pipeline.chat(&request, &mut |event: &Event| {
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
    Ok(answer.text)
}
