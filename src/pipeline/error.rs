//! The one error type of the pipeline.

use illume_backends::BackendError;
use illume_diffusion::DiffusionError;
use illume_mllm::MllmError;
use illume_weights::WeightsError;

/// Everything a pipeline task can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A request field (or model source) that cannot be served, found before any model loads.
    #[error("invalid request: `{field}`: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    /// The event callback returned [`super::Flow::Cancel`]; the pipeline stays usable.
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Mllm(MllmError),
    #[error(transparent)]
    Tokenizer(#[from] illume_dualvitok::Error),
    #[error(transparent)]
    Diffusion(DiffusionError),
    /// A result image could not be written (or will not be: checked before the models run).
    #[error("{}: {reason}", path.display())]
    Output {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The built-in demo model could not be written to its cache folder.
    #[error("demo model: {0}")]
    Demo(String),
}

impl From<MllmError> for PipelineError {
    fn from(e: MllmError) -> Self {
        match e {
            MllmError::Cancelled => PipelineError::Cancelled,
            e => PipelineError::Mllm(e),
        }
    }
}

impl From<DiffusionError> for PipelineError {
    fn from(e: DiffusionError) -> Self {
        match e {
            DiffusionError::Cancelled => PipelineError::Cancelled,
            e => PipelineError::Diffusion(e),
        }
    }
}
