//! `DDIMScheduler` (diffusers 0.31) with η = 0, as the SDXL pipeline calls it.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor};
use serde::Deserialize;

use super::schedule::{spaced_timesteps, BetaConfig};
use super::Prediction;
use crate::config::{inconsistent, positive_finite, unsupported};
use crate::error::DiffusionError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DdimConfig {
    #[serde(flatten)]
    pub betas: BetaConfig,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: String,
    pub thresholding: bool,
    pub timestep_spacing: String,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            betas: BetaConfig::default(),
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: "epsilon".into(),
            thresholding: false,
            timestep_spacing: "leading".into(),
        }
    }
}

/// A validated DDIM scheduler.
#[derive(Debug, Clone)]
pub struct Ddim {
    config: DdimConfig,
    alphas_cumprod: Vec<f32>,
    prediction: Prediction,
    path: std::path::PathBuf,
}

/// What a DDIM step needs besides the tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimStep {
    pub prediction: Prediction,
    pub alpha_prod: f32,
    pub alpha_prod_prev: f32,
    pub clip: Option<f32>,
}

impl Ddim {
    pub fn new(config: DdimConfig, path: &Path) -> Result<Self, DiffusionError> {
        if config.thresholding {
            return Err(unsupported(path, "thresholding", true, "false"));
        }
        let prediction = Prediction::parse(&config.prediction_type, path)?;
        if config.clip_sample {
            positive_finite(path, "clip_sample_range", config.clip_sample_range)?;
        }
        let alphas_cumprod = config.betas.alphas_cumprod(path)?;
        Ok(Self {
            config,
            alphas_cumprod,
            prediction,
            path: path.to_path_buf(),
        })
    }

    /// `set_timesteps(steps)`: integer timesteps (as floats). DDIM's linspace grid is
    /// rounded, unlike Euler's.
    pub fn timesteps(&self, steps: usize) -> Result<Vec<f32>, DiffusionError> {
        let c = &self.config;
        let mut t = spaced_timesteps(
            &c.timestep_spacing,
            c.betas.num_train_timesteps,
            steps,
            c.steps_offset,
            &self.path,
        )?;
        if c.timestep_spacing == "linspace" {
            t.iter_mut().for_each(|v| *v = v.round());
        }
        // A step reads the schedule at its timestep and at the previous one.
        let n = c.betas.num_train_timesteps;
        if let Some(late) = t.iter().find(|v| **v >= n as f64) {
            return Err(inconsistent(
                &self.path,
                format!(
                    "steps_offset {} puts timestep {late} of a {steps}-step run past the last \
                     of the {n} training timesteps",
                    c.steps_offset
                ),
            ));
        }
        Ok(t.iter().map(|v| *v as f32).collect())
    }

    /// Per-step constants for timestep `t` of a `steps`-step run.
    pub fn step_at(&self, t: f32, steps: usize) -> DdimStep {
        let n = self.config.betas.num_train_timesteps;
        let t = t as usize;
        let prev = t as i64 - (n / steps) as i64;
        let final_alpha = if self.config.set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        };
        DdimStep {
            prediction: self.prediction,
            alpha_prod: self.alphas_cumprod[t.min(n - 1)],
            alpha_prod_prev: if prev >= 0 {
                self.alphas_cumprod[prev as usize]
            } else {
                final_alpha
            },
            clip: self
                .config
                .clip_sample
                .then_some(self.config.clip_sample_range as f32),
        }
    }
}

/// One deterministic DDIM step (η = 0).
pub fn ddim_step<B: Backend>(
    s: DdimStep,
    model_output: Tensor<B, 4>,
    sample: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let beta_prod = 1.0 - s.alpha_prod;
    let (sqrt_a, sqrt_b) = (s.alpha_prod.sqrt(), beta_prod.sqrt());
    let (original, epsilon) = match s.prediction {
        Prediction::Epsilon => (
            (sample - model_output.clone().mul_scalar(sqrt_b)).div_scalar(sqrt_a),
            model_output,
        ),
        Prediction::Sample => {
            let eps = (sample - model_output.clone().mul_scalar(sqrt_a)).div_scalar(sqrt_b);
            (model_output, eps)
        }
        Prediction::VPrediction => (
            sample.clone().mul_scalar(sqrt_a) - model_output.clone().mul_scalar(sqrt_b),
            model_output.mul_scalar(sqrt_a) + sample.mul_scalar(sqrt_b),
        ),
    };
    let original = match s.clip {
        Some(r) => original.clamp(-r, r),
        None => original,
    };
    let direction = epsilon.mul_scalar((1.0 - s.alpha_prod_prev).sqrt());
    original.mul_scalar(s.alpha_prod_prev.sqrt()) + direction
}
