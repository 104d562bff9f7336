//! Small building blocks shared by the encoders and the decoder, written to follow transformers' numerics
//! (norms in f32, softmax in f32) rather than candle's fused variants where the two differ.

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::kernels::{gemm, parallel, simd};

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
    activation_dtype(vb.device(), vb.dtype())
}

/// [`compute_dtype`] for weights of `weights` dtype on `device`, before anything is loaded (budgets).
pub fn activation_dtype(device: &candle_core::Device, weights: DType) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        weights
    }
}

/// A linear layer whose weight stays in the storage dtype and is widened to the input's dtype per call.
#[derive(Debug, Clone)]
pub struct Lin {
    w: Tensor,
    b: Option<Tensor>,
}

impl Lin {
    /// A layer from tensors already in hand (`w` `[out, in]` in its storage dtype), e.g. a convolution
    /// whose kernel covers its whole input patch.
    pub fn from_weight(w: Tensor, b: Option<Tensor>) -> Self {
        Self { w, b }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = gemm::linear_cpu(x, &self.w, self.b.as_ref())? {
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

    /// The CPU product this layer runs for `m` rows (see [`gemm::prepare`]).
    pub fn gemm_shape(&self, m: usize) -> Option<gemm::LinearShape> {
        gemm::LinearShape::of(m, &self.w, self.b.is_some())
    }

    /// `x · wᵀ + b` for an activation already rounded to bf16 (`xb`, `[m, in]`, see [`bf16_input`]):
    /// layers that share an input (q/k/v, gate/up) round it once. `None` where that path does not apply
    /// (no oneDNN, weights not bf16, not on the CPU).
    pub fn forward_bf16(&self, xb: &[u16], m: usize) -> Result<Option<Tensor>> {
        gemm::linear_cpu_bf16_input(xb, m, &self.w, self.b.as_ref())
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
    bf16_input_with(x, lin, simd::round_bf16)
}

/// [`bf16_input`] with an element-wise pass applied on the way (`pass(dst, src)` writes `bf16(f(src))`
/// for one threaded chunk), e.g. an activation fused into the next layer's input.
fn bf16_input_with(
    x: &Tensor,
    lin: &Lin,
    pass: impl Fn(&mut [u16], &[f32]) + Sync,
) -> Option<Vec<u16>> {
    if !gemm::enabled() || lin.w.dtype() != DType::BF16 || x.rank() != 2 || !x.device().is_cpu() {
        return None;
    }
    let x = x.contiguous().ok()?;
    gemm::with_f32(&x, |v| simd::to_bf16_par_with(v, pass))
}

/// The query, key and value heads (`[n, heads, hd]` each) of an encoder block's normed input `h`
/// (`[n, d]`); one bf16 rounding of `h` serves the three projections where they run in bf16.
pub fn qkv_heads(h: &Tensor, q: &Lin, k: &Lin, v: &Lin, heads: usize) -> Result<[Tensor; 3]> {
    let (n, d) = h.dims2()?;
    let hb = bf16_input(h, q);
    let head = |lin: &Lin| -> Result<Tensor> {
        Ok(lin
            .forward_shared(h, hb.as_deref())?
            .reshape((n, heads, d / heads))?)
    };
    Ok([head(q)?, head(k)?, head(v)?])
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

    /// `next(act(x))` for an MLP's second layer. On the CPU with bf16 weights (oneDNN) and the exact GELU
    /// (the encoders), the activation is one threaded pass that writes `next`'s bf16 input directly: no
    /// f32 activation tensor and no libm `erf` per element.
    pub fn then(&self, x: &Tensor, next: &Lin) -> Result<Tensor> {
        if *self == Act::Gelu {
            if let Some(xb) = bf16_input_with(x, next, simd::gelu_erf_bf16) {
                if let Some(y) = next.forward_bf16(&xb, x.dim(0)?)? {
                    return Ok(y);
                }
            }
        }
        next.forward(&self.apply(x)?)
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

    /// The CPU products of a forward over `m` rows (see [`gemm::prepare`]).
    pub fn gemm_shapes(&self, m: usize) -> impl Iterator<Item = gemm::LinearShape> + '_ {
        [&self.gate, &self.up, &self.down]
            .into_iter()
            .filter_map(move |l| l.gemm_shape(m))
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
        let h = gemm::with_f32(&g, |g| {
            gemm::with_f32(&u, |u| {
                let mut h = vec![0u16; m * i];
                parallel::par_chunks(&mut h, |first, out| {
                    simd::silu_mul_bf16(out, &g[first..], &u[first..])
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

/// Most attention scores (`segments × heads × len × len` floats) one call of the encoders' segment
/// attention holds at once (256 MiB in f32): Whisper-large's 30-s segment (20 heads × 1500²) fits in one.
const ENCODER_MAX_SCORES: usize = 1 << 26;

/// Bidirectional attention inside segments (the encoders' `cu_seqlens` packing).
///
/// `q`, `k`, `v`: `[N, heads, head_dim]`; `bounds`: cumulative boundaries `[0, …, N]`. Runs of segments of
/// equal length are batched into one matmul, as many at a time as keep the scores within
/// [`ENCODER_MAX_SCORES`]; a segment too long for that bound alone (a large image's full-attention
/// layers) runs its query rows in chunks. Memory thus stays bounded however many frames or seconds come
/// in. `bf16`: the products take bf16 operands (a bf16 encoder, see
/// [`crate::kernels::gemm::bmm_nt`]). On the CPU in f32 the scaling and softmax are one in-place pass
/// over the scores. Returns `[N, heads * head_dim]`.
pub fn segment_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bounds: &[usize],
    scale: f64,
    bf16: bool,
) -> Result<Tensor> {
    segment_attention_chunked(q, k, v, bounds, scale, bf16, ENCODER_MAX_SCORES)
}

/// [`segment_attention`] with at most `max_scores` scores per product (tests compare chunkings).
fn segment_attention_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bounds: &[usize],
    scale: f64,
    bf16: bool,
    max_scores: usize,
) -> Result<Tensor> {
    let (n, heads, hd) = q.dims3()?;
    let mut outs = Vec::new();
    let mut i = 0;
    while i + 1 < bounds.len() {
        let start = bounds[i];
        let len = bounds[i + 1] - start;
        let mut j = i + 1;
        while j + 1 < bounds.len() && bounds[j + 1] - bounds[j] == len {
            j += 1;
        }
        if len > 0 {
            let per = max_scores / (heads * len * len).max(1);
            if per == 0 {
                // One segment alone exceeds the bound: its query rows in chunks, one segment at a time.
                let rows = (max_scores / (heads * len)).clamp(1, len);
                for s in 0..j - i {
                    let seg = start + s * len;
                    let keys = |t: &Tensor| -> Result<Tensor> {
                        swap_middle(&t.narrow(0, seg, len)?, [1, len, heads, hd])
                    };
                    let (ks, vs) = (keys(k)?, keys(v)?);
                    for r0 in (0..len).step_by(rows) {
                        let qn = rows.min(len - r0);
                        let qs = swap_middle(&q.narrow(0, seg + r0, qn)?, [1, qn, heads, hd])?;
                        outs.push(segments_attend(&qs, &ks, &vs, 1, heads, scale, bf16)?);
                    }
                }
            } else {
                for s0 in (0..j - i).step_by(per) {
                    let m = per.min(j - i - s0);
                    // [m, len, heads, hd] → [m, heads, len, hd].
                    let take = |t: &Tensor| -> Result<Tensor> {
                        swap_middle(
                            &t.narrow(0, start + s0 * len, m * len)?,
                            [m, len, heads, hd],
                        )
                    };
                    outs.push(segments_attend(
                        &take(q)?,
                        &take(k)?,
                        &take(v)?,
                        m,
                        heads,
                        scale,
                        bf16,
                    )?);
                }
            }
        }
        i = j;
    }
    debug_assert_eq!(bounds.last().copied().unwrap_or(0), n);
    Ok(Tensor::cat(&outs, 0)?)
}

/// Attention of `m` segments' queries `qs` (`[m, heads, rows, hd]`) over their keys and values `ks`, `vs`
/// (`[m, heads, len, hd]`), no mask: `[m · rows, heads · hd]`.
fn segments_attend(
    qs: &Tensor,
    ks: &Tensor,
    vs: &Tensor,
    m: usize,
    heads: usize,
    scale: f64,
    bf16: bool,
) -> Result<Tensor> {
    let (rows, hd) = (qs.dim(2)?, qs.dim(3)?);
    let len = ks.dim(2)?;
    let bh = m * heads;
    let (qs, ks) = (qs.reshape((bh, rows, hd))?, ks.reshape((bh, len, hd))?);
    let probs = match gemm::bmm_nt_cpu_f32(&qs, &ks, bf16)? {
        Some(mut s) => {
            let zeros = vec![0f32; len];
            simd::softmax_past_own(&mut [], 0, &mut s, len, &zeros, 1, scale as f32);
            Tensor::from_vec(s, (bh, rows, len), qs.device())?
        }
        None => softmax_f32(&(gemm::bmm_nt(&qs, &ks, bf16)? * scale)?, qs.dtype())?,
    };
    let vt = swap_middle(vs, [bh, len, hd, 1])?.reshape((bh, hd, len))?;
    let o = gemm::bmm_nt(&probs, &vt, bf16)?;
    Ok(swap_middle(&o, [m, heads, rows, hd])?.reshape((m * rows, heads * hd))?)
}

/// `x` read as `[a, b, c, d]` (any shape with that many elements), returned contiguous as `[a, c, b, d]`.
/// On the CPU in f32 one threaded pass of `d`-long copies (the encoders' per-window attention reorders
/// q, k, v and its output this way every block; candle's strided copy goes element by element on one
/// thread); elsewhere candle's transpose.
fn swap_middle(x: &Tensor, [a, b, c, d]: [usize; 4]) -> Result<Tensor> {
    let x = x.contiguous()?;
    let fast = x.device().is_cpu() && x.dtype() == DType::F32 && x.elem_count() == a * b * c * d;
    if fast {
        let out = gemm::with_f32(&x, |src| {
            let mut out = vec![0f32; src.len()];
            // Output row r (d values) = (ia, ic, ib), read from input row (ia, ib, ic).
            parallel::par_chunks_of(&mut out, d, |first, dst| {
                for (i, row) in dst.chunks_mut(d).enumerate() {
                    let r = first / d + i;
                    let (ia, rest) = (r / (c * b), r % (c * b));
                    let (ic, ib) = (rest / b, rest % b);
                    let from = ((ia * b + ib) * c + ic) * d;
                    row.copy_from_slice(&src[from..from + d]);
                }
            });
            out
        });
        if let Some(out) = out {
            return Ok(Tensor::from_vec(out, (a, c, b, d), x.device())?);
        }
    }
    Ok(x.reshape((a, b, c, d))?.transpose(1, 2)?.contiguous()?)
}

/// `rotate_half`-style rotary on `[N, heads, hd]` with `cos`/`sin` `[N, hd]`, computed in f32.
pub fn apply_rotary_f32(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if let Some(y) = rotary_cpu(x, cos, sin)? {
        return Ok(y);
    }
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

/// [`apply_rotary_f32`] as one threaded pass over f32 CPU tensors (the vision tower calls it twice per
/// block on `[patches, heads, hd]`; the tensor-op version makes seven passes); `None` elsewhere.
fn rotary_cpu(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() != 3 {
        return Ok(None);
    }
    let (n, heads, hd) = x.dims3()?;
    if cos.dims() != [n, hd] || sin.dims() != [n, hd] || hd % 2 != 0 {
        return Ok(None);
    }
    let (x, cos, sin) = (
        x.contiguous()?,
        cos.to_dtype(DType::F32)?.contiguous()?,
        sin.to_dtype(DType::F32)?.contiguous()?,
    );
    let half = hd / 2;
    let out = gemm::with_f32(&x, |xs| {
        gemm::with_f32(&cos, |cs| {
            gemm::with_f32(&sin, |ss| {
                let mut out = vec![0f32; xs.len()];
                // Chunks of whole rows (one row = heads·hd values of one patch).
                parallel::par_chunks_of(&mut out, hd, |first, dst| {
                    for (r, (o, xr)) in dst.chunks_mut(hd).zip(xs[first..].chunks(hd)).enumerate() {
                        let i = (first / hd + r) / heads;
                        let (c, s) = (&cs[i * hd..][..hd], &ss[i * hd..][..hd]);
                        for j in 0..half {
                            o[j] = xr[j] * c[j] - xr[j + half] * s[j];
                            o[j + half] = xr[j + half] * c[j + half] + xr[j] * s[j + half];
                        }
                    }
                });
                out
            })
        })
    });
    match out.flatten().flatten() {
        Some(v) => Ok(Some(Tensor::from_vec(v, (n, heads, hd), x.device())?)),
        None => Ok(None),
    }
}

/// Largest absolute difference between two tensors of one shape (the chunking tests' measure).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    /// The encoders' segment attention in bounded chunks (segments a product, rows of one long segment)
    /// equals the one-product result.
    #[test]
    fn segment_attention_in_chunks_equals_one_product() {
        let dev = candle_core::Device::Cpu;
        let (heads, hd) = (4, 8);
        // Three segments of 6, one of 17, two of 5.
        let bounds = [0, 6, 12, 18, 35, 40, 45];
        let n = 45;
        let t = || Tensor::randn(0f32, 1f32, (n, heads, hd), &dev).unwrap();
        let (q, k, v) = (t(), t(), t());
        for bf16 in [false, true] {
            let whole =
                segment_attention_chunked(&q, &k, &v, &bounds, 0.3, bf16, usize::MAX).unwrap();
            // Two 6-long segments a product; the 17-long one alone is over the bound: rows of 3.
            for bound in [heads * 6 * 6 * 2, heads * 17 * 3] {
                let parts =
                    segment_attention_chunked(&q, &k, &v, &bounds, 0.3, bf16, bound).unwrap();
                let d = max_abs_diff(&whole, &parts);
                assert!(d <= 1e-6, "bf16 {bf16}, bound {bound}: {d}");
            }
        }
    }

    use super::*;
    use candle_core::Device;

    /// The one-pass rotary equals the tensor-op formula bit for bit, across the threaded row split.
    #[test]
    fn rotary_pass_matches_tensor_ops() {
        let (n, heads, hd) = (301, 4, 32); // n·heads·hd > PAR_MIN: two threads where there are two
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (n, heads, hd), &dev).unwrap();
        let ang = Tensor::randn(0f32, 3.0, (n, hd), &dev).unwrap();
        let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
        let fast = rotary_cpu(&x, &cos, &sin).unwrap().unwrap();
        let x1 = x.narrow(D::Minus1, 0, hd / 2).unwrap();
        let x2 = x.narrow(D::Minus1, hd / 2, hd / 2).unwrap();
        let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        let slow = (x.broadcast_mul(&cos.unsqueeze(1).unwrap()).unwrap()
            + rot.broadcast_mul(&sin.unsqueeze(1).unwrap()).unwrap())
        .unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            fast.flatten_all().unwrap().to_vec1().unwrap(),
            slow.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b);
    }
}
