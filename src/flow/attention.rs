//! Attention maps of chosen query rows (e.g. `last`, `question`) to every key, per layer, from a trace:
//! head-averaged (or per head on request) and summarised by group. Only the chosen rows' queries are
//! computed; the full S×S map for all heads and layers is never materialised.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::Result;
use crate::flow::Trace;
use crate::model::decoder::{index_tensor, mask_for_rows, AttnMask, Decoder};
use crate::prompt::Groups;

/// Attention of the rows to every key, per layer: `[rows, seq]` head-averaged (f32).
pub fn attention_rows(
    decoder: &Decoder,
    trace: &Trace,
    rows: &[usize],
    per_head: bool,
) -> Result<Vec<Tensor>> {
    let seq = trace.seq_len;
    let dev = decoder.device();
    let idx = index_tensor(rows, dev)?;
    let rot = trace.rot.rows(&idx)?;
    let mask = AttnMask::Additive(mask_for_rows(rows.iter().copied(), seq, |_, _| false, dev)?);
    let mut out = Vec::with_capacity(decoder.num_layers());
    for l in 0..decoder.num_layers() {
        let x = trace.residuals.select(l, rows)?;
        let p = decoder
            .layer(l)
            .attention_probs(&x, &rot, &trace.kv[l], &mask)?
            .to_dtype(DType::F32)?;
        out.push(if per_head { p } else { p.mean(0)? });
    }
    Ok(out)
}

/// Per layer, the attention mass (summed over the group's keys, averaged over the rows) of each group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMass {
    pub layer: usize,
    pub mass: BTreeMap<String, f32>,
}

pub fn summarise(maps: &[Tensor], groups: &Groups) -> Result<Vec<GroupMass>> {
    let mut out = Vec::with_capacity(maps.len());
    for (layer, m) in maps.iter().enumerate() {
        let mean_row: Vec<f32> = m.mean(0)?.to_vec1()?;
        let mass = groups
            .spans
            .iter()
            .map(|(name, pos)| (name.clone(), pos.iter().map(|&p| mean_row[p]).sum()))
            .collect();
        out.push(GroupMass { layer, mass });
    }
    Ok(out)
}
