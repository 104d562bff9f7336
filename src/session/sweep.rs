//! Layer sweeps as requests: every window of `window` layers for every source→target pair, scored for one
//! or several tokens from the same knocked-out logits.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::flow::knockout::Work;
use crate::flow::sweep::{records as sweep_records, sweep_logits, sweep_work};
use crate::flow::{Align, Pair, SweepRecord};
use crate::prompt::{Groups, Selector};

use super::{AnswerScores, AnswerSpec, Session, Watch};
use candle_core::Tensor;

/// A sweep request.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// `(source, target)` pairs; their records are labelled with the selectors as written.
    pub pairs: Vec<(Selector, Selector)>,
    /// Window size in layers.
    pub window: usize,
    pub align: Align,
    /// Tokens scored, one record list each; `None` is the baseline top-1.
    pub tokens: Vec<Option<u32>>,
    /// A typed answer and multiple-choice options scored in every window too.
    pub answers: AnswerSpec,
    /// The query heads every window's knockout applies in (`None`: all; `--heads`).
    pub heads: Option<Vec<usize>>,
}

impl SweepSpec {
    /// Centred windows scored on the baseline top-1 (the app's sweep).
    pub fn centred(pairs: Vec<(Selector, Selector)>, window: usize) -> Self {
        Self {
            pairs,
            window,
            align: Align::Center,
            tokens: vec![None],
            answers: AnswerSpec::default(),
            heads: None,
        }
    }
}

/// A sweep's records: one list per token of the request, in its order. A cancelled sweep keeps the pairs
/// it finished.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepOutcome {
    pub records: Vec<Vec<SweepRecord>>,
    /// With answers to score: one entry per record of each list (the windows, in the records' order).
    pub answers: Vec<AnswerScores>,
    /// Seconds of the sweep alone (the trace excluded).
    pub seconds: f64,
    pub cancelled: bool,
}

impl SweepOutcome {
    /// The records of the first token.
    pub fn first(self) -> Vec<SweepRecord> {
        self.records.into_iter().next().unwrap_or_default()
    }

    /// The first token's records re-scored on the typed answer: `prob` and `base_prob` are its
    /// teacher-forced probability (the product over its tokens) with and without each window's knockout,
    /// `rel_change` their relative change and `token_id` its first token; `None` without a typed answer.
    pub fn answer_records(&self) -> Option<Vec<SweepRecord>> {
        let recs = self.records.first()?;
        recs.iter()
            .zip(&self.answers)
            .map(|(r, a)| {
                let s = a.answer.as_ref()?;
                let (prob, base_prob) = (s.prob(), s.base_prob());
                Some(SweepRecord {
                    prob,
                    base_prob,
                    rel_change: crate::flow::knockout::rel_change(prob, base_prob),
                    token_id: s.ids.first().copied().unwrap_or(r.token_id),
                    ..r.clone()
                })
            })
            .collect()
    }
}

/// Parses `audio:last,video:question` into selector pairs. A side may be any selector without a comma
/// (`@1-3:last`, `pos:3-5:question`).
pub fn parse_pairs(s: &str) -> Result<Vec<(Selector, Selector)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let bad = || {
                Error::Prompt(format!(
                    "bad pair {p:?}: write SOURCE:TARGET, e.g. audio:last"
                ))
            };
            // The `:` that splits the pair is the first one not inside a `pos:`/`item:` term.
            let split = p
                .match_indices(':')
                .map(|(i, _)| i)
                .find(|&i| {
                    let left = &p[..i];
                    !(left.ends_with("pos") || left.ends_with("item"))
                })
                .ok_or_else(bad)?;
            let (a, b) = (p[..split].trim(), p[split + 1..].trim());
            if a.is_empty() || b.is_empty() {
                return Err(bad());
            }
            Ok((a.parse()?, b.parse()?))
        })
        .collect()
}

/// The default pairs: each present modality into `question` and `last`, then `question→last`.
pub fn default_pairs(groups: &Groups) -> Vec<(Selector, Selector)> {
    let present = |g: &str| groups.spans.get(g).is_some_and(|p| !p.is_empty());
    let mut v = Vec::new();
    for m in ["audio", "video", "image"] {
        if present(m) {
            v.push((Selector::group(m), Selector::group("last")));
            v.push((Selector::group(m), Selector::group("question")));
        }
    }
    if present("question") {
        v.push((Selector::group("question"), Selector::group("last")));
    }
    v
}

impl Session {
    /// The pairs' positions, labelled with their selectors.
    pub fn resolve_pairs(&self, pairs: &[(Selector, Selector)]) -> Result<Vec<Pair>> {
        self.resolve_pairs_in_heads(pairs, None)
    }

    /// [`Session::resolve_pairs`] for knockouts in the query heads `heads` only.
    pub fn resolve_pairs_in_heads(
        &self,
        pairs: &[(Selector, Selector)],
        heads: Option<&[usize]>,
    ) -> Result<Vec<Pair>> {
        let heads = super::knockout::heads_of(heads, self.decoder().num_heads())?;
        pairs
            .iter()
            .map(|(s, t)| {
                Ok(Pair {
                    source: s.to_string(),
                    target: t.to_string(),
                    sources: self.select(s)?,
                    targets: self.select(t)?,
                    heads: heads.clone(),
                })
            })
            .collect()
    }

    /// Runs the sweep from the trace (built first when needed). `watch.progress` counts configurations
    /// (pairs × layers); cancel stops between two batched layer calls.
    pub fn sweep(&mut self, spec: &SweepSpec, watch: &Watch) -> Result<SweepOutcome> {
        self.trace(watch)?;
        let pairs = self.resolve_pairs_in_heads(&spec.pairs, spec.heads.as_deref())?;
        let total = pairs.len() * self.decoder().num_layers();
        watch.status(&format!(
            "Sweeping {} pairs ({total} windows)…",
            pairs.len()
        ));
        watch.progress(0, total);
        if spec.tokens.is_empty() {
            return Err(Error::Other(
                "a sweep needs at least one token to score".into(),
            ));
        }
        let texts = self.answer_texts(&spec.answers)?;
        let long = texts.long();
        let (dec, trace) = self.parts()?;
        let t0 = Instant::now();
        // One pass for the tokens and one-token texts, then one per multi-token text (its windows rerun
        // over the prompt continued by it); progress spans all passes.
        let passes = 1 + long.len();
        let pass_progress = |pass: usize| {
            move |done: usize, total: usize| watch.progress((pass * total + done) / passes, total)
        };
        let base = sweep_logits(
            dec,
            trace,
            &pairs,
            spec.window,
            spec.align,
            None,
            watch.cancel,
            &mut pass_progress(0),
        )?;
        let records = sweep_records(
            dec,
            trace,
            &pairs,
            spec.window,
            spec.align,
            &base,
            &spec.tokens,
        )?;
        let mut answers = Vec::new();
        if !spec.answers.is_empty() {
            let mut rows: Vec<Vec<Option<Vec<Tensor>>>> = Vec::with_capacity(long.len());
            for (i, ids) in long.iter().enumerate() {
                let cont = self.continuation(ids)?;
                rows.push(sweep_logits(
                    dec,
                    trace,
                    &pairs,
                    spec.window,
                    spec.align,
                    Some(cont),
                    watch.cancel,
                    &mut pass_progress(1 + i),
                )?);
            }
            // Windows every pass finished, in the records' order.
            for (p, lgs) in base.iter().enumerate() {
                let Some(lgs) = lgs else { continue };
                if rows.iter().any(|r| r[p].is_none()) {
                    break;
                }
                for (l, last) in lgs.iter().enumerate() {
                    let scores = self.score_texts(&texts, last, &mut |c| {
                        let i = long.iter().position(|ids| **ids == c.ids).ok_or_else(|| {
                            Error::Other("a sweep scored an answer it did not run".into())
                        })?;
                        rows[i][p]
                            .as_ref()
                            .map(|v| v[l].clone())
                            .ok_or_else(|| Error::Other("a sweep pass was not finished".into()))
                    })?;
                    answers.push(scores);
                }
            }
        }
        let cancelled = watch.cancelled();
        let mut records = records;
        if !spec.answers.is_empty() {
            // A cancel between passes: keep the windows every pass scored.
            for list in &mut records {
                list.truncate(answers.len());
            }
        }
        Ok(SweepOutcome {
            records,
            answers,
            seconds: t0.elapsed().as_secs_f64(),
            cancelled,
        })
    }

    /// The rows a sweep recomputes (its floor: what no exact method avoids), without running it.
    pub fn sweep_work(&mut self, spec: &SweepSpec) -> Result<Work> {
        let pairs = self.resolve_pairs(&spec.pairs)?;
        self.trace(&Watch::none())?;
        let (dec, trace) = self.parts()?;
        sweep_work(dec, trace, &pairs, spec.window, spec.align)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_with_selectors_on_either_side() {
        let p = parse_pairs("audio:last, video:question").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].0.to_string(), "video");
        let p = parse_pairs("@1-3:last,pos:3-5:question,audio:pos:7").unwrap();
        let text: Vec<(String, String)> = p
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(
            text,
            vec![
                ("@1-3".into(), "last".into()),
                ("pos:3-5".into(), "question".into()),
                ("audio".into(), "pos:7".into())
            ]
        );
        assert!(parse_pairs("audio").is_err());
        assert!(parse_pairs("audio:").is_err());
    }
}
