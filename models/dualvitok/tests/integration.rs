//! DualViTok's integration tests, one binary (each test binary links all of Burn: one link
//! instead of four keeps CI's build short).

mod bad_input;
mod official_keys;
mod parity;
mod pillow_sweep;
