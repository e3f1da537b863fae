//! The interleaved logits processor: which tokens may come next, classifier-free guidance,
//! and per-level sampling, as an explicit state machine driven by the last generated token.
//!
//! Two official chains exist and both are reproduced (select with [`Chain`]):
//!
//! - [`Chain::Eval`] — `InterleavedLogitsProcessor` of `generation_eval` (the evaluation
//!   scripts). CFG only inside the image (from the step after `<start_of_image>` through
//!   `<end_of_image>`); the unconditional stream restarts from its prompt plus the last token
//!   each time an image starts. In text mode the raw logits are masked (no image codes, no
//!   inner structure tokens) and sampled with the default parameters.
//! - [`Chain::App`] — `ILLUME/app.py`'s `CFGLogits` + `DualVQImageTokenProcessor` +
//!   `DynamicSamplingProcessor`. Log-softmax and CFG on every step (from the first), the
//!   first token forced to `<start_of_image>`, `<|im_end|>` forced after `<end_of_image>`,
//!   no text mask; the row counters advance when a mask is applied.
//!
//! Order of one step, as in the official code: state update from the last token → CFG in
//! log-softmax space `g·(cond − uncond) + uncond` → structure mask → temperature → top-k →
//! top-p of the current mode (text, level 0 or level 1).

use std::ops::Range;

use crate::sampling::{self, SamplingParams};
use crate::vocab::VocabLayout;

/// Token grids of one image: `(rows, columns)` of the semantic (level 0) and pixel
/// (level 1) codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGrid {
    pub semantic: [usize; 2],
    pub pixel: [usize; 2],
}

/// Pixels per pixel-level token along each axis (the MoVQ encoder's reduction; the MLLM's
/// image processor resizes to multiples of it).
pub const PIXEL_FACTOR: usize = 16;

impl ImageGrid {
    /// The grids of a `height × width` image: the semantic grid of DualViTok's scaling layer
    /// (`RESOLUTION_MAPPING` for the anchors, else the size floored to 28) and the pixel grid
    /// `height/16 × width/16` (the official `calculate_image_token_num` for the anchors).
    pub fn for_size(height: usize, width: usize) -> Self {
        Self {
            semantic: illume_dualvitok::preprocess::semantic_grid(height, width),
            pixel: [height / PIXEL_FACTOR, width / PIXEL_FACTOR],
        }
    }

    /// `(rows, columns)` of `level`.
    pub fn level(&self, level: usize) -> [usize; 2] {
        if level == 0 {
            self.semantic
        } else {
            self.pixel
        }
    }

    /// Tokens of one generated image, `<start_of_image>` to `<end_of_image>` included.
    pub fn image_tokens(&self) -> usize {
        let [h1, w1] = self.semantic;
        let [h2, w2] = self.pixel;
        h1 * (w1 + 1) + h2 * (w2 + 1) + 6
    }

    /// The official `max_new_tokens` for one image (`calculate_image_token_num`): the image
    /// plus 4 tokens of slack.
    pub fn max_new_tokens(&self) -> usize {
        self.image_tokens() + 4
    }
}

/// Sampling parameters of the three modes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelSampling {
    /// Outside the image levels (text, structure tokens).
    pub text: SamplingParams,
    /// Semantic codes.
    pub level0: SamplingParams,
    /// Pixel codes.
    pub level1: SamplingParams,
}

impl LevelSampling {
    /// The official defaulting (`InferenceConfig`): level 0 = the global values, level 1 =
    /// level 0 with three times its top-k.
    pub fn from_global(global: SamplingParams) -> Self {
        Self::with_semantic(global, global)
    }

    /// Level 1 derived from level 0 (top-k ×3).
    pub fn with_semantic(text: SamplingParams, level0: SamplingParams) -> Self {
        let level1 = SamplingParams {
            top_k: level0.top_k * 3,
            ..level0
        };
        Self {
            text,
            level0,
            level1,
        }
    }
}

/// Which official processor chain to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// `generation_eval`'s `InterleavedLogitsProcessor`. With `force_image_start`, the first
    /// token is forced to `<start_of_image>` (the official code leaves it to the model).
    Eval { force_image_start: bool },
    /// `ILLUME/app.py`'s processors.
    App,
}

/// Which tokens the next step may produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Exactly one token (the step's outcome is known without looking at the logits).
    Only(u32),
    /// A contiguous id range (the codes of one level).
    Range(Range<u32>),
    /// Any of these tokens.
    Set(Vec<u32>),
    /// Text mode of the eval chain: everything but image codes and the inner structure
    /// tokens.
    Text,
    /// No mask.
    Any,
}

/// What one step does, decided from the last token before the logits are looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// Convert the conditional logits to log-probabilities.
    pub log_softmax: bool,
    /// Guidance scale when the unconditional stream is mixed in (never 1).
    pub guidance: Option<f32>,
    pub allowed: Allowed,
    pub sampling: SamplingParams,
}

impl StepPlan {
    /// Whether this step needs the unconditional stream's logits.
    pub fn uses_uncond(&self) -> bool {
        self.guidance.is_some()
    }

    /// The token, when only one is allowed.
    pub fn forced(&self) -> Option<u32> {
        match self.allowed {
            Allowed::Only(id) => Some(id),
            _ => None,
        }
    }
}

/// Bookkeeping of the image being generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ImageState {
    generating_image: bool,
    /// `Some(level)` while inside `<start_of_level{L}>` … `<end_of_level{L}>`.
    level: Option<usize>,
    tokens_in_row: usize,
    rows_in_level: usize,
    /// The sampling modes (`in_level0_mode`, `in_level1_mode`).
    level0_mode: bool,
    level1_mode: bool,
}

/// The processor of one generation.
#[derive(Debug, Clone)]
pub struct LogitsProcessor {
    chain: Chain,
    layout: VocabLayout,
    /// `None` for pure text generation (the official zero-row grid).
    grid: Option<ImageGrid>,
    guidance: f32,
    sampling: LevelSampling,
    state: ImageState,
}

impl LogitsProcessor {
    pub fn new(
        chain: Chain,
        layout: VocabLayout,
        grid: Option<ImageGrid>,
        guidance: f32,
        sampling: LevelSampling,
    ) -> Self {
        Self {
            chain,
            layout,
            grid,
            guidance,
            sampling,
            state: ImageState::default(),
        }
    }

    pub fn layout(&self) -> &VocabLayout {
        &self.layout
    }

    fn grid_of(&self, level: usize) -> [usize; 2] {
        self.grid.map(|g| g.level(level)).unwrap_or([0, 0])
    }

    fn guidance(&self) -> Option<f32> {
        (self.guidance != 1.0).then_some(self.guidance)
    }

    /// Advance the state with the last generated token (`None` before the first) and say
    /// what this step does.
    pub fn plan(&mut self, last: Option<u32>) -> StepPlan {
        match self.chain {
            Chain::Eval { force_image_start } => self.plan_eval(last, force_image_start),
            Chain::App => self.plan_app(last),
        }
    }

    /// What the step after `token` will need, without changing the state.
    pub fn peek(&self, token: u32) -> StepPlan {
        self.clone().plan(Some(token))
    }

    fn sampling_mode(&self) -> SamplingParams {
        if self.state.level0_mode {
            self.sampling.level0
        } else if self.state.level1_mode {
            self.sampling.level1
        } else {
            self.sampling.text
        }
    }

    /// `InterleavedLogitsProcessor.__call__`.
    fn plan_eval(&mut self, last: Option<u32>, force_image_start: bool) -> StepPlan {
        let s = self.layout.structure;
        let state = &mut self.state;
        match last {
            Some(t) if t == s.start_of_image => {
                *state = ImageState {
                    generating_image: true,
                    ..ImageState::default()
                };
            }
            Some(t) if t == s.start_of_level0 => {
                state.level = Some(0);
                (state.tokens_in_row, state.rows_in_level) = (0, 0);
                (state.level0_mode, state.level1_mode) = (true, false);
            }
            Some(t) if t == s.end_of_level0 => {
                state.level = None;
                state.level0_mode = false;
            }
            Some(t) if t == s.start_of_level1 => {
                state.level = Some(1);
                (state.tokens_in_row, state.rows_in_level) = (0, 0);
                (state.level0_mode, state.level1_mode) = (false, true);
            }
            Some(t) if t == s.end_of_level1 => {
                state.level = None;
                state.level1_mode = false;
            }
            Some(t) if t == s.end_of_image => *state = ImageState::default(),
            Some(t) if t == s.end_of_line && state.generating_image => {
                state.tokens_in_row = 0;
                state.rows_in_level += 1;
            }
            Some(t) if state.generating_image => {
                if let Some(level) = state.level {
                    if self.layout.levels[level].contains(&t) {
                        state.tokens_in_row += 1;
                    }
                }
            }
            _ => {}
        }
        let state = self.state.clone();
        let allowed = if state.generating_image {
            match state.level {
                Some(level) => {
                    let [rows, cols] = self.grid_of(level);
                    let end_of_level = [s.end_of_level0, s.end_of_level1][level];
                    if state.rows_in_level == rows {
                        Allowed::Only(end_of_level)
                    } else if state.tokens_in_row == cols {
                        Allowed::Only(s.end_of_line)
                    } else {
                        Allowed::Range(self.layout.levels[level].clone())
                    }
                }
                None => match last {
                    Some(t) if t == s.start_of_image => Allowed::Only(s.start_of_level0),
                    Some(t) if t == s.end_of_level0 => Allowed::Only(s.start_of_level1),
                    Some(t) if t == s.end_of_level1 => Allowed::Only(s.end_of_image),
                    None => Allowed::Only(s.start_of_image),
                    _ => Allowed::Set(vec![s.start_of_level0, s.start_of_level1, s.end_of_image]),
                },
            }
        } else if last.is_none() && force_image_start {
            Allowed::Only(s.start_of_image)
        } else {
            Allowed::Text
        };
        StepPlan {
            log_softmax: state.generating_image,
            guidance: if state.generating_image {
                self.guidance()
            } else {
                None
            },
            allowed,
            sampling: self.sampling_mode(),
        }
    }

    /// `CFGLogits` → `DualVQImageTokenProcessor` → `DynamicSamplingProcessor`.
    fn plan_app(&mut self, last: Option<u32>) -> StepPlan {
        let s = self.layout.structure;
        let guidance = self.guidance();
        // DynamicSamplingProcessor's modes (an empty history resets them).
        match last {
            None => (self.state.level0_mode, self.state.level1_mode) = (false, false),
            Some(t) => {
                if t == s.start_of_level0 {
                    (self.state.level0_mode, self.state.level1_mode) = (true, false);
                } else if t == s.end_of_level0 {
                    self.state.level0_mode = false;
                }
                if t == s.start_of_level1 {
                    (self.state.level0_mode, self.state.level1_mode) = (false, true);
                } else if t == s.end_of_level1 {
                    self.state.level1_mode = false;
                }
            }
        }
        let allowed = self.app_structure(last);
        StepPlan {
            log_softmax: true,
            guidance,
            allowed,
            sampling: self.sampling_mode(),
        }
    }

    /// `DualVQImageTokenProcessor.__call__`: counters advance when a mask is applied.
    fn app_structure(&mut self, last: Option<u32>) -> Allowed {
        let s = self.layout.structure;
        let Some(t) = last else {
            return Allowed::Only(s.start_of_image);
        };
        let state = &mut self.state;
        if t == s.start_of_image {
            state.generating_image = true;
            state.level = None;
            (state.tokens_in_row, state.rows_in_level) = (0, 0);
            return Allowed::Only(s.start_of_level0);
        }
        if t == s.start_of_level0 {
            state.level = Some(0);
            (state.tokens_in_row, state.rows_in_level) = (0, 0);
        }
        if t == s.end_of_level0 {
            return Allowed::Only(s.start_of_level1);
        }
        if t == s.start_of_level1 {
            state.level = Some(1);
            (state.tokens_in_row, state.rows_in_level) = (0, 0);
        }
        if t == s.end_of_level1 {
            return Allowed::Only(s.end_of_image);
        }
        if t == s.end_of_image {
            state.generating_image = false;
            state.level = None;
            (state.tokens_in_row, state.rows_in_level) = (0, 0);
            return Allowed::Only(self.layout.end_of_text);
        }
        let Some(level) = state.level else {
            return Allowed::Any;
        };
        let [rows, cols] = self.grid.map(|g| g.level(level)).unwrap_or([0, 0]);
        if state.tokens_in_row == cols {
            state.tokens_in_row = 0;
            state.rows_in_level += 1;
            return Allowed::Only(s.end_of_line);
        }
        if state.rows_in_level == rows {
            return Allowed::Only([s.end_of_level0, s.end_of_level1][level]);
        }
        state.tokens_in_row += 1;
        Allowed::Range(self.layout.levels[level].clone())
    }

    /// Turn the conditional logits of one step into the processed scores, in place.
    /// `uncond` must be given when the plan uses it.
    pub fn process(&self, plan: &StepPlan, scores: &mut [f32], uncond: Option<&[f32]>) {
        if plan.log_softmax {
            sampling::log_softmax(scores);
        }
        if let (Some(g), Some(uncond)) = (plan.guidance, uncond) {
            let mut u = uncond.to_vec();
            sampling::log_softmax(&mut u);
            sampling::guide(scores, &u, g);
        }
        self.apply_mask(&plan.allowed, scores);
        if scores.iter().all(|s| *s == f32::NEG_INFINITY) {
            // The official fallback: only end-of-text, score 0.
            scores[self.layout.end_of_text as usize] = 0.0;
        }
        let p = plan.sampling;
        // DynamicSamplingProcessor skips a non-positive temperature; the eval chain would
        // divide by it, which options validation rules out.
        if p.temperature > 0.0 {
            sampling::temperature(scores, p.temperature);
        }
        sampling::top_k(scores, p.top_k);
        sampling::top_p(scores, p.top_p);
    }

    fn apply_mask(&self, allowed: &Allowed, scores: &mut [f32]) {
        let neg = f32::NEG_INFINITY;
        let keep_only = |scores: &mut [f32], keep: &dyn Fn(usize) -> bool| {
            scores
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| !keep(*i))
                .for_each(|(_, s)| *s = neg);
        };
        match allowed {
            Allowed::Any => {}
            Allowed::Only(id) => keep_only(scores, &|i| i == *id as usize),
            Allowed::Range(r) => keep_only(scores, &|i| r.contains(&(i as u32))),
            Allowed::Set(ids) => keep_only(scores, &|i| ids.contains(&(i as u32))),
            Allowed::Text => {
                let s = self.layout.structure;
                for level in &self.layout.levels {
                    let end = (level.end as usize).min(scores.len());
                    scores[level.start as usize..end].fill(neg);
                }
                for id in [
                    s.start_of_level0,
                    s.end_of_level0,
                    s.start_of_level1,
                    s.end_of_level1,
                    s.end_of_line,
                ] {
                    scores[id as usize] = neg;
                }
            }
        }
    }
}
