//! `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler` (diffusers 0.31): sigmas
//! interpolated from the training schedule at the spaced timesteps, Euler steps in sigma
//! (plus fresh noise for the ancestral variant).

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor};
use serde::Deserialize;

use super::schedule::{interp, spaced_timesteps, train_sigmas, BetaConfig};
use super::{Prediction, StepKind};
use crate::config::{inconsistent, positive_finite, unsupported};
use crate::error::DiffusionError;
use crate::noise::NoiseSource;

/// `scheduler_config.json` of `EulerDiscreteScheduler` (also read for the ancestral one,
/// which ignores the sigma-shaping options and defaults them off).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EulerConfig {
    #[serde(flatten)]
    pub betas: BetaConfig,
    pub prediction_type: String,
    pub interpolation_type: String,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_spacing: String,
    pub timestep_type: String,
    pub steps_offset: usize,
    pub final_sigmas_type: String,
}

impl Default for EulerConfig {
    fn default() -> Self {
        Self {
            betas: BetaConfig::default(),
            prediction_type: "epsilon".into(),
            interpolation_type: "linear".into(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: "linspace".into(),
            timestep_type: "discrete".into(),
            steps_offset: 0,
            final_sigmas_type: "zero".into(),
        }
    }
}

/// A validated Euler (or Euler-ancestral) scheduler.
#[derive(Debug, Clone)]
pub struct Euler {
    config: EulerConfig,
    alphas_cumprod: Vec<f32>,
    prediction: Prediction,
    ancestral: bool,
    path: std::path::PathBuf,
}

impl Euler {
    pub fn new(config: EulerConfig, ancestral: bool, path: &Path) -> Result<Self, DiffusionError> {
        let prediction = Prediction::parse(&config.prediction_type, path)?;
        if prediction == Prediction::Sample {
            return Err(unsupported(
                path,
                "prediction_type",
                "sample",
                "epsilon, v_prediction",
            ));
        }
        let flags = [
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
        ];
        for (field, on) in flags {
            if on && !ancestral {
                return Err(unsupported(path, field, true, "false"));
            }
        }
        if !ancestral {
            if config.timestep_type != "discrete" {
                return Err(unsupported(
                    path,
                    "timestep_type",
                    &config.timestep_type,
                    "discrete",
                ));
            }
            if !["linear", "log_linear"].contains(&config.interpolation_type.as_str()) {
                return Err(unsupported(
                    path,
                    "interpolation_type",
                    &config.interpolation_type,
                    "linear, log_linear",
                ));
            }
            if !["zero", "sigma_min"].contains(&config.final_sigmas_type.as_str()) {
                return Err(unsupported(
                    path,
                    "final_sigmas_type",
                    &config.final_sigmas_type,
                    "zero, sigma_min",
                ));
            }
        }
        if !ancestral && config.use_karras_sigmas {
            for (field, value) in [
                ("sigma_min", config.sigma_min),
                ("sigma_max", config.sigma_max),
            ] {
                if let Some(v) = value {
                    positive_finite(path, field, v)?;
                }
            }
            if let (Some(min), Some(max)) = (config.sigma_min, config.sigma_max) {
                if min > max {
                    return Err(inconsistent(
                        path,
                        format!("sigma_min {min} exceeds sigma_max {max}"),
                    ));
                }
            }
        }
        let alphas_cumprod = config.betas.alphas_cumprod(path)?;
        Ok(Self {
            config,
            alphas_cumprod,
            prediction,
            ancestral,
            path: path.to_path_buf(),
        })
    }

    /// `set_timesteps(steps)`: timesteps (float32) and sigmas (steps + 1, float32).
    pub fn timesteps_and_sigmas(
        &self,
        steps: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), DiffusionError> {
        let c = &self.config;
        let path = &self.path;
        let mut timesteps = spaced_timesteps(
            &c.timestep_spacing,
            c.betas.num_train_timesteps,
            steps,
            c.steps_offset,
            path,
        )?;
        if c.timestep_spacing == "linspace" && !self.ancestral {
            // Euler builds this grid with np.linspace(..., dtype=np.float32).
            timesteps.iter_mut().for_each(|t| *t = *t as f32 as f64);
        }
        let train = train_sigmas(&self.alphas_cumprod);
        let mut sigmas: Vec<f64> = if !self.ancestral && c.interpolation_type == "log_linear" {
            // torch.linspace(log σ_min, log σ_max, steps + 1).exp(), float32.
            let lo = (*train.last().expect("schedule") as f64).ln();
            let hi = (train[0] as f64).ln();
            let steps_f = steps as f32;
            (0..=steps)
                .map(|i| {
                    let (lo, hi) = (lo as f32, hi as f32);
                    (lo + (hi - lo) / steps_f * i as f32).exp() as f64
                })
                .collect()
        } else {
            timesteps.iter().map(|t| interp(*t, &train)).collect()
        };
        if !self.ancestral && c.use_karras_sigmas {
            sigmas = karras(&sigmas, c.sigma_min, c.sigma_max, steps);
            let log_sigmas: Vec<f64> = train.iter().map(|s| (*s as f64).ln()).collect();
            timesteps = sigmas.iter().map(|s| sigma_to_t(*s, &log_sigmas)).collect();
        }
        // Every step divides by its sigma: a zero one (a first beta of 0, reached at
        // timestep 0) would turn the image into NaN.
        if let Some(i) = sigmas.iter().position(|s| *s <= 0.0) {
            return Err(inconsistent(
                path,
                format!(
                    "the noise level of step {i} of {steps} (timestep {}) is 0, and the Euler \
                     step divides by it: beta_start or trained_betas[0] is 0",
                    timesteps[i]
                ),
            ));
        }
        let last = if !self.ancestral && c.final_sigmas_type == "sigma_min" {
            let a = self.alphas_cumprod[0];
            ((1.0 - a) / a).sqrt() as f64
        } else {
            0.0
        };
        sigmas.push(last);
        Ok((
            timesteps.iter().map(|t| *t as f32).collect(),
            sigmas.iter().map(|s| *s as f32).collect(),
        ))
    }

    /// `init_noise_sigma`: the largest sigma for linspace/trailing spacing, else
    /// `sqrt(σ_max² + 1)` (float32).
    pub fn init_noise_sigma(&self, sigmas: &[f32]) -> f32 {
        let max = sigmas.iter().copied().fold(f32::MIN, f32::max);
        match self.config.timestep_spacing.as_str() {
            "linspace" | "trailing" => max,
            _ => (max * max + 1.0).sqrt(),
        }
    }

    pub fn step_kind(&self) -> StepKind {
        if self.ancestral {
            StepKind::EulerAncestral(self.prediction)
        } else {
            StepKind::Euler(self.prediction)
        }
    }
}

/// Karras et al. (2022) sigmas: `(σ_max^(1/ρ) + r·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ`, ρ = 7.
fn karras(sigmas: &[f64], min: Option<f64>, max: Option<f64>, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let sigma_min = min.unwrap_or(*sigmas.last().expect("sigmas"));
    let sigma_max = max.unwrap_or(sigmas[0]);
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    (0..steps)
        .map(|i| {
            let ramp = if steps == 1 {
                0.0
            } else {
                i as f64 / (steps - 1) as f64
            };
            (max_inv + ramp * (min_inv - max_inv)).powf(rho)
        })
        .collect()
}

/// `_sigma_to_t`: the fractional training timestep whose log-sigma interpolates `sigma`.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let below = log_sigmas.iter().filter(|l| log_sigma - **l >= 0.0).count();
    // argmax of the cumulative count = last index with a non-negative distance.
    let low = below.saturating_sub(1).min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// `scale_model_input`: `sample / sqrt(σ² + 1)`.
pub fn scale_model_input<B: Backend>(sample: Tensor<B, 4>, sigma: f32) -> Tensor<B, 4> {
    sample.div_scalar((sigma * sigma + 1.0).sqrt())
}

/// The denoised estimate `x̂₀` for a model output at `sigma`.
fn pred_original<B: Backend>(
    prediction: Prediction,
    model_output: Tensor<B, 4>,
    sample: Tensor<B, 4>,
    sigma: f32,
) -> Tensor<B, 4> {
    match prediction {
        Prediction::VPrediction => {
            let s2 = sigma * sigma + 1.0;
            model_output.mul_scalar(-sigma / s2.sqrt()) + sample.div_scalar(s2)
        }
        _ => sample - model_output.mul_scalar(sigma),
    }
}

/// One Euler step (`s_churn = 0`): `x + (x − x̂₀)/σ · (σ_next − σ)`.
pub fn euler_step<B: Backend>(
    prediction: Prediction,
    model_output: Tensor<B, 4>,
    sample: Tensor<B, 4>,
    sigma: f32,
    sigma_next: f32,
) -> Tensor<B, 4> {
    let original = pred_original(prediction, model_output, sample.clone(), sigma);
    let derivative = (sample.clone() - original).div_scalar(sigma);
    sample + derivative.mul_scalar(sigma_next - sigma)
}

/// One Euler-ancestral step: a deterministic step down to σ_down, then fresh noise σ_up.
pub fn euler_ancestral_step<B: Backend>(
    prediction: Prediction,
    model_output: Tensor<B, 4>,
    sample: Tensor<B, 4>,
    sigma: f32,
    sigma_next: f32,
    noise: &mut NoiseSource,
) -> Tensor<B, 4> {
    let original = pred_original(prediction, model_output, sample.clone(), sigma);
    let (from2, to2) = (sigma * sigma, sigma_next * sigma_next);
    let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
    let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
    let derivative = (sample.clone() - original).div_scalar(sigma);
    let prev = sample.clone() + derivative.mul_scalar(sigma_down - sigma);
    let fresh = noise.normal::<B>(sample.dims(), &sample.device());
    prev + fresh.mul_scalar(sigma_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_endpoints_and_inverse() {
        let s = karras(&[10.0, 0.1], None, None, 5);
        assert!((s[0] - 10.0).abs() < 1e-12 && (s[4] - 0.1).abs() < 1e-12);
        let log_sigmas: Vec<f64> = [0.1f64, 1.0, 10.0].iter().map(|v| v.ln()).collect();
        assert!((sigma_to_t(1.0, &log_sigmas) - 1.0).abs() < 1e-12);
        assert!((sigma_to_t(10f64.sqrt(), &log_sigmas) - 1.5).abs() < 1e-12);
    }
}
