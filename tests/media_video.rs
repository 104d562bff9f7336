//! Video/image preprocessing vs. goldens from the real pipeline (qwen-omni-utils + transformers 5.23
//! Qwen2VL processors), made by `tools/make_video_goldens.py`. No Python or network at test time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use avflow::media::video::{
    estimate_tokens, load_image, preprocess_frames, preprocess_image, preprocess_image_file,
    preprocess_video, probe_video, sample_video, ImageOptions, RgbFrame, VideoOptions, PATCH_DIM,
};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media/video")
}

struct Golden {
    meta: Value,
    t: HashMap<String, Tensor>,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let meta: Value = serde_json::from_str(
            &std::fs::read_to_string(dir().join(format!("{name}.golden.json"))).unwrap(),
        )
        .unwrap();
        let t = candle_core::safetensors::load(
            dir().join(format!("{name}.golden.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        Golden { meta, t }
    }
    fn f32s(&self, k: &str) -> Vec<f32> {
        self.t[k]
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    }
    fn u8s(&self, k: &str) -> Vec<u8> {
        self.t[k].flatten_all().unwrap().to_vec1().unwrap()
    }
    fn usizes(&self, k: &str) -> Vec<usize> {
        self.meta[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }
    fn f(&self, k: &str) -> f64 {
        self.meta[k].as_f64().unwrap()
    }
    fn opts(&self) -> VideoOptions {
        let o = &self.meta["options"];
        VideoOptions {
            fps: o["fps"].as_f64().unwrap_or(2.0),
            min_pixels: o["min_pixels"].as_u64().map(|v| v as usize),
            max_pixels: o["max_pixels"].as_u64().map(|v| v as usize),
            total_pixels: o["total_pixels"].as_f64(),
            range: None,
        }
    }
}

/// (mean |Δ|, max |Δ|)
fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let mut s = 0f64;
    let mut m = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64 - *y as f64).abs();
        s += d;
        m = m.max(d);
    }
    (s / a.len() as f64, m)
}

fn diff_u8(a: &[u8], b: &[u8]) -> (f64, u8, usize) {
    assert_eq!(a.len(), b.len());
    let mut s = 0u64;
    let mut m = 0u8;
    let mut n = 0;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        s += d as u64;
        m = m.max(d);
        n += (d != 0) as usize;
    }
    (s as f64 / a.len() as f64, m, n)
}

/// One normalised unit of uint8 rounding: 1/255/std (std ≈ 0.26–0.28), for scale in the printouts.
const ONE_LEVEL: f64 = 1.0 / 255.0 / 0.26130258;

fn check_video(name: &str) {
    let g = Golden::load(name);
    let file = dir().join(g.meta["file"].as_str().unwrap());
    let opts = g.opts();
    let v = sample_video(&file, &opts).unwrap();
    assert_eq!(
        v.total_frames,
        g.meta["total_frames"].as_u64().unwrap() as usize,
        "{name} total_frames"
    );
    assert_eq!(v.video_fps, g.f("video_fps"), "{name} fps");
    assert_eq!(v.indices, g.usizes("indices"), "{name} indices");
    assert_eq!(v.frames.len(), g.meta["nframes"].as_u64().unwrap() as usize);
    assert!(
        (v.fps_used - g.f("sample_fps")).abs() < 1e-12,
        "{name} sample_fps"
    );
    assert_eq!(v.max_pixels, g.f("max_pixels"), "{name} max_pixels");
    let (h, w) = (
        g.meta["resized_height"].as_u64().unwrap() as usize,
        g.meta["resized_width"].as_u64().unwrap() as usize,
    );
    assert_eq!(
        (v.frames[0].height, v.frames[0].width),
        (h, w),
        "{name} resized size"
    );
    assert!(
        v.timestamps_s.windows(2).all(|p| p[0] < p[1]),
        "{name} timestamps increase"
    );

    let inputs = preprocess_video(&v).unwrap();
    assert_eq!(
        inputs.video_grid_thw.to_vec(),
        g.usizes("video_grid_thw"),
        "{name} grid"
    );
    assert!((inputs.video_second_per_grid - g.f("video_second_per_grid")).abs() < 1e-12);
    let shape = g.usizes("pixel_values_videos_shape");
    assert_eq!(shape, vec![inputs.rows(), PATCH_DIM]);

    // Resized uint8 frames vs qwen-omni-utils' torchvision resize.
    if g.t.contains_key("frames_u8") {
        let ours: Vec<u8> = v
            .frames
            .iter()
            .flat_map(|f| f.data.iter().copied())
            .collect();
        let (mean, max, n) = diff_u8(&ours, &g.u8s("frames_u8"));
        eprintln!(
            "{name}: resized frames mean |Δ| {mean:.5} levels, max {max}, {n}/{} differ",
            ours.len()
        );
        // Port of torch's float aa-bicubic incl. its FMA contractions (resize.rs): bit-exact on all clips but
        // the portrait one, where 2 of 84 672 values land on the other side of a .5 tie (1 level).
        assert!(
            max <= 1 && n * 10_000 <= ours.len(),
            "{name}: resized frames differ (mean {mean}, max {max}, {n} values)"
        );
    }
    let pv = &inputs.pixel_values_videos;
    let (mean, max) = diff(&pv[..2 * PATCH_DIM], &g.f32s("pixel_values_videos_head"));
    eprintln!("{name}: pixel_values_videos head mean |Δ| {mean:.2e} max {max:.2e}");
    assert!(
        max <= 1.01 * ONE_LEVEL && mean <= 1e-4,
        "{name}: head mean {mean} max {max}"
    );
    if g.t.contains_key("pixel_values_videos") {
        let (mean, max) = diff(pv, &g.f32s("pixel_values_videos"));
        eprintln!("{name}: pixel_values_videos mean |Δ| {mean:.2e} max {max:.2e} (1 level = {ONE_LEVEL:.4})");
        assert!(max <= 1e-5 && mean <= 1e-6);
    }
    let our_mean = pv.iter().map(|&x| x as f64).sum::<f64>() / pv.len() as f64;
    assert!(
        (our_mean - g.f("pixel_values_videos_mean")).abs() < 1e-3,
        "{name} mean {our_mean}"
    );
}

#[test]
fn basic_clip_matches_reference() {
    check_video("basic");
}
#[test]
fn basic_clip_default_options_matches_reference() {
    check_video("basic_default");
}
#[test]
fn basic_clip_fps1_matches_reference() {
    check_video("basic_fps1");
}
#[test]
fn basic_clip_downscaled_matches_reference() {
    check_video("basic_down");
}
#[test]
fn odd_length_clip_matches_reference() {
    check_video("odd");
}
#[test]
fn portrait_clip_matches_reference() {
    check_video("portrait");
}
#[test]
fn variable_frame_rate_clip_matches_reference() {
    check_video("vfr");
}
#[test]
fn clip_without_audio_matches_reference() {
    check_video("noaudio");
}

fn check_image(name: &str) {
    let g = Golden::load(name);
    let file = dir().join(g.meta["file"].as_str().unwrap());
    let opts = ImageOptions {
        min_pixels: g.meta["min_pixels"].as_u64().unwrap() as usize,
        max_pixels: g.meta["max_pixels"].as_u64().unwrap() as usize,
    };
    let inputs = preprocess_image_file(&file, &opts).unwrap();
    assert_eq!(
        inputs.image_grid_thw.to_vec(),
        g.usizes("image_grid_thw"),
        "{name} grid"
    );
    let (mean, max) = diff(&inputs.pixel_values, &g.f32s("pixel_values"));
    eprintln!("{name}: pixel_values mean |Δ| {mean:.2e} max {max:.2e} (1 level = {ONE_LEVEL:.4})");
    // Pillow's fixed-point resize is reproduced exactly; what is left is float32 normalisation rounding.
    assert!(max <= 1e-5 && mean <= 1e-6);
    assert_eq!(
        inputs.to_tensor(&Device::Cpu).unwrap().dims(),
        &[inputs.rows(), PATCH_DIM]
    );
}

#[test]
fn still_image_matches_reference() {
    check_image("still");
}
#[test]
fn still_image_downscaled_matches_reference() {
    check_image("still_down");
}

#[test]
fn image_as_video_frames_pads_to_temporal_patch() {
    let img = load_image(&dir().join("still.png")).unwrap();
    let single = preprocess_image(&img, &ImageOptions::default()).unwrap();
    assert_eq!(single.image_grid_thw, [1, 4, 6]);
    // One odd frame count is padded by repeating the last frame.
    let frames: Vec<RgbFrame> = vec![img.clone(); 3];
    let v = preprocess_frames(&frames, 3136.0, 602112.0, 2.0).unwrap();
    assert_eq!(v.video_grid_thw[0], 2);
}

#[test]
fn probe_reports_header_facts() {
    let i = probe_video(&dir().join("basic.mkv")).unwrap();
    assert_eq!((i.width, i.height, i.fps), (64, 48, 10.0));
    assert!(i.has_audio);
    assert!((i.duration_s - 4.0).abs() < 0.15, "{}", i.duration_s);
    assert!((i.n_frames_estimate as i64 - 40).abs() <= 1);
    let n = probe_video(&dir().join("noaudio.mkv")).unwrap();
    assert!(!n.has_audio);
    let p = probe_video(&dir().join("portrait.mkv")).unwrap();
    assert_eq!((p.width, p.height), (48, 96));
    // Estimate equals what sampling + preprocessing produce.
    let opts = VideoOptions::default();
    let est = estimate_tokens(&i, &opts).unwrap();
    let real = preprocess_video(&sample_video(&dir().join("basic.mkv"), &opts).unwrap()).unwrap();
    assert_eq!(est, real.n_tokens());
}

#[test]
fn lossy_h264_decodes() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("lossy.golden.json")).unwrap())
            .unwrap();
    let v = sample_video(
        &dir().join("lossy.mp4"),
        &VideoOptions {
            min_pixels: Some(3136),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        v.total_frames as u64,
        meta["total_frames"].as_u64().unwrap()
    );
    assert_eq!(v.video_fps, meta["video_fps"].as_f64().unwrap());
    let mean = v
        .frames
        .iter()
        .flat_map(|f| f.data.iter())
        .map(|&x| x as f64)
        .sum::<f64>()
        / v.frames.iter().map(|f| f.data.len()).sum::<usize>() as f64;
    // Different frames and a resize, so only a loose check that the picture is the testsrc2 one.
    assert!(
        (mean - meta["mean_rgb"].as_f64().unwrap()).abs() < 8.0,
        "{mean}"
    );
}

fn expect_err_naming(file: &str) -> String {
    let p = dir().join(file);
    let e = sample_video(&p, &VideoOptions::default())
        .expect_err(file)
        .to_string();
    assert!(e.contains(file), "error does not name the file: {e}");
    let e2 = probe_video(&p).map(|_| ()).map_err(|e| e.to_string());
    if let Err(e2) = e2 {
        assert!(e2.contains(file), "{e2}");
    }
    eprintln!("{file}: {e}");
    e
}

#[test]
fn bad_inputs_give_clear_errors() {
    expect_err_naming("notmedia.mp4");
    expect_err_naming("truncated.mkv");
    let e = expect_err_naming("empty.mp4");
    assert!(e.contains("empty"), "{e}");
    let e = expect_err_naming("audioonly.mkv");
    assert!(e.contains("no video stream"), "{e}");
    expect_err_naming("does-not-exist.mp4");
    let e = preprocess_image_file(&dir().join("notmedia.mp4"), &ImageOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("notmedia.mp4"), "{e}");
}

/// A video stream whose codec FFmpeg has no decoder for (tools/make_pipeline_goldens.py patches the FourCC
/// of a rawvideo AVI): refused when the file is opened, naming the file, the codec and the conversion.
#[test]
fn unsupported_video_codec_says_so_with_the_fix() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/media/unsupported/video_codec.avi");
    let errors = [
        probe_video(&p).map(|_| ()),
        sample_video(&p, &VideoOptions::default()).map(|_| ()),
    ];
    for e in errors {
        let e = e.expect_err("an unknown codec must not decode").to_string();
        for needle in [
            "video_codec.avi",
            "unsupported video codec",
            "'QQV1'",
            "Fix:",
            "ffmpeg -i",
            "libx264",
        ] {
            assert!(e.contains(needle), "lacks {needle:?}: {e}");
        }
    }
    let e = preprocess_image_file(&p, &ImageOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unsupported image codec") && e.contains(".png"),
        "{e}"
    );
}

/// Timing on a clip you make yourself (not committed), e.g.
/// `ffmpeg -f lavfi -i testsrc=size=640x360:rate=30:duration=20 -c:v libx264 -g 30 /tmp/long.mp4`, then
/// `AVFLOW_VIDEO_BENCH=/tmp/long.mp4 cargo test --test media_video bench -- --ignored --nocapture`.
#[test]
#[ignore = "a timing on a long clip of your own in AVFLOW_VIDEO_BENCH"]
fn bench_long_clip() {
    let p = std::env::var("AVFLOW_VIDEO_BENCH")
        .expect("set AVFLOW_VIDEO_BENCH to a clip of your own (see this test's doc comment)");
    let p = PathBuf::from(p);
    let opts = VideoOptions::default();
    let t0 = std::time::Instant::now();
    let info = probe_video(&p).unwrap();
    let est = estimate_tokens(&info, &opts).unwrap();
    let t1 = std::time::Instant::now();
    let v = sample_video(&p, &opts).unwrap();
    let t2 = std::time::Instant::now();
    let inputs = preprocess_video(&v).unwrap();
    let t3 = std::time::Instant::now();
    eprintln!(
        "{info:?}\nestimate {est} tokens, got {} ({} frames of {} → {}x{}); probe+estimate {:.1} ms, \
         sample (decode+resize) {:.1} ms, preprocess {:.1} ms",
        inputs.n_tokens(),
        v.frames.len(),
        v.total_frames,
        v.frames[0].width,
        v.frames[0].height,
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        (t3 - t2).as_secs_f64() * 1e3
    );
}
