//! Where each model comes from: a path (or a Hugging Face repo id in the local cache), or
//! the built-in demo model.

use std::path::{Path, PathBuf};

use illume_dualvitok::DualViTokConfig;

use super::{Component, PipelineError};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelSource {
    /// The built-in demo model (tiny, deterministic random weights), written to the cache
    /// folder at first use.
    #[default]
    Demo,
    /// A checkpoint folder or file, or a repo id found in the local Hugging Face cache.
    Path(PathBuf),
}

impl ModelSource {
    pub fn is_demo(&self) -> bool {
        matches!(self, ModelSource::Demo)
    }
}

/// The three models' sources, resolved to local paths where given.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    mllm: Resolved,
    /// `None`: no DualViTok (a real MLLM can still understand; nothing can be decoded).
    tokenizer: Option<Resolved>,
    diffusion: Resolved,
}

#[derive(Debug, Clone)]
enum Resolved {
    Demo,
    Path(PathBuf),
}

/// A model ready to load: its folder and whether it is the demo.
pub(crate) struct Located {
    pub path: PathBuf,
    pub demo: bool,
}

impl Sources {
    /// Resolve every given path now and read the tokenizer's header and the diffusion
    /// folder's layout (a wrong one is an error naming it, before any task runs). Without a tokenizer, the demo MLLM gets the demo DualViTok.
    pub(crate) fn resolve(
        mllm: &ModelSource,
        tokenizer: Option<&ModelSource>,
        diffusion: &ModelSource,
    ) -> Result<Self, PipelineError> {
        let resolve = |field: &'static str, source: &ModelSource| match source {
            ModelSource::Demo => Ok(Resolved::Demo),
            ModelSource::Path(path) => illume_weights::resolve_path(path)
                .map(Resolved::Path)
                .map_err(|e| PipelineError::InvalidRequest {
                    field,
                    reason: e.to_string(),
                }),
        };
        let mllm = resolve("mllm", mllm)?;
        let tokenizer = match (tokenizer, &mllm) {
            (Some(source), _) => Some(resolve("tokenizer", source)?),
            (None, Resolved::Demo) => Some(Resolved::Demo),
            (None, Resolved::Path(_)) => None,
        };
        if let (Resolved::Path(_), Some(Resolved::Demo)) = (&mllm, &tokenizer) {
            return Err(PipelineError::InvalidRequest {
                field: "tokenizer",
                reason: "the demo DualViTok cannot go with a real MLLM: give the DualViTok \
                         checkpoint the MLLM was trained with (ILLUME-MLLM/dualvitok)"
                    .into(),
            });
        }
        // Headers and folder layouts now, so a wrong path fails before any generation.
        if let Some(Resolved::Path(path)) = &tokenizer {
            illume_weights::Checkpoint::open(path)?;
        }
        let diffusion = resolve("diffusion", diffusion)?;
        if let Resolved::Path(path) = &diffusion {
            illume_diffusion::check_decoder_folder(path)?;
        }
        Ok(Self {
            mllm,
            tokenizer,
            diffusion,
        })
    }

    /// Whether `component` can be loaded at all (checked before a task starts).
    pub(crate) fn require(&self, component: Component) -> Result<(), PipelineError> {
        if component == Component::Tokenizer && self.tokenizer.is_none() {
            return Err(PipelineError::InvalidRequest {
                field: "tokenizer",
                reason: "this task decodes or encodes image tokens, which needs DualViTok: \
                         give its checkpoint (e.g. ILLUME-MLLM/dualvitok)"
                    .into(),
            });
        }
        Ok(())
    }

    /// The folder of `component`, writing the demo model first if it is the demo.
    pub(crate) fn locate(&self, component: Component) -> Result<Located, PipelineError> {
        let resolved = match component {
            Component::Mllm => &self.mllm,
            Component::Tokenizer => {
                self.require(component)?;
                self.tokenizer.as_ref().expect("checked by require")
            }
            Component::Diffusion => &self.diffusion,
        };
        match resolved {
            Resolved::Path(path) => Ok(Located {
                path: path.clone(),
                demo: false,
            }),
            Resolved::Demo => {
                let written = match component {
                    Component::Mllm => crate::demo::materialize("mllm", illume_mllm::demo::write),
                    Component::Tokenizer => {
                        crate::demo::materialize("dualvitok", illume_dualvitok::demo::write)
                    }
                    Component::Diffusion => {
                        crate::demo::materialize("diffusion", illume_diffusion::demo::write)
                    }
                };
                let path = written.map_err(|e| PipelineError::Demo(e.to_string()))?;
                Ok(Located { path, demo: true })
            }
        }
    }

    /// The DualViTok architecture of the MLLM's vision tower: the demo's, the given
    /// tokenizer's, or the released one.
    pub(crate) fn vision_config(&self) -> Result<DualViTokConfig, PipelineError> {
        match (&self.mllm, &self.tokenizer) {
            (Resolved::Demo, _) => Ok(illume_dualvitok::demo::config()),
            (_, Some(Resolved::Path(path))) => Ok(DualViTokConfig::for_checkpoint(path)?.0),
            _ => Ok(DualViTokConfig::official()),
        }
    }

    /// What the metadata of an output names as `component`'s source.
    pub(crate) fn describe(&self, component: Component) -> String {
        let resolved = match component {
            Component::Mllm => Some(&self.mllm),
            Component::Tokenizer => self.tokenizer.as_ref(),
            Component::Diffusion => Some(&self.diffusion),
        };
        match resolved {
            Some(Resolved::Path(path)) => path.display().to_string(),
            Some(Resolved::Demo) => "demo".into(),
            None => "none".into(),
        }
    }
}

/// The weight files at `path` (the file itself, or the `.safetensors`/`.bin`/`.pt`/`.pth`
/// files of a folder and its sub-folders two levels deep), sorted, with their sizes.
pub(crate) fn weight_files(path: &Path) -> Vec<(PathBuf, u64)> {
    fn is_weights(path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "safetensors" | "bin" | "pt" | "pth"))
    }
    fn walk(path: &Path, depth: usize, top: bool, into: &mut Vec<(PathBuf, u64)>) {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && (top || is_weights(path)) => {
                into.push((path.to_path_buf(), m.len()))
            }
            Ok(m) if m.is_dir() && depth > 0 => {
                for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                    walk(&entry.path(), depth - 1, false, into);
                }
            }
            _ => {}
        }
    }
    let mut files = Vec::new();
    walk(path, 3, true, &mut files);
    files.sort();
    files
}
