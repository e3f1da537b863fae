//! Autoregressive generation with the interleaved processor and classifier-free guidance.
//!
//! The conditional prompt lives in cache row 0 and, with CFG, the unconditional prompt in
//! row 1. Beyond the official code (which runs the unconditional stream as a second,
//! sequential model call inside the logits processor), both rows advance in ONE batched
//! forward per step ([`CfgMode::Batched`]): the projections and the LM head read the
//! weights once for both rows. [`CfgMode::Sequential`] keeps the official two calls; both
//! give the same scores (tested).
//!
//! The unconditional stream follows the chain's rules: it is used on steps whose plan says
//! so; a step after an unused one restarts it from its prompt plus the last token (the
//! eval chain's "first image step"), otherwise it is fed each new token.
//!
//! Per step there is one device sync, reading the final-position logits; steps whose token
//! is forced by the image structure skip even that (unless an observer records scores).

use burn::tensor::{backend::Backend, Tensor};
use illume_backends::IllumeBackend;

use crate::decoder::LanguageModel;
use crate::error::{MllmError, Result};
use crate::processor::{LogitsProcessor, StepPlan};
use crate::sampling::{self, Sampler, SamplingParams};

/// How the next token is chosen from the processed scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// Arg-max (`do_sample=False`).
    Greedy,
    /// Multinomial sampling with [`Sampler`]'s seeded RNG.
    Sample { seed: u64 },
}

/// How the unconditional CFG stream is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfgMode {
    /// Conditional and unconditional rows in one forward call.
    Batched,
    /// Two forward calls per step, as the official processor does.
    Sequential,
}

/// Options of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// transformers' temperature/top-k/top-p warpers that `generate(do_sample=True, ...)`
    /// appends after the custom processors (the eval chain passes its global values);
    /// applied only when sampling.
    pub warpers: SamplingParams,
    /// Generation ends after any of these (included in the output).
    pub stop_tokens: Vec<u32>,
    /// transformers' repetition penalty on the generated ids (1 = off).
    pub repetition_penalty: f32,
    pub cfg_mode: CfgMode,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            decoding: Decoding::Greedy,
            warpers: SamplingParams::NEUTRAL,
            stop_tokens: Vec::new(),
            repetition_penalty: 1.0,
            cfg_mode: CfgMode::Batched,
        }
    }
}

/// The scores of one step, for observers that record them.
#[derive(Debug)]
pub struct StepScores<'a> {
    pub step: usize,
    pub plan: &'a StepPlan,
    /// Raw conditional logits (before the repetition penalty).
    pub raw: &'a [f32],
    /// Raw unconditional logits, when the step used them.
    pub uncond: Option<&'a [f32]>,
    /// After the processor (and the warpers when sampling): what the token is chosen from.
    pub processed: &'a [f32],
}

/// Watches a generation: tokens as they come (progress, streaming text), and optionally the
/// full scores of every step (parity tests).
pub trait Observer {
    /// Whether [`Observer::scores`] should be called (this reads the logits even on forced
    /// steps).
    fn records_scores(&self) -> bool {
        false
    }
    fn scores(&mut self, _scores: &StepScores<'_>) {}
    /// The conditional prompt's length in positions (text tokens and image embeddings),
    /// before the first step.
    fn prompt(&mut self, _positions: usize) {}
    fn token(&mut self, _step: usize, _token: u32) {}
    /// Asked before every step: `true` ends the generation with [`MllmError::Cancelled`]
    /// (at most one step after the request to stop).
    fn cancelled(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Generate after `prompt` (`[1, n, hidden]` embeddings); `unconditional` is the CFG
/// prompt, required when the processor guides.
pub fn generate<B: IllumeBackend>(
    lm: &LanguageModel<B>,
    prompt: Tensor<B, 3>,
    unconditional: Option<Tensor<B, 3>>,
    processor: &mut LogitsProcessor,
    options: &GenerateOptions,
    observer: &mut dyn Observer,
) -> Result<Vec<u32>> {
    if options.max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    let n_cond = prompt.dims()[1];
    observer.prompt(n_cond);
    let n_uncond = unconditional.as_ref().map(|u| u.dims()[1]).unwrap_or(0);
    let rows = if unconditional.is_some() { 2 } else { 1 };
    let mut cache = lm.new_cache(rows, n_cond.max(n_uncond) + options.max_new_tokens);
    let vocab = lm.config.vocab_size;

    // Logits of the step about to be processed: row 0 conditional, row 1 (if present)
    // unconditional.
    let mut logits = lm.forward_last_logits(prompt, &mut cache, &[0])?;
    if let Some(uncond) = unconditional {
        let uncond_logits = lm.forward_last_logits(uncond, &mut cache, &[1])?;
        logits = Tensor::cat(vec![logits, uncond_logits], 0);
    }
    let mut sampler = match options.decoding {
        Decoding::Sample { seed } => Some(Sampler::new(seed)),
        Decoding::Greedy => None,
    };
    let mut generated: Vec<u32> = Vec::with_capacity(options.max_new_tokens);
    for step in 0..options.max_new_tokens {
        if observer.cancelled() {
            return Err(MllmError::Cancelled);
        }
        let plan = processor.plan(generated.last().copied());
        if plan.uses_uncond() && rows < 2 {
            return Err(MllmError::Generation(
                "classifier-free guidance needs an unconditional prompt".into(),
            ));
        }
        let token = match plan.forced() {
            Some(token) if !observer.records_scores() => token,
            _ => {
                let host = read_rows(logits.clone())?;
                let raw = &host[..vocab];
                let uncond = plan.uses_uncond().then(|| &host[vocab..2 * vocab]);
                let mut scores = raw.to_vec();
                penalize_repetitions(&mut scores, &generated, options.repetition_penalty);
                processor.process(&plan, &mut scores, uncond);
                if let Some(sampler) = sampler.as_mut() {
                    apply_warpers(&mut scores, options.warpers);
                    let token = sampler.sample(&scores);
                    report(observer, step, &plan, raw, uncond, &scores);
                    token
                } else {
                    report(observer, step, &plan, raw, uncond, &scores);
                    sampling::argmax(&scores)
                }
            }
        };
        observer.token(step, token);
        generated.push(token);
        if options.stop_tokens.contains(&token) || generated.len() == options.max_new_tokens {
            break;
        }
        // Feed the token; the unconditional row only when the next step mixes it in,
        // restarting it from its prompt when this step did not use it.
        let next = processor.peek(token);
        let embed = lm.embed(&[token])?;
        logits = if next.uses_uncond() {
            if !plan.uses_uncond() {
                cache.truncate(1, n_uncond);
            }
            match options.cfg_mode {
                CfgMode::Batched => {
                    let both = Tensor::cat(vec![embed.clone(), embed], 0);
                    lm.forward_last_logits(both, &mut cache, &[0, 1])?
                }
                CfgMode::Sequential => {
                    let cond = lm.forward_last_logits(embed.clone(), &mut cache, &[0])?;
                    let uncond = lm.forward_last_logits(embed, &mut cache, &[1])?;
                    Tensor::cat(vec![cond, uncond], 0)
                }
            }
        } else {
            lm.forward_last_logits(embed, &mut cache, &[0])?
        };
    }
    Ok(generated)
}

fn report(
    observer: &mut dyn Observer,
    step: usize,
    plan: &StepPlan,
    raw: &[f32],
    uncond: Option<&[f32]>,
    processed: &[f32],
) {
    if observer.records_scores() {
        observer.scores(&StepScores {
            step,
            plan,
            raw,
            uncond,
            processed,
        });
    }
}

/// The logits rows on the host (the step's one device sync).
fn read_rows<B: Backend>(logits: Tensor<B, 2>) -> Result<Vec<f32>> {
    logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| MllmError::Generation(format!("cannot read logits: {e:?}")))
}

/// transformers' `RepetitionPenaltyLogitsProcessor` over the generated ids.
fn penalize_repetitions(scores: &mut [f32], generated: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = generated.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        let s = &mut scores[id as usize];
        *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
    }
}

/// transformers' Temperature → TopK → TopP warpers (each only when not neutral).
fn apply_warpers(scores: &mut [f32], warpers: SamplingParams) {
    if warpers.temperature != 1.0 {
        sampling::temperature(scores, warpers.temperature);
    }
    sampling::top_k(scores, warpers.top_k);
    sampling::hf_top_p(scores, warpers.top_p);
}
