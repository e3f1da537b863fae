//! Strict loading of a checkpoint into a Burn module whose tree mirrors the key hierarchy.

use std::rc::Rc;

use burn::module::Module;
use burn::tensor::{backend::Backend, get_device_settings, DType, Element};
use burn_store::{ApplyError, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot};

use crate::checkpoint::Checkpoint;
use crate::error::{MismatchReport, WeightsError};

/// Converts every floating-point tensor to the compute float type (a bf16 file loads into an
/// f32 model, an f32 file into an f16 one); integer buffers are left as stored.
#[derive(Clone, Copy)]
struct CastFloats(DType);

impl ModuleAdapter for CastFloats {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let target = self.0;
        if !snapshot.dtype.is_float() || snapshot.dtype == target {
            return snapshot.clone();
        }
        let read = snapshot.clone_data_fn();
        TensorSnapshot::from_closure(
            Rc::new(move || Ok(read()?.convert_dtype(target))),
            target,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// Options of [`Checkpoint::load_into`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Name of the module in error messages ("DualViTok", "Qwen2 decoder", ...).
    pub module_name: String,
    /// Tensors under these prefixes may stay unused (e.g. the VAE encoder of a decoder-only
    /// pipeline). Everything else in the file must be consumed.
    pub unused_prefixes: Vec<String>,
    /// Float type of the loaded parameters; `None` means the device's compute type (see
    /// `illume_backends::Precision`). The diffusion VAE pins f32, as the official pipeline
    /// upcasts it.
    pub float_dtype: Option<DType>,
}

impl LoadOptions {
    pub fn named(module_name: impl Into<String>) -> Self {
        Self {
            module_name: module_name.into(),
            unused_prefixes: Vec::new(),
            float_dtype: None,
        }
    }

    pub fn with_float_dtype(mut self, dtype: DType) -> Self {
        self.float_dtype = Some(dtype);
        self
    }

    pub fn allow_unused(mut self, prefix: impl Into<String>) -> Self {
        self.unused_prefixes.push(prefix.into());
        self
    }
}

impl Checkpoint {
    /// Load every parameter of `module` from this checkpoint.
    ///
    /// PyTorch layouts are adapted on the way (Linear weights transposed, norm
    /// `weight`/`bias` to `gamma`/`beta`), floats are cast to the compute float type of the
    /// module's device (or `options.float_dtype`), and
    /// the load is strict: missing tensors, tensors the module does not have (outside
    /// `unused_prefixes`), shape mismatches and unreadable tensors are all reported together.
    pub fn load_into<B: Backend, M: Module<B>>(
        &self,
        mut module: M,
        options: &LoadOptions,
    ) -> Result<M, WeightsError> {
        let snapshots: Vec<TensorSnapshot> = self.snapshots().values().cloned().collect();
        let target = options
            .float_dtype
            .unwrap_or_else(|| match module.devices().first() {
                Some(device) => get_device_settings::<B>(device).float_dtype.into(),
                None => <B::FloatElem as Element>::dtype(),
            });
        let adapter = PyTorchToBurnAdapter.chain(CastFloats(target));
        let result = module.apply(snapshots, None, Some(Box::new(adapter)), false);

        let applied: std::collections::HashSet<&str> =
            result.applied.iter().map(String::as_str).collect();
        // Norm parameters are found under their PyTorch names (`weight`/`bias`) but recorded
        // under Burn's (`gamma`/`beta`); those file entries were consumed, not unused.
        let consumed_as_norm = |name: &str| {
            [(".weight", ".gamma"), (".bias", ".beta")]
                .iter()
                .any(|(torch, burn)| {
                    name.strip_suffix(torch)
                        .is_some_and(|stem| applied.contains(format!("{stem}{burn}").as_str()))
                })
        };
        let mut report = MismatchReport {
            source: self.path().to_path_buf(),
            module: options.module_name.clone(),
            missing: result
                .missing
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
            unexpected: result
                .unused
                .iter()
                .filter(|name| !consumed_as_norm(name))
                .filter(|name| {
                    !options
                        .unused_prefixes
                        .iter()
                        .any(|p| name.starts_with(p.as_str()))
                })
                .cloned()
                .collect(),
            ..Default::default()
        };
        for error in result.errors {
            match error {
                ApplyError::ShapeMismatch {
                    path,
                    expected,
                    found,
                } => report
                    .shape_mismatches
                    .push((path, expected.to_vec(), found.to_vec())),
                ApplyError::DTypeMismatch {
                    path,
                    expected,
                    found,
                } => report.unreadable.push((
                    path,
                    format!("dtype {found:?} where {expected:?} is needed"),
                )),
                ApplyError::AdapterError { path, message }
                | ApplyError::LoadError { path, message } => {
                    report.unreadable.push((path, message))
                }
            }
        }
        if report.is_empty() {
            Ok(module)
        } else {
            Err(WeightsError::Mismatch(Box::new(report)))
        }
    }
}
