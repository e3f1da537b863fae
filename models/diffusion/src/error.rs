use std::path::PathBuf;

use illume_weights::WeightsError;

/// Everything that can go wrong between a diffusers folder on disk and a decoded image.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Token grids the DualViTok codebooks cannot embed.
    #[error(transparent)]
    Tokens(#[from] illume_dualvitok::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid JSON: {reason}", path.display())]
    Json { path: PathBuf, reason: String },
    /// A config value this implementation does not support (named, with what is supported).
    #[error("{}: unsupported `{field}` = {value}: {supported}", path.display())]
    Unsupported {
        path: PathBuf,
        field: String,
        value: String,
        supported: String,
    },
    /// A config whose values contradict each other or the pipeline's fixed inputs.
    #[error("{}: inconsistent config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("unknown scheduler class `{class}` in {}: supported are {}", path.display(), supported.join(", "))]
    UnknownScheduler {
        path: PathBuf,
        class: String,
        supported: Vec<&'static str>,
    },
    #[error(
        "the decoder cannot render {width}x{height}: it renders at one of {}{hint}",
        valid.iter().map(|(w, h)| format!("{w}x{h}")).collect::<Vec<_>>().join(", ")
    )]
    Resolution {
        width: usize,
        height: usize,
        valid: Vec<(usize, usize)>,
        hint: String,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("cannot write {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
    /// The per-step callback returned `ControlFlow::Break`.
    #[error("cancelled")]
    Cancelled,
}

impl DiffusionError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
