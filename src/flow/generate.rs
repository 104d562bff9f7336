//! Prefill (optionally dropping positions from a layer on) and greedy decoding with a per-layer KV cache.
//!
//! Dropping: from layer `from_layer` on, the chosen positions are physically removed: later layers run on
//! fewer rows and their caches hold fewer keys, which is where the speed comes from. The kept positions
//! keep their rotary position ids. Layers before `from_layer` see every position.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::flow::knockout::{Knockout, KnockoutSet};
use crate::model::decoder::{
    index_tensor, mask_for_rows, top_k, AttnMask, Decoder, KvPair, PositionIds,
};

/// Per-layer K/V after a prefill, plus where decoding continues.
pub struct Cache {
    pub kv: Vec<KvPair>,
    /// Rotary position of the next generated token (max prompt position + 1).
    pub next_position: i64,
    pub last_logits: Tensor,
    /// Per layer, the prompt positions generated tokens may not attend to (a knockout whose targets hold
    /// the last prompt position goes on blocking them while decoding); empty everywhere after a plain
    /// prefill.
    pub blocked: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateResult {
    pub tokens: Vec<u32>,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Mean seconds per generated token after the first.
    pub per_token_s: f64,
}

/// Runs the prompt through the decoder; with `drop = Some((positions, from_layer))`, those positions are
/// removed before layer `from_layer`. Returns the cache and the last position's logits.
pub fn prefill(
    decoder: &Decoder,
    embeds: &Tensor,
    pos: &PositionIds,
    drop: Option<(&[usize], usize)>,
) -> Result<Cache> {
    let n = embeds.dim(0)?;
    if n != pos.len() || n == 0 {
        return Err(Error::Prompt(
            "embeddings and position ids differ in length".into(),
        ));
    }
    let layers = decoder.num_layers();
    let (dropped, from) = drop.unwrap_or((&[], layers));
    if from > layers {
        return Err(Error::Prompt(format!(
            "--from-layer {from} is past the last layer ({layers})"
        )));
    }
    if dropped.contains(&(n - 1)) {
        return Err(Error::Prompt(
            "the last prompt position cannot be dropped: it makes the answer".into(),
        ));
    }
    let mut keep = vec![true; n];
    for &d in dropped {
        if d >= n {
            return Err(Error::Prompt(format!(
                "position {d} is outside the prompt ({n})"
            )));
        }
        keep[d] = false;
    }
    let kept: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
    let mut rot = decoder.rotary(pos)?;
    let mut x = embeds.to_dtype(decoder.dtype())?;
    let mut kv = Vec::with_capacity(layers);
    for l in 0..layers {
        if l == from && kept.len() < n {
            let idx = index_tensor(&kept, decoder.device())?;
            x = x.index_select(&idx, 0)?;
            rot = rot.rows(&idx)?;
        }
        let out = decoder
            .layer(l)
            .forward(&x, &rot, None, &AttnMask::Causal, false)?;
        kv.push(out.kv);
        x = out.hidden;
    }
    let rows = x.dim(0)?;
    let last = decoder.final_norm(&x.narrow(0, rows - 1, 1)?)?;
    let last_logits = decoder.logits(&last)?.squeeze(0)?;
    let next_position = next_position(pos);
    Ok(Cache {
        kv,
        next_position,
        last_logits,
        blocked: vec![Vec::new(); layers],
    })
}

/// The rotary position of the first token after a prompt: its largest id + 1 (as transformers continues
/// Qwen2-VL-style positions: `cache_position + rope_deltas`).
pub fn next_position(pos: &PositionIds) -> i64 {
    pos.iter()
        .flat_map(|p| p.iter())
        .copied()
        .max()
        .unwrap_or(-1)
        + 1
}

/// Prefill under a knockout: one forward over the prompt in which every layer applies the mask of the
/// blocks covering it ([`KnockoutSet::mask_at`]), keeping the K/V the knocked-out model computes. The
/// generated tokens continue the last prompt position, so in each block's layers they lose that block's
/// sources when its targets hold the last position ([`Cache::blocked`]); the rule
/// [`crate::flow::answer`] scores answers by.
pub fn prefill_knockout(
    decoder: &Decoder,
    embeds: &Tensor,
    pos: &PositionIds,
    set: &KnockoutSet,
) -> Result<Cache> {
    let n = embeds.dim(0)?;
    if n != pos.len() || n == 0 {
        return Err(Error::Prompt(
            "embeddings and position ids differ in length".into(),
        ));
    }
    let layers = decoder.num_layers();
    set.validate(n, layers)?;
    let rot = decoder.rotary(pos)?;
    let mut x = embeds.to_dtype(decoder.dtype())?;
    let mut kv = Vec::with_capacity(layers);
    let mut blocked = Vec::with_capacity(layers);
    for l in 0..layers {
        let active: Vec<&Knockout> = set
            .blocks
            .iter()
            .filter(|b| b.start <= l && l < b.end)
            .collect();
        let mask = if active.is_empty() {
            AttnMask::Causal
        } else {
            set.mask_at(l)
        };
        let out = decoder.layer(l).forward(&x, &rot, None, &mask, false)?;
        kv.push(out.kv);
        x = out.hidden;
        let mut keys: Vec<usize> = active
            .iter()
            .filter(|b| b.targets.contains(&(n - 1)))
            .flat_map(|b| b.sources.iter().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        blocked.push(keys);
    }
    let last = decoder.final_norm(&x.narrow(0, n - 1, 1)?)?;
    let last_logits = decoder.logits(&last)?.squeeze(0)?;
    let next_position = next_position(pos);
    Ok(Cache {
        kv,
        next_position,
        last_logits,
        blocked,
    })
}

/// How greedy decoding picks each token, as transformers' `generate(do_sample=False)` does with the
/// checkpoint's `generation_config.json`: stop after any of `stop`; with a `repetition_penalty` ≠ 1
/// (`RepetitionPenaltyLogitsProcessor`), every id already in the sequence — the prompt's included — has its
/// logit divided by the penalty when positive, multiplied when negative, before the argmax.
#[derive(Debug, Clone, Default)]
pub struct Decoding {
    pub stop: Vec<u32>,
    pub repetition_penalty: f32,
    /// The prompt's ids (what the penalty sees before the first generated token).
    pub prompt: Vec<u32>,
}

impl Decoding {
    /// Plain greedy decoding stopping at `stop`.
    pub fn greedy(stop: &[u32]) -> Self {
        Self {
            stop: stop.to_vec(),
            repetition_penalty: 1.0,
            prompt: Vec::new(),
        }
    }

    /// The next token after `logits` given the ids so far (`seen`: one flag per vocabulary id).
    fn pick(&self, logits: &Tensor, seen: &[bool]) -> Result<u32> {
        let p = self.repetition_penalty;
        if p == 1.0 || p <= 0.0 {
            return Ok(top_k(logits, 1)?[0].0);
        }
        let mut v: Vec<f32> = logits.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        for (x, _) in v.iter_mut().zip(seen).filter(|(_, &s)| s) {
            *x = if *x < 0.0 { *x * p } else { *x / p };
        }
        // First index of the maximum, as torch.argmax.
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] {
                best = i;
            }
        }
        Ok(best as u32)
    }
}

/// Greedy decoding from a prefilled cache: up to `max_new` tokens, stopping after any of `stop`.
pub fn generate(
    decoder: &Decoder,
    cache: &mut Cache,
    max_new: usize,
    stop: &[u32],
) -> Result<(Vec<u32>, Vec<Duration>)> {
    generate_until(
        decoder,
        cache,
        max_new,
        &Decoding::greedy(stop),
        &AtomicBool::new(false),
    )
}

/// [`generate`] that also stops (keeping the tokens so far) once `cancel` is set: the app's worker
/// generates on a 3B model for tens of seconds and must stop at the user's Cancel between tokens.
pub fn generate_until(
    decoder: &Decoder,
    cache: &mut Cache,
    max_new: usize,
    rules: &Decoding,
    cancel: &AtomicBool,
) -> Result<(Vec<u32>, Vec<Duration>)> {
    generate_streaming(decoder, cache, max_new, rules, cancel, &mut |_| {})
}

/// [`generate_until`] calling `on_token(tokens so far)` after each token: the app shows the answer as it
/// grows.
pub fn generate_streaming(
    decoder: &Decoder,
    cache: &mut Cache,
    max_new: usize,
    rules: &Decoding,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(&[u32]),
) -> Result<(Vec<u32>, Vec<Duration>)> {
    let mut tokens = Vec::new();
    let mut times = Vec::new();
    let vocab = cache.last_logits.dim(cache.last_logits.rank() - 1)?;
    let mut seen = vec![false; vocab];
    for &id in &rules.prompt {
        if let Some(s) = seen.get_mut(id as usize) {
            *s = true;
        }
    }
    let mut next = rules.pick(&cache.last_logits, &seen)?;
    for step in 0..max_new {
        tokens.push(next);
        on_token(&tokens);
        if let Some(s) = seen.get_mut(next as usize) {
            *s = true;
        }
        if rules.stop.contains(&next) || step + 1 == max_new || cancel.load(Ordering::SeqCst) {
            break;
        }
        let t0 = Instant::now();
        let p = cache.next_position + step as i64;
        let rot = decoder.rotary(&[[p; 3]])?;
        let mut x = decoder.embed(&[next])?;
        for l in 0..decoder.num_layers() {
            let mask = match cache.blocked.get(l) {
                Some(keys) if !keys.is_empty() => {
                    let past = cache.kv[l].rows();
                    AttnMask::Additive(mask_for_rows(
                        past..past + 1,
                        past + 1,
                        |_, j| keys.binary_search(&j).is_ok(),
                        decoder.device(),
                    )?)
                }
                _ => AttnMask::Causal,
            };
            let out = decoder
                .layer(l)
                .forward(&x, &rot, Some(&cache.kv[l]), &mask, false)?;
            cache.kv[l] = cache.kv[l].cat(&out.kv)?;
            x = out.hidden;
        }
        let logits = decoder.logits(&decoder.final_norm(&x)?)?.squeeze(0)?;
        next = rules.pick(&logits, &seen)?;
        times.push(t0.elapsed());
    }
    Ok((tokens, times))
}

/// One layer of a logit lens: layer, probability of the followed token, top-k `(id, prob)`.
pub type LensRow = (usize, f32, Vec<(u32, f32)>);

/// Logit lens: the final norm and `lm_head` applied to the residual leaving each layer at `position`;
/// per layer the top-k `(id, prob)` and the probability of `token`.
pub fn logit_lens(
    decoder: &Decoder,
    residuals: &crate::flow::trace::Residuals,
    position: usize,
    token: u32,
    k: usize,
) -> Result<Vec<LensRow>> {
    let mut out = Vec::new();
    for l in 1..residuals.len() {
        let row = residuals.rows(l, position, 1)?;
        let logits = decoder.logits(&decoder.final_norm(&row)?)?.squeeze(0)?;
        let p = crate::flow::trace::prob_of(&logits, token)?;
        out.push((l - 1, p, top_k(&logits, k)?));
    }
    Ok(out)
}

/// The answer probability when `dropped` is removed from layer `L`, for every `L` in `0..layers` — the
/// drop view's curve. Dropping from `L` equals blocking the dropped keys for every later query from `L`
/// on (the dropped rows' own outputs feed nothing kept; tested against [`prefill`]), so the whole curve
/// runs as one batched incremental knockout from the trace instead of one prefill per layer.
pub fn drop_curve(
    decoder: &Decoder,
    trace: &crate::flow::Trace,
    dropped: &[usize],
    token: Option<u32>,
) -> Result<Vec<(usize, crate::flow::KnockoutResult)>> {
    let first = *dropped
        .iter()
        .min()
        .ok_or_else(|| Error::Prompt("nothing to drop: the selection is empty".into()))?;
    if dropped.contains(&(trace.seq_len - 1)) {
        return Err(Error::Prompt(
            "the last prompt position cannot be dropped: the answer is read there".into(),
        ));
    }
    let set: std::collections::HashSet<usize> = dropped.iter().copied().collect();
    let targets: Vec<usize> = (first..trace.seq_len)
        .filter(|p| !set.contains(p))
        .collect();
    let layers = decoder.num_layers();
    let specs: Vec<crate::flow::Knockout> = (0..layers)
        .map(|l| crate::flow::Knockout {
            sources: dropped.to_vec(),
            targets: targets.clone(),
            start: l,
            end: layers,
            heads: None,
        })
        .collect();
    let logits = crate::flow::knockout::run_batch(decoder, trace, &specs)?;
    logits
        .iter()
        .enumerate()
        .map(|(l, lg)| Ok((l, crate::flow::knockout::score_logits(lg, trace, token)?)))
        .collect()
}
