//! The Qwen2.5 decoder with multimodal rotary (MRoPE), shared by Qwen2.5-Omni and video-SALMONN 2+.
//!
//! Port of `Qwen2_5OmniThinkerTextModel` / `Qwen2_5OmniDecoderLayer` / `Qwen2_5OmniAttention` (eager path):
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! Unlike candle-transformers, the KV cache lives outside the layers: a layer takes the rows it computes,
//! their rotary angles, the K/V of the keys before them and a mask, and returns its output plus the K/V of
//! its own rows. That is what lets the flow engine replay a traced run from any layer, recompute only a
//! suffix of positions, apply per-layer knockout masks and drop positions between layers.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::error::{Error, Result};
use crate::kernels::{gemm, simd};
use crate::model::config::TextConfig;
use crate::model::nn::{
    bf16_input, compute_dtype, linear, softmax_f32, Act, GatedMlp, Lin, RmsNorm,
};

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
    /// Causal, minus the pairs a knockout hides (by prompt position; query `i` is position `past + i`).
    /// Kept as rules and written out one chunk of query rows at a time, so that no mask spans the whole
    /// prompt: a dense one is `rows × keys` floats, 4 GB at 32 k tokens.
    Blocked(Arc<BlockedPairs>),
    /// Additive mask `[rows, past + rows]` in f32: 0 where allowed, `f32::MIN` where blocked (as transformers'
    /// eager path adds its 4-D mask). Any rows, e.g. chosen positions read against a whole trace.
    Additive(Tensor),
}

/// The (query, key) pairs a knockout hides besides the causal ones: each rule hides its sorted `sources`
/// from the query positions marked in its `queries`, in every head or only in the query heads it marks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockedPairs {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    queries: Vec<bool>,
    sources: Vec<usize>,
    /// The query heads the rule applies in (`None`: all).
    heads: Option<Vec<bool>>,
}

impl Rule {
    fn hides(&self, q: usize, j: usize) -> bool {
        self.queries.get(q).copied().unwrap_or(false) && self.sources.binary_search(&j).is_ok()
    }

    fn in_head(&self, head: usize) -> bool {
        self.heads
            .as_ref()
            .is_none_or(|h| h.get(head).copied().unwrap_or(false))
    }
}

impl BlockedPairs {
    /// Hides `sources` from the `queries` (prompt positions; both may be in any order), in every head.
    pub fn add(&mut self, queries: &[usize], sources: &[usize]) {
        self.add_in_heads(queries, sources, None);
    }

    /// [`Self::add`] in the query heads `heads` only (0-based; `None`: every head).
    pub fn add_in_heads(&mut self, queries: &[usize], sources: &[usize], heads: Option<&[usize]>) {
        let len = queries.iter().max().map_or(0, |&q| q + 1);
        let mut marked = vec![false; len];
        for &q in queries {
            marked[q] = true;
        }
        let mut sources = sources.to_vec();
        sources.sort_unstable();
        sources.dedup();
        let heads = heads.map(|hs| {
            let mut m = vec![false; hs.iter().max().map_or(0, |&h| h + 1)];
            for &h in hs {
                m[h] = true;
            }
            m
        });
        self.rules.push(Rule {
            queries: marked,
            sources,
            heads,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule applies in some heads only (attention then runs per group of heads).
    pub fn has_head_rules(&self) -> bool {
        self.rules.iter().any(|r| r.heads.is_some())
    }

    /// The rules that apply in query head `head`, as rules for every head.
    pub fn for_head(&self, head: usize) -> BlockedPairs {
        BlockedPairs {
            rules: self
                .rules
                .iter()
                .filter(|r| r.in_head(head))
                .map(|r| Rule {
                    heads: None,
                    ..r.clone()
                })
                .collect(),
        }
    }

    /// Whether query position `q` may not see key `j` (besides causality) in every head's rules.
    pub fn blocked(&self, q: usize, j: usize) -> bool {
        self.rules
            .iter()
            .any(|r| r.heads.is_none() && r.hides(q, j))
    }

    /// Whether query position `q` may not see key `j` in query head `head`.
    pub fn blocked_in_head(&self, q: usize, j: usize, head: usize) -> bool {
        self.rules.iter().any(|r| r.in_head(head) && r.hides(q, j))
    }

    /// Sets `f32::MIN` in `row` (keys `0..row.len()`) at every key hidden from query position `q` (rules of
    /// every head; head rules are split off first, see [`AttnMask::per_head`]).
    fn hide(&self, q: usize, row: &mut [f32]) {
        for Rule {
            queries,
            sources,
            heads,
        } in &self.rules
        {
            if heads.is_none() && queries.get(q).copied().unwrap_or(false) {
                let keys = row.len();
                for &s in sources.iter().take_while(|&&s| s < keys) {
                    row[s] = f32::MIN;
                }
            }
        }
    }
}

impl AttnMask {
    /// One mask per query head when this one differs between heads (a knockout restricted to some heads,
    /// or a dense `[heads, rows, keys]` additive mask); `None` when every head shares it.
    fn per_head(&self, heads: usize) -> Result<Option<Vec<AttnMask>>> {
        match self {
            AttnMask::Blocked(b) if b.has_head_rules() => Ok(Some(
                (0..heads)
                    .map(|h| {
                        let mine = b.for_head(h);
                        if mine.is_empty() {
                            AttnMask::Causal
                        } else {
                            AttnMask::Blocked(Arc::new(mine))
                        }
                    })
                    .collect(),
            )),
            AttnMask::Additive(m) if m.rank() == 3 => {
                if m.dim(0)? != heads {
                    return Err(Error::Other(format!(
                        "a per-head attention mask has {} heads, the layer {heads}",
                        m.dim(0)?
                    )));
                }
                Ok(Some(
                    (0..heads)
                        .map(|h| Ok(AttnMask::Additive(m.get(h)?)))
                        .collect::<Result<_>>()?,
                ))
            }
            _ => Ok(None),
        }
    }

    /// Whether the mask differs between query heads (what [`Self::per_head`] would split), without
    /// building the per-head masks: asked of every run of every batched layer call.
    fn varies_by_head(&self) -> bool {
        match self {
            AttnMask::Blocked(b) => b.has_head_rules(),
            AttnMask::Additive(m) => m.rank() == 3,
            AttnMask::Causal => false,
        }
    }

    /// Whether two masks are the same rules (so heads under them share one attention computation).
    fn same_as(&self, other: &AttnMask) -> bool {
        match (self, other) {
            (AttnMask::Causal, AttnMask::Causal) => true,
            (AttnMask::Blocked(a), AttnMask::Blocked(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }

    /// Whether query `i` never sees a key after position `past + i` (every form but `Additive`, whose rows
    /// may be anywhere): a chunk of rows then reads only the keys up to its last row.
    fn is_causal(&self) -> bool {
        !matches!(self, AttnMask::Additive(_))
    }

    /// Rows `r0..r0 + n` of the mask of a call with `past` cached keys, over keys `0..keys`, in f32
    /// (`[n · keys]`, 0 where allowed, `f32::MIN` where blocked).
    fn chunk(&self, r0: usize, n: usize, past: usize, keys: usize) -> Result<Vec<f32>> {
        match self {
            AttnMask::Additive(m) => Ok(m
                .narrow(0, r0, n)?
                .narrow(1, 0, keys)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?),
            AttnMask::Causal | AttnMask::Blocked(_) => {
                let mut out = vec![0f32; n * keys];
                for (i, row) in out.chunks_mut(keys.max(1)).enumerate() {
                    let q = past + r0 + i;
                    if q + 1 < keys {
                        row[q + 1..].fill(f32::MIN);
                    }
                    if let AttnMask::Blocked(b) = self {
                        b.hide(q, row);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Builds the additive causal mask for `rows` queries after `past` cached keys.
pub fn causal_mask(rows: usize, past: usize, device: &Device) -> Result<Tensor> {
    mask_for_rows(past..past + rows, past + rows, |_, _| false, device)
}

/// Additive mask `[rows, keys]` for the given query positions: query `q` sees keys `j ≤ q` except the
/// pairs `blocked(q, j)` (0 where allowed, `f32::MIN` elsewhere). For chosen rows and tests; a layer call
/// over a span of the prompt takes [`AttnMask::Blocked`] instead.
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
    /// bf16 weights: the attention products take bf16 operands too (the f32 q/k/v/probabilities rounded
    /// for the product, f32 accumulation), as the bf16 model computes them.
    bf16: bool,
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
        let q_proj = linear(cfg.hidden_size, h * hd, true, vb.pp("q_proj"))?;
        Ok(Self {
            bf16: q_proj.weight().dtype() == DType::BF16,
            q_proj,
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
        self.kv_shared(x, bf16_input(x, &self.k_proj).as_deref(), rot)
    }

    /// [`Self::kv`] with the input already rounded for bf16 products (`xb`, see [`bf16_input`]).
    fn kv_shared(&self, x: &Tensor, xb: Option<&[u16]>, rot: &Rotary) -> Result<KvPair> {
        let n = x.dim(0)?;
        let (kvh, hd) = (self.kv_heads, self.head_dim);
        let k = split_heads(&self.k_proj.forward_shared(x, xb)?, n, kvh, hd)?;
        let v = split_heads(&self.v_proj.forward_shared(x, xb)?, n, kvh, hd)?;
        Ok(KvPair {
            k: rope(&k, rot)?,
            v,
        })
    }

    /// Rotated queries `[heads, rows, hd]` and the rows' own K/V (the input rounded once for the three
    /// products where they run in bf16).
    fn project(&self, x: &Tensor, rot: &Rotary) -> Result<(Tensor, KvPair)> {
        let n = x.dim(0)?;
        let xb = bf16_input(x, &self.q_proj);
        let q = split_heads(
            &self.q_proj.forward_shared(x, xb.as_deref())?,
            n,
            self.heads,
            self.head_dim,
        )?;
        Ok((rope(&q, rot)?, self.kv_shared(x, xb.as_deref(), rot)?))
    }

    /// Attention of `q` (`[heads, n, hd]`) over `all` keys (past then the n rows) under `mask`; returns
    /// the heads' outputs `[n, heads·hd]` before `o_proj`, and the probabilities when asked.
    ///
    /// Memory does not grow with the square of the length: the query rows run in chunks whose scores
    /// stay within [`MAX_SCORES`] floats, each with its own rows of the mask, and under a causal mask a
    /// chunk reads only the keys up to its last row (half the products of a long prompt). Each row's
    /// scores, softmax and weighted sum are the same computation whatever the chunk.
    fn attend(
        &self,
        q: &Tensor,
        all: &KvPair,
        mask: &AttnMask,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.attend_chunked(q, all, mask, want_probs, MAX_SCORES)
    }

    /// [`Self::attend`] with at most `max_scores` scores per chunk (tests compare chunkings).
    fn attend_chunked(
        &self,
        q: &Tensor,
        all: &KvPair,
        mask: &AttnMask,
        want_probs: bool,
        max_scores: usize,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (h, n, _) = q.dims3()?;
        if let Some(per_head) = mask.per_head(h)? {
            return self.attend_per_head(q, all, &per_head, want_probs, max_scores);
        }
        let keys = all.rows();
        if keys < n {
            return Err(Error::Other(format!("{n} query rows but only {keys} keys")));
        }
        let past = keys - n;
        if let AttnMask::Additive(m) = mask {
            if m.dims() != [n, keys] {
                return Err(Error::Other(format!(
                    "attention mask has shape {:?}, expected [{n}, {keys}]",
                    m.dims()
                )));
            }
        }
        let chunk = (max_scores / (h * keys).max(1)).clamp(1, n.max(1));
        if chunk >= n {
            let m = mask.chunk(0, n, past, keys)?;
            return self.attend_rows(q, all, &m, want_probs);
        }
        // Probabilities are asked for a few chosen rows: every chunk then keeps all the keys so they stack.
        let narrow_keys = mask.is_causal() && !want_probs;
        let (mut outs, mut probs) = (Vec::new(), Vec::new());
        for r0 in (0..n).step_by(chunk) {
            let qn = chunk.min(n - r0);
            let kn = if narrow_keys { past + r0 + qn } else { keys };
            let kv = KvPair {
                k: all.k.narrow(1, 0, kn)?,
                v: all.v.narrow(1, 0, kn)?,
            };
            let m = mask.chunk(r0, qn, past, kn)?;
            let qc = q.narrow(1, r0, qn)?.contiguous()?;
            let (o, p) = self.attend_rows(&qc, &kv, &m, want_probs)?;
            outs.push(o);
            probs.extend(p);
        }
        let probs = if want_probs {
            Some(Tensor::cat(&probs, 1)?)
        } else {
            None
        };
        Ok((Tensor::cat(&outs, 0)?, probs))
    }

    /// [`Self::attend_chunked`] under a mask that differs between query heads: attention runs once per
    /// distinct mask (heads are independent), and each head's output and probabilities come from its own.
    fn attend_per_head(
        &self,
        q: &Tensor,
        all: &KvPair,
        per_head: &[AttnMask],
        want_probs: bool,
        max_scores: usize,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (h, n, hd) = q.dims3()?;
        let mut distinct: Vec<&AttnMask> = Vec::new();
        let mut which = Vec::with_capacity(h);
        for m in per_head {
            match distinct.iter().position(|d| d.same_as(m)) {
                Some(i) => which.push(i),
                None => {
                    which.push(distinct.len());
                    distinct.push(m);
                }
            }
        }
        let runs = distinct
            .iter()
            .map(|m| self.attend_chunked(q, all, m, want_probs, max_scores))
            .collect::<Result<Vec<_>>>()?;
        let outs: Vec<Tensor> = runs
            .iter()
            .map(|(o, _)| o.reshape((n, h, hd)))
            .collect::<candle_core::Result<_>>()?;
        let out = Tensor::cat(
            &(0..h)
                .map(|head| outs[which[head]].narrow(1, head, 1))
                .collect::<candle_core::Result<Vec<_>>>()?,
            1,
        )?
        .reshape((n, h * hd))?;
        let probs = if want_probs {
            let parts = (0..h)
                .map(|head| {
                    runs[which[head]]
                        .1
                        .as_ref()
                        .ok_or_else(|| Error::Other("attention lost its probabilities".into()))?
                        .narrow(0, head, 1)
                        .map_err(Error::from)
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&parts, 0)?)
        } else {
            None
        };
        Ok((out, probs))
    }

    /// One chunk of [`Self::attend`]: queries `q` (`[heads, n, hd]`) over the keys of `kv` under the mask
    /// rows `mask` (`[n · keys]` f32).
    fn attend_rows(
        &self,
        q: &Tensor,
        kv: &KvPair,
        mask: &[f32],
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (h, n, hd) = q.dims3()?;
        let kvh = self.kv_heads;
        let keys = kv.rows();
        let g = h / kvh;
        // Heads h = kv * g + j share kv head `kv` (transformers' repeat_kv order), so grouping the query
        // heads lets one matmul per kv head serve its g query heads without materialising repeated K/V.
        let qg = q.reshape((kvh, g * n, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let probs = if q.device().is_cpu() && q.dtype() == DType::F32 {
            // One in-place pass (scale, mask, softmax) over the product, as `attend_many` does.
            let mut s = gemm::bmm_nt_cpu_f32(&qg, &kv.k, self.bf16)?
                .ok_or_else(|| Error::Other("fused attention needs f32 on CPU".into()))?;
            simd::softmax_past_own(&mut [], 0, &mut s, keys, mask, n, scale as f32);
            Tensor::from_vec(s, (kvh, g, n, keys), q.device())?
        } else {
            let mask_t = Tensor::from_slice(mask, (n, keys), q.device())?;
            let scores = (gemm::bmm_nt(&qg, &kv.k, self.bf16)? * scale)?
                .reshape((kvh, g, n, keys))?
                .to_dtype(DType::F32)?;
            softmax_f32(&scores.broadcast_add(&mask_t)?, q.dtype())?
        };
        let vt = kv.v.transpose(1, 2)?.contiguous()?;
        let out = gemm::bmm_nt(&probs.reshape((kvh, g * n, keys))?, &vt, self.bf16)?
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
    /// (`[c·r, hidden]`): projections in one matmul each, attention of each run over the shared `past`
    /// then the run's own rows under its mask (see [`Self::attend_many`]).
    /// `keep`: the rows whose output is wanted (`None`: all); attention still runs for every row, since
    /// the kept rows read the others' keys and values.
    fn forward_many(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        masks: &[&AttnMask],
        keep: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = masks.len();
        let n = x.dim(0)?;
        if c == 0 || n % c != 0 {
            return Err(Error::Other(format!(
                "{n} stacked rows cannot be split into {c} runs"
            )));
        }
        let rot_all = Rotary {
            cos: Tensor::cat(&vec![&rot.cos; c], 0)?,
            sin: Tensor::cat(&vec![&rot.sin; c], 0)?,
        };
        let (q, own) = self.project(x, &rot_all)?;
        let fused = q.device().is_cpu() && q.dtype() == DType::F32;
        let out = self.attend_many(&q, past, &own, masks, fused)?;
        match keep {
            Some(idx) => self.o_proj.forward(&out.index_select(idx, 0)?),
            None => self.o_proj.forward(&out),
        }
    }

    /// Attention of `c = masks.len()` runs whose queries `q` (`[heads, c·r, hd]`) and keys/values `own`
    /// (`[kv_heads, c·r, hd]`) are stacked run after run, each run seeing the shared `past` then its own
    /// `r` rows under its mask (`[r, past + r]`). Same math as [`Self::attend`] per run, arranged so that
    /// nothing scales with `c × past` except the scores themselves: the scores against `past` are one
    /// grouped matmul for all runs, the scores against the runs' own rows one matmul batched over runs,
    /// one softmax over `[past | own]` per row (scaled, then the mask added, in f32), and `P·V` as one
    /// matmul over `past` (V transposed once) plus one batched over the runs' own rows. `fused`: the
    /// softmax as one in-place CPU pass (f32 on CPU), otherwise with tensor ops (any device). Returns
    /// `[c·r, heads·hd]` before `o_proj`.
    fn attend_many(
        &self,
        q: &Tensor,
        past: Option<&KvPair>,
        own: &KvPair,
        masks: &[&AttnMask],
        fused: bool,
    ) -> Result<Tensor> {
        self.attend_many_bounded(q, past, own, masks, fused, MAX_SCORES)
    }

    /// [`Self::attend_many`] with at most `max_scores` scores per product (tests compare bounds).
    fn attend_many_bounded(
        &self,
        q: &Tensor,
        past: Option<&KvPair>,
        own: &KvPair,
        masks: &[&AttnMask],
        fused: bool,
        max_scores: usize,
    ) -> Result<Tensor> {
        let (h, n, hd) = q.dims3()?;
        let (kvh, g) = (self.kv_heads, self.heads / self.kv_heads);
        let c = masks.len();
        let r = n / c.max(1);
        let p = past.map_or(0, KvPair::rows);
        let keys = p + r;
        let dev = q.device();
        if h * r * keys > max_scores || masks.iter().any(|m| m.varies_by_head()) {
            // One run alone would exceed the scores' bound (a knockout whose targets span most of a long
            // prompt), or a run's mask differs between heads: each run attends on its own, in chunks of
            // rows (per group of heads).
            let mut outs = Vec::with_capacity(c);
            for (i, mask) in masks.iter().enumerate() {
                let mine = KvPair {
                    k: own.k.narrow(1, i * r, r)?,
                    v: own.v.narrow(1, i * r, r)?,
                };
                let all = match past {
                    Some(pv) if p > 0 => pv.cat(&mine)?,
                    _ => mine,
                };
                let qi = q.narrow(1, i * r, r)?.contiguous()?;
                outs.push(self.attend_chunked(&qi, &all, mask, false, max_scores)?.0);
            }
            return Ok(Tensor::cat(&outs, 0)?);
        }
        // The runs' masks stacked `[c·r, keys]` in f32 (a causal run shares one causal mask).
        let mut causal: Option<Vec<f32>> = None;
        let mut mask_cpu: Vec<f32> = Vec::with_capacity(c * r * keys);
        for mask in masks {
            if let AttnMask::Additive(m) = mask {
                if m.dims() != [r, keys] {
                    return Err(Error::Other(format!(
                        "attention mask has shape {:?}, expected [{r}, {keys}]",
                        m.dims()
                    )));
                }
            }
            match mask {
                AttnMask::Causal => {
                    if causal.is_none() {
                        causal = Some(mask.chunk(0, r, p, keys)?);
                    }
                    mask_cpu.extend_from_slice(causal.as_deref().unwrap_or_default());
                }
                _ => mask_cpu.extend(mask.chunk(0, r, p, keys)?),
            }
        }
        let mask = if fused {
            None
        } else {
            Some(Tensor::from_slice(&mask_cpu, (c * r, keys), dev)?)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        // Past keys and transposed values, made contiguous once for all runs.
        let past_kv = match past {
            Some(pv) if p > 0 => Some((pv.k.contiguous()?, pv.v.transpose(1, 2)?.contiguous()?)),
            _ => None,
        };
        // Runs per chunk so that one chunk's scores stay within MAX_SCORES floats.
        let per_chunk = (max_scores / (h * r * keys).max(1)).clamp(1, c.max(1));
        let mut outs = Vec::with_capacity(c.div_ceil(per_chunk));
        for i0 in (0..c).step_by(per_chunk) {
            let cc = per_chunk.min(c - i0);
            let m = cc * r;
            let qc = q.narrow(1, i0 * r, m)?.contiguous()?;
            // Heads h = kv * g + j share kv head `kv` (transformers' repeat_kv order): against `past`, the
            // g query heads of a kv head are one matmul for all runs (no repeated K/V).
            let qg = qc.reshape((kvh, g * m, hd))?;
            // Against the runs' own rows: one `[r, r]` block per (head, run); the few own K/V rows are
            // repeated per query head so the blocks line up with the past scores' rows.
            let rep = |t: &Tensor| -> Result<Tensor> {
                Ok(t.narrow(1, i0 * r, m)?
                    .unsqueeze(1)?
                    .broadcast_as((kvh, g, m, hd))?
                    .contiguous()?)
            };
            let qo = qc.reshape((h * cc, r, hd))?;
            let ko = rep(&own.k)?.reshape((h * cc, r, hd))?;
            let vo = rep(&own.v)?
                .reshape((h * cc, r, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let (pp, po) = if fused {
                let mut sp = match &past_kv {
                    Some((pk, _)) => gemm::bmm_nt_cpu_f32(&qg, pk, self.bf16)?
                        .ok_or_else(|| Error::Other("fused attention needs f32 on CPU".into()))?,
                    None => Vec::new(),
                };
                let mut so = gemm::bmm_nt_cpu_f32(&qo, &ko, self.bf16)?
                    .ok_or_else(|| Error::Other("fused attention needs f32 on CPU".into()))?;
                let mask_rows = &mask_cpu[i0 * r * keys..(i0 + cc) * r * keys];
                simd::softmax_past_own(&mut sp, p, &mut so, r, mask_rows, m, scale as f32);
                let pp = match past_kv {
                    Some(_) => Some(Tensor::from_vec(sp, (kvh, g * m, p), dev)?),
                    None => None,
                };
                (pp, Tensor::from_vec(so, (h * cc, r, r), dev)?)
            } else {
                let mask_c = mask
                    .as_ref()
                    .ok_or_else(|| Error::Other("unfused attention lost its mask".into()))?
                    .narrow(0, i0 * r, m)?;
                let so = (gemm::bmm_nt(&qo, &ko, self.bf16)? * scale)?
                    .to_dtype(DType::F32)?
                    .reshape((h, m, r))?
                    .broadcast_add(&mask_c.narrow(1, p, r)?)?;
                match &past_kv {
                    Some((pk, _)) => {
                        let sp = (gemm::bmm_nt(&qg, pk, self.bf16)? * scale)?
                            .to_dtype(DType::F32)?
                            .reshape((h, m, p))?
                            .broadcast_add(&mask_c.narrow(1, 0, p)?)?;
                        let probs = softmax_f32(&Tensor::cat(&[&sp, &so], 2)?, q.dtype())?;
                        (
                            Some(probs.narrow(2, 0, p)?.reshape((kvh, g * m, p))?),
                            probs.narrow(2, p, r)?.reshape((h * cc, r, r))?,
                        )
                    }
                    None => (None, softmax_f32(&so, q.dtype())?.reshape((h * cc, r, r))?),
                }
            };
            let mut out = gemm::bmm_nt(&po, &vo, self.bf16)?.reshape((h, m, hd))?;
            if let (Some(pp), Some((_, vt))) = (pp, &past_kv) {
                out = (gemm::bmm_nt(&pp, vt, self.bf16)?.reshape((h, m, hd))? + out)?;
            }
            outs.push(out.transpose(0, 1)?.reshape((m, h * hd))?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

/// Most attention scores (`heads × rows × keys` floats) one chunk of rows holds at once in
/// [`Attention::attend`] and [`Attention::attend_many`] (128 MiB in f32).
pub const MAX_SCORES: usize = 1 << 25;

/// Most rows one layer call over a span of the prompt computes at once past its keys and values (see
/// `DecoderLayer::forward_in_rows`): a long prompt's traced pass holds one such chunk's activations.
pub const LAYER_ROWS: usize = 4096;

/// Most rows the MLP of one layer call takes at once: its two intermediate products are `rows × 11 008`
/// floats each at 3B (360 MB at 4096 rows); a long prompt's rows go through in chunks of this many.
pub const MLP_ROWS: usize = 4096;

/// `[rows, heads·hd]` → contiguous `[heads, rows, hd]`.
fn split_heads(t: &Tensor, rows: usize, heads: usize, hd: usize) -> Result<Tensor> {
    Ok(t.reshape((rows, heads, hd))?
        .transpose(0, 1)?
        .contiguous()?)
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
        let n = x.dim(0)?;
        if n > LAYER_ROWS && !want_probs && mask.is_causal() {
            return self.forward_in_rows(x, rot, past, mask, LAYER_ROWS);
        }
        let h = self.input_layernorm.forward(x)?;
        let (attn, kv, probs) = self.self_attn.forward(&h, rot, past, mask, want_probs)?;
        let x = (x + attn)?;
        let hidden = self.mlp_residual(&x)?;
        Ok(LayerOutput { hidden, kv, probs })
    }

    /// [`Self::forward`] over a long span of rows, `rows` at a time: every row's keys and values first
    /// (later rows need them), then per chunk its queries, attention over the keys up to its last row,
    /// `o_proj` and the MLP. A call over the whole prompt then holds its input, its output and one
    /// chunk's activations, where the one-shot call held a dozen `[rows, hidden]` tensors at once (the
    /// normed input, the projections and their copies, the attention output, the sums). Each row's
    /// computation is the one-shot call's.
    fn forward_in_rows(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        mask: &AttnMask,
        rows: usize,
    ) -> Result<LayerOutput> {
        let n = x.dim(0)?;
        let att = &self.self_attn;
        // The normed input is dropped once the keys and values are made and normed again per chunk for
        // the queries: an RMSNorm pass costs less than holding `[rows, hidden]` through the loop.
        let own = att.kv(&self.input_layernorm.forward(x)?, rot)?;
        let p = past.map_or(0, KvPair::rows);
        let all = match past {
            Some(pv) if p > 0 => pv.cat(&own)?,
            _ => own.clone(),
        };
        let mut outs = Vec::with_capacity(n.div_ceil(rows));
        for r0 in (0..n).step_by(rows) {
            let len = rows.min(n - r0);
            let xc = x.narrow(0, r0, len)?;
            let hc = self.input_layernorm.forward(&xc)?;
            let q = split_heads(&att.q_proj.forward(&hc)?, len, att.heads, att.head_dim)?;
            let q = rope(&q, &rot.narrow(r0, len)?)?;
            // Keys up to this chunk's last row; the mask's query rows are prompt positions `p + r0 + i`.
            let keys = KvPair {
                k: all.k.narrow(1, 0, p + r0 + len)?,
                v: all.v.narrow(1, 0, p + r0 + len)?,
            };
            let (o, _) = att.attend(&q, &keys, mask, false)?;
            let xc = (xc + att.o_proj.forward(&o)?)?;
            outs.push(self.mlp_residual(&xc)?);
        }
        Ok(LayerOutput {
            hidden: Tensor::cat(&outs, 0)?,
            kv: own,
            probs: None,
        })
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
        self.forward_many_rows(x, rot, past, masks, 0)
    }

    /// [`Self::forward_many`], keeping only each run's last `keep_last` rows (`[c · keep_last, hidden]`;
    /// 0 keeps every row): for the model's last layer, where nothing reads the other rows' outputs (the
    /// last prompt position, plus the answer tokens scored by teacher forcing). Every row's keys and values
    /// still enter the attention, but `o_proj` and the MLP (≈ 93 % of a row's cost) run for the kept rows.
    pub fn forward_many_rows(
        &self,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        masks: &[&AttnMask],
        keep_last: usize,
    ) -> Result<Tensor> {
        let keep = if keep_last > 0 {
            let (c, n) = (masks.len(), x.dim(0)?);
            let r = n / c.max(1);
            let k = keep_last.min(r);
            let last: Vec<usize> = (1..=c).flat_map(|i| i * r - k..i * r).collect();
            Some(index_tensor(&last, x.device())?)
        } else {
            None
        };
        let h = self.input_layernorm.forward(x)?;
        let attn = self
            .self_attn
            .forward_many(&h, rot, past, masks, keep.as_ref())?;
        let x = match &keep {
            Some(k) => (x.index_select(k, 0)? + attn)?,
            None => (x + attn)?,
        };
        self.mlp_residual(&x)
    }

    /// `x + mlp(norm(x))`, row-wise, in chunks of [`MLP_ROWS`] rows (the MLP's intermediate products
    /// would otherwise grow with the prompt: 2 GB at 16 k rows of a 3B layer).
    fn mlp_residual(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let one = |x: &Tensor| -> Result<Tensor> {
            let h = self.post_attention_layernorm.forward(x)?;
            Ok((x + self.mlp.forward(&h)?)?)
        };
        if n <= MLP_ROWS {
            return one(x);
        }
        let parts = (0..n)
            .step_by(MLP_ROWS)
            .map(|r0| one(&x.narrow(0, r0, MLP_ROWS.min(n - r0))?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
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

    /// The CPU products of a call over `rows` query rows of which `out_rows` go through `o_proj` and the
    /// MLP (all of them, or one per run at the last layer of a batched knockout).
    fn gemm_shapes(&self, rows: usize, out_rows: usize) -> Vec<gemm::LinearShape> {
        let a = &self.self_attn;
        [&a.q_proj, &a.k_proj, &a.v_proj]
            .into_iter()
            .filter_map(|l| l.gemm_shape(rows))
            .chain(a.o_proj.gemm_shape(out_rows))
            .chain(self.mlp.gemm_shapes(out_rows))
            .collect()
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
    /// `vb` is rooted at the language model: reads `model.*` and `lm_head.weight` (the token embedding
    /// instead when `cfg.tie_word_embeddings`).
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, m.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Lin::from_weight(embed_tokens.embeddings().clone(), None)
        } else {
            linear(cfg.hidden_size, cfg.vocab_size, false, vb.pp("lm_head"))?
        };
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

    /// Query heads per layer.
    pub fn num_heads(&self) -> usize {
        self.cfg.num_attention_heads
    }

    pub fn layer(&self, i: usize) -> &DecoderLayer {
        &self.layers[i]
    }

    /// Compiles ahead, several at once, the CPU product kernels of a layer call over `rows` rows of which
    /// `out_rows` reach `o_proj` and the MLP (every layer has the same shapes; see [`gemm::prepare`]).
    pub fn prepare_products(&self, rows: usize, out_rows: usize) {
        if let Some(l) = self.layers.first() {
            gemm::prepare(&l.gemm_shapes(rows, out_rows));
        }
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
        self.prepare_products(x.dim(0)?, x.dim(0)?);
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
/// `(name, shape)` of every tensor of a Qwen2.5 language model (`model.*`, then `lm_head.weight`), in the
/// order a checkpoint lists them; a family adds its prefix (Qwen2.5-Omni: `thinker.`).
pub fn decoder_tensors(t: &TextConfig) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| v.push((name, shape));
    let (h, hd, nh, kv, inter, vocab) = (
        t.hidden_size,
        t.head_dim,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.intermediate_size,
        t.vocab_size,
    );
    add("model.embed_tokens.weight".into(), vec![vocab, h]);
    for i in 0..t.num_hidden_layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.self_attn.q_proj.weight"), vec![nh * hd, h]);
        add(format!("{p}.self_attn.q_proj.bias"), vec![nh * hd]);
        add(format!("{p}.self_attn.k_proj.weight"), vec![kv * hd, h]);
        add(format!("{p}.self_attn.k_proj.bias"), vec![kv * hd]);
        add(format!("{p}.self_attn.v_proj.weight"), vec![kv * hd, h]);
        add(format!("{p}.self_attn.v_proj.bias"), vec![kv * hd]);
        add(format!("{p}.self_attn.o_proj.weight"), vec![h, nh * hd]);
        add(format!("{p}.mlp.gate_proj.weight"), vec![inter, h]);
        add(format!("{p}.mlp.up_proj.weight"), vec![inter, h]);
        add(format!("{p}.mlp.down_proj.weight"), vec![h, inter]);
        add(format!("{p}.input_layernorm.weight"), vec![h]);
        add(format!("{p}.post_attention_layernorm.weight"), vec![h]);
    }
    add("model.norm.weight".into(), vec![h]);
    if !t.tie_word_embeddings {
        add("lm_head.weight".into(), vec![vocab, h]);
    }

    v
}

pub fn index_tensor(idx: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v, idx.len(), device)?)
}

/// Top-k (id, probability) of a logits row (f32 `[vocab]`).
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<(u32, f32)>> {
    let probs =
        candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?.to_vec1::<f32>()?;
    // Highest probability first, ties by id: a total order, so selecting the k best and sorting only them
    // gives the full sort's first k (a knockout sweep asks for the top-1 of every run over ~150k ids).
    let order = |a: &usize, b: &usize| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Ok(Vec::new());
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    Ok(idx.into_iter().map(|i| (i as u32, probs[i])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nn::max_abs_diff;
    use std::collections::HashMap;

    fn config(hidden: usize, inter: usize, heads: usize, kv_heads: usize, hd: usize) -> TextConfig {
        TextConfig {
            vocab_size: 16,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: 1,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: hd,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            mrope_section: vec![hd / 2, 0, 0],
            hidden_act: "silu".into(),
            tie_word_embeddings: false,
        }
    }

    /// A decoder layer with random weights (std `0.05`) stored in `dtype`.
    fn random_layer(cfg: &TextConfig, dtype: DType) -> DecoderLayer {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (q, kv) = (
            cfg.num_attention_heads * cfg.head_dim,
            cfg.num_key_value_heads * cfg.head_dim,
        );
        let shapes: [(&str, Vec<usize>); 11] = [
            ("self_attn.q_proj.weight", vec![q, d]),
            ("self_attn.q_proj.bias", vec![q]),
            ("self_attn.k_proj.weight", vec![kv, d]),
            ("self_attn.k_proj.bias", vec![kv]),
            ("self_attn.v_proj.weight", vec![kv, d]),
            ("self_attn.v_proj.bias", vec![kv]),
            ("self_attn.o_proj.weight", vec![d, q]),
            ("mlp.gate_proj.weight", vec![i, d]),
            ("mlp.up_proj.weight", vec![i, d]),
            ("mlp.down_proj.weight", vec![d, i]),
            ("input_layernorm.weight", vec![d]),
        ];
        let dev = Device::Cpu;
        let mut map: HashMap<String, Tensor> = shapes
            .into_iter()
            .map(|(name, shape)| {
                let t = (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * 0.05).unwrap();
                (name.to_string(), t.to_dtype(dtype).unwrap())
            })
            .collect();
        map.insert(
            "post_attention_layernorm.weight".into(),
            Tensor::ones(d, dtype, &dev).unwrap(),
        );
        DecoderLayer::new(cfg, VarBuilder::from_tensors(map, dtype, &dev)).unwrap()
    }

    fn random_rotary(rows: usize, hd: usize) -> Rotary {
        let t = Tensor::randn(0f32, 3f32, (rows, hd / 2), &Device::Cpu).unwrap();
        Rotary {
            cos: t.cos().unwrap(),
            sin: t.sin().unwrap(),
        }
    }

    /// Deterministic pseudo-random bits (SplitMix64).
    fn bit(seed: u64, a: usize, b: usize, percent: u64) -> bool {
        let mut z = seed ^ ((a as u64) << 32) ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 100 < percent
    }

    /// One mask per run: causal for every third run, otherwise random knockout pairs; run 1's first row
    /// loses every key (softmax over `f32::MIN` everywhere, as transformers).
    fn masks(c: usize, r: usize, past: usize) -> Vec<AttnMask> {
        (0..c)
            .map(|i| {
                if i % 3 == 2 {
                    return AttnMask::Causal;
                }
                let m = mask_for_rows(
                    past..past + r,
                    past + r,
                    |q, j| (i == 1 && q == past) || bit(i as u64, q, j, 30),
                    &Device::Cpu,
                )
                .unwrap();
                AttnMask::Additive(m)
            })
            .collect()
    }

    /// The per-run implementation `attend_many` replaced: past and own K/V concatenated per run.
    fn forward_many_per_run(
        att: &Attention,
        x: &Tensor,
        rot: &Rotary,
        past: Option<&KvPair>,
        masks: &[&AttnMask],
    ) -> Tensor {
        let c = masks.len();
        let r = x.dim(0).unwrap() / c;
        let rot_all = Rotary {
            cos: Tensor::cat(&vec![&rot.cos; c], 0).unwrap(),
            sin: Tensor::cat(&vec![&rot.sin; c], 0).unwrap(),
        };
        let (q, own) = att.project(x, &rot_all).unwrap();
        let outs: Vec<Tensor> = masks
            .iter()
            .enumerate()
            .map(|(i, mask)| {
                let qi = q.narrow(1, i * r, r).unwrap();
                let oi = KvPair {
                    k: own.k.narrow(1, i * r, r).unwrap(),
                    v: own.v.narrow(1, i * r, r).unwrap(),
                };
                let all = match past {
                    Some(p) => p.cat(&oi).unwrap(),
                    None => oi,
                };
                att.attend(&qi, &all, mask, false).unwrap().0
            })
            .collect();
        att.o_proj.forward(&Tensor::cat(&outs, 0).unwrap()).unwrap()
    }

    /// A knockout's rule-based mask written out a chunk at a time is the dense mask of the same pairs.
    #[test]
    fn blocked_pairs_chunks_equal_the_dense_mask() {
        let (past, rows) = (7, 12);
        let mut pairs = BlockedPairs::default();
        pairs.add(&[9, 12, 18], &[0, 3, 8, 11]);
        pairs.add(&[12, 13], &[5, 17, 2]);
        let dense = mask_for_rows(
            past..past + rows,
            past + rows,
            |q, j| pairs.blocked(q, j),
            &Device::Cpu,
        )
        .unwrap();
        let mask = AttnMask::Blocked(Arc::new(pairs));
        for (r0, n, keys) in [(0, rows, past + rows), (3, 4, past + 7), (11, 1, past + 12)] {
            let want: Vec<f32> = dense
                .narrow(0, r0, n)
                .unwrap()
                .narrow(1, 0, keys)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(
                mask.chunk(r0, n, past, keys).unwrap(),
                want,
                "rows {r0}+{n}"
            );
        }
    }

    /// Attention in chunks of query rows (and, under causal masks, only the keys up to each chunk's last
    /// row) equals attention over all rows at once, for every kind of mask, with and without past keys.
    #[test]
    fn chunked_attention_equals_the_whole_product() {
        let cfg = config(64, 96, 8, 2, 16);
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let layer = random_layer(&cfg, dtype);
            let att = &layer.self_attn;
            for (past_len, n) in [(0, 37), (19, 23)] {
                let keys = past_len + n;
                let x = Tensor::randn(0f32, 1f32, (keys, cfg.hidden_size), &dev).unwrap();
                let (q, kv) = att.project(&x, &random_rotary(keys, cfg.head_dim)).unwrap();
                let q = q.narrow(1, past_len, n).unwrap().contiguous().unwrap();
                let mut pairs = BlockedPairs::default();
                pairs.add(
                    &[past_len + 2, past_len + 9, keys - 1],
                    &[0, 1, 4, past_len + 3],
                );
                let masks = [
                    AttnMask::Causal,
                    AttnMask::Blocked(Arc::new(pairs.clone())),
                    AttnMask::Additive(
                        mask_for_rows(past_len..keys, keys, |q, j| pairs.blocked(q, j), &dev)
                            .unwrap(),
                    ),
                ];
                for mask in &masks {
                    for want_probs in [false, true] {
                        let (whole, pw) = att
                            .attend_chunked(&q, &kv, mask, want_probs, usize::MAX)
                            .unwrap();
                        // 5 rows a chunk: the last chunk is short.
                        let bound = 8 * keys * 5;
                        let (parts, pp) = att
                            .attend_chunked(&q, &kv, mask, want_probs, bound)
                            .unwrap();
                        let d = max_abs_diff(&whole, &parts);
                        assert!(d <= 1e-6, "{dtype:?} past {past_len} {mask:?}: {d}");
                        if let (Some(a), Some(b)) = (pw, pp) {
                            assert!(max_abs_diff(&a, &b) <= 1e-7);
                        }
                    }
                }
            }
        }
    }

    /// A layer call over many rows, a chunk of rows at a time past the keys and values, equals the
    /// one-shot call: outputs and K/V, causal and knockout masks, with and without past keys.
    #[test]
    fn a_layer_in_row_chunks_equals_the_one_shot_call() {
        let cfg = config(64, 96, 8, 2, 16);
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let layer = random_layer(&cfg, dtype);
            for past_len in [0, 11] {
                let n = 29;
                let x = Tensor::randn(0f32, 1f32, (n, cfg.hidden_size), &dev).unwrap();
                let rot = random_rotary(n, cfg.head_dim);
                let past = (past_len > 0).then(|| {
                    let xp = Tensor::randn(0f32, 1f32, (past_len, cfg.hidden_size), &dev).unwrap();
                    layer
                        .kv(&xp, &random_rotary(past_len, cfg.head_dim))
                        .unwrap()
                });
                let mut pairs = BlockedPairs::default();
                pairs.add(
                    &[past_len + 3, past_len + 20, past_len + n - 1],
                    &[0, 2, past_len + 5],
                );
                for mask in [AttnMask::Causal, AttnMask::Blocked(Arc::new(pairs))] {
                    let whole = layer
                        .forward(&x, &rot, past.as_ref(), &mask, false)
                        .unwrap();
                    let parts = layer
                        .forward_in_rows(&x, &rot, past.as_ref(), &mask, 6)
                        .unwrap();
                    let d = max_abs_diff(&whole.hidden, &parts.hidden);
                    assert!(d <= 1e-5, "{dtype:?} past {past_len} {mask:?}: {d}");
                    assert_eq!(max_abs_diff(&whole.kv.k, &parts.kv.k), 0.0);
                    assert_eq!(max_abs_diff(&whole.kv.v, &parts.kv.v), 0.0);
                }
            }
        }
    }

    /// Batched runs whose single run exceeds the scores' bound attend run by run in chunks, with the same
    /// outputs as the batched product.
    #[test]
    fn attend_many_over_the_bound_equals_the_batched_product() {
        let cfg = config(64, 96, 8, 2, 16);
        let layer = random_layer(&cfg, DType::F32);
        let att = &layer.self_attn;
        let dev = Device::Cpu;
        let (c, r, past_len) = (4, 9, 30);
        let x = Tensor::randn(0f32, 1f32, (c * r, cfg.hidden_size), &dev).unwrap();
        let rot = random_rotary(r, cfg.head_dim);
        let rot_all = Rotary {
            cos: Tensor::cat(&vec![&rot.cos; c], 0).unwrap(),
            sin: Tensor::cat(&vec![&rot.sin; c], 0).unwrap(),
        };
        let xp = Tensor::randn(0f32, 1f32, (past_len, cfg.hidden_size), &dev).unwrap();
        let past = att.kv(&xp, &random_rotary(past_len, cfg.head_dim)).unwrap();
        let (q, own) = att.project(&x, &rot_all).unwrap();
        let ms = masks(c, r, past_len);
        let ms: Vec<&AttnMask> = ms.iter().collect();
        for fused in [true, false] {
            let want = att
                .attend_many_bounded(&q, Some(&past), &own, &ms, fused, usize::MAX)
                .unwrap();
            let got = att
                .attend_many_bounded(&q, Some(&past), &own, &ms, fused, 8 * 4 * (past_len + r))
                .unwrap();
            let d = max_abs_diff(&want, &got);
            assert!(d <= 1e-6, "fused {fused}: {d}");
        }
    }

    #[test]
    fn attend_many_matches_per_run_attention() {
        let cfg = config(64, 96, 8, 2, 16);
        let layer = random_layer(&cfg, DType::F32);
        let att = &layer.self_attn;
        let dev = Device::Cpu;
        for (c, r, past_len) in [(5, 4, 23), (7, 1, 40), (3, 6, 0), (1, 3, 9)] {
            let x = Tensor::randn(0f32, 1f32, (c * r, cfg.hidden_size), &dev).unwrap();
            let rot = random_rotary(r, cfg.head_dim);
            let past = (past_len > 0).then(|| {
                let xp = Tensor::randn(0f32, 1f32, (past_len, cfg.hidden_size), &dev).unwrap();
                att.kv(&xp, &random_rotary(past_len, cfg.head_dim)).unwrap()
            });
            let ms = masks(c, r, past_len);
            let ms: Vec<&AttnMask> = ms.iter().collect();
            let want = forward_many_per_run(att, &x, &rot, past.as_ref(), &ms);
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let got = att
                .forward_many(&x, &rot, past.as_ref(), &ms, None)
                .unwrap();
            let rot_all = Rotary {
                cos: Tensor::cat(&vec![&rot.cos; c], 0).unwrap(),
                sin: Tensor::cat(&vec![&rot.sin; c], 0).unwrap(),
            };
            let (q, own) = att.project(&x, &rot_all).unwrap();
            let generic = att
                .o_proj
                .forward(
                    &att.attend_many(&q, past.as_ref(), &own, &ms, false)
                        .unwrap(),
                )
                .unwrap();
            for (name, t) in [("fused", &got), ("tensor ops", &generic)] {
                let d = max_abs_diff(t, &want);
                assert!(
                    d <= 1e-5 * scale.max(1.0),
                    "{name}: c={c} r={r} past={past_len}: max |diff| {d} (output scale {scale})"
                );
            }
        }
    }

    #[test]
    fn top_k_is_the_sorted_prefix() {
        let logits = Tensor::new(&[0.5f32, 2.0, -1.0, 2.0, 0.0, 3.0, 2.0], &Device::Cpu).unwrap();
        let ids = |k| -> Vec<u32> { top_k(&logits, k).unwrap().iter().map(|t| t.0).collect() };
        assert_eq!(ids(1), [5]);
        assert_eq!(ids(3), [5, 1, 3]);
        assert_eq!(ids(7), [5, 1, 3, 6, 0, 4, 2]);
        assert_eq!(ids(9), ids(7));
        assert!(ids(0).is_empty());
        let p = top_k(&logits, 2).unwrap();
        assert!(p[0].1 > p[1].1, "{p:?}");
    }

    #[test]
    fn attend_many_rejects_mismatched_masks() {
        let cfg = config(64, 96, 8, 2, 16);
        let layer = random_layer(&cfg, DType::F32);
        let x = Tensor::zeros((4, cfg.hidden_size), DType::F32, &Device::Cpu).unwrap();
        let rot = random_rotary(2, cfg.head_dim);
        let wrong = AttnMask::Additive(causal_mask(2, 1, &Device::Cpu).unwrap());
        let err = layer
            .forward_many(&x, &rot, None, &[&wrong, &wrong])
            .unwrap_err();
        assert!(err.to_string().contains("expected [2, 2]"), "{err}");
        assert!(layer
            .forward_many(&x, &rot, None, &[&AttnMask::Causal; 3])
            .is_err());
    }

    /// Timing of one layer's batched knockout call at the 3B model's dimensions (random bf16 weights):
    /// `cargo test --lib model::decoder::tests::bench_forward_many -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing at the 3B dimensions, not a check: run it by hand"]
    fn bench_forward_many() {
        let cfg = config(2048, 11008, 16, 2, 128);
        let layer = random_layer(&cfg, DType::BF16);
        let att = &layer.self_attn;
        let dev = Device::Cpu;
        let time = |f: &mut dyn FnMut()| {
            f();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            best * 1e3
        };
        for (c, r, past_len) in [(30, 25, 561), (36, 1, 585), (80, 25, 561)] {
            let x = Tensor::randn(0f32, 1f32, (c * r, cfg.hidden_size), &dev).unwrap();
            let rot = random_rotary(r, cfg.head_dim);
            let xp = Tensor::randn(0f32, 1f32, (past_len, cfg.hidden_size), &dev).unwrap();
            let past = att.kv(&xp, &random_rotary(past_len, cfg.head_dim)).unwrap();
            let ms = masks(c, r, past_len);
            let ms: Vec<&AttnMask> = ms.iter().collect();
            let old = time(&mut || {
                forward_many_per_run(att, &x, &rot, Some(&past), &ms);
            });
            let new = time(&mut || {
                att.forward_many(&x, &rot, Some(&past), &ms, None).unwrap();
            });
            let whole = time(&mut || {
                layer.forward_many(&x, &rot, Some(&past), &ms).unwrap();
            });
            println!(
                "c={c} r={r} past={past_len}: attention per run {old:.1} ms, batched {new:.1} ms; \
                 whole layer (batched) {whole:.1} ms"
            );
        }
    }
}
