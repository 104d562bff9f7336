//! From media and a question to model inputs, against the real `Qwen2_5OmniProcessor`: the raw media of
//! the golden cases (tests/fixtures/goldens/*/media.safetensors: the frames and PCM the processor got)
//! go through avflow's template, placeholder expansion, tokenizer, preprocessing and log-mel, then the
//! Thinker; ids must be identical, features and logits within the tolerances.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use avflow::media::audio::AudioFeatures;
use avflow::media::prepare::{build_ids, render_template, tensors, Media};
use avflow::media::video::{preprocess_frames, preprocess_image, ImageOptions, RgbFrame};
use avflow::model::loader::{resolve_dir, ModelSource};
use avflow::model::{OmniInputs, OmniThinker};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn frame(t: &Tensor) -> RgbFrame {
    let (h, w, _) = t.dims3().unwrap();
    RgbFrame {
        width: w,
        height: h,
        data: t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
    }
}

fn pcm(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x / 32768.0)
        .collect()
}

fn check_case(case: &str) {
    let dir = fixtures().join("goldens").join(case);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let model_dir = fixtures().join(meta["model"].as_str().unwrap());
    let dev = Device::Cpu;
    let media_t = candle_core::safetensors::load(dir.join("media.safetensors"), &dev).unwrap();
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev).unwrap();
    let resolved = resolve_dir(ModelSource::Local(model_dir.clone()), &model_dir).unwrap();
    let cfg = &resolved.config;

    let kinds: Vec<String> = meta["conversation"][1]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap().to_string())
        .filter(|k| k != "text")
        .collect();
    let mut media = Vec::new();
    for k in &kinds {
        match k.as_str() {
            "video" => {
                let fr = &media_t["video_frames"];
                let frames: Vec<RgbFrame> = (0..fr.dim(0).unwrap())
                    .map(|i| frame(&fr.get(i).unwrap()))
                    .collect();
                let fps = meta["media"]["video"]["fps"].as_f64().unwrap();
                let v = preprocess_frames(&frames, 784.0, 50176.0, fps).unwrap();
                let a = meta["use_audio_in_video"].as_bool().unwrap().then(|| {
                    AudioFeatures::from_samples_16k(&pcm(&media_t["audio_pcm16"]), &dev).unwrap()
                });
                media.push(Media::Video(v, a));
            }
            "audio" => media.push(Media::Audio(
                AudioFeatures::from_samples_16k(&pcm(&media_t["audio_pcm16"]), &dev).unwrap(),
            )),
            "image" => {
                let opts = ImageOptions {
                    min_pixels: 3136,
                    max_pixels: 12845056,
                };
                media.push(Media::Image(
                    preprocess_image(&frame(&media_t["image"]), &opts).unwrap(),
                ));
            }
            other => panic!("unexpected item {other}"),
        }
    }
    let kind_refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let prompt = render_template(
        &model_dir,
        &kind_refs,
        meta["question"].as_str().unwrap(),
        meta["system_prompt"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        prompt,
        meta["prompt"].as_str().unwrap(),
        "{case}: chat template"
    );
    let ids = build_ids(&model_dir, cfg, &prompt, &media).unwrap();
    let want_ids: Vec<u32> = inputs["input_ids"]
        .flatten_all()
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&x| x as u32)
        .collect();
    assert_eq!(
        ids, want_ids,
        "{case}: input_ids differ from the processor's"
    );
    let ours = tensors(&ids, &media, &dev).unwrap();
    for (name, tol) in [
        ("pixel_values_videos", 1e-5f32),
        ("pixel_values", 1e-5),
        ("input_features", 1e-3),
    ] {
        match (ours.get(name), inputs.get(name)) {
            (Some(a), Some(b)) => {
                let d = max_diff(a, b);
                eprintln!("{case}: {name} max|Δ| = {d:.2e}");
                assert!(d <= tol, "{case}: {name} differs by {d}");
            }
            (None, None) => {}
            (a, b) => panic!(
                "{case}: {name} present ours={} theirs={}",
                a.is_some(),
                b.is_some()
            ),
        }
    }
    for name in ["video_grid_thw", "image_grid_thw"] {
        if let Some(b) = inputs.get(name) {
            assert_eq!(max_diff(&ours[name], b), 0.0, "{case}: {name}");
        }
    }
    // Our prepare → our forward vs transformers' full pipeline.
    let thinker = OmniThinker::load(&resolved, DType::F32, &dev).unwrap();
    let inp = OmniInputs::from_map(Path::new("prepared"), &ours).unwrap();
    let e = thinker.embed(&inp).unwrap();
    let logits = thinker.logits(&e, None).unwrap();
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &dev).unwrap();
    let d = max_diff(&logits, &expected["logits"]);
    eprintln!("{case}: prepare→forward logits max|Δ| = {d:.2e}");
    assert!(
        d <= 1e-3,
        "{case}: logits of prepare→forward differ from HF's pipeline by {d}"
    );
}

#[test]
fn audio_visual_clip_matches_the_processor() {
    check_case("av_a");
}

#[test]
fn image_and_audio_prompt_matches_the_processor() {
    check_case("image_audio_a");
}

/// `avflow prepare` on real files, then `avflow forward` on what it wrote.
#[test]
fn prepare_command_end_to_end() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let model = fixtures().join("omni-tiny-a");
    let vdir = fixtures().join("media/video");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("inputs.safetensors");
    let spans = dir.path().join("map.json");
    let run = std::process::Command::new(bin)
        .args(["prepare", "--model"])
        .arg(&model)
        .arg("--video")
        .arg(vdir.join("basic.mkv"))
        .args(["--question", "What do you see and hear?", "--out"])
        .arg(&out)
        .arg("--spans")
        .arg(&spans)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(
        v["tokens"]["audio"].as_u64().unwrap() > 0 && v["tokens"]["video"].as_u64().unwrap() > 0,
        "{v}"
    );
    let map: avflow::media::token_map::TokenMap =
        serde_json::from_str(&std::fs::read_to_string(&spans).unwrap()).unwrap();
    assert_eq!(
        map.groups.spans["audio"].len() as u64,
        v["tokens"]["audio"].as_u64().unwrap()
    );
    // Every media token has a time range, video tokens a grid cell; chunks follow 2-s steps.
    for t in &map.tokens {
        match t.group.as_str() {
            "audio" | "video" => {
                let [s, e] = t.time.unwrap();
                assert!(
                    e > s && t.item == Some(0) && t.chunk == Some((s / 2.0).floor() as usize),
                    "{t:?}"
                );
            }
            _ => assert!(t.time.is_none()),
        }
    }
    assert!(map
        .tokens
        .iter()
        .filter(|t| t.group == "video")
        .all(|t| t.grid.is_some()));
    // Seconds 1–2 select audio and video tokens of that second.
    let sel = map.time_span(1.0, 2.0, None);
    assert!(
        sel.iter().any(|&p| map.tokens[p].group == "audio")
            && sel.iter().any(|&p| map.tokens[p].group == "video")
    );
    // The token map is also a --spans file for the flow commands.
    let ko = std::process::Command::new(bin)
        .args(["knockout", "--model"])
        .arg(&model)
        .arg("--inputs")
        .arg(&out)
        .arg("--spans")
        .arg(&spans)
        .args(["--source", "audio", "--target", "last", "--layers", "0..1"])
        .output()
        .unwrap();
    assert!(
        ko.status.success(),
        "{}",
        String::from_utf8_lossy(&ko.stderr)
    );

    // Over the token budget: refused before any heavy work, with the numbers.
    let run = std::process::Command::new(bin)
        .args(["prepare", "--model"])
        .arg(&model)
        .arg("--video")
        .arg(vdir.join("basic.mkv"))
        .args(["--question", "q", "--max-tokens", "10", "--out"])
        .arg(dir.path().join("x.safetensors"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("tokens, over the budget of 10"), "{err}");
    let fwd = std::process::Command::new(bin)
        .args(["forward", "--model"])
        .arg(&model)
        .arg("--inputs")
        .arg(&out)
        .arg("--out")
        .arg(dir.path().join("logits.safetensors"))
        .output()
        .unwrap();
    assert!(
        fwd.status.success(),
        "{}",
        String::from_utf8_lossy(&fwd.stderr)
    );

    // A video without audio falls back to a video-only prompt and says so.
    let run = std::process::Command::new(bin)
        .args(["prepare", "--model"])
        .arg(&model)
        .arg("--video")
        .arg(vdir.join("noaudio.mkv"))
        .args(["--question", "What is this?", "--out"])
        .arg(dir.path().join("b.safetensors"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("no audio track"));

    // Bad inputs: a clear error naming the file; an empty question.
    for (args, needle) in [
        (
            vec![
                "--video".to_string(),
                vdir.join("notmedia.mp4").display().to_string(),
                "--question".into(),
                "q".into(),
            ],
            "notmedia.mp4",
        ),
        (
            vec![
                "--video".to_string(),
                vdir.join("basic.mkv").display().to_string(),
                "--question".into(),
                "  ".into(),
            ],
            "question is empty",
        ),
    ] {
        let run = std::process::Command::new(bin)
            .args(["prepare", "--model"])
            .arg(&model)
            .args(&args)
            .arg("--out")
            .arg(dir.path().join("c.safetensors"))
            .output()
            .unwrap();
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains(needle), "{err}");
    }
}

/// A non-UTF-8 file name is refused with the file and the fix (FFmpeg's bindings would panic), and an
/// 8K clip is bounded by the pixel limits (resized while decoding).
#[cfg(unix)]
#[test]
fn non_utf8_paths_and_8k_frames() {
    use std::os::unix::ffi::OsStrExt;
    let bin = env!("CARGO_BIN_EXE_avflow");
    let model = fixtures().join("omni-tiny-a");
    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"clip\xff.mkv"));
    std::fs::copy(fixtures().join("media/video/basic.mkv"), &odd).unwrap();
    let run = std::process::Command::new(bin)
        .args(["prepare", "--model"])
        .arg(&model)
        .arg("--video")
        .arg(&odd)
        .args(["--question", "q", "--out"])
        .arg(dir.path().join("a.safetensors"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("not valid UTF-8") && err.contains("Fix:") && !err.contains("panicked"),
        "{err}"
    );

    // 4 frames of 7680×4320 (made here with the ffmpeg CLI that scripts/setup.sh installs).
    let big = dir.path().join("8k.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=7680x4320:rate=2",
            "-t",
            "2",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&big)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!("the ffmpeg CLI is needed for this test (scripts/setup.sh installs it)");
    }
    let out = dir.path().join("8k.safetensors");
    let run = std::process::Command::new(bin)
        .args(["prepare", "--model"])
        .arg(&model)
        .arg("--video")
        .arg(&big)
        .args(["--question", "q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("no audio track"));
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let g = t["video_grid_thw"].to_vec2::<i64>().unwrap()[0].clone();
    // VIDEO_MAX_PIXELS = 768·28²: at most 768·4 patches per frame pair after resizing.
    assert!(g[1] * g[2] * 14 * 14 <= 768 * 28 * 28, "{g:?}");
    assert_eq!(g[0], 2);
}

/// One golden of the whole path on real files (tests/fixtures/media/pipeline, made by
/// tools/make_pipeline_goldens.py): qwen-omni-utils + `Qwen2_5OmniProcessor` + HF's Thinker on the same
/// files and question.
struct PipelineGolden {
    meta: serde_json::Value,
    t: std::collections::HashMap<String, Tensor>,
}

impl PipelineGolden {
    fn load(case: &str) -> Self {
        let dir = fixtures().join("media/pipeline");
        let meta = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{case}.golden.json"))).unwrap(),
        )
        .unwrap();
        let t = candle_core::safetensors::load(
            dir.join(format!("{case}.golden.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        Self { meta, t }
    }

    fn i64s(&self, name: &str) -> Vec<i64> {
        self.t[name]
            .to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    }

    /// `avflow prepare` arguments with the media paths made absolute.
    fn args(&self) -> Vec<std::ffi::OsString> {
        let media = fixtures().join("media");
        let args: Vec<&str> = self.meta["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let mut out = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let is_path = i > 0 && matches!(args[i - 1], "--video" | "--audio" | "--image");
            out.push(if is_path {
                media.join(a).into_os_string()
            } else {
                a.into()
            });
        }
        out
    }
}

/// What `check_pipeline` leaves for case-specific checks.
struct PipelineRun {
    golden: PipelineGolden,
    ours: OmniInputs,
    map: avflow::media::token_map::TokenMap,
    stderr: String,
}

/// `avflow prepare` (the binary) on the golden's files and question, then our forward: ids, grids,
/// seconds per grid and position ids must be identical, last-position logits within 1e-3.
fn check_pipeline(case: &str) -> PipelineRun {
    let golden = PipelineGolden::load(case);
    let model = fixtures().join(golden.meta["model"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (out, spans) = (
        dir.path().join("inputs.safetensors"),
        dir.path().join("map.json"),
    );
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_avflow"))
        .args(["prepare", "--model"])
        .arg(&model)
        .args(golden.args())
        .arg("--out")
        .arg(&out)
        .arg("--spans")
        .arg(&spans)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{case}: {stderr}");

    let dev = Device::Cpu;
    let ours = OmniInputs::from_file(&out).unwrap();
    let want_ids: Vec<u32> = golden.i64s("input_ids").iter().map(|&x| x as u32).collect();
    assert_eq!(ours.input_ids, want_ids, "{case}: input_ids");
    let grids = |name: &str| -> Vec<[usize; 3]> {
        match golden.t.get(name) {
            Some(_) => golden
                .i64s(name)
                .chunks(3)
                .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
                .collect(),
            None => vec![],
        }
    };
    assert_eq!(ours.video_grid_thw, grids("video_grid_thw"), "{case}");
    assert_eq!(ours.image_grid_thw, grids("image_grid_thw"), "{case}");
    let spg: Vec<f32> = match golden.t.get("video_second_per_grid") {
        Some(t) => t.to_vec1::<f32>().unwrap(),
        None => vec![],
    };
    assert_eq!(
        ours.video_second_per_grid, spg,
        "{case}: video_second_per_grid"
    );

    let resolved = resolve_dir(ModelSource::Local(model.clone()), &model).unwrap();
    let thinker = OmniThinker::load(&resolved, DType::F32, &dev).unwrap();
    let e = thinker.embed(&ours).unwrap();
    let pos = golden.i64s("position_ids");
    let n = ours.input_ids.len();
    let want_pos: Vec<[i64; 3]> = (0..n)
        .map(|i| [pos[i], pos[n + i], pos[2 * n + i]])
        .collect();
    assert!(e.position_ids == want_pos, "{case}: position ids differ");
    let logits = thinker.logits(&e, Some(&[n - 1])).unwrap();
    let d = max_diff(&logits, &golden.t["logits_last"]);
    eprintln!("{case}: file → prepare → forward, last-position logits max|Δ| = {d:.2e}");
    assert!(d <= 1e-3, "{case}: last logits differ from HF's by {d}");

    let map = serde_json::from_str(&std::fs::read_to_string(&spans).unwrap()).unwrap();
    PipelineRun {
        golden,
        ours,
        map,
        stderr,
    }
}

/// basic.mkv with its sound (interleaved per 2-s chunk), every option at its default.
#[test]
fn pipeline_clip_with_its_sound_matches_hf() {
    let r = check_pipeline("basic_av");
    assert!(r.ours.audio_lens == [400], "{:?}", r.ours.audio_lens);
}

/// odd.mkv: 63 frames at 10 fps sampled at 1.905 fps, odd size, no sound (falls back to its pictures,
/// as qwen-omni-utils with use_audio_in_video=False).
#[test]
fn pipeline_odd_clip_matches_hf() {
    let r = check_pipeline("odd");
    assert!(r.stderr.contains("no audio track"), "{}", r.stderr);
}

/// An image, then a separate 44.1 kHz stereo recording (resampled, downmixed).
#[test]
fn pipeline_image_then_audio_matches_hf() {
    let r = check_pipeline("image_audio");
    let items: Vec<Option<usize>> = ["image", "audio"]
        .iter()
        .map(|g| r.map.tokens.iter().find(|t| t.group == *g).unwrap().item)
        .collect();
    assert_eq!(items, [Some(0), Some(1)]);
    assert!(r.golden.meta["use_audio_in_video"] == false);
}

/// Two clips, each with its own sound, in command-line order: ids, grids, TMRoPE positions (each video's
/// times start again at its own start) and logits as HF; the token map gives each position its item.
#[test]
fn two_videos_in_one_prompt_match_hf() {
    let r = check_pipeline("two_videos");
    let model = fixtures().join("omni-tiny-a");
    let cfg = resolve_dir(ModelSource::Local(model.clone()), &model)
        .unwrap()
        .config;
    let tk = &cfg.tokens;
    // Expected item per position from HF's ids: the k-th <|vision_bos|> … <|vision_eos|> is item k.
    let mut want = Vec::new();
    let (mut k, mut inside) = (0usize, false);
    for &id in &r.ours.input_ids {
        if id == tk.vision_start {
            inside = true;
        }
        want.push(inside.then_some(k));
        if id == tk.vision_end {
            inside = false;
            k += 1;
        }
    }
    assert_eq!(k, 2);
    let got: Vec<Option<usize>> = r.map.tokens.iter().map(|t| t.item).collect();
    assert_eq!(got, want, "token map items");
    let grids = r.golden.meta["video_grid_thw"].as_array().unwrap();
    for (item, g) in grids.iter().enumerate() {
        let g: Vec<usize> = g
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let of = |group: &str| -> Vec<&avflow::media::token_map::TokenInfo> {
            r.map
                .tokens
                .iter()
                .filter(|t| t.item == Some(item) && t.group == group)
                .collect()
        };
        let (video, audio) = (of("video"), of("audio"));
        assert_eq!(video.len(), g[0] * g[1] * g[2] / 4, "item {item}");
        let frames = r.golden.meta["audio_frames"][item].as_u64().unwrap() as usize;
        assert_eq!(
            audio.len(),
            avflow::model::omni::audio::output_lengths(frames).1,
            "item {item}"
        );
        // Each item's clock starts at 0; the last grid row is t = grid_t − 1.
        assert_eq!(video[0].grid, Some([0, 0, 0]), "item {item}");
        assert_eq!(video.last().unwrap().grid.unwrap()[0], g[0] - 1);
        assert_eq!(audio[0].time, Some([0.0, 0.04]), "item {item}");
    }
    // A time range of one item selects only that item's positions.
    let sel = r.map.time_span(0.0, 1.0, Some(1));
    assert!(!sel.is_empty() && sel.iter().all(|&p| r.map.tokens[p].item == Some(1)));
}

/// `avflow prepare` on files whose codec FFmpeg cannot decode (a video stream, the sound of a video, an
/// audio file): a failed run whose message names the file, says the codec is unsupported and how to convert
/// it — never a panic.
#[test]
fn unsupported_codecs_fail_with_the_file_and_the_fix() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let model = fixtures().join("omni-tiny-a");
    let bad = fixtures().join("media/unsupported");
    let dir = tempfile::tempdir().unwrap();
    for (flag, file, needles) in [
        (
            "--video",
            "video_codec.avi",
            ["unsupported video codec", "libx264"],
        ),
        (
            "--video",
            "audio_track_codec.avi",
            ["unsupported audio codec", "--no-audio-in-video"],
        ),
        (
            "--audio",
            "audio_codec.wav",
            ["unsupported audio codec", "pcm_s16le"],
        ),
        (
            "--image",
            "video_codec.avi",
            ["unsupported image codec", ".png"],
        ),
    ] {
        let run = std::process::Command::new(bin)
            .args(["prepare", "--model"])
            .arg(&model)
            .arg(flag)
            .arg(bad.join(file))
            .args(["--question", "q", "--out"])
            .arg(dir.path().join("x.safetensors"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        for n in needles.iter().chain(&[file, "Fix:", "ffmpeg -i"]) {
            assert!(err.contains(n), "{file}: lacks {n:?}: {err}");
        }
    }
    // Without its sound the clip with the unsupported track is fine.
    let run = std::process::Command::new(bin)
        .args(["prepare", "--model"])
        .arg(&model)
        .arg("--video")
        .arg(bad.join("audio_track_codec.avi"))
        .args(["--no-audio-in-video", "--question", "q", "--out"])
        .arg(dir.path().join("y.safetensors"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A silent clip next to one whose sound is interleaved: transformers' position ids would treat the silent
/// clip's tokens as text (qwen-omni-utils refuses it), so prepare refuses it with the ways out; without
/// audio-in-video both clips are fine.
#[test]
fn silent_video_next_to_one_with_sound_is_refused() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let model = fixtures().join("omni-tiny-a");
    let vdir = fixtures().join("media/video");
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(bin)
            .args(["prepare", "--model"])
            .arg(&model)
            .arg("--video")
            .arg(vdir.join("basic.mkv"))
            .arg("--video")
            .arg(vdir.join("noaudio.mkv"))
            .args(["--question", "q", "--min-pixels", "3136", "--out"])
            .arg(dir.path().join("x.safetensors"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for n in [
        "noaudio.mkv",
        "no audio track",
        "Fix:",
        "--no-audio-in-video",
    ] {
        assert!(err.contains(n), "lacks {n:?}: {err}");
    }
    let out = run(&["--no-audio-in-video"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
