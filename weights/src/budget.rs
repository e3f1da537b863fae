//! The size a config declares, checked before a model is built from it.
//!
//! Building a Burn module allocates every parameter, so a config saying
//! `num_hidden_layers: 100000` would exhaust the machine before strict loading could report
//! the mismatch. A model loaded strictly needs every one of its parameters in the checkpoint,
//! and the checkpoint's declared shapes are already bounded by its files' real bytes; so a
//! config whose model holds more parameters than the checkpoint holds values cannot describe
//! it, and is refused before anything is allocated.

use std::path::Path;

use crate::{Checkpoint, WeightsError};

/// What a model built from a config will hold, computed from the config alone.
#[derive(Debug, Clone)]
pub struct DeclaredSize {
    /// The model's name in messages (`Qwen2 decoder`, `DualViTok`).
    pub model: String,
    /// The config file the size comes from.
    pub config: std::path::PathBuf,
    /// A lower bound of the model's parameter count.
    pub parameters: u64,
    /// The fields that drive the count, as `name=value`, for the message.
    pub fields: String,
}

impl DeclaredSize {
    /// Refuse a config whose model cannot be the checkpoint's (more parameters than the
    /// checkpoint holds values) or, when its weights live in host memory at
    /// `host_bytes_per_parameter`, cannot fit in this machine's memory; before the model is
    /// built.
    pub fn check(
        &self,
        checkpoint: &Checkpoint,
        host_bytes_per_parameter: Option<u64>,
    ) -> Result<(), WeightsError> {
        let held = checkpoint.value_count();
        if self.parameters > held {
            return Err(self.refusal(format!(
                "the {} it describes has at least {} parameters ({}), but {} holds only {} \
                 values: this config does not describe this checkpoint",
                self.model,
                human_count(self.parameters),
                self.fields,
                checkpoint.path().display(),
                human_count(held),
            )));
        }
        match host_bytes_per_parameter {
            Some(bytes) => self.check_memory(bytes),
            None => Ok(()),
        }
    }

    /// Refuse a model whose weights alone exceed this machine's physical memory.
    pub fn check_memory(&self, bytes_per_parameter: u64) -> Result<(), WeightsError> {
        let needed = self.parameters.saturating_mul(bytes_per_parameter);
        match physical_memory() {
            Some(total) if needed > total => Err(self.refusal(format!(
                "the {} it describes needs at least {} for its weights ({}), more than this \
                 machine's {} of memory",
                self.model,
                human_bytes(needed),
                self.fields,
                human_bytes(total)
            ))),
            _ => Ok(()),
        }
    }

    fn refusal(&self, reason: String) -> WeightsError {
        WeightsError::Config {
            path: self.config.clone(),
            reason,
        }
    }
}

impl Checkpoint {
    /// Values the checkpoint's tensors hold together (each bounded by its file's bytes).
    pub fn value_count(&self) -> u64 {
        self.snapshots()
            .values()
            .map(|s| {
                s.shape
                    .iter()
                    .fold(1u64, |n, &d| n.saturating_mul(d as u64))
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// `MemTotal` of `/proc/meminfo`; `None` where it cannot be read (then nothing is refused).
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string(Path::new("/proc/meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n => n.to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(parameters: u64) -> DeclaredSize {
        DeclaredSize {
            model: "test model".into(),
            config: "config.json".into(),
            parameters,
            fields: "num_hidden_layers=100000".into(),
        }
    }

    #[test]
    fn a_model_larger_than_memory_is_refused_naming_the_fields() {
        if physical_memory().is_none() {
            return; // not Linux: nothing to compare against
        }
        let err = size(u64::MAX / 8).check_memory(4).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers=100000"), "{err}");
        assert!(err.contains("more than this machine"), "{err}");
        assert!(size(1000).check_memory(4).is_ok());
    }
}
