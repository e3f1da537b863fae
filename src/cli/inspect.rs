use std::path::PathBuf;

use illume::weights;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A checkpoint file (.safetensors, .bin, .pt, *.index.json) or a directory holding one
    /// (an MLLM folder, a DualViTok folder, a diffusers pipeline folder), or a Hugging Face
    /// repo id present in the local cache.
    path: PathBuf,
}

pub fn run(args: Args, json: bool) -> super::CliResult {
    let path = weights::resolve_path(&args.path)?;
    let inspection = weights::inspect(&path)?;
    if !json {
        print!("{inspection}");
        return Ok(());
    }
    let components: Vec<_> = inspection
        .components
        .iter()
        .map(|(name, format, files)| {
            json!({"component": name, "format": format.to_string(), "files": files})
        })
        .collect();
    let groups: serde_json::Map<String, serde_json::Value> = inspection
        .groups
        .iter()
        .map(|(name, g)| {
            (
                name.clone(),
                json!({"tensors": g.tensors, "parameters": g.parameters}),
            )
        })
        .collect();
    super::common::print_json(&json!({
        "path": inspection.path,
        "kind": inspection.kind.to_string(),
        "components": components,
        "tensors": inspection.tensor_count,
        "parameters": inspection.parameter_count,
        "groups": groups,
        "dtypes": inspection.dtypes,
        "configs": inspection.configs,
    }))
}
