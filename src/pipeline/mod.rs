//! The library's front door: a [`Pipeline`] holds the ILLUME+ models on a backend chosen at
//! run time and runs every task on them — understanding, text-to-image, editing, tokenize,
//! reconstruct, decode given tokens, upscale — reporting each stage as an [`Event`] and
//! stopping when the event callback says [`Flow::Cancel`].
//!
//! ```no_run
//! use illume::pipeline::{Event, Flow, GenerateRequest, Pipeline};
//! let pipeline = Pipeline::builder().build()?; // auto backend, the built-in demo models
//! let request = GenerateRequest::new("a red circle above a blue square", 256, 256);
//! let images = pipeline.generate(&request, &mut |event: &Event| {
//!     if let Event::Token { index, max, .. } = event {
//!         eprint!("\r{}/{max}", index + 1);
//!     }
//!     Flow::Continue
//! })?;
//! images[0].save("out.png".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Models load when a task first needs them. The handle is `Send + Sync`: threads share
//! one loaded pipeline, and their tasks run one at a time (each task holds the models for
//! its duration).

/// `dispatch!(engine, e => body)`: run `body` with `e` the backend's engine.
macro_rules! dispatch {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            #[cfg(feature = "flex")]
            AnyEngine::Flex($e) => $body,
            #[cfg(feature = "ndarray")]
            AnyEngine::NdArray($e) => $body,
            #[cfg(feature = "wgpu")]
            AnyEngine::Wgpu($e) => $body,
            #[cfg(feature = "cuda")]
            AnyEngine::Cuda($e) => $body,
        }
    };
}

mod engine;
mod error;
mod events;
mod output;
mod request;
mod sources;

use std::any::Any;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use illume_backends::{
    dtype_name, float_dtype, run_on, BackendChoice, BackendKind, BackendTask, IllumeBackend,
    Precision,
};
use illume_dualvitok::DualTokens;
use image::RgbImage;

use self::engine::Engine;
use self::events::Reporter;
use self::sources::Sources;

pub use self::error::PipelineError;
pub use self::events::{CancelToken, Component, Event, Events, Flow, NoEvents, TokenKind};
pub use self::output::{check_output, ImageFormat, OUTPUT_EXTENSIONS};
pub use self::request::{
    ChatRequest, DecodeRequest, Decoder, DiffusionSettings, EditRequest, GenerateRequest,
    UnderstandRequest, UpscaleRequest, MAX_IMAGES,
};
pub use self::sources::ModelSource;
pub use illume_dualvitok::tokenizer::DEFAULT_MAX_PIXELS;
pub use illume_mllm::{Role, Turn};

/// Which models may be held at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryPolicy {
    /// The MLLM and the diffusion decoder (the two large models) are never held together:
    /// loading one frees the other, so a text-to-image-with-diffusion run peaks at its
    /// larger stage, not their sum. DualViTok stays loaded.
    #[default]
    OneLargeModel,
    /// Every model stays loaded once used (fastest for repeated mixed tasks, most memory).
    KeepAll,
}

/// Configures a [`Pipeline`]; every model defaults to the built-in demo.
#[derive(Debug, Clone, Default)]
pub struct PipelineBuilder {
    backend: BackendChoice,
    precision: Precision,
    mllm: ModelSource,
    tokenizer: Option<ModelSource>,
    diffusion: ModelSource,
    memory: MemoryPolicy,
}

impl PipelineBuilder {
    /// The compute backend (default `auto`: CUDA, else a real GPU through wgpu, else the
    /// fast CPU backend).
    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }

    /// The float precision (default `auto`: half precision on GPUs that have it).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The ILLUME+ MLLM checkpoint folder.
    pub fn mllm(mut self, source: ModelSource) -> Self {
        self.mllm = source;
        self
    }

    /// DualViTok. Without it, the demo MLLM uses the demo DualViTok, and a real MLLM can
    /// only understand (its vision tower is built from the released architecture).
    pub fn tokenizer(mut self, source: ModelSource) -> Self {
        self.tokenizer = Some(source);
        self
    }

    /// The diffusion decoder folder (used by [`Decoder::Diffusion`] and upscaling).
    pub fn diffusion(mut self, source: ModelSource) -> Self {
        self.diffusion = source;
        self
    }

    pub fn memory_policy(mut self, policy: MemoryPolicy) -> Self {
        self.memory = policy;
        self
    }

    /// Resolve the model paths and start the backend's device; no model loads yet.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        let sources = Sources::resolve(&self.mllm, self.tokenizer.as_ref(), &self.diffusion)?;
        let kind = self.backend.resolve(self.precision);
        let start = Start {
            sources,
            policy: self.memory,
        };
        let (engine, dtype) = run_on(kind, self.precision, start)?;
        Ok(Pipeline {
            backend: kind,
            dtype,
            engine: Mutex::new(AnyEngine::from_any(kind, engine)),
        })
    }
}

/// The loaded ILLUME+ pipeline (see the module docs).
pub struct Pipeline {
    backend: BackendKind,
    dtype: &'static str,
    engine: Mutex<AnyEngine>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("backend", &self.backend)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

/// One image produced by a task, with the parameters that made it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GeneratedImage {
    pub image: RgbImage,
    /// The token grids it was rendered from.
    pub tokens: DualTokens,
    /// Ids the MLLM generated (0 when no MLLM ran).
    pub generated_tokens: usize,
    /// Seconds of MLLM generation (0 when no MLLM ran).
    pub generation_seconds: f64,
    /// `(keyword, value)` pairs saying how it was made, written as PNG text chunks.
    pub metadata: Vec<(String, String)>,
}

impl GeneratedImage {
    fn new(
        image: RgbImage,
        tokens: DualTokens,
        generated_tokens: usize,
        generation_seconds: f64,
        mut metadata: Vec<(String, String)>,
    ) -> Self {
        metadata.insert(
            0,
            (
                "Software".into(),
                format!("illume-rs {}", env!("CARGO_PKG_VERSION")),
            ),
        );
        metadata.push((
            "illume.output_size".into(),
            format!("{}x{}", image.width(), image.height()),
        ));
        Self {
            image,
            tokens,
            generated_tokens,
            generation_seconds,
            metadata,
        }
    }

    /// Write the image with its metadata in the format `path`'s extension names (PNG,
    /// JPEG, WebP: [`ImageFormat`]), atomically (a temporary file beside `path`, then a
    /// rename: a failed write keeps the previous file).
    pub fn save(&self, path: &Path) -> Result<(), PipelineError> {
        output::write_image(path, &self.image, &self.metadata)
    }

    /// The image's file bytes in `format`, with its metadata (e.g. to send it).
    pub fn encode(&self, format: ImageFormat) -> Result<Vec<u8>, PipelineError> {
        output::encode_image(format, &self.image, &self.metadata).map_err(|reason| {
            PipelineError::Output {
                path: "(in memory)".into(),
                reason,
            }
        })
    }
}

/// The answer of an understanding task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Answer {
    pub text: String,
    /// Positions of the prompt the answer followed (text tokens and image embeddings).
    pub prompt_tokens: usize,
    /// Generated tokens (the stop token included).
    pub tokens: usize,
    /// Seconds from the image encoding to the last token.
    pub seconds: f64,
}

impl Pipeline {
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// The backend the pipeline computes on (what `auto` became).
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// The float type it computes in: "f32", "f16" or "bf16".
    pub fn dtype(&self) -> &'static str {
        self.dtype
    }

    /// Where `component` comes from: its path, `demo` for the built-in one, `none` when the
    /// pipeline has none.
    pub fn source(&self, component: Component) -> String {
        dispatch!(&*self.lock(), e => e.sources().describe(component))
    }

    /// The models loaded now.
    pub fn loaded(&self) -> Vec<Component> {
        dispatch!(&*self.lock(), e => e.loaded())
    }

    /// Text-to-image: `request.count` images, each rendered by `request.decoder`.
    pub fn generate(
        &self,
        request: &GenerateRequest,
        events: &mut dyn Events,
    ) -> Result<Vec<GeneratedImage>, PipelineError> {
        request.validate()?;
        self.run(events, |e, r| {
            e.sources().require(Component::Tokenizer)?;
            e.generate(request, r)
        })
    }

    /// Edit an image following an instruction; the result has the input's size.
    pub fn edit(
        &self,
        request: &EditRequest,
        events: &mut dyn Events,
    ) -> Result<GeneratedImage, PipelineError> {
        request.validate()?;
        self.run(events, |e, r| {
            e.sources().require(Component::Tokenizer)?;
            e.edit(request, r)
        })
    }

    /// Answer a question about an image; the text streams as [`TokenKind::Text`] events.
    pub fn understand(
        &self,
        request: &UnderstandRequest,
        events: &mut dyn Events,
    ) -> Result<Answer, PipelineError> {
        request.validate()?;
        self.run(events, |e, r| e.understand(request, r))
    }

    /// The next answer of a conversation (several turns, several images per turn, text-only
    /// turns); the text streams as [`TokenKind::Text`] events.
    pub fn chat(
        &self,
        request: &ChatRequest,
        events: &mut dyn Events,
    ) -> Result<Answer, PipelineError> {
        request.validate()?;
        self.run(events, |e, r| e.chat(request, r))
    }

    /// DualViTok's semantic and pixel token grids of `image` (refused above `max_pixels`).
    pub fn tokenize(
        &self,
        image: &RgbImage,
        max_pixels: usize,
        events: &mut dyn Events,
    ) -> Result<DualTokens, PipelineError> {
        if max_pixels == 0 {
            return Err(PipelineError::InvalidRequest {
                field: "max_pixels",
                reason: "must be at least 1".into(),
            });
        }
        self.run(events, |e, r| {
            e.sources().require(Component::Tokenizer)?;
            e.tokenize(image, max_pixels, r)
        })
    }

    /// DualViTok round trip: tokens, then the pixel decoder.
    pub fn reconstruct(
        &self,
        image: &RgbImage,
        max_pixels: usize,
        events: &mut dyn Events,
    ) -> Result<GeneratedImage, PipelineError> {
        let tokens = self.tokenize(image, max_pixels, events)?;
        let mut image = self.decode(&DecodeRequest::new(tokens, Decoder::Pixel), events)?;
        for (key, value) in &mut image.metadata {
            if key == "illume.task" {
                *value = "reconstruct".into();
            }
        }
        Ok(image)
    }

    /// Render given token grids (e.g. what [`Pipeline::tokenize`] returned).
    pub fn decode(
        &self,
        request: &DecodeRequest,
        events: &mut dyn Events,
    ) -> Result<GeneratedImage, PipelineError> {
        request.validate()?;
        self.run(events, |e, r| {
            e.sources().require(Component::Tokenizer)?;
            e.decode(request, r)
        })
    }

    /// 2x super-resolution: tokens of the image at half the output size, rendered by the
    /// diffusion decoder.
    pub fn upscale(
        &self,
        request: &UpscaleRequest,
        events: &mut dyn Events,
    ) -> Result<GeneratedImage, PipelineError> {
        request.validate()?;
        self.run(events, |e, r| {
            e.sources().require(Component::Tokenizer)?;
            e.upscale(request, r)
        })
    }

    fn lock(&self) -> MutexGuard<'_, AnyEngine> {
        // A task that panicked leaves the models as they were: keep serving.
        self.engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run<T>(
        &self,
        events: &mut dyn Events,
        task: impl FnOnce(&mut dyn EngineTasks, &mut Reporter) -> Result<T, PipelineError>,
    ) -> Result<T, PipelineError> {
        let mut reporter = Reporter::new(events);
        let mut engine = self.lock();
        dispatch!(&mut *engine, e => task(&mut **e, &mut reporter))
    }
}

/// The tasks of an [`Engine`], object-safe so that one closure serves every backend
/// (a closure cannot be generic over the backend).
trait EngineTasks {
    fn sources(&self) -> &Sources;
    fn generate(
        &mut self,
        request: &GenerateRequest,
        r: &mut Reporter,
    ) -> Result<Vec<GeneratedImage>, PipelineError>;
    fn edit(
        &mut self,
        request: &EditRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage, PipelineError>;
    fn understand(
        &mut self,
        request: &UnderstandRequest,
        r: &mut Reporter,
    ) -> Result<Answer, PipelineError>;
    fn chat(&mut self, request: &ChatRequest, r: &mut Reporter) -> Result<Answer, PipelineError>;
    fn tokenize(
        &mut self,
        image: &RgbImage,
        max_pixels: usize,
        r: &mut Reporter,
    ) -> Result<DualTokens, PipelineError>;
    fn decode(
        &mut self,
        request: &DecodeRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage, PipelineError>;
    fn upscale(
        &mut self,
        request: &UpscaleRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage, PipelineError>;
}

impl<B: IllumeBackend> EngineTasks for Engine<B> {
    fn sources(&self) -> &Sources {
        Engine::sources(self)
    }
    fn generate(
        &mut self,
        request: &GenerateRequest,
        r: &mut Reporter,
    ) -> Result<Vec<GeneratedImage>, PipelineError> {
        Engine::generate(self, request, r)
    }
    fn edit(
        &mut self,
        request: &EditRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage, PipelineError> {
        Engine::edit(self, request, r)
    }
    fn understand(
        &mut self,
        request: &UnderstandRequest,
        r: &mut Reporter,
    ) -> Result<Answer, PipelineError> {
        Engine::understand(self, request, r)
    }
    fn chat(&mut self, request: &ChatRequest, r: &mut Reporter) -> Result<Answer, PipelineError> {
        Engine::chat(self, request, r)
    }
    fn tokenize(
        &mut self,
        image: &RgbImage,
        max_pixels: usize,
        r: &mut Reporter,
    ) -> Result<DualTokens, PipelineError> {
        Engine::tokenize(self, image, max_pixels, r)
    }
    fn decode(
        &mut self,
        request: &DecodeRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage, PipelineError> {
        Engine::decode(self, request, r)
    }
    fn upscale(
        &mut self,
        request: &UpscaleRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage, PipelineError> {
        Engine::upscale(self, request, r)
    }
}

/// The engine of whichever backend the pipeline runs on: application code stays
/// non-generic. Boxed: an engine holds its models' module trees inline (~80 KB).
enum AnyEngine {
    #[cfg(feature = "flex")]
    Flex(Box<Engine<illume_backends::Flex>>),
    #[cfg(feature = "ndarray")]
    NdArray(Box<Engine<illume_backends::NdArray>>),
    #[cfg(feature = "wgpu")]
    Wgpu(Box<Engine<illume_backends::Wgpu>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<Engine<illume_backends::Cuda>>),
}

impl AnyEngine {
    /// The engine [`Start`] built on `kind`'s backend, as its variant.
    fn from_any(kind: BackendKind, engine: Box<dyn Any + Send>) -> Self {
        const BUILT: &str = "run_on runs the backend it was asked for";
        match kind {
            #[cfg(feature = "flex")]
            BackendKind::Flex => AnyEngine::Flex(engine.downcast().expect(BUILT)),
            #[cfg(feature = "ndarray")]
            BackendKind::NdArray => AnyEngine::NdArray(engine.downcast().expect(BUILT)),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => AnyEngine::Wgpu(engine.downcast().expect(BUILT)),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => AnyEngine::Cuda(engine.downcast().expect(BUILT)),
            #[allow(unreachable_patterns)]
            _ => unreachable!("run_on refuses a backend that is not compiled in"),
        }
    }
}

/// Builds the engine on the started device.
struct Start {
    sources: Sources,
    policy: MemoryPolicy,
}

impl BackendTask for Start {
    type Output = (Box<dyn Any + Send>, &'static str);

    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output {
        let dtype = dtype_name(float_dtype::<B>(&device));
        (
            Box::new(Engine::<B>::new(device, self.sources, self.policy)),
            dtype,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pipeline_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Pipeline>();
    }
}
