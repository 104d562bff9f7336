//! Dropping positions: what removing media from a layer on costs (the answer's probability) and saves (a
//! real prefill timed with and without them), optionally the greedy answer both ways — the one
//! measurement behind `avflow drop` and the app's drop view.
//!
//! The curve alone says what dropping costs in accuracy; only a measured prefill says what it saves in
//! time, so both come from one request.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::flow::generate::{drop_curve, generate_until, prefill, Cache};
use crate::flow::knockout::score_logits;
use crate::flow::KnockoutResult;
use crate::prompt::Selector;

use super::{Session, Watch};

/// What to drop, and where to time it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropSpec {
    /// The positions removed: groups (`audio,video`) or seconds of the media (`@1-3`).
    pub selector: Selector,
    /// The first layer without them in the timed prefill.
    pub from_layer: usize,
    /// Answer tokens generated greedily with and without dropping; 0: none.
    pub generate: usize,
    /// Also the answer probability for every first-dropped layer (one batched run from the trace).
    pub curve: bool,
    /// Token whose probability is reported; `None`: the baseline top-1.
    pub token: Option<u32>,
}

impl DropSpec {
    /// Progress steps: the curve when asked for, the two prefills, and the two generations when asked for.
    pub fn steps(&self) -> usize {
        usize::from(self.curve) + 2 + if self.generate > 0 { 2 } else { 0 }
    }
}

/// A greedy answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub ids: Vec<u32>,
    /// Decoded without special tokens; the ids as text without a tokenizer.
    pub text: String,
    /// Seconds of the whole generation.
    pub decode_s: f64,
    /// Mean seconds per token after the first (the first comes with the prefill).
    pub per_token_s: f64,
}

/// The result of a [`DropSpec`], with the request it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct DropOutcome {
    pub spec: DropSpec,
    /// Positions removed, of `positions`.
    pub dropped: usize,
    pub positions: usize,
    pub layers: usize,
    /// `(first dropped layer, score)` for every layer, in layer order, when the spec asked for the curve.
    pub curve: Vec<(usize, KnockoutResult)>,
    /// The timed prefill dropping from `spec.from_layer`, scored on the watched token.
    pub at_layer: KnockoutResult,
    /// The watched token: id and text.
    pub token: (u32, String),
    pub prefill_full_s: f64,
    pub prefill_drop_s: f64,
    /// `(full prompt, dropped)`, when `spec.generate > 0`.
    pub answers: Option<(Generated, Generated)>,
}

impl DropOutcome {
    /// How many times faster the dropped prefill ran.
    pub fn speedup(&self) -> f64 {
        self.prefill_full_s / self.prefill_drop_s.max(1e-9)
    }
}

impl Session {
    /// Runs a drop request. `watch.progress` counts [`DropSpec::steps`]; cancel stops between stages and
    /// between generated tokens.
    pub fn drop_positions(&mut self, spec: &DropSpec, watch: &Watch) -> Result<DropOutcome> {
        self.trace(watch)?;
        let layers = self.decoder().num_layers();
        if spec.from_layer >= layers {
            return Err(Error::Request {
                reason: format!(
                    "layer {} is past the last layer of this model ({layers} layers, 0-based)",
                    spec.from_layer
                ),
                fix: format!(
                    "choose a first dropped layer from 0 to {}",
                    layers.saturating_sub(1)
                ),
            });
        }
        let dropped = self.select(&spec.selector)?;
        let seq = self.prompt.len();
        if dropped.contains(&(seq - 1)) {
            return Err(Error::Request {
                reason: format!("{} includes the last prompt position", spec.selector),
                fix: "drop media positions (audio, video, image or seconds of them): the answer is read \
                      at the last position"
                    .into(),
            });
        }
        let rules = self.model.decoding(&self.prompt.input_ids);
        let token = self.watched(spec.token);
        let token_text = self.model.token_text(token);
        let model = self.model.clone();
        let (dec, trace) = self.parts()?;
        let total = spec.steps();
        let mut step = 0;
        let mut advance = || {
            step += 1;
            watch.progress(step, total);
        };
        watch.progress(0, total);
        let curve = if spec.curve {
            watch.status(&format!(
                "Answer probability for every first-dropped layer ({layers} layers in one batched run)…"
            ));
            let c = drop_curve(dec, trace, &dropped, spec.token)?;
            watch.check()?;
            advance();
            c
        } else {
            Vec::new()
        };
        // The trace's first residual is the embeddings in the decoder's dtype: what `prefill` starts from.
        let embeds = &trace.residuals.layer(0)?;
        let pos = &trace.position_ids;
        watch.status(&format!("Timing the full prefill over {seq} positions…"));
        let t0 = Instant::now();
        let mut full = prefill(dec, embeds, pos, None)?;
        let prefill_full_s = t0.elapsed().as_secs_f64();
        watch.check()?;
        advance();
        watch.status(&format!(
            "Timing the prefill without {} positions from layer {}…",
            dropped.len(),
            spec.from_layer
        ));
        let t1 = Instant::now();
        let mut cut = prefill(dec, embeds, pos, Some((&dropped, spec.from_layer)))?;
        let prefill_drop_s = t1.elapsed().as_secs_f64();
        let at_layer = score_logits(&cut.last_logits, trace, spec.token)?;
        watch.check()?;
        advance();
        let answers = if spec.generate > 0 {
            let mut run = |cache: &mut Cache, what: &str| -> Result<Generated> {
                watch.status(&format!(
                    "Generating up to {} tokens {what}…",
                    spec.generate
                ));
                let t = Instant::now();
                let (ids, times) = generate_until(dec, cache, spec.generate, &rules, watch.cancel)?;
                let decode_s = t.elapsed().as_secs_f64();
                watch.check()?;
                let per_token_s = if times.is_empty() {
                    0.0
                } else {
                    times.iter().map(|d| d.as_secs_f64()).sum::<f64>() / times.len() as f64
                };
                advance();
                Ok(Generated {
                    text: model.decode(&ids).unwrap_or_else(|| {
                        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
                        format!("ids {}", list.join(" "))
                    }),
                    ids,
                    decode_s,
                    per_token_s,
                })
            };
            let a = run(&mut full, "from the full prompt")?;
            let b = run(&mut cut, "with the positions dropped")?;
            Some((a, b))
        } else {
            None
        };
        Ok(DropOutcome {
            spec: spec.clone(),
            dropped: dropped.len(),
            positions: seq,
            layers,
            curve,
            at_layer,
            token: (token, token_text),
            prefill_full_s,
            prefill_drop_s,
            answers,
        })
    }
}
