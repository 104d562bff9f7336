//! Qwen2.5-Omni audio tower (Whisper-style encoder with windowed attention).
//!
//! Port of `Qwen2_5OmniAudioEncoder` (+ `chunk_and_pad_features`, `get_valid_indices`, `get_pool_indices`):
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! The mel of each clip is cut into chunks of `2·n_window` frames; the conv stem and the attention run per
//! chunk (zero padding between chunks in transformers is the same as the convolutions' own zero padding, so
//! each chunk is processed at its own length here, runs of equal-length chunks batched together). Then
//! pairs of frames are averaged per clip, `ln_post`, `proj`: 25 tokens per second of audio.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::nn::{compute_dtype, linear, qkv_heads, segment_attention, Act, LayerNorm, Lin};
use crate::model::omni::config::AudioConfig;

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
struct EncoderLayer {
    q_proj: Lin,
    k_proj: Lin,
    v_proj: Lin,
    out_proj: Lin,
    self_attn_layer_norm: LayerNorm,
    fc1: Lin,
    fc2: Lin,
    final_layer_norm: LayerNorm,
    heads: usize,
    act: Act,
}

impl EncoderLayer {
    fn new(cfg: &AudioConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let a = vb.pp("self_attn");
        Ok(Self {
            q_proj: linear(d, d, true, a.pp("q_proj"))?,
            k_proj: linear(d, d, false, a.pp("k_proj"))?,
            v_proj: linear(d, d, true, a.pp("v_proj"))?,
            out_proj: linear(d, d, true, a.pp("out_proj"))?,
            self_attn_layer_norm: LayerNorm::new(d, 1e-5, vb.pp("self_attn_layer_norm"))?,
            fc1: linear(d, cfg.encoder_ffn_dim, true, vb.pp("fc1"))?,
            fc2: linear(cfg.encoder_ffn_dim, d, true, vb.pp("fc2"))?,
            final_layer_norm: LayerNorm::new(d, 1e-5, vb.pp("final_layer_norm"))?,
            heads: cfg.encoder_attention_heads,
            act: Act::from_name(&cfg.activation_function)?,
        })
    }

    fn forward(&self, x: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let hd = x.dim(1)? / self.heads;
        let h = self.self_attn_layer_norm.forward(x)?;
        let [q, k, v] = qkv_heads(&h, &self.q_proj, &self.k_proj, &self.v_proj, self.heads)?;
        let bf16 = self.q_proj.weight().dtype() == DType::BF16;
        let attn = segment_attention(&q, &k, &v, bounds, 1.0 / (hd as f64).sqrt(), bf16)?;
        let x = (x + self.out_proj.forward(&attn)?)?;
        let h = self.final_layer_norm.forward(&x)?;
        let h = self.act.then(&self.fc1.forward(&h)?, &self.fc2)?;
        let mut out = (x + h)?;
        if out.dtype() == DType::F16 {
            let c = 65504.0 - 1000.0;
            out = out.clamp(-c, c)?;
        }
        Ok(out)
    }
}

/// A kernel-3, padding-1 `nn.Conv1d` (the Whisper stem) as one linear product over time-major frames:
/// each output frame's three input frames side by side (`[m·out, 3·in]`, im2col) times the kernel laid
/// out tap-major (`[out_c, 3·in]`). Why: it then runs as every linear layer does (oneDNN, bf16 operands
/// for a bf16 model, as transformers' bf16 convolution) instead of candle's f32 convolution.
#[derive(Debug, Clone)]
struct ConvK3 {
    lin: Lin,
    stride: usize,
}

impl ConvK3 {
    fn new(in_c: usize, out_c: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((out_c, in_c, 3), "weight")?; // [out, in, tap]
        let w = w
            .permute((0, 2, 1))?
            .contiguous()?
            .reshape((out_c, 3 * in_c))?;
        let b = vb.get(out_c, "bias")?.to_dtype(compute_dtype(&vb))?;
        Ok(Self {
            lin: Lin::from_weight(w, Some(b)),
            stride,
        })
    }

    /// `x`: `[m, len, in]` (m sequences, time-major). Returns `[m·out, out_c]` with
    /// `out = (len − 1) / stride + 1`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (m, len, c) = x.dims3()?;
        let s = self.stride;
        let out = (len.saturating_sub(1)) / s + 1;
        // Zero frames: one before (the padding), and after enough that every tap's strided run fits.
        let right = (2 + s * out).saturating_sub(len + 1);
        let z = |n: usize| Tensor::zeros((m, n, c), x.dtype(), x.device());
        let xp = Tensor::cat(&[&z(1)?, x, &z(right)?], 1)?;
        let taps = (0..3)
            .map(|j| {
                let t = xp.narrow(1, j, s * out)?;
                Ok(if s == 1 {
                    t
                } else {
                    t.reshape((m, out, s, c))?.narrow(2, 0, 1)?.squeeze(2)?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cols = Tensor::cat(&taps, 2)?.reshape((m * out, 3 * c))?;
        self.lin.forward(&cols)
    }
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
            .map(|i| EncoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
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
