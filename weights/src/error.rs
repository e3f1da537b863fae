use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong between a path on disk and loaded module parameters.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{}: refused to read an unsafe pickle: {reason}", path.display())]
    UnsafePickle { path: PathBuf, reason: String },
    #[error("{}: no checkpoint found here ({hint})", path.display())]
    NotFound { path: PathBuf, hint: String },
    #[error("{}: {what} is not a {expected} checkpoint: {reason}", path.display())]
    WrongCheckpoint {
        path: PathBuf,
        what: String,
        expected: String,
        reason: String,
    },
    #[error("{}: invalid config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{}: tensor `{name}`: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Mismatch(Box<MismatchReport>),
}

impl WeightsError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn unsafe_pickle(path: &Path, reason: impl Into<String>) -> Self {
        Self::UnsafePickle {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The strict-loading verdict: every missing, unexpected and mis-shaped tensor at once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MismatchReport {
    pub source: PathBuf,
    pub module: String,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, shape the module expects, shape in the file)
    pub shape_mismatches: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// (name, message) for tensors whose bytes could not be read or converted.
    pub unreadable: Vec<(String, String)>,
}

impl MismatchReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatches.is_empty()
            && self.unreadable.is_empty()
    }
}

/// How many names of each kind to print before summarising the rest.
const SHOWN: usize = 12;

fn list(f: &mut fmt::Formatter<'_>, title: &str, names: &[String]) -> fmt::Result {
    if names.is_empty() {
        return Ok(());
    }
    writeln!(f, "  {title} ({}):", names.len())?;
    for name in names.iter().take(SHOWN) {
        writeln!(f, "    {name}")?;
    }
    if names.len() > SHOWN {
        writeln!(f, "    ... and {} more", names.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: the checkpoint does not match the {} built from its config:",
            self.source.display(),
            self.module
        )?;
        list(f, "missing from the file", &self.missing)?;
        list(f, "in the file but not in the model", &self.unexpected)?;
        let shapes: Vec<String> = self
            .shape_mismatches
            .iter()
            .map(|(n, want, got)| format!("{n}: model expects {want:?}, file has {got:?}"))
            .collect();
        list(f, "shape mismatches", &shapes)?;
        let unreadable: Vec<String> = self
            .unreadable
            .iter()
            .map(|(n, m)| format!("{n}: {m}"))
            .collect();
        list(f, "unreadable tensors", &unreadable)?;
        write!(
            f,
            "  (is this the right checkpoint for this config? `illume inspect PATH` shows what a file holds)"
        )
    }
}
