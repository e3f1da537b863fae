//! The MLLM's integration tests, one binary (each test binary links all of Burn: one link
//! instead of five keeps CI's build short).

mod common;

mod decoder;
mod generation;
mod pipeline;
mod text;
mod vision;
