//! Cross-backend parity in f32: every component — the fused hot-path kernels and the demo
//! DualViTok, MLLM and diffusion decoder (random weights at small real-architecture shapes)
//! — on each compiled backend against ndarray, through `illume::parity` (what
//! `illume doctor` runs). Float outputs agree within the tolerance stated beside each item
//! in `src/parity.rs`; token ids and VQ indices must be identical.
//!
//! ndarray is the reference, so its tests run everything twice and check that the CPU
//! results are reproducible; wgpu runs with `--features wgpu` (Mesa lavapipe without a
//! GPU); cuda with `--features cuda` where a device answers (skipped with the reason
//! printed otherwise). tests/half_precision.rs checks f16 and bf16.

mod common;

parity_tests!(ndarray_backend, BackendKind::NdArray, Precision::F32);
parity_tests!(flex_backend, BackendKind::Flex, Precision::F32);
#[cfg(feature = "wgpu")]
parity_tests!(wgpu_backend, BackendKind::Wgpu, Precision::F32);
#[cfg(feature = "cuda")]
parity_tests!(cuda_backend, BackendKind::Cuda, Precision::F32);
