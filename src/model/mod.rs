//! Models: configuration, checkpoint loading, the shared Qwen2.5 decoder and one folder per family.

pub mod config;
pub mod decoder;
pub mod loader;
pub mod nn;
pub mod omni;

pub use config::{Family, ThinkerConfig};
pub use decoder::{Decoder, PositionIds};
pub use loader::{resolve, ModelSource, ResolvedModel};
pub use omni::{Embedded, OmniInputs, OmniThinker};
