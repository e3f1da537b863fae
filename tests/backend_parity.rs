//! Cross-backend parity in f32 on the CPU backends: every component — the fused hot-path
//! operations and the demo DualViTok, MLLM and diffusion decoder (random weights at small
//! real-architecture shapes) — on flex against ndarray, through `illume::parity` (what
//! `illume doctor` runs). Float outputs agree within the tolerance stated beside each item
//! in `src/parity.rs`; token ids and VQ indices must be identical. ndarray is the
//! reference, so its tests run everything twice and check that the CPU results are
//! reproducible.
//!
//! On a GPU the same checks are `illume doctor --backends wgpu|cuda [--precision …]`
//! (scripts/gpu-check.sh runs them on CUDA). They are not instantiated here for wgpu: on
//! Mesa's lavapipe they take ~25 minutes of CI (f32 and f16), while the official-fixture
//! tests of every model crate and the kernel tests already run on wgpu.

use crate::parity_tests;

parity_tests!(ndarray_backend, BackendKind::NdArray, Precision::F32);
parity_tests!(flex_backend, BackendKind::Flex, Precision::F32);
