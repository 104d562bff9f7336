//! Layer × position matrices for the app's heatmap: how much the answer position (or the question) attends
//! to each prompt position in each layer, and how likely the answer token already is at each position
//! when each layer's residual is read through the final norm and `lm_head` (the logit lens).
//!
//! Everything is computed from a [`Trace`], so no extra decoder pass runs: attention re-uses the traced
//! K/V ([`attention_rows`]), the lens re-uses the traced residuals.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::attention::attention_rows;
use crate::flow::Trace;
use crate::model::decoder::Decoder;
use crate::prompt::Groups;

/// What a heatmap cell holds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum HeatMetric {
    /// Head-averaged attention probability from the last prompt position to each position.
    #[default]
    AttentionFromLast,
    /// Head-averaged attention probability from the question's positions (mean over them) to each
    /// position.
    AttentionFromQuestion,
    /// Logit-lens probability of the answer (the baseline top-1 token) at each position after each layer.
    LensAnswer,
    /// What each layer adds to [`HeatMetric::LensAnswer`], in percentage points (signed).
    LensGain,
    /// Relative change (%) of the answer's probability when the last position may not attend to each
    /// position (in bins on long prompts) in the 9-layer window centred on each layer.
    KnockoutEffect,
}

impl HeatMetric {
    pub const ALL: [HeatMetric; 5] = [
        HeatMetric::AttentionFromLast,
        HeatMetric::AttentionFromQuestion,
        HeatMetric::LensAnswer,
        HeatMetric::LensGain,
        HeatMetric::KnockoutEffect,
    ];

    /// Short name (combo box, logs).
    pub fn name(self) -> &'static str {
        match self {
            HeatMetric::AttentionFromLast => "attention from last",
            HeatMetric::AttentionFromQuestion => "attention from question",
            HeatMetric::LensAnswer => "logit lens: answer probability",
            HeatMetric::LensGain => "logit lens: gain per layer",
            HeatMetric::KnockoutEffect => "knockout effect on the answer",
        }
    }

    /// What one cell means, for the panel's caption.
    pub fn describe(self) -> &'static str {
        match self {
            HeatMetric::AttentionFromLast => {
                "attention probability from the last prompt position to each position, averaged over heads"
            }
            HeatMetric::AttentionFromQuestion => {
                "attention probability from the question's positions (their mean) to each position, \
                 averaged over heads"
            }
            HeatMetric::LensAnswer => {
                "probability of the answer token read from the residual after each layer at each position \
                 (final norm + lm_head)"
            }
            HeatMetric::LensGain => {
                "change of the answer token's logit-lens probability made by each layer at each position, \
                 in percentage points (layer 0 compared with the embeddings)"
            }
            HeatMetric::KnockoutEffect => {
                "relative change (%) of the answer's probability when the last position cannot attend to \
                 the position (binned on long prompts) in the 9-layer window centred on the layer"
            }
        }
    }

    /// The lens metrics run `lm_head` at every position and layer: minutes on a 3B model with thousands of
    /// positions, where the attention metrics take seconds.
    pub fn is_heavy(self) -> bool {
        matches!(
            self,
            HeatMetric::LensAnswer | HeatMetric::LensGain | HeatMetric::KnockoutEffect
        )
    }
}

/// A dense `layers × positions` matrix, row-major (`values[layer * positions + position]`).
#[derive(Clone, PartialEq)]
pub struct Heatmap {
    pub layers: usize,
    pub positions: usize,
    pub values: Vec<f32>,
}

impl std::fmt::Debug for Heatmap {
    // Thousands of values help no one in a log line or a failed assertion.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Heatmap({} layers × {} positions)",
            self.layers, self.positions
        )
    }
}

impl Heatmap {
    pub fn new(layers: usize, positions: usize, values: Vec<f32>) -> Result<Self> {
        if values.len() != layers * positions {
            return Err(Error::Other(format!(
                "heatmap of {layers} × {positions} needs {} values, got {}",
                layers * positions,
                values.len()
            )));
        }
        Ok(Self {
            layers,
            positions,
            values,
        })
    }

    /// The cell's value; `None` outside the matrix.
    pub fn get(&self, layer: usize, position: usize) -> Option<f32> {
        (layer < self.layers && position < self.positions)
            .then(|| self.values[layer * self.positions + position])
    }

    pub fn row(&self, layer: usize) -> &[f32] {
        &self.values[layer * self.positions..(layer + 1) * self.positions]
    }
}

/// Attention from the mean of `rows` (query positions) to every position, per layer (head-averaged).
pub fn attention_matrix(decoder: &Decoder, trace: &Trace, rows: &[usize]) -> Result<Heatmap> {
    if rows.is_empty() {
        return Err(Error::Prompt(
            "no query positions for the attention map".into(),
        ));
    }
    let maps = attention_rows(decoder, trace, rows, false)?;
    let mut values = Vec::with_capacity(maps.len() * trace.seq_len);
    for m in &maps {
        values.extend(m.mean(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    Heatmap::new(maps.len(), trace.seq_len, values)
}

/// [`attention_matrix`] for a named group (`last`, `question`, …).
pub fn group_attention(
    decoder: &Decoder,
    trace: &Trace,
    groups: &Groups,
    group: &str,
) -> Result<Heatmap> {
    attention_matrix(decoder, trace, &groups.select(group)?)
}

/// Rows of `lm_head` output computed at once: bounds the `[rows, vocab]` logits (128 MiB of f32).
const LENS_CHUNK_ELEMENTS: usize = 32 << 20;

/// Positions per lens chunk for a vocabulary of `vocab` entries (at least one).
pub fn lens_chunk(vocab: usize) -> usize {
    (LENS_CHUNK_ELEMENTS / vocab.max(1)).max(1)
}

/// Logit lens at every position: `P(token)` from the residual leaving layer `l` (`trace.residuals.layer(l + 1)`)
/// through the final norm and `lm_head`, for every layer and position — [`super::generate::logit_lens`] for
/// all positions at once. The last layer's row is the model's own next-token distribution at each position.
///
/// Work is split into chunks of positions ([`lens_chunk`]) so the `[rows, vocab]` logits stay bounded on
/// a 150 K vocabulary; `progress(done, total)` counts (layer, chunk) steps. Returns `Ok(None)` when
/// `cancel` is set (checked between chunks).
pub fn lens_matrix(
    decoder: &Decoder,
    trace: &Trace,
    token: u32,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Heatmap>> {
    // The baseline logits are `[vocab]`: the decoder does not expose `lm_head`'s shape.
    let chunk = lens_chunk(trace.last_logits.dim(0)?);
    let layers = trace.residuals.len().saturating_sub(1);
    lens_rows(
        decoder,
        trace,
        token,
        1..layers + 1,
        chunk,
        cancel,
        progress,
    )
}

/// How much each layer adds to the answer's lens probability at each position, in percentage points:
/// `100 · (P_l − P_{l−1})`, where `P_{−1}` is read from the embeddings (`trace.residuals.layer(0)`). Positive
/// cells are where the answer becomes readable; a row sums (over layers) to the last layer's probability
/// minus the embeddings'. One lens row more than [`lens_matrix`].
pub fn lens_gain_matrix(
    decoder: &Decoder,
    trace: &Trace,
    token: u32,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Heatmap>> {
    let chunk = lens_chunk(trace.last_logits.dim(0)?);
    let rows = trace.residuals.len();
    let Some(p) = lens_rows(decoder, trace, token, 0..rows, chunk, cancel, progress)? else {
        return Ok(None);
    };
    let seq = p.positions;
    let values = (1..p.layers)
        .flat_map(|l| {
            let (prev, cur) = (p.row(l - 1), p.row(l));
            cur.iter().zip(prev).map(|(c, b)| 100.0 * (c - b))
        })
        .collect();
    Heatmap::new(p.layers - 1, seq, values).map(Some)
}

/// Lens probabilities of `token` for the residuals `residuals` (indices into `trace.residuals`), one
/// matrix row per residual, `chunk` positions per `lm_head` call.
pub fn lens_rows(
    decoder: &Decoder,
    trace: &Trace,
    token: u32,
    residuals: std::ops::Range<usize>,
    chunk: usize,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Heatmap>> {
    let seq = trace.seq_len;
    if residuals.end > trace.residuals.len() {
        return Err(Error::Other(format!(
            "lens over residuals {residuals:?} but the trace has {}",
            trace.residuals.len()
        )));
    }
    let chunk = chunk.max(1);
    let chunks = seq.div_ceil(chunk);
    let layers = residuals.len();
    let total = layers * chunks;
    let mut values = vec![0f32; layers * seq];
    progress(0, total);
    let mut done = 0;
    for (row, r) in residuals.enumerate() {
        for c in 0..chunks {
            if cancel.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let start = c * chunk;
            let n = chunk.min(seq - start);
            let x = trace.residuals.rows(r, start, n)?;
            let logits = decoder.logits(&decoder.final_norm(&x)?)?;
            let vocab = logits.dim(1)?;
            if token as usize >= vocab {
                return Err(Error::Prompt(format!(
                    "token id {token} is outside the vocabulary ({vocab})"
                )));
            }
            let p = candle_nn::ops::softmax_last_dim(&logits)?
                .narrow(1, token as usize, 1)?
                .squeeze(1)?
                .to_vec1::<f32>()?;
            values[row * seq + start..row * seq + start + n].copy_from_slice(&p);
            done += 1;
            progress(done, total);
        }
    }
    Heatmap::new(layers, seq, values).map(Some)
}

/// Columns of the knockout-effect map at most: a 3B prompt of thousands of positions then costs
/// `layers × 256` one-row knockouts (minutes on a CPU; each bin reports progress).
pub const EFFECT_BINS: usize = 256;

/// Knockout effect: for every layer `l` and position `p`, the relative change (%) of the answer's
/// probability (the baseline top-1) when the last position may not attend to `p` in the `window`-layer
/// window centred on `l` (the sweep's windows). Long prompts are taken in at most `max_bins` contiguous
/// bins of positions, each bin blocked as one span and its value repeated over its positions, so a 3B
/// prompt of thousands of tokens stays at `layers × max_bins` one-row knockouts. `Ok(None)`: cancelled.
pub fn knockout_effect_matrix(
    decoder: &Decoder,
    trace: &Trace,
    window: usize,
    max_bins: usize,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Heatmap>> {
    if max_bins == 0 {
        return Err(Error::Prompt(
            "the window and the number of bins must be at least 1".into(),
        ));
    }
    let bins = position_bins(trace.seq_len, max_bins);
    knockout_effect_bins(decoder, trace, window, &bins, cancel, progress)
}

/// At most `max_bins` contiguous bins of equal width over `seq` positions.
pub fn position_bins(seq: usize, max_bins: usize) -> Vec<Vec<usize>> {
    let width = seq.div_ceil(max_bins.max(1)).max(1);
    (0..seq)
        .step_by(width)
        .map(|a| (a..(a + width).min(seq)).collect())
        .collect()
}

/// The stages of the knockout-effect map, coarse to fine: each group as one span (`system`, `audio`,
/// `video`, `question` …, `last`), then each contiguous run of one group (a 2-s chunk of audio or video
/// in an interleaved prompt), then positions in at most [`EFFECT_BINS`] bins. A stage that would repeat
/// the previous one is left out.
pub fn effect_stages(groups: &Groups, seq: usize) -> Vec<(&'static str, Vec<Vec<usize>>)> {
    let mut group_of: Vec<Option<&str>> = vec![None; seq];
    let mut by_group: Vec<Vec<usize>> = Vec::new();
    for (name, pos) in &groups.spans {
        let pos: Vec<usize> = pos.iter().copied().filter(|&p| p < seq).collect();
        if pos.is_empty() {
            continue;
        }
        for &p in &pos {
            group_of[p] = Some(name.as_str());
        }
        by_group.push(pos);
    }
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for p in 0..seq {
        let Some(g) = group_of[p] else { continue };
        match runs.last_mut() {
            Some(r) if r.last() == Some(&(p - 1)) && group_of[p - 1] == Some(g) => r.push(p),
            _ => runs.push(vec![p]),
        }
    }
    let fine = position_bins(seq, EFFECT_BINS);
    let mut stages: Vec<(&'static str, Vec<Vec<usize>>)> = Vec::new();
    for (name, bins) in [("groups", by_group), ("runs", runs), ("positions", fine)] {
        if bins.is_empty()
            || stages
                .last()
                .is_some_and(|(_, prev)| prev.len() == bins.len())
        {
            continue;
        }
        stages.push((name, bins));
    }
    stages
}

/// [`knockout_effect_matrix`] over given bins: each bin (any set of positions) blocked from the last
/// position as one span over each layer's window, its value written at its positions (0 elsewhere).
pub fn knockout_effect_bins(
    decoder: &Decoder,
    trace: &Trace,
    window: usize,
    bins: &[Vec<usize>],
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Heatmap>> {
    use crate::flow::knockout::{run_batch, score_logits, Knockout};
    use crate::flow::sweep::{window as layer_window, Align};
    let (layers, seq) = (decoder.num_layers(), trace.seq_len);
    if window == 0 {
        return Err(Error::Prompt(
            "the window and the number of bins must be at least 1".into(),
        ));
    }
    let mut values = vec![0f32; layers * seq];
    // A few bins per batch: every window of a bin shares its one recomputed row per layer.
    let per_batch = (256 / layers.max(1)).max(1);
    for (done, chunk) in bins.chunks(per_batch).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let specs: Vec<Knockout> = chunk
            .iter()
            .flat_map(|b| {
                (0..layers).map(move |l| {
                    let (start, end) = layer_window(l, window, layers, Align::Center);
                    Knockout {
                        sources: b.clone(),
                        targets: vec![seq - 1],
                        start,
                        end,
                        heads: None,
                    }
                })
            })
            .collect();
        let logits = run_batch(decoder, trace, &specs)?;
        for (i, lg) in logits.iter().enumerate() {
            let (b, l) = (&chunk[i / layers], i % layers);
            let change = score_logits(lg, trace, None)?.rel_change;
            for &p in b {
                values[l * seq + p] = change;
            }
        }
        progress(((done + 1) * per_batch).min(bins.len()), bins.len());
    }
    Heatmap::new(layers, seq, values).map(Some)
}

/// Computes `metric` for the traced prompt: what the app's worker calls. The lens metrics follow the
/// baseline's answer (`trace.top1_id`). `Ok(None)`: cancelled.
pub fn compute(
    metric: HeatMetric,
    decoder: &Decoder,
    trace: &Trace,
    groups: &Groups,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<Heatmap>> {
    match metric {
        HeatMetric::AttentionFromLast => group_attention(decoder, trace, groups, "last").map(Some),
        HeatMetric::AttentionFromQuestion => {
            group_attention(decoder, trace, groups, "question").map(Some)
        }
        HeatMetric::LensAnswer => lens_matrix(decoder, trace, trace.top1_id, cancel, progress),
        HeatMetric::LensGain => lens_gain_matrix(decoder, trace, trace.top1_id, cancel, progress),
        HeatMetric::KnockoutEffect => {
            knockout_effect_matrix(decoder, trace, 9, EFFECT_BINS, cancel, progress)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo model (the first test fixture) on its audio-visual prompt, traced. The fixtures are
    /// committed, so a missing one fails the test with the command that makes it.
    struct Demo {
        model: Box<dyn crate::model::AvModel>,
        trace: Trace,
        groups: Groups,
    }

    fn demo() -> Demo {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dir = root.join("omni-tiny-a");
        let make = "the demo fixture is missing: python3 tools/make_fixtures.py makes it";
        let resolved =
            crate::model::loader::resolve_dir(crate::model::ModelSource::Local(dir.clone()), &dir)
                .expect(make);
        let model = crate::model::load(
            &resolved,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .expect(make);
        let prompt = resolved
            .arch
            .read_prompt(&root.join("goldens/av_a/inputs.safetensors"))
            .expect(make);
        let e = model.embed(&prompt).expect("embed");
        let trace = Trace::run(model.decoder(), &e.embeds, &e.position_ids).expect("trace");
        Demo {
            model,
            trace,
            groups: prompt.map.groups,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6_f32.max(1e-5 * b.abs())
    }

    #[test]
    fn heatmap_checks_its_shape() {
        assert!(Heatmap::new(2, 3, vec![0.0; 5]).is_err());
        let h = Heatmap::new(2, 3, (0..6).map(|v| v as f32).collect()).expect("shape");
        assert_eq!(h.get(1, 0), Some(3.0));
        assert_eq!(h.get(2, 0), None);
        assert_eq!(h.get(0, 3), None);
        assert_eq!(h.row(1), &[3.0, 4.0, 5.0]);
        assert_eq!(format!("{h:?}"), "Heatmap(2 layers × 3 positions)");
        assert_eq!(lens_chunk(151_936), 220);
        assert_eq!(lens_chunk(0), 32 << 20);
    }

    /// Each cell of the knockout-effect map is the sweep's X→last knockout of that position's bin.
    #[test]
    fn knockout_effect_cells_are_single_knockouts() {
        let s = demo();
        let (dec, trace) = (s.model.decoder(), &s.trace);
        let no = AtomicBool::new(false);
        let seq = trace.seq_len;
        let m = knockout_effect_matrix(dec, trace, 2, seq, &no, &mut |_, _| {})
            .expect("map")
            .expect("not cancelled");
        let binned = knockout_effect_matrix(dec, trace, 2, 10, &no, &mut |_, _| {})
            .expect("map")
            .expect("not cancelled");
        let width = seq.div_ceil(10);
        for (l, p) in [(0, 3), (1, seq / 2), (2, seq - 2)] {
            let (start, end) = crate::flow::sweep::window(l, 2, 3, crate::flow::Align::Center);
            let one = |sources: Vec<usize>| {
                let ko = crate::flow::Knockout {
                    sources,
                    targets: vec![seq - 1],
                    start,
                    end,
                    heads: None,
                };
                ko.score(dec, trace, None).expect("knockout").rel_change
            };
            assert!(
                close(m.get(l, p).expect("cell"), one(vec![p])),
                "({l}, {p})"
            );
            let b = p / width * width;
            let bin: Vec<usize> = (b..(b + width).min(seq)).collect();
            assert!(
                close(binned.get(l, p).expect("cell"), one(bin)),
                "bin ({l}, {p})"
            );
        }
        let stop = AtomicBool::new(true);
        assert!(
            knockout_effect_matrix(dec, trace, 2, 4, &stop, &mut |_, _| {})
                .expect("ok")
                .is_none()
        );
    }

    /// The coarse-to-fine stages: groups (each one span), then contiguous runs, then position bins; every
    /// cell of a stage is the knockout of its span from the last position over that layer's window.
    #[test]
    fn knockout_effect_stages_go_from_groups_to_runs_to_positions() {
        let s = demo();
        let (dec, trace) = (s.model.decoder(), &s.trace);
        let seq = trace.seq_len;
        let stages = effect_stages(&s.groups, seq);
        let names: Vec<&str> = stages.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["groups", "runs", "positions"]);
        let (groups, runs) = (&stages[0].1, &stages[1].1);
        assert!(groups.len() < runs.len() && runs.len() < stages[2].1.len());
        // Runs are contiguous, of one group each, and cover what the groups cover.
        let covered = |bins: &Vec<Vec<usize>>| {
            let mut v: Vec<usize> = bins.iter().flatten().copied().collect();
            v.sort_unstable();
            v
        };
        assert_eq!(covered(groups), covered(runs));
        assert!(runs.iter().all(|r| r.windows(2).all(|w| w[1] == w[0] + 1)));
        let no = AtomicBool::new(false);
        let layers = dec.num_layers();
        for (name, bins) in &stages[..2] {
            let m = knockout_effect_bins(dec, trace, 2, bins, &no, &mut |_, _| {})
                .expect("map")
                .expect("not cancelled");
            for bin in bins.iter().take(4) {
                for l in 0..layers {
                    let (start, end) =
                        crate::flow::sweep::window(l, 2, layers, crate::flow::Align::Center);
                    let ko = crate::flow::Knockout {
                        sources: bin.clone(),
                        targets: vec![seq - 1],
                        start,
                        end,
                        heads: None,
                    };
                    let want = ko.score(dec, trace, None).expect("knockout").rel_change;
                    for &p in bin {
                        assert!(close(m.get(l, p).expect("cell"), want), "{name} ({l}, {p})");
                    }
                }
            }
        }
    }

    /// The lens at every position is the single-position logit lens, chunked or not; its last row at the
    /// last position is the model's answer probability.
    #[test]
    fn lens_matrix_is_the_logit_lens_at_every_position() {
        let s = demo();
        let (dec, trace) = (s.model.decoder(), &s.trace);
        let token = trace.top1_id;
        let never = AtomicBool::new(false);
        let mut steps = Vec::new();
        let h = lens_matrix(dec, trace, token, &never, &mut |d, t| steps.push((d, t)))
            .expect("lens")
            .expect("not cancelled");
        assert_eq!((h.layers, h.positions), (dec.num_layers(), trace.seq_len));
        assert_eq!(steps.first(), Some(&(0, dec.num_layers())));
        assert_eq!(steps.last(), Some(&(dec.num_layers(), dec.num_layers())));
        let last = trace.seq_len - 1;
        let base = trace.base_prob(token).expect("base prob");
        let got = h.get(h.layers - 1, last).expect("cell");
        assert!(close(got, base), "{got} vs {base}");
        for p in [0, trace.seq_len / 2, last] {
            let lens = crate::flow::generate::logit_lens(dec, &trace.residuals, p, token, 1)
                .expect("logit lens");
            for (l, prob, _) in lens {
                let cell = h.get(l, p).expect("cell");
                assert!(
                    close(cell, prob),
                    "layer {l} position {p}: {cell} vs {prob}"
                );
            }
        }
        // Chunks of 7 positions (not a divisor of the length) give the same matrix.
        let chunked = lens_rows(
            dec,
            trace,
            token,
            1..h.layers + 1,
            7,
            &never,
            &mut |_, _| {},
        )
        .expect("lens")
        .expect("not cancelled");
        assert_eq!(chunked.values.len(), h.values.len());
        for (a, b) in chunked.values.iter().zip(&h.values) {
            assert!(close(*a, *b), "{a} vs {b}");
        }
        // The gain rows add up to the last layer minus the embeddings' lens.
        let gain = lens_gain_matrix(dec, trace, token, &never, &mut |_, _| {})
            .expect("gain")
            .expect("not cancelled");
        assert_eq!((gain.layers, gain.positions), (h.layers, h.positions));
        let emb = lens_rows(dec, trace, token, 0..1, 64, &never, &mut |_, _| {})
            .expect("lens")
            .expect("not cancelled");
        for p in [0, last] {
            let sum: f32 = (0..gain.layers)
                .map(|l| gain.get(l, p).unwrap_or(0.0))
                .sum();
            let want = 100.0 * (h.get(h.layers - 1, p).unwrap_or(0.0) - emb.values[p]);
            assert!((sum - want).abs() < 1e-3, "{sum} vs {want}");
        }
        let cancelled = AtomicBool::new(true);
        assert!(lens_matrix(dec, trace, token, &cancelled, &mut |_, _| {})
            .expect("lens")
            .is_none());
        let vocab = trace.last_logits.dim(0).expect("vocab") as u32;
        assert!(lens_matrix(dec, trace, vocab, &never, &mut |_, _| {}).is_err());
    }

    /// Attention rows are probability distributions over the keys a query may see.
    #[test]
    fn attention_matrices_are_distributions_over_visible_keys() {
        let s = demo();
        let (dec, trace) = (s.model.decoder(), &s.trace);
        let never = AtomicBool::new(false);
        let from_last = compute(
            HeatMetric::AttentionFromLast,
            dec,
            trace,
            &s.groups,
            &never,
            &mut |_, _| {},
        )
        .expect("attention")
        .expect("not cancelled");
        assert_eq!(
            (from_last.layers, from_last.positions),
            (dec.num_layers(), trace.seq_len)
        );
        for l in 0..from_last.layers {
            let sum: f32 = from_last.row(l).iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "layer {l}: {sum}");
        }
        let question = s.groups.select("question").expect("question");
        let q = group_attention(dec, trace, &s.groups, "question").expect("attention");
        let end = question.iter().max().copied().unwrap_or(0);
        for l in 0..q.layers {
            let sum: f32 = q.row(l).iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "layer {l}: {sum}");
            // Causal: no question row sees past the last question position.
            assert!(q.row(l)[end + 1..].iter().all(|&v| v == 0.0));
        }
        // The mean over rows equals the per-row maps averaged.
        let maps = attention_rows(dec, trace, &question, false).expect("rows");
        let row0: Vec<f32> = maps[0]
            .get(0)
            .and_then(|r| r.to_vec1())
            .expect("row of the first query");
        let single = attention_matrix(dec, trace, &question[..1]).expect("one row");
        assert_eq!(single.row(0), &row0[..]);
        assert!(attention_matrix(dec, trace, &[]).is_err());
    }
}
