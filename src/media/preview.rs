//! What the app's media timeline draws, taken from a prepared prompt: the frames the model saw (rebuilt
//! from `pixel_values_videos`, so they are exactly the sampled, resized frames and cost no second decode)
//! as small thumbnails at their times, the 16 kHz waveform as a min/max envelope, the Whisper log-mel the
//! audio tower read, and every media position's time range (the token map).
//!
//! Everything here is small and plain (no tensors), so it travels from the worker to the UI in one event.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::media::audio::{HOP, N_MELS, SAMPLE_RATE};
use crate::media::prepare::Item;
use crate::media::video::{
    resize, RgbFrame, CLIP_MEAN, CLIP_STD, MERGE_SIZE, PATCH_DIM, PATCH_SIZE, TEMPORAL_PATCH_SIZE,
};
use crate::prompt::TokenMap;

/// Thumbnails are at most this many pixels high and wide: enough to recognise a scene on the timeline,
/// small enough that 240 of them cost ~7 MB in the event.
pub const THUMB_MAX_HEIGHT: usize = 72;
pub const THUMB_MAX_WIDTH: usize = 128;
/// More sampled frames than this (long clips: up to 768) are thinned evenly for the timeline.
pub const MAX_THUMBNAILS: usize = 240;
/// Waveform bins of 10 ms (the mel hop), so the envelope and the spectrogram line up column for column.
pub const WAVE_BIN: usize = HOP;
/// Longer spectrograms are averaged down to this many columns (24 s at full resolution).
pub const MAX_MEL_COLUMNS: usize = 2400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Video,
    Audio,
    Image,
}

impl ItemKind {
    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Video => "video",
            ItemKind::Audio => "audio",
            ItemKind::Image => "image",
        }
    }
}

/// One sampled frame, shrunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    /// Seconds from the item's start, on the model's clock (`k / fps_used`, the clock TMRoPE uses).
    pub time_s: f64,
    pub image: RgbFrame,
}

/// Min/max of the 16 kHz mono waveform per [`WAVE_BIN`] samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Waveform {
    pub bin_seconds: f64,
    pub bins: Vec<[f32; 2]>,
    pub seconds: f64,
}

/// The log-mel features the audio tower read (valid frames only), possibly averaged over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    pub n_mels: usize,
    pub columns: usize,
    /// Row-major `[n_mels, columns]`, mel bin 0 (lowest frequency) first.
    pub values: Vec<f32>,
    pub column_seconds: f64,
}

impl Spectrogram {
    pub fn seconds(&self) -> f64 {
        self.columns as f64 * self.column_seconds
    }
}

/// Media tokens of one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub video: usize,
    pub audio: usize,
    pub image: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemPreview {
    pub kind: ItemKind,
    pub path: PathBuf,
    /// Seconds the item covers on the timeline (0 for an image).
    pub duration_s: f64,
    pub frames: Vec<Thumbnail>,
    /// Sampled frames in all (the thumbnails may be fewer).
    pub n_frames: usize,
    /// Frames per second the video was sampled at.
    pub fps_used: Option<f64>,
    /// `(height, width)` of the frames the vision tower saw.
    pub frame_size: Option<(usize, usize)>,
    pub waveform: Option<Waveform>,
    pub mel: Option<Spectrogram>,
    pub tokens: TokenCounts,
}

/// A media position and the seconds it covers (from the token map).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaSpan {
    pub position: usize,
    pub item: usize,
    pub start_s: f64,
    pub end_s: f64,
    pub audio: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MediaPreview {
    pub items: Vec<ItemPreview>,
    /// Audio and video are interleaved in chunks of this many seconds.
    pub seconds_per_chunk: f64,
    pub spans: Vec<MediaSpan>,
    /// From `prepare` (e.g. "no audio track: using its video only").
    pub notes: Vec<String>,
    pub question: String,
    /// Wall time of prepare + writing the inputs file.
    pub prepare_seconds: f32,
}

impl MediaPreview {
    /// The longest item: the length of the shared time axis.
    pub fn duration_s(&self) -> f64 {
        self.items.iter().map(|i| i.duration_s).fold(0.0, f64::max)
    }
}

/// Frame `f` of a patchified video (`pixel_values_videos` rows of one item, grid `[t, h, w]` in patches),
/// un-normalised back to 8-bit RGB: the inverse of the processor's `patchify` (see `video::patchify`).
pub fn frame_of(pixel_values: &[f32], grid: [usize; 3], f: usize) -> RgbFrame {
    let [_, gh, gw] = grid;
    let (h, w) = (gh * PATCH_SIZE, gw * PATCH_SIZE);
    let mut data = vec![0u8; h * w * 3];
    let (t, tp) = (f / TEMPORAL_PATCH_SIZE, f % TEMPORAL_PATCH_SIZE);
    let per_t = gh * gw;
    let plane = PATCH_SIZE * PATCH_SIZE;
    let scale: [f32; 3] = std::array::from_fn(|c| (CLIP_STD[c] * 255.0) as f32);
    let shift: [f32; 3] = std::array::from_fn(|c| (CLIP_MEAN[c] * 255.0) as f32);
    let mut row = t * per_t;
    for bh in 0..gh / MERGE_SIZE {
        for bw in 0..gw / MERGE_SIZE {
            for mh in 0..MERGE_SIZE {
                for mw in 0..MERGE_SIZE {
                    let y0 = (bh * MERGE_SIZE + mh) * PATCH_SIZE;
                    let x0 = (bw * MERGE_SIZE + mw) * PATCH_SIZE;
                    let base = row * PATCH_DIM;
                    for c in 0..3 {
                        let off = base + (c * TEMPORAL_PATCH_SIZE + tp) * plane;
                        for py in 0..PATCH_SIZE {
                            for px in 0..PATCH_SIZE {
                                let v = pixel_values.get(off + py * PATCH_SIZE + px).copied();
                                let v = v.unwrap_or(0.0) * scale[c] + shift[c];
                                data[((y0 + py) * w + x0 + px) * 3 + c] =
                                    v.round().clamp(0.0, 255.0) as u8;
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }
    RgbFrame {
        width: w,
        height: h,
        data,
    }
}

/// Size of a thumbnail: the frame scaled down (never up) to fit [`THUMB_MAX_HEIGHT`] × [`THUMB_MAX_WIDTH`],
/// keeping its aspect.
pub fn thumbnail_size(height: usize, width: usize) -> (usize, usize) {
    if height == 0 || width == 0 {
        return (0, 0);
    }
    let s = (THUMB_MAX_HEIGHT as f64 / height as f64)
        .min(THUMB_MAX_WIDTH as f64 / width as f64)
        .min(1.0);
    let h = ((height as f64 * s).round() as usize).max(1);
    let w = ((width as f64 * s).round() as usize).max(1);
    (h, w)
}

/// A frame shrunk with the antialiased bicubic the video pipeline uses (no aliasing on fine detail).
pub fn thumbnail(frame: &RgbFrame) -> RgbFrame {
    let (h, w) = thumbnail_size(frame.height, frame.width);
    resize::resize(frame, h, w, resize::Filter::TorchBicubicAa)
}

/// `max` indices spread evenly over `0..n` (all of them when `n ≤ max`), first and last included.
pub fn thumbnail_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    if max <= 1 {
        return vec![0; max.min(n)];
    }
    (0..max)
        .map(|i| ((i * (n - 1)) as f64 / (max - 1) as f64).round() as usize)
        .collect()
}

/// `[min, max]` of every `per_bin` samples (the last bin may be shorter).
pub fn minmax_bins(samples: &[f32], per_bin: usize) -> Vec<[f32; 2]> {
    samples
        .chunks(per_bin.max(1))
        .map(|c| {
            c.iter()
                .fold([f32::INFINITY, f32::NEG_INFINITY], |[lo, hi], &s| {
                    [lo.min(s), hi.max(s)]
                })
        })
        .collect()
}

/// The valid frames `[n_mels, n_frames]` of one clip (row stride `stride`), averaged over groups of
/// frames when there are more than `max_columns`.
pub fn spectrogram(
    values: &[f32],
    n_mels: usize,
    n_frames: usize,
    stride: usize,
    max_columns: usize,
) -> Spectrogram {
    let group = n_frames.div_ceil(max_columns.max(1)).max(1);
    let columns = n_frames.div_ceil(group);
    let mut out = Vec::with_capacity(n_mels * columns);
    for m in 0..n_mels {
        let row = values.get(m * stride..m * stride + n_frames).unwrap_or(&[]);
        for c in 0..columns {
            let part = row.get(c * group..((c + 1) * group).min(row.len()));
            let part = part.unwrap_or(&[]);
            let mean = if part.is_empty() {
                0.0
            } else {
                part.iter().sum::<f32>() / part.len() as f32
            };
            out.push(mean);
        }
    }
    Spectrogram {
        n_mels,
        columns,
        values: out,
        column_seconds: group as f64 * HOP as f64 / SAMPLE_RATE as f64,
    }
}

/// One video's patches as the vision tower read them.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoView {
    /// `[t, h, w]` in patches.
    pub grid: [usize; 3],
    /// Seconds one temporal grid step covers.
    pub second_per_grid: f64,
    /// `t·h·w` rows of [`PATCH_DIM`] values (the processor's `pixel_values_videos` rows of this video).
    pub patches: Vec<f32>,
}

/// One image's patches.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageView {
    pub grid: [usize; 3],
    pub patches: Vec<f32>,
}

/// One audio clip's log-mel as the audio tower read it (valid frames only).
#[derive(Debug, Clone, PartialEq)]
pub struct MelView {
    /// Row-major `[N_MELS, frames]`.
    pub values: Vec<f32>,
    pub frames: usize,
}

/// What the timeline needs of a prompt's processor tensors, whatever the family named them: the videos,
/// images and audio clips in prompt order (a video's own sound is one of the clips).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaViews {
    pub videos: Vec<VideoView>,
    pub images: Vec<ImageView>,
    pub audio: Vec<MelView>,
}

/// A processor's flattened patch rows (`pixel_values` / `pixel_values_videos`, `[Σ t·h·w, PATCH_DIM]`)
/// cut per item by its `[t, h, w]` grid, in f32; no tensor gives no rows. Both families' processors lay
/// pixels out this way.
pub fn patches_by_grid(
    pixels: Option<&candle_core::Tensor>,
    grids: &[[usize; 3]],
) -> Result<Vec<([usize; 3], Vec<f32>)>> {
    let all: Vec<f32> = match pixels {
        Some(t) => t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?,
        None => Vec::new(),
    };
    let pd = crate::media::video::PATCH_DIM;
    let mut row = 0;
    Ok(grids
        .iter()
        .map(|&g| {
            let rows = g.iter().product::<usize>();
            let part = all
                .get(row * pd..(row + rows) * pd)
                .unwrap_or_default()
                .to_vec();
            row += rows;
            (g, part)
        })
        .collect())
}

/// The timeline of a prepared prompt: `views` are its media tensors, `map` its token map. `load_16k`
/// decodes an item's sound for the waveform (the library's `audio::load_16k`; a parameter so tests need no
/// file).
pub fn build(
    views: &MediaViews,
    map: &TokenMap,
    items: &[Item],
    question: &str,
    notes: &[String],
    load_16k: &dyn Fn(&Path) -> Result<Vec<f32>>,
) -> Result<MediaPreview> {
    let counts = |k: usize| {
        let mut c = TokenCounts::default();
        for t in map.tokens.iter().filter(|t| t.item == Some(k)) {
            match t.group.as_str() {
                "video" => c.video += 1,
                "audio" => c.audio += 1,
                "image" => c.image += 1,
                _ => {}
            }
        }
        c
    };
    let (mut vi, mut ii, mut ai) = (0usize, 0usize, 0usize);
    let mut out = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let tokens = counts(k);
        let (kind, path) = match item {
            Item::Video(p) => (ItemKind::Video, p),
            Item::Audio(p) => (ItemKind::Audio, p),
            Item::Image(p) => (ItemKind::Image, p),
        };
        let mut preview = ItemPreview {
            kind,
            path: path.clone(),
            duration_s: 0.0,
            frames: Vec::new(),
            n_frames: 0,
            fps_used: None,
            frame_size: None,
            waveform: None,
            mel: None,
            tokens,
        };
        match kind {
            ItemKind::Video => {
                let v = views
                    .videos
                    .get(vi)
                    .ok_or_else(|| Error::Prompt(format!("video {k} has no video_grid_thw row")))?;
                let grid = v.grid;
                if v.patches.len() < grid.iter().product::<usize>() * PATCH_DIM {
                    return Err(Error::Prompt(format!(
                        "pixel_values_videos is short for video {k}"
                    )));
                }
                let fps = TEMPORAL_PATCH_SIZE as f64 / v.second_per_grid;
                let n = grid[0] * TEMPORAL_PATCH_SIZE;
                preview.frames = thumbnail_indices(n, MAX_THUMBNAILS)
                    .into_iter()
                    .map(|f| Thumbnail {
                        time_s: f as f64 / fps,
                        image: thumbnail(&frame_of(&v.patches, grid, f)),
                    })
                    .collect();
                preview.n_frames = n;
                preview.fps_used = Some(fps);
                preview.frame_size = Some((grid[1] * PATCH_SIZE, grid[2] * PATCH_SIZE));
                preview.duration_s = n as f64 / fps;
                vi += 1;
            }
            ItemKind::Image => {
                let im = views
                    .images
                    .get(ii)
                    .ok_or_else(|| Error::Prompt(format!("image {k} has no image_grid_thw row")))?;
                let grid = im.grid;
                if im.patches.len() < grid.iter().product::<usize>() * PATCH_DIM {
                    return Err(Error::Prompt(format!(
                        "pixel_values is short for image {k}"
                    )));
                }
                preview.frames = vec![Thumbnail {
                    time_s: 0.0,
                    image: thumbnail(&frame_of(&im.patches, grid, 0)),
                }];
                preview.n_frames = 1;
                preview.frame_size = Some((grid[1] * PATCH_SIZE, grid[2] * PATCH_SIZE));
                ii += 1;
            }
            ItemKind::Audio => {}
        }
        if tokens.audio > 0 {
            let empty = MelView {
                values: Vec::new(),
                frames: 0,
            };
            let mel = views.audio.get(ai).unwrap_or(&empty);
            let spec = spectrogram(&mel.values, N_MELS, mel.frames, mel.frames, MAX_MEL_COLUMNS);
            let wave = load_16k(path)?;
            let seconds = wave.len() as f64 / SAMPLE_RATE as f64;
            preview.waveform = Some(Waveform {
                bin_seconds: WAVE_BIN as f64 / SAMPLE_RATE as f64,
                bins: minmax_bins(&wave, WAVE_BIN),
                seconds,
            });
            preview.duration_s = preview.duration_s.max(seconds).max(spec.seconds());
            preview.mel = Some(spec);
            ai += 1;
        }
        out.push(preview);
    }
    let spans = map
        .tokens
        .iter()
        .filter_map(|t| {
            let [s, e] = t.time?;
            Some(MediaSpan {
                position: t.position,
                item: t.item?,
                start_s: s,
                end_s: e,
                audio: t.group == "audio",
            })
        })
        .collect();
    Ok(MediaPreview {
        items: out,
        seconds_per_chunk: map.seconds_per_chunk,
        spans,
        notes: notes.to_vec(),
        question: question.to_string(),
        prepare_seconds: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::video::preprocess_frames;

    fn frame(h: usize, w: usize, seed: u8) -> RgbFrame {
        let data = (0..h * w * 3)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect();
        RgbFrame {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn frames_come_back_from_the_patches() {
        // 56×56 = the lowest pixel count, so the processor does not resize.
        let frames: Vec<RgbFrame> = (0..4).map(|k| frame(56, 56, k * 40)).collect();
        let v = preprocess_frames(&frames, 3136.0, 3136.0 * 4.0, 2.0).expect("patchify");
        assert_eq!(v.video_grid_thw, [2, 4, 4]);
        for (f, want) in frames.iter().enumerate() {
            let got = frame_of(&v.pixel_values_videos, v.video_grid_thw, f);
            assert_eq!((got.height, got.width), (56, 56));
            let worst = got
                .data
                .iter()
                .zip(&want.data)
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert_eq!(worst, Some(0), "frame {f}");
        }
    }

    #[test]
    fn thumbnails_fit_the_box_and_keep_the_aspect() {
        assert_eq!(thumbnail_size(280, 392), (72, 101));
        assert_eq!(thumbnail_size(56, 56), (56, 56));
        assert_eq!(thumbnail_size(1080, 1920), (72, 128));
        assert_eq!(thumbnail_size(0, 10), (0, 0));
        let t = thumbnail(&frame(280, 392, 1));
        assert_eq!((t.height, t.width, t.data.len()), (72, 101, 72 * 101 * 3));
    }

    #[test]
    fn long_clips_are_thinned_evenly() {
        assert_eq!(thumbnail_indices(3, 5), vec![0, 1, 2]);
        assert_eq!(thumbnail_indices(9, 3), vec![0, 4, 8]);
        let many = thumbnail_indices(768, MAX_THUMBNAILS);
        assert_eq!(many.len(), MAX_THUMBNAILS);
        assert_eq!((many[0], many[MAX_THUMBNAILS - 1]), (0, 767));
        assert!(many.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn envelope_bins_and_averaged_spectrogram() {
        let s = [0.1, -0.5, 0.3, 0.9, -0.2];
        assert_eq!(
            minmax_bins(&s, 2),
            vec![[-0.5, 0.1], [0.3, 0.9], [-0.2, -0.2]]
        );
        assert!(minmax_bins(&[], 4).is_empty());
        // 2 mel rows of 5 frames, stride 6, at most 2 columns → groups of 3 frames.
        let v = [1., 2., 3., 4., 5., 99., 10., 20., 30., 40., 50., 99.];
        let sp = spectrogram(&v, 2, 5, 6, 2);
        assert_eq!(
            (sp.columns, sp.values.clone()),
            (2, vec![2., 4.5, 20., 45.])
        );
        assert!((sp.column_seconds - 0.03).abs() < 1e-12);
        let full = spectrogram(&v, 2, 5, 6, 100);
        assert_eq!(full.columns, 5);
        assert!((full.seconds() - 0.05).abs() < 1e-12);
    }
}
