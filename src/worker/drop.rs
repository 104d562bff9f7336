//! The drop view's command: the answer probability for every layer from which audio/video positions are
//! removed ([`crate::flow::generate::drop_curve`], one batched run from the trace), and the speed-up that
//! removal buys, measured on one real prefill against the full one — as `avflow drop` measures it — with,
//! optionally, the greedy answer both ways.
//!
//! The curve alone says what dropping costs in accuracy; only a measured prefill says what it saves in
//! time, so both come from one command and are shown together.

use std::time::Instant;

use crate::flow::generate::{drop_curve, generate_until, prefill};
use crate::flow::KnockoutResult;

use super::{nothing_to_run, select_any, Ctx, Failure, Outcome, ThinkerEngine};

/// What to drop, and where to time it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropRequest {
    /// The positions removed: groups (`audio,video`) or seconds of the media (`@1-3`), read as a knockout
    /// source is.
    pub selector: String,
    /// The first layer without them in the timed prefill (the curve covers every layer).
    pub from_layer: usize,
    /// Answer tokens generated greedily with and without dropping; 0: none.
    pub generate: usize,
}

impl DropRequest {
    /// Progress steps: the curve, the two prefills, and the two generations when asked for.
    pub fn steps(&self) -> usize {
        if self.generate > 0 {
            5
        } else {
            3
        }
    }
}

/// A greedy answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub ids: Vec<u32>,
    /// Decoded without special tokens; the ids as text without a tokenizer.
    pub text: String,
    /// Mean seconds per token after the first (the first comes with the prefill).
    pub per_token_s: f64,
}

/// The result of a [`super::Command::Drop`], with the request it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct DropOutcome {
    pub request: DropRequest,
    /// Positions removed, of `positions`.
    pub dropped: usize,
    pub positions: usize,
    pub layers: usize,
    /// `(first dropped layer, score)` for every layer, in layer order: exactly
    /// [`crate::flow::generate::drop_curve`] on the loaded prompt.
    pub curve: Vec<(usize, KnockoutResult)>,
    /// The timed prefill dropping from `request.from_layer`, scored on the same token.
    pub at_layer: KnockoutResult,
    /// The watched token (the baseline top-1): id and decoded text.
    pub token: (u32, String),
    pub prefill_full_s: f64,
    pub prefill_drop_s: f64,
    /// `(full prompt, dropped)`, when `request.generate > 0`.
    pub answers: Option<(Generated, Generated)>,
}

impl DropOutcome {
    /// How many times faster the dropped prefill ran.
    pub fn speedup(&self) -> f64 {
        self.prefill_full_s / self.prefill_drop_s.max(1e-9)
    }
}

impl ThinkerEngine {
    pub(super) fn run_drop(&mut self, req: &DropRequest, ctx: &Ctx) -> Outcome<DropOutcome> {
        self.ensure_trace(ctx)?;
        let (Some(m), Some(groups), Some(trace)) = (&self.model, &self.groups, &self.trace) else {
            return Err(nothing_to_run());
        };
        let decoder = &m.thinker.decoder;
        let layers = decoder.num_layers();
        if req.from_layer >= layers {
            return Err(Failure::new(
                format!(
                    "layer {} is past the last layer of this model ({layers} layers, 0-based)",
                    req.from_layer
                ),
                format!(
                    "choose a first dropped layer from 0 to {}",
                    layers.saturating_sub(1)
                ),
            ));
        }
        let dropped = select_any(groups, self.inputs.as_ref(), &m.thinker.cfg, &req.selector)?;
        if dropped.contains(&(trace.seq_len - 1)) {
            return Err(Failure::new(
                format!("{} includes the last prompt position", req.selector),
                "drop media positions (audio, video, image or seconds of them): the answer is read at the last position",
            ));
        }
        let total = req.steps();
        ctx.drop_progress(0, total);
        ctx.status(format!(
            "Answer probability for every first-dropped layer ({layers} layers in one batched run)…"
        ));
        let curve = drop_curve(decoder, trace, &dropped, None)?;
        ctx.check_cancel()?;
        ctx.drop_progress(1, total);

        // The trace's first residual is the embeddings in the decoder's dtype: what `prefill` starts from.
        let embeds = trace.residuals.first().ok_or_else(nothing_to_run)?;
        let pos = &trace.position_ids;
        ctx.status(format!(
            "Timing the full prefill over {} positions…",
            trace.seq_len
        ));
        let t0 = Instant::now();
        let mut full = prefill(decoder, embeds, pos, None)?;
        let prefill_full_s = t0.elapsed().as_secs_f64();
        ctx.check_cancel()?;
        ctx.drop_progress(2, total);
        ctx.status(format!(
            "Timing the prefill without {} positions from layer {}…",
            dropped.len(),
            req.from_layer
        ));
        let t1 = Instant::now();
        let mut cut = prefill(decoder, embeds, pos, Some((&dropped, req.from_layer)))?;
        let prefill_drop_s = t1.elapsed().as_secs_f64();
        let at_layer = crate::flow::knockout::score_logits(&cut.last_logits, trace, None)?;
        ctx.check_cancel()?;
        ctx.drop_progress(3, total);

        let answers = if req.generate > 0 {
            let tokens = &m.thinker.cfg.tokens;
            let stop: Vec<u32> = tokens.eos.into_iter().chain(tokens.pad).collect();
            let mut out = Vec::with_capacity(2);
            for (k, cache) in [&mut full, &mut cut].into_iter().enumerate() {
                ctx.status(format!(
                    "Generating up to {} tokens {}…",
                    req.generate,
                    if k == 0 {
                        "from the full prompt"
                    } else {
                        "with the positions dropped"
                    }
                ));
                let (ids, times) =
                    generate_until(decoder, cache, req.generate, &stop, ctx.cancel_flag())?;
                ctx.check_cancel()?;
                let per_token_s = if times.is_empty() {
                    0.0
                } else {
                    times.iter().map(|d| d.as_secs_f64()).sum::<f64>() / times.len() as f64
                };
                out.push(Generated {
                    text: self.text_of(&ids),
                    ids,
                    per_token_s,
                });
                ctx.drop_progress(4 + k, total);
            }
            let dropped_answer = out.pop();
            out.pop().zip(dropped_answer)
        } else {
            None
        };
        Ok(DropOutcome {
            request: req.clone(),
            dropped: dropped.len(),
            positions: trace.seq_len,
            layers,
            curve,
            at_layer,
            token: (trace.top1_id, self.decode(trace.top1_id)),
            prefill_full_s,
            prefill_drop_s,
            answers,
        })
    }

    /// Generated ids as text (special tokens left out, as `avflow drop --generate` prints them); the ids
    /// themselves without a tokenizer.
    fn text_of(&self, ids: &[u32]) -> String {
        let ids_text = || {
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            format!("ids {}", list.join(" "))
        };
        match self.model.as_ref().and_then(|m| m.tokenizer.as_ref()) {
            Some(t) => t.decode(ids, true).unwrap_or_else(|_| ids_text()),
            None => ids_text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    use candle_core::{DType, Device};

    use super::*;
    use crate::flow::heatmap::HeatMetric;
    use crate::flow::SweepRecord;
    use crate::worker::{
        Command, Engine, Event, ForwardResult, HeatmapOutcome, KnockoutOutcome, KnockoutRequest,
        ModelSummary, TokenCell, Worker,
    };

    /// An engine that only answers drops: a curve of `layers` points after `step_ms` per step, polling
    /// cancel like the real one does between stages.
    #[derive(Default)]
    struct DropFake {
        step_ms: u64,
        started: Option<mpsc::Sender<()>>,
        /// Drops that finished, in order.
        ran: Arc<Mutex<Vec<DropRequest>>>,
        calls: Arc<AtomicUsize>,
    }

    const LAYERS: usize = 4;

    fn unused<T>() -> Outcome<T> {
        Err(Failure::new("not in this fake", "use the drop command"))
    }

    impl Engine for DropFake {
        fn load_model(&mut self, _: &str, _: DType, _: &Device, _: &Ctx) -> Outcome<ModelSummary> {
            unused()
        }
        fn load_inputs(&mut self, _: &Path, _: &Ctx) -> Outcome<Vec<TokenCell>> {
            unused()
        }
        fn forward(&mut self, _: usize, _: &Ctx) -> Outcome<ForwardResult> {
            unused()
        }
        fn flow_groups(&self) -> Vec<(String, usize)> {
            Vec::new()
        }
        fn knockout(&mut self, _: &KnockoutRequest, _: &Ctx) -> Outcome<KnockoutOutcome> {
            unused()
        }
        fn sweep(
            &mut self,
            _: &[(String, String)],
            _: usize,
            _: &Ctx,
        ) -> Outcome<Vec<SweepRecord>> {
            unused()
        }
        fn inputs_path(&self) -> Option<PathBuf> {
            None
        }
        fn heatmap(&mut self, _: HeatMetric, _: &Ctx) -> Outcome<HeatmapOutcome> {
            unused()
        }
        fn drop_tokens(&mut self, req: &DropRequest, ctx: &Ctx) -> Outcome<DropOutcome> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if req.selector == "image" {
                return Err(Failure::new(
                    "group \"image\" is empty in this prompt",
                    "choose one of the groups this prompt has: audio, video",
                ));
            }
            if let Some(s) = &self.started {
                let _ = s.send(());
            }
            let total = req.steps();
            for done in 0..total {
                ctx.check_cancel()?;
                std::thread::sleep(Duration::from_millis(self.step_ms));
                ctx.drop_progress(done + 1, total);
            }
            if let Ok(mut ran) = self.ran.lock() {
                ran.push(req.clone());
            }
            let score = |l: usize| KnockoutResult {
                prob: 0.1 * l as f32,
                base_prob: 0.5,
                rel_change: crate::flow::knockout::rel_change(0.1 * l as f32, 0.5),
                top1_id: 3,
                token_id: 3,
            };
            let text = |s: &str| Generated {
                ids: vec![1, 2],
                text: s.into(),
                per_token_s: 0.01,
            };
            Ok(DropOutcome {
                request: req.clone(),
                dropped: 10,
                positions: 20,
                layers: LAYERS,
                curve: (0..LAYERS).map(|l| (l, score(l))).collect(),
                at_layer: score(req.from_layer),
                token: (3, "yes".into()),
                prefill_full_s: 0.2,
                prefill_drop_s: 0.1,
                answers: (req.generate > 0).then(|| (text("a dog"), text("a cat"))),
            })
        }
    }

    /// Events until (and without) the next `Idle`.
    fn until_idle(w: &Worker) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = w.recv_timeout(Duration::from_secs(120)) {
            if matches!(e, Event::Idle { .. }) {
                return out;
            }
            out.push(e);
        }
        panic!("no Idle within 120 s; got {out:?}");
    }

    /// Every event until the worker has handled everything sent.
    fn drain(w: &Worker) -> Vec<Event> {
        let mut ev = until_idle(w);
        while w.busy() {
            ev.extend(until_idle(w));
        }
        ev
    }

    fn req(selector: &str, from_layer: usize, generate: usize) -> DropRequest {
        DropRequest {
            selector: selector.into(),
            from_layer,
            generate,
        }
    }

    fn done_requests(ev: &[Event]) -> Vec<DropRequest> {
        ev.iter()
            .filter_map(|e| match e {
                Event::DropDone { outcome } => Some(outcome.request.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_drop_reports_progress_then_its_outcome() {
        let w = Worker::spawn_with(DropFake::default(), || {}).expect("spawn");
        w.send(Command::Drop(req("audio,video", 2, 8)));
        let ev = until_idle(&w);
        let progress: Vec<(usize, usize)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::DropProgress { done, total } => Some((*done, *total)),
                _ => None,
            })
            .collect();
        assert_eq!(progress, vec![(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]);
        match ev.last() {
            Some(Event::DropDone { outcome }) => {
                assert_eq!(outcome.request, req("audio,video", 2, 8));
                assert_eq!(outcome.curve.len(), LAYERS);
                assert_eq!(outcome.speedup(), 2.0);
                let (full, cut) = outcome.answers.as_ref().expect("answers");
                assert_eq!((full.text.as_str(), cut.text.as_str()), ("a dog", "a cat"));
            }
            other => panic!("{other:?}"),
        }
        // Without generation: three steps, no answers.
        w.send(Command::Drop(req("audio", 0, 0)));
        match until_idle(&w).last() {
            Some(Event::DropDone { outcome }) => assert!(outcome.answers.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn queued_drops_coalesce_to_the_newest() {
        let (started_tx, started_rx) = mpsc::channel();
        let fake = DropFake {
            step_ms: 100,
            started: Some(started_tx),
            ..DropFake::default()
        };
        let ran = Arc::clone(&fake.ran);
        let w = Worker::spawn_with(fake, || {}).expect("spawn");
        w.send(Command::Drop(req("audio", 1, 0)));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("first drop started");
        // Clicking through the controls while the first runs: only the last request runs next.
        w.send(Command::Drop(req("video", 1, 0)));
        w.send(Command::Drop(req("audio,video", 1, 0)));
        w.send(Command::Drop(req("audio,video", 2, 0)));
        let ev = drain(&w);
        assert_eq!(
            done_requests(&ev),
            vec![req("audio", 1, 0), req("audio,video", 2, 0)],
            "{ev:?}"
        );
        assert_eq!(ran.lock().expect("lock").len(), 2);
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn cancel_stops_a_drop_and_the_next_one_runs() {
        let (started_tx, started_rx) = mpsc::channel();
        let w = Worker::spawn_with(
            DropFake {
                step_ms: 2_000,
                started: Some(started_tx),
                ..DropFake::default()
            },
            || {},
        )
        .expect("spawn");
        w.send(Command::Drop(req("audio", 1, 8)));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("drop started");
        let t0 = Instant::now();
        w.cancel();
        let mut ev = Vec::new();
        while !ev.iter().any(|e| matches!(e, Event::Cancelled)) {
            ev.extend(until_idle(&w));
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(done_requests(&ev).is_empty(), "{ev:?}");
        w.send(Command::Drop(req("video", 0, 0)));
        assert_eq!(done_requests(&drain(&w)), vec![req("video", 0, 0)]);
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn drop_errors_carry_a_fix_and_an_engine_without_drops_refuses() {
        let w = Worker::spawn_with(DropFake::default(), || {}).expect("spawn");
        w.send(Command::Drop(req("image", 1, 0)));
        match &until_idle(&w)[..] {
            [Event::Error { message, fix }] => {
                assert!(message.contains("\"image\" is empty"), "{message}");
                assert!(fix.as_deref().is_some_and(|f| f.contains("audio")));
            }
            other => panic!("{other:?}"),
        }
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    /// The real engine on the bundled demo: the worker's curve is exactly the library's
    /// [`drop_curve`], the timed prefill scores like the curve's point at its layer, answers come both
    /// ways, and a missing group or a layer past the end are errors with a fix.
    #[test]
    fn real_engine_drop_curve_equals_the_library_on_the_demo() {
        let demo = crate::ui::demo::DemoPaths::locate();
        if let Some(msg) = demo.missing_message() {
            eprintln!("SKIPPED: {msg}");
            return;
        }
        let w = Worker::spawn(|| {}).expect("spawn");
        w.send(Command::LoadModel {
            source: demo.model.display().to_string(),
            dtype: DType::F32,
            device: Device::Cpu,
        });
        w.send(Command::LoadInputs {
            path: demo.inputs.clone(),
        });
        let ev = drain(&w);
        assert!(
            ev.iter().any(|e| matches!(e, Event::InputsLoaded { .. })),
            "{ev:?}"
        );
        let t0 = Instant::now();
        w.send(Command::Drop(req("audio,video", 1, 4)));
        let ev = until_idle(&w);
        eprintln!(
            "drop (trace + curve + 2 prefills + 2×4 tokens): {:.2} s",
            t0.elapsed().as_secs_f32()
        );
        let Some(Event::DropDone { outcome }) = ev.last() else {
            panic!("{ev:?}");
        };

        let session = demo.open_session();
        let dropped = session.select("audio,video").expect("audio,video");
        let lib =
            drop_curve(&session.thinker.decoder, &session.trace, &dropped, None).expect("curve");
        assert_eq!(outcome.curve, lib);
        assert_eq!(outcome.layers, 3);
        assert_eq!(
            (outcome.dropped, outcome.positions),
            (dropped.len(), session.trace.seq_len)
        );
        assert_eq!(outcome.token.0, session.trace.top1_id);
        let at = &outcome.curve[1].1;
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5_f32.max(1e-4 * b.abs());
        assert!(
            close(outcome.at_layer.prob, at.prob),
            "{:?} vs {at:?}",
            outcome.at_layer
        );
        assert_eq!(outcome.at_layer.base_prob, at.base_prob);
        assert!(outcome.prefill_full_s > 0.0 && outcome.prefill_drop_s > 0.0);
        let (full, cut) = outcome.answers.as_ref().expect("answers");
        assert!((1..=4).contains(&full.ids.len()) && (1..=4).contains(&cut.ids.len()));
        assert_eq!(full.ids[0], session.trace.top1_id);
        eprintln!(
            "demo: {} of {} positions dropped; p(answer) {:?}; full {:?} / dropped {:?}",
            outcome.dropped,
            outcome.positions,
            outcome
                .curve
                .iter()
                .map(|(_, r)| r.prob)
                .collect::<Vec<_>>(),
            full.text,
            cut.text
        );

        w.send(Command::Drop(req("image", 1, 0)));
        assert!(
            matches!(until_idle(&w).last(), Some(Event::Error { fix: Some(f), .. }) if f.contains("audio")),
        );
        w.send(Command::Drop(req("audio", 3, 0)));
        assert!(
            matches!(until_idle(&w).last(), Some(Event::Error { fix: Some(f), .. }) if f.contains("from 0 to 2")),
        );
        w.send(Command::Drop(req("last", 1, 0)));
        assert!(
            matches!(until_idle(&w).last(), Some(Event::Error { fix: Some(f), .. }) if f.contains("media")),
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }
}
