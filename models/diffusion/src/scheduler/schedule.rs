//! The training noise schedule shared by the schedulers (betas → cumulative alphas →
//! sigmas) and the spacing of inference timesteps, reproducing diffusers' float32 (torch)
//! and float64 (numpy) arithmetic where it matters.

use std::path::Path;

use serde::Deserialize;

use crate::config::{inconsistent, unsupported};
use crate::error::DiffusionError;

/// The fields every scheduler config shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BetaConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
}

impl Default for BetaConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            rescale_betas_zero_snr: false,
        }
    }
}

/// `torch.linspace(start, end, steps, dtype=float32)`: the CPU kernel fills the first half
/// forwards from `start` and the second half backwards from `end`.
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// Training timesteps at most: the schedule holds a value per timestep, computed when the
/// config is read (real schedules have 1000).
const MAX_TRAIN_TIMESTEPS: usize = 1 << 20;

impl BetaConfig {
    /// `alphas_cumprod` (float32, as diffusers keeps it).
    pub fn alphas_cumprod(&self, path: &Path) -> Result<Vec<f32>, DiffusionError> {
        if self.rescale_betas_zero_snr {
            return Err(unsupported(path, "rescale_betas_zero_snr", true, "false"));
        }
        let n = self.num_train_timesteps;
        // Two at least: sigmas are interpolated between neighbouring training timesteps.
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(unsupported(
                path,
                "num_train_timesteps",
                n,
                &format!("2 to {MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        let betas: Vec<f32> = if let Some(trained) = &self.trained_betas {
            if trained.len() != n {
                return Err(inconsistent(
                    path,
                    format!(
                        "trained_betas has {} values for num_train_timesteps {n}",
                        trained.len()
                    ),
                ));
            }
            if let Some(b) = trained.iter().find(|b| !is_beta(**b)) {
                return Err(unsupported(
                    path,
                    "trained_betas",
                    b,
                    "finite values in [0, 1]",
                ));
            }
            trained.iter().map(|b| *b as f32).collect()
        } else {
            match self.beta_schedule.as_str() {
                "linear" => {
                    self.check_endpoints(path)?;
                    torch_linspace_f32(self.beta_start, self.beta_end, n)
                }
                "scaled_linear" => {
                    self.check_endpoints(path)?;
                    torch_linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                        .into_iter()
                        .map(|b| b * b)
                        .collect()
                }
                "squaredcos_cap_v2" => {
                    // betas_for_alpha_bar (cosine), computed in float64 by Python.
                    let alpha_bar = |t: f64| {
                        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                            .cos()
                            .powi(2)
                    };
                    (0..n)
                        .map(|i| {
                            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                        })
                        .collect()
                }
                other => {
                    return Err(unsupported(
                        path,
                        "beta_schedule",
                        other,
                        "linear, scaled_linear, squaredcos_cap_v2",
                    ));
                }
            }
        };
        let mut product = 1.0f32;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|b| {
                product *= 1.0 - b;
                product
            })
            .collect();
        // sigma = sqrt((1 − ᾱ) / ᾱ): a product of 0 (a beta of 1, or underflow) is an
        // infinite noise level, which turns the whole image into NaN.
        if let Some(t) = alphas_cumprod.iter().position(|a| *a <= 0.0) {
            let source = match &self.trained_betas {
                Some(_) => "trained_betas".to_string(),
                None => format!(
                    "{} betas from beta_start {} to beta_end {}",
                    self.beta_schedule, self.beta_start, self.beta_end
                ),
            };
            return Err(inconsistent(
                path,
                format!(
                    "the {source} drive the cumulative alpha product to 0 at training \
                     timestep {t} (an infinite noise level)"
                ),
            ));
        }
        Ok(alphas_cumprod)
    }

    /// `beta_start` and `beta_end` of a linear schedule: betas in [0, 1], ascending.
    fn check_endpoints(&self, path: &Path) -> Result<(), DiffusionError> {
        for (field, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if !is_beta(value) {
                return Err(unsupported(path, field, value, "a finite number in [0, 1]"));
            }
        }
        if self.beta_start > self.beta_end {
            return Err(inconsistent(
                path,
                format!(
                    "beta_start {} exceeds beta_end {}",
                    self.beta_start, self.beta_end
                ),
            ));
        }
        Ok(())
    }
}

/// A beta is a per-step noise variance fraction: finite, in [0, 1].
fn is_beta(value: f64) -> bool {
    value.is_finite() && (0.0..=1.0).contains(&value)
}

/// `((1 − ᾱ) / ᾱ) ** 0.5` per training timestep, in float32 (torch).
pub fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)` in float64.
pub fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    let (a, b) = (fp[j] as f64, fp[j + 1] as f64);
    (b - a) * (x - j as f64) + a
}

/// Inference timesteps (descending) for `timestep_spacing`, as floats.
///
/// `linspace`: `np.linspace(0, N−1, steps)` (float32 for Euler, float64 otherwise);
/// `leading`: `arange(steps)·(N // steps)` rounded, plus `steps_offset`;
/// `trailing`: `round(arange(N, 0, −N/steps)) − 1`.
pub fn spaced_timesteps(
    spacing: &str,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
    path: &Path,
) -> Result<Vec<f64>, DiffusionError> {
    let n = train_steps as f64;
    let mut t: Vec<f64> = match spacing {
        "linspace" => {
            if steps == 1 {
                vec![0.0]
            } else {
                let step = (n - 1.0) / (steps - 1) as f64;
                (0..steps).map(|i| i as f64 * step).collect()
            }
        }
        "leading" => {
            let ratio = (train_steps / steps) as f64;
            (0..steps)
                .map(|i| (i as f64 * ratio).round() + steps_offset as f64)
                .collect()
        }
        "trailing" => {
            // np.arange(N, 0, -N/steps): element i is N − i·(N/steps).
            let ratio = n / steps as f64;
            let count = (n / ratio).ceil() as usize;
            let mut values: Vec<f64> = (0..count)
                .map(|i| round_half_even(n - i as f64 * ratio) - 1.0)
                .collect();
            values.reverse();
            values
        }
        other => {
            return Err(unsupported(
                path,
                "timestep_spacing",
                other,
                "linspace, leading, trailing",
            ));
        }
    };
    t.reverse();
    Ok(t)
}

/// numpy's `round` (half to even).
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_spacings_match_diffusers() {
        let p = Path::new("scheduler_config.json");
        // EulerDiscreteScheduler(timestep_spacing="leading", steps_offset=1).set_timesteps(3)
        assert_eq!(
            spaced_timesteps("leading", 1000, 3, 1, p).unwrap(),
            vec![667.0, 334.0, 1.0]
        );
        // trailing: np.round(np.arange(1000, 0, -1000/3)) - 1 = [999, 666, 332]
        assert_eq!(
            spaced_timesteps("trailing", 1000, 3, 0, p).unwrap(),
            vec![999.0, 666.0, 332.0]
        );
        assert_eq!(
            spaced_timesteps("linspace", 1000, 3, 0, p).unwrap(),
            vec![999.0, 499.5, 0.0]
        );
        assert!(spaced_timesteps("karras", 1000, 3, 0, p).is_err());
    }

    #[test]
    fn linspace_matches_torch_endpoints() {
        let v = torch_linspace_f32(0.1, 0.9, 5);
        assert_eq!(v[0], 0.1f32);
        assert_eq!(v[4], 0.9f32);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-2.5), -2.0);
    }
}
