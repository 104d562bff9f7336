//! The Qwen2.5 decoder with multimodal rotary (MRoPE), shared by Qwen2.5-Omni and video-SALMONN 2+.
//!
//! Port of `Qwen2_5OmniThinkerTextModel` / `Qwen2_5OmniDecoderLayer` / `Qwen2_5OmniAttention` (eager path):
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! Unlike candle-transformers, the KV cache lives outside the layers: a layer takes the rows it computes,
//! their rotary angles, the K/V of the keys before them and a mask, and returns its output plus the K/V of
//! its own rows. That is what lets the flow engine replay a traced run from any layer, recompute only a
//! suffix of positions, apply per-layer knockout masks and drop positions between layers.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::error::{Error, Result};
use crate::model::config::TextConfig;
use crate::model::nn::{compute_dtype, linear, softmax_f32, Act, GatedMlp, Lin, RmsNorm};

/// Three rotary coordinates (temporal, height, width) per position, as `get_rope_index` makes them.
pub type PositionIds = Vec<[i64; 3]>;

/// Post-rotary keys and values of some rows: `[kv_heads, rows, head_dim]` each.
#[derive(Debug, Clone)]
pub struct KvPair {
    pub k: Tensor,
    pub v: Tensor,
}

impl KvPair {
    pub fn rows(&self) -> usize {
        self.k.dim(1).unwrap_or(0)
    }

    /// Appends `other`'s rows after ours.
    pub fn cat(&self, other: &KvPair) -> Result<KvPair> {
        Ok(KvPair {
            k: Tensor::cat(&[&self.k, &other.k], 1)?,
            v: Tensor::cat(&[&self.v, &other.v], 1)?,
        })
    }

    /// Keeps the given rows (ascending indices), e.g. after dropping positions.
    pub fn select(&self, rows: &Tensor) -> Result<KvPair> {
        Ok(KvPair {
            k: self.k.index_select(rows, 1)?,
            v: self.v.index_select(rows, 1)?,
        })
    }
}

/// Rotary angles for a set of rows: `cos`/`sin` `[rows, head_dim / 2]` (the half that `rotate_half`
/// duplicates), already recomposed across the MRoPE sections.
#[derive(Debug, Clone)]
pub struct Rotary {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rotary {
    pub fn rows(&self, idx: &Tensor) -> Result<Rotary> {
        Ok(Rotary {
            cos: self.cos.index_select(idx, 0)?,
            sin: self.sin.index_select(idx, 0)?,
        })
    }

    pub fn narrow(&self, start: usize, len: usize) -> Result<Rotary> {
        Ok(Rotary {
            cos: self.cos.narrow(0, start, len)?,
            sin: self.sin.narrow(0, start, len)?,
        })
    }
}

/// How the query rows of one layer call may attend to the keys (past rows first, then the rows themselves).
#[derive(Debug, Clone)]
pub enum AttnMask {
    /// Plain causal attention: query `i` (global row `past + i`) sees keys `0..=past + i`.
    Causal,
    /// Additive mask `[rows, past + rows]` in f32: 0 where allowed, `f32::MIN` where blocked (as transformers'
    /// eager path adds its 4-D mask).
    Additive(Tensor),
}

/// Builds the additive causal mask for `rows` queries after `past` cached keys.
pub fn causal_mask(rows: usize, past: usize, device: &Device) -> Result<Tensor> {
    mask_for_rows(past..past + rows, past + rows, |_, _| false, device)
}

/// Additive mask `[rows, keys]` for the given query positions: query `q` sees keys `j ≤ q` except the
/// pairs `blocked(q, j)` (0 where allowed, `f32::MIN` elsewhere). Causal masks, knockouts and the
/// attention maps of chosen rows all build their masks here.
pub fn mask_for_rows(
    rows: impl ExactSizeIterator<Item = usize>,
    keys: usize,
    blocked: impl Fn(usize, usize) -> bool,
    device: &Device,
) -> Result<Tensor> {
    let n = rows.len();
    let mut data = Vec::with_capacity(n * keys);
    for q in rows {
        data.extend((0..keys).map(|j| {
            if j <= q && !blocked(q, j) {
                0.0
            } else {
                f32::MIN
            }
        }));
    }
    Ok(Tensor::from_vec(data, (n, keys), device)?)
}

#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Lin,
    k_proj: Lin,
    v_proj: Lin,
    o_proj: Lin,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// What one layer call produced.
pub struct LayerOutput {
    /// Residual stream leaving the layer for the computed rows: `[rows, hidden]`.
    pub hidden: Tensor,
    /// Post-rotary K/V of the computed rows.
    pub kv: KvPair,
    /// Attention probabilities `[heads, rows, keys]` when requested.
    pub probs: Option<Tensor>,
}

impl Attention {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let (h, kvh, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        Ok(Self {
            q_proj: linear(cfg.hidden_size, h * hd, true, vb.pp("q_proj"))?,
            k_proj: linear(cfg.hidden_size, kvh * hd, true, vb.pp("k_proj"))?,
            v_proj: linear(cfg.hidden_size, kvh * hd, true, vb.pp("v_proj"))?,
            o_proj: linear(h * hd, cfg.hidden_size, false, vb.pp("o_proj"))?,
            heads: h,
            kv_heads: kvh,
            head_dim: hd,
        })
    }

    /// Projects and rotates the rows' keys/values (no attention): used to extend a cache.
    fn kv(&self, x: &Tensor, rot: &Rotary) -> Result<KvPair> {
        let n = x.dim(0)?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((n, self.kv_heads, self.head_dim))?
            .transpose(0, 1)?
            .contiguous()?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((n, self.kv_heads, self.head_dim))?
            .transpose(0, 1)?
            .contiguous()?;
        let k = rope(&k, rot)?;
        Ok(KvPair { k, v })
    }

    /// Rotated queries `[heads, rows, hd]` and the rows' own K/V.
    fn project(&self, x: &Tensor, rot: &Rotary) -> Result<(Tensor, KvPair)> {
        let n = x.dim(0)?;
        let q = self
            .q_proj
            .forward(x)?
            .reshape((n, self.heads, self.head_dim))?
            .transpose(0, 1)?
            .contiguous()?;
        Ok((rope(&q, rot)?, self.kv(x, rot)?))
    }

    /// Attention of `q` (`[heads, n, hd]`) over `all` keys (past then the n rows) under `mask`; returns
    /// the heads' outputs `[n, heads·hd]` before `o_proj`, and the probabilities when asked.
    fn attend(
        &self,
        q: &Tensor,
        all: &KvPair,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (h, n, hd) = q.dims3()?;
        let kvh = self.kv_heads;
        let keys = all.rows();
        let past_len = keys - n;
        let g = h / kvh;
        // Heads h = kv * g + j share kv head `kv` (transformers' repeat_kv order), so grouping the query
        // heads lets one matmul per kv head serve its g query heads without materialising repeated K/V.
        let qg = q.reshape((kvh, g * n, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (crate::model::gemm::bmm_nt(&qg, &all.k)? * scale)?;
        let scores = scores.reshape((kvh, g, n, keys))?.to_dtype(DType::F32)?;
        let mask_t = match mask {
            AttnMask::Causal => causal_mask(n, past_len, q.device())?,
            AttnMask::Additive(m) => {
                if m.dims() != [n, keys] {
                    return Err(Error::Other(format!(
                        "attention mask has shape {:?}, expected [{n}, {keys}]",
                        m.dims()
                    )));
                }
                m.to_dtype(DType::F32)?
            }
        };
        let scores = scores.broadcast_add(&mask_t)?;
        let probs = softmax_f32(&scores, q.dtype())?;
        let vt = all.v.transpose(1, 2)?.contiguous()?;
        let out = crate::model::gemm::bmm_nt(&probs.reshape((kvh, g * n, keys))?, &vt)?
            .reshape((h, n, hd))?
            .transpose(0, 1)?
            .reshape((n, h * hd))?;
        let probs = if want_probs {
            Some(probs.reshape((h, n, keys))?)
        } else {
            None
        };
        Ok((out, probs))
    }

    fn forward(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<(Tensor, KvPair, Option<Tensor>)> {
        let (q, own) = self.project(x, rot)?;
        let all = match past {
            Some(p) => p.cat(&own)?,
            None => own.clone(),
        };
        let (out, probs) = self.attend(&q, &all, mask, want_probs)?;
        Ok((self.o_proj.forward(&out)?, own, probs))
    }

    /// `c` independent runs of the same `r` rows at once (e.g. one per knockout), stacked in `x`
    /// (`[c·r, hidden]`): projections in one matmul each, attention per run over the shared `past`
    /// then the run's own rows under its mask.
    fn forward_many(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        masks: &[&AttnMask],
    ) -> Result<Tensor> {
        let c = masks.len();
        let r = x.dim(0)? / c.max(1);
        let rot_all = Rotary {
            cos: Tensor::cat(&vec![&rot.cos; c], 0)?,
            sin: Tensor::cat(&vec![&rot.sin; c], 0)?,
        };
        let (q, own) = self.project(x, &rot_all)?;
        let mut outs = Vec::with_capacity(c);
        for (i, mask) in masks.iter().enumerate() {
            let qi = q.narrow(1, i * r, r)?;
            let oi = KvPair {
                k: own.k.narrow(1, i * r, r)?,
                v: own.v.narrow(1, i * r, r)?,
            };
            let all = match past {
                Some(p) => p.cat(&oi)?,
                None => oi,
            };
            outs.push(self.attend(&qi, &all, mask, false)?.0);
        }
        self.o_proj.forward(&Tensor::cat(&outs, 0)?)
    }
}

/// Non-interleaved rotary on `[heads, rows, hd]` with `[rows, hd/2]` angles (candle's fused kernel).
fn rope(x: &Tensor, rot: &Rotary) -> Result<Tensor> {
    let x4 = x.unsqueeze(0)?;
    let cos = rot.cos.to_dtype(x.dtype())?;
    let sin = rot.sin.to_dtype(x.dtype())?;
    Ok(candle_nn::rotary_emb::rope(&x4, &cos, &sin)?.squeeze(0)?)
}

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    self_attn: Attention,
    mlp: GatedMlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: GatedMlp::new(
                cfg.hidden_size,
                cfg.intermediate_size,
                false,
                Act::from_name(&cfg.hidden_act)?,
                vb.pp("mlp"),
            )?,
            input_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }

    /// Runs the layer for `x` (`[rows, hidden]`, the residual entering the layer) whose rotary angles are
    /// `rot`, attending to `past` keys then to themselves under `mask`.
    pub fn forward(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<LayerOutput> {
        let h = self.input_layernorm.forward(x)?;
        let (attn, kv, probs) = self.self_attn.forward(&h, rot, past, mask, want_probs)?;
        let x = (x + attn)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let hidden = (&x + self.mlp.forward(&h)?)?;
        Ok(LayerOutput { hidden, kv, probs })
    }

    /// [`Self::forward`] for several independent runs of the same rows at once (see
    /// `Attention::forward_many`): weights are read once for all of them. Returns the stacked hidden rows.
    pub fn forward_many(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        masks: &[&AttnMask],
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let attn = self.self_attn.forward_many(&h, rot, past, masks)?;
        let x = (x + attn)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        Ok((&x + self.mlp.forward(&h)?)?)
    }

    /// Attention probabilities `[heads, rows, keys]` of query rows `x` (the residual entering the layer)
    /// over `keys` (e.g. a traced run's K/V of this layer) under `mask`; nothing else is computed.
    pub fn attention_probs(
        &self,
        x: &Tensor,
        rot: &Rotary,
        keys: &KvPair,
        mask: &AttnMask,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let (q, _) = self.self_attn.project(&h, rot)?;
        let (_, probs) = self.self_attn.attend(&q, keys, mask, true)?;
        probs.ok_or_else(|| Error::Other("attention probabilities were not computed".into()))
    }

    /// K/V this layer would produce for rows `x` (no attention, no MLP).
    pub fn kv(&self, x: &Tensor, rot: &Rotary) -> Result<KvPair> {
        let h = self.input_layernorm.forward(x)?;
        self.self_attn.kv(&h, rot)
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    pub cfg: TextConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Lin,
    inv_freq: Vec<f32>,
    device: Device,
    dtype: DType,
}

impl Decoder {
    /// `vb` is rooted at the Thinker: reads `model.*` and `lm_head.weight` (untied).
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, m.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = linear(cfg.hidden_size, cfg.vocab_size, false, vb.pp("lm_head"))?;
        let hd = cfg.head_dim;
        // As transformers: 1 / base^(arange(0, dim, 2) / dim) in f32.
        let inv_freq = (0..hd / 2)
            .map(|j| 1.0f32 / (cfg.rope_theta as f32).powf((2 * j) as f32 / hd as f32))
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            device: vb.device().clone(),
            dtype: compute_dtype(&vb),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype activations (and the K/V cache) are computed in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn layer(&self, i: usize) -> &DecoderLayer {
        &self.layers[i]
    }

    /// Token embeddings `[n, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let t = Tensor::new(ids, &self.device)?;
        Ok(self.embed_tokens.forward(&t)?.to_dtype(self.dtype)?)
    }

    /// MRoPE angles for the given positions (`Qwen2_5OmniRotaryEmbedding` + `recomposition_frequencies`):
    /// frequency j of the rotary half uses the temporal, height or width id depending on which
    /// `mrope_section` it falls in.
    pub fn rotary(&self, pos: &[[i64; 3]]) -> Result<Rotary> {
        let half = self.inv_freq.len();
        let mut axis = Vec::with_capacity(half);
        for (s, &len) in self.cfg.mrope_section.iter().enumerate() {
            axis.extend(std::iter::repeat_n(s % 3, len));
        }
        let mut cos = Vec::with_capacity(pos.len() * half);
        let mut sin = Vec::with_capacity(pos.len() * half);
        for p in pos {
            for j in 0..half {
                let f = p[axis[j]] as f32 * self.inv_freq[j];
                cos.push(f.cos());
                sin.push(f.sin());
            }
        }
        let n = pos.len();
        Ok(Rotary {
            cos: Tensor::from_vec(cos, (n, half), &self.device)?,
            sin: Tensor::from_vec(sin, (n, half), &self.device)?,
        })
    }

    /// Final RMSNorm.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(x)
    }

    /// `lm_head` on already-normed rows, as f32 `[rows, vocab]`.
    pub fn logits(&self, normed: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(normed)?.to_dtype(DType::F32)?)
    }

    /// A plain causal forward over the whole sequence. `observe(layer, residual_in)` sees the residual
    /// entering each layer (and `num_layers` for the stream after the last one, before the final norm).
    /// Returns the final-normed hidden states `[seq, hidden]`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        rot: &Rotary,
        observe: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let mut x = embeds.to_dtype(self.dtype)?;
        for (i, layer) in self.layers.iter().enumerate() {
            observe(i, &x)?;
            x = layer
                .forward(&x, rot, None, &AttnMask::Causal, false)?
                .hidden;
        }
        observe(self.layers.len(), &x)?;
        self.final_norm(&x)
    }
}

/// Index tensor helper (u32 on the device).
pub fn index_tensor(idx: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v, idx.len(), device)?)
}

/// Top-k (id, probability) of a logits row (f32 `[vocab]`).
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<(u32, f32)>> {
    let probs =
        candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?.to_vec1::<f32>()?;
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    Ok(idx
        .into_iter()
        .take(k)
        .map(|i| (i as u32, probs[i]))
        .collect())
}
