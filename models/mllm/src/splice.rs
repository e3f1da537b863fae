//! The image's place in the LLM input (`illume_arch.py`): projected features wrapped in the
//! embeddings of the structure tokens, spliced into the prompt at its `<image>` placeholder.
//!
//! Layout of one image (the same as a generated image, with continuous features where a
//! generated image has code tokens):
//! `<start_of_image> <start_of_level0> (semantic row, <end_of_line>)×h1 <end_of_level0>
//! <start_of_level1> (pixel row, <end_of_line>)×h2 <end_of_level1> <end_of_image>`.

use burn::tensor::{backend::Backend, Tensor};

use crate::decoder::LanguageModel;
use crate::error::{MllmError, Result};
use crate::text::PromptToken;
use crate::vocab::StructureTokens;

/// `rows` `[h·w, hidden]` (row-major) with an `<end_of_line>` embedding after each row.
fn rows_with_end_of_line<B: Backend>(
    rows: Tensor<B, 2>,
    grid: [usize; 2],
    end_of_line: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [h, w] = grid;
    let hidden = rows.dims()[1];
    let eol = end_of_line.reshape([1, 1, hidden]).expand([h, 1, hidden]);
    Tensor::cat(vec![rows.reshape([h, w, hidden]), eol], 1).reshape([h * (w + 1), hidden])
}

/// The embedding sequence of one input image, `[h1(w1+1) + h2(w2+1) + 6, hidden]`.
pub fn image_sequence<B: Backend>(
    lm: &LanguageModel<B>,
    structure: &StructureTokens,
    semantic: Tensor<B, 2>,
    semantic_grid: [usize; 2],
    pixel: Tensor<B, 2>,
    pixel_grid: [usize; 2],
) -> Result<Tensor<B, 2>> {
    let s = structure;
    let ids = [
        s.start_of_image,
        s.start_of_level0,
        s.end_of_line,
        s.end_of_level0,
        s.start_of_level1,
        s.end_of_level1,
        s.end_of_image,
    ];
    let special = lm.embed(&ids)?;
    let hidden = special.dims()[2];
    let special = special.reshape([ids.len(), hidden]);
    let token = |i: usize| special.clone().slice([i..i + 1, 0..hidden]);
    Ok(Tensor::cat(
        vec![
            token(0),
            token(1),
            rows_with_end_of_line(semantic, semantic_grid, token(2)),
            token(3),
            token(4),
            rows_with_end_of_line(pixel, pixel_grid, token(2)),
            token(5),
            token(6),
        ],
        0,
    ))
}

/// Embed `prompt`, replacing its image placeholders by `images` in order; `[1, L, hidden]`.
/// `max_len` is the checkpoint's `tokenizer_model_max_length` (the official code silently
/// truncates longer sequences, cutting the assistant turn; here it is an error).
pub fn splice<B: Backend>(
    lm: &LanguageModel<B>,
    prompt: &[PromptToken],
    images: &[Tensor<B, 2>],
    max_len: Option<usize>,
) -> Result<Tensor<B, 3>> {
    let placeholders = prompt.iter().filter(|t| **t == PromptToken::Image).count();
    if placeholders != images.len() {
        return Err(MllmError::Prompt(format!(
            "the prompt has {placeholders} image placeholders for {} images",
            images.len()
        )));
    }
    let mut parts: Vec<Tensor<B, 2>> = Vec::new();
    let mut images = images.iter();
    let mut run: Vec<u32> = Vec::new();
    let flush = |run: &mut Vec<u32>, parts: &mut Vec<Tensor<B, 2>>| -> Result<()> {
        if !run.is_empty() {
            let e = lm.embed(run)?;
            let [_, n, hidden] = e.dims();
            parts.push(e.reshape([n, hidden]));
            run.clear();
        }
        Ok(())
    };
    for token in prompt {
        match token {
            PromptToken::Text(id) => run.push(*id),
            PromptToken::Image => {
                flush(&mut run, &mut parts)?;
                parts.push(images.next().expect("counted above").clone());
            }
        }
    }
    flush(&mut run, &mut parts)?;
    if parts.is_empty() {
        return Err(MllmError::Prompt("the prompt is empty".into()));
    }
    let sequence = Tensor::cat(parts, 0);
    let [len, hidden] = sequence.dims();
    if let Some(max) = max_len.filter(|&m| len > m) {
        return Err(MllmError::Prompt(format!(
            "the prompt with its image is {len} positions, over the model's maximum of {max} \
             (use a smaller image)"
        )));
    }
    Ok(sequence.reshape([1, len, hidden]))
}
