//! Audio → Qwen2.5-Omni audio-encoder inputs, as `qwen-omni-utils` + `Qwen2_5OmniProcessor` make them:
//! `librosa.load(path, sr=16000)` (decode, mono by channel mean, soxr_hq resampling) then
//! `WhisperFeatureExtractor` (128-bin Whisper log-mel, valid frames only).
//!
//! * [`decode_audio`]: any file symphonia reads (wav, flac, ogg/vorbis, …), else ffmpeg (audio track of
//!   mp4/mkv/webm, aac, opus, mp3, …) → mono f32 at the file's rate.
//! * [`resample`]: band-limited resampler matched to soxr "HQ" (librosa's default).
//! * [`log_mel`]: Whisper log-mel exactly as the HF feature extractor returns it for the valid frames.
//! * [`AudioFeatures`]: the above as a candle tensor `[128, n]`; [`concat_features`] fills
//!   the Qwen2.5-Omni processor's `input_features` with its valid frames.
//!
//! Errors are `Error::Inputs { path, reason }`; a media file without any audio stream gives a reason that
//! [`is_no_audio`] recognises (the video pipeline then falls back to a video-only prompt). [`has_audio`]
//! asks the same question without decoding.

mod decode;
mod mel;
mod resample;

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::media::prepare::TimeRange;

pub use mel::{
    log_mel_padded, mel_filter_bank, n_valid_frames, HOP, MAX_FRAMES, N_FFT, N_MELS, N_SAMPLES,
    SAMPLE_RATE,
};

/// A decoded clip: mono samples (channel mean) at the file's own sample rate.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels of the audio stream before the downmix.
    pub channels_in: usize,
    /// `samples.len() / sample_rate`.
    pub seconds: f64,
}

/// Start of the `reason` of the error for a media file with no audio stream (see [`is_no_audio`]).
pub const NO_AUDIO_STREAM: &str = "no audio stream";

pub(crate) fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Inputs {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn no_audio_error(path: &Path) -> Error {
    err(
        path,
        format!(
            "{NO_AUDIO_STREAM}: the file is a media file but has no audio track; use it as a video-only input, or \
             pass a file with sound"
        ),
    )
}

/// True for the error [`decode_audio`] returns for a media file (e.g. a silent video) without any audio
/// stream; every other error (missing, empty, truncated, not media) is false.
pub fn is_no_audio(e: &Error) -> bool {
    matches!(e, Error::Inputs { reason, .. } if reason.starts_with(NO_AUDIO_STREAM))
}

/// Decode a file's audio to mono f32 at its native rate (symphonia, else ffmpeg).
pub fn decode_audio(path: impl AsRef<Path>) -> Result<Decoded> {
    decode::decode(path.as_ref())
}

/// Whether a media file has an audio stream. `Err` for files that are missing, empty or not media.
pub fn has_audio(path: impl AsRef<Path>) -> Result<bool> {
    decode::has_audio(path.as_ref())
}

/// Resample mono audio from `from_hz` to `to_hz` (band-limited, soxr-HQ-like; `ceil(n·to/from)` samples
/// out, as librosa). Identity when the rates match. Panics if a rate is 0.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    resample::resample(samples, from_hz, to_hz)
}

/// `librosa.load(path, sr=16000)`: decode, downmix, resample to 16 kHz.
pub fn load_16k(path: impl AsRef<Path>) -> Result<Vec<f32>> {
    load_16k_range(path, None)
}

/// `librosa.load(path, sr=16000, offset=start, duration=end − start)`: the range is cut at the file's own
/// rate (as librosa reads it), then resampled, so its edges are those of a clip that starts there.
pub fn load_16k_range(path: impl AsRef<Path>, range: Option<&TimeRange>) -> Result<Vec<f32>> {
    let d = decode_audio(path)?;
    let part = match range {
        Some(r) => &d.samples[r.samples(d.sample_rate, d.samples.len())],
        None => &d.samples[..],
    };
    Ok(resample(part, d.sample_rate, SAMPLE_RATE))
}

/// 16 kHz mono through FFmpeg's resampler and downmix, as torchcodec's `AudioDecoder(sample_rate=16000,
/// num_channels=1)` gives it (video-SALMONN 2+'s dataset code); librosa's is [`load_16k`].
pub fn load_16k_ffmpeg(path: impl AsRef<Path>) -> Result<Vec<f32>> {
    decode::ffmpeg_resampled(path.as_ref(), SAMPLE_RATE)
}

/// Whisper log-mel of a 16 kHz mono clip, as `WhisperFeatureExtractor` (Qwen2.5-Omni settings) returns
/// `input_features[0, :, :n]`: row-major `[128, n]` and `n = ceil(len / 160)` valid frames (≤ 30000;
/// clips over 300 s are cut there, as the processor does).
pub fn log_mel(samples_16k: &[f32]) -> (Vec<f32>, usize) {
    mel::log_mel(samples_16k)
}

/// One clip's encoder input.
#[derive(Debug, Clone)]
pub struct AudioFeatures {
    /// `[128, n_frames]` f32.
    pub features: Tensor,
    pub n_frames: usize,
}

impl AudioFeatures {
    /// From 16 kHz mono samples.
    pub fn from_samples_16k(samples: &[f32], device: &Device) -> Result<Self> {
        let (feats, n) = log_mel(samples);
        Ok(Self {
            features: Tensor::from_vec(feats, (N_MELS, n), device)?,
            n_frames: n,
        })
    }

    /// From a file: decode → 16 kHz → log-mel.
    pub fn from_path(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_path_range(path, None, device)
    }

    /// From seconds `range` of a file (all of it for `None`).
    pub fn from_path_range(
        path: impl AsRef<Path>,
        range: Option<&TimeRange>,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        let wave = load_16k_range(path, range)?;
        if n_valid_frames(wave.len()) == 0 {
            return Err(err(
                path,
                match range {
                    Some(r) => format!(
                        "no sound in the time range {}: the audio ends before it; choose --start and \
                         --end inside the clip",
                        r.describe()
                    ),
                    None => "zero-length audio after resampling; pass a longer clip".into(),
                },
            ));
        }
        Self::from_samples_16k(&wave, device)
    }
}

/// Concatenate clips along frames, in prompt order: `(audio_features [128, Σ n], audio_lens)`, the form
/// of the Qwen2.5-Omni processor's `input_features` with its valid frames. `None` for no clips.
pub fn concat_features(clips: &[AudioFeatures]) -> Result<Option<(Tensor, Vec<usize>)>> {
    if clips.is_empty() {
        return Ok(None);
    }
    let ts: Vec<&Tensor> = clips.iter().map(|c| &c.features).collect();
    Ok(Some((
        Tensor::cat(&ts, 1)?,
        clips.iter().map(|c| c.n_frames).collect(),
    )))
}
