//! Score transforms on one full-vocabulary row (host side) and the token choice.
//!
//! Each function reproduces one PyTorch/transformers operation of the official generation
//! path; they work in place on `f32` scores, `-inf` meaning "not allowed".
//!
//! Why on the host: the processor needs a sort for top-p, and Burn 0.21 sorts by reading the
//! tensor back on every backend; the final-position logits (1.1 MB for the 3B vocabulary)
//! are read once per step instead, the only device sync of a step, and skipped entirely on
//! steps whose token is forced by the image structure.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Temperature, top-k and top-p of one sampling mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
}

impl SamplingParams {
    pub const fn new(temperature: f32, top_k: usize, top_p: f32) -> Self {
        Self {
            temperature,
            top_k,
            top_p,
        }
    }

    /// Temperature 1, no top-k, no top-p.
    pub const NEUTRAL: Self = Self::new(1.0, 0, 1.0);
}

/// `torch.log_softmax` over the row.
pub fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let sum: f64 = scores.iter().map(|&s| ((s - max) as f64).exp()).sum();
    let log_sum = sum.ln() as f32;
    scores.iter_mut().for_each(|s| *s = *s - max - log_sum);
}

/// Guided scores `g·(cond − uncond) + uncond`, written into `cond` (both log-probabilities).
pub fn guide(cond: &mut [f32], uncond: &[f32], guidance: f32) {
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = guidance * (*c - u) + u;
    }
}

pub fn temperature(scores: &mut [f32], t: f32) {
    scores.iter_mut().for_each(|s| *s /= t);
}

/// Keep scores `≥` the k-th largest (ties kept; `-inf` entries count, as in `torch.topk`).
pub fn top_k(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    let mut finite: Vec<f32> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    if k > finite.len() {
        // The k-th largest is -inf: nothing is below it.
        return;
    }
    let (_, kth, _) = finite.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    scores
        .iter_mut()
        .filter(|s| **s < kth)
        .for_each(|s| *s = f32::NEG_INFINITY);
}

/// Allowed entries `(index, score)` sorted by descending score, ties by index.
fn sorted_finite(scores: &[f32]) -> Vec<(usize, f32)> {
    let mut entries: Vec<(usize, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_finite())
        .map(|(i, &s)| (i, s))
        .collect();
    entries.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    entries
}

/// Softmax probabilities of `values` (descending order kept), in f32 like torch.
fn softmax_f32(values: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = values.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = values.map(|v| (v - max).exp()).collect();
    let sum = exps.iter().map(|&e| e as f64).sum::<f64>() as f32;
    exps.into_iter().map(|e| e / sum).collect()
}

/// ILLUME's top-p (`_apply_sampling`): sort descending, remove a token when the cumulative
/// probability of the tokens *before* it exceeds `p` (the first token is always kept).
pub fn top_p(scores: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let entries = sorted_finite(scores);
    let probs = softmax_f32(entries.iter().map(|e| e.1));
    let mut cumulative = 0.0f32;
    for (&(index, _), prob) in entries.iter().zip(probs) {
        if cumulative > p {
            scores[index] = f32::NEG_INFINITY;
        }
        cumulative += prob;
    }
}

/// transformers' `TopPLogitsWarper` (`min_tokens_to_keep` 1): sort ascending, remove the
/// tokens whose cumulative probability is `≤ 1 − p`, always keeping the most likely.
pub fn hf_top_p(scores: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let mut entries = sorted_finite(scores);
    entries.reverse();
    let probs = softmax_f32(entries.iter().map(|e| e.1));
    let mut cumulative = 0.0f32;
    let last = entries.len().saturating_sub(1);
    for (i, (&(index, _), prob)) in entries.iter().zip(probs).enumerate() {
        cumulative += prob;
        if cumulative <= 1.0 - p && i < last {
            scores[index] = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest score, first one on ties (`torch.argmax`).
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// Multinomial sampling from `softmax(scores)` with a seeded, portable RNG.
///
/// The generator is ChaCha8 (`rand_chacha`, value-stable across platforms and versions)
/// seeded with `seed_from_u64(seed)`. Each sampled token draws one `u64`, turned into
/// `u = (x >> 11) · 2⁻⁵³` in [0, 1); the token is the first id, in increasing id order,
/// whose cumulative probability exceeds `u` (probabilities in f64). The same seed,
/// scores and order of calls give the same tokens everywhere; they cannot match torch's
/// `multinomial` stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn sample(&mut self, scores: &[f32]) -> u32 {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return argmax(scores);
        }
        let weights: Vec<f64> = scores.iter().map(|&s| ((s - max) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut cumulative = 0.0;
        let mut chosen = None;
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                cumulative += w;
                chosen = Some(i);
                if cumulative > u {
                    break;
                }
            }
        }
        chosen.map(|i| i as u32).unwrap_or_else(|| argmax(scores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn top_k_keeps_ties_and_counts_masked_entries() {
        let mut s = vec![1.0, 3.0, 2.0, 3.0, NEG];
        top_k(&mut s, 2);
        assert_eq!(s, vec![NEG, 3.0, NEG, 3.0, NEG]);
        let mut s = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        top_k(&mut s, 3);
        assert_eq!(
            s,
            vec![NEG, 3.0, 2.0, 2.0, NEG],
            "ties with the k-th are kept"
        );
        // Only two allowed tokens and k = 3: the 3rd largest is -inf, nothing removed.
        let mut s = vec![NEG, 1.0, NEG, 0.5];
        top_k(&mut s, 3);
        assert_eq!(s, vec![NEG, 1.0, NEG, 0.5]);
    }

    #[test]
    fn top_p_keeps_the_token_that_crosses_the_threshold() {
        // probabilities 0.5, 0.3, 0.2 (log scores)
        let base: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        let mut s = base.clone();
        top_p(&mut s, 0.6);
        assert!(s[0].is_finite() && s[1].is_finite() && s[2] == NEG, "{s:?}");
        let mut s = base.clone();
        top_p(&mut s, 0.4);
        assert!(s[0].is_finite() && s[1] == NEG && s[2] == NEG, "{s:?}");
        // transformers' version removes the low tail whose mass is <= 1 - p.
        let mut s = base.clone();
        hf_top_p(&mut s, 0.75);
        assert!(s[0].is_finite() && s[1].is_finite() && s[2] == NEG, "{s:?}");
        let mut s = base;
        hf_top_p(&mut s, 0.1);
        assert!(s[0].is_finite() && s[1] == NEG && s[2] == NEG, "{s:?}");
    }

    #[test]
    fn log_softmax_and_guidance() {
        let mut s = vec![1.0f32, 2.0, 3.0];
        log_softmax(&mut s);
        let total: f32 = s.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let mut c = vec![-1.0f32, -2.0];
        guide(&mut c, &[-1.5, -1.0], 2.0);
        assert_eq!(c, vec![-0.5, -3.0]);
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_distribution() {
        let scores = [0.0f32, (3.0f32).ln(), NEG];
        let draw = |seed| {
            let mut sampler = Sampler::new(seed);
            (0..4000)
                .map(|_| sampler.sample(&scores))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let picks = draw(7);
        assert!(!picks.contains(&2), "a masked token was sampled");
        let ones = picks.iter().filter(|&&t| t == 1).count() as f64 / picks.len() as f64;
        assert!(
            (ones - 0.75).abs() < 0.03,
            "token 1 frequency {ones}, expected 0.75"
        );
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
    }
}
