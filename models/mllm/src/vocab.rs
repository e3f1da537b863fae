//! Where the image vocabulary sits in the token ids, derived from the checkpoint.
//!
//! ILLUME+ extends the text vocabulary (`prepare_llm_with_extended_vision_tokenizer.py`)
//! with, in order: 7 structure tokens, 16 `<height_{64k}>` and 16 `<width_{64k}>` resolution
//! tags, the level-0 (semantic) codes `<|image_level0_i|>` and the level-1 (pixel) codes
//! `<|image_level1_i|>`; the embedding may have unused padding rows after them. Nothing here
//! is hard-coded: for the real 3B checkpoint this yields `<start_of_image>` = 151665, level 0
//! = [151704, 184472), level 1 = [184472, 282776), but a tiny test vocabulary has other ids.
//!
//! Sources: the structure ids from `config.json`'s `special_tokens_ids` (checked against
//! the tokenizer's strings where it has them), the resolution tags and `<|im_end|>` from the
//! tokenizer, the level ranges from the tokenizer's `<|image_level{L}_{i}|>` tokens when it
//! has them, otherwise from the DualViTok codebook sizes placed right after the last
//! resolution tag (the extension order).

use std::ops::Range;

use tokenizers::Tokenizer;

use crate::config::MllmConfig;
use crate::error::{MllmError, Result};

/// The seven image-structure tokens, in `special_tokens_ids` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructureTokens {
    pub start_of_image: u32,
    pub end_of_image: u32,
    pub end_of_line: u32,
    pub start_of_level0: u32,
    pub end_of_level0: u32,
    pub start_of_level1: u32,
    pub end_of_level1: u32,
}

impl StructureTokens {
    /// Their strings, in `special_tokens_ids` order.
    pub const NAMES: [&'static str; 7] = [
        "<start_of_image>",
        "<end_of_image>",
        "<end_of_line>",
        "<start_of_level0>",
        "<end_of_level0>",
        "<start_of_level1>",
        "<end_of_level1>",
    ];

    fn from_ids(ids: [u32; 7]) -> Self {
        Self {
            start_of_image: ids[0],
            end_of_image: ids[1],
            end_of_line: ids[2],
            start_of_level0: ids[3],
            end_of_level0: ids[4],
            start_of_level1: ids[5],
            end_of_level1: ids[6],
        }
    }

    pub fn ids(&self) -> [u32; 7] {
        [
            self.start_of_image,
            self.end_of_image,
            self.end_of_line,
            self.start_of_level0,
            self.end_of_level0,
            self.start_of_level1,
            self.end_of_level1,
        ]
    }
}

/// Resolution tags exist for multiples of this many pixels...
pub const RESOLUTION_STEP: usize = 64;
/// ...up to this size (16 tags per axis).
pub const MAX_RESOLUTION: usize = 1024;

/// Ids and ranges of the image vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabLayout {
    pub vocab_size: usize,
    pub structure: StructureTokens,
    /// `<|im_end|>`: end of an assistant turn (the official `end_of_text`).
    pub end_of_text: u32,
    /// Level-0 (semantic) and level-1 (pixel) code ids; code `i` of level `L` is
    /// `levels[L].start + i`.
    pub levels: [Range<u32>; 2],
    /// `<height_{64k}>`, k = 1..=16.
    height_tags: Vec<u32>,
    /// `<width_{64k}>`, k = 1..=16.
    width_tags: Vec<u32>,
}

impl VocabLayout {
    /// Derive the layout from the config and the tokenizer. `codebook_sizes` (semantic,
    /// pixel) is only needed when the tokenizer has no `<|image_level…|>` tokens.
    pub fn derive(
        config: &MllmConfig,
        tokenizer: &Tokenizer,
        codebook_sizes: Option<[usize; 2]>,
    ) -> Result<Self> {
        let fail = |m: String| Err(MllmError::Vocabulary(m));
        let vocab_size = config.decoder.vocab_size;
        let structure = StructureTokens::from_ids(config.special_tokens_ids);
        for (name, id) in StructureTokens::NAMES.iter().zip(structure.ids()) {
            if let Some(found) = tokenizer.token_to_id(name) {
                if found != id {
                    return fail(format!(
                        "config.json special_tokens_ids says {name} is {id}, the tokenizer says {found}"
                    ));
                }
            }
        }
        let lookup = |name: &str| {
            tokenizer.token_to_id(name).ok_or_else(|| {
                MllmError::Vocabulary(format!(
                    "the tokenizer has no `{name}` token: not an ILLUME+ tokenizer"
                ))
            })
        };
        let end_of_text = lookup("<|im_end|>")?;
        let tags = |axis: &str| -> Result<Vec<u32>> {
            (1..=MAX_RESOLUTION / RESOLUTION_STEP)
                .map(|k| lookup(&format!("<{axis}_{}>", k * RESOLUTION_STEP)))
                .collect()
        };
        let (height_tags, width_tags) = (tags("height")?, tags("width")?);
        let levels = match level_ranges_from_tokenizer(tokenizer)? {
            Some(levels) => levels,
            None => {
                let Some([k0, k1]) = codebook_sizes else {
                    return fail(
                        "the tokenizer has no <|image_level0_0|> tokens, and no DualViTok codebook \
                         sizes were given to place the image codes"
                            .into(),
                    );
                };
                let start = width_tags.iter().max().copied().unwrap_or_default() + 1;
                let l0 = start..start + k0 as u32;
                let l1 = l0.end..l0.end + k1 as u32;
                [l0, l1]
            }
        };
        // Where the codes come from the DualViTok codebooks, a mismatch almost always means
        // the wrong (or the default release) DualViTok architecture was paired with this MLLM.
        let which_dualvitok = match codebook_sizes {
            Some([k0, k1]) => format!(
                " (the image codes were placed with a DualViTok of {k0} + {k1} codes: give the \
                 DualViTok checkpoint this MLLM was trained with, e.g. `--tokenizer PATH`)"
            ),
            None => String::new(),
        };
        if levels[1].end as usize > vocab_size {
            return fail(format!(
                "image codes reach id {} but the vocabulary has {vocab_size} rows{which_dualvitok}",
                levels[1].end
            ));
        }
        if let Some([k0, k1]) = codebook_sizes {
            if levels[0].len() != k0 || levels[1].len() != k1 {
                return fail(format!(
                    "the tokenizer has {} level-0 and {} level-1 codes, the DualViTok codebooks \
                     {k0} and {k1}{which_dualvitok}",
                    levels[0].len(),
                    levels[1].len()
                ));
            }
        }
        Ok(Self {
            vocab_size,
            structure,
            end_of_text,
            levels,
            height_tags,
            width_tags,
        })
    }

    /// The layout the official extension script produces on a text vocabulary of
    /// `text_tokens` ids (structure tokens from `text_tokens`, then the resolution tags and
    /// the codes), e.g. `extended(151_665, 151_645, [32_768, 98_304], 283_047)` for the 3B
    /// release. For models without a tokenizer (benchmarks with random weights).
    pub fn extended(
        text_tokens: u32,
        end_of_text: u32,
        codebook_sizes: [usize; 2],
        vocab_size: usize,
    ) -> Result<Self> {
        let tags = (MAX_RESOLUTION / RESOLUTION_STEP) as u32;
        let structure: [u32; 7] = std::array::from_fn(|i| text_tokens + i as u32);
        let height_tags: Vec<u32> = (0..tags).map(|k| text_tokens + 7 + k).collect();
        let width_tags: Vec<u32> = (0..tags).map(|k| text_tokens + 7 + tags + k).collect();
        let start = text_tokens + 7 + 2 * tags;
        let l0 = start..start + codebook_sizes[0] as u32;
        let l1 = l0.end..l0.end + codebook_sizes[1] as u32;
        if l1.end as usize > vocab_size || end_of_text >= text_tokens {
            return Err(MllmError::Vocabulary(format!(
                "an extended vocabulary of {} ids does not fit {vocab_size} rows",
                l1.end
            )));
        }
        Ok(Self {
            vocab_size,
            structure: StructureTokens::from_ids(structure),
            end_of_text,
            levels: [l0, l1],
            height_tags,
            width_tags,
        })
    }

    /// Ids of `<height_{height}><width_{width}>`.
    pub fn resolution_tag(&self, height: usize, width: usize) -> Result<[u32; 2]> {
        let index = |size: usize| is_resolution_side(size).then(|| size / RESOLUTION_STEP - 1);
        match (index(height), index(width)) {
            (Some(h), Some(w)) => Ok([self.height_tags[h], self.width_tags[w]]),
            _ => Err(MllmError::Prompt(format!(
                "no resolution tag for width {width} and height {height}: sizes must be \
                 multiples of {RESOLUTION_STEP} from {RESOLUTION_STEP} to {MAX_RESOLUTION}"
            ))),
        }
    }

    /// `(level, code)` of an image-code id.
    pub fn code_of(&self, id: u32) -> Option<(usize, u32)> {
        self.levels
            .iter()
            .enumerate()
            .find(|(_, range)| range.contains(&id))
            .map(|(level, range)| (level, id - range.start))
    }

    /// Whether `id` is one of the 7 structure tokens or an image code.
    pub fn is_image_token(&self, id: u32) -> bool {
        self.structure.ids().contains(&id) || self.code_of(id).is_some()
    }
}

/// Whether an image side of `size` pixels has a resolution tag: a multiple of
/// [`RESOLUTION_STEP`] from [`RESOLUTION_STEP`] to [`MAX_RESOLUTION`].
pub fn is_resolution_side(size: usize) -> bool {
    size.is_multiple_of(RESOLUTION_STEP) && (RESOLUTION_STEP..=MAX_RESOLUTION).contains(&size)
}

/// `[level0, level1]` from the tokenizer's `<|image_level{L}_{i}|>` tokens, checked to be
/// contiguous; `None` when it has none.
fn level_ranges_from_tokenizer(tokenizer: &Tokenizer) -> Result<Option<[Range<u32>; 2]>> {
    let mut found: [Vec<(u32, u32)>; 2] = [Vec::new(), Vec::new()];
    for (id, token) in tokenizer.get_added_tokens_decoder() {
        let Some(rest) = token.content.strip_prefix("<|image_level") else {
            continue;
        };
        let Some((level, index)) = rest.strip_suffix("|>").and_then(|r| r.split_once('_')) else {
            continue;
        };
        if let (Ok(level @ 0..=1), Ok(index)) = (level.parse::<usize>(), index.parse::<u32>()) {
            found[level].push((index, id));
        }
    }
    if found.iter().all(Vec::is_empty) {
        return Ok(None);
    }
    let mut ranges = Vec::new();
    for (level, codes) in found.iter_mut().enumerate() {
        codes.sort_unstable();
        let start = match codes.first() {
            Some(&(0, id)) => id,
            _ => {
                return Err(MllmError::Vocabulary(format!(
                    "the tokenizer has no <|image_level{level}_0|> token"
                )))
            }
        };
        if let Some((index, id)) = codes.iter().find(|(index, id)| *id != start + index) {
            return Err(MllmError::Vocabulary(format!(
                "<|image_level{level}_{index}|> has id {id}, expected {} (codes must be contiguous)",
                start + index
            )));
        }
        ranges.push(start..start + codes.len() as u32);
    }
    Ok(Some([ranges[0].clone(), ranges[1].clone()]))
}
