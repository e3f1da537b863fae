//! The text side: the checkpoint's tokenizer, the Qwen chat template (`conv_qwen2`), the
//! ILLUME+ task prompts, and `<image>` placeholders.
//!
//! A prompt is built from trusted template text, untrusted user text and image
//! placeholders. The official driver formats everything into one string, splits it at
//! `<image>` and tokenizes each chunk (added tokens matched first, no special-token
//! post-processing); this reproduces those ids exactly for ordinary text. What it does not
//! reproduce on purpose: user text cannot inject control tokens. An `<image>` typed by the
//! user is text, not a placeholder, and any added token (`<start_of_image>`, `<|im_end|>`,
//! `<height_256>`, ...) that the tokenizer finds inside user text is replaced by the
//! tokenization of its characters as plain text.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::Tokenizer;

use crate::error::{MllmError, Result};

/// One position of an encoded prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptToken {
    Text(u32),
    /// Where an image's embedding sequence is spliced in (`IMAGE_TOKEN_INDEX` = -200 in the
    /// official code).
    Image,
}

impl PromptToken {
    /// The official id convention: the token id, or -200 for an image.
    pub fn official_id(&self) -> i64 {
        match self {
            PromptToken::Text(id) => *id as i64,
            PromptToken::Image => -200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Template(String),
    User(String),
    Image,
}

/// A prompt as trusted template text, user text and image placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    segments: Vec<Segment>,
}

/// `conv_qwen2`'s system turn.
const SYSTEM: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
const USER: &str = "<|im_start|>user\n";
const END_OF_TURN: &str = "<|im_end|>\n";
const ASSISTANT: &str = "<|im_start|>assistant\n";

impl Prompt {
    fn template(mut self, text: impl Into<String>) -> Self {
        self.segments.push(Segment::Template(text.into()));
        self
    }

    fn user(mut self, text: impl Into<String>) -> Self {
        self.segments.push(Segment::User(text.into()));
        self
    }

    fn image(mut self) -> Self {
        self.segments.push(Segment::Image);
        self
    }

    /// `conv_qwen2` with one user message built by `message`, then the assistant role.
    fn conversation(message: impl FnOnce(Self) -> Self) -> Self {
        message(Self::default().template(SYSTEM).template(USER))
            .template(END_OF_TURN)
            .template(ASSISTANT)
    }

    /// Image understanding: `<image>\n{question}`.
    pub fn understanding(question: &str) -> Self {
        Self::conversation(|p| p.image().template("\n").user(question))
    }

    /// A multi-turn conversation in `conv_qwen2`: the system turn, each turn as its role,
    /// message and `<|im_end|>\n`, then the assistant role. A user turn's images come first,
    /// each as `<image>\n` (as the official driver prepends it to the question). It must end
    /// with a user turn; assistant turns carry no images.
    pub fn chat(turns: &[Turn]) -> Result<Self> {
        match turns.last() {
            Some(Turn {
                role: Role::User, ..
            }) => {}
            _ => {
                return Err(MllmError::Prompt(
                    "a conversation must end with a user turn".into(),
                ))
            }
        }
        let mut prompt = Self::default().template(SYSTEM);
        for (i, turn) in turns.iter().enumerate() {
            prompt = prompt.template(match turn.role {
                Role::User => USER,
                Role::Assistant => ASSISTANT,
            });
            if turn.role == Role::Assistant && turn.images > 0 {
                return Err(MllmError::Prompt(format!(
                    "turn {i}: an assistant turn cannot hold images"
                )));
            }
            for _ in 0..turn.images {
                prompt = prompt.image().template("\n");
            }
            // Earlier answers are text like the user's: no control tokens from them either.
            prompt = prompt.user(turn.text.as_str()).template(END_OF_TURN);
        }
        Ok(prompt.template(ASSISTANT))
    }

    /// Text-to-image (`generation_eval`'s template), ending with the resolution tag the
    /// assistant answer starts with.
    pub fn text_to_image(description: &str, height: usize, width: usize) -> Self {
        let tag = resolution_tag(height, width);
        Self::conversation(|p| {
            p.template(format!(
                "Generate an image of {tag}, the content of image is "
            ))
            .user(description)
            .template("\n")
        })
        .template(tag)
    }

    /// The unconditional text-to-image prompt of classifier-free guidance.
    pub fn text_to_image_unconditional(height: usize, width: usize) -> Self {
        let tag = resolution_tag(height, width);
        Self::conversation(|p| p.template(format!("Generate a random image of {tag}\n")))
            .template(tag)
    }

    /// The prompt of the unconditional CFG stream: the official one, or with a negative
    /// prompt, the conditional template describing it (what guidance steers away from).
    pub fn text_to_image_guidance(negative: Option<&str>, height: usize, width: usize) -> Self {
        match negative {
            Some(negative) => Self::text_to_image(negative, height, width),
            None => Self::text_to_image_unconditional(height, width),
        }
    }

    /// Image editing: the input image at the anchor `height × width`, then the instruction.
    pub fn editing(instruction: &str, height: usize, width: usize) -> Self {
        let tag = resolution_tag(height, width);
        Self::conversation(|p| {
            p.template(tag.clone())
                .image()
                .template("\nPlease edit the image according to the instruction: ")
                .user(instruction)
                .template("\n")
        })
        .template(tag)
    }

    /// The unconditional editing prompt (same image, "reconstruct").
    pub fn editing_unconditional(height: usize, width: usize) -> Self {
        let tag = resolution_tag(height, width);
        Self::conversation(|p| {
            p.template(tag.clone())
                .image()
                .template("\nReconstruct the image according to the given image\n")
        })
        .template(tag)
    }

    /// The prompt as the official driver's string (images as `<image>`).
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Template(t) | Segment::User(t) => t.as_str(),
                Segment::Image => "<image>",
            })
            .collect()
    }

    /// Number of image placeholders.
    pub fn image_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| **s == Segment::Image)
            .count()
    }
}

/// Who speaks a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of a conversation: its speaker, text and (user turns) how many images precede
/// the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    pub images: usize,
}

impl Turn {
    pub fn user(text: impl Into<String>, images: usize) -> Self {
        Self {
            role: Role::User,
            text: text.into(),
            images,
        }
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            text: text.into(),
            images: 0,
        }
    }
}

/// `<height_{h}><width_{w}>`.
pub fn resolution_tag(height: usize, width: usize) -> String {
    format!("<height_{height}><width_{width}>")
}

/// The checkpoint's tokenizer, with a twin that knows no added tokens (for user text).
#[derive(Clone)]
pub struct TextTokenizer {
    full: Tokenizer,
    plain: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl TextTokenizer {
    /// `dir/tokenizer.json` (the fast-tokenizer file transformers saves with the model).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MllmError::io(path, e))?;
        Self::parse(&text, path)
    }

    pub fn parse(json: &str, path: &Path) -> Result<Self> {
        let error = |reason: String| MllmError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let full =
            Tokenizer::from_str(json).map_err(|e| error(format!("not a tokenizer.json: {e}")))?;
        let mut value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| error(format!("not JSON: {e}")))?;
        value["added_tokens"] = serde_json::Value::Array(Vec::new());
        let plain = Tokenizer::from_str(&value.to_string())
            .map_err(|e| error(format!("cannot build the plain-text tokenizer: {e}")))?;
        Ok(Self {
            full,
            plain,
            path: path.to_path_buf(),
        })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.full
    }

    /// Token ids of `prompt`, with image placeholders.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<PromptToken>> {
        let mut tokens = Vec::new();
        let mut chunk = String::new();
        let mut user_spans = Vec::new();
        for segment in &prompt.segments {
            match segment {
                Segment::Template(text) => chunk.push_str(text),
                Segment::User(text) => {
                    user_spans.push(chunk.len()..chunk.len() + text.len());
                    chunk.push_str(text);
                }
                Segment::Image => {
                    self.encode_chunk(&chunk, &user_spans, &mut tokens)?;
                    tokens.push(PromptToken::Image);
                    chunk.clear();
                    user_spans.clear();
                }
            }
        }
        self.encode_chunk(&chunk, &user_spans, &mut tokens)?;
        Ok(tokens)
    }

    fn encode_chunk(
        &self,
        chunk: &str,
        user_spans: &[std::ops::Range<usize>],
        out: &mut Vec<PromptToken>,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let encoding = self.full.encode(chunk, false).map_err(|e| self.error(e))?;
        let added = self.full.get_added_tokens_decoder();
        for (&id, &(start, end)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
            let from_user = user_spans.iter().any(|s| start < s.end && s.start < end);
            if from_user && added.contains_key(&id) {
                let text = &chunk[start..end];
                let plain = self.plain.encode(text, false).map_err(|e| self.error(e))?;
                out.extend(plain.get_ids().iter().map(|&id| PromptToken::Text(id)));
            } else {
                out.push(PromptToken::Text(id));
            }
        }
        Ok(())
    }

    /// Text of generated ids, skipping special tokens (as the official `batch_decode(...,
    /// skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.full.decode(ids, true).map_err(|e| self.error(e))
    }

    fn error(&self, e: impl std::fmt::Display) -> MllmError {
        MllmError::Tokenizer {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

/// Prints generated text as it grows: decodes the whole answer so far and emits what was
/// added (byte-level BPE can need several tokens for one character).
#[derive(Debug, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    printed: usize,
}

impl TextStream {
    /// Add one token; returns the new text, if any is complete.
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        if text.len() > self.printed
            && !text.ends_with('\u{FFFD}')
            && text.is_char_boundary(self.printed)
        {
            let new = text[self.printed..].to_string();
            self.printed = text.len();
            return Ok(Some(new));
        }
        Ok(None)
    }
}
