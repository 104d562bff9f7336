#!/usr/bin/env python3
"""Audio fixtures + goldens for tests/media_audio.rs. Deterministic; one command:

    /work/pyenv/bin/python tools/make_audio_goldens.py

Writes small clips under tests/fixtures/media/audio/ (numpy + soundfile for wav/flac/ogg, the ffmpeg
CLI for the mp4 files) and, for every good clip, `<name>.golden.safetensors` with

* `wave16k`  f32 [n]         `librosa.load(path, sr=16000)` (mono, soxr_hq), as qwen-omni-utils loads audio;
                             for the mp4 (soundfile cannot read it) PyAV decodes, librosa resamples.
* `features` f32 [128, v]    `WhisperFeatureExtractor` as configured by Qwen2.5-Omni's
                             preprocessor_config.json (feature_size 128, chunk_length 300, ...), called the
                             way `Qwen2_5OmniProcessor._process_audio` calls it (padding="max_length",
                             return_attention_mask=True), `input_features[0, :, :v]` with
                             v = feature_attention_mask.sum() (= ceil(n / 160)).
* `source`   i64 [3]         sample rate, channels, frames of the clip as written.

`synthetic_tail.golden.safetensors` holds a waveform only (no clip): a quiet signal whose loudest
samples sit in its last few samples, length not a multiple of 160, to pin down the `max - 8` clamp
(computed by HF over the whole padded spectrogram, including frames past the valid ones).
"""
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "media", "audio")
PREPROC = os.path.join(ROOT, "tests", "fixtures", "omni-tiny-a")


def signal(sr, seconds, channels, seed):
    """Speech-like test signal: harmonic tones with vibrato, a chirp, AM, a little noise."""
    rng = np.random.default_rng(seed)
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    out = []
    for c in range(channels):
        f0 = 180.0 + 40 * c
        vib = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(vib) / sr
        x = sum((0.25 / k) * np.sin(k * phase + 0.3 * k) for k in range(1, 9))
        f1, f2 = 300.0, 6000.0  # chirp within the 16 kHz band
        x += 0.08 * np.sin(2 * np.pi * (f1 * t + (f2 - f1) * t**2 / (2 * seconds)))
        x *= 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t + c)
        x += 0.01 * rng.standard_normal(n)
        fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
        out.append(0.7 * x * fade)
    return np.stack(out, axis=1).astype(np.float32)


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def feature_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(PREPROC)
    assert (fe.feature_size, fe.sampling_rate, fe.hop_length, fe.n_fft, fe.chunk_length) == (128, 16000, 160, 400, 300)
    assert fe.n_samples == 4_800_000 and fe.dither == 0.0
    return fe


def hf_features(fe, wave):
    # As Qwen2_5OmniProcessor._process_audio: padding forced to max_length; audio_kwargs sampling_rate=16000,
    # return_attention_mask=True.
    out = fe([wave], sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="np")
    feats = out["input_features"][0]
    v = int(out["attention_mask"][0].sum())
    assert feats.shape == (128, 30000), feats.shape
    return np.ascontiguousarray(feats[:, :v].astype(np.float32)), v


def save(name, tensors):
    from safetensors.numpy import save_file

    save_file(tensors, os.path.join(OUT, name + ".golden.safetensors"))


def main():
    import librosa

    os.makedirs(OUT, exist_ok=True)
    fe = feature_extractor()
    clips = {}

    # 16 kHz mono wav (3.2 s): no resampling in the path.
    x = signal(16000, 3.2, 1, 1)
    sf.write(os.path.join(OUT, "mono16k.wav"), x, 16000, subtype="PCM_16")
    clips["mono16k.wav"] = (16000, 1, len(x))
    # 44.1 kHz stereo wav.
    x = signal(44100, 1.5, 2, 2)
    sf.write(os.path.join(OUT, "stereo44k.wav"), x, 44100, subtype="PCM_16")
    clips["stereo44k.wav"] = (44100, 2, len(x))
    # 48 kHz stereo flac (2.0 s).
    x = signal(48000, 2.0, 2, 3)
    sf.write(os.path.join(OUT, "stereo48k.flac"), x, 48000, subtype="PCM_16")
    clips["stereo48k.flac"] = (48000, 2, len(x))
    # ogg/vorbis 22.05 kHz mono, lossy: decode-length checks only (no golden).
    x = signal(22050, 1.0, 1, 4)
    sf.write(os.path.join(OUT, "mono22k.ogg"), x, 22050, format="OGG", subtype="VORBIS")
    # mp4: AAC 44.1 kHz stereo + a tiny h264 video stream (ffmpeg-next fallback).
    x = signal(44100, 1.0, 2, 5)
    tmp = os.path.join(OUT, "_tmp_src.wav")
    sf.write(tmp, x, 44100, subtype="PCM_16")
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=32x32:r=10:d=1", "-i", tmp, "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-shortest",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
           "-movflags", "+faststart", os.path.join(OUT, "aac_in_video.mp4"))
    os.remove(tmp)
    # A video with no audio track at all.
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", os.path.join(OUT, "video_only.mp4"))
    # Bad inputs.
    sf.write(os.path.join(OUT, "empty.wav"), np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    data = open(os.path.join(OUT, "mono16k.wav"), "rb").read()
    open(os.path.join(OUT, "truncated.wav"), "wb").write(data[: 44 + 2 * 8000 + 1])  # mid-data, odd byte
    open(os.path.join(OUT, "not_audio.wav"), "w").write("This is a text file, not a RIFF/WAVE file.\n" * 4)

    for name, (sr, ch, frames) in clips.items():
        wave, got_sr = librosa.load(os.path.join(OUT, name), sr=16000)
        assert got_sr == 16000
        feats, v = hf_features(fe, wave)
        t = {"features": feats, "source": np.array([sr, ch, frames], np.int64)}
        if sr != 16000 or ch != 1:  # else librosa returns the file's samples as they are: not stored twice
            t["wave16k"] = wave.astype(np.float32)
        else:
            assert np.array_equal(wave, sf.read(os.path.join(OUT, name), dtype="float32")[0])
        save(name, t)
        print(f"{name}: {sr} Hz x{ch}, {frames} frames -> {len(wave)} @16k, {v} mel frames")

    # mp4: soundfile cannot read it; decode with PyAV (float planar AAC output, mean over channels),
    # resample with librosa's soxr_hq as librosa.load would.
    import av

    with av.open(os.path.join(OUT, "aac_in_video.mp4")) as c:
        st = c.streams.audio[0]
        sr = st.codec_context.sample_rate
        chunks = [f.to_ndarray() for f in c.decode(st)]
    y = np.concatenate(chunks, axis=1).astype(np.float32)
    ch = y.shape[0]
    y = np.mean(y, axis=0)
    wave = librosa.resample(y, orig_sr=sr, target_sr=16000, res_type="soxr_hq").astype(np.float32)
    feats, v = hf_features(fe, wave)
    save("aac_in_video.mp4", {"wave16k": wave, "features": feats, "source": np.array([sr, ch, len(y)], np.int64)})
    print(f"aac_in_video.mp4: {sr} Hz x{ch}, {len(y)} frames -> {len(wave)} @16k, {v} mel frames")

    # Synthetic: very quiet, then loud in the last 12 samples; 8159 samples (not a multiple of 160), so the
    # burst sits 2 samples before the centre of the first frame past the valid ones: that frame holds the
    # spectrogram's maximum, which sets the `max - 8` floor of the valid frames.
    rng = np.random.default_rng(7)
    n = 8159
    w = (1e-4 * rng.standard_normal(n)).astype(np.float32)
    w[-12:] = (0.9 * np.sin(np.arange(12) * 0.7)).astype(np.float32)
    feats, v = hf_features(fe, w)
    save("synthetic_tail", {"wave16k": w, "features": feats, "source": np.array([16000, 1, n], np.int64)})
    print(f"synthetic_tail: {n} samples, {v} mel frames")

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"total fixture size: {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
