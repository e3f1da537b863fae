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
