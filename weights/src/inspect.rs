//! What is this checkpoint? Classification and a summary for `illume inspect`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, Format};
use crate::error::WeightsError;

/// The three official ILLUME+ checkpoints, or something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// `ILLUME-MLLM/dualvitok`
    DualViTok,
    /// `ILLUME-MLLM/illume_plus-qwen2_5-3b` (or 7b)
    IllumeMllm,
    /// `ILLUME-MLLM/dualvitok-sdxl-decoder` (diffusers pipeline folder)
    SdxlDecoder,
    Unknown,
}

impl fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointKind::DualViTok => "DualViTok (dual visual tokenizer)",
            CheckpointKind::IllumeMllm => "ILLUME+ MLLM (Qwen2.5 with extended vocabulary)",
            CheckpointKind::SdxlDecoder => "SDXL diffusion decoder (DualViTok-conditioned)",
            CheckpointKind::Unknown => "unknown",
        })
    }
}

/// Tensor and parameter counts of one group of tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupStats {
    pub tensors: usize,
    pub parameters: u64,
}

/// Everything `illume inspect` prints.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub path: PathBuf,
    pub kind: CheckpointKind,
    /// One entry per weight file set: (component, format, files).
    pub components: Vec<(String, Format, Vec<PathBuf>)>,
    pub tensor_count: usize,
    pub parameter_count: u64,
    pub groups: BTreeMap<String, GroupStats>,
    pub dtypes: BTreeMap<String, usize>,
    /// Config files found beside the weights, by file name.
    pub configs: BTreeMap<String, serde_json::Value>,
}

/// Group name of a tensor: its first name component, or the first two under `model.`
/// (HF causal LMs put everything there).
fn group_of(name: &str) -> String {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or(name);
    match (first, parts.next()) {
        ("model", Some(second)) => format!("model.{second}"),
        _ => first.to_string(),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| WeightsError::Config {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn collect_configs(dir: &Path, names: &[&str], into: &mut BTreeMap<String, serde_json::Value>) {
    for name in names {
        let path = dir.join(name);
        if let Ok(value) = read_json(&path) {
            into.insert(name.to_string(), value);
        }
    }
}

/// Inspect a checkpoint file or directory.
pub fn inspect(path: &Path) -> Result<Inspection, WeightsError> {
    let mut inspection = Inspection {
        path: path.to_path_buf(),
        kind: CheckpointKind::Unknown,
        components: Vec::new(),
        tensor_count: 0,
        parameter_count: 0,
        groups: BTreeMap::new(),
        dtypes: BTreeMap::new(),
        configs: BTreeMap::new(),
    };
    let add = |inspection: &mut Inspection, component: &str, ckpt: &Checkpoint| {
        inspection
            .components
            .push((component.to_string(), ckpt.format(), ckpt.files().to_vec()));
        for (name, snapshot) in ckpt.snapshots() {
            let params: u64 = snapshot.shape.iter().map(|d| *d as u64).product();
            let group = if component.is_empty() {
                group_of(name)
            } else {
                format!("{component}/{}", group_of(name))
            };
            let stats = inspection.groups.entry(group).or_default();
            stats.tensors += 1;
            stats.parameters += params;
            *inspection
                .dtypes
                .entry(format!("{:?}", snapshot.dtype))
                .or_default() += 1;
            inspection.tensor_count += 1;
            inspection.parameter_count += params;
        }
    };

    if path.is_dir() && path.join("model_index.json").is_file() {
        collect_configs(path, &["model_index.json"], &mut inspection.configs);
        for component in ["unet", "vae"] {
            let dir = path.join(component);
            let ckpt = Checkpoint::open(&dir)?;
            add(&mut inspection, component, &ckpt);
            if let Ok(v) = read_json(&dir.join("config.json")) {
                inspection
                    .configs
                    .insert(format!("{component}/config.json"), v);
            }
        }
        if let Ok(v) = read_json(&path.join("scheduler/scheduler_config.json")) {
            inspection
                .configs
                .insert("scheduler/scheduler_config.json".into(), v);
        }
        inspection.kind = CheckpointKind::SdxlDecoder;
        return Ok(inspection);
    }

    let ckpt = Checkpoint::open(path)?;
    add(&mut inspection, "", &ckpt);
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    collect_configs(
        &dir,
        &["config.json", "generation_config.json"],
        &mut inspection.configs,
    );

    let is_mllm_config = inspection
        .configs
        .get("config.json")
        .and_then(|c| c.get("model_type"))
        .and_then(|t| t.as_str())
        .is_some_and(|t| t == "illume_qwen2");
    let has_root = |root: &str| ckpt.roots().contains(root);
    let dualvitok = ["semantic_encoder", "pixel_encoder", "pixel_quantizer"];
    let mllm_keys = ckpt.contains("model.embed_tokens.weight")
        && ckpt.names().any(|n| n.starts_with("model.vision_tower."));
    inspection.kind = if is_mllm_config || mllm_keys {
        CheckpointKind::IllumeMllm
    } else if dualvitok.iter().all(|r| has_root(r))
        || crate::checkpoint::STATE_DICT_WRAPPERS.iter().any(|w| {
            let inner = ckpt.subtree(w);
            dualvitok.iter().all(|r| inner.roots().contains(r))
        })
    {
        CheckpointKind::DualViTok
    } else {
        CheckpointKind::Unknown
    };
    Ok(inspection)
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "path:       {}", self.path.display())?;
        writeln!(f, "kind:       {}", self.kind)?;
        for (component, format, files) in &self.components {
            let label = if component.is_empty() {
                "files:".to_string()
            } else {
                format!("{component}:")
            };
            writeln!(f, "{label:<11} {format}, {} file(s)", files.len())?;
            for file in files {
                writeln!(f, "              {}", file.display())?;
            }
        }
        writeln!(f, "tensors:    {}", self.tensor_count)?;
        writeln!(
            f,
            "parameters: {} ({})",
            self.parameter_count,
            human(self.parameter_count)
        )?;
        let dtypes: Vec<String> = self
            .dtypes
            .iter()
            .map(|(d, n)| format!("{d} x{n}"))
            .collect();
        writeln!(f, "dtypes:     {}", dtypes.join(", "))?;
        writeln!(f, "parameters by top-level prefix:")?;
        for (group, stats) in &self.groups {
            writeln!(
                f,
                "  {group:<40} {:>6} tensors {:>12} ({})",
                stats.tensors,
                stats.parameters,
                human(stats.parameters)
            )?;
        }
        if self.configs.is_empty() {
            writeln!(f, "config:     none found beside the weights")?;
        }
        for (name, value) in &self.configs {
            writeln!(f, "config {name}:")?;
            let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
            for line in pretty.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}
