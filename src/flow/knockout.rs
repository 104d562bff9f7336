//! Attention knockout: in decoder layers `[start, end)` the queries of the target positions may not attend
//! to the keys of the source positions (the pre-softmax score is pushed to the dtype's minimum, all heads),
//! as in Geva et al. 2023 and its successors.
//!
//! Computed incrementally from a [`Trace`]: layers before `start` are reused untouched, and from `start`
//! on only the positions at or after the first target are recomputed (earlier positions cannot change:
//! nothing they attend to changes), attending to the traced K/V of the earlier positions. A knockout into
//! `last` therefore recomputes one row per layer.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::trace::{prob_of, Trace};
use crate::model::decoder::{mask_for_rows, top_k, AttnMask, Decoder, KvPair};

/// One knockout: which queries lose which keys, in which layers. Serialisable: experiments are data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knockout {
    /// Key positions blocked.
    pub sources: Vec<usize>,
    /// Query positions that lose them.
    pub targets: Vec<usize>,
    /// Half-open layer range `[start, end)`.
    pub start: usize,
    pub end: usize,
}

/// The metric of a run: probability of the watched token at the last position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockoutResult {
    pub prob: f32,
    pub base_prob: f32,
    /// `100 · (prob − base_prob) / base_prob`.
    pub rel_change: f32,
    /// Top-1 token after the knockout.
    pub top1_id: u32,
    /// Token whose probability is reported.
    pub token_id: u32,
}

pub fn rel_change(p: f32, p0: f32) -> f32 {
    if p0 > 0.0 {
        100.0 * (p - p0) / p0
    } else {
        0.0
    }
}

impl Knockout {
    pub fn validate(&self, seq: usize, layers: usize) -> Result<()> {
        if self.start >= self.end || self.end > layers {
            return Err(Error::Prompt(format!(
                "layer range {}..{} is not inside 0..{layers} (half-open, 0-based)",
                self.start, self.end
            )));
        }
        if self.sources.is_empty() || self.targets.is_empty() {
            return Err(Error::Prompt(
                "a knockout needs source and target positions".into(),
            ));
        }
        if let Some(&p) = self
            .sources
            .iter()
            .chain(&self.targets)
            .find(|&&p| p >= seq)
        {
            return Err(Error::Prompt(format!(
                "position {p} is outside the prompt ({seq} positions)"
            )));
        }
        Ok(())
    }

    /// Additive mask `[rows, keys]` for query rows `first..first+rows` over keys `0..keys`: causal, plus
    /// the knockout when `active`.
    pub fn mask(
        &self,
        first: usize,
        rows: usize,
        keys: usize,
        active: bool,
        device: &Device,
    ) -> Result<Tensor> {
        let mut blocked_key = vec![false; keys];
        let mut target = vec![false; first + rows];
        if active {
            for &s in self.sources.iter().filter(|&&s| s < keys) {
                blocked_key[s] = true;
            }
            for &t in self.targets.iter().filter(|&&t| t < first + rows) {
                target[t] = true;
            }
        }
        mask_for_rows(
            first..first + rows,
            keys,
            |q, j| target[q] && blocked_key[j],
            device,
        )
    }

    /// The knockout's effect computed incrementally from a trace (see [`run_batch`]). Returns the last
    /// position's logits.
    pub fn run(&self, decoder: &Decoder, trace: &Trace) -> Result<Tensor> {
        run_batch(decoder, trace, std::slice::from_ref(self))?
            .pop()
            .ok_or_else(|| Error::Other("a knockout produced no result".into()))
    }

    /// Reference: a full forward over every position with the knockout mask in its layers.
    pub fn run_full(&self, decoder: &Decoder, embeds: &Tensor, trace: &Trace) -> Result<Tensor> {
        let seq = trace.seq_len;
        self.validate(seq, decoder.num_layers())?;
        let dev = decoder.device();
        let ko = AttnMask::Additive(self.mask(0, seq, seq, true, dev)?);
        let mut x = embeds.to_dtype(decoder.dtype())?;
        for l in 0..decoder.num_layers() {
            let mask = if l >= self.start && l < self.end {
                &ko
            } else {
                &AttnMask::Causal
            };
            x = decoder
                .layer(l)
                .forward(&x, &trace.rot, None, mask, false)?
                .hidden;
        }
        let last = decoder.final_norm(&x.narrow(0, seq - 1, 1)?)?;
        Ok(decoder.logits(&last)?.squeeze(0)?)
    }

    /// Runs and scores the knockout for `token` (the baseline top-1 when `None`).
    pub fn score(
        &self,
        decoder: &Decoder,
        trace: &Trace,
        token: Option<u32>,
    ) -> Result<KnockoutResult> {
        let logits = self.run(decoder, trace)?;
        score_logits(&logits, trace, token)
    }
}

/// Most stacked rows one batched layer call takes (bounds memory: rows × intermediate size × 4 bytes).
const MAX_BATCH_ROWS: usize = 2048;

/// Runs many knockouts together, exactly as [`Knockout::run`] would one by one: knockouts whose first
/// target is the same position recompute the same rows, so each layer's weights are read once for all of
/// them (a knockout into `last` adds one row to a shared matmul instead of a pass over the weights).
/// Returns each knockout's last-position logits, in order.
pub fn run_batch(decoder: &Decoder, trace: &Trace, specs: &[Knockout]) -> Result<Vec<Tensor>> {
    let seq = trace.seq_len;
    let layers = decoder.num_layers();
    for k in specs {
        k.validate(seq, layers)?;
    }
    let mut out: Vec<Option<Tensor>> = vec![None; specs.len()];
    let mut by_first: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, k) in specs.iter().enumerate() {
        by_first
            .entry(*k.targets.iter().min().unwrap_or(&0))
            .or_default()
            .push(i);
    }
    let dev = decoder.device();
    for (first, idx) in by_first {
        let rows = seq - first;
        let per_batch = (MAX_BATCH_ROWS / rows).max(1);
        let rot = trace.rot.narrow(first, rows)?;
        for chunk in idx.chunks(per_batch) {
            // Masks per knockout (knockout layers / plain layers); rows of each knockout's stream.
            let masks: Vec<(AttnMask, AttnMask)> = chunk
                .iter()
                .map(|&i| {
                    let k = &specs[i];
                    Ok((
                        AttnMask::Additive(k.mask(first, rows, seq, true, dev)?),
                        AttnMask::Additive(k.mask(first, rows, seq, false, dev)?),
                    ))
                })
                .collect::<Result<_>>()?;
            let mut xs: Vec<Option<Tensor>> = vec![None; chunk.len()];
            let lo = chunk.iter().map(|&i| specs[i].start).min().unwrap_or(0);
            for l in lo..layers {
                let mut active = Vec::new();
                for (j, &i) in chunk.iter().enumerate() {
                    if specs[i].start == l {
                        xs[j] = Some(trace.residuals[l].narrow(0, first, rows)?);
                    }
                    if xs[j].is_some() {
                        active.push(j);
                    }
                }
                if active.is_empty() {
                    continue;
                }
                let stacked = Tensor::cat(
                    &active
                        .iter()
                        .filter_map(|&j| xs[j].as_ref())
                        .collect::<Vec<_>>(),
                    0,
                )?;
                let ms: Vec<&AttnMask> = active
                    .iter()
                    .map(|&j| {
                        if l < specs[chunk[j]].end {
                            &masks[j].0
                        } else {
                            &masks[j].1
                        }
                    })
                    .collect();
                let kv = &trace.kv[l];
                let past = KvPair {
                    k: kv.k.narrow(1, 0, first)?,
                    v: kv.v.narrow(1, 0, first)?,
                };
                let y = decoder.layer(l).forward_many(
                    &stacked,
                    &rot,
                    (first > 0).then_some(&past),
                    &ms,
                )?;
                for (n, &j) in active.iter().enumerate() {
                    xs[j] = Some(y.narrow(0, n * rows, rows)?);
                }
            }
            let lasts: Vec<Tensor> = xs
                .iter()
                .map(|x| match x {
                    Some(x) => Ok(x.narrow(0, rows - 1, 1)?),
                    None => Err(Error::Other("knockout never started".into())),
                })
                .collect::<Result<_>>()?;
            let logits = decoder.logits(&decoder.final_norm(&Tensor::cat(&lasts, 0)?)?)?;
            for (j, &i) in chunk.iter().enumerate() {
                out[i] = Some(logits.get(j)?);
            }
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| Error::Other("a knockout produced no result".into())))
        .collect()
}

/// The metric for a last-position logits row.
pub fn score_logits(logits: &Tensor, trace: &Trace, token: Option<u32>) -> Result<KnockoutResult> {
    let token_id = token.unwrap_or(trace.top1_id);
    let prob = prob_of(logits, token_id)?;
    let base_prob = trace.base_prob(token_id)?;
    Ok(KnockoutResult {
        prob,
        base_prob,
        rel_change: rel_change(prob, base_prob),
        top1_id: top_k(logits, 1)?[0].0,
        token_id,
    })
}
