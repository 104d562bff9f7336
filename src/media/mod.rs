//! Media → model inputs: decoding, sampling, resampling, log-mel, resizing and patchifying exactly as
//! Qwen2.5-Omni's processor (transformers + qwen-omni-utils) does.

pub mod audio;
pub mod prepare;
pub mod token_map;
pub mod video;
