//! Attention knockouts as requests: in layers `start..end` the target's queries may not attend to the
//! source's keys; several blocks run together as one [`KnockoutSet`].

use std::time::Instant;

use crate::error::{Error, Result};
use crate::flow::knockout::score_logits;
use crate::flow::{Knockout, KnockoutResult, KnockoutSet};
use crate::prompt::groups::random_control;
use crate::prompt::Selector;

use super::{AnswerScores, AnswerSpec, Session, Watch};

/// One block: `target`'s queries lose `source`'s keys in decoder layers `start..end` (half-open).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KnockoutBlock {
    pub source: Selector,
    pub target: Selector,
    pub start: usize,
    pub end: usize,
    /// The query heads (0-based) the block applies in; `None`: all of them (`--heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Vec<usize>>,
}

/// A block's head list checked against the model's `n` heads: sorted, without repeats; every head listed is
/// the same as none (`None`).
pub fn heads_of(heads: Option<&[usize]>, n: usize) -> Result<Option<Vec<usize>>> {
    let Some(hs) = heads else {
        return Ok(None);
    };
    if hs.is_empty() {
        return Err(Error::Request {
            reason: "--heads lists no head".into(),
            fix: format!("list query heads 0..{n}, e.g. --heads 0,3, or leave --heads out for all"),
        });
    }
    if let Some(&bad) = hs.iter().find(|&&h| h >= n) {
        return Err(Error::Request {
            reason: format!("head {bad} does not exist: the model has {n} query heads per layer"),
            fix: format!("list heads from 0 to {}", n - 1),
        });
    }
    let mut v = hs.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok((v.len() < n).then_some(v))
}

/// `0,3,5` → heads.
pub fn parse_heads(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|p| {
            p.trim().parse::<usize>().map_err(|_| Error::Request {
                reason: format!("{p:?} in --heads {s:?} is not a head index"),
                fix: "list 0-based query heads separated by commas, e.g. --heads 0,3".into(),
            })
        })
        .collect()
}

impl KnockoutBlock {
    /// `audio -> last, layers 0..9`.
    pub fn label(&self) -> String {
        format!(
            "{} -> {}, layers {}..{}{}",
            self.source,
            self.target,
            self.start,
            self.end,
            self.heads_text()
        )
    }

    /// `, head 2` / `, heads 0,3` for a block of some heads; empty for all of them.
    pub fn heads_text(&self) -> String {
        match self.heads.as_deref() {
            None => String::new(),
            Some(hs) => format!(
                ", head{} {}",
                if hs.len() == 1 { "" } else { "s" },
                hs.iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// A knockout request: its blocks (the first is the main one; the app's toggle grid adds more, applied
/// together), the token to watch, and optionally a size-matched random control.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KnockoutSpec {
    pub blocks: Vec<KnockoutBlock>,
    /// Token whose probability is reported; `None`: the baseline top-1.
    pub token: Option<u32>,
    /// Also run the main block with random sources (as many, drawn with this seed from the positions
    /// before the last target that are neither sources nor targets): the research protocol's control.
    pub control_seed: Option<u64>,
    /// A typed answer and multiple-choice options scored with and without the knockout.
    #[serde(default, skip_serializing_if = "AnswerSpec::is_empty")]
    pub answers: AnswerSpec,
}

impl KnockoutSpec {
    /// One block.
    pub fn single(source: Selector, target: Selector, start: usize, end: usize) -> Self {
        Self {
            blocks: vec![KnockoutBlock {
                source,
                target,
                start,
                end,
                heads: None,
            }],
            token: None,
            control_seed: None,
            answers: AnswerSpec::default(),
        }
    }

    /// The main block.
    pub fn main(&self) -> Option<&KnockoutBlock> {
        self.blocks.first()
    }

    /// `audio -> last in layers 0..9 and 2 more blocks`, for status lines.
    pub fn describe(&self) -> String {
        match self.main() {
            None => "nothing".into(),
            Some(b) => format!(
                "{} -> {} in layers {}..{}{}{}",
                b.source,
                b.target,
                b.start,
                b.end,
                b.heads_text(),
                match self.blocks.len() {
                    1 => String::new(),
                    n => format!(" and {} more blocks", n - 1),
                }
            ),
        }
    }
}

/// The random control of a knockout.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlOutcome {
    pub seed: u64,
    pub sources: Vec<usize>,
    pub result: KnockoutResult,
}

/// A knockout's result, with the request it answers (the app may have moved on meanwhile).
#[derive(Debug, Clone, PartialEq)]
pub struct KnockoutOutcome {
    pub spec: KnockoutSpec,
    pub result: KnockoutResult,
    /// Top-1 token after the knockout: id and text (empty without a tokenizer).
    pub top1: (u32, String),
    /// The watched token: id and text.
    pub token: (u32, String),
    /// Seconds of the knockout alone (the trace excluded).
    pub seconds: f64,
    pub control: Option<ControlOutcome>,
    /// The request's answer and options, scored with and without the knockout.
    pub answers: AnswerScores,
}

impl Session {
    /// A request's blocks as positions, checked against the model's layers.
    pub(crate) fn knockout_set(&self, spec: &KnockoutSpec) -> Result<KnockoutSet> {
        let layers = self.decoder().num_layers();
        if spec.blocks.is_empty() {
            return Err(Error::Prompt("a knockout needs at least one block".into()));
        }
        let mut blocks = Vec::with_capacity(spec.blocks.len());
        for b in &spec.blocks {
            if b.start >= b.end || b.end > layers {
                return Err(Error::Request {
                    reason: format!(
                        "layer range {}..{} is not inside 0..{layers} (half-open)",
                        b.start, b.end
                    ),
                    fix: format!("choose layers A..B with 0 ≤ A < B ≤ {layers}"),
                });
            }
            blocks.push(Knockout {
                sources: self.select(&b.source)?,
                targets: self.select(&b.target)?,
                start: b.start,
                end: b.end,
                heads: heads_of(b.heads.as_deref(), self.decoder().num_heads())?,
            });
        }
        Ok(KnockoutSet { blocks })
    }

    /// Runs a knockout from the trace (built first when needed).
    pub fn knockout(&mut self, spec: &KnockoutSpec, watch: &Watch) -> Result<KnockoutOutcome> {
        self.trace(watch)?;
        let set = self.knockout_set(spec)?;
        let texts = self.answer_texts(&spec.answers)?;
        watch.status(&format!("Knocking out {}…", spec.describe()));
        let (dec, trace) = self.parts()?;
        let t0 = Instant::now();
        // One block or several: the set runs them together (one block is exactly `Knockout::score`).
        let main = set.blocks[0].clone();
        let logits = set.run(dec, trace)?;
        let result = score_logits(&logits, trace, spec.token)?;
        let answers = self.score_texts(&texts, &logits, &mut |c| set.run_answer(dec, trace, c))?;
        let seconds = t0.elapsed().as_secs_f64();
        let control = match spec.control_seed {
            None => None,
            Some(seed) => {
                let ctl = Knockout {
                    sources: random_control(&main.sources, &main.targets, seed)?,
                    ..main
                };
                let result = ctl.score(dec, trace, spec.token)?;
                Some(ControlOutcome {
                    seed,
                    sources: ctl.sources,
                    result,
                })
            }
        };
        let text = |id: u32| (id, self.model.token_text(id));
        Ok(KnockoutOutcome {
            spec: spec.clone(),
            top1: text(result.top1_id),
            token: text(result.token_id),
            result,
            seconds,
            control,
            answers,
        })
    }
}
