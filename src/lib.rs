//! avflow: an exact, fast, interactive explorer of information flow in audio-visual LLMs.
//!
//! Every analysis is one method of [`session::Session`] (knockout, sweep, drop, lens, attention, heatmap,
//! generate, forward) on a [`session::Model`] of any family; the CLI (`src/main.rs` + `src/cli/`), the
//! app's [`worker`] and the dataset runner ([`batch`]) are shells over it. Layers, bottom up (see
//! ARCHITECTURE.md): `kernels` → `prompt` → `media` → `model` → `flow` → `session` → `export`, `batch`,
//! `worker` → `ui`.

pub mod batch;
pub mod device;
pub mod error;
pub mod export;
pub mod flow;
pub mod kernels;
pub mod media;
pub mod model;
pub mod prompt;
pub mod session;
pub mod tensor_io;
pub mod ui;
pub mod worker;

pub use error::{Error, Result};
