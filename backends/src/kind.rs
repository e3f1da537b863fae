use std::fmt;
use std::str::FromStr;

use crate::precision::{DeviceFloats, Precision, PrecisionError};
use crate::IllumeBackend;

/// A backend the user can ask for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Flex,
    NdArray,
    Wgpu,
    Cuda,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Flex,
        BackendKind::NdArray,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend's cargo feature.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends compiled into this binary, in order of preference for a default.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }

    /// The CPU backend `cpu` names: flex (the fast one) when it is compiled in, else ndarray.
    pub fn cpu() -> BackendKind {
        if BackendKind::Flex.is_compiled() {
            BackendKind::Flex
        } else {
            BackendKind::NdArray
        }
    }

    /// Whether the backend computes on the host CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::Flex | BackendKind::NdArray)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(BackendKind::cpu()),
            "flex" => Ok(BackendKind::Flex),
            "ndarray" => Ok(BackendKind::NdArray),
            "wgpu" | "vulkan" | "webgpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(BackendError::Unknown(other.to_string())),
        }
    }
}

/// A backend as asked for: one by name, or `auto`, the best this machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when compiled in and a device answers, else a wgpu adapter that is a real GPU
    /// (not a CPU rasteriser such as lavapipe), else the fast CPU backend.
    #[default]
    Auto,
    Kind(BackendKind),
}

impl BackendChoice {
    /// The backend this choice means on this machine; `auto` tries the GPUs first (at
    /// `precision`, so a CUDA device that cannot compute in it is passed over).
    pub fn resolve(self, precision: Precision) -> BackendKind {
        match self {
            BackendChoice::Kind(kind) => kind,
            BackendChoice::Auto => {
                if BackendKind::Cuda.is_compiled()
                    && check_available(BackendKind::Cuda, precision).is_ok()
                {
                    return BackendKind::Cuda;
                }
                #[cfg(feature = "wgpu")]
                if crate::wgpu_adapter().is_ok_and(|a| a.device_type != "Cpu") {
                    return BackendKind::Wgpu;
                }
                BackendKind::cpu()
            }
        }
    }
}

impl FromStr for BackendChoice {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(BackendChoice::Auto);
        }
        s.parse().map(BackendChoice::Kind)
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Kind(kind) => kind.fmt(f),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown backend `{0}`: choose one of auto, cpu, flex, ndarray, wgpu, cuda")]
    Unknown(String),
    #[error(
        "the `{kind}` backend is not compiled into this binary; rebuild with \
         `cargo build --release --features {kind}` (compiled in: {compiled})"
    )]
    NotCompiled { kind: BackendKind, compiled: String },
    #[error("the `{kind}` backend cannot start: {reason}")]
    Unavailable { kind: BackendKind, reason: String },
    #[error(transparent)]
    Precision(#[from] PrecisionError),
}

/// Work generic over the backend, run by [`run_on`] on the one chosen at run time.
pub trait BackendTask {
    type Output;
    fn run<B: IllumeBackend>(self, device: B::Device) -> Self::Output;
}

/// Start `kind`'s default device, make `precision` its compute float type, check that it
/// answers, and run `task` on it.
pub fn run_on<T: BackendTask>(
    kind: BackendKind,
    precision: Precision,
    task: T,
) -> Result<T::Output, BackendError> {
    if !kind.is_compiled() {
        let compiled: Vec<&str> = BackendKind::compiled().iter().map(|k| k.name()).collect();
        return Err(BackendError::NotCompiled {
            kind,
            compiled: compiled.join(", "),
        });
    }
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            let device = Default::default();
            start::<crate::Flex>(kind, &device, precision, true, "")?;
            Ok(task.run::<crate::Flex>(device))
        }
        #[cfg(feature = "ndarray")]
        BackendKind::NdArray => {
            let device = Default::default();
            start::<crate::NdArray>(kind, &device, precision, true, "")?;
            Ok(task.run::<crate::NdArray>(device))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let device = burn::backend::wgpu::WgpuDevice::default();
            // Lavapipe and other CPU adapters emulate half precision: `auto` keeps f32 there.
            // Only `auto` reads the adapter's type, so only `auto` pays for enumerating it.
            let is_cpu = precision == Precision::Auto
                && crate::wgpu_adapter().is_ok_and(|a| a.device_type == "Cpu");
            start::<crate::Wgpu>(kind, &device, precision, is_cpu, "no usable GPU adapter was found (Vulkan, Metal, DX12 or GL); on a machine without a GPU install Mesa's lavapipe (`apt-get install mesa-vulkan-drivers`)")?;
            Ok(task.run::<crate::Wgpu>(device))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let device = burn::backend::cuda::CudaDevice::default();
            start::<crate::Cuda>(kind, &device, precision, false, "the NVIDIA driver (libcuda.so) or NVRTC (libnvrtc.so) could not be loaded, or no CUDA device is present")?;
            Ok(task.run::<crate::Cuda>(device))
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("checked by is_compiled"),
    }
}

/// Start `kind`'s default device at `precision` and run one tiny operation on it.
pub fn check_available(kind: BackendKind, precision: Precision) -> Result<(), BackendError> {
    struct Nothing;
    impl BackendTask for Nothing {
        type Output = ();
        fn run<B: IllumeBackend>(self, _: B::Device) {}
    }
    run_on(kind, precision, Nothing)
}

/// Bring `device` up: read its half-precision support, set the compute float type, and run
/// one tiny operation. GPU runtimes report a missing driver by panicking on first use; that
/// becomes an error carrying `hint`.
fn start<B: IllumeBackend>(
    kind: BackendKind,
    device: &B::Device,
    precision: Precision,
    is_cpu: bool,
    hint: &str,
) -> Result<(), BackendError> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let limits = B::limits(device);
        let floats = DeviceFloats {
            kind,
            description: format!("the {kind} device {device:?}"),
            is_cpu,
            f16: limits.f16,
            bf16: limits.bf16,
        };
        let dtype = precision.resolve(&floats)?;
        crate::precision::set_float_dtype::<B>(kind, device, dtype)?;
        burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], device)
            .sum()
            .into_scalar();
        Ok::<(), PrecisionError>(())
    }));
    std::panic::set_hook(previous);
    match outcome {
        Ok(result) => Ok(result?),
        Err(payload) => {
            let detail = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("no detail");
            Err(BackendError::Unavailable {
                kind,
                reason: format!("{hint} ({detail})"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("CUDA".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
        assert_eq!("cpu".parse::<BackendKind>().unwrap(), BackendKind::Flex);
        assert_eq!(
            "ndarray".parse::<BackendKind>().unwrap(),
            BackendKind::NdArray
        );
        let err = "metal2".parse::<BackendKind>().unwrap_err().to_string();
        assert!(
            err.contains("metal2") && err.contains("flex, ndarray, wgpu, cuda"),
            "{err}"
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn uncompiled_backend_names_its_feature() {
        struct Noop;
        impl BackendTask for Noop {
            type Output = ();
            fn run<B: IllumeBackend>(self, _: B::Device) {}
        }
        let err = run_on(BackendKind::Cuda, Precision::Auto, Noop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
