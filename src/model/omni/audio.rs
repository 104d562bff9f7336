//! Qwen2.5-Omni audio tower (Whisper-style encoder with windowed attention).
//!
//! Port of `Qwen2_5OmniAudioEncoder` (+ `chunk_and_pad_features`, `get_valid_indices`, `get_pool_indices`):
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! The mel of each clip is cut into chunks of `2·n_window` frames; the conv stem and the attention run per
//! chunk (zero padding between chunks in transformers is the same as the convolutions' own zero padding, so
//! each chunk is processed at its own length here, runs of equal-length chunks batched together). Then
//! pairs of frames are averaged per clip, `ln_post`, `proj`: 25 tokens per second of audio.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::nn::{compute_dtype, linear, LayerNorm, Lin};
use crate::model::omni::config::AudioConfig;
use crate::model::whisper::{ConvK3, EncoderLayer};

/// Number of frames after the stride-2 conv and after the stride-2 pooling, for a clip of `mel_len` frames.
pub fn output_lengths(mel_len: usize) -> (usize, usize) {
    let after_cnn = (mel_len.saturating_sub(1)) / 2 + 1;
    let out = (after_cnn.saturating_sub(2)) / 2 + 1;
    (after_cnn, out)
}

/// Chunk lengths of one clip: `2·n_window` frames each, the last one the remainder.
pub fn chunk_lengths(mel_len: usize, n_window: usize) -> Vec<usize> {
    let w = 2 * n_window;
    let n = mel_len.div_ceil(w);
    (0..n)
        .map(|i| {
            if i + 1 == n && mel_len % w != 0 {
                mel_len % w
            } else {
                w
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct AudioEncoder {
    cfg: AudioConfig,
    conv1: ConvK3,
    conv2: ConvK3,
    layers: Vec<EncoderLayer>,
    ln_post: LayerNorm,
    proj: Lin,
    positional: Tensor,
}

/// Whisper's sinusoidal table: `[length, channels]` = cat(sin, cos) (`SinusoidsPositionEmbedding`).
fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let inc = (10000f64).ln() / (half as f64 - 1.0);
    let inv: Vec<f32> = (0..half)
        .map(|i| (-(inc as f32) * i as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(length * channels);
    for t in 0..length {
        let row: Vec<f32> = inv.iter().map(|&f| t as f32 * f).collect();
        out.extend(row.iter().map(|x| x.sin()));
        out.extend(row.iter().map(|x| x.cos()));
    }
    out
}

impl AudioEncoder {
    /// `vb` at `audio_tower`.
    pub fn new(cfg: &AudioConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let conv1 = ConvK3::new(cfg.num_mel_bins, d, 1, vb.pp("conv1"))?;
        let conv2 = ConvK3::new(d, d, 2, vb.pp("conv2"))?;
        let layers = (0..cfg.encoder_layers)
            .map(|i| {
                EncoderLayer::new(
                    cfg.d_model,
                    cfg.encoder_attention_heads,
                    cfg.encoder_ffn_dim,
                    &cfg.activation_function,
                    vb.pp(format!("layers.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let positional = Tensor::from_vec(
            sinusoids(cfg.max_source_positions, d),
            (cfg.max_source_positions, d),
            vb.device(),
        )?
        .to_dtype(compute_dtype(&vb))?;
        Ok(Self {
            cfg: cfg.clone(),
            conv1,
            conv2,
            layers,
            ln_post: LayerNorm::new(d, 1e-5, vb.pp("ln_post"))?,
            proj: linear(d, cfg.output_dim, true, vb.pp("proj"))?,
            positional,
        })
    }

    /// `features`: `[num_mel_bins, total_frames]` (the valid frames of every clip, concatenated);
    /// `lens`: frames per clip. Returns `[Σ tokens, output_dim]`.
    pub fn forward(&self, features: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (bins, total) = features.dims2()?;
        if bins != self.cfg.num_mel_bins {
            return Err(Error::Prompt(format!(
                "audio features have {bins} mel bins, the model expects {}",
                self.cfg.num_mel_bins
            )));
        }
        if lens.iter().sum::<usize>() != total || lens.contains(&0) {
            return Err(Error::Prompt(format!(
                "audio lengths {lens:?} do not add up to the {total} feature frames (or one is empty)"
            )));
        }
        let dtype = self.positional.dtype();
        // Time-major frames `[total, bins]`: the convolutions run as products over frames.
        let features_t = features.to_dtype(dtype)?.t()?.contiguous()?;
        // 1. Conv stem per chunk, runs of equal-length chunks batched.
        let mut chunks = Vec::new(); // (start frame, length)
        let mut off = 0;
        for &l in lens {
            for c in chunk_lengths(l, self.cfg.n_window) {
                chunks.push((off, c));
                off += c;
            }
        }
        let mut embeds = Vec::new();
        let mut bounds = vec![0usize];
        let mut i = 0;
        while i < chunks.len() {
            let len = chunks[i].1;
            let mut j = i + 1;
            while j < chunks.len() && chunks[j].1 == len && chunks[j].0 == chunks[j - 1].0 + len {
                j += 1;
            }
            let m = j - i;
            let x = features_t
                .narrow(0, chunks[i].0, m * len)?
                .reshape((m, len, bins))?;
            let d = self.cfg.d_model;
            let h = self.conv1.forward(&x)?.gelu_erf()?.reshape((m, len, d))?;
            let h = self.conv2.forward(&h)?.gelu_erf()?; // [m·len', d]
            let lp = h.dim(0)? / m;
            if lp > self.cfg.max_source_positions {
                return Err(Error::Prompt(format!(
                    "audio chunk of {lp} frames exceeds max_source_positions {}",
                    self.cfg.max_source_positions
                )));
            }
            let h = h
                .reshape((m, lp, d))?
                .broadcast_add(&self.positional.narrow(0, 0, lp)?.unsqueeze(0)?)?;
            embeds.push(h.reshape((m * lp, d))?);
            for _ in 0..m {
                let last = *bounds.last().unwrap_or(&0);
                bounds.push(last + lp);
            }
            i = j;
        }
        let mut x = Tensor::cat(&embeds, 0)?;
        // 2. Transformer layers, attention inside each chunk.
        for layer in &self.layers {
            x = layer.forward(&x, &bounds)?;
        }
        // 3. Average pairs per clip, ln_post, proj.
        let mut pooled = Vec::new();
        let mut off = 0;
        for &l in lens {
            let (after, out) = output_lengths(l);
            if out > 0 && 2 * out <= after {
                let seg = x
                    .narrow(0, off, 2 * out)?
                    .reshape((out, 2, self.cfg.d_model))?;
                let a = seg.narrow(1, 0, 1)?.squeeze(1)?;
                let b = seg.narrow(1, 1, 1)?.squeeze(1)?;
                pooled.push(((a + b)? / 2.0)?);
            } else {
                return Err(Error::Prompt(format!(
                    "audio clip of {l} mel frames is too short"
                )));
            }
            off += after;
        }
        let x = Tensor::cat(&pooled, 0)?;
        self.proj.forward(&self.ln_post.forward(&x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_reference_formulas() {
        // 30 s of audio: 3000 mel frames → 1500 after the conv → 750 tokens (25 per second).
        assert_eq!(output_lengths(3000), (1500, 750));
        assert_eq!(output_lengths(601), (301, 150));
        assert_eq!(chunk_lengths(450, 100), vec![200, 200, 50]);
        assert_eq!(chunk_lengths(400, 100), vec![200, 200]);
    }
}
