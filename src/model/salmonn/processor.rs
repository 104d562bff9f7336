//! video-SALMONN 2+'s processor: media files and a question to the tensors the authors' dataset code
//! (`qwenvl/data/dataset.py`, `LazySupervisedDataset._get_item` with the settings of their `inference.py`)
//! returns, under its names.
//!
//! * Video (`video_torchcodec` + `process_video_frames`): one frame per `base_interval` = 0.1 s of the clip
//!   (`round(length / 0.1)` clamped to [16, 768]), at `unique(linspace(0, frames − 1, n))` (numpy, truncated);
//!   a frame's pixel budget grows as frames get fewer (`0.95 · 768 / n · 61 250`, at least 3 136); the fast
//!   Qwen2-VL image processor resizes each frame (transformers' `smart_resize`, torchvision bicubic),
//!   normalises and patchifies; `second_per_grid_ts = 2 / (n / length)`.
//! * Audio (`process_audio`, on the video file itself for a clip's sound): 16 kHz mono as FFmpeg resamples
//!   (torchcodec), padded to ≥ 1 s, cut into 30-s segments, each a 128-bin Whisper log-mel of 3 000 frames
//!   (the padding of the last segment included); 60 audio tokens per segment.
//! * Prompt (`preprocess_qwen_2_visual`): the system turn "You are a helpful assistant.", the user turn with
//!   each item as `<|vision_start|> … <|vision_end|>` and a newline, then the question, then
//!   `<|im_start|>assistant\n`. A video with its sound interleaves, per temporal grid step, that step's video
//!   tokens and its share of the audio tokens (`split_into_groups`: `⌊2·s·(k+1)⌋ − ⌊2·s·k⌋`, float32 as
//!   torch computes it, the last step takes the rest).
//!
//! The authors' code takes one video (with its own sound), or audio files, or images (with audio files);
//! a video next to an image or a separate audio file is refused here with the way out (their code would drop
//! the image, or put the file's sound into the video's block).
//! <https://github.com/bytedance/video-SALMONN-2/blob/main/video_SALMONN2_plus/qwenvl/data/dataset.py>

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::media::audio::{self, log_mel_padded, N_MELS, SAMPLE_RATE};
use crate::media::prepare::{load_tokenizer, Item, PrepareOptions, Prepared, TimeRange};
use crate::media::video::{
    self, preprocess_frames, Filter, FrameIndex, ImageInputs, VideoInputs, IMAGE_FACTOR,
};
use crate::model::inputs::{insert_patches, insert_videos};
use crate::model::salmonn::config::SalmonnConfig;

/// The system prompt of the authors' dataset code.
pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";
/// `inference.py`: one frame per 0.1 s…
pub const BASE_INTERVAL: f64 = 0.1;
/// …at least 16 and at most 768 frames.
pub const MIN_FRAMES: usize = 16;
pub const MAX_FRAMES: usize = 768;
/// `video_max_frame_pixels` (inference.py) and `video_min_frame_pixels` (DataArguments' default).
pub const FRAME_MAX_PIXELS: f64 = 61_250.0;
pub const FRAME_MIN_PIXELS: f64 = 3_136.0;
/// Images: `max_pixels` (inference.py) and `min_pixels` (DataArguments' default, 28·28·16).
pub const IMAGE_MAX_PIXELS: f64 = 61_250.0;
pub const IMAGE_MIN_PIXELS: f64 = 12_544.0;
/// Samples of one Whisper segment (30 s at 16 kHz) and the audio tokens it gives.
pub const SEGMENT_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
pub const TOKENS_PER_SEGMENT: usize = 60;
/// Mel frames of one segment.
pub const SEGMENT_FRAMES: usize = SEGMENT_SAMPLES / audio::HOP;

/// The sampling settings, from the authors' defaults and the user's overrides (`--fps` sets the interval
/// to `1 / fps`; `--max-pixels`/`--min-pixels` bound a frame at 768 frames and an image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub interval: f64,
    pub frame_min_pixels: f64,
    pub frame_max_pixels: f64,
    pub image_min_pixels: f64,
    pub image_max_pixels: f64,
}

impl Sampling {
    pub fn of(opts: &PrepareOptions) -> Result<Self> {
        let interval = match opts.fps {
            None => BASE_INTERVAL,
            Some(f) if f > 0.0 && f.is_finite() => 1.0 / f,
            Some(f) => {
                return Err(Error::Prompt(format!(
                    "--fps must be > 0, got {f} (video-SALMONN 2+ samples 10 frames per second by default)"
                )))
            }
        };
        let px = |v: Option<usize>, d: f64| v.map_or(d, |v| v as f64);
        Ok(Self {
            interval,
            frame_min_pixels: px(opts.min_pixels, FRAME_MIN_PIXELS),
            frame_max_pixels: px(opts.max_pixels, FRAME_MAX_PIXELS),
            image_min_pixels: px(opts.min_pixels, IMAGE_MIN_PIXELS),
            image_max_pixels: px(opts.max_pixels, IMAGE_MAX_PIXELS),
        })
    }
}

/// Frames to sample from a clip of `length_s` seconds: `min(max(round(length / interval), 16), 768)`
/// (Python's `round`, ties to even).
pub fn frame_count(length_s: f64, interval: f64) -> usize {
    ((length_s / interval).round_ties_even().max(0.0) as usize).clamp(MIN_FRAMES, MAX_FRAMES)
}

/// `np.unique(np.linspace(0, total − 1, n, dtype=int))`: `k · step` truncated, the last exactly `total − 1`.
pub fn frame_indices(total: usize, n: usize) -> Vec<usize> {
    if total == 0 || n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![0];
    }
    let step = (total - 1) as f64 / (n - 1) as f64;
    let mut out: Vec<usize> = (0..n)
        .map(|k| {
            if k == n - 1 {
                total - 1
            } else {
                (k as f64 * step) as usize
            }
        })
        .collect();
    out.dedup();
    out
}

/// A frame's pixel budget for `n` sampled frames: `0.95 · 768 / n · max` below 768 frames.
pub fn frame_max_pixels(n: usize, max: f64) -> f64 {
    if n < MAX_FRAMES {
        0.95 * MAX_FRAMES as f64 / n as f64 * max
    } else {
        max
    }
}

/// transformers' `smart_resize` (Qwen2-VL image processors): unlike qwen-omni-utils' it refuses sides under
/// 28 pixels.
fn hf_smart_resize(
    h: usize,
    w: usize,
    min: f64,
    max: f64,
) -> std::result::Result<(usize, usize), String> {
    if h < IMAGE_FACTOR || w < IMAGE_FACTOR {
        return Err(format!(
            "the picture is {w}x{h}: video-SALMONN 2+'s processor needs both sides ≥ {IMAGE_FACTOR} pixels"
        ));
    }
    video::smart_resize(h, w, IMAGE_FACTOR, min, max)
}

/// One audio item: its 30-s segments' log-mel and its token count.
#[derive(Debug, Clone)]
pub struct AudioSegments {
    /// `[segments, 128, 3000]` row-major.
    pub features: Vec<f32>,
    pub segments: usize,
    /// `ceil(samples / 480 000) · 60`.
    pub tokens: usize,
    /// Seconds of sound before the padding.
    pub seconds: f64,
}

/// `process_audio` on 16 kHz mono samples: pad to ≥ 1 s, cut into 30-s segments, a padded log-mel each.
pub fn audio_segments(wave: &[f32]) -> AudioSegments {
    let seconds = wave.len() as f64 / SAMPLE_RATE as f64;
    let mut padded;
    let wave = if wave.len() < SAMPLE_RATE as usize {
        padded = wave.to_vec();
        padded.resize(SAMPLE_RATE as usize, 0.0);
        &padded[..]
    } else {
        wave
    };
    let segments = wave.len().div_ceil(SEGMENT_SAMPLES);
    let mut features = Vec::with_capacity(segments * N_MELS * SEGMENT_FRAMES);
    for chunk in wave.chunks(SEGMENT_SAMPLES) {
        features.extend(log_mel_padded(chunk, SEGMENT_SAMPLES));
    }
    AudioSegments {
        features,
        segments,
        tokens: segments * TOKENS_PER_SEGMENT,
        seconds,
    }
}

/// `split_into_groups` with `second_per_grid_ts`: the audio tokens of each temporal grid step
/// (`torch.arange(steps) * second * 2` in float32, truncated, differenced; the last step takes the rest).
pub fn audio_per_step(tokens: usize, steps: usize, second: f32) -> Result<Vec<usize>> {
    let at = |k: usize| ((k as f32) * second * 2.0) as i64;
    let mut out: Vec<usize> = (1..steps).map(|k| (at(k) - at(k - 1)) as usize).collect();
    let used: usize = out.iter().sum();
    if used > tokens {
        return Err(Error::Prompt(format!(
            "the clip's sound gives {tokens} audio tokens but its {steps} frame pairs need at least {used}: the \
             audio track is shorter than the video. Fix: pass --no-audio-in-video, or pad the sound to the \
             video's length"
        )));
    }
    out.push(tokens - used);
    Ok(out)
}

/// What one item became.
enum Media {
    Video(VideoInputs, Option<AudioSegments>),
    Audio(AudioSegments),
    Image(ImageInputs),
}

fn inputs_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Inputs {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The authors' sound: 16 kHz mono through FFmpeg's resampler, as torchcodec's `AudioDecoder` gives it, cut
/// to the time range at 16 kHz (their code has no range: this is theirs on the range's samples).
fn load_wave_range(path: &Path, range: Option<&TimeRange>) -> Result<Vec<f32>> {
    let mut wave = audio::load_16k_ffmpeg(path)?;
    if let Some(r) = range {
        let keep = r.samples(audio::SAMPLE_RATE, wave.len());
        wave.truncate(keep.end);
        wave.drain(..keep.start);
    }
    Ok(wave)
}

/// [`load_wave_range`] for an audio item, which must have sound there.
fn load_wave(path: &Path, range: Option<&TimeRange>) -> Result<Vec<f32>> {
    let wave = load_wave_range(path, range)?;
    if let (true, Some(r)) = (wave.is_empty(), range) {
        return Err(inputs_err(
            path,
            format!(
                "has no sound in the time range {}; choose --start and --end inside the clip",
                r.describe()
            ),
        ));
    }
    if wave.is_empty() {
        return Err(inputs_err(
            path,
            "has no audio samples; pass a clip with sound",
        ));
    }
    Ok(wave)
}

/// `video_torchcodec` + `process_video_frames`. A time range is read as a clip of its own frames
/// (qwen-omni-utils' rule picks them: `ceil(start·fps)` ..= `floor(end·fps)`), at the whole stream's rate.
fn prepare_video(path: &Path, s: &Sampling, range: Option<&TimeRange>) -> Result<VideoInputs> {
    let stream = FrameIndex::read(path)?;
    // `num_frames / average_fps`, torchcodec's exact mode: `average_fps = num_frames / (end − begin)` from
    // the packets (the header's rate when they lack timestamps).
    let n_all = stream.total_frames as f64;
    let fps = match stream.content_span {
        Some((begin, end)) => n_all / (end - begin),
        None => stream.fps,
    };
    let (first, last) =
        video::frame_range(stream.total_frames, fps, range).map_err(|e| inputs_err(path, e))?;
    let count = last - first + 1;
    let length = count as f64 / fps;
    let n = frame_count(length, s.interval);
    let indices: Vec<usize> = frame_indices(count, n).iter().map(|i| first + i).collect();
    let max = frame_max_pixels(indices.len(), s.frame_max_pixels);
    let min = s.frame_min_pixels;
    let (frames, _) = stream.decode(
        &indices,
        &|h, w| hf_smart_resize(h, w, min, max),
        Filter::TorchBicubicAaU8,
    )?;
    let fps = indices.len() as f64 / length;
    preprocess_frames(&frames, min, max, fps).map_err(|e| inputs_err(path, e.to_string()))
}

/// Refuses what the authors' code cannot take.
fn check_items(items: &[Item]) -> Result<()> {
    let videos: Vec<&Item> = items
        .iter()
        .filter(|i| matches!(i, Item::Video(_)))
        .collect();
    if videos.len() > 1 {
        return Err(inputs_err(
            videos[1].path(),
            "is a second video: video-SALMONN 2+ takes one video per prompt. Fix: ask about one video at a \
             time, or join the clips (ffmpeg -f concat)",
        ));
    }
    if let Some(v) = videos.first() {
        if let Some(other) = items.iter().find(|i| !matches!(i, Item::Video(_))) {
            let why = match other {
                Item::Audio(_) => {
                    "is a separate audio file next to a video: video-SALMONN 2+ hears a video through its own \
                     sound track. Fix: mux it into the video (ffmpeg -i VIDEO -i AUDIO -map 0:v -map 1:a -c:v \
                     copy OUT.mkv) or ask about the audio alone"
                }
                _ => {
                    "is an image next to a video: video-SALMONN 2+'s processor keeps only one of them. Fix: ask \
                     about the image and the video separately"
                }
            };
            let _ = v;
            return Err(inputs_err(other.path(), why));
        }
    }
    Ok(())
}

/// Decodes and preprocesses the items, builds the ids and the tensors.
pub fn prepare(
    model_dir: &Path,
    cfg: &SalmonnConfig,
    items: &[Item],
    question: &str,
    opts: &PrepareOptions,
    device: &Device,
) -> Result<Prepared> {
    if question.trim().is_empty() {
        return Err(Error::Prompt(
            "the question is empty: pass --question \"…\"".into(),
        ));
    }
    check_items(items)?;
    let sampling = Sampling::of(opts)?;
    let mut notes = Vec::new();
    // A cheap estimate before decoding anything: refuse absurd prompts with the numbers.
    let mut estimate = 0usize;
    for it in items {
        if let Item::Video(p) = it {
            let info = video::probe_video(p)?;
            let n = frame_count(opts.timed_seconds(info.duration_s), sampling.interval);
            let max = frame_max_pixels(n, sampling.frame_max_pixels);
            let (h, w) = hf_smart_resize(
                info.height as usize,
                info.width as usize,
                sampling.frame_min_pixels,
                max,
            )
            .map_err(|e| inputs_err(p, e))?;
            estimate += n.div_ceil(2) * (h / IMAGE_FACTOR) * (w / IMAGE_FACTOR);
            if opts.use_audio_in_video && info.has_audio {
                estimate += (opts.timed_seconds(info.duration_s).max(1.0) / 30.0).ceil() as usize
                    * TOKENS_PER_SEGMENT;
            }
        }
    }
    if estimate > opts.token_budget {
        return Err(Error::TooManyTokens {
            estimate,
            budget: opts.token_budget,
        });
    }
    notes.extend(opts.range_note(items));
    let range = opts.range.as_ref();
    let mut media = Vec::new();
    for it in items {
        match it {
            Item::Video(p) => {
                let v = prepare_video(p, &sampling, range)?;
                let a = if opts.use_audio_in_video {
                    match load_wave_range(p, range) {
                        Ok(w) if !w.is_empty() => Some(audio_segments(&w)),
                        Ok(_) => {
                            notes.push(format!(
                                "{} has no sound {}: using its video only",
                                p.display(),
                                range.map_or("(an empty audio track)".into(), |r| format!(
                                    "in {}",
                                    r.describe()
                                ))
                            ));
                            None
                        }
                        Err(e) if audio::is_no_audio(&e) => {
                            notes.push(format!(
                                "{} has no audio track: using its video only",
                                p.display()
                            ));
                            None
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                media.push(Media::Video(v, a));
            }
            Item::Audio(p) => media.push(Media::Audio(audio_segments(&load_wave(p, range)?))),
            Item::Image(p) => {
                let img = video::load_image(p)?;
                let (h, w) = hf_smart_resize(
                    img.height,
                    img.width,
                    sampling.image_min_pixels,
                    sampling.image_max_pixels,
                )
                .map_err(|e| inputs_err(p, e))?;
                media.push(Media::Image(video::preprocess_image_torchvision(
                    &img, h, w,
                )));
            }
        }
    }
    let input_ids = build_ids(model_dir, cfg, items, question, opts, &media)?;
    let tensors = tensors(&input_ids, &media, device)?;
    Ok(Prepared {
        input_ids,
        tensors,
        notes,
    })
}

/// The prompt's ids: the chat turns tokenised with one placeholder per item, each placeholder then replaced
/// by the item's tokens (added tokens are matched whole, so this equals tokenising the expanded text).
fn build_ids(
    model_dir: &Path,
    cfg: &SalmonnConfig,
    items: &[Item],
    question: &str,
    opts: &PrepareOptions,
    media: &[Media],
) -> Result<Vec<u32>> {
    let tok = load_tokenizer(model_dir)?;
    let t = &cfg.tokens;
    let name = |id: u32| {
        tok.id_to_token(id).ok_or_else(|| Error::Model {
            path: model_dir.to_path_buf(),
            reason: format!("its tokenizer has no token {id}, which config.json names"),
            fix: "use the tokenizer files of the same checkpoint".into(),
        })
    };
    let (start, end) = (name(t.vision_start)?, name(t.vision_end)?);
    let mut user = String::new();
    for it in items {
        let placeholder = match it {
            Item::Video(_) => t.video,
            Item::Audio(_) => t.audio,
            Item::Image(_) => t.image,
        };
        user.push_str(&format!("{start}{}{end}\n", name(placeholder)?));
    }
    user.push_str(question);
    let system = opts.system.as_deref().unwrap_or(DEFAULT_SYSTEM);
    let mut text = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    );
    if let Some(prefix) = &opts.answer_prefix {
        text.push_str(prefix);
    }
    let enc = tok
        .encode(text.as_str(), false)
        .map_err(|e| Error::Other(format!("tokenising the prompt: {e}")))?;
    let merge = cfg.vision.spatial_merge_size * cfg.vision.spatial_merge_size;
    let mut media_iter = media.iter();
    let mut out = Vec::with_capacity(enc.get_ids().len());
    let mut after_start = false;
    for &id in enc.get_ids() {
        let placeholder = after_start && (id == t.video || id == t.audio || id == t.image);
        after_start = id == t.vision_start;
        if !placeholder {
            out.push(id);
            continue;
        }
        let m = media_iter.next().ok_or_else(|| {
            Error::Prompt("the question holds a media placeholder token; remove it".into())
        })?;
        match m {
            Media::Video(v, a) => {
                let g = v.video_grid_thw;
                let per_step = g[1] * g[2] / merge;
                match a {
                    None => out.extend(std::iter::repeat_n(t.video, g[0] * per_step)),
                    Some(a) => {
                        let second = v.video_second_per_grid as f32;
                        for n in audio_per_step(a.tokens, g[0], second)? {
                            out.extend(std::iter::repeat_n(t.video, per_step));
                            out.extend(std::iter::repeat_n(t.audio, n));
                        }
                    }
                }
            }
            Media::Audio(a) => out.extend(std::iter::repeat_n(t.audio, a.tokens)),
            Media::Image(im) => {
                let g = im.image_grid_thw;
                out.extend(std::iter::repeat_n(t.image, g[0] * g[1] * g[2] / merge));
            }
        }
    }
    if media_iter.next().is_some() {
        return Err(Error::Prompt(
            "the prompt has fewer media placeholders than items (a token of the question merged with one?)"
                .into(),
        ));
    }
    Ok(out)
}

/// The dataset code's tensors for the ids and the media.
fn tensors(ids: &[u32], media: &[Media], device: &Device) -> Result<HashMap<String, Tensor>> {
    let n = ids.len();
    let mut m = HashMap::new();
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    m.insert("input_ids".into(), Tensor::from_vec(ids64, (1, n), device)?);
    m.insert(
        "attention_mask".into(),
        Tensor::ones((1, n), DType::I64, device)?,
    );
    let (mut pv, mut vg, mut spg, mut pi, mut ig) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut feats, mut segments, mut lengths) = (Vec::new(), 0usize, Vec::new());
    let mut add_audio = |a: &AudioSegments| {
        feats.extend_from_slice(&a.features);
        segments += a.segments;
        lengths.push(a.tokens as i64);
    };
    for item in media {
        match item {
            Media::Video(v, a) => {
                pv.push(v.to_tensor(device)?);
                vg.extend(v.video_grid_thw.iter().map(|&x| x as i64));
                spg.push(v.video_second_per_grid);
                if let Some(a) = a {
                    add_audio(a);
                }
            }
            Media::Audio(a) => add_audio(a),
            Media::Image(im) => {
                pi.push(im.to_tensor(device)?);
                ig.extend(im.image_grid_thw.iter().map(|&x| x as i64));
            }
        }
    }
    insert_videos(&mut m, &pv, vg, ("second_per_grid_ts", spg), device)?;
    insert_patches(&mut m, ("pixel_values", "image_grid_thw"), &pi, ig, device)?;
    if segments > 0 {
        m.insert(
            "audio_feature".into(),
            Tensor::from_vec(feats, (segments, N_MELS, SEGMENT_FRAMES), device)?,
        );
        let k = lengths.len();
        m.insert(
            "audio_lengths".into(),
            Tensor::from_vec(lengths, k, device)?,
        );
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sampling_follows_numpy_and_the_defaults() {
        // 4 s at 0.1 s: 40 frames of 40; 1 s: 16 frames (the minimum) of 10, deduplicated.
        assert_eq!(frame_count(4.0, 0.1), 40);
        assert_eq!(frame_count(1.0, 0.1), 16);
        assert_eq!(frame_count(7200.0, 0.1), 768);
        assert_eq!(frame_indices(40, 40), (0..40).collect::<Vec<_>>());
        assert_eq!(frame_indices(10, 16), (0..10).collect::<Vec<_>>());
        // np.linspace(0, 99, 16, dtype=int)
        assert_eq!(
            frame_indices(100, 16),
            vec![0, 6, 13, 19, 26, 33, 39, 46, 52, 59, 66, 72, 79, 85, 92, 99]
        );
        assert!((frame_max_pixels(40, 61250.0) - 0.95 * 768.0 / 40.0 * 61250.0).abs() < 1e-6);
        assert_eq!(frame_max_pixels(768, 61250.0), 61250.0);
    }

    #[test]
    fn audio_tokens_split_per_grid_step_as_torch() {
        // 4 s: 60 tokens over 20 steps of 0.2 s: ⌊0.4(k+1)⌋ − ⌊0.4k⌋, the last step the rest.
        let s = audio_per_step(60, 20, 0.2).unwrap();
        assert_eq!(s.len(), 20);
        assert_eq!(s.iter().sum::<usize>(), 60);
        assert_eq!(&s[..5], &[0, 0, 1, 0, 1]);
        assert!(audio_per_step(2, 20, 1.0).is_err());
    }

    #[test]
    fn short_sound_is_padded_to_one_second_and_one_segment() {
        let a = audio_segments(&vec![0.1f32; 8000]);
        assert_eq!((a.segments, a.tokens), (1, 60));
        assert_eq!(a.features.len(), N_MELS * SEGMENT_FRAMES);
        let b = audio_segments(&vec![0.0f32; SEGMENT_SAMPLES + 1]);
        assert_eq!((b.segments, b.tokens), (2, 120));
    }
}
