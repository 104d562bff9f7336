//! avflow: an exact, fast, interactive explorer of information flow in audio-visual LLMs.
//!
//! Layers (see ARCHITECTURE.md): `model` (config, loader, encoders, decoder) → `flow` → `worker` → `ui`.
//! The CLI (`src/main.rs`) and the app call the same library functions.

pub mod batch;
pub mod cli;
pub mod device;
pub mod error;
pub mod export;
pub mod flow;
pub mod kernels;
pub mod media;
pub mod model;
pub mod tensor_io;
pub mod ui;
pub mod worker;

pub use error::{Error, Result};
