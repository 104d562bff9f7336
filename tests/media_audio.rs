//! The audio half of the media pipeline against librosa and transformers: goldens made by
//! `tools/make_audio_goldens.py` (`librosa.load(sr=16000)` waveforms and `WhisperFeatureExtractor`
//! features as configured by Qwen2.5-Omni). No network, no Python.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use avflow::media::audio::{
    concat_features, decode_audio, has_audio, is_no_audio, load_16k, log_mel, n_valid_frames,
    resample, AudioFeatures, N_MELS,
};
use avflow::Error;

/// The bound for log-mel on the same waveform.
const MEL_TOL: f32 = 1e-3;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media/audio")
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        dir().join(format!("{name}.golden.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn source(g: &HashMap<String, Tensor>) -> (u32, usize, usize) {
    let v = g["source"].to_vec1::<i64>().unwrap();
    (v[0] as u32, v[1] as usize, v[2] as usize)
}

/// (max |Δ|, mean |Δ|)
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len().max(1) as f64) as f32)
}

/// The 16 kHz waveform librosa gives: stored for resampled clips, the file itself otherwise.
fn librosa_wave(name: &str, g: &HashMap<String, Tensor>) -> Vec<f32> {
    match g.get("wave16k") {
        Some(w) => vec_f32(w),
        None => {
            let d = decode_audio(dir().join(name)).unwrap();
            assert_eq!(d.sample_rate, 16000);
            d.samples
        }
    }
}

const CLIPS: [&str; 4] = [
    "mono16k.wav",
    "stereo44k.wav",
    "stereo48k.flac",
    "aac_in_video.mp4",
];

#[test]
fn decode_reports_rate_channels_duration() {
    for name in CLIPS {
        let g = golden(name);
        let (sr, ch, frames) = source(&g);
        let d = decode_audio(dir().join(name)).unwrap();
        eprintln!(
            "{name}: {} Hz, {} ch, {} samples, {:.3} s",
            d.sample_rate,
            d.channels_in,
            d.samples.len(),
            d.seconds
        );
        assert_eq!(d.sample_rate, sr, "{name}");
        assert_eq!(d.channels_in, ch, "{name}");
        assert_eq!(d.samples.len(), frames, "{name}");
        assert!(
            (d.seconds - frames as f64 / sr as f64).abs() < 1e-9,
            "{name}"
        );
        assert!(has_audio(dir().join(name)).unwrap(), "{name}");
    }
}

#[test]
fn lossless_clips_decode_bit_exact_to_their_pcm() {
    // mono16k.wav: librosa returns the file's samples untouched (asserted by the generator), and the
    // features below match; here check a few samples are exact multiples of 1/32768 (int16 PCM).
    let d = decode_audio(dir().join("mono16k.wav")).unwrap();
    for &v in d.samples.iter().step_by(997) {
        assert_eq!((v * 32768.0).fract(), 0.0);
    }
}

#[test]
fn ogg_vorbis_decodes_with_expected_length() {
    let p = dir().join("mono22k.ogg");
    let d = decode_audio(&p).unwrap();
    eprintln!(
        "mono22k.ogg: {} Hz, {} ch, {} samples, {:.4} s",
        d.sample_rate,
        d.channels_in,
        d.samples.len(),
        d.seconds
    );
    assert_eq!(d.sample_rate, 22050);
    assert_eq!(d.channels_in, 1);
    // Written as exactly 22050 samples; vorbis may round up to its block size but never drops audio.
    assert!(
        (22050..=22050 + 2048).contains(&d.samples.len()),
        "{}",
        d.samples.len()
    );
    let peak = d.samples.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(peak > 0.2 && peak < 1.0, "peak {peak}");
    assert_eq!(
        load_16k(&p).unwrap().len(),
        (d.samples.len() * 16000).div_ceil(22050)
    );
}

#[test]
fn aac_track_of_mp4_decodes_through_ffmpeg() {
    let name = "aac_in_video.mp4";
    let g = golden(name);
    let ours = load_16k(dir().join(name)).unwrap();
    let theirs = vec_f32(&g["wave16k"]);
    let (max, mean) = diff(&ours, &theirs);
    eprintln!("{name}: 16 kHz waveform vs PyAV + librosa.resample: max|Δ| = {max:.3e}, mean|Δ| = {mean:.3e}");
    assert!(max <= 1e-3 && mean <= 1e-4, "max {max} mean {mean}");
}

#[test]
fn resampler_matches_librosa_soxr_hq() {
    for name in ["stereo44k.wav", "stereo48k.flac"] {
        let g = golden(name);
        let theirs = vec_f32(&g["wave16k"]);
        let d = decode_audio(dir().join(name)).unwrap();
        let ours = resample(&d.samples, d.sample_rate, 16000);
        let (max, mean) = diff(&ours, &theirs);
        eprintln!("{name}: resample {} → 16000 vs librosa soxr_hq: max|Δ| = {max:.3e}, mean|Δ| = {mean:.3e}", d.sample_rate);
        assert!(max <= 1e-4 && mean <= 1e-5, "{name}: max {max} mean {mean}");
    }
}

#[test]
fn log_mel_matches_transformers_on_the_same_waveform() {
    for name in CLIPS.iter().copied().chain(["synthetic_tail"]) {
        let g = golden(name);
        let wave = if name == "synthetic_tail" {
            vec_f32(&g["wave16k"])
        } else {
            librosa_wave(name, &g)
        };
        let want = &g["features"];
        let (mels, n) = want.dims2().unwrap();
        let (ours, n_ours) = log_mel(&wave);
        assert_eq!(mels, N_MELS);
        assert_eq!(n_ours, n, "{name}: valid frames");
        assert_eq!(n, n_valid_frames(wave.len()));
        let (max, mean) = diff(&ours, &vec_f32(want));
        eprintln!("{name}: log-mel vs WhisperFeatureExtractor ({n} frames): max|Δ| = {max:.3e}, mean|Δ| = {mean:.3e}");
        assert!(max <= MEL_TOL, "{name}: max|Δ| {max} > {MEL_TOL}");
    }
}

#[test]
fn log_mel_end_to_end_from_files() {
    for name in CLIPS {
        let g = golden(name);
        let want = &g["features"];
        let f = AudioFeatures::from_path(dir().join(name), &Device::Cpu).unwrap();
        assert_eq!(f.features.dims(), want.dims(), "{name}");
        let (max, mean) = diff(&vec_f32(&f.features), &vec_f32(want));
        eprintln!("{name}: end-to-end log-mel vs HF (librosa.load → processor): max|Δ| = {max:.3e}, mean|Δ| = {mean:.3e}");
        assert!(max <= 2e-2 && mean <= 1e-4, "{name}: max {max} mean {mean}");
    }
}

#[test]
fn features_concatenate_for_omni_inputs() {
    let a = AudioFeatures::from_path(dir().join("mono16k.wav"), &Device::Cpu).unwrap();
    let b = AudioFeatures::from_path(dir().join("stereo48k.flac"), &Device::Cpu).unwrap();
    let (t, lens) = concat_features(&[a.clone(), b.clone()]).unwrap().unwrap();
    assert_eq!(lens, vec![320, 200]);
    assert_eq!(t.dims(), &[128, 520]);
    assert!(concat_features(&[]).unwrap().is_none());
}

fn expect_err(file: &str, needles: &[&str]) -> Error {
    let p = dir().join(file);
    let e = match decode_audio(&p) {
        Ok(d) => panic!(
            "{file}: decoded {} samples, expected an error",
            d.samples.len()
        ),
        Err(e) => e,
    };
    let msg = e.to_string();
    eprintln!("{file}: {msg}");
    assert!(
        msg.contains(file),
        "{file}: message does not name the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "{file}: message lacks {n:?}: {msg}");
    }
    assert!(matches!(e, Error::Inputs { .. }));
    e
}

#[test]
fn bad_inputs_give_clear_errors() {
    let e = expect_err("empty.wav", &["zero-length"]);
    assert!(!is_no_audio(&e));
    let e = expect_err("truncated.wav", &["truncated", "re-export"]);
    assert!(!is_no_audio(&e));
    let e = expect_err(
        "not_audio.wav",
        &["not a recognised audio or video file", "convert"],
    );
    assert!(!is_no_audio(&e));
    let e = expect_err(
        "does_not_exist.wav",
        &["cannot read the file", "check the path"],
    );
    assert!(!is_no_audio(&e));
    // A folder.
    let e = decode_audio(dir()).unwrap_err();
    assert!(e.to_string().contains("is a folder"), "{e}");
    // An empty file (0 bytes), whatever its name.
    let tmp = tempfile::Builder::new().suffix(".flac").tempfile().unwrap();
    let e = decode_audio(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("empty (0 bytes)"), "{e}");
    assert!(has_audio(dir().join("not_audio.wav")).is_err());
}

/// Sound whose codec FFmpeg has no decoder for (tools/make_pipeline_goldens.py patches the format tag): an
/// audio file and the track of a video. The error names the file, the tag and the conversion, and is not
/// the "no audio stream" error (a video with such a track must not silently lose its sound).
#[test]
fn unsupported_audio_codec_says_so_with_the_fix() {
    let unsupported =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media/unsupported");
    for (file, fix) in [
        ("audio_codec.wav", "-c:a pcm_s16le"),
        ("audio_track_codec.avi", "--no-audio-in-video"),
    ] {
        let e = decode_audio(unsupported.join(file)).expect_err(file);
        assert!(!is_no_audio(&e) && matches!(e, Error::Inputs { .. }));
        let msg = e.to_string();
        for needle in [
            file,
            "unsupported audio codec",
            "0x4f51",
            "Fix:",
            "ffmpeg -i",
            fix,
        ] {
            assert!(msg.contains(needle), "{file}: lacks {needle:?}: {msg}");
        }
        assert!(has_audio(unsupported.join(file)).unwrap());
    }
}

#[test]
fn video_without_audio_is_a_distinct_error() {
    let e = expect_err("video_only.mp4", &["no audio stream", "video-only"]);
    assert!(is_no_audio(&e));
    assert!(!has_audio(dir().join("video_only.mp4")).unwrap());
}

#[test]
fn sixty_seconds_is_fast() {
    // 60 s of 44.1 kHz "speech-like" audio: resample + log-mel (release-grade dev profile, one thread).
    let sr = 44100usize;
    let x: Vec<f32> = (0..60 * sr)
        .map(|i| {
            let t = i as f32 / sr as f32;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin() * (1.0 + (7.0 * t).sin()) * 0.5
                + 0.05 * (2.0 * std::f32::consts::PI * 3100.0 * t).sin()
        })
        .collect();
    let t0 = Instant::now();
    let y = resample(&x, sr as u32, 16000);
    let t_res = t0.elapsed();
    let t1 = Instant::now();
    let (f, n) = log_mel(&y);
    let t_mel = t1.elapsed();
    assert_eq!(n, 6000);
    assert_eq!(f.len(), 128 * 6000);
    eprintln!(
        "60 s clip: resample 44.1k→16k {:.1} ms, log-mel {:.1} ms",
        t_res.as_secs_f64() * 1e3,
        t_mel.as_secs_f64() * 1e3
    );
    assert!(t_mel.as_secs_f64() < 1.0, "log-mel of 60 s took {t_mel:?}");
}
