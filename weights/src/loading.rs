//! Strict loading of a checkpoint into a Burn module whose tree mirrors the key hierarchy.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{
    backend::Backend, get_device_settings, Bool, DType, Element, Int, Tensor, TensorData,
};
use burn_store::{
    ApplyError, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot,
    TensorSnapshotError,
};

use crate::checkpoint::Checkpoint;
use crate::error::{MismatchReport, WeightsError};

/// What kind of tensor a module parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Bool,
}

/// The kind of every parameter of a module, by the dotted path burn-store's applier uses,
/// gathered without touching (or lazily initialising) any values.
#[derive(Default)]
struct ParamKinds {
    path: Vec<String>,
    kinds: HashMap<String, Kind>,
}

impl ParamKinds {
    fn record(&mut self, kind: Kind) {
        self.kinds.insert(self.path.join("."), kind);
    }
}

impl<B: Backend> ModuleVisitor<B> for ParamKinds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
        self.record(Kind::Float);
    }
    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<B, D, Int>>) {
        self.record(Kind::Int);
    }
    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<B, D, Bool>>) {
        self.record(Kind::Bool);
    }
}

/// The last adapter before burn-store's `apply`, which must never see a snapshot it could
/// panic on: its `ptr::read`/`ptr::write` of the module is not unwind-safe, so a panic
/// there (e.g. building a float tensor from I32 data) drops the module twice. Every
/// snapshot leaves here with the dtype its parameter needs, or as an error naming it:
/// floats are cast to the compute type (and refused if any value is NaN/inf, before or
/// after the cast), integers to the backend's int type; integer and bool data for a float
/// parameter, or the reverse, is refused.
#[derive(Clone)]
struct Vet {
    kinds: Arc<HashMap<String, Kind>>,
    float: DType,
    int: DType,
}

fn kind_of(dtype: DType) -> Option<Kind> {
    match dtype {
        DType::F64 | DType::F32 | DType::Flex32 | DType::F16 | DType::BF16 => Some(Kind::Float),
        DType::I64
        | DType::I32
        | DType::I16
        | DType::I8
        | DType::U64
        | DType::U32
        | DType::U16
        | DType::U8 => Some(Kind::Int),
        DType::Bool(_) => Some(Kind::Bool),
        DType::QFloat(_) => None,
    }
}

impl ModuleAdapter for Vet {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let path = snapshot.full_path();
        let Some(&wanted) = self.kinds.get(&path) else {
            return snapshot.clone();
        };
        let stored = snapshot.dtype;
        let read = snapshot.clone_data_fn();
        let (dtype, data_fn): (DType, DataFn) = match (wanted, kind_of(stored)) {
            (Kind::Float, Some(Kind::Float)) => {
                let target = self.float;
                (target, Rc::new(move || cast_finite(read()?, target)))
            }
            (Kind::Int, Some(Kind::Int)) => {
                let target = self.int;
                (target, Rc::new(move || Ok(read()?.convert_dtype(target))))
            }
            (Kind::Bool, Some(Kind::Bool)) => return snapshot.clone(),
            _ => {
                let message = format!(
                    "stored as {stored:?}, but the parameter holds {} values; refusing to \
                     reinterpret it",
                    match wanted {
                        Kind::Float => "floating-point",
                        Kind::Int => "integer",
                        Kind::Bool => "boolean",
                    }
                );
                let declared = match wanted {
                    Kind::Float => self.float,
                    _ => stored,
                };
                (
                    declared,
                    Rc::new(move || Err(TensorSnapshotError::DataError(message.clone()))),
                )
            }
        };
        TensorSnapshot::from_closure(
            data_fn,
            dtype,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

type DataFn = Rc<dyn Fn() -> Result<TensorData, TensorSnapshotError>>;

/// Convert to `target`, refusing NaN/inf in the file and values the cast makes infinite.
fn cast_finite(data: TensorData, target: DType) -> Result<TensorData, TensorSnapshotError> {
    if let Some(i) = first_non_finite(&data) {
        return Err(TensorSnapshotError::DataError(format!(
            "element {i} is NaN or infinite; refusing to run on non-finite weights"
        )));
    }
    let stored = data.dtype;
    let data = data.convert_dtype(target);
    if let Some(i) = first_non_finite(&data) {
        return Err(TensorSnapshotError::DataError(format!(
            "element {i} is finite as {stored:?} but overflows {target:?}"
        )));
    }
    Ok(data)
}

/// Index of the first NaN/inf, read from the bytes (all exponent bits set), so alignment
/// and element type need no conversion.
fn first_non_finite(data: &TensorData) -> Option<usize> {
    let bytes = data.as_bytes();
    match data.dtype {
        DType::F64 => bytes
            .chunks_exact(8)
            .position(|c| !f64::from_le_bytes(c.try_into().unwrap_or_default()).is_finite()),
        DType::F32 | DType::Flex32 => bytes
            .chunks_exact(4)
            .position(|c| !f32::from_le_bytes(c.try_into().unwrap_or_default()).is_finite()),
        DType::F16 => bytes
            .chunks_exact(2)
            .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        DType::BF16 => bytes
            .chunks_exact(2)
            .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
        _ => None,
    }
}

/// Refuse data whose shape, dtype or byte count differs from what its snapshot declares,
/// before any adapter (the PyTorch transpose indexes by the declared shape) sees it.
fn consistent(snapshot: &TensorSnapshot) -> TensorSnapshot {
    let read = snapshot.clone_data_fn();
    let (dtype, shape) = (snapshot.dtype, snapshot.shape.clone());
    let expected_shape = shape.clone();
    TensorSnapshot::from_closure(
        Rc::new(move || {
            let data = read()?;
            let bytes = expected_shape
                .iter()
                .try_fold(dtype.size(), |n, d| n.checked_mul(*d));
            if data.dtype != dtype
                || data.shape != expected_shape
                || bytes != Some(data.as_bytes().len())
            {
                return Err(TensorSnapshotError::DataError(format!(
                    "the reader produced {:?} {:?} ({} bytes) for a tensor declared {dtype:?} \
                     {:?}",
                    data.dtype,
                    data.shape,
                    data.as_bytes().len(),
                    expected_shape
                )));
            }
            Ok(data)
        }),
        dtype,
        shape,
        snapshot.path_stack.clone().unwrap_or_default(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
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
        let snapshots: Vec<TensorSnapshot> = self.snapshots().values().map(consistent).collect();
        let mut kinds = ParamKinds::default();
        module.visit(&mut kinds);
        let device = module.devices().into_iter().next();
        let target = options.float_dtype.unwrap_or_else(|| match &device {
            Some(device) => get_device_settings::<B>(device).float_dtype.into(),
            None => <B::FloatElem as Element>::dtype(),
        });
        let int = <B::IntElem as Element>::dtype();
        // A dtype the backend cannot build a tensor of panics inside `apply` (see `Vet`).
        if let Some(device) = &device {
            for dtype in [target, int] {
                if !B::supports_dtype(device, dtype) {
                    return Err(WeightsError::Format {
                        path: self.path().to_path_buf(),
                        reason: format!(
                            "cannot load {}: this backend has no {dtype:?} tensors",
                            options.module_name
                        ),
                    });
                }
            }
        }
        let adapter = PyTorchToBurnAdapter.chain(Vet {
            kinds: Arc::new(kinds.kinds),
            float: target,
            int,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cast_that_overflows_is_refused() {
        // 1e6 is finite in f32; f16 tops out at 65504.
        let data = TensorData::new(vec![1.0f32, 1e6], [2]);
        let err = cast_finite(data, DType::F16).unwrap_err().to_string();
        assert!(
            err.contains("element 1") && err.contains("overflows F16"),
            "{err}"
        );
        let ok = cast_finite(TensorData::new(vec![1.0f32, 6e4], [2]), DType::F16).unwrap();
        assert_eq!(ok.dtype, DType::F16);
    }
}
