//! The root crate's integration tests in f32, one binary (each test binary links all of
//! Burn: one link instead of four keeps CI's build short). tests/half_precision.rs stays
//! its own binary: Burn fixes a device's float type once per process.

mod common;

mod backend_parity;
mod checkpoints;
mod cli;
mod pipeline;
#[cfg(feature = "serve")]
mod serve;
