//! Reading the diffusers JSON files (`model_index.json`, `unet/config.json`,
//! `vae/config.json`, `scheduler/scheduler_config.json`) with the diffusers defaults for
//! absent fields, and the value shapes diffusers accepts ("an int or one per block").

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::DiffusionError;

/// Read and parse a JSON config file into `T` (absent fields take `T`'s serde defaults).
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<T, DiffusionError> {
    let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DiffusionError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A diffusers field that is either one value for every block or one value per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    // `Each` first: for nested per-block values (`[1, 2, 10]`), the list is the per-block one.
    Each(Vec<T>),
    One(T),
}

impl<T: Clone + std::fmt::Debug> PerBlock<T> {
    /// One value per block, checking the count when given per block.
    pub(crate) fn resolve(
        &self,
        blocks: usize,
        field: &str,
        path: &Path,
    ) -> Result<Vec<T>, DiffusionError> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Each(values) if values.len() == blocks => Ok(values.clone()),
            PerBlock::Each(values) => Err(DiffusionError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "`{field}` has {} entries ({values:?}) for {blocks} blocks",
                    values.len()
                ),
            }),
        }
    }
}

/// `model_index.json`: which class each component folder holds.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    pub unet: Option<(String, String)>,
    pub vae: Option<(String, String)>,
    pub scheduler: Option<(String, String)>,
}

/// The error for values that contradict each other or the network they build.
pub(crate) fn inconsistent(path: &Path, reason: String) -> DiffusionError {
    DiffusionError::Config {
        path: path.to_path_buf(),
        reason,
    }
}

/// Refuse a float field that is NaN, infinite or not above zero (`field` names it).
pub(crate) fn positive_finite(path: &Path, field: &str, value: f64) -> Result<(), DiffusionError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(unsupported(path, field, value, "a finite number > 0"))
    }
}

/// Refuse a channel, width or layer count of zero.
pub(crate) fn positive(path: &Path, field: &str, value: usize) -> Result<(), DiffusionError> {
    if value > 0 {
        Ok(())
    } else {
        Err(unsupported(path, field, value, "a positive count"))
    }
}

/// `norm_num_groups` must split every channel count a GroupNorm normalises (`nn.GroupNorm`
/// requires `channels % groups == 0`; Burn panics otherwise).
pub(crate) fn check_groups(
    path: &Path,
    groups: usize,
    block_out_channels: &[usize],
) -> Result<(), DiffusionError> {
    positive(path, "norm_num_groups", groups)?;
    match block_out_channels
        .iter()
        .find(|c| !c.is_multiple_of(groups))
    {
        Some(c) => Err(inconsistent(
            path,
            format!(
                "norm_num_groups {groups} does not divide block_out_channels entry {c} \
                 ({block_out_channels:?}): GroupNorm needs channels divisible by groups"
            ),
        )),
        None => Ok(()),
    }
}

/// Parameters of a weight of the given dimensions, saturating: parameter counts are
/// computed from configs before anything bounds their values.
pub(crate) fn weight(dims: &[usize]) -> u64 {
    dims.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// Saturating sum of parameter counts.
pub(crate) fn total(counts: impl IntoIterator<Item = u64>) -> u64 {
    counts.into_iter().fold(0, u64::saturating_add)
}

/// The error for a config value outside what this implementation supports.
pub(crate) fn unsupported(
    path: &Path,
    field: &str,
    value: impl std::fmt::Debug,
    supported: &str,
) -> DiffusionError {
    DiffusionError::Unsupported {
        path: path.to_path_buf(),
        field: field.to_string(),
        value: format!("{value:?}"),
        supported: supported.to_string(),
    }
}

/// A component folder for load tests: `config` as `config.json` beside a checkpoint of a
/// single value, which no real network fits in.
#[cfg(test)]
pub(crate) fn one_value_folder(name: &str, config: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("illume-diffusion-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&1f32.to_le_bytes());
    std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), file).unwrap();
    dir
}
