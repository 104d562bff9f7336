//! Any answer, not only the baseline's top-1: a typed answer of several tokens, scored by teacher forcing
//! (the sum of its tokens' log-probabilities), and the options of a multiple-choice question (each
//! option's probability, and which one the model prefers), with and without an edit.
//!
//! A text is tokenised as written, without special tokens: what follows the prompt's assistant turn. A
//! one-token text is read off the edited run's last-position logits; a longer one costs a run over its
//! appended tokens too ([`crate::flow::answer`]).

use std::collections::HashMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::answer::{argmax, token_logprobs, Continuation};

use super::{Model, Session};

/// What an analysis scores besides the watched token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnswerSpec {
    /// A typed answer (`--answer TEXT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Options of a multiple-choice question (`--options A,B,…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl AnswerSpec {
    /// Nothing to score.
    pub fn is_empty(&self) -> bool {
        self.answer.is_none() && self.options.is_empty()
    }

    /// `--answer` and `--options` as the command line gives them (`A,B,C`; empty items left out).
    pub fn from_args(answer: Option<&str>, options: Option<&str>) -> Result<Self> {
        let options: Vec<String> = options
            .map(|o| {
                o.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(o) = options
            .iter()
            .find(|o| options.iter().filter(|p| p == o).count() > 1)
        {
            return Err(Error::Request {
                reason: format!("option {o:?} is listed twice"),
                fix: "list each option once: --options A,B,C,D".into(),
            });
        }
        if answer.is_some_and(|a| a.is_empty()) {
            return Err(Error::Request {
                reason: "--answer is empty".into(),
                fix: "give the answer's text, e.g. --answer \"a violin\"".into(),
            });
        }
        Ok(Self {
            answer: answer.map(String::from),
            options,
        })
    }
}

/// A scored text: its tokens and log-probability (natural log, summed over its tokens) after the edit and
/// in the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub text: String,
    pub ids: Vec<u32>,
    pub logprob: f32,
    pub base_logprob: f32,
}

impl Scored {
    pub fn prob(&self) -> f32 {
        self.logprob.exp()
    }

    pub fn base_prob(&self) -> f32 {
        self.base_logprob.exp()
    }
}

/// The scores of an [`AnswerSpec`] for one edit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerScores {
    pub answer: Option<Scored>,
    pub options: Vec<Scored>,
}

impl AnswerScores {
    /// The option the edited model prefers (the largest probability; the first on ties).
    pub fn choice(&self) -> Option<usize> {
        argmax(&self.options.iter().map(|o| o.logprob).collect::<Vec<_>>())
    }

    /// The option the unedited model prefers.
    pub fn base_choice(&self) -> Option<usize> {
        argmax(
            &self
                .options
                .iter()
                .map(|o| o.base_logprob)
                .collect::<Vec<_>>(),
        )
    }

    /// Adds the command line's fields to a JSON object: `answer_ids`, `answer_logprob`,
    /// `base_answer_logprob`; `options` (`[{text, ids, prob, base_prob, logprob, base_logprob}]`),
    /// `option_argmax` and `base_option_argmax` (the preferred option's text).
    pub fn write_json(&self, v: &mut serde_json::Value) {
        if let Some(a) = &self.answer {
            v["answer_text"] = a.text.clone().into();
            v["answer_ids"] = a.ids.clone().into();
            v["answer_logprob"] = a.logprob.into();
            v["base_answer_logprob"] = a.base_logprob.into();
        }
        if !self.options.is_empty() {
            v["options"] = self
                .options
                .iter()
                .map(|o| {
                    serde_json::json!({"text": o.text, "ids": o.ids, "prob": o.prob(),
                        "base_prob": o.base_prob(), "logprob": o.logprob, "base_logprob": o.base_logprob})
                })
                .collect();
            let text = |i: Option<usize>| i.map(|i| self.options[i].text.clone());
            v["option_argmax"] = text(self.choice()).into();
            v["base_option_argmax"] = text(self.base_choice()).into();
        }
    }
}

/// CSV columns of per-window scores ([`crate::flow::sweep::to_csv_with`]): the answer's log-probability
/// with and without the edit, then each option's probability with and without it.
pub fn csv_columns(scores: &[AnswerScores]) -> (Vec<String>, Vec<Vec<String>>) {
    let Some(first) = scores.first() else {
        return (vec![], vec![]);
    };
    let mut header = Vec::new();
    if first.answer.is_some() {
        header.extend([
            "answer_logprob".to_string(),
            "base_answer_logprob".to_string(),
        ]);
    }
    for o in &first.options {
        header.push(format!("prob[{}]", o.text));
        header.push(format!("base_prob[{}]", o.text));
    }
    if !first.options.is_empty() {
        header.push("option_argmax".into());
    }
    let rows = scores
        .iter()
        .map(|s| {
            let mut row = Vec::new();
            if let Some(a) = &s.answer {
                row.extend([a.logprob.to_string(), a.base_logprob.to_string()]);
            }
            for o in &s.options {
                row.extend([o.prob().to_string(), o.base_prob().to_string()]);
            }
            if let Some(i) = s.choice() {
                row.push(s.options[i].text.clone());
            }
            row
        })
        .collect();
    (header, rows)
}

impl Model {
    /// The token ids of an answer text, as written (no special tokens).
    pub fn answer_ids(&self, text: &str) -> Result<Vec<u32>> {
        let tk = self.tokenizer.as_ref().ok_or_else(|| Error::Model {
            path: self.dir().to_path_buf(),
            reason: "has no tokenizer, which scoring a typed answer needs".into(),
            fix: "download the checkpoint's tokenizer files too (tokenizer.json, or vocab.json and merges.txt)"
                .into(),
        })?;
        let ids = tk
            .encode(text, false)
            .map_err(|e| Error::Prompt(format!("tokenising the answer {text:?}: {e}")))?
            .get_ids()
            .to_vec();
        if ids.is_empty() {
            return Err(Error::Request {
                reason: format!("the answer {text:?} has no tokens"),
                fix: "give a non-empty answer".into(),
            });
        }
        Ok(ids)
    }
}

/// The texts of a spec with their ids, answer first.
pub(crate) struct Texts {
    pub answer: Option<(String, Vec<u32>)>,
    pub options: Vec<(String, Vec<u32>)>,
}

impl Texts {
    fn all(&self) -> impl Iterator<Item = &(String, Vec<u32>)> {
        self.answer.iter().chain(&self.options)
    }

    /// Multi-token texts: each needs a run over its appended tokens.
    pub fn long(&self) -> Vec<&Vec<u32>> {
        let mut v: Vec<&Vec<u32>> = self
            .all()
            .map(|(_, ids)| ids)
            .filter(|i| i.len() > 1)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Continuations built for this prompt, by answer ids.
pub(crate) type Continuations = HashMap<Vec<u32>, Continuation>;

impl Session {
    /// Tokenises `spec`'s texts and builds (once per prompt) the continuation of every multi-token one.
    pub(crate) fn answer_texts(&mut self, spec: &AnswerSpec) -> Result<Texts> {
        let tok = |t: &String| -> Result<(String, Vec<u32>)> {
            Ok((t.clone(), self.model.answer_ids(t)?))
        };
        let texts = Texts {
            answer: spec.answer.as_ref().map(tok).transpose()?,
            options: spec.options.iter().map(tok).collect::<Result<_>>()?,
        };
        let (dec, trace) = self.parts()?;
        let mut built = Vec::new();
        for ids in texts.all().map(|(_, ids)| ids) {
            if !self.continuations.contains_key(ids) && !built.iter().any(|(i, _)| i == ids) {
                built.push((ids.clone(), Continuation::run(dec, trace, ids)?));
            }
        }
        self.continuations.extend(built);
        Ok(texts)
    }

    /// The continuation of `ids` ([`Self::answer_texts`] built it).
    pub(crate) fn continuation(&self, ids: &[u32]) -> Result<&Continuation> {
        self.continuations
            .get(ids)
            .ok_or_else(|| Error::Other("an answer's continuation was not built".into()))
    }

    /// Scores `texts` for one edit: `last` is its last-position logits, `rows(ids)` its logits `[n, vocab]`
    /// over a multi-token text (the edit run on the prompt continued by it).
    pub(crate) fn score_texts(
        &self,
        texts: &Texts,
        last: &Tensor,
        rows: &mut dyn FnMut(&Continuation) -> Result<Tensor>,
    ) -> Result<AnswerScores> {
        let mut score = |(text, ids): &(String, Vec<u32>)| -> Result<Scored> {
            let c = self.continuation(ids)?;
            let logits = if ids.len() == 1 {
                last.unsqueeze(0)?
            } else {
                rows(c)?
            };
            Ok(Scored {
                text: text.clone(),
                ids: ids.clone(),
                logprob: token_logprobs(&logits, ids)?.iter().sum(),
                base_logprob: c.base_logprob(),
            })
        };
        Ok(AnswerScores {
            answer: texts.answer.as_ref().map(&mut score).transpose()?,
            options: texts
                .options
                .iter()
                .map(&mut score)
                .collect::<Result<_>>()?,
        })
    }

    /// The baseline's scores of `spec` (no edit).
    pub fn score_answers(&mut self, spec: &AnswerSpec) -> Result<AnswerScores> {
        self.trace(&super::Watch::none())?;
        let texts = self.answer_texts(spec)?;
        let base = |(text, ids): &(String, Vec<u32>)| -> Result<Scored> {
            let lp = self.continuation(ids)?.base_logprob();
            Ok(Scored {
                text: text.clone(),
                ids: ids.clone(),
                logprob: lp,
                base_logprob: lp,
            })
        };
        Ok(AnswerScores {
            answer: texts.answer.as_ref().map(base).transpose()?,
            options: texts.options.iter().map(base).collect::<Result<_>>()?,
        })
    }
}
