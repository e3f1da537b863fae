//! What a running task reports, and how the caller stops it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use image::RgbImage;

use super::PipelineError;

/// One of the three models a pipeline loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The ILLUME+ MLLM (Qwen2.5 with its vision tower).
    Mllm,
    /// DualViTok, the dual visual tokenizer (and pixel decoder).
    Tokenizer,
    /// The SDXL diffusion decoder (UNet, VAE, scheduler).
    Diffusion,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Mllm => "the MLLM",
            Component::Tokenizer => "DualViTok",
            Component::Diffusion => "the diffusion decoder",
        }
    }
}

/// What a generated token is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenKind {
    /// Answer text: the newly complete piece (empty while a multi-byte character or word
    /// piece is still incomplete).
    Text(String),
    /// An image code at `(row, col)` of level `level`'s grid (0: semantic, 1: pixel),
    /// whose shape is `grid`.
    Image {
        level: usize,
        row: usize,
        col: usize,
        grid: [usize; 2],
    },
    /// A structure token (start/end of image, end of line, resolution tags) or a stop token.
    Structure,
}

/// A progress report of a task, in the order the stages run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A model starts loading from `path`: its weight `files` with their sizes, `bytes` in
    /// all. `demo`: it is the built-in demo model (random weights: the output is
    /// meaningless).
    Loading {
        component: Component,
        path: PathBuf,
        files: Vec<(PathBuf, u64)>,
        bytes: u64,
        demo: bool,
    },
    Loaded {
        component: Component,
        seconds: f64,
    },
    /// A model is freed to make room for another (the memory policy).
    Unloaded {
        component: Component,
    },
    /// Input images are being read into the model (vision tower or tokenizer).
    Encoding {
        images: usize,
    },
    /// The prompt is being run through the MLLM before the first new token.
    Prefill,
    /// Token `index` (0-based) of at most `max` of output `image` (0 for text answers).
    Token {
        image: usize,
        index: usize,
        max: usize,
        kind: TokenKind,
    },
    /// Output `image`'s token grids decoded as far as they are generated (cells not
    /// generated yet hold code 0), so an app can show the picture forming; sent when a
    /// grid row completes, at most as often as the request's `preview_every`. `rows`: the
    /// complete rows of the semantic and pixel grids.
    Preview {
        image: usize,
        picture: RgbImage,
        rows: [usize; 2],
    },
    /// Output `image`'s tokens are being turned into pixels.
    Decoding {
        image: usize,
        diffusion: bool,
    },
    /// Diffusion step `index` (0-based) of `total` for output `image`. `preview`: with
    /// [`super::DiffusionSettings::latent_preview`], the latents after this step as a
    /// picture of 1/8 the output size (a linear map of the latents, no VAE call).
    DiffusionStep {
        image: usize,
        index: usize,
        total: usize,
        preview: Option<RgbImage>,
    },
}

/// What the caller answers to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop the task: it returns [`PipelineError::Cancelled`] within one step.
    Cancel,
}

/// Receives a task's events; any `FnMut(&Event) -> Flow` is one.
pub trait Events {
    fn event(&mut self, event: &Event) -> Flow;
}

impl<F: FnMut(&Event) -> Flow> Events for F {
    fn event(&mut self, event: &Event) -> Flow {
        self(event)
    }
}

/// Ignores every event and never cancels.
pub struct NoEvents;

impl Events for NoEvents {
    fn event(&mut self, _: &Event) -> Flow {
        Flow::Continue
    }
}

/// A flag another thread sets to stop a task: check it in the event callback
/// (`if token.is_cancelled() { Flow::Cancel } else { Flow::Continue }`).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The task side of [`Events`]: every send turns a [`Flow::Cancel`] into an error, and
/// remembers it for the model loops that ask between steps.
pub(crate) struct Reporter<'a> {
    sink: &'a mut dyn Events,
    cancelled: bool,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(sink: &'a mut dyn Events) -> Self {
        Self {
            sink,
            cancelled: false,
        }
    }

    /// Send `event`; `Err(Cancelled)` when the caller asked to stop (now or before).
    pub(crate) fn send(&mut self, event: Event) -> Result<(), PipelineError> {
        self.note(event);
        if self.cancelled {
            return Err(PipelineError::Cancelled);
        }
        Ok(())
    }

    /// Send `event` from inside a model loop, which asks [`Reporter::cancelled`] next.
    pub(crate) fn note(&mut self, event: Event) {
        if self.sink.event(&event) == Flow::Cancel {
            self.cancelled = true;
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancelled
    }
}
