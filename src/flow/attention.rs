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

/// Attention mass per layer, query head and group: `[layer][head]{group: mass}`.
pub type HeadMass = Vec<Vec<BTreeMap<String, f32>>>;

/// Per layer and head, the attention mass of each group: `[layer][head]{group: mass}` (summed over the
/// group's keys, averaged over the rows), from per-head maps (`[heads, rows, seq]` per layer). Their mean
/// over heads is [`summarise`] of the head-averaged maps.
pub fn summarise_heads(maps: &[Tensor], groups: &Groups) -> Result<HeadMass> {
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let per_head: Vec<Vec<f32>> = m.mean(1)?.to_vec2()?;
        out.push(
            per_head
                .iter()
                .map(|row| {
                    groups
                        .spans
                        .iter()
                        .map(|(name, pos)| (name.clone(), pos.iter().map(|&p| row[p]).sum()))
                        .collect()
                })
                .collect(),
        );
    }
    Ok(out)
}

/// One head's attention mass to a group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadScore {
    pub layer: usize,
    pub head: usize,
    pub mass: f32,
}

/// The `k` heads that give `group` the most attention mass (the "listening" heads for audio, the "looking"
/// heads for video), largest first; ties keep layer-then-head order.
pub fn rank_heads(
    per_head: &[Vec<BTreeMap<String, f32>>],
    group: &str,
    k: usize,
) -> Vec<HeadScore> {
    let mut all: Vec<HeadScore> = per_head
        .iter()
        .enumerate()
        .flat_map(|(layer, heads)| {
            heads.iter().enumerate().filter_map(move |(head, m)| {
                m.get(group).map(|&mass| HeadScore { layer, head, mass })
            })
        })
        .collect();
    all.sort_by(|a, b| b.mass.total_cmp(&a.mass));
    all.truncate(k);
    all
}
