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

    /// Reference: a full forward over every position with the knockout mask in its layers (the
    /// one-block [`KnockoutSet::run_full`]).
    pub fn run_full(&self, decoder: &Decoder, embeds: &Tensor, trace: &Trace) -> Result<Tensor> {
        KnockoutSet::from(self.clone()).run_full(decoder, embeds, trace)
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
    run_batch_with(decoder, trace, specs, &mut |_, _| true)?
        .ok_or_else(|| Error::Other("a knockout batch stopped without being asked to".into()))
}

/// [`run_batch`] calling `step(done, total)` after each batched layer call (a sweep of 144 knockouts is
/// ~70 such calls, each a fraction of a second): progress for long batches, and `step` returning `false`
/// stops the batch between two calls, giving `None`.
pub fn run_batch_with(
    decoder: &Decoder,
    trace: &Trace,
    specs: &[Knockout],
    step: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Vec<Tensor>>> {
    let sets: Vec<&[Knockout]> = specs.iter().map(std::slice::from_ref).collect();
    run_sets(decoder, trace, &sets, step)
}

/// Several knockout blocks applied together, each with its own sources, targets and layers: in layer `l`
/// a target query loses a source key when any block covering `l` pairs them. The app's toggle grid asks
/// for such unions (audio hidden from `last` in layers 0..12 and video in 24..36); a single [`Knockout`]
/// is the one-block case and gives the same numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnockoutSet {
    pub blocks: Vec<Knockout>,
}

impl From<Knockout> for KnockoutSet {
    fn from(k: Knockout) -> Self {
        Self { blocks: vec![k] }
    }
}

impl KnockoutSet {
    /// Every block valid, and at least one (an empty set would silently be the baseline).
    pub fn validate(&self, seq: usize, layers: usize) -> Result<()> {
        if self.blocks.is_empty() {
            return Err(Error::Prompt(
                "a knockout set needs at least one block".into(),
            ));
        }
        self.blocks.iter().try_for_each(|b| b.validate(seq, layers))
    }

    /// Additive mask `[rows, keys]` for query rows `first..first+rows` in decoder layer `layer`: causal,
    /// plus every block whose layers hold `layer`.
    pub fn mask_at(
        &self,
        layer: usize,
        first: usize,
        rows: usize,
        keys: usize,
        device: &Device,
    ) -> Result<Tensor> {
        union_mask(
            &self.blocks,
            &active_at(&self.blocks, layer),
            first,
            rows,
            keys,
            device,
        )
    }

    /// The set's effect computed incrementally from a trace (see [`run_sets`]). Returns the last
    /// position's logits.
    pub fn run(&self, decoder: &Decoder, trace: &Trace) -> Result<Tensor> {
        run_sets(decoder, trace, &[&self.blocks], &mut |_, _| true)?
            .and_then(|mut v| v.pop())
            .ok_or_else(|| Error::Other("a knockout produced no result".into()))
    }

    /// Reference: a full forward over every position with each layer's union mask.
    pub fn run_full(&self, decoder: &Decoder, embeds: &Tensor, trace: &Trace) -> Result<Tensor> {
        let seq = trace.seq_len;
        self.validate(seq, decoder.num_layers())?;
        let dev = decoder.device();
        let mut x = embeds.to_dtype(decoder.dtype())?;
        for l in 0..decoder.num_layers() {
            let mask = if self.blocks.iter().any(|b| b.start <= l && l < b.end) {
                AttnMask::Additive(self.mask_at(l, 0, seq, seq, dev)?)
            } else {
                AttnMask::Causal
            };
            x = decoder
                .layer(l)
                .forward(&x, &trace.rot, None, &mask, false)?
                .hidden;
        }
        let last = decoder.final_norm(&x.narrow(0, seq - 1, 1)?)?;
        Ok(decoder.logits(&last)?.squeeze(0)?)
    }

    /// Runs and scores the set for `token` (the baseline top-1 when `None`).
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

/// Which of `blocks` cover decoder layer `layer`.
fn active_at(blocks: &[Knockout], layer: usize) -> Vec<bool> {
    blocks
        .iter()
        .map(|b| b.start <= layer && layer < b.end)
        .collect()
}

/// Causal mask for rows `first..first+rows` over keys `0..keys`, plus the pairs of every active block.
fn union_mask(
    blocks: &[Knockout],
    active: &[bool],
    first: usize,
    rows: usize,
    keys: usize,
    device: &Device,
) -> Result<Tensor> {
    // Per active block: which keys it hides and from which queries.
    let marks: Vec<(Vec<bool>, Vec<bool>)> = blocks
        .iter()
        .zip(active)
        .filter(|(_, &on)| on)
        .map(|(b, _)| {
            let mut key = vec![false; keys];
            let mut query = vec![false; first + rows];
            for &s in b.sources.iter().filter(|&&s| s < keys) {
                key[s] = true;
            }
            for &t in b.targets.iter().filter(|&&t| t < first + rows) {
                query[t] = true;
            }
            (key, query)
        })
        .collect();
    mask_for_rows(
        first..first + rows,
        keys,
        |q, j| marks.iter().any(|(key, query)| query[q] && key[j]),
        device,
    )
}

/// The core of [`run_batch`] and [`KnockoutSet::run`]: each entry of `sets` is one run whose blocks apply
/// together. Runs whose first target is the same position recompute the same rows and share each layer
/// call; a run starts at its earliest block's first layer, from the traced residual there. `step(done,
/// total)` follows each layer call; when it returns `false` the rest is skipped and the result is `None`.
fn run_sets(
    decoder: &Decoder,
    trace: &Trace,
    sets: &[&[Knockout]],
    step: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Vec<Tensor>>> {
    let seq = trace.seq_len;
    let layers = decoder.num_layers();
    for set in sets {
        if set.is_empty() {
            return Err(Error::Prompt(
                "a knockout set needs at least one block".into(),
            ));
        }
        for k in set.iter() {
            k.validate(seq, layers)?;
        }
    }
    let first_target = |set: &[Knockout]| {
        set.iter()
            .filter_map(|k| k.targets.iter().min())
            .min()
            .copied()
            .unwrap_or(0)
    };
    let start_of = |set: &[Knockout]| set.iter().map(|k| k.start).min().unwrap_or(0);
    let mut out: Vec<Option<Tensor>> = vec![None; sets.len()];
    let mut by_first: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, set) in sets.iter().enumerate() {
        by_first.entry(first_target(set)).or_default().push(i);
    }
    let dev = decoder.device();
    // The batches (runs sharing their first recomputed row, at most MAX_BATCH_ROWS rows a call), each
    // with its first layer (its earliest run's start), and how many layer calls they take in all, for
    // `step`.
    let batches: Vec<(usize, &[usize], usize)> = by_first
        .iter()
        .flat_map(|(&first, idx)| {
            let per_batch = (MAX_BATCH_ROWS / (seq - first)).max(1);
            idx.chunks(per_batch).map(move |chunk| {
                let lo = chunk.iter().map(|&i| start_of(sets[i])).min().unwrap_or(0);
                (first, chunk, lo)
            })
        })
        .collect();
    let total: usize = batches.iter().map(|&(_, _, lo)| layers - lo).sum();
    let mut done = 0;
    for (first, chunk, lo) in batches {
        let t0 = std::time::Instant::now();
        let rows = seq - first;
        let rot = trace.rot.narrow(first, rows)?;
        // Per run: one mask per distinct pattern of active blocks (a single knockout has two: inside
        // and after its layers), and which of them each layer uses.
        let masks: Vec<(Vec<AttnMask>, Vec<usize>)> = chunk
            .iter()
            .map(|&i| {
                let set = sets[i];
                let mut patterns: Vec<Vec<bool>> = Vec::new();
                let mut masks = Vec::new();
                let mut per_layer = vec![0; layers];
                for (l, slot) in per_layer.iter_mut().enumerate().skip(start_of(set)) {
                    let active = active_at(set, l);
                    *slot = match patterns.iter().position(|p| *p == active) {
                        Some(n) => n,
                        None => {
                            masks.push(AttnMask::Additive(union_mask(
                                set, &active, first, rows, seq, dev,
                            )?));
                            patterns.push(active);
                            masks.len() - 1
                        }
                    };
                }
                Ok((masks, per_layer))
            })
            .collect::<Result<_>>()?;
        let mut xs: Vec<Option<Tensor>> = vec![None; chunk.len()];
        for l in lo..layers {
            let mut active = Vec::new();
            for (j, &i) in chunk.iter().enumerate() {
                if start_of(sets[i]) == l {
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
            let ms: Vec<&AttnMask> = active.iter().map(|&j| &masks[j].0[masks[j].1[l]]).collect();
            let kv = &trace.kv[l];
            let past = KvPair {
                k: kv.k.narrow(1, 0, first)?,
                v: kv.v.narrow(1, 0, first)?,
            };
            let past = (first > 0).then_some(&past);
            // After the last layer only each run's last row is read (its logits).
            let last_only = l + 1 == layers;
            let y = decoder
                .layer(l)
                .forward_many_rows(&stacked, &rot, past, &ms, last_only)?;
            let keep = if last_only { 1 } else { rows };
            for (n, &j) in active.iter().enumerate() {
                xs[j] = Some(y.narrow(0, n * keep, keep)?);
            }
            done += 1;
            if !step(done, total) {
                return Ok(None);
            }
        }
        let lasts: Vec<Tensor> = xs
            .iter()
            .map(|x| match x {
                Some(x) => Ok(x.narrow(0, x.dim(0)? - 1, 1)?),
                None => Err(Error::Other("knockout never started".into())),
            })
            .collect::<Result<_>>()?;
        let logits = decoder.logits(&decoder.final_norm(&Tensor::cat(&lasts, 0)?)?)?;
        for (j, &i) in chunk.iter().enumerate() {
            out[i] = Some(logits.get(j)?);
        }
        tracing::debug!(
            runs = chunk.len(),
            rows,
            from_layer = lo,
            seconds = t0.elapsed().as_secs_f64(),
            "knockout batch"
        );
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| Error::Other("a knockout produced no result".into())))
        .collect::<Result<_>>()
        .map(Some)
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
