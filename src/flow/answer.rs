//! Scoring an answer of several tokens by teacher forcing: the answer's tokens are appended after the
//! prompt, and its log-probability is the sum over its tokens of `log p(a_i | prompt, a_<i)`, read at the
//! last prompt position (for `a_0`) and at each appended token (for the next one).
//!
//! A [`Continuation`] extends a [`Trace`] by the appended tokens (all but the last, whose successor nobody
//! reads): per layer the residual entering it, computed once from the trace's cache. A
//! knockout then recomputes the appended rows together with the prompt rows it already recomputes
//! ([`crate::flow::knockout::run_batch_answer`]), so scoring an answer costs a few more rows per layer
//! call, not another pass over the prompt.
//!
//! The appended tokens continue the last prompt position: they are generated from it and, in greedy
//! decoding, each one is in turn the position the next token is read from. A knockout whose targets hold
//! the last prompt position therefore also blocks the appended tokens' queries (the same rule
//! [`crate::flow::generate`] applies while generating under a knockout); a knockout into other targets
//! leaves them alone.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::flow::trace::Trace;
use crate::model::decoder::{AttnMask, Decoder, Rotary};

/// The appended rows of an answer scored by teacher forcing (see the module documentation).
pub struct Continuation {
    /// The scored tokens (at least one).
    pub ids: Vec<u32>,
    /// `residuals[l]`: `[ids.len() - 1, hidden]` entering layer `l` (`None` for a one-token answer,
    /// which appends nothing).
    residuals: Vec<Tensor>,
    /// Rotary angles of the appended rows.
    rot: Option<Rotary>,
    /// The baseline's log-probability of each token.
    pub base_logprobs: Vec<f32>,
}

impl Continuation {
    /// Appends `ids[..n-1]` after the traced prompt (positions continue after the prompt's largest id,
    /// as generation does) and scores `ids` in the baseline.
    pub fn run(decoder: &Decoder, trace: &Trace, ids: &[u32]) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::Prompt(
                "an answer to score needs at least one token".into(),
            ));
        }
        let extra = ids.len() - 1;
        let mut residuals = Vec::new();
        let mut rot = None;
        let mut rows_logits = vec![trace.last_logits.clone()];
        if extra > 0 {
            let next = next_position(trace);
            let pos: Vec<[i64; 3]> = (0..extra as i64).map(|i| [next + i; 3]).collect();
            let r = decoder.rotary(&pos)?;
            let mut x = decoder.embed(&ids[..extra])?;
            for l in 0..decoder.num_layers() {
                residuals.push(x.clone());
                let out = decoder.layer(l).forward(
                    &x,
                    &r,
                    Some(&trace.kv[l]),
                    &AttnMask::Causal,
                    false,
                )?;
                x = out.hidden;
            }
            residuals.push(x.clone());
            let logits = decoder.logits(&decoder.final_norm(&x)?)?;
            for i in 0..extra {
                rows_logits.push(logits.get(i)?);
            }
            rot = Some(r);
        }
        let rows = Tensor::stack(&rows_logits, 0)?;
        let base_logprobs = token_logprobs(&rows, ids)?;
        Ok(Self {
            ids: ids.to_vec(),
            residuals,
            rot,
            base_logprobs,
        })
    }

    /// Rows appended after the prompt (`ids.len() - 1`).
    pub fn extra(&self) -> usize {
        self.ids.len() - 1
    }

    /// The baseline's log-probability of the whole answer.
    pub fn base_logprob(&self) -> f32 {
        self.base_logprobs.iter().sum()
    }

    /// Rows `first..` of the prompt at layer `l` followed by the appended rows: the input of a knockout's
    /// recomputed rows.
    pub(crate) fn rows_from(&self, trace: &Trace, l: usize, first: usize) -> Result<Tensor> {
        let prompt = trace.residuals.rows(l, first, trace.seq_len - first)?;
        Ok(match self.residuals.get(l) {
            Some(r) => Tensor::cat(&[&prompt, r], 0)?,
            None => prompt,
        })
    }

    /// Rotary angles of prompt rows `first..` followed by the appended rows.
    pub(crate) fn rot_from(&self, trace: &Trace, first: usize) -> Result<Rotary> {
        let prompt = trace.rot.narrow(first, trace.seq_len - first)?;
        Ok(match &self.rot {
            Some(r) => Rotary {
                cos: Tensor::cat(&[&prompt.cos, &r.cos], 0)?,
                sin: Tensor::cat(&[&prompt.sin, &r.sin], 0)?,
            },
            None => prompt,
        })
    }
}

/// The rotary position of the first token after the traced prompt (see
/// [`crate::flow::generate::next_position`]).
pub fn next_position(trace: &Trace) -> i64 {
    crate::flow::generate::next_position(&trace.position_ids)
}

/// `log softmax(rows[i])[ids[i]]` for each row of `rows` (`[n, vocab]`, one row per scored token).
pub fn token_logprobs(rows: &Tensor, ids: &[u32]) -> Result<Vec<f32>> {
    let (n, vocab) = rows.dims2()?;
    if n != ids.len() {
        return Err(Error::Other(format!(
            "{n} logit rows for {} answer tokens",
            ids.len()
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::Prompt(format!(
            "token id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    let lp = candle_nn::ops::log_softmax(&rows.to_dtype(DType::F32)?, 1)?;
    let lp: Vec<Vec<f32>> = lp.to_vec2()?;
    Ok(ids
        .iter()
        .zip(lp)
        .map(|(&id, row)| row[id as usize])
        .collect())
}

/// Index of the largest value (the first on ties), `None` when empty: which option a model prefers.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|b| v > values[b]) {
            best = Some(i);
        }
    }
    best
}
