//! Video and image → Qwen2.5-Omni vision inputs, as qwen-omni-utils (`v2_5/vision_process.py`:
//! `fetch_video`, `fetch_image`) followed by transformers' `Qwen2VLVideoProcessor` / `Qwen2VLImageProcessor`
//! (what `Qwen2_5OmniProcessor` wraps) produce them.
//!
//! Pipeline: [`probe_video`] (cheap) → [`estimate_tokens`] (refuse over budget before decoding) →
//! [`sample_video`] (qwen-omni-utils: frame count + indices, decode only those frames, resize each as it is
//! decoded, so memory is `nframes × resized frame` plus one full-size frame, whatever the resolution) →
//! [`preprocess_video`] (the processor: rescale, CLIP normalise, patchify into `pixel_values_videos`).
//! Images: [`load_image`] → [`preprocess_image`].
//!
//! Frame count and timestamps: qwen-omni-utils' torchvision reader decoded every frame, so `total_frames` is
//! the number of frames in the stream and `video_fps` the stream's average frame rate (PyAV
//! `average_rate`). We count the video packets by demuxing (no decoding) and take the i-th frame in
//! presentation order (sorted timestamps). For a variable-frame-rate clip this is exactly what the
//! reference does: indices are positions in the frame sequence (not times), and `fps` is the container's
//! average rate, so a VFR clip is sampled uniformly over its frames, not over wall-clock time.
//! `timestamps_s` reports each sampled frame's real presentation time.

mod decode;
pub mod resize;

use std::path::Path;

use candle_core::{Device, Tensor};

pub use resize::{smart_resize, Filter};

use crate::media::prepare::TimeRange;
use crate::{Error, Result};

/// qwen-omni-utils constants (v2_5/vision_process.py).
pub const FPS: f64 = 2.0;
pub const FRAME_FACTOR: usize = 2;
pub const FPS_MIN_FRAMES: usize = 4;
pub const FPS_MAX_FRAMES: usize = 768;
pub const PATCH_SIZE: usize = 14;
pub const MERGE_SIZE: usize = 2;
pub const TEMPORAL_PATCH_SIZE: usize = 2;
/// `patch_size * merge_size`: sizes are multiples of this.
pub const IMAGE_FACTOR: usize = PATCH_SIZE * MERGE_SIZE;
pub const VIDEO_MIN_PIXELS: usize = 128 * IMAGE_FACTOR * IMAGE_FACTOR;
pub const VIDEO_MAX_PIXELS: usize = 768 * IMAGE_FACTOR * IMAGE_FACTOR;
/// `MODEL_SEQ_LEN (128000) * 28 * 28 * 0.9`, qwen-omni-utils' default `total_pixels`.
pub const VIDEO_TOTAL_PIXELS: f64 = 128000.0 * 784.0 * 0.9;
pub const IMAGE_MIN_PIXELS: usize = 4 * IMAGE_FACTOR * IMAGE_FACTOR;
pub const IMAGE_MAX_PIXELS: usize = 16384 * IMAGE_FACTOR * IMAGE_FACTOR;
/// One patch row: channels × temporal_patch_size × patch × patch.
pub const PATCH_DIM: usize = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE;
/// transformers `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// A packed RGB24 picture, rows top to bottom (`data.len() == width * height * 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// The stream's average frame rate (what the reference uses as `video_fps`).
    pub fps: f64,
    pub duration_s: f64,
    /// Frame count from the container header, else `duration × fps` (exact count needs a demux pass).
    pub n_frames_estimate: usize,
    pub has_audio: bool,
}

/// Per-request options, named as qwen-omni-utils' message keys (`fps`, `min_pixels`, `max_pixels`,
/// `total_pixels`). `None` = the qwen-omni-utils default.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    pub fps: f64,
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    pub total_pixels: Option<f64>,
    /// qwen-omni-utils' `video_start`/`video_end`: sample only the frames of these seconds.
    pub range: Option<TimeRange>,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            fps: FPS,
            min_pixels: None,
            max_pixels: None,
            total_pixels: None,
            range: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    pub min_pixels: usize,
    pub max_pixels: usize,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            min_pixels: IMAGE_MIN_PIXELS,
            max_pixels: IMAGE_MAX_PIXELS,
        }
    }
}

/// qwen-omni-utils `fetch_video` output: sampled frames, already resized (smart_resize + bicubic).
#[derive(Debug, Clone)]
pub struct SampledVideo {
    pub frames: Vec<RgbFrame>,
    /// Presentation time of each sampled frame, seconds from the stream start.
    pub timestamps_s: Vec<f64>,
    /// Frame indices (positions in the stream), `torch.linspace(first, last, nframes).round()` over the
    /// whole clip or its time range.
    pub indices: Vec<usize>,
    /// Frames in the clip, or in its time range.
    pub total_frames: usize,
    /// The stream's average frame rate.
    pub video_fps: f64,
    /// qwen-omni-utils `sample_fps = nframes / total_frames * video_fps`.
    pub fps_used: f64,
    /// The `min_pixels`/`max_pixels` fetch_video resized with; the processor must be given the same.
    pub min_pixels: f64,
    pub max_pixels: f64,
}

/// Processor output for one video: `pixel_values_videos` `[rows, PATCH_DIM]` row-major.
#[derive(Debug, Clone)]
pub struct VideoInputs {
    pub pixel_values_videos: Vec<f32>,
    pub video_grid_thw: [usize; 3],
    /// `temporal_patch_size / fps_used`.
    pub video_second_per_grid: f64,
}

/// Processor output for one image: `pixel_values` `[rows, PATCH_DIM]` row-major.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub pixel_values: Vec<f32>,
    pub image_grid_thw: [usize; 3],
}

impl VideoInputs {
    pub fn rows(&self) -> usize {
        self.video_grid_thw.iter().product()
    }
    /// LLM tokens: grid / merge².
    pub fn n_tokens(&self) -> usize {
        self.rows() / (MERGE_SIZE * MERGE_SIZE)
    }
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.pixel_values_videos,
            (self.rows(), PATCH_DIM),
            device,
        )?)
    }
}

impl ImageInputs {
    pub fn rows(&self) -> usize {
        self.image_grid_thw.iter().product()
    }
    pub fn n_tokens(&self) -> usize {
        self.rows() / (MERGE_SIZE * MERGE_SIZE)
    }
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.pixel_values,
            (self.rows(), PATCH_DIM),
            device,
        )?)
    }
}

/// Header-only look at a video file (no decoding).
pub fn probe_video(path: &Path) -> Result<VideoInfo> {
    let o = decode::open(path)?;
    let n_frames_estimate = if o.stream_frames > 0 {
        o.stream_frames as usize
    } else {
        (o.duration_s * o.avg_fps).round().max(0.0) as usize
    };
    Ok(VideoInfo {
        width: o.width,
        height: o.height,
        fps: o.avg_fps,
        duration_s: o.duration_s,
        n_frames_estimate,
        has_audio: o.has_audio,
    })
}

fn ceil_by(x: f64, f: usize) -> f64 {
    (x / f as f64).ceil() * f as f64
}
fn floor_by(x: f64, f: usize) -> f64 {
    (x / f as f64).floor() * f as f64
}

/// qwen-omni-utils `smart_nframes` for the `fps` form (min_frames 4, max_frames min(768, total)).
pub fn smart_nframes(
    total_frames: usize,
    video_fps: f64,
    fps: f64,
) -> std::result::Result<usize, String> {
    let min_frames = ceil_by(FPS_MIN_FRAMES as f64, FRAME_FACTOR);
    let max_frames = floor_by(FPS_MAX_FRAMES.min(total_frames) as f64, FRAME_FACTOR);
    let total = total_frames as f64;
    let n = total / video_fps * fps;
    let n = n.max(min_frames).min(max_frames).min(total);
    let n = floor_by(n, FRAME_FACTOR);
    if !(FRAME_FACTOR as f64 <= n && n <= total) {
        return Err(format!(
            "nframes should be in [{FRAME_FACTOR}, {total_frames}], got {n}: the clip has too few frames. Fix: \
             a clip needs at least {FRAME_FACTOR} frames; pass a single picture with --image"
        ));
    }
    Ok(n as usize)
}

/// `torch.linspace(0, total-1, n).round().long()` (float32 linspace, round half to even).
pub fn sample_indices(total_frames: usize, nframes: usize) -> Vec<usize> {
    linspace_indices(0, total_frames.saturating_sub(1), nframes)
}

/// `torch.linspace(first, last, n).round().long()`: ATen's float32 linspace (the first half counts up from
/// `first`, the second half down from `last`), rounded half to even.
pub fn linspace_indices(first: usize, last: usize, nframes: usize) -> Vec<usize> {
    let (start, end) = (first as f32, last as f32);
    if nframes == 1 {
        return vec![first];
    }
    let step = (end - start) / (nframes - 1) as f32;
    let half = nframes / 2;
    (0..nframes)
        .map(|i| {
            let v = if i < half {
                start + i as f32 * step
            } else {
                end - step * (nframes - 1 - i) as f32
            };
            v.round_ties_even().max(0.0) as usize
        })
        .collect()
}

/// qwen-omni-utils' `calculate_video_frame_range` (its decord and torchcodec readers): the first and last
/// frame of `range` in a stream of `total_frames` at `video_fps` — `ceil(start·fps)` and
/// `min(floor(end·fps), total − 1)`, both times clamped to the clip — or an error when no two frames lie
/// inside it.
pub fn frame_range(
    total_frames: usize,
    video_fps: f64,
    range: Option<&TimeRange>,
) -> std::result::Result<(usize, usize), String> {
    let last = total_frames.saturating_sub(1);
    let Some(r) = range else {
        return Ok((0, last));
    };
    if total_frames == 0 || video_fps <= 0.0 {
        return Err("the stream has no frames or no frame rate to place a time range in".into());
    }
    let duration = total_frames as f64 / video_fps;
    let start = r.start.clamp(0.0, duration);
    let first = (start * video_fps).ceil() as usize;
    let end = r.end.map_or(duration, |e| e.clamp(0.0, duration));
    let end_frame = r
        .end
        .map_or(last, |_| ((end * video_fps).floor() as usize).min(last));
    if first >= end_frame {
        return Err(format!(
            "the time range {} holds no two frames: frame {first} (at {start} s) is not before frame \
             {end_frame} (at {end} s); the clip lasts {duration:.2} s ({total_frames} frames at {video_fps:.3} \
             fps). Fix: choose --start and --end inside the clip, at least two frames apart",
            r.describe()
        ));
    }
    Ok((first, end_frame))
}

/// fetch_video's per-frame pixel bounds for `nframes` frames: `(min_pixels, max_pixels)`.
pub fn video_pixel_bounds(opts: &VideoOptions, nframes: usize) -> (f64, f64) {
    let min_pixels = opts.min_pixels.unwrap_or(VIDEO_MIN_PIXELS) as f64;
    let total_pixels = opts.total_pixels.unwrap_or(VIDEO_TOTAL_PIXELS);
    let max_pixels = (VIDEO_MAX_PIXELS as f64)
        .min(total_pixels / nframes as f64 * FRAME_FACTOR as f64)
        .max((min_pixels * 1.05).floor());
    let max_pixels = match opts.max_pixels {
        Some(m) => (m as f64).min(max_pixels),
        None => max_pixels,
    };
    (min_pixels, max_pixels)
}

/// LLM tokens a video will cost, from the header only: `nframes/2 × (h/28) × (w/28)`. Exact when the
/// header's frame count is (mkv/mp4 usually); otherwise from duration × fps.
pub fn estimate_tokens(info: &VideoInfo, opts: &VideoOptions) -> Result<usize> {
    let fail = |reason: String| Error::Other(format!("cannot estimate video tokens: {reason}"));
    if info.fps <= 0.0 {
        return Err(fail("the stream reports no frame rate".into()));
    }
    let (first, last) =
        frame_range(info.n_frames_estimate, info.fps, opts.range.as_ref()).map_err(fail)?;
    let nframes = smart_nframes(last - first + 1, info.fps, opts.fps).map_err(fail)?;
    let (min_p, max_p) = video_pixel_bounds(opts, nframes);
    let (h, w) = smart_resize(
        info.height as usize,
        info.width as usize,
        IMAGE_FACTOR,
        min_p,
        max_p,
    )
    .map_err(fail)?;
    Ok(nframes / TEMPORAL_PATCH_SIZE * (h / IMAGE_FACTOR) * (w / IMAGE_FACTOR))
}

/// qwen-omni-utils `fetch_video`: picks `nframes` frames as `smart_nframes` + linspace does, decodes only
/// those (seeking in long clips), converts to RGB (swscale) and resizes each with torchvision's bicubic +
/// antialias as soon as it is decoded.
pub fn sample_video(path: &Path, opts: &VideoOptions) -> Result<SampledVideo> {
    let err = |reason: String| decode::err(path, reason);
    if !(opts.fps > 0.0 && opts.fps.is_finite()) {
        return Err(err(format!("sampling fps must be > 0, got {}", opts.fps)));
    }
    let stream = FrameIndex::read(path)?;
    let video_fps = stream.fps;
    // A time range samples its own frames as if they were the clip (qwen-omni-utils: `total_frames` is
    // the range's count from then on, and so is `sample_fps`).
    let (first, last) =
        frame_range(stream.total_frames, video_fps, opts.range.as_ref()).map_err(err)?;
    let total_frames = last - first + 1;
    let nframes = smart_nframes(total_frames, video_fps, opts.fps).map_err(err)?;
    let indices = linspace_indices(first, last, nframes);
    let (min_pixels, max_pixels) = video_pixel_bounds(opts, nframes);
    let (frames, timestamps_s) = stream.decode(
        &indices,
        &|h, w| smart_resize(h, w, IMAGE_FACTOR, min_pixels, max_pixels),
        Filter::TorchBicubicAa,
    )?;
    Ok(SampledVideo {
        frames,
        timestamps_s,
        indices,
        total_frames,
        video_fps,
        fps_used: nframes as f64 / total_frames as f64 * video_fps,
        min_pixels,
        max_pixels,
    })
}

/// A video stream's frames in presentation order, counted by demuxing (no decoding): what readers that
/// decode every frame (torchvision, torchcodec's exact mode) call the frame count.
pub struct FrameIndex {
    path: std::path::PathBuf,
    entries: Option<Vec<decode::Entry>>,
    /// Frames in the stream.
    pub total_frames: usize,
    /// The stream's average frame rate.
    pub fps: f64,
    /// Frame size from the header (0 when it has none).
    pub width: usize,
    pub height: usize,
    /// The first frame's start and the last frame's end, seconds, from the packets' timestamps and durations
    /// (torchcodec's `begin_stream_seconds` / `end_stream_seconds` in its exact mode); `None` when the packets
    /// carry no timestamps or durations.
    pub content_span: Option<(f64, f64)>,
}

impl FrameIndex {
    /// Opens the file and counts its video frames (a sequential decode for streams without timestamps).
    pub fn read(path: &Path) -> Result<Self> {
        let err = |reason: String| decode::err(path, reason);
        let mut o = decode::open(path)?;
        if o.avg_fps <= 0.0 {
            return Err(err("the video stream reports no frame rate".into()));
        }
        let entries = decode::index(&mut o);
        let total_frames = match &entries {
            Some(e) => e.len(),
            None => {
                let mut o2 = decode::open(path)?;
                decode::decode_sequential(path, &mut o2, None, &mut |_, _, _| Ok(()))?
            }
        };
        if total_frames == 0 {
            return Err(err("no video frames (truncated or empty stream)".into()));
        }
        let content_span = entries.as_ref().and_then(|e| {
            let begin = e.iter().map(|x| x.pts).min()?;
            let end = e.iter().map(|x| x.pts + x.duration).max()?;
            (e.iter().all(|x| x.duration > 0) && end > begin)
                .then_some((begin as f64 * o.time_base, end as f64 * o.time_base))
        });
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            total_frames,
            content_span,
            fps: o.avg_fps,
            width: o.width as usize,
            height: o.height as usize,
        })
    }

    /// Decodes the frames at `indices` (sorted positions in presentation order; repeats allowed), each resized
    /// as it is decoded to `size(height, width)` of the source (bicubic with antialiasing, as torchvision), so
    /// memory is one full-size frame plus the resized ones. Returns the frames and their presentation times
    /// (seconds from the stream start).
    pub fn decode(
        &self,
        indices: &[usize],
        size: &dyn Fn(usize, usize) -> std::result::Result<(usize, usize), String>,
        filter: Filter,
    ) -> Result<(Vec<RgbFrame>, Vec<f64>)> {
        let path = self.path.as_path();
        let err = |reason: String| decode::err(path, reason);
        let mut target = if self.width > 0 && self.height > 0 {
            Some(size(self.height, self.width).map_err(err)?)
        } else {
            None
        };
        let n = indices.len();
        let mut frames: Vec<Option<RgbFrame>> = vec![None; n];
        let mut pts_out = vec![0i64; n];
        let mut sink = |k: usize, pts: i64, f: RgbFrame| -> Result<()> {
            let (h, w) = match target {
                Some(t) => t,
                None => {
                    // Header lacked the size: use the first decoded frame's.
                    let t = size(f.height, f.width).map_err(err)?;
                    target = Some(t);
                    t
                }
            };
            frames[k] = Some(if (h, w) == (f.height, f.width) {
                f
            } else {
                resize::resize(&f, h, w, filter)
            });
            pts_out[k] = pts;
            Ok(())
        };
        let mut o = decode::open(path)?; // fresh demuxer at the first packet
        match &self.entries {
            Some(entries) => {
                let wanted: Vec<i64> = indices.iter().map(|&i| entries[i].pts).collect();
                decode::decode_by_pts(path, &mut o, entries, &wanted, &mut sink)?;
            }
            None => {
                decode::decode_sequential(path, &mut o, Some(indices), &mut sink)?;
            }
        }
        let frames: Vec<RgbFrame> =
            frames
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    err(
                        "some sampled frames could not be decoded (truncated or corrupt file)"
                            .into(),
                    )
                })?;
        let start = o.start_time;
        let timestamps_s = pts_out
            .iter()
            .map(|&p| (p - start) as f64 * o.time_base)
            .collect();
        Ok((frames, timestamps_s))
    }
}

/// transformers fused rescale+normalise: `(x - mean/rescale) / (std/rescale)` in float32.
fn norm_consts() -> ([f32; 3], [f32; 3]) {
    let inv = 1.0 / (1.0 / 255.0f64);
    let mut m = [0f32; 3];
    let mut s = [0f32; 3];
    for c in 0..3 {
        m[c] = (CLIP_MEAN[c] * inv) as f32;
        s[c] = (CLIP_STD[c] * inv) as f32;
    }
    (m, s)
}

/// Qwen2VL processors' `patchify` (video_processing_qwen2_vl.py): frames `[T, H, W, 3]` (T a multiple of
/// temporal_patch_size) → rows in `(t, h/28, w/28, 2, 2)` order, each row `(c, tp, 14, 14)` —
/// `view(..).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)`.
fn patchify(frames: &[&RgbFrame]) -> (Vec<f32>, [usize; 3]) {
    let (h, w) = (frames[0].height, frames[0].width);
    let (gt, gh, gw) = (
        frames.len() / TEMPORAL_PATCH_SIZE,
        h / PATCH_SIZE,
        w / PATCH_SIZE,
    );
    let (mean, std) = norm_consts();
    let mut out = Vec::with_capacity(gt * gh * gw * PATCH_DIM);
    for t in 0..gt {
        for bh in 0..gh / MERGE_SIZE {
            for bw in 0..gw / MERGE_SIZE {
                for mh in 0..MERGE_SIZE {
                    for mw in 0..MERGE_SIZE {
                        let y0 = (bh * MERGE_SIZE + mh) * PATCH_SIZE;
                        let x0 = (bw * MERGE_SIZE + mw) * PATCH_SIZE;
                        for c in 0..3 {
                            for tp in 0..TEMPORAL_PATCH_SIZE {
                                let f = frames[t * TEMPORAL_PATCH_SIZE + tp];
                                for py in 0..PATCH_SIZE {
                                    let row = ((y0 + py) * w + x0) * 3;
                                    for px in 0..PATCH_SIZE {
                                        let v = f.data[row + px * 3 + c] as f32;
                                        out.push((v - mean[c]) / std[c]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (out, [gt, gh, gw])
}

/// `Qwen2VLVideoProcessor` on qwen-omni-utils' frames with `size = {shortest_edge: min_pixels,
/// longest_edge: max_pixels}` and `do_sample_frames=False`. Frames from [`sample_video`] are already at a
/// smart_resize size, so the processor's resize is the identity; other frames are resized here with the
/// torchvision filter. An odd frame count is padded by repeating the last frame, as `patchify` does.
pub fn preprocess_video(video: &SampledVideo) -> Result<VideoInputs> {
    preprocess_frames(
        &video.frames,
        video.min_pixels,
        video.max_pixels,
        video.fps_used,
    )
}

/// [`preprocess_video`] on raw frames (all the same size) sampled at `fps_used`.
pub fn preprocess_frames(
    frames: &[RgbFrame],
    min_pixels: f64,
    max_pixels: f64,
    fps_used: f64,
) -> Result<VideoInputs> {
    let first = frames
        .first()
        .ok_or_else(|| Error::Other("preprocess_video: no frames".into()))?;
    if frames
        .iter()
        .any(|f| f.width != first.width || f.height != first.height)
    {
        return Err(Error::Other(
            "preprocess_video: frames differ in size".into(),
        ));
    }
    let (h, w) = smart_resize(
        first.height,
        first.width,
        IMAGE_FACTOR,
        min_pixels,
        max_pixels,
    )
    .map_err(|e| Error::Other(format!("preprocess_video: {e}")))?;
    let resized: Vec<RgbFrame>;
    let mut refs: Vec<&RgbFrame> = if (h, w) != (first.height, first.width) {
        resized = frames
            .iter()
            .map(|f| resize::resize(f, h, w, Filter::TorchBicubicAa))
            .collect();
        resized.iter().collect()
    } else {
        frames.iter().collect()
    };
    while refs.len() % TEMPORAL_PATCH_SIZE != 0 {
        refs.push(refs[refs.len() - 1]);
    }
    let (pixel_values_videos, video_grid_thw) = patchify(&refs);
    Ok(VideoInputs {
        pixel_values_videos,
        video_grid_thw,
        video_second_per_grid: TEMPORAL_PATCH_SIZE as f64 / fps_used,
    })
}

/// Decodes an image file (anything FFmpeg reads: PNG, JPEG, WebP, BMP…) to RGB. Alpha is dropped by
/// swscale (qwen-omni-utils composites RGBA on white first: not reproduced yet).
pub fn load_image(path: &Path) -> Result<RgbFrame> {
    decode::decode_first(path)
}

/// qwen-omni-utils `fetch_image` (smart_resize, then PIL bicubic) + `Qwen2VLImageProcessor` (identity
/// resize, rescale, normalise, frame repeated to temporal_patch_size, patchify).
pub fn preprocess_image(image: &RgbFrame, opts: &ImageOptions) -> Result<ImageInputs> {
    let (h, w) = smart_resize(
        image.height,
        image.width,
        IMAGE_FACTOR,
        opts.min_pixels as f64,
        opts.max_pixels as f64,
    )
    .map_err(|e| Error::Other(format!("image: {e}")))?;
    let r = resize::resize(image, h, w, Filter::PillowBicubic);
    let refs = vec![&r; TEMPORAL_PATCH_SIZE];
    let (pixel_values, image_grid_thw) = patchify(&refs);
    Ok(ImageInputs {
        pixel_values,
        image_grid_thw,
    })
}

/// An image as transformers' fast Qwen2-VL processor makes it: resized to `(h, w)` with torchvision v2's
/// uint8 bicubic (not Pillow's), normalised, one temporal patch of two copies.
pub fn preprocess_image_torchvision(image: &RgbFrame, h: usize, w: usize) -> ImageInputs {
    let r = if (h, w) == (image.height, image.width) {
        image.clone()
    } else {
        resize::resize(image, h, w, Filter::TorchBicubicAaU8)
    };
    let refs = vec![&r; TEMPORAL_PATCH_SIZE];
    let (pixel_values, image_grid_thw) = patchify(&refs);
    ImageInputs {
        pixel_values,
        image_grid_thw,
    }
}

/// [`load_image`] + [`preprocess_image`], naming the file in errors.
pub fn preprocess_image_file(path: &Path, opts: &ImageOptions) -> Result<ImageInputs> {
    let img = load_image(path)?;
    preprocess_image(&img, opts).map_err(|e| decode::err(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nframes_and_indices_match_reference() {
        assert_eq!(smart_nframes(40, 10.0, 2.0), Ok(8));
        assert_eq!(sample_indices(40, 8), vec![0, 6, 11, 17, 22, 28, 33, 39]);
        assert_eq!(smart_nframes(63, 10.0, 2.0), Ok(12));
        assert!(smart_nframes(1, 10.0, 2.0).is_err());
        // 2 h at 30 fps: capped at 768 frames.
        assert_eq!(smart_nframes(216000, 30.0, 2.0), Ok(768));
    }

    /// `calculate_video_frame_range` and `torch.linspace(first, last, n).round()` as qwen-omni-utils 0.0.9
    /// computes them (values printed by it).
    #[test]
    fn time_ranges_pick_the_reference_frames() {
        let r = |a: f64, b: Option<f64>| TimeRange::new(Some(a), b).unwrap().unwrap();
        assert_eq!(frame_range(64, 8.0, Some(&r(2.3, Some(6.1)))), Ok((19, 48)));
        assert_eq!(frame_range(64, 8.0, Some(&r(0.0, None))), Ok((0, 63)));
        assert_eq!(
            frame_range(30, 29.97, Some(&r(0.5, Some(0.9)))),
            Ok((15, 26))
        );
        assert_eq!(
            frame_range(100, 25.0, Some(&r(0.0, Some(3.0)))),
            Ok((0, 75))
        );
        assert_eq!(frame_range(64, 8.0, None), Ok((0, 63)));
        // Past the end, or no two frames inside: refused with the clip's length.
        let e = frame_range(64, 8.0, Some(&r(7.9, None))).unwrap_err();
        assert!(e.contains("8.00 s") && e.contains("Fix"), "{e}");
        assert!(frame_range(64, 8.0, Some(&r(10.0, Some(12.0)))).is_err());
        assert_eq!(linspace_indices(19, 48, 6), [19, 25, 31, 36, 42, 48]);
        assert_eq!(linspace_indices(15, 26, 4), [15, 19, 22, 26]);
        let long = linspace_indices(3, 1000, 37);
        assert_eq!(&long[..6], [3, 31, 58, 86, 114, 141]);
        assert_eq!(&long[31..], [862, 889, 917, 945, 972, 1000]);
        // Empty or reversed ranges never reach a decoder.
        assert!(TimeRange::new(Some(5.0), Some(5.0)).is_err());
        assert!(TimeRange::new(Some(-1.0), None).is_err());
        assert_eq!(TimeRange::new(None, None).unwrap(), None);
        // librosa's cut: int(sr·start) and int(sr·(end − start)) samples.
        assert_eq!(r(2.3, Some(6.1)).samples(48_000, 384_000), 110_399..292_799);
        assert_eq!(r(0.3, None).samples(44_100, 66_150), 13_230..66_150);
    }

    /// Seeking must give the same frames as decoding everything: `AVFLOW_VIDEO_BENCH=/tmp/long.mp4
    /// cargo test --lib media::video -- --ignored` (a clip with several GOPs, e.g. `-g 30`).
    #[test]
    #[ignore = "needs a long clip of your own in AVFLOW_VIDEO_BENCH"]
    fn seeking_equals_sequential_decode() {
        let p = std::env::var("AVFLOW_VIDEO_BENCH")
            .expect("set AVFLOW_VIDEO_BENCH to a clip of your own (see this test's doc comment)");
        let path = Path::new(&p);
        let mut o = decode::open(path).unwrap();
        let entries = decode::index(&mut o).unwrap();
        // Sparse targets (every 50th frame) force seeks.
        let wanted_idx: Vec<usize> = (0..entries.len()).step_by(50).collect();
        let wanted: Vec<i64> = wanted_idx.iter().map(|&i| entries[i].pts).collect();
        let mut a = vec![None; wanted.len()];
        let mut o = decode::open(path).unwrap();
        decode::decode_by_pts(path, &mut o, &entries, &wanted, &mut |k, _, f| {
            a[k] = Some(f);
            Ok(())
        })
        .unwrap();
        let mut b = vec![None; wanted.len()];
        let mut o = decode::open(path).unwrap();
        decode::decode_sequential(path, &mut o, Some(&wanted_idx), &mut |k, _, f| {
            b[k] = Some(f);
            Ok(())
        })
        .unwrap();
        assert!(a.iter().all(|f| f.is_some()));
        assert!(
            a == b,
            "seeked frames differ from sequentially decoded ones"
        );
    }

    #[test]
    fn token_estimate_for_a_long_video() {
        let info = VideoInfo {
            width: 1920,
            height: 1080,
            fps: 30.0,
            duration_s: 7200.0,
            n_frames_estimate: 216000,
            has_audio: true,
        };
        let t = estimate_tokens(&info, &VideoOptions::default()).unwrap();
        // 768 frames; max_pixels = max(min(602112, 90316800/768*2), 105369) = 235200 → 336x644 (qwen-omni-utils).
        assert_eq!(t, 384 * 12 * 23);
    }
}
