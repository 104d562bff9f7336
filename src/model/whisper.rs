//! Whisper encoder parts both families use: the pre-LN encoder layer (Qwen2.5-Omni's audio tower is a
//! Whisper-style encoder with windowed attention; video-SALMONN 2+ runs Whisper-large-v3's encoder) and the
//! kernel-3 convolution stem.
//! Port of `WhisperEncoderLayer` and the stem of `WhisperEncoder`:
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/whisper/modeling_whisper.py>

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::model::nn::{compute_dtype, linear, qkv_heads, segment_attention, Act, LayerNorm, Lin};

#[derive(Debug, Clone)]
pub struct EncoderLayer {
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
    /// `vb` at one `layers.{i}`: width `d`, `heads` attention heads, an FFN of `ffn`, activation `act`.
    pub fn new(d: usize, heads: usize, ffn: usize, act: &str, vb: VarBuilder) -> Result<Self> {
        let a = vb.pp("self_attn");
        Ok(Self {
            q_proj: linear(d, d, true, a.pp("q_proj"))?,
            k_proj: linear(d, d, false, a.pp("k_proj"))?,
            v_proj: linear(d, d, true, a.pp("v_proj"))?,
            out_proj: linear(d, d, true, a.pp("out_proj"))?,
            self_attn_layer_norm: LayerNorm::new(d, 1e-5, vb.pp("self_attn_layer_norm"))?,
            fc1: linear(d, ffn, true, vb.pp("fc1"))?,
            fc2: linear(ffn, d, true, vb.pp("fc2"))?,
            final_layer_norm: LayerNorm::new(d, 1e-5, vb.pp("final_layer_norm"))?,
            heads,
            act: Act::from_name(act)?,
        })
    }

    /// `x`: `[n, d]` rows of several sequences; attention runs inside each `bounds` segment.
    pub fn forward(&self, x: &Tensor, bounds: &[usize]) -> Result<Tensor> {
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
pub struct ConvK3 {
    lin: Lin,
    stride: usize,
}

impl ConvK3 {
    pub fn new(in_c: usize, out_c: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
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
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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

/// `(name under layers.{i}., shape)` of one encoder layer's tensors, in checkpoint order (`k_proj` has no
/// bias).
pub fn layer_tensors(d: usize, ffn: usize) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    for n in ["q_proj", "v_proj", "out_proj"] {
        v.push((format!("self_attn.{n}.weight"), vec![d, d]));
        v.push((format!("self_attn.{n}.bias"), vec![d]));
    }
    v.push(("self_attn.k_proj.weight".into(), vec![d, d]));
    for n in ["self_attn_layer_norm", "final_layer_norm"] {
        v.push((format!("{n}.weight"), vec![d]));
        v.push((format!("{n}.bias"), vec![d]));
    }
    v.push(("fc1.weight".into(), vec![ffn, d]));
    v.push(("fc1.bias".into(), vec![ffn]));
    v.push(("fc2.weight".into(), vec![d, ffn]));
    v.push(("fc2.bias".into(), vec![d]));
    v
}
