//! Media → model inputs: decoding, sampling, resampling, log-mel, resizing and patchifying exactly as
//! Qwen2.5-Omni's processor (transformers + qwen-omni-utils) does.

pub mod audio;
pub mod prepare;
pub mod token_map;
pub mod video;

/// FFmpeg's Rust bindings take paths as UTF-8 and panic on anything else: such paths are refused here
/// with an error that names the file and the fix (symphonia, for audio files, reads them fine).
pub(crate) fn ffmpeg_path(path: &std::path::Path) -> crate::Result<&str> {
    path.to_str().ok_or_else(|| crate::Error::Inputs {
        path: path.to_path_buf(),
        reason: "the path is not valid UTF-8, which FFmpeg cannot open. Fix: rename the file (or link it under a UTF-8 name)".into(),
    })
}
