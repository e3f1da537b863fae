//! illume-rs: ILLUME+ inference in pure Rust on Burn.
//!
//! The crate re-exports the building blocks so that an application can embed the runtime:
//! checkpoint reading ([`weights`]) and backend selection ([`backends`]); the models live in
//! their own crates and are re-exported here. [`pipeline`] is the front door: one handle
//! that loads the models on a backend chosen at run time and runs every task, with events
//! and cancellation.

pub use illume_backends as backends;
pub use illume_diffusion as diffusion;
pub use illume_dualvitok as dualvitok;
pub use illume_mllm as mllm;
pub use illume_weights as weights;

pub mod bench;
pub mod demo;
pub mod parity;
pub mod pipeline;
#[cfg(feature = "serve")]
pub mod serve;
