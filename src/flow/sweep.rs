//! Layer sweeps: every window of k layers for every source→target pair (the papers' central figure).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::flow::answer::Continuation;
use crate::flow::knockout::Knockout;
use crate::flow::trace::Trace;
use crate::model::decoder::Decoder;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// Window centred on layer ℓ: `[ℓ − ⌊k/2⌋, ℓ + ⌈k/2⌉)`, clipped (Geva et al.'s `range`).
    Center,
    /// Window starting at ℓ: `[ℓ, ℓ + k)`, clipped.
    Start,
}

/// The window for layer `l` of `layers`.
pub fn window(l: usize, k: usize, layers: usize, align: Align) -> (usize, usize) {
    match align {
        Align::Center => (l.saturating_sub(k / 2), (l + k.div_ceil(2)).min(layers)),
        Align::Start => (l, (l + k).min(layers)),
    }
}

/// One row of a sweep's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub source: String,
    pub target: String,
    /// The layer the window is placed at.
    pub layer: usize,
    pub start: usize,
    pub end: usize,
    pub prob: f32,
    pub base_prob: f32,
    pub rel_change: f32,
    pub top1_id: u32,
    pub token_id: u32,
}

/// One source→target pair of a sweep: its labels (as the records name them) and its positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub source: String,
    pub target: String,
    pub sources: Vec<usize>,
    pub targets: Vec<usize>,
    /// The query heads its knockouts apply in (`None`: all).
    pub heads: Option<Vec<usize>>,
}

/// The `(source, target)` pairs of sweep records, each once, in the order they first appear.
pub fn record_pairs(records: &[SweepRecord]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in records {
        if !out.iter().any(|(s, t)| *s == r.source && *t == r.target) {
            out.push((r.source.clone(), r.target.clone()));
        }
    }
    out
}

/// A half-open layer range `start..end` of a model of `from` layers as the same stretch of depth in a model
/// of `to` layers (both ends scaled by `to / from` and rounded; at least one layer, never past the end), so
/// one knockout means the same part of two models of different depths.
pub fn scale_layers(start: usize, end: usize, from: usize, to: usize) -> (usize, usize) {
    let scale = |l: usize| ((l as f64) * to as f64 / from.max(1) as f64).round() as usize;
    let s = scale(start).min(to.saturating_sub(1));
    let e = scale(end).clamp(s + 1, to.max(s + 1));
    (s, e)
}

/// One pair's knockouts, one per layer: the window placed at each layer (see [`window`]).
pub fn window_specs(pair: &Pair, layers: usize, k: usize, align: Align) -> Vec<Knockout> {
    (0..layers)
        .map(|l| {
            let (start, end) = window(l, k, layers, align);
            Knockout {
                sources: pair.sources.clone(),
                targets: pair.targets.clone(),
                start,
                end,
                heads: pair.heads.clone(),
            }
        })
        .collect()
}

/// The work a sweep of `pairs` does (see [`crate::flow::knockout::Work`]): its recomputed row-layers
/// over `seq_len × layers` is how many decoder forwards of rows it costs, what no exact method avoids.
pub fn sweep_work(
    decoder: &Decoder,
    trace: &Trace,
    pairs: &[Pair],
    k: usize,
    align: Align,
) -> Result<crate::flow::knockout::Work> {
    let layers = decoder.num_layers();
    let mut specs = Vec::new();
    for p in pairs {
        specs.extend(window_specs(p, layers, k, align));
    }
    crate::flow::knockout::batch_work(decoder, trace, &specs)
}

/// Runs every window for every pair. `progress(done, total)` in configurations, several times a second;
/// `cancel` stops between two batched layer calls, and the records of the pairs finished so far are
/// returned.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    decoder: &Decoder,
    trace: &Trace,
    pairs: &[Pair],
    k: usize,
    align: Align,
    token: Option<u32>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<SweepRecord>> {
    let mut v = sweep_tokens(decoder, trace, pairs, k, align, &[token], cancel, progress)?;
    Ok(v.pop().unwrap_or_default())
}

/// [`sweep`] scored for several tokens from the same knocked-out logits (e.g. the predicted token and
/// the ground-truth answer, as Kim et al. report both): one record list per entry of `tokens`.
#[allow(clippy::too_many_arguments)]
pub fn sweep_tokens(
    decoder: &Decoder,
    trace: &Trace,
    pairs: &[Pair],
    k: usize,
    align: Align,
    tokens: &[Option<u32>],
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<SweepRecord>>> {
    if tokens.is_empty() {
        return Err(Error::Other(
            "a sweep needs at least one token to score".into(),
        ));
    }
    let logits = sweep_logits(decoder, trace, pairs, k, align, None, cancel, progress)?;
    records(decoder, trace, pairs, k, align, &logits, tokens)
}

/// The records of a sweep's logits ([`sweep_logits`] without an answer), one list per entry of `tokens`,
/// in the order the pairs were asked for; pairs without logits (a cancelled sweep) are left out.
pub fn records(
    decoder: &Decoder,
    trace: &Trace,
    pairs: &[Pair],
    k: usize,
    align: Align,
    logits: &[Option<Vec<Tensor>>],
    tokens: &[Option<u32>],
) -> Result<Vec<Vec<SweepRecord>>> {
    let layers = decoder.num_layers();
    let mut out: Vec<Vec<SweepRecord>> = tokens
        .iter()
        .map(|_| Vec::with_capacity(pairs.len() * layers))
        .collect();
    for (p, lgs) in pairs.iter().zip(logits) {
        let Some(lgs) = lgs else { continue };
        for (l, lg) in lgs.iter().enumerate() {
            let (start, end) = window(l, k, layers, align);
            for (recs, token) in out.iter_mut().zip(tokens) {
                let r = crate::flow::knockout::score_logits(lg, trace, *token)?;
                recs.push(SweepRecord {
                    source: p.source.clone(),
                    target: p.target.clone(),
                    layer: l,
                    start,
                    end,
                    prob: r.prob,
                    base_prob: r.base_prob,
                    rel_change: r.rel_change,
                    top1_id: r.top1_id,
                    token_id: r.token_id,
                });
            }
        }
    }
    Ok(out)
}

/// Every window for every pair, as logits: per pair (in order) one tensor per layer's window, the
/// last-position logits `[vocab]`, or with `answer` the rows `[n, vocab]` over the prompt continued by it
/// ([`crate::flow::knockout::run_batch_answer`]). `None` for the pairs a cancel left undone.
#[allow(clippy::too_many_arguments)]
pub fn sweep_logits(
    decoder: &Decoder,
    trace: &Trace,
    pairs: &[Pair],
    k: usize,
    align: Align,
    answer: Option<&Continuation>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Option<Vec<Tensor>>>> {
    if k == 0 {
        return Err(Error::Prompt("window must be at least 1 layer".into()));
    }
    let layers = decoder.num_layers();
    let total = pairs.len() * layers;
    // Pairs whose targets start at the same position recompute the same rows: their windows run as one
    // batch (audio→question and video→question share every layer call, and so do the →last pairs).
    // Groups run in the order of their first pair; progress within a group is per layer call.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let first = p.targets.iter().min().copied().unwrap_or(0);
        match groups.iter_mut().find(|(f, _)| *f == first) {
            Some((_, members)) => members.push(i),
            None => groups.push((first, vec![i])),
        }
    }
    let specs: Vec<Vec<Knockout>> = groups
        .iter()
        .map(|(_, members)| {
            members
                .iter()
                .flat_map(|&i| window_specs(&pairs[i], layers, k, align))
                .collect()
        })
        .collect();
    // Progress is reported in configurations but advances with the work done: a →last batch is one row
    // per run and a →question batch 25, so counting layer calls alike made the ETA 10× too short.
    let costs: Vec<usize> = specs
        .iter()
        .map(|s| Ok(crate::flow::knockout::batch_work(decoder, trace, s)?.cost()))
        .collect::<Result<_>>()?;
    let cost_total = costs.iter().sum::<usize>().max(1);
    let mut results: Vec<Option<Vec<Tensor>>> = vec![None; pairs.len()];
    let mut cost_done = 0;
    for (((_, members), specs), cost) in groups.iter().zip(&specs).zip(&costs) {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut step = |d: usize, _| {
            progress(total * (cost_done + d) / cost_total, total);
            !cancel.load(Ordering::Relaxed)
        };
        let logits = match answer {
            None => crate::flow::knockout::run_batch_with(decoder, trace, specs, &mut step)?,
            Some(a) => {
                crate::flow::knockout::run_batch_answer(decoder, trace, a, specs, &mut step)?
            }
        };
        let Some(logits) = logits else { break };
        let mut logits = logits.into_iter();
        for &i in members {
            results[i] = Some(logits.by_ref().take(layers).collect());
        }
        cost_done += cost;
    }
    Ok(results)
}

/// CSV with a header row.
pub fn to_csv(records: &[SweepRecord]) -> String {
    to_csv_with(records, &[], &[])
}

/// [`to_csv`] with extra columns: `header` names them, `extra[i]` holds record `i`'s cells (e.g. an
/// answer's log-probability per window).
pub fn to_csv_with(records: &[SweepRecord], header: &[String], extra: &[Vec<String>]) -> String {
    let mut s =
        String::from("source,target,layer,start,end,prob,base_prob,rel_change,top1_id,token_id");
    for h in header {
        s.push(',');
        s.push_str(&csv_cell(h));
    }
    s.push('\n');
    for (i, r) in records.iter().enumerate() {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}",
            r.source,
            r.target,
            r.layer,
            r.start,
            r.end,
            r.prob,
            r.base_prob,
            r.rel_change,
            r.top1_id,
            r.token_id
        ));
        for cell in extra.get(i).into_iter().flatten() {
            s.push(',');
            s.push_str(&csv_cell(cell));
        }
        s.push('\n');
    }
    s
}

/// A CSV cell, quoted when it holds a comma, a quote or a line break.
fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ranges_keep_their_depth() {
        assert_eq!(scale_layers(0, 9, 36, 28), (0, 7));
        assert_eq!(scale_layers(18, 27, 36, 28), (14, 21));
        assert_eq!(scale_layers(35, 36, 36, 28), (27, 28));
        assert_eq!(scale_layers(1, 2, 3, 3), (1, 2));
        // Never empty, never past the end.
        assert_eq!(scale_layers(0, 1, 36, 3), (0, 1));
    }

    #[test]
    fn centred_windows_follow_the_research_code() {
        // Geva et al.: range(max(0, l - k//2), min(L, l - (-k//2))), k = 9.
        for l in 0..36 {
            let (a, b) = window(l, 9, 36, Align::Center);
            assert_eq!(a, (l as i64 - 4).max(0) as usize);
            assert_eq!(b, (l + 5).min(36));
        }
        assert_eq!(window(3, 4, 10, Align::Center), (1, 5));
        assert_eq!(window(8, 4, 10, Align::Start), (8, 10));
    }
}
