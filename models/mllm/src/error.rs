use std::path::PathBuf;

use illume_weights::WeightsError;

/// Everything that can go wrong in the MLLM: files, configuration, prompts, generation.
#[derive(Debug, thiserror::Error)]
pub enum MllmError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{}: tokenizer: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("vocabulary layout: {0}")]
    Vocabulary(String),
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("generation: {0}")]
    Generation(String),
    #[error("image: {0}")]
    Image(String),
    /// The observer asked to stop ([`crate::generate::Observer::cancelled`]).
    #[error("cancelled")]
    Cancelled,
}

impl MllmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = MllmError> = std::result::Result<T, E>;
