//! The few places where this crate's module tree names a parameter differently from the
//! official state dict, and the loading helper that applies them.
//!
//! Burn module paths are field names, so positional `nn.Sequential` members get names here:
//!
//! | official | module |
//! |---|---|
//! | `merger.mlp.0.*` / `merger.mlp.2.*` (Linear, GELU, Linear) | `merger.mlp.fc1.*` / `merger.mlp.fc2.*` |
//! | `proj_out.0.*` (semantic encoder/decoder Linear) | `proj_out.linear.*` |
//! | `proj_out.1.*` (semantic decoder LayerNorm) | `proj_out.norm.*` |
//!
//! Everything else (`blocks.3.attn.qkv.weight`, `down.2.block.0.nin_shortcut.bias`, ...) is
//! identical. The MoVQ attention's own `proj_out.weight` has no index and is not touched.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use illume_weights::{Checkpoint, LoadOptions};

use crate::error::Result;

/// (official name component sequence, module path component sequence)
const REMAPS: [(&str, &str); 4] = [
    ("merger.mlp.0.", "merger.mlp.fc1."),
    ("merger.mlp.2.", "merger.mlp.fc2."),
    ("proj_out.0.", "proj_out.linear."),
    ("proj_out.1.", "proj_out.norm."),
];

fn replace_at_boundary(name: &str, from: &str, to: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix(from) {
        return Some(format!("{to}{rest}"));
    }
    let at = name.find(&format!(".{from}"))?;
    Some(format!(
        "{}.{to}{}",
        &name[..at],
        &name[at + 1 + from.len()..]
    ))
}

/// Official state-dict name → module path.
pub fn to_module_path(official: &str) -> String {
    REMAPS
        .iter()
        .find_map(|(from, to)| replace_at_boundary(official, from, to))
        .unwrap_or_else(|| official.to_string())
}

/// Module path → official state-dict name (used to write demo checkpoints).
pub fn to_official_name(path: &str) -> String {
    REMAPS
        .iter()
        .find_map(|(official, ours)| replace_at_boundary(path, ours, official))
        .unwrap_or_else(|| path.to_string())
}

/// Strictly load `module` from `checkpoint` (official names relative to the module).
pub fn load<B: Backend, M: Module<B>>(checkpoint: &Checkpoint, module: M, what: &str) -> Result<M> {
    let renamed = checkpoint.renamed(|name| Some(to_module_path(name)));
    Ok(renamed.load_into(module, &LoadOptions::named(what))?)
}

/// Official name → PyTorch shape of every parameter of `module`, without materialising any
/// (lazily initialised parameters stay unallocated): what a checkpoint for this module tree
/// must contain. Burn's Linear weights are `[in, out]`, PyTorch's `[out, in]`; Burn's norm
/// `gamma`/`beta` are PyTorch's `weight`/`bias`.
pub fn official_shapes<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, Vec<usize>> {
    let mut visitor = ShapeVisitor {
        path: Vec::new(),
        containers: Vec::new(),
        shapes: BTreeMap::new(),
    };
    module.visit(&mut visitor);
    visitor.shapes
}

struct ShapeVisitor {
    path: Vec<String>,
    containers: Vec<String>,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl<B: Backend> ModuleVisitor<B> for ShapeVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut shape: Vec<usize> = param.lazy_shape().iter().copied().collect();
        let container = self.containers.last().map(String::as_str).unwrap_or("");
        let mut path = self.path.clone();
        match (container, path.last().map(String::as_str)) {
            ("Struct:Linear", Some("weight")) => shape.reverse(),
            ("Struct:LayerNorm" | "Struct:GroupNorm", Some("gamma")) => {
                *path.last_mut().expect("non-empty") = "weight".into()
            }
            ("Struct:LayerNorm" | "Struct:GroupNorm", Some("beta")) => {
                *path.last_mut().expect("non-empty") = "bias".into()
            }
            _ => {}
        }
        self.shapes.insert(to_official_name(&path.join(".")), shape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_indices_round_trip() {
        for (official, ours) in [
            (
                "semantic_encoder.model.merger.mlp.2.bias",
                "semantic_encoder.model.merger.mlp.fc2.bias",
            ),
            ("merger.mlp.0.weight", "merger.mlp.fc1.weight"),
            (
                "semantic_decoder.proj_out.1.weight",
                "semantic_decoder.proj_out.norm.weight",
            ),
            ("proj_out.0.bias", "proj_out.linear.bias"),
            (
                "pixel_decoder.mid.attn_1.proj_out.weight",
                "pixel_decoder.mid.attn_1.proj_out.weight",
            ),
            (
                "semantic_encoder.blocks.0.mlp.fc1.weight",
                "semantic_encoder.blocks.0.mlp.fc1.weight",
            ),
        ] {
            assert_eq!(to_module_path(official), ours);
            assert_eq!(to_official_name(ours), official);
        }
    }
}
