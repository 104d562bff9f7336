//! Reading the model without editing it: the next-token distribution, greedy answers, the logit lens,
//! attention maps and the layer × position heatmaps.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::flow::attention::{attention_rows, summarise, summarise_heads, GroupMass};
use crate::flow::generate::{
    generate_streaming, generate_until, logit_lens, prefill, prefill_knockout, Cache, LensRow,
};
use crate::flow::heatmap::{HeatMetric, Heatmap, EFFECT_BINS};
use crate::model::decoder::top_k;
use crate::prompt::Selector;

use super::{Generated, KnockoutSpec, Session, Watch};

/// A greedy answer to the prompt and what it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub generated: Generated,
    /// Encoders, embedding and the prefill.
    pub prefill_s: f64,
}

/// Logit lens at one position.
#[derive(Debug, Clone, PartialEq)]
pub struct LensOutcome {
    pub position: usize,
    pub token: u32,
    /// Per layer: the followed token's probability and the top-k.
    pub layers: Vec<LensRow>,
}

/// Attention of chosen query rows to every position, per layer.
#[derive(Debug, Clone)]
pub struct AttentionOutcome {
    pub rows: Vec<usize>,
    /// `[layers][seq]`: head-averaged, averaged over the rows.
    pub map: Vec<Vec<f32>>,
    /// Per layer, the attention mass of each group.
    pub mass: Vec<GroupMass>,
    /// Per layer and head, the attention mass of each group (`[layer][head]{group}`), when asked for.
    pub per_head: Option<crate::flow::attention::HeadMass>,
}

impl Session {
    /// The `k` most likely next tokens after the prompt: `(id, text, probability)`. One plain forward (no
    /// trace kept).
    pub fn forward(&self, k: usize, watch: &Watch) -> Result<Vec<(u32, String, f32)>> {
        let n = self.prompt.len();
        let last = n.checked_sub(1).ok_or_else(|| Error::Request {
            reason: "the inputs have no input_ids".into(),
            fix: "open an inputs file with a non-empty prompt".into(),
        })?;
        watch.status("Encoding audio and video…");
        let embedded = self.embed()?;
        watch.check()?;
        watch.status(&format!("Running the decoder over {n} positions…"));
        let logits = self.model.net.logits(&embedded, Some(&[last]))?;
        let row = logits.get(0)?;
        Ok(top_k(&row, k)?
            .into_iter()
            .map(|(id, p)| (id, self.model.token_text(id), p))
            .collect())
    }

    /// [`Self::forward`]'s next tokens read from the traced run (built on first use): what the app asks
    /// first, so that the encoders and the decoder run once for the answer and for every knockout after
    /// it, and the trace's size is known as the answer is shown.
    pub fn traced_top_k(&mut self, k: usize, watch: &Watch) -> Result<Vec<(u32, String, f32)>> {
        self.trace(watch)?;
        let (_, trace) = self.parts()?;
        Ok(top_k(&trace.last_logits, k)?
            .into_iter()
            .map(|(id, p)| (id, self.model.token_text(id), p))
            .collect())
    }

    /// The greedy answer (up to `max_new` tokens, stopping at the model's end tokens or a cancel), from a
    /// fresh prefill.
    pub fn generate(&self, max_new: usize, watch: &Watch) -> Result<Answer> {
        let t0 = Instant::now();
        let e = self.embed()?;
        let dec = self.decoder();
        let mut cache = prefill(dec, &e.embeds, &e.position_ids, None)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let (ids, times) = generate_until(
            dec,
            &mut cache,
            max_new,
            &self.model.decoding(&self.prompt.input_ids),
            watch.cancel,
        )?;
        Ok(self.answer(ids, &times, t1, prefill_s))
    }

    /// A generated answer with its timings: `times` per token after the first, decoding since `t1`.
    fn answer(
        &self,
        ids: Vec<u32>,
        times: &[std::time::Duration],
        t1: Instant,
        prefill_s: f64,
    ) -> Answer {
        let per_token_s =
            times.iter().map(|d| d.as_secs_f64()).sum::<f64>() / times.len().max(1) as f64;
        Answer {
            generated: Generated {
                text: self.model.decode(&ids).unwrap_or_default(),
                ids,
                decode_s: t1.elapsed().as_secs_f64(),
                per_token_s,
            },
            prefill_s,
        }
    }

    /// The greedy answer under a knockout (the baseline's with `None`), from the trace: its K/V serve the
    /// baseline as they are, and a knockout prefills once with its masks ([`prefill_knockout`]: the
    /// generated tokens go on losing the sources of blocks into `last`). `on_token(ids so far)` follows
    /// each token; a cancel stops between tokens, keeping those so far.
    pub fn generate_with(
        &mut self,
        knockout: Option<&KnockoutSpec>,
        max_new: usize,
        watch: &Watch,
        on_token: &mut dyn FnMut(&[u32]),
    ) -> Result<Answer> {
        self.trace(watch)?;
        let set = knockout.map(|k| self.knockout_set(k)).transpose()?;
        if set
            .as_ref()
            .is_some_and(|s| s.blocks.iter().any(|b| b.heads.is_some()))
        {
            return Err(Error::Request {
                reason: "generating under a knockout of some heads only is not supported yet".into(),
                fix: "generate under a knockout of all heads, or score the answer with knockout --heads \
                      --answer TEXT"
                    .into(),
            });
        }
        let (dec, trace) = self.parts()?;
        let t0 = Instant::now();
        let mut cache = match &set {
            Some(set) => {
                prefill_knockout(dec, &trace.residuals.layer(0)?, &trace.position_ids, set)?
            }
            None => Cache {
                kv: trace.kv.clone(),
                next_position: crate::flow::answer::next_position(trace),
                last_logits: trace.last_logits.clone(),
                blocked: vec![Vec::new(); trace.kv.len()],
            },
        };
        let prefill_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let (ids, times) = generate_streaming(
            dec,
            &mut cache,
            max_new,
            &self.model.decoding(&self.prompt.input_ids),
            watch.cancel,
            on_token,
        )?;
        Ok(self.answer(ids, &times, t1, prefill_s))
    }

    /// The logit lens at the first position of `at`: per layer, `token`'s probability (the baseline top-1
    /// when `None`) and the top `top` tokens.
    pub fn lens(&mut self, at: &Selector, token: Option<u32>, top: usize) -> Result<LensOutcome> {
        let position = self.select(at)?[0];
        self.trace(&Watch::none())?;
        let token = self.watched(token);
        let (dec, trace) = self.parts()?;
        Ok(LensOutcome {
            position,
            token,
            layers: logit_lens(dec, &trace.residuals, position, token, top)?,
        })
    }

    /// Head-averaged attention of the `rows` queries to every position, per layer, and its mass per group.
    pub fn attention(&mut self, rows: &Selector) -> Result<AttentionOutcome> {
        self.attention_with(rows, false)
    }

    /// [`Session::attention`], with each head's mass per group too when `per_head` (the same products:
    /// the head-averaged map is the per-head maps' mean).
    pub fn attention_with(&mut self, rows: &Selector, per_head: bool) -> Result<AttentionOutcome> {
        let rows = self.select(rows)?;
        let groups = self.groups().clone();
        self.trace(&Watch::none())?;
        let (dec, trace) = self.parts()?;
        let (maps, heads) = if per_head {
            let heads = attention_rows(dec, trace, &rows, true)?;
            let maps = heads
                .iter()
                .map(|h| h.mean(0))
                .collect::<candle_core::Result<Vec<_>>>()?;
            (maps, Some(summarise_heads(&heads, &groups)?))
        } else {
            (attention_rows(dec, trace, &rows, false)?, None)
        };
        let mass = summarise(&maps, &groups)?;
        let map = maps
            .iter()
            .map(|t| t.mean(0)?.to_vec1())
            .collect::<candle_core::Result<_>>()?;
        Ok(AttentionOutcome {
            rows,
            map,
            mass,
            per_head: heads,
        })
    }

    /// The knockout-effect map coarse to fine ([`crate::flow::heatmap::effect_stages`]): groups, then
    /// contiguous runs, then position bins; `on_stage(next stage, matrix)` gets each coarser one as it is
    /// done (the app shows it while the next one computes), the finest is returned. `watch.progress` counts bins over all stages. Returns
    /// the finest matrix and the token it follows (the baseline top-1).
    pub fn knockout_effect_stages(
        &mut self,
        watch: &Watch,
        on_stage: &mut dyn FnMut(&str, &Heatmap),
    ) -> Result<(Heatmap, u32)> {
        self.select(&Selector::group("last"))?;
        self.trace(watch)?;
        let groups = self.groups().clone();
        let (dec, trace) = self.parts()?;
        let stages = crate::flow::heatmap::effect_stages(&groups, trace.seq_len);
        let total: usize = stages.iter().map(|(_, b)| b.len()).sum();
        let mut done = 0;
        let mut last = None;
        for (name, bins) in &stages {
            watch.status(&format!(
                "Knockout effect by {name}: {} layers × {} spans…",
                dec.num_layers(),
                bins.len()
            ));
            let m = crate::flow::heatmap::knockout_effect_bins(
                dec,
                trace,
                9,
                bins,
                watch.cancel,
                &mut |d, _| watch.progress(done + d, total),
            )?
            .ok_or(Error::Cancelled)?;
            done += bins.len();
            if let Some(prev) = last.replace(m) {
                on_stage(name, &prev);
            }
        }
        let m = last.ok_or_else(|| Error::Other("the prompt has no positions".into()))?;
        Ok((m, trace.top1_id))
    }

    /// A layer × position matrix of `metric` ([`crate::flow::heatmap`]); the lens metrics follow the
    /// baseline top-1 (returned with the matrix). `watch.progress` counts the metric's steps; a cancel gives
    /// [`Error::Cancelled`].
    pub fn heatmap(&mut self, metric: HeatMetric, watch: &Watch) -> Result<(Heatmap, u32)> {
        // Checked first so a missing group comes back with the groups that do exist.
        match metric {
            HeatMetric::AttentionFromQuestion => {
                self.select(&Selector::group("question"))?;
            }
            HeatMetric::AttentionFromLast | HeatMetric::KnockoutEffect => {
                self.select(&Selector::group("last"))?;
            }
            HeatMetric::LensAnswer | HeatMetric::LensGain => {}
        }
        let groups = self.groups().clone();
        self.trace(watch)?;
        let (dec, trace) = self.parts()?;
        watch.status(&if metric == HeatMetric::KnockoutEffect {
            format!(
                "Knockout effect: {} layers × {} position bins (one-row knockouts, batched)…",
                dec.num_layers(),
                trace.seq_len.min(EFFECT_BINS)
            )
        } else if metric.is_heavy() {
            format!(
                "Logit lens at {} positions × {} layers (lm_head at every position)…",
                trace.seq_len,
                dec.num_layers()
            )
        } else {
            format!("Attention maps over {} layers…", dec.num_layers())
        });
        let matrix = crate::flow::heatmap::compute(
            metric,
            dec,
            trace,
            &groups,
            watch.cancel,
            &mut |done, total| watch.progress(done, total),
        )?
        .ok_or(Error::Cancelled)?;
        Ok((matrix, trace.top1_id))
    }
}
