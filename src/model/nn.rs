//! Small building blocks shared by the encoders and the decoder, written to follow transformers' numerics
//! (norms in f32, softmax in f32) rather than candle's fused variants where the two differ.

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::model::{gemm, simd};

/// Qwen2 RMSNorm: normalise in f32, cast back, then scale (as `Qwen2_5OmniRMSNorm.forward`).
/// <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let c = compute_dtype(&vb);
        Ok(Self {
            weight: vb.get(size, "weight")?.to_dtype(c)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        if dtype == DType::F32 && x.is_contiguous() {
            // Same f32 arithmetic in one fused pass (candle's kernel) instead of five tensor passes.
            return Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)?);
        }
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}

/// `nn.LayerNorm` (eps 1e-5 unless given).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let c = compute_dtype(&vb);
        Ok(Self {
            weight: vb.get(size, "weight")?.to_dtype(c)?,
            bias: vb.get(size, "bias")?.to_dtype(c)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        if dtype == DType::F32 && x.is_contiguous() {
            return Ok(candle_nn::ops::layer_norm(
                x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?);
        }
        let xf = x.to_dtype(DType::F32)?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let centred = xf.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// The dtype activations are computed in. On CPU always f32: candle has no fast half-precision kernels
/// there (a bf16 matmul widens both operands anyway), so half-precision checkpoints keep their weights
/// in half precision (memory) and widen one weight matrix at a time for the f32 matmul (speed). On GPUs
/// the weights' own dtype.
pub fn compute_dtype(vb: &VarBuilder) -> DType {
    if vb.device().is_cpu() {
        DType::F32
    } else {
        vb.dtype()
    }
}

/// A linear layer whose weight stays in the storage dtype and is widened to the input's dtype per call.
#[derive(Debug, Clone)]
pub struct Lin {
    w: Tensor,
    b: Option<Tensor>,
}

impl Lin {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::model::gemm::linear_cpu(x, &self.w, self.b.as_ref())? {
            return Ok(y);
        }
        let w = if self.w.dtype() == x.dtype() {
            self.w.clone()
        } else {
            self.w.to_dtype(x.dtype())?
        };
        let y = match x.rank() {
            2 => x.matmul(&w.t()?)?,
            _ => x.broadcast_matmul(&w.t()?)?,
        };
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.w
    }

    /// `x · wᵀ + b` for an activation already rounded to bf16 (`xb`, `[m, in]`, see [`bf16_input`]):
    /// layers that share an input (q/k/v, gate/up) round it once. `None` where that path does not apply
    /// (no oneDNN, weights not bf16, not on the CPU).
    pub fn forward_bf16(&self, xb: &[u16], m: usize) -> Result<Option<Tensor>> {
        crate::model::gemm::linear_cpu_bf16_input(xb, m, &self.w, self.b.as_ref())
    }

    /// [`Self::forward_bf16`] when `xb` (the same rows as `x`, rounded) is given and that path applies,
    /// else [`Self::forward`].
    pub fn forward_shared(&self, x: &Tensor, xb: Option<&[u16]>) -> Result<Tensor> {
        if let Some(xb) = xb {
            if let Some(y) = self.forward_bf16(xb, x.dim(0)?)? {
                return Ok(y);
            }
        }
        self.forward(x)
    }
}

/// `x` (`[m, in]`, f32 on the CPU) rounded to bf16 once for several bf16 layers that read it; `None`
/// where the bf16 CPU path does not apply to `lin`'s weights.
pub fn bf16_input(x: &Tensor, lin: &Lin) -> Option<Vec<u16>> {
    if !crate::model::gemm::enabled()
        || lin.w.dtype() != DType::BF16
        || x.rank() != 2
        || !x.device().is_cpu()
    {
        return None;
    }
    let x = x.contiguous().ok()?;
    crate::model::gemm::with_f32(&x, crate::model::gemm::to_bf16_par)
}

/// `nn.Linear(in_dim, out_dim, bias)` read from `vb` (`weight` `[out, in]`, `bias` `[out]`).
pub fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Lin> {
    let c = compute_dtype(&vb);
    let w = vb.get((out_dim, in_dim), "weight")?;
    let b = if bias {
        Some(vb.get(out_dim, "bias")?.to_dtype(c)?)
    } else {
        None
    };
    Ok(Lin { w, b })
}

/// `nn.Conv1d` with its parameters in the compute dtype.
pub fn conv1d(
    in_c: usize,
    out_c: usize,
    k: usize,
    cfg: candle_nn::Conv1dConfig,
    vb: VarBuilder,
) -> Result<candle_nn::Conv1d> {
    let c = compute_dtype(&vb);
    let w = vb.get((out_c, in_c, k), "weight")?.to_dtype(c)?;
    let b = vb.get(out_c, "bias")?.to_dtype(c)?;
    Ok(candle_nn::Conv1d::new(w, Some(b), cfg))
}

/// Activation by its transformers name (`ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Silu,
    /// Exact (erf) GELU, transformers' "gelu" and `nn.GELU()`.
    Gelu,
    GeluTanh,
}

impl Act {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Act::Silu),
            "gelu" => Ok(Act::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" => Ok(Act::GeluTanh),
            other => Err(crate::Error::Other(format!(
                "unsupported activation {other:?}"
            ))),
        }
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::Silu => candle_nn::ops::silu(x)?,
            Act::Gelu => x.gelu_erf()?,
            Act::GeluTanh => x.gelu()?,
        })
    }
}

/// Gated MLP `down(act(gate(x)) * up(x))` (Qwen2MLP; the vision tower's has biases). On the CPU with
/// bf16 weights (oneDNN) the input is rounded once for gate and up, and `silu(g)·u` is one threaded pass
/// that writes the down projection's bf16 input directly.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate: Lin,
    up: Lin,
    down: Lin,
    act: Act,
}

impl GatedMlp {
    pub fn new(hidden: usize, inter: usize, bias: bool, act: Act, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: linear(hidden, inter, bias, vb.pp("gate_proj"))?,
            up: linear(hidden, inter, bias, vb.pp("up_proj"))?,
            down: linear(inter, hidden, bias, vb.pp("down_proj"))?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_fused_cpu(x)? {
            return Ok(y);
        }
        let g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        self.down.forward(&(self.act.apply(&g)? * u)?)
    }

    /// The bf16 CPU path for SiLU MLPs; `None` where it does not apply.
    fn forward_fused_cpu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if self.act != Act::Silu || self.down.w.dtype() != DType::BF16 {
            return Ok(None);
        }
        let Some(xb) = bf16_input(x, &self.gate) else {
            return Ok(None);
        };
        let m = x.dim(0)?;
        let (Some(g), Some(u)) = (
            self.gate.forward_bf16(&xb, m)?,
            self.up.forward_bf16(&xb, m)?,
        ) else {
            return Ok(None);
        };
        let i = g.dim(1)?;
        let h = crate::model::gemm::with_f32(&g, |g| {
            crate::model::gemm::with_f32(&u, |u| {
                let mut h = vec![0u16; m * i];
                crate::model::gemm::par_chunks(&mut h, |first, out| {
                    crate::model::simd::silu_mul_bf16(out, &g[first..], &u[first..])
                });
                h
            })
        })
        .flatten();
        let Some(h) = h else {
            return Ok(None);
        };
        self.down.forward_bf16(&h, m)
    }
}

/// Softmax over the last dim computed in f32, returned in `dtype` (as transformers' eager attention).
pub fn softmax_f32(scores: &Tensor, dtype: DType) -> Result<Tensor> {
    let s = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    Ok(s.to_dtype(dtype)?)
}

/// Bidirectional attention inside segments (the encoders' `cu_seqlens` packing).
///
/// `q`, `k`, `v`: `[N, heads, head_dim]`; `bounds`: cumulative boundaries `[0, …, N]`. Runs of segments of
/// equal length are batched into one matmul. `bf16`: the products take bf16 operands (a bf16 encoder,
/// see [`crate::model::gemm::bmm_nt`]). On the CPU in f32 the scaling and softmax are one in-place pass
/// over the scores. Returns `[N, heads * head_dim]`.
pub fn segment_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bounds: &[usize],
    scale: f64,
    bf16: bool,
) -> Result<Tensor> {
    let (n, heads, hd) = q.dims3()?;
    let dtype = q.dtype();
    let mut outs = Vec::new();
    let mut i = 0;
    while i + 1 < bounds.len() {
        let start = bounds[i];
        let len = bounds[i + 1] - start;
        let mut j = i + 1;
        while j + 1 < bounds.len() && bounds[j + 1] - bounds[j] == len {
            j += 1;
        }
        let m = j - i;
        if len > 0 {
            let take = |t: &Tensor| -> Result<Tensor> {
                Ok(t.narrow(0, start, m * len)?
                    .reshape((m, len, heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (qs, ks, vs) = (take(q)?, take(k)?, take(v)?);
            let bh = m * heads;
            let (qs, ks) = (qs.reshape((bh, len, hd))?, ks.reshape((bh, len, hd))?);
            let probs = match gemm::bmm_nt_cpu_f32(&qs, &ks, bf16)? {
                Some(mut s) => {
                    let zeros = vec![0f32; len];
                    simd::softmax_past_own(&mut [], 0, &mut s, len, &zeros, 1, scale as f32);
                    Tensor::from_vec(s, (bh, len, len), q.device())?
                }
                None => softmax_f32(&(gemm::bmm_nt(&qs, &ks, bf16)? * scale)?, dtype)?,
            };
            let vt = vs.reshape((bh, len, hd))?.transpose(1, 2)?.contiguous()?;
            let o = gemm::bmm_nt(&probs, &vt, bf16)?.reshape((m, heads, len, hd))?;
            outs.push(o.transpose(1, 2)?.reshape((m * len, heads * hd))?);
        }
        i = j;
    }
    debug_assert_eq!(bounds.last().copied().unwrap_or(0), n);
    Ok(Tensor::cat(&outs, 0)?)
}

/// `rotate_half`-style rotary on `[N, heads, hd]` with `cos`/`sin` `[N, hd]`, computed in f32.
pub fn apply_rotary_f32(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let hd = xf.dim(D::Minus1)?;
    let x1 = xf.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = xf.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let c = cos.unsqueeze(1)?;
    let s = sin.unsqueeze(1)?;
    let out = (xf.broadcast_mul(&c)? + rot.broadcast_mul(&s)?)?;
    Ok(out.to_dtype(dtype)?)
}
