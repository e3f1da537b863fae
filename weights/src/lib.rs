//! Checkpoint reading for illume-rs.
//!
//! The official ILLUME+ checkpoints are read exactly as published, with no conversion step:
//! safetensors (single or sharded, memory-mapped, tensors materialised lazily) and PyTorch
//! `torch.save` files (zip or legacy pickle, parsed as data by burn-store after a static scan
//! that rejects any callable outside the tensor-rebuilding allowlist). Loading into a Burn
//! module is strict: every missing, unexpected and mis-shaped tensor is reported in one error.

mod budget;
mod checkpoint;
pub mod demo;
mod error;
mod hub;
mod inspect;
mod loading;
pub mod pickle_guard;
mod torch_file;
mod torch_pickle;

pub use budget::DeclaredSize;
pub use checkpoint::{Checkpoint, Format, STATE_DICT_WRAPPERS};
pub use error::{MismatchReport, WeightsError};
pub use hub::resolve_path;
pub use inspect::{inspect, CheckpointKind, GroupStats, Inspection};
pub use loading::LoadOptions;
