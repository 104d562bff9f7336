//! Whisper log-mel exactly as `WhisperFeatureExtractor` (transformers 5.23, torch path) computes it for
//! Qwen2.5-Omni (`preprocessor_config.json`: feature_size 128, sampling_rate 16000, hop_length 160,
//! n_fft 400, chunk_length 300, dither 0, padding "max_length").
//!
//! What the processor does, and what we reproduce for the valid frames only:
//! 1. the waveform is truncated / zero-padded on the right to `N = 300 s · 16 kHz = 4_800_000` samples;
//! 2. `torch.stft(center=True)`: reflect-padding by 200 on both ends of the *padded* array, periodic
//!    Hann(400), hop 160 → N/160 + 1 frames, the last dropped → 30000 frames; frame f is centred on
//!    sample 160·f. So the last valid frame sees zeros (not a reflection) past the end of the clip;
//! 3. |X|², 128 Slaney mel filters (`mel_filter_bank(201, 128, 0, 8000, 16000, "slaney", "slaney")`);
//! 4. log10(max(x, 1e-10)); floor at `max − 8` where the max runs over the **whole padded
//!    spectrogram**: that includes the frames just past the valid ones that still overlap the clip's
//!    tail (all later frames are silence, log10(1e-10) = −10, which never exceeds any value);
//! 5. (x + 4) / 4;
//! 6. valid frames (`feature_attention_mask`): `ceil(len / 160)`, at most 30000.

use std::sync::{Arc, OnceLock};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 128;
pub const N_FREQ: usize = N_FFT / 2 + 1;
/// `chunk_length · sampling_rate`: the processor pads (or truncates) every clip to this many samples.
pub const N_SAMPLES: usize = 300 * 16_000;
/// `N_SAMPLES / HOP`: frames of the padded spectrogram.
pub const MAX_FRAMES: usize = N_SAMPLES / HOP;

fn hz_to_mel_slaney(f: f64) -> f64 {
    let (min_log_hz, min_log_mel, logstep) = (1000.0, 15.0, 27.0 / 6.4f64.ln());
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() * logstep
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz_slaney(m: f64) -> f64 {
    let (min_log_hz, min_log_mel, logstep) = (1000.0, 15.0, 6.4f64.ln() / 27.0);
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// HF `mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0, max_frequency=8000,
/// sampling_rate=16000, norm="slaney", mel_scale="slaney")`, row-major `[201, 128]` (f64, as HF builds it).
pub fn mel_filter_bank() -> Vec<f64> {
    let (mel_min, mel_max) = (hz_to_mel_slaney(0.0), hz_to_mel_slaney(8000.0));
    // np.linspace(mel_min, mel_max, 130)
    let n = N_MELS + 2;
    let step = (mel_max - mel_min) / (n - 1) as f64;
    let filter_freqs: Vec<f64> = (0..n)
        .map(|i| {
            if i == n - 1 {
                mel_max
            } else {
                mel_min + i as f64 * step
            }
        })
        .map(mel_to_hz_slaney)
        .collect();
    // np.linspace(0, 8000, 201)
    let fstep = (SAMPLE_RATE / 2) as f64 / (N_FREQ - 1) as f64;
    let fft_freqs: Vec<f64> = (0..N_FREQ)
        .map(|i| {
            if i == N_FREQ - 1 {
                8000.0
            } else {
                i as f64 * fstep
            }
        })
        .collect();
    let diff: Vec<f64> = filter_freqs.windows(2).map(|w| w[1] - w[0]).collect();
    let mut fb = vec![0f64; N_FREQ * N_MELS];
    for (k, &f) in fft_freqs.iter().enumerate() {
        for m in 0..N_MELS {
            let down = -(filter_freqs[m] - f) / diff[m];
            let up = (filter_freqs[m + 2] - f) / diff[m + 1];
            let enorm = 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
            fb[k * N_MELS + m] = down.min(up).max(0.0) * enorm;
        }
    }
    fb
}

/// Sparse per-mel rows of the filter bank: (first bin, weights).
struct MelRows(Vec<(usize, Vec<f64>)>);

fn mel_rows() -> &'static MelRows {
    static ROWS: OnceLock<MelRows> = OnceLock::new();
    ROWS.get_or_init(|| {
        let fb = mel_filter_bank();
        MelRows(
            (0..N_MELS)
                .map(|m| {
                    let col: Vec<f64> = (0..N_FREQ).map(|k| fb[k * N_MELS + m]).collect();
                    let first = col.iter().position(|&w| w != 0.0).unwrap_or(0);
                    let last = col.iter().rposition(|&w| w != 0.0).unwrap_or(0);
                    (first, col[first..=last.max(first)].to_vec())
                })
                .collect(),
        )
    })
}

fn hann() -> &'static [f64; N_FFT] {
    static W: OnceLock<[f64; N_FFT]> = OnceLock::new();
    W.get_or_init(|| {
        let mut w = [0f64; N_FFT];
        for (i, v) in w.iter_mut().enumerate() {
            // torch.hann_window(400) (periodic): 0.5 − 0.5·cos(2πi/400)
            *v = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos();
        }
        w
    })
}

fn fft() -> Arc<dyn Fft<f64>> {
    static F: OnceLock<Arc<dyn Fft<f64>>> = OnceLock::new();
    F.get_or_init(|| FftPlanner::new().plan_fft_forward(N_FFT))
        .clone()
}

/// Number of valid mel frames for a 16 kHz clip of `len` samples (`feature_attention_mask.sum()`).
pub fn n_valid_frames(len: usize) -> usize {
    len.div_ceil(HOP).min(MAX_FRAMES)
}

/// Log-mel of a 16 kHz mono clip: `([128 × n] row-major, mel-major like `input_features[0]`), n)` with
/// n = [`n_valid_frames`]. Empty input gives no frames.
pub fn log_mel(samples: &[f32]) -> (Vec<f32>, usize) {
    let len = samples.len().min(N_SAMPLES);
    let n_valid = n_valid_frames(len);
    if n_valid == 0 {
        return (Vec::new(), 0);
    }
    let (logmel, floor) = log10_mel(&samples[..len], N_SAMPLES);
    let mut out = vec![0f32; N_MELS * n_valid];
    for f in 0..n_valid {
        for m in 0..N_MELS {
            out[m * n_valid + f] = ((logmel[f * N_MELS + m].max(floor) + 4.0) / 4.0) as f32;
        }
    }
    (out, n_valid)
}

/// The whole padded spectrogram of a clip cut or zero-padded to `n_samples` (a multiple of [`HOP`]), as
/// `WhisperFeatureExtractor(chunk_length = n_samples / 16000)` returns `input_features[0]`: row-major
/// `[128, n_samples / 160]`, the frames past the clip included (silence: `log10(1e-10)` floored at the max − 8).
/// video-SALMONN 2+ feeds each 30-s segment so (`n_samples` = 480 000, 3000 frames).
pub fn log_mel_padded(samples: &[f32], n_samples: usize) -> Vec<f32> {
    let total = n_samples / HOP;
    let len = samples.len().min(n_samples);
    let (logmel, floor) = log10_mel(&samples[..len], n_samples);
    let computed = logmel.len() / N_MELS;
    let silence = ((-10f64).max(floor) + 4.0) / 4.0;
    let mut out = vec![silence as f32; N_MELS * total];
    for f in 0..computed.min(total) {
        for m in 0..N_MELS {
            out[m * total + f] = ((logmel[f * N_MELS + m].max(floor) + 4.0) / 4.0) as f32;
        }
    }
    out
}

/// log10 mel of the frames of `x` zero-padded to `n_samples` whose window reaches into `x` (frame-major
/// `[n][128]`), and the floor `max − 8` over the whole padded spectrogram (the silent frames past them
/// count as −10).
fn log10_mel(x: &[f32], n_samples: usize) -> (Vec<f64>, f64) {
    let len = x.len();
    let max_frames = n_samples / HOP;
    // Frames whose window reaches into the clip: f with 160f − 200 < len. They all take part in the max.
    let n_frames = (len + N_FFT / 2)
        .div_ceil(HOP)
        .min(max_frames)
        .max(len.div_ceil(HOP).min(max_frames));
    // Sample of the padded (to n_samples, zeros) array, reflect-extended by 200 on both ends.
    let at = |i: i64| -> f64 {
        let n = n_samples as i64;
        let mut j = i;
        if j < 0 {
            j = -j;
        }
        if j >= n {
            j = 2 * (n - 1) - j;
        }
        let j = j as usize;
        if j < len {
            x[j] as f64
        } else {
            0.0
        }
    };
    let win = hann();
    let fft = fft();
    let rows = mel_rows();
    let mut scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
    let mut buf = vec![Complex::new(0.0f64, 0.0); N_FFT];
    let mut power_a = [0f64; N_FREQ];
    let mut power_b = [0f64; N_FREQ];
    // log10 mel, frame-major while computing: [n_frames][128]
    let mut logmel = vec![0f64; n_frames * N_MELS];
    let fill = |f: usize, part: &mut dyn FnMut(usize, f64)| {
        let start = (f * HOP) as i64 - (N_FFT / 2) as i64;
        if start >= 0 && (start as usize + N_FFT) <= len {
            let s = start as usize;
            for k in 0..N_FFT {
                part(k, x[s + k] as f64 * win[k]);
            }
        } else {
            for (k, &wk) in win.iter().enumerate().take(N_FFT) {
                part(k, at(start + k as i64) * wk);
            }
        }
    };
    let mel_of = |power: &[f64; N_FREQ], out: &mut [f64]| {
        for (m, (first, w)) in rows.0.iter().enumerate() {
            let mut s = 0.0;
            for (i, &wi) in w.iter().enumerate() {
                s += wi * power[first + i];
            }
            out[m] = s.max(1e-10).log10();
        }
    };
    // Two real frames per complex FFT: z = a + i·b, A_k = (Z_k + conj Z_{N−k})/2, B_k = (Z_k − conj Z_{N−k})/(2i).
    let mut f = 0;
    while f < n_frames {
        let pair = f + 1 < n_frames;
        fill(f, &mut |k, v| buf[k] = Complex::new(v, 0.0));
        if pair {
            fill(f + 1, &mut |k, v| buf[k].im = v);
        }
        fft.process_with_scratch(&mut buf, &mut scratch);
        for k in 0..N_FREQ {
            let z = buf[k];
            let zc = buf[(N_FFT - k) % N_FFT].conj();
            let a = (z + zc) * 0.5;
            let b = (z - zc) * Complex::new(0.0, -0.5);
            power_a[k] = a.norm_sqr();
            power_b[k] = b.norm_sqr();
        }
        mel_of(&power_a, &mut logmel[f * N_MELS..(f + 1) * N_MELS]);
        if pair {
            mel_of(&power_b, &mut logmel[(f + 1) * N_MELS..(f + 2) * N_MELS]);
        }
        f += 2;
    }
    let mut max = logmel.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if n_frames < max_frames {
        max = max.max(-10.0); // the silent frames past the clip
    }
    (logmel, max - 8.0)
}
