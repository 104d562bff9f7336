//! From media files and a question to model inputs with `avflow prepare`, against the real pipeline
//! (qwen-omni-utils + `Qwen2_5OmniProcessor` + HF's Thinker on the same files): the written tensors, under
//! the processor's names, must equal the reference's, and the forward on them its logits. The processor's
//! own parts against the reference on pre-decoded media are tested beside it (the family's `processor.rs`).

use std::path::{Path, PathBuf};

#[allow(dead_code)]
mod common;
use common::pipeline::check_pipeline;

use candle_core::{DType, Device};

use avflow::prompt::{TokenInfo, TokenMap};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
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
    let map: TokenMap = serde_json::from_str(&std::fs::read_to_string(&spans).unwrap()).unwrap();
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

/// basic.mkv with its sound (interleaved per 2-s chunk), every option at its default.
#[test]
fn pipeline_clip_with_its_sound_matches_hf() {
    let r = check_pipeline("basic_av");
    // One clip of 400 valid mel frames.
    let mask = r.ours["feature_attention_mask"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap();
    let lens: Vec<i64> = mask.iter().map(|row| row.iter().sum()).collect();
    assert_eq!(lens, [400]);
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

/// `--start 2.3 --end 6.1` on an 8-s clip with 48 kHz stereo sound: qwen-omni-utils' `video_start`/`video_end`
/// (frames 19..=48 sampled as a clip of their own, at 1.6 fps) and librosa's cut of the sound before
/// resampling give the same ids, positions and logits; the token map's seconds count from the range's start.
#[test]
fn pipeline_time_range_of_a_clip_matches_hf() {
    let r = check_pipeline("range_av");
    assert!(r.stderr.contains("used 2.3..6.1 s"), "{}", r.stderr);
    let mask = r.ours["feature_attention_mask"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap();
    let lens: Vec<i64> = mask.iter().map(|row| row.iter().sum()).collect();
    assert_eq!(lens, [380]); // 3.8 s
    let last_audio = r
        .map
        .tokens
        .iter()
        .filter(|t| t.group == "audio")
        .filter_map(|t| t.time)
        .fold(0.0f64, |a, s| a.max(s[1]));
    assert!(
        (last_audio - 3.8).abs() < 0.05,
        "audio ends at {last_audio} s of the range"
    );
}

/// `--start 0.3` (no end) on an image and a recording: the recording from 0.3 s on (`audio_start`), the
/// image untouched.
#[test]
fn pipeline_time_range_of_a_recording_matches_hf() {
    check_pipeline("range_audio");
}

/// Two clips, each with its own sound, in command-line order: ids, grids, TMRoPE positions (each video's
/// times start again at its own start) and logits as HF; the token map gives each position its item.
#[test]
fn two_videos_in_one_prompt_match_hf() {
    let r = check_pipeline("two_videos");
    let model = fixtures().join("omni-tiny-a");
    let tk = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let id = |t: &str| tk.token_to_id(t).unwrap() as i64;
    let (vision_bos, vision_eos, audio) =
        (id("<|vision_bos|>"), id("<|vision_eos|>"), id("<|AUDIO|>"));
    // Expected item per position from HF's ids: the k-th <|vision_bos|> … <|vision_eos|> is item k; and
    // each item's audio placeholders.
    let mut want = Vec::new();
    let mut audio_per_item = Vec::new();
    let (mut k, mut inside) = (0usize, false);
    for id in r.golden.i64s("input_ids") {
        if id == vision_bos {
            inside = true;
            audio_per_item.push(0usize);
        }
        want.push(inside.then_some(k));
        if inside && id == audio {
            audio_per_item[k] += 1;
        }
        if id == vision_eos {
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
        let of = |group: &str| -> Vec<&TokenInfo> {
            r.map
                .tokens
                .iter()
                .filter(|t| t.item == Some(item) && t.group == group)
                .collect()
        };
        let (video, audio) = (of("video"), of("audio"));
        assert_eq!(video.len(), g[0] * g[1] * g[2] / 4, "item {item}");
        assert_eq!(audio.len(), audio_per_item[item], "item {item}");
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

/// Time ranges that hold nothing are refused before any decoding, naming the file, the clip's length and
/// the fix: past the end of a 4-s clip, and empty.
#[test]
fn time_ranges_outside_the_clip_are_refused() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let model = fixtures().join("omni-tiny-a");
    let clip = fixtures().join("media/video/basic.mkv");
    let dir = tempfile::tempdir().unwrap();
    let run = |range: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["prepare", "--model"])
            .arg(&model)
            .arg("--video")
            .arg(&clip)
            .args(["--question", "q", "--out"])
            .arg(dir.path().join("x.safetensors"))
            .args(range)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--start", "9", "--end", "12"]);
    for n in ["basic.mkv", "4.00 s", "Fix"] {
        assert!(err.contains(n), "lacks {n:?}: {err}");
    }
    let err = run(&["--start", "3", "--end", "2"]);
    assert!(
        err.contains("3..2 s is empty") && err.contains("Fix"),
        "{err}"
    );
    assert!(!dir.path().join("x.safetensors").exists());
}

/// Plausible mistakes get pointed errors: an image passed as --video says to use --image, and the audio
/// decoders' own probe messages (symphonia's "probe reached EOF") stay out of the user's terminal.
#[test]
fn an_image_given_as_a_video_says_to_use_image() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let model = fixtures().join("omni-tiny-a");
    let still = fixtures().join("media/video/still.png");
    let dir = tempfile::tempdir().unwrap();
    let run = |flag: &str| {
        let out = std::process::Command::new(bin)
            .args(["prepare", "--model"])
            .arg(&model)
            .arg(flag)
            .arg(&still)
            .args(["--question", "q", "--out"])
            .arg(dir.path().join("x.safetensors"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run("--video");
    assert!(!ok);
    assert!(
        err.contains("still.png") && err.contains("is an image") && err.contains("--image"),
        "{err}"
    );
    let (ok, err) = run("--audio");
    assert!(!ok);
    assert!(
        !err.contains("symphonia") && !err.contains("ERROR"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line, avflow's: {err}");
    assert!(run("--image").0);
}
