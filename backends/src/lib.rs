//! Backends of illume-rs: which ones are compiled in, how to start a device, and the
//! operations the models call through [`IllumeBackend`] (generic compositions by default,
//! fused CubeCL kernels where a backend provides them).

#[cfg(feature = "wgpu")]
mod adapter;
#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "cubecl")]
mod fusion;
#[cfg(feature = "cubecl")]
pub mod kernels;
mod kind;
mod limits;
pub mod ops;
mod precision;
pub mod reference;
mod samples;
pub mod unfolded_conv;

#[cfg(feature = "wgpu")]
pub use adapter::{wgpu_adapter, AdapterReport};
pub use kind::{check_available, run_on, BackendChoice, BackendError, BackendKind, BackendTask};
pub use limits::{human_bytes, limits, DeviceLimits};
pub use ops::{conv2d, IllumeBackend, Modulation};
pub use precision::{
    compute_dtype, dtype_name, float_dtype, DeviceFloats, Precision, PrecisionError,
};
pub use samples::sample_values;

/// The fast CPU backend (burn-flex: gemm-backed matmul and convolutions, rayon, SIMD):
/// the CPU default.
#[cfg(feature = "flex")]
pub type Flex = burn::backend::Flex;
/// The CPU reference backend (ndarray, f32, multi-threaded): what parity is checked against.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray<f32>;
/// WebGPU-family backend (Vulkan, Metal, DX12, GL; Mesa lavapipe on CPU-only machines).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;
/// NVIDIA CUDA backend.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
