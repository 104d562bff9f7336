//! Attention knockout: in decoder layers `[start, end)` the queries of the target positions may not attend
//! to the keys of the source positions (the pre-softmax score is pushed to the dtype's minimum, all heads),
//! as in Geva et al. 2023 and its successors.
//!
//! Computed incrementally from a [`Trace`]: layers before `start` are reused untouched, and from `start`
//! on only the positions at or after the first target are recomputed (earlier positions cannot change:
//! nothing they attend to changes), attending to the traced K/V of the earlier positions. A knockout into
//! `last` therefore recomputes one row per layer.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::answer::Continuation;
use crate::flow::trace::{prob_of, Trace};
use crate::model::decoder::{top_k, AttnMask, BlockedPairs, Decoder, KvPair};

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
    /// The query heads (0-based) the block applies in, in every layer of the range; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Vec<usize>>,
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
/// ~70 such calls, each a fraction of a second), counted in row-equivalents of work (see
/// [`Work::cost`]): progress for long batches, and `step` returning `false` stops the batch between two
/// calls, giving `None`.
pub fn run_batch_with(
    decoder: &Decoder,
    trace: &Trace,
    specs: &[Knockout],
    step: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Vec<Tensor>>> {
    let sets: Vec<&[Knockout]> = specs.iter().map(std::slice::from_ref).collect();
    run_sets(decoder, trace, None, &sets, step)
}

/// [`run_batch_with`] on the prompt continued by an answer ([`Continuation`]): each knockout's logits
/// `[n, vocab]` at the last prompt position and at the answer's first `n - 1` tokens (row `i` predicts
/// answer token `i`; row 0 is what [`run_batch_with`] returns). Knockouts whose targets hold the last
/// prompt position block the answer's queries too.
pub fn run_batch_answer(
    decoder: &Decoder,
    trace: &Trace,
    answer: &Continuation,
    specs: &[Knockout],
    step: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Vec<Tensor>>> {
    let sets: Vec<&[Knockout]> = specs.iter().map(std::slice::from_ref).collect();
    run_sets(decoder, trace, Some(answer), &sets, step)
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

    /// The mask of decoder layer `layer`: causal, plus the pairs of every block whose layers hold it.
    pub fn mask_at(&self, layer: usize) -> AttnMask {
        union_mask(&self.blocks, &active_at(&self.blocks, layer))
    }

    /// The set's effect computed incrementally from a trace (see [`run_sets`]). Returns the last
    /// position's logits.
    pub fn run(&self, decoder: &Decoder, trace: &Trace) -> Result<Tensor> {
        run_sets(decoder, trace, None, &[&self.blocks], &mut |_, _| true)?
            .and_then(|mut v| v.pop())
            .ok_or_else(|| Error::Other("a knockout produced no result".into()))
    }

    /// [`Self::run`] on the prompt continued by `answer`: logits `[n, vocab]`, row `i` predicting answer
    /// token `i` (see [`run_batch_answer`]).
    pub fn run_answer(
        &self,
        decoder: &Decoder,
        trace: &Trace,
        answer: &Continuation,
    ) -> Result<Tensor> {
        run_sets(
            decoder,
            trace,
            Some(answer),
            &[&self.blocks],
            &mut |_, _| true,
        )?
        .and_then(|mut v| v.pop())
        .ok_or_else(|| Error::Other("a knockout produced no result".into()))
    }

    /// Reference: a full forward over every position with each layer's union mask.
    pub fn run_full(&self, decoder: &Decoder, embeds: &Tensor, trace: &Trace) -> Result<Tensor> {
        let seq = trace.seq_len;
        self.validate(seq, decoder.num_layers())?;
        let mut x = embeds.to_dtype(decoder.dtype())?;
        for l in 0..decoder.num_layers() {
            let active = active_at(&self.blocks, l);
            // Blocks restricted to some heads: the reference is a dense `[heads, seq, seq]` additive mask
            // (as transformers' eager attention adds a 4-D mask), not the rules the incremental runs use.
            let mask = if self
                .blocks
                .iter()
                .zip(&active)
                .any(|(b, &on)| on && b.heads.is_some())
            {
                per_head_dense_mask(
                    &self.blocks,
                    &active,
                    decoder.num_heads(),
                    seq,
                    decoder.device(),
                )?
            } else {
                self.mask_at(l)
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

/// The causal mask plus the pairs of every active block (written out a chunk of rows at a time by the
/// attention, see [`AttnMask::Blocked`]).
/// `[heads, seq, seq]` additive mask of the active blocks, each in its heads: causal, then `f32::MIN` where
/// a block covering head `h` hides key `j` from query `q`.
fn per_head_dense_mask(
    blocks: &[Knockout],
    active: &[bool],
    heads: usize,
    seq: usize,
    device: &candle_core::Device,
) -> Result<AttnMask> {
    let mut data = vec![0f32; heads * seq * seq];
    for h in 0..heads {
        for q in 0..seq {
            let row = &mut data[(h * seq + q) * seq..(h * seq + q + 1) * seq];
            row[q + 1..].fill(f32::MIN);
        }
        for (b, _) in blocks.iter().zip(active).filter(|(_, &on)| on) {
            if b.heads.as_ref().is_some_and(|hs| !hs.contains(&h)) {
                continue;
            }
            for &q in &b.targets {
                for &j in &b.sources {
                    if j <= q {
                        data[(h * seq + q) * seq + j] = f32::MIN;
                    }
                }
            }
        }
    }
    Ok(AttnMask::Additive(Tensor::from_vec(
        data,
        (heads, seq, seq),
        device,
    )?))
}

fn union_mask(blocks: &[Knockout], active: &[bool]) -> AttnMask {
    let mut pairs = BlockedPairs::default();
    for (b, _) in blocks.iter().zip(active).filter(|(_, &on)| on) {
        pairs.add_in_heads(&b.targets, &b.sources, b.heads.as_deref());
    }
    if pairs.is_empty() {
        AttnMask::Causal
    } else {
        AttnMask::Blocked(std::sync::Arc::new(pairs))
    }
}

/// Where a block of rows in one batched layer call comes from: the traced residual entering that layer
/// (a run starting there) or block `b` of the previous call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Input {
    Trace,
    Block(usize),
}

/// One batched layer call: the distinct blocks of `rows` rows it computes, each from an input under a
/// mask (an index into the batch's masks).
struct Call {
    layer: usize,
    blocks: Vec<(Input, usize)>,
}

/// The layer calls of one batch of runs that share their first recomputed row. Runs whose state and mask
/// are the same at a layer share one block there: windows that start at the same layer with the same
/// edit (the centred windows clipped at layer 0, `[0, 5)` … `[0, 9)` for k = 9) are computed once until
/// their edits differ. Exact: such runs' rows are bitwise the same inputs to the same computation.
struct BatchPlan<'a> {
    first: usize,
    rows: usize,
    runs: &'a [usize],
    calls: Vec<Call>,
    /// Per run (in `runs` order): its block in the last call.
    last_block: Vec<usize>,
    /// Per mask: a run and one of its active-block patterns that produce it (to build it once).
    masks: Vec<(usize, Vec<bool>)>,
}

/// Work of a batched knockout run: query rows recomputed, summed over its layer calls (a 586-token
/// forward is 586 × 36), and the number of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub row_layers: usize,
    pub calls: usize,
}

impl Work {
    /// In row-equivalents: each call's rows plus [`CALL_OVERHEAD_ROWS`] for its pass over the layer's
    /// weights (progress and ETAs weight calls by it).
    pub fn cost(&self) -> usize {
        self.row_layers + self.calls * CALL_OVERHEAD_ROWS
    }
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            row_layers: self.row_layers + o.row_layers,
            calls: self.calls + o.calls,
        }
    }
}

/// The work of one layer call of a batch whose blocks are `rows` rows each.
fn call_work(call: &Call, rows: usize) -> Work {
    Work {
        row_layers: call.blocks.len() * rows,
        calls: 1,
    }
}

fn plan_work(plan: &BatchPlan) -> Work {
    plan.calls
        .iter()
        .map(|c| call_work(c, plan.rows))
        .fold(Work::default(), |a, b| a + b)
}

/// A layer call reads every weight of the layer once whatever its row count: on the CPU that costs about
/// as much as 64 rows of products (a batch of one-row runs into `last` takes ≈ 1/11 of the time of a
/// batch of 25-row runs, not 1/25).
const CALL_OVERHEAD_ROWS: usize = 64;

/// Splits `sets` into batches (runs sharing their first target, at most [`MAX_BATCH_ROWS`] rows a call)
/// and plans each one's layer calls.
fn plan_sets<'a>(
    sets: &[&[Knockout]],
    seq: usize,
    layers: usize,
    by_first: &'a std::collections::BTreeMap<usize, Vec<usize>>,
) -> Vec<BatchPlan<'a>> {
    let mut plans = Vec::new();
    for (&first, idx) in by_first {
        let rows = seq - first;
        let per_batch = (MAX_BATCH_ROWS / rows).max(1);
        for runs in idx.chunks(per_batch) {
            plans.push(plan_batch(sets, first, rows, runs, layers));
        }
    }
    plans
}

/// The edit a run applies in one layer, as data: the (sources, targets) of its active blocks. Runs with
/// the same edit at a layer use the same mask.
/// A layer's edit: the active blocks' sources, targets and heads (runs with equal keys share a mask).
type EditKey<'a> = Vec<(&'a [usize], &'a [usize], Option<&'a [usize]>)>;

fn plan_batch<'a>(
    sets: &[&[Knockout]],
    first: usize,
    rows: usize,
    runs: &'a [usize],
    layers: usize,
) -> BatchPlan<'a> {
    let mut mask_ids: std::collections::HashMap<EditKey, usize> = Default::default();
    let mut masks: Vec<(usize, Vec<bool>)> = Vec::new();
    // Per run: its first layer and its mask in each layer from there on.
    let per_run: Vec<(usize, Vec<usize>)> = runs
        .iter()
        .map(|&i| {
            let set = sets[i];
            let start = start_of(set);
            let ids = (start..layers)
                .map(|l| {
                    let active = active_at(set, l);
                    let key: EditKey = set
                        .iter()
                        .zip(&active)
                        .filter(|(_, &on)| on)
                        .map(|(b, _)| {
                            (
                                b.sources.as_slice(),
                                b.targets.as_slice(),
                                b.heads.as_deref(),
                            )
                        })
                        .collect();
                    *mask_ids.entry(key).or_insert_with(|| {
                        masks.push((i, active));
                        masks.len() - 1
                    })
                })
                .collect();
            (start, ids)
        })
        .collect();
    let lo = per_run.iter().map(|(s, _)| *s).min().unwrap_or(0);
    let mut cur: Vec<Option<usize>> = vec![None; runs.len()];
    let mut calls = Vec::new();
    for l in lo..layers {
        let mut blocks: Vec<(Input, usize)> = Vec::new();
        for (j, (start, ids)) in per_run.iter().enumerate() {
            let input = if *start == l {
                Input::Trace
            } else if let Some(b) = cur[j] {
                Input::Block(b)
            } else {
                continue;
            };
            let key = (input, ids[l - start]);
            cur[j] = Some(match blocks.iter().position(|b| *b == key) {
                Some(b) => b,
                None => {
                    blocks.push(key);
                    blocks.len() - 1
                }
            });
        }
        calls.push(Call { layer: l, blocks });
    }
    BatchPlan {
        first,
        rows,
        runs,
        calls,
        last_block: cur.into_iter().map(|b| b.unwrap_or(0)).collect(),
        masks,
    }
}

/// A run's first layer: its earliest block's.
fn start_of(set: &[Knockout]) -> usize {
    set.iter().map(|k| k.start).min().unwrap_or(0)
}

/// The first position a run recomputes: its earliest target.
fn first_target(set: &[Knockout]) -> usize {
    set.iter()
        .filter_map(|k| k.targets.iter().min())
        .min()
        .copied()
        .unwrap_or(0)
}

/// Validates `sets` and groups their indices by first target.
fn group_sets(
    sets: &[&[Knockout]],
    seq: usize,
    layers: usize,
) -> Result<std::collections::BTreeMap<usize, Vec<usize>>> {
    let mut by_first: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, set) in sets.iter().enumerate() {
        if set.is_empty() {
            return Err(Error::Prompt(
                "a knockout set needs at least one block".into(),
            ));
        }
        for k in set.iter() {
            k.validate(seq, layers)?;
        }
        by_first.entry(first_target(set)).or_default().push(i);
    }
    Ok(by_first)
}

/// The work of [`run_batch_with`] for `specs`; `step` reports its [`Work::cost`]. A sweep that runs
/// several batches adds them up for one honest progress bar.
pub fn batch_work(decoder: &Decoder, trace: &Trace, specs: &[Knockout]) -> Result<Work> {
    let sets: Vec<&[Knockout]> = specs.iter().map(std::slice::from_ref).collect();
    let layers = decoder.num_layers();
    let by_first = group_sets(&sets, trace.seq_len, layers)?;
    Ok(plan_sets(&sets, trace.seq_len, layers, &by_first)
        .iter()
        .map(plan_work)
        .fold(Work::default(), |a, b| a + b))
}

/// The core of [`run_batch`] and [`KnockoutSet::run`]: each entry of `sets` is one run whose blocks apply
/// together. Runs whose first target is the same position recompute the same rows and share each layer
/// call (see [`BatchPlan`]); a run starts at its earliest block's first layer, from the traced residual
/// there. `step(done, total)` follows each layer call, in row-equivalents (see [`Work::cost`]); when it
/// returns `false` the rest is skipped and the result is `None`.
fn run_sets(
    decoder: &Decoder,
    trace: &Trace,
    answer: Option<&Continuation>,
    sets: &[&[Knockout]],
    step: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Vec<Tensor>>> {
    let layers = decoder.num_layers();
    // With an answer the sequence runs on past the prompt: its rows are recomputed with the prompt rows,
    // and they are targets wherever the last prompt position is one.
    let extra = answer.map_or(0, Continuation::extra);
    let seq = trace.seq_len + extra;
    let extended: Vec<Vec<Knockout>>;
    let sets: Vec<&[Knockout]> = if extra > 0 {
        let last = trace.seq_len - 1;
        extended = sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|k| {
                        let mut k = k.clone();
                        if k.targets.contains(&last) {
                            k.targets.extend(trace.seq_len..seq);
                        }
                        k
                    })
                    .collect()
            })
            .collect();
        extended.iter().map(Vec::as_slice).collect()
    } else {
        sets.to_vec()
    };
    let sets = &sets[..];
    let tail = extra + 1;
    let by_first = group_sets(sets, seq, layers)?;
    let plans = plan_sets(sets, seq, layers, &by_first);
    let total: usize = plans.iter().map(|p| plan_work(p).cost()).sum();
    let mut out: Vec<Option<Tensor>> = vec![None; sets.len()];
    let mut done = 0;
    for plan in &plans {
        let t0 = std::time::Instant::now();
        let (first, rows) = (plan.first, plan.rows);
        let rot = match answer {
            Some(a) => a.rot_from(trace, first)?,
            None => trace.rot.narrow(first, rows)?,
        };
        let masks: Vec<AttnMask> = plan
            .masks
            .iter()
            .map(|(i, active)| union_mask(sets[*i], active))
            .collect();
        let mut prev: Option<Tensor> = None;
        for call in &plan.calls {
            let l = call.layer;
            let traced = match answer {
                Some(a) => a.rows_from(trace, l, first)?,
                None => trace.residuals.rows(l, first, rows)?,
            };
            let inputs: Vec<Tensor> = call
                .blocks
                .iter()
                .map(|(input, _)| match (input, &prev) {
                    (Input::Trace, _) => Ok(traced.clone()),
                    (Input::Block(b), Some(p)) => Ok(p.narrow(0, b * rows, rows)?),
                    (Input::Block(_), None) => Err(Error::Other(
                        "knockout plan reads a block never computed".into(),
                    )),
                })
                .collect::<Result<_>>()?;
            let stacked = Tensor::cat(&inputs, 0)?;
            let ms: Vec<&AttnMask> = call.blocks.iter().map(|(_, m)| &masks[*m]).collect();
            let kv = &trace.kv[l];
            let past = KvPair {
                k: kv.k.narrow(1, 0, first)?,
                v: kv.v.narrow(1, 0, first)?,
            };
            let past = (first > 0).then_some(&past);
            // After the last layer only each block's last `tail` rows are read (their logits).
            let keep = if l + 1 == layers { tail } else { 0 };
            // Every call stacks a new number of rows: compile its products' kernels on all threads first.
            let n = call.blocks.len();
            decoder.prepare_products(n * rows, if keep > 0 { n * keep } else { n * rows });
            prev = Some(
                decoder
                    .layer(l)
                    .forward_many_rows(&stacked, &rot, past, &ms, keep)?,
            );
            done += call_work(call, rows).cost();
            if !step(done, total) {
                return Ok(None);
            }
        }
        let last = prev.ok_or_else(|| Error::Other("knockout never started".into()))?;
        // `last` holds `tail` rows per block of the last call.
        let logits = decoder.logits(&decoder.final_norm(&last)?)?;
        for (&i, &b) in plan.runs.iter().zip(&plan.last_block) {
            out[i] = Some(match answer {
                Some(_) => logits.narrow(0, b * tail, tail)?,
                None => logits.get(b)?,
            });
        }
        tracing::debug!(
            runs = plan.runs.len(),
            rows,
            layer_calls = plan.calls.len(),
            blocks = plan.calls.iter().map(|c| c.blocks.len()).sum::<usize>(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The centred 9-layer windows of one pair over 36 layers: the five clipped at layer 0 share their
    /// rows until their edits part, so a layer call computes fewer blocks than there are active runs.
    #[test]
    fn plans_share_blocks_of_windows_with_the_same_start_until_they_part() {
        let layers = 36;
        let specs: Vec<Knockout> = (0..layers)
            .map(|l| {
                let (start, end) =
                    crate::flow::sweep::window(l, 9, layers, crate::flow::sweep::Align::Center);
                Knockout {
                    sources: vec![1, 2],
                    targets: vec![5, 6],
                    start,
                    end,
                    heads: None,
                }
            })
            .collect();
        let sets: Vec<&[Knockout]> = specs.iter().map(std::slice::from_ref).collect();
        let runs: Vec<usize> = (0..layers).collect();
        let plan = plan_batch(&sets, 5, 3, &runs, layers);
        let blocks: Vec<usize> = plan.calls.iter().map(|c| c.blocks.len()).collect();
        // Layers 0-4: windows [0,5) … [0,9) are one block, plus the window starting at 1, 2, 3, 4.
        assert_eq!(&blocks[..5], &[1, 2, 3, 4, 5]);
        // From layer 5 the edit of [0,5) has ended: it parts from the other four.
        assert_eq!(blocks[5], 7);
        // From layer 8 every run is its own block: the five clipped windows and those starting at 1..=l.
        assert_eq!(blocks[8], 5 + 8);
        assert_eq!(blocks[9], 5 + 9);
        assert_eq!(*blocks.last().unwrap(), layers);
        // Two masks: the knockout, and plain causal after a window ends.
        assert_eq!(plan.masks.len(), 2);
        // Each run ends in its own block, and the runs that shared blocks ended in different ones.
        let mut last = plan.last_block.clone();
        last.sort_unstable();
        last.dedup();
        assert_eq!(last.len(), layers);
        let naive: usize = specs.iter().map(|k| layers - k.start).sum();
        let planned: usize = blocks.iter().sum();
        // Saved: 4 blocks in each of layers 0-4, then 3, 2 and 1 as the clipped windows part (3.25 %).
        assert_eq!(naive - planned, 4 * 5 + 3 + 2 + 1);
    }
}
