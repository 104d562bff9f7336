//! A traced baseline run: per layer, the residual entering it and its post-rotary K/V, so that edits can
//! replay from any layer and recompute only the positions they can change.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::decoder::{top_k, AttnMask, Decoder, KvPair, PositionIds, Rotary};

/// Everything a knockout or a drop needs from the unedited run.
pub struct Trace {
    pub seq_len: usize,
    pub position_ids: PositionIds,
    pub rot: Rotary,
    /// `residuals[l]`: `[seq, hidden]` entering layer `l`; `residuals[L]` leaves the last layer.
    pub residuals: Vec<Tensor>,
    /// `kv[l]`: keys/values of layer `l` for every position.
    pub kv: Vec<KvPair>,
    /// Baseline next-token logits at the last position (f32 `[vocab]`).
    pub last_logits: Tensor,
    pub top1_id: u32,
}

impl Trace {
    /// Runs the decoder once over `embeds`, keeping what later edits reuse.
    pub fn run(decoder: &Decoder, embeds: &Tensor, position_ids: &PositionIds) -> Result<Self> {
        let seq_len = embeds.dim(0)?;
        if seq_len != position_ids.len() || seq_len == 0 {
            return Err(Error::Prompt(format!(
                "{} embeddings but {} position ids",
                seq_len,
                position_ids.len()
            )));
        }
        let rot = decoder.rotary(position_ids)?;
        decoder.prepare_products(seq_len, seq_len);
        let mut x = embeds.to_dtype(decoder.dtype())?;
        let mut residuals = Vec::with_capacity(decoder.num_layers() + 1);
        let mut kv = Vec::with_capacity(decoder.num_layers());
        for l in 0..decoder.num_layers() {
            residuals.push(x.clone());
            let out = decoder
                .layer(l)
                .forward(&x, &rot, None, &AttnMask::Causal, false)?;
            kv.push(out.kv);
            x = out.hidden;
        }
        residuals.push(x.clone());
        let last = decoder.final_norm(&x.narrow(0, seq_len - 1, 1)?)?;
        let last_logits = decoder.logits(&last)?.squeeze(0)?;
        let top1_id = top_k(&last_logits, 1)?[0].0;
        Ok(Trace {
            seq_len,
            position_ids: position_ids.clone(),
            rot,
            residuals,
            kv,
            last_logits,
            top1_id,
        })
    }

    /// Bytes held by the trace (residuals and K/V).
    pub fn memory_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        self.residuals.iter().map(t).sum::<usize>()
            + self.kv.iter().map(|k| t(&k.k) + t(&k.v)).sum::<usize>()
    }

    /// Probability of `token` at the last position in the baseline run.
    pub fn base_prob(&self, token: u32) -> Result<f32> {
        prob_of(&self.last_logits, token)
    }
}

/// Softmax probability of `token` in a logits row.
pub fn prob_of(logits: &Tensor, token: u32) -> Result<f32> {
    let v = logits.dim(0)?;
    if token as usize >= v {
        return Err(Error::Prompt(format!(
            "token id {token} is outside the vocabulary ({v})"
        )));
    }
    let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    Ok(p.get(token as usize)?.to_scalar::<f32>()?)
}
