//! `MixedProjector` (`multimodal_projector/builder.py`): the semantic (ViT) and pixel
//! (MoVQ) features mapped to the LLM width by two `Linear → GELU (erf) → Linear` MLPs.
//!
//! Documented remap: the official `nn.Sequential` members `projector_N.0.*` / `projector_N.2.*`
//! are this module's `projector_N.fc1.*` / `projector_N.fc2.*` (GELU at index 1 has no
//! parameters).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation, backend::Backend, Tensor};

/// One `Linear → GELU → Linear` projector.
#[derive(Module, Debug)]
pub struct MlpProjector<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> MlpProjector<B> {
    pub fn new(input: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(input, hidden).init(device),
            fc2: LinearConfig::new(hidden, hidden).init(device),
        }
    }

    /// `[n, input]` → `[n, hidden]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(activation::gelu(self.fc1.forward(x)))
    }
}

/// `projector_1` for the semantic features, `projector_2` for the pixel features.
#[derive(Module, Debug)]
pub struct MixedProjector<B: Backend> {
    pub projector_1: MlpProjector<B>,
    pub projector_2: MlpProjector<B>,
}

impl<B: Backend> MixedProjector<B> {
    /// `mm_hidden_size = [semantic, pixel]` → `hidden`.
    pub fn new(mm_hidden_size: [usize; 2], hidden: usize, device: &B::Device) -> Self {
        Self {
            projector_1: MlpProjector::new(mm_hidden_size[0], hidden, device),
            projector_2: MlpProjector::new(mm_hidden_size[1], hidden, device),
        }
    }

    /// Projected semantic and pixel token rows.
    pub fn forward(
        &self,
        semantic: Tensor<B, 2>,
        pixel: Tensor<B, 2>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (
            self.projector_1.forward(semantic),
            self.projector_2.forward(pixel),
        )
    }
}

/// Checkpoint name (relative to `model.mm_projector`) → module path.
pub fn to_module_path(name: &str) -> String {
    rename_layer(name, &[("0", "fc1"), ("2", "fc2")])
}

/// Module path → checkpoint name (demo checkpoints).
pub fn to_official_name(path: &str) -> String {
    rename_layer(path, &[("fc1", "0"), ("fc2", "2")])
}

/// Rename the second component (`projector_N.<layer>.param`).
fn rename_layer(name: &str, map: &[(&str, &str)]) -> String {
    let mut parts: Vec<&str> = name.split('.').collect();
    if let Some(layer) = parts.get_mut(1) {
        if let Some((_, to)) = map.iter().find(|(from, _)| from == layer) {
            *layer = to;
        }
    }
    parts.join(".")
}
