//! The tasks on one backend: the models loaded when a stage first needs them, under the
//! memory policy, with every stage reported as events.

use std::time::{Duration, Instant};

use illume_backends::IllumeBackend;
use illume_diffusion::{latent_preview, CodeEmbedder, DiffusionDecoder, ImageSize};
use illume_dualvitok::pil_resize::{pil_resize_rgb, PilFilter};
use illume_dualvitok::{DualTokens, DualViTok, TokenGrid};
use illume_mllm::generate::Observer;
use illume_mllm::text::TextStream;
use illume_mllm::VocabLayout;
use illume_mllm::{
    Decoding, GeneratedImage as GeneratedTokens, IllumeMllm, ImageGrid, ImageRequest, MllmError,
    TextRequest, TextTokenizer,
};
use image::RgbImage;

use super::events::Reporter;
use super::request::{upscale_size, Decoder};
use super::sources::{weight_files, Sources};
use super::{
    Answer, ChatRequest, Component, DecodeRequest, EditRequest, Event, GenerateRequest,
    GeneratedImage, MemoryPolicy, PipelineError, TokenKind, UnderstandRequest, UpscaleRequest,
};

type Result<T> = std::result::Result<T, PipelineError>;

pub(crate) struct Engine<B: IllumeBackend> {
    device: B::Device,
    sources: Sources,
    policy: MemoryPolicy,
    mllm: Option<IllumeMllm<B>>,
    tokenizer: Option<DualViTok<B>>,
    diffusion: Option<DiffusionDecoder<B>>,
}

impl<B: IllumeBackend> Engine<B> {
    pub(crate) fn new(device: B::Device, sources: Sources, policy: MemoryPolicy) -> Self {
        Self {
            device,
            sources,
            policy,
            mllm: None,
            tokenizer: None,
            diffusion: None,
        }
    }

    pub(crate) fn sources(&self) -> &Sources {
        &self.sources
    }

    pub(crate) fn loaded(&self) -> Vec<Component> {
        [
            (Component::Mllm, self.mllm.is_some()),
            (Component::Tokenizer, self.tokenizer.is_some()),
            (Component::Diffusion, self.diffusion.is_some()),
        ]
        .into_iter()
        .filter_map(|(c, loaded)| loaded.then_some(c))
        .collect()
    }

    fn free(&mut self, component: Component, r: &mut Reporter) {
        let freed = match component {
            Component::Mllm => self.mllm.take().is_some(),
            Component::Tokenizer => self.tokenizer.take().is_some(),
            Component::Diffusion => self.diffusion.take().is_some(),
        };
        if freed {
            r.note(Event::Unloaded { component });
        }
    }

    /// Load `component` unless it is loaded; under [`MemoryPolicy::OneLargeModel`] the MLLM
    /// and the diffusion decoder are never held together.
    fn ensure(&mut self, component: Component, r: &mut Reporter) -> Result<()> {
        if self.loaded().contains(&component) {
            return Ok(());
        }
        if self.policy == MemoryPolicy::OneLargeModel {
            match component {
                Component::Mllm => self.free(Component::Diffusion, r),
                Component::Diffusion => self.free(Component::Mllm, r),
                Component::Tokenizer => {}
            }
        }
        let located = self.sources.locate(component)?;
        let files = weight_files(&located.path);
        r.send(Event::Loading {
            component,
            path: located.path.clone(),
            bytes: files.iter().map(|(_, bytes)| bytes).sum(),
            files,
            demo: located.demo,
        })?;
        let started = Instant::now();
        let path = located.path.as_path();
        match component {
            Component::Mllm => {
                let vision = self.sources.vision_config()?;
                self.mllm = Some(IllumeMllm::load(path, &vision, &self.device)?);
            }
            Component::Tokenizer => self.tokenizer = Some(DualViTok::load(path, &self.device)?),
            Component::Diffusion => {
                self.diffusion = Some(DiffusionDecoder::load(path, &self.device)?)
            }
        }
        r.send(Event::Loaded {
            component,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    pub(crate) fn generate(
        &mut self,
        request: &GenerateRequest,
        r: &mut Reporter,
    ) -> Result<Vec<GeneratedImage>> {
        self.ensure(Component::Mllm, r)?;
        if request.preview_every.is_some() {
            // Previews decode with DualViTok while the MLLM generates.
            self.ensure(Component::Tokenizer, r)?;
        }
        let (h, w) = (request.image.height, request.image.width);
        // Every image's tokens first, so the MLLM can make room for the decoder once.
        let mut generated = Vec::with_capacity(request.count);
        for index in 0..request.count {
            let sampling = with_seed_offset(&request.image, index);
            r.send(Event::Prefill)?;
            let (image, seconds) =
                self.image_tokens(index, (h, w), request.preview_every, r, |mllm, tokens| {
                    mllm.text_to_image(&request.prompt, &sampling, tokens)
                })?;
            generated.push((image, seconds, sampling));
        }
        let mut images = Vec::with_capacity(generated.len());
        for (index, (image, seconds, sampling)) in generated.into_iter().enumerate() {
            let mut metadata = vec![
                ("illume.task".into(), "generate".into()),
                ("illume.prompt".into(), request.prompt.clone()),
            ];
            metadata.extend(self.mllm_metadata(&sampling));
            let (pixels, decoder_metadata) =
                self.render(index, &image.tokens, &request.decoder, None, r)?;
            metadata.extend(decoder_metadata);
            images.push(GeneratedImage::new(
                pixels,
                image.tokens,
                image.ids.len(),
                seconds,
                metadata,
            ));
        }
        Ok(images)
    }

    pub(crate) fn edit(
        &mut self,
        request: &EditRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage> {
        self.ensure(Component::Mllm, r)?;
        if request.preview_every.is_some() {
            self.ensure(Component::Tokenizer, r)?;
        }
        let (w, h) = (
            request.image.width() as usize,
            request.image.height() as usize,
        );
        let (ah, aw) = illume_mllm::editing::nearest_anchor(w, h, &illume_mllm::editing::ANCHORS);
        r.send(Event::Encoding { images: 1 })?;
        let (edited, seconds) =
            self.image_tokens(0, (ah, aw), request.preview_every, r, |mllm, tokens| {
                mllm.edit(
                    &request.image,
                    &request.instruction,
                    &request.sampling,
                    tokens,
                )
            })?;
        let mut metadata = vec![
            ("illume.task".into(), "edit".into()),
            ("illume.instruction".into(), request.instruction.clone()),
            ("illume.anchor".into(), format!("{aw}x{ah}")),
        ];
        metadata.extend(self.mllm_metadata(&request.sampling));
        let (decoded, decoder_metadata) =
            self.render(0, &edited.tokens, &request.decoder, None, r)?;
        metadata.extend(decoder_metadata);
        let restored = IllumeMllm::<B>::restore_edit(&decoded, w, h)?;
        Ok(GeneratedImage::new(
            restored,
            edited.tokens,
            edited.ids.len(),
            seconds,
            metadata,
        ))
    }

    pub(crate) fn understand(
        &mut self,
        request: &UnderstandRequest,
        r: &mut Reporter,
    ) -> Result<Answer> {
        // One user turn holding the images: `<image>\n` each, then the question, as the
        // official understanding prompt.
        let turns = request.turns();
        self.answer(request.images.len(), &request.text, r, |mllm, tokens| {
            mllm.chat(&turns, &request.images, &request.text, tokens)
        })
    }

    pub(crate) fn chat(&mut self, request: &ChatRequest, r: &mut Reporter) -> Result<Answer> {
        self.answer(request.images.len(), &request.text, r, |mllm, tokens| {
            mllm.chat(&request.turns, &request.images, &request.text, tokens)
        })
    }

    /// Run an MLLM image generation at `size` with its tokens (and previews, decoded by
    /// DualViTok when it is loaded) as events; returns the tokens and the seconds taken.
    fn image_tokens(
        &self,
        index: usize,
        (height, width): (usize, usize),
        preview_every: Option<Duration>,
        r: &mut Reporter,
        run: impl FnOnce(
            &IllumeMllm<B>,
            &mut TokenEvents,
        ) -> std::result::Result<GeneratedTokens, MllmError>,
    ) -> Result<(GeneratedTokens, f64)> {
        let mllm = self.mllm.as_ref().expect("loaded by ensure");
        let decode = self.tokenizer.as_ref().map(preview_decoder);
        let mut tokens = TokenEvents::image(r, index, &mllm.layout, height, width)
            .with_previews(preview_every, decode.as_deref());
        let started = Instant::now();
        let generated = run(mllm, &mut tokens);
        tokens.check()?;
        Ok((generated?, started.elapsed().as_secs_f64()))
    }

    /// Run an MLLM text answer with its text streamed as events.
    fn answer(
        &mut self,
        images: usize,
        text: &TextRequest,
        r: &mut Reporter,
        run: impl FnOnce(&IllumeMllm<B>, &mut TokenEvents) -> std::result::Result<String, MllmError>,
    ) -> Result<Answer> {
        self.ensure(Component::Mllm, r)?;
        let mllm = self.mllm.as_ref().expect("loaded by ensure");
        if images > 0 {
            r.send(Event::Encoding { images })?;
        }
        let mut tokens = TokenEvents::text(r, text.max_new_tokens, &mllm.tokenizer);
        let started = Instant::now();
        let answer = run(mllm, &mut tokens);
        let (count, prompt) = (tokens.count, tokens.prompt);
        tokens.check()?;
        Ok(Answer {
            text: answer?,
            prompt_tokens: prompt,
            tokens: count,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    pub(crate) fn tokenize(
        &mut self,
        image: &RgbImage,
        max_pixels: usize,
        r: &mut Reporter,
    ) -> Result<DualTokens> {
        self.ensure(Component::Tokenizer, r)?;
        let tokenizer = self.tokenizer.as_mut().expect("loaded by ensure");
        tokenizer.set_max_pixels(max_pixels);
        r.send(Event::Encoding { images: 1 })?;
        Ok(tokenizer.encode_rgb(image, &self.device)?)
    }

    pub(crate) fn decode(
        &mut self,
        request: &DecodeRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage> {
        let (pixels, mut metadata) = self.render(0, &request.tokens, &request.decoder, None, r)?;
        metadata.insert(0, ("illume.task".into(), "decode".into()));
        Ok(GeneratedImage::new(
            pixels,
            request.tokens.clone(),
            0,
            0.0,
            metadata,
        ))
    }

    pub(crate) fn upscale(
        &mut self,
        request: &UpscaleRequest,
        r: &mut Reporter,
    ) -> Result<GeneratedImage> {
        let size = upscale_size(request);
        let (tw, th) = (size.width / 2, size.height / 2);
        let resized = pil_resize_rgb(&request.image, tw, th, PilFilter::Bicubic)?;
        let tokens = self.tokenize(&resized, tw * th, r)?;
        let decoder = Decoder::Diffusion(request.diffusion.clone());
        let (pixels, mut metadata) = self.render(0, &tokens, &decoder, Some(size), r)?;
        metadata.insert(0, ("illume.task".into(), "upscale".into()));
        Ok(GeneratedImage::new(pixels, tokens, 0, 0.0, metadata))
    }

    fn mllm_metadata(&self, request: &ImageRequest) -> Vec<(String, String)> {
        let s = &request.sampling;
        let negative = request
            .negative_prompt
            .iter()
            .map(|text| ("illume.negative_prompt".to_string(), text.clone()));
        let mut metadata = vec![
            ("illume.mllm".into(), self.sources.describe(Component::Mllm)),
            (
                "illume.size".into(),
                format!("{}x{}", request.width, request.height),
            ),
            ("illume.cfg".into(), request.guidance.to_string()),
            (
                "illume.decoding".into(),
                match request.decoding {
                    Decoding::Greedy => "greedy".into(),
                    Decoding::Sample { seed } => format!("sample, seed {seed}"),
                },
            ),
            (
                "illume.sampling".into(),
                format!(
                    "semantic {}/{}/{}, pixel {}/{}/{} (temperature/top-k/top-p)",
                    s.level0.temperature,
                    s.level0.top_k,
                    s.level0.top_p,
                    s.level1.temperature,
                    s.level1.top_k,
                    s.level1.top_p
                ),
            ),
        ];
        metadata.extend(negative);
        metadata
    }

    /// Tokens → pixels with `decoder` (`size` overrides the diffusion output size), and
    /// the metadata saying how.
    fn render(
        &mut self,
        image: usize,
        tokens: &DualTokens,
        decoder: &Decoder,
        size: Option<ImageSize>,
        r: &mut Reporter,
    ) -> Result<(RgbImage, Vec<(String, String)>)> {
        self.ensure(Component::Tokenizer, r)?;
        let mut metadata = vec![(
            "illume.tokenizer".to_string(),
            self.sources.describe(Component::Tokenizer),
        )];
        let [h1, w1] = tokens.semantic.shape;
        let [h2, w2] = tokens.pixel.shape;
        metadata.push((
            "illume.tokens".into(),
            format!("{h1}x{w1} semantic + {h2}x{w2} pixel"),
        ));
        let settings = match decoder {
            Decoder::Pixel => {
                r.send(Event::Decoding {
                    image,
                    diffusion: false,
                })?;
                let tokenizer = self.tokenizer.as_ref().expect("loaded by ensure");
                metadata.push(("illume.decoder".into(), "pixel".into()));
                return Ok((tokenizer.decode_rgb(tokens)?, metadata));
            }
            Decoder::Diffusion(settings) => settings,
        };
        self.ensure(Component::Diffusion, r)?;
        r.send(Event::Decoding {
            image,
            diffusion: true,
        })?;
        let codes = CodeEmbedder::new(
            self.tokenizer.as_ref().expect("loaded by ensure"),
            settings.code_precision,
        );
        let diffusion = self.diffusion.as_ref().expect("loaded by ensure");
        let mut options = settings.options.clone();
        if size.is_some() {
            options.size = size;
        }
        let pixels = diffusion.decode(&codes, tokens, &options, |step| {
            r.note(Event::DiffusionStep {
                image,
                index: step.index,
                total: step.total,
                preview: settings
                    .latent_preview
                    .then(|| latent_preview(step.latents))
                    .flatten(),
            });
            if r.cancelled() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        metadata.extend([
            ("illume.decoder".to_string(), "diffusion".to_string()),
            (
                "illume.diffusion".into(),
                self.sources.describe(Component::Diffusion),
            ),
            (
                "illume.scheduler".into(),
                diffusion.scheduler().class_name().into(),
            ),
            ("illume.steps".into(), options.steps.to_string()),
            (
                "illume.diffusion_cfg".into(),
                options.guidance_scale.to_string(),
            ),
            ("illume.diffusion_seed".into(), options.seed.to_string()),
            (
                "illume.code_precision".into(),
                format!("{:?}", settings.code_precision),
            ),
        ]);
        Ok((pixels, metadata))
    }
}

/// Image `index` of a request samples with the request's seed + `index`.
fn with_seed_offset(request: &ImageRequest, index: usize) -> ImageRequest {
    let mut request = request.clone();
    if let Decoding::Sample { seed } = request.decoding {
        request.decoding = Decoding::Sample {
            seed: seed.wrapping_add(index as u64),
        };
    }
    request
}

/// DualViTok's pixel decoder as the previews call it.
type PreviewDecoder<'m> =
    dyn Fn(&DualTokens) -> std::result::Result<RgbImage, illume_dualvitok::Error> + 'm;

fn preview_decoder<B: IllumeBackend>(tokenizer: &DualViTok<B>) -> Box<PreviewDecoder<'_>> {
    Box::new(move |tokens| tokenizer.decode_rgb(tokens))
}

/// The MLLM observer that turns generated ids into [`Event::Token`]s (and, when asked,
/// [`Event::Preview`]s) and carries the caller's cancellation into the generation loop.
struct TokenEvents<'r, 'a, 'm> {
    reporter: &'r mut Reporter<'a>,
    image: usize,
    max: usize,
    /// Positions of the prompt (text tokens and image embeddings).
    prompt: usize,
    count: usize,
    stream: Stream<'m>,
    /// What stopped the generation from this side (a text or preview decoding error).
    error: Option<PipelineError>,
}

enum Stream<'m> {
    Image {
        layout: &'m VocabLayout,
        grid: ImageGrid,
        /// Codes so far per level.
        codes: [Vec<u32>; 2],
        previews: Option<Previews<'m>>,
    },
    Text {
        tokenizer: &'m TextTokenizer,
        stream: TextStream,
    },
}

/// Throttled decodes of the grids so far.
struct Previews<'m> {
    every: Duration,
    last: Option<Instant>,
    decode: &'m PreviewDecoder<'m>,
}

impl<'r, 'a, 'm> TokenEvents<'r, 'a, 'm> {
    fn image(
        reporter: &'r mut Reporter<'a>,
        image: usize,
        layout: &'m VocabLayout,
        height: usize,
        width: usize,
    ) -> Self {
        let grid = ImageGrid::for_size(height, width);
        Self {
            reporter,
            image,
            max: grid.max_new_tokens(),
            prompt: 0,
            count: 0,
            stream: Stream::Image {
                layout,
                grid,
                codes: [Vec::new(), Vec::new()],
                previews: None,
            },
            error: None,
        }
    }

    /// Previews at most `every` apart, decoded by `decode` (both needed).
    fn with_previews(
        mut self,
        every: Option<Duration>,
        decode: Option<&'m PreviewDecoder<'m>>,
    ) -> Self {
        if let Stream::Image { previews, .. } = &mut self.stream {
            *previews = every.zip(decode).map(|(every, decode)| Previews {
                every,
                last: None,
                decode,
            });
        }
        self
    }

    fn text(reporter: &'r mut Reporter<'a>, max: usize, tokenizer: &'m TextTokenizer) -> Self {
        Self {
            reporter,
            image: 0,
            max,
            prompt: 0,
            count: 0,
            stream: Stream::Text {
                tokenizer,
                stream: TextStream::default(),
            },
            error: None,
        }
    }

    /// The error that stopped the generation from this side, if any (it comes before the
    /// generation's own `Cancelled`).
    fn check(&mut self) -> Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }
}

/// The grids as far as `codes` go, the rest code 0.
fn partial_tokens(grid: &ImageGrid, codes: &[Vec<u32>; 2]) -> DualTokens {
    let level = |l: usize| {
        let shape = grid.level(l);
        let mut indices = codes[l].clone();
        indices.resize(shape[0] * shape[1], 0);
        TokenGrid { shape, indices }
    };
    DualTokens {
        semantic: level(0),
        pixel: level(1),
    }
}

impl Observer for TokenEvents<'_, '_, '_> {
    fn prompt(&mut self, positions: usize) {
        self.prompt = positions;
    }

    fn token(&mut self, step: usize, token: u32) {
        self.count += 1;
        let mut preview = None;
        let kind = match &mut self.stream {
            Stream::Image {
                layout,
                grid,
                codes,
                previews,
            } => match layout.code_of(token) {
                Some((level, code)) if level < 2 => {
                    let shape = grid.level(level);
                    let cols = shape[1].max(1);
                    let at = codes[level].len();
                    if at < shape[0] * shape[1] {
                        codes[level].push(code);
                    }
                    let row_done = (at + 1) % cols == 0;
                    if let Some(p) = previews
                        .as_mut()
                        .filter(|p| row_done && p.last.is_none_or(|last| last.elapsed() >= p.every))
                    {
                        p.last = Some(Instant::now());
                        let rows = [0, 1].map(|l| codes[l].len() / grid.level(l)[1].max(1));
                        preview = Some(((p.decode)(&partial_tokens(grid, codes)), rows));
                    }
                    TokenKind::Image {
                        level,
                        row: at / cols,
                        col: at % cols,
                        grid: shape,
                    }
                }
                _ => TokenKind::Structure,
            },
            Stream::Text { tokenizer, stream } => match stream.push(tokenizer, token) {
                Ok(text) => TokenKind::Text(text.unwrap_or_default()),
                Err(e) => {
                    self.error.get_or_insert(e.into());
                    TokenKind::Text(String::new())
                }
            },
        };
        self.reporter.note(Event::Token {
            image: self.image,
            index: step,
            max: self.max,
            kind,
        });
        match preview {
            Some((Ok(picture), rows)) => self.reporter.note(Event::Preview {
                image: self.image,
                picture,
                rows,
            }),
            Some((Err(e), _)) => {
                self.error.get_or_insert(e.into());
            }
            None => {}
        }
    }

    fn cancelled(&mut self) -> bool {
        self.reporter.cancelled() || self.error.is_some()
    }
}
