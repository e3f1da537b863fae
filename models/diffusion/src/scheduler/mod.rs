//! Schedulers read from `scheduler/scheduler_config.json`: `EulerDiscreteScheduler` (what
//! SDXL and the ILLUME+ decoder ship), `EulerAncestralDiscreteScheduler` and
//! `DDIMScheduler`. Another class is a clear error listing these.

mod ddim;
mod euler;
mod schedule;

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor};
use serde::Deserialize;

pub use self::ddim::DdimConfig;
use self::ddim::{ddim_step, Ddim};
pub use self::euler::EulerConfig;
use self::euler::{euler_ancestral_step, euler_step, scale_model_input, Euler};
use crate::config::unsupported;
use crate::error::DiffusionError;
use crate::noise::NoiseSource;

/// Most denoising steps one run may take (the training timesteps of the released schedulers).
pub const MAX_STEPS: usize = 1000;

/// The scheduler classes this implementation runs.
pub const SUPPORTED: &[&str] = &[
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DDIMScheduler",
];

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

impl Prediction {
    fn parse(value: &str, path: &Path) -> Result<Self, DiffusionError> {
        match value {
            "epsilon" => Ok(Self::Epsilon),
            "v_prediction" => Ok(Self::VPrediction),
            "sample" => Ok(Self::Sample),
            other => Err(unsupported(
                path,
                "prediction_type",
                other,
                "epsilon, v_prediction, sample",
            )),
        }
    }
}

/// How one step updates the latents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepKind {
    Euler(Prediction),
    EulerAncestral(Prediction),
    Ddim(ddim::DdimStep),
}

#[derive(Debug, Clone)]
enum Kind {
    Euler(Euler),
    Ddim(Ddim),
}

/// A scheduler as configured by its `scheduler_config.json`.
#[derive(Debug, Clone)]
pub struct Scheduler {
    class: &'static str,
    kind: Kind,
}

#[derive(Deserialize)]
struct ClassName {
    #[serde(rename = "_class_name")]
    class: Option<String>,
}

impl Scheduler {
    /// Read `scheduler_config.json`. As in diffusers' `from_pretrained`, the class named in
    /// `model_index.json` (`class`) wins over the config's own `_class_name`.
    pub fn from_file(path: &Path, class: Option<&str>) -> Result<Self, DiffusionError> {
        let ClassName { class: own } = crate::config::read(path)?;
        let class = class.map(str::to_owned).or(own).unwrap_or_default();
        let unknown = || DiffusionError::UnknownScheduler {
            path: path.to_path_buf(),
            class: class.clone(),
            supported: SUPPORTED.to_vec(),
        };
        let class: &'static str = SUPPORTED
            .iter()
            .find(|c| **c == class)
            .ok_or_else(unknown)?;
        let kind = match class {
            "DDIMScheduler" => Kind::Ddim(Ddim::new(crate::config::read(path)?, path)?),
            ancestral => Kind::Euler(Euler::new(
                crate::config::read(path)?,
                ancestral == "EulerAncestralDiscreteScheduler",
                path,
            )?),
        };
        Ok(Self { class, kind })
    }

    pub fn class_name(&self) -> &'static str {
        self.class
    }

    /// `set_timesteps(steps)`: the plan of one denoising run, at most [`MAX_STEPS`] steps.
    pub fn plan(&self, steps: usize) -> Result<InferenceSchedule, DiffusionError> {
        // diffusers spreads the steps over the training timesteps; more than those
        // repeats timesteps (and 1e9 steps would allocate a billion-entry plan).
        if steps == 0 || steps > MAX_STEPS {
            return Err(DiffusionError::Input(format!(
                "the number of denoising steps must be from 1 to {MAX_STEPS} (got {steps})"
            )));
        }
        match &self.kind {
            Kind::Euler(euler) => {
                let (timesteps, sigmas) = euler.timesteps_and_sigmas(steps)?;
                let init_noise_sigma = euler.init_noise_sigma(&sigmas);
                let kinds = vec![euler.step_kind(); steps];
                Ok(InferenceSchedule {
                    timesteps,
                    sigmas,
                    init_noise_sigma,
                    kinds,
                })
            }
            Kind::Ddim(ddim) => {
                let timesteps = ddim.timesteps(steps)?;
                let kinds = timesteps
                    .iter()
                    .map(|t| StepKind::Ddim(ddim.step_at(*t, steps)))
                    .collect();
                Ok(InferenceSchedule {
                    timesteps,
                    sigmas: Vec::new(),
                    init_noise_sigma: 1.0,
                    kinds,
                })
            }
        }
    }
}

/// The timesteps, sigmas and update rule of one run (the scheduler after `set_timesteps`).
#[derive(Debug, Clone)]
pub struct InferenceSchedule {
    /// Timestep passed to the UNet at each step.
    pub timesteps: Vec<f32>,
    /// Noise level at each step and after the last one (Euler schedulers; empty for DDIM).
    pub sigmas: Vec<f32>,
    /// Factor of the initial Gaussian latents.
    pub init_noise_sigma: f32,
    kinds: Vec<StepKind>,
}

impl InferenceSchedule {
    pub fn len(&self) -> usize {
        self.timesteps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timesteps.is_empty()
    }

    /// `scale_model_input(sample, t)` at step `i`.
    pub fn scale_model_input<B: Backend>(&self, sample: Tensor<B, 4>, i: usize) -> Tensor<B, 4> {
        match self.kinds[i] {
            StepKind::Euler(_) | StepKind::EulerAncestral(_) => {
                scale_model_input(sample, self.sigmas[i])
            }
            StepKind::Ddim(_) => sample,
        }
    }

    /// `scheduler.step(model_output, t, sample)` at step `i`: the latents of the next step.
    /// `noise` is drawn from only by ancestral sampling.
    pub fn step<B: Backend>(
        &self,
        i: usize,
        model_output: Tensor<B, 4>,
        sample: Tensor<B, 4>,
        noise: &mut NoiseSource,
    ) -> Tensor<B, 4> {
        match self.kinds[i] {
            StepKind::Euler(p) => {
                euler_step(p, model_output, sample, self.sigmas[i], self.sigmas[i + 1])
            }
            StepKind::EulerAncestral(p) => euler_ancestral_step(
                p,
                model_output,
                sample,
                self.sigmas[i],
                self.sigmas[i + 1],
                noise,
            ),
            StepKind::Ddim(s) => ddim_step(s, model_output, sample),
        }
    }
}

/// Where a scheduler config is expected inside a diffusers folder.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("scheduler").join("scheduler_config.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, json: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("illume-diffusion-sched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn unknown_class_is_a_clear_error() {
        let path = write("unknown.json", r#"{"_class_name": "LCMScheduler"}"#);
        let err = Scheduler::from_file(&path, None).unwrap_err().to_string();
        assert!(
            err.contains("LCMScheduler") && err.contains("EulerDiscreteScheduler"),
            "{err}"
        );
    }

    const DEMO: &str = include_str!("../../configs/demo/scheduler/scheduler_config.json");

    /// The demo (SDXL Euler) config with `fields` (a JSON object) merged over it, read as
    /// `class`.
    fn demo_with(class: &str, fields: serde_json::Value) -> Result<Scheduler, DiffusionError> {
        let mut config: serde_json::Value = serde_json::from_str(DEMO).unwrap();
        for (k, v) in fields.as_object().unwrap() {
            config[k] = v.clone();
        }
        // One file per call: the tests run in parallel in one temporary folder.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = write(
            &format!("{class}-{n}-scheduler_config.json"),
            &config.to_string(),
        );
        Scheduler::from_file(&path, Some(class))
    }

    fn rejected(class: &str, fields: serde_json::Value, field: &str) {
        let err = demo_with(class, fields.clone())
            .and_then(|s| s.plan(20).map(|_| s))
            .expect_err(&format!("{fields} was accepted"))
            .to_string();
        assert!(
            err.contains(field) && err.contains("scheduler_config.json"),
            "{err}"
        );
    }

    #[test]
    fn demo_config_parses_for_every_class() {
        for class in SUPPORTED {
            demo_with(class, serde_json::json!({}))
                .unwrap()
                .plan(20)
                .unwrap();
        }
    }

    #[test]
    fn out_of_range_betas_are_named() {
        use serde_json::json;
        for class in SUPPORTED {
            rejected(class, json!({"beta_start": -0.001}), "beta_start");
            rejected(class, json!({"beta_end": 1.5}), "beta_end");
            rejected(
                class,
                json!({"beta_start": 0.02, "beta_end": 0.01}),
                "beta_start",
            );
            // A beta of 1 zeroes the cumulative product: an infinite noise level.
            rejected(
                class,
                json!({"beta_schedule": "linear", "beta_end": 1.0}),
                "beta_end",
            );
            rejected(
                class,
                json!({"num_train_timesteps": 1}),
                "num_train_timesteps",
            );
            rejected(
                class,
                json!({"num_train_timesteps": 1u64 << 40}),
                "num_train_timesteps",
            );
            rejected(class, json!({"trained_betas": [0.1, 0.2]}), "trained_betas");
            let betas = vec![2.0; 1000];
            rejected(class, json!({ "trained_betas": betas }), "trained_betas");
        }
    }

    #[test]
    fn out_of_range_sampler_settings_are_named() {
        use serde_json::json;
        let karras = |fields: serde_json::Value| {
            let mut all = json!({"use_karras_sigmas": true});
            all.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            all
        };
        let euler = "EulerDiscreteScheduler";
        rejected(euler, karras(json!({"sigma_min": 0.0})), "sigma_min");
        rejected(euler, karras(json!({"sigma_max": -1.0})), "sigma_max");
        rejected(
            euler,
            karras(json!({"sigma_min": 5.0, "sigma_max": 1.0})),
            "sigma_min",
        );
        // A first beta of 0 is a zero noise level at timestep 0, which linspace reaches.
        let zero = json!({"beta_start": 0.0, "timestep_spacing": "linspace"});
        rejected(euler, zero.clone(), "beta_start");
        rejected("EulerAncestralDiscreteScheduler", zero, "beta_start");
        let ddim = "DDIMScheduler";
        rejected(
            ddim,
            json!({"clip_sample": true, "clip_sample_range": 0.0}),
            "clip_sample_range",
        );
        // Leading spacing at 500 steps ends at 998 + steps_offset.
        let err = demo_with(ddim, json!({"steps_offset": 10}))
            .unwrap()
            .plan(500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("steps_offset"), "{err}");
    }

    #[test]
    fn ddim_sdxl_config_plans_leading_steps() {
        let path = write(
            "ddim.json",
            r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": false,
                "set_alpha_to_one": false, "steps_offset": 1}"#,
        );
        let scheduler = Scheduler::from_file(&path, None).unwrap();
        let plan = scheduler.plan(4).unwrap();
        assert_eq!(plan.timesteps, vec![751.0, 501.0, 251.0, 1.0]);
        assert_eq!(plan.init_noise_sigma, 1.0);
    }

    #[test]
    fn euler_ancestral_and_karras_plans() {
        let path = write(
            "ancestral.json",
            r#"{"_class_name": "EulerAncestralDiscreteScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing"}"#,
        );
        let plan = Scheduler::from_file(&path, None).unwrap().plan(2).unwrap();
        assert_eq!(plan.timesteps, vec![999.0, 499.0]);
        assert_eq!(plan.sigmas.len(), 3);
        assert_eq!(plan.init_noise_sigma, plan.sigmas[0]);
        let path = write(
            "karras.json",
            r#"{"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true,
                "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
        );
        let plan = Scheduler::from_file(&path, None).unwrap().plan(5).unwrap();
        assert!(plan.sigmas.windows(2).all(|w| w[0] > w[1]));
        assert!(plan.timesteps[0] > 990.0 && plan.timesteps[4] < 1.0);
    }
}
