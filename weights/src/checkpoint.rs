//! A checkpoint as published: one or more files behind one name → lazily read tensors.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType, Element, Tensor, TensorData};
use burn_store::{ModuleStore, SafetensorsStore, TensorSnapshot};

use crate::error::WeightsError;
use crate::torch_file;

/// On-disk format of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// Several safetensors files listed by a `*.safetensors.index.json` weight map.
    ShardedSafetensors,
    /// `torch.save` output (zip or legacy), parsed as data by burn-store.
    Pytorch,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::ShardedSafetensors => "sharded safetensors",
            Format::Pytorch => "PyTorch pickle (read as data)",
        })
    }
}

/// File names tried, in order, when a checkpoint is given as a directory.
const DIRECTORY_CANDIDATES: &[&str] = &[
    "model.safetensors.index.json",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
];

/// Top-level keys under which training scripts nest a state dict.
pub const STATE_DICT_WRAPPERS: &[&str] = &["model", "state_dict", "ema"];

/// Tensors of one checkpoint, by name, read on demand (safetensors are memory-mapped).
pub struct Checkpoint {
    path: PathBuf,
    files: Vec<PathBuf>,
    format: Format,
    tensors: BTreeMap<String, TensorSnapshot>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Open a checkpoint file, a sharded index, or a directory holding one of them.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            DIRECTORY_CANDIDATES
                .iter()
                .map(|name| path.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| WeightsError::NotFound {
                    path: path.to_path_buf(),
                    hint: format!("looked for {}", DIRECTORY_CANDIDATES.join(", ")),
                })?
        } else if path.is_file() {
            path.to_path_buf()
        } else {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
                hint: "no such file or directory".into(),
            });
        };
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut checkpoint = if name.ends_with(".index.json") {
            Self::open_sharded(&file)?
        } else if name.ends_with(".safetensors") {
            Self::open_safetensors(&file)?
        } else {
            Self::open_pytorch(&file)?
        };
        checkpoint.path = path.to_path_buf();
        checkpoint.check_shapes()?;
        Ok(checkpoint)
    }

    /// Every shape must be one a backend can index: the product of its dimensions, empty
    /// ones counted as 1, fits in `isize` (ndarray asserts this even for zero elements).
    fn check_shapes(&self) -> Result<(), WeightsError> {
        for (name, snapshot) in &self.tensors {
            let extent = snapshot
                .shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d.max(1) as u64));
            if extent.is_none_or(|n| n > isize::MAX as u64) {
                return Err(self.tensor_error(
                    name,
                    format!(
                        "shape {:?}: its dimensions multiply past the address space",
                        snapshot.shape.to_vec()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn open_safetensors(file: &Path) -> Result<Self, WeightsError> {
        let tensors = read_safetensors(file)?;
        Ok(Self {
            path: file.to_path_buf(),
            files: vec![file.to_path_buf()],
            format: Format::Safetensors,
            tensors,
        })
    }

    fn open_sharded(index: &Path) -> Result<Self, WeightsError> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(index).map_err(|e| WeightsError::io(index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|e| WeightsError::Format {
            path: index.to_path_buf(),
            reason: format!("not a safetensors index (expected a `weight_map`): {e}"),
        })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let shards: std::collections::BTreeSet<&String> = parsed.weight_map.values().collect();
        let mut tensors = BTreeMap::new();
        let mut files = Vec::new();
        for shard in shards {
            // Only plain relative names: an index must not reach `/etc/passwd` or `../`.
            let inside = std::path::Path::new(shard)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || shard.is_empty() {
                return Err(WeightsError::Format {
                    path: index.to_path_buf(),
                    reason: format!(
                        "shard `{shard}` is not a relative path inside the checkpoint directory"
                    ),
                });
            }
            let file = dir.join(shard);
            if !file.is_file() {
                return Err(WeightsError::NotFound {
                    path: file,
                    hint: format!("shard listed in {}", index.display()),
                });
            }
            for (name, snapshot) in read_safetensors(&file)? {
                // Each tensor comes from the one shard the index names for it.
                if parsed.weight_map.get(&name) != Some(shard) {
                    return Err(WeightsError::Tensor {
                        path: file.clone(),
                        name: name.clone(),
                        reason: match parsed.weight_map.get(&name) {
                            Some(other) => format!(
                                "the index {} names shard `{other}` for it",
                                index.display()
                            ),
                            None => format!("not listed in {}", index.display()),
                        },
                    });
                }
                tensors.insert(name, snapshot);
            }
            files.push(file);
        }
        if let Some(name) = parsed.weight_map.keys().find(|n| !tensors.contains_key(*n)) {
            return Err(WeightsError::Format {
                path: index.to_path_buf(),
                reason: format!("`{name}` is listed in the index but missing from its shard"),
            });
        }
        Ok(Self {
            path: index.to_path_buf(),
            files,
            format: Format::ShardedSafetensors,
            tensors,
        })
    }

    fn open_pytorch(file: &Path) -> Result<Self, WeightsError> {
        Ok(Self {
            path: file.to_path_buf(),
            files: vec![file.to_path_buf()],
            format: Format::Pytorch,
            tensors: torch_file::read(file)?,
        })
    }

    /// The path the user gave.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files actually read (one per shard).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn snapshots(&self) -> &BTreeMap<String, TensorSnapshot> {
        &self.tensors
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|s| s.shape.to_vec())
    }

    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.tensors.get(name).map(|s| s.dtype)
    }

    /// Read one tensor as the backend's float type, checking its rank.
    pub fn float<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightsError> {
        let data = self.data(name)?;
        if data.shape.len() != D {
            return Err(self.tensor_error(
                name,
                format!("expected rank {D}, the file has shape {:?}", data.shape),
            ));
        }
        let data = data.convert_dtype(<B::FloatElem as Element>::dtype());
        Ok(Tensor::from_data(data, device))
    }

    /// Raw tensor data exactly as stored.
    pub fn data(&self, name: &str) -> Result<TensorData, WeightsError> {
        let snapshot = self
            .tensors
            .get(name)
            .ok_or_else(|| self.tensor_error(name, "not in the checkpoint".into()))?;
        let data = snapshot
            .to_data()
            .map_err(|e| self.tensor_error(name, format!("cannot read its bytes: {e:?}")))?;
        // Any other byte is undefined behaviour as a Rust `bool` once cast.
        if matches!(data.dtype, DType::Bool(_)) && data.as_bytes().iter().any(|b| *b > 1) {
            return Err(self.tensor_error(name, "bool data holds bytes other than 0 and 1".into()));
        }
        Ok(data)
    }

    fn tensor_error(&self, name: &str, reason: String) -> WeightsError {
        WeightsError::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            reason,
        }
    }

    /// Keep the tensors under `prefix.`, with that prefix removed.
    pub fn subtree(&self, prefix: &str) -> Self {
        let dotted = format!("{prefix}.");
        self.renamed(|name| name.strip_prefix(&dotted).map(str::to_owned))
    }

    /// A view with every name passed through `rename`; `None` drops the tensor.
    pub fn renamed(&self, rename: impl Fn(&str) -> Option<String>) -> Self {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(name, snapshot)| {
                let new = rename(name)?;
                Some((new.clone(), with_name(snapshot, &new)))
            })
            .collect();
        Self {
            path: self.path.clone(),
            files: self.files.clone(),
            format: self.format,
            tensors,
        }
    }

    /// First components of every tensor name (`semantic_encoder`, `model`, ...).
    pub fn roots(&self) -> std::collections::BTreeSet<&str> {
        self.names()
            .map(|n| n.split('.').next().unwrap_or(n))
            .collect()
    }

    /// Accept a flat state dict whose roots include `expected_root`, or one nested under
    /// `model`, `state_dict` or `ema` (first found wins, in that order). Anything else is
    /// reported as "not a `kind` checkpoint".
    pub fn unwrap_state_dict(self, expected_root: &str, kind: &str) -> Result<Self, WeightsError> {
        if self.roots().contains(expected_root) {
            return Ok(self);
        }
        for wrapper in STATE_DICT_WRAPPERS {
            let inner = self.subtree(wrapper);
            if inner.roots().contains(expected_root) {
                return Ok(inner);
            }
        }
        let roots: Vec<&str> = self.roots().into_iter().take(8).collect();
        Err(WeightsError::WrongCheckpoint {
            path: self.path.clone(),
            what: format!("this {}", self.format),
            expected: kind.to_string(),
            reason: format!(
                "expected tensors under `{expected_root}.` (flat, or nested in model/state_dict/ema); \
                 found top-level names {roots:?}"
            ),
        })
    }
}

fn with_name(snapshot: &TensorSnapshot, name: &str) -> TensorSnapshot {
    TensorSnapshot::from_closure(
        snapshot.clone_data_fn(),
        snapshot.dtype,
        snapshot.shape.clone(),
        name.split('.').map(str::to_owned).collect(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
}

/// Validate the header ourselves (clear errors for truncated or foreign files, duplicate
/// names, unknown dtypes), then let burn-store build lazy, memory-mapped snapshots.
fn read_safetensors(file: &Path) -> Result<BTreeMap<String, TensorSnapshot>, WeightsError> {
    let handle = File::open(file).map_err(|e| WeightsError::io(file, e))?;
    // SAFETY: the map is read-only and lives only for this validation; a concurrent
    // truncation of the file by another process is outside what we can defend against.
    let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| WeightsError::io(file, e))?;
    check_header_entries(file, &map)?;
    safetensors::SafeTensors::deserialize(&map).map_err(|e| match e {
        safetensors::SafeTensorError::InvalidOffset(name) => WeightsError::Tensor {
            path: file.to_path_buf(),
            name,
            reason: format!(
                "its data_offsets overlap another tensor, leave a gap, or run past the {} \
                 bytes present",
                map.len()
            ),
        },
        e => WeightsError::Format {
            path: file.to_path_buf(),
            reason: describe_safetensors_error(&e, map.len()),
        },
    })?;
    drop(map);
    let mut store = SafetensorsStore::from_file(file);
    let tensors = store
        .get_all_snapshots()
        .map_err(|e| WeightsError::Format {
            path: file.to_path_buf(),
            reason: format!("cannot index tensors: {e}"),
        })?;
    Ok(tensors.clone())
}

/// The header's entries in file order, duplicates kept (serde maps keep only the last).
struct HeaderEntries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<HeaderEntries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    out.push(entry);
                }
                Ok(HeaderEntries(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// Data types safetensors 0.7 reads.
const SAFETENSORS_DTYPES: &[&str] = &[
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
    "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
];

/// A name given twice (the safetensors crate keeps the last silently) or an unknown dtype
/// (which it reports as bad JSON) is an error naming the tensor. Malformed headers are left
/// to the safetensors parser's own diagnosis.
fn check_header_entries(file: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    else {
        return Ok(());
    };
    let Some(header) = usize::try_from(len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return Ok(());
    };
    let Ok(HeaderEntries(entries)) = serde_json::from_slice::<HeaderEntries>(header) else {
        return Ok(());
    };
    let error = |name: &str, reason: String| WeightsError::Tensor {
        path: file.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    let mut seen = std::collections::HashSet::new();
    for (name, info) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(error(
                name,
                "appears twice in the safetensors header".into(),
            ));
        }
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        if !SAFETENSORS_DTYPES.contains(&dtype) {
            return Err(error(
                name,
                format!(
                    "unknown dtype `{dtype}` (known: {})",
                    SAFETENSORS_DTYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::HeaderTooLarge | E::InvalidHeaderLength => format!(
            "not a safetensors file: the first 8 bytes do not give a plausible header length \
             (file is {file_len} bytes)"
        ),
        E::InvalidHeader(_) | E::InvalidHeaderStart | E::InvalidHeaderDeserialization(_) => {
            "not a safetensors file: the header is not valid JSON metadata".into()
        }
        E::MetadataIncompleteBuffer => format!(
            "the file is truncated or corrupt: the header describes more tensor data than the \
             {file_len} bytes present"
        ),
        other => format!("invalid safetensors file: {other}"),
    }
}
