//! The float type models compute in: f32 everywhere, or f16/bf16 where the device has it.
//!
//! Burn 0.21 tensors carry their dtype at run time, so half precision needs no second
//! backend type (and no second monomorphisation of every model): the device's default float
//! dtype is set once, before its first tensor, and every tensor created on it, checkpoint
//! weights included, takes that dtype. Precision-sensitive steps upcast on their own, as the
//! official PyTorch code does: norms and softmax compute in f32, the SimVQ nearest-code
//! search runs in f32, LM-head logits are read as f32, and the diffusion decoder keeps its
//! latents, scheduler and VAE in f32.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{backend::Backend, get_device_settings, DType, FloatDType, IntDType};

use crate::BackendKind;

/// What the user asks for with `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// bf16 on CUDA devices that have it, else f16 where the device has it; f32 on CPUs
    /// (ndarray, and CPU adapters such as Mesa's lavapipe, where half precision is emulated).
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// Every value `--precision` takes, for messages.
    pub const NAMES: &'static str = "auto, f32, f16, bf16";

    /// The float dtype this precision means on a device with the given capabilities.
    /// `Auto` never fails; an explicit choice the device lacks is an error.
    pub fn resolve(self, device: &DeviceFloats) -> Result<FloatDType, PrecisionError> {
        let unsupported = |precision| PrecisionError::Unsupported {
            precision,
            device: device.description.clone(),
        };
        match self {
            Precision::F32 => Ok(FloatDType::F32),
            Precision::F16 if device.f16 => Ok(FloatDType::F16),
            Precision::Bf16 if device.bf16 => Ok(FloatDType::BF16),
            Precision::F16 | Precision::Bf16 => Err(unsupported(self)),
            Precision::Auto if device.is_cpu => Ok(FloatDType::F32),
            Precision::Auto if device.kind == BackendKind::Cuda && device.bf16 => {
                Ok(FloatDType::BF16)
            }
            Precision::Auto if device.f16 => Ok(FloatDType::F16),
            Precision::Auto if device.bf16 => Ok(FloatDType::BF16),
            Precision::Auto => Ok(FloatDType::F32),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = PrecisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(PrecisionError::Unknown(other.to_string())),
        }
    }
}

/// The half-precision capabilities of one device, as [`Precision::resolve`] needs them.
#[derive(Debug, Clone)]
pub struct DeviceFloats {
    pub kind: BackendKind,
    /// For messages, e.g. "wgpu: llvmpipe (Cpu)".
    pub description: String,
    /// A CPU device: half precision would be emulated, not faster.
    pub is_cpu: bool,
    pub f16: bool,
    pub bf16: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("unknown precision `{0}`: choose one of {names}", names = Precision::NAMES)]
    Unknown(String),
    #[error(
        "{device} cannot compute in {precision}; use `--precision auto` (picks what the \
         device has) or `--precision f32`"
    )]
    Unsupported {
        precision: Precision,
        device: String,
    },
    #[error(
        "the {kind} device already computes in {current:?} in this process, and cannot switch \
         to {requested:?}; run one precision per process"
    )]
    AlreadySet {
        kind: BackendKind,
        current: FloatDType,
        requested: FloatDType,
    },
}

/// Make `dtype` the default float type of `device`: what its tensors and loaded weights
/// are created in. Burn fixes a device's defaults at its first tensor, so this runs before
/// anything else touches the device; asking again for the same dtype is fine.
pub(crate) fn set_float_dtype<B: Backend>(
    kind: BackendKind,
    device: &B::Device,
    dtype: FloatDType,
) -> Result<(), PrecisionError> {
    let int = <B::IntElem as burn::tensor::Element>::dtype();
    let int = IntDType::from(int);
    if burn::tensor::set_default_dtypes::<B>(device, dtype, int).is_ok() {
        return Ok(());
    }
    let current = float_dtype::<B>(device);
    if current == dtype {
        Ok(())
    } else {
        Err(PrecisionError::AlreadySet {
            kind,
            current,
            requested: dtype,
        })
    }
}

/// The float dtype tensors are created in on `device`.
pub fn float_dtype<B: Backend>(device: &B::Device) -> FloatDType {
    get_device_settings::<B>(device).float_dtype
}

/// The same, as a [`DType`] (what `Tensor::cast` and creation options take).
pub fn compute_dtype<B: Backend>(device: &B::Device) -> DType {
    float_dtype::<B>(device).into()
}

/// Name of a float dtype as users write it (`f32`, `f16`, `bf16`).
pub fn dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::F64 => "f64",
        FloatDType::F32 => "f32",
        FloatDType::F16 => "f16",
        FloatDType::BF16 => "bf16",
        FloatDType::Flex32 => "flex32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(kind: BackendKind, is_cpu: bool, f16: bool, bf16: bool) -> DeviceFloats {
        DeviceFloats {
            kind,
            description: format!("{kind} test device"),
            is_cpu,
            f16,
            bf16,
        }
    }

    #[test]
    fn auto_picks_bf16_on_cuda_f16_on_gpus_f32_on_cpus() {
        let cuda = device(BackendKind::Cuda, false, true, true);
        assert_eq!(Precision::Auto.resolve(&cuda).unwrap(), FloatDType::BF16);
        let old_cuda = device(BackendKind::Cuda, false, true, false);
        assert_eq!(Precision::Auto.resolve(&old_cuda).unwrap(), FloatDType::F16);
        let gpu = device(BackendKind::Wgpu, false, true, false);
        assert_eq!(Precision::Auto.resolve(&gpu).unwrap(), FloatDType::F16);
        let lavapipe = device(BackendKind::Wgpu, true, true, false);
        assert_eq!(Precision::Auto.resolve(&lavapipe).unwrap(), FloatDType::F32);
        let no_half = device(BackendKind::Wgpu, false, false, false);
        assert_eq!(Precision::Auto.resolve(&no_half).unwrap(), FloatDType::F32);
    }

    #[test]
    fn explicit_choice_is_kept_or_refused() {
        let lavapipe = device(BackendKind::Wgpu, true, true, false);
        assert_eq!(
            Precision::F16.resolve(&lavapipe).unwrap(),
            FloatDType::F16,
            "an explicit f16 overrides the CPU rule"
        );
        let err = Precision::Bf16.resolve(&lavapipe).unwrap_err().to_string();
        assert!(
            err.contains("bf16") && err.contains("wgpu test device"),
            "{err}"
        );
        let cpu = device(BackendKind::NdArray, true, false, false);
        assert!(Precision::F16.resolve(&cpu).is_err());
        assert_eq!(Precision::F32.resolve(&cpu).unwrap(), FloatDType::F32);
    }

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("half".parse::<Precision>().unwrap(), Precision::F16);
        let err = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(
            err.contains("f8") && err.contains("auto, f32, f16, bf16"),
            "{err}"
        );
    }
}
