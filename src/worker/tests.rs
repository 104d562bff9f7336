//! The protocol with a scripted engine (ordering, cancel by job, coalescing, panics), then the real engine
//! on the demo fixture.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use super::*;
use crate::flow::Align;
use crate::flow::KnockoutResult;
use crate::prompt::{Selector, TokenMap};
use crate::session::{KnockoutBlock, Session};

/// Scripted engine: each request does what the test asks.
#[derive(Default)]
struct Fake {
    inputs: Option<PathBuf>,
    /// Forward, knockout and prepare wait this many milliseconds, polling cancel.
    forward_ms: u64,
    knockout_ms: u64,
    prepare_ms: u64,
    sweep_step_ms: u64,
    heatmap_step_ms: u64,
    panic_on_forward: bool,
    started: Option<mpsc::Sender<()>>,
    /// Knockouts and heatmaps that actually ran, in order.
    ran: Arc<Mutex<Vec<KnockoutSpec>>>,
    heatmaps: Arc<Mutex<Vec<HeatMetric>>>,
}

/// The fake prompt's groups: no image.
const FAKE_GROUPS: [(&str, usize); 6] = [
    ("audio", 4),
    ("image", 0),
    ("last", 1),
    ("question", 3),
    ("system", 5),
    ("video", 6),
];
const FAKE_LAYERS: usize = 3;

fn fake_select(sel: &Selector) -> Outcome<()> {
    let name = sel.to_string();
    match FAKE_GROUPS.iter().find(|(n, _)| *n == name) {
        Some((_, 0)) => Err(Failure::new(
            format!("group {name:?} is empty in this prompt"),
            "choose one of the groups this prompt has: audio, last, question, system, video",
        )),
        Some(_) => Ok(()),
        None => Err(Failure::Error {
            message: format!("unknown group {name:?}"),
            fix: None,
        }),
    }
}

/// A token map with the fake groups (positions numbered in [`FAKE_GROUPS`] order).
fn fake_map() -> TokenMap {
    let mut map = TokenMap::classify(&[], &crate::prompt::SpecialTokens::default());
    let mut next = 0;
    for (name, n) in FAKE_GROUPS {
        map.groups
            .spans
            .insert(name.into(), (next..next + n).collect());
        next += n;
    }
    map.groups.seq_len = next;
    map
}

fn wait(ms: u64, ctx: &Ctx) -> Outcome<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(ms) {
        ctx.check_cancel()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

impl Fake {
    fn started(&self) {
        if let Some(s) = &self.started {
            let _ = s.send(());
        }
    }
}

impl Engine for Fake {
    fn run(&mut self, request: &Request, ctx: &Ctx) -> Outcome<Vec<Reply>> {
        match request {
            Request::LoadModel {
                source,
                dtype,
                device,
                ..
            } => {
                if source == "missing" {
                    return Err(crate::Error::Model {
                        path: "missing".into(),
                        reason: "no such folder".into(),
                        fix: "give a folder".into(),
                    }
                    .into());
                }
                let mut out = vec![Reply::ModelLoaded(ModelSummary {
                    source: source.clone(),
                    dir: source.into(),
                    family: "fake".into(),
                    parameters: 10,
                    layers: 1,
                    hidden: 4,
                    vocab: 8,
                    dtype: dtype.as_str().into(),
                    device: crate::device::device_name(device),
                    has_tokenizer: false,
                    load_seconds: 0.0,
                    positions: None,
                })];
                if let Some(path) = &self.inputs {
                    out.push(Reply::InputsLoaded {
                        path: path.clone(),
                        map: Arc::new(fake_map()),
                    });
                }
                Ok(out)
            }
            Request::LoadInputs(path) => {
                self.inputs = Some(path.clone());
                Ok(vec![Reply::InputsLoaded {
                    path: path.clone(),
                    map: Arc::new(fake_map()),
                }])
            }
            Request::Forward => {
                self.started();
                if self.panic_on_forward {
                    panic!("boom");
                }
                wait(self.forward_ms, ctx)?;
                Ok(vec![Reply::Forward(ForwardResult {
                    top_k: (0..TOP_K as u32)
                        .map(|i| (i, String::new(), 1.0 / TOP_K as f32))
                        .collect(),
                    positions: 1,
                    seconds: 0.0,
                    trace: None,
                })])
            }
            Request::Knockout(spec) => {
                for b in &spec.blocks {
                    fake_select(&b.source)?;
                    fake_select(&b.target)?;
                }
                self.started();
                wait(self.knockout_ms, ctx)?;
                if let Ok(mut ran) = self.ran.lock() {
                    ran.push(spec.clone());
                }
                let main = spec
                    .main()
                    .ok_or_else(|| Failure::new("no block", "add one"))?;
                let prob = 0.5 / (1 + main.end - main.start) as f32;
                Ok(vec![Reply::Knockout(Box::new(
                    crate::session::KnockoutOutcome {
                        spec: spec.clone(),
                        result: KnockoutResult {
                            prob,
                            base_prob: 0.5,
                            rel_change: crate::flow::knockout::rel_change(prob, 0.5),
                            top1_id: 3,
                            token_id: 1,
                        },
                        top1: (3, String::new()),
                        token: (1, String::new()),
                        seconds: 0.0,
                        control: None,
                        answers: Default::default(),
                    },
                ))])
            }
            Request::Sweep(spec) => {
                for (s, t) in &spec.pairs {
                    fake_select(s)?;
                    fake_select(t)?;
                }
                self.started();
                let total = spec.pairs.len() * FAKE_LAYERS;
                let mut out = Vec::new();
                'pairs: for (s, t) in &spec.pairs {
                    for layer in 0..FAKE_LAYERS {
                        if ctx.cancel_flag().load(Ordering::SeqCst) {
                            break 'pairs;
                        }
                        std::thread::sleep(Duration::from_millis(self.sweep_step_ms));
                        let (start, end) = crate::flow::sweep::window(
                            layer,
                            spec.window,
                            FAKE_LAYERS,
                            Align::Center,
                        );
                        out.push(SweepRecord {
                            source: s.to_string(),
                            target: t.to_string(),
                            layer,
                            start,
                            end,
                            prob: 0.25,
                            base_prob: 0.5,
                            rel_change: -50.0,
                            top1_id: 3,
                            token_id: 1,
                        });
                        ctx.progress(out.len(), total);
                    }
                }
                Ok(vec![Reply::Sweep(out)])
            }
            Request::PrepareMedia(req) => {
                self.started();
                wait(self.prepare_ms, ctx)?;
                if req.question.trim().is_empty() {
                    return Err(crate::Error::Prompt(
                        "the question is empty: pass --question \"…\"".into(),
                    )
                    .into());
                }
                if let Some(Item::Video(p)) = req.items.first() {
                    if p.ends_with("corrupt.mp4") {
                        return Err(crate::Error::Inputs {
                            path: p.clone(),
                            reason: "not a media file. Fix: pass a video FFmpeg can read".into(),
                        }
                        .into());
                    }
                }
                ctx.status("Preparing…");
                self.inputs = Some(req.out.clone());
                Ok(vec![
                    Reply::InputsLoaded {
                        path: req.out.clone(),
                        map: Arc::new(fake_map()),
                    },
                    Reply::MediaReady {
                        inputs: req.out.clone(),
                        preview: Arc::new(MediaPreview {
                            items: Vec::new(),
                            seconds_per_chunk: 2.0,
                            spans: Vec::new(),
                            notes: Vec::new(),
                            question: req.question.clone(),
                            prepare_seconds: 0.0,
                        }),
                    },
                ])
            }
            Request::Heatmap(metric) => {
                self.started();
                // One step per layer, each `heatmap_step_ms` long.
                for layer in 0..FAKE_LAYERS {
                    ctx.check_cancel()?;
                    std::thread::sleep(Duration::from_millis(self.heatmap_step_ms));
                    ctx.progress(layer + 1, FAKE_LAYERS);
                }
                if let Ok(mut ran) = self.heatmaps.lock() {
                    ran.push(*metric);
                }
                let positions = 4;
                let values = (0..FAKE_LAYERS * positions).map(|i| i as f32).collect();
                Ok(vec![Reply::Heatmap(HeatmapOutcome {
                    metric: *metric,
                    matrix: Arc::new(Heatmap::new(FAKE_LAYERS, positions, values)?),
                    token: (3, String::new()),
                    seconds: 0.0,
                })])
            }
            Request::Generate(_) => Err(Failure::new(
                "the scheduling engine does not generate",
                "generation is tested on the real engine",
            )),
            Request::Drop(spec) => {
                fake_select(&spec.selector)?;
                self.started();
                let total = spec.steps();
                for step in 1..=total {
                    wait(self.knockout_ms, ctx)?;
                    ctx.progress(step, total);
                }
                let score = KnockoutResult {
                    prob: 0.25,
                    base_prob: 0.5,
                    rel_change: -50.0,
                    top1_id: 3,
                    token_id: 1,
                };
                Ok(vec![Reply::Drop(Arc::new(DropOutcome {
                    spec: spec.clone(),
                    dropped: 4,
                    positions: 19,
                    layers: FAKE_LAYERS,
                    curve: (0..FAKE_LAYERS).map(|l| (l, score.clone())).collect(),
                    at_layer: score,
                    token: (1, String::new()),
                    prefill_full_s: 2.0,
                    prefill_drop_s: 1.0,
                    answers: None,
                }))])
            }
            Request::Heads(rows) => Ok(vec![Reply::Heads {
                rows: rows.clone(),
                per_head: Arc::new(vec![vec![
                    [("audio".to_string(), 0.5)].into_iter().collect();
                    2
                ]]),
            }]),
        }
    }
}

fn sel(s: &str) -> Selector {
    s.parse().expect("selector")
}

fn ko(source: &str, target: &str, start: usize, end: usize) -> Request {
    Request::Knockout(KnockoutSpec::single(sel(source), sel(target), start, end))
}

fn sweep_of(pairs: &[(&str, &str)]) -> Request {
    Request::Sweep(SweepSpec::centred(
        pairs.iter().map(|(s, t)| (sel(s), sel(t))).collect(),
        9,
    ))
}

fn load(source: &str) -> Request {
    Request::LoadModel {
        source: source.into(),
        dtype: DType::F32,
        auto_dtype: false,
        device: Device::Cpu,
        positions: crate::model::Positions::Inference,
    }
}

/// Events until (and without) the next `Idle`.
fn until_idle(w: &Worker) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = w.recv_timeout(Duration::from_secs(10)) {
        if matches!(e, Event::Idle { .. }) {
            return out;
        }
        out.push(e);
    }
    panic!("no Idle within 10 s; got {out:?}");
}

/// Events until every submitted job has been handled.
fn until_done(w: &Worker) -> Vec<Event> {
    let mut ev = until_idle(w);
    while w.busy() {
        ev.extend(until_idle(w));
    }
    ev
}

/// The replies of a list of events, in order.
fn replies(ev: &[Event]) -> Vec<&Reply> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Reply { reply, .. } => Some(reply),
            _ => None,
        })
        .collect()
}

/// How `job` ended.
fn finish_of(ev: &[Event], job: JobId) -> Option<&Finish> {
    ev.iter().find_map(|e| match e {
        Event::Finished { job: j, finish } if *j == job => Some(finish),
        _ => None,
    })
}

/// One job end to end: its events (up to its `Finished`) and how it ended.
fn run(w: &Worker, request: Request) -> (Vec<Reply>, Finish) {
    let job = w.submit(request).expect("worker alive");
    let ev = until_done(w);
    let finish = finish_of(&ev, job).cloned().expect("finished");
    (replies(&ev).into_iter().cloned().collect(), finish)
}

fn failed(f: &Finish) -> (&str, Option<&str>) {
    match f {
        Finish::Failed { message, fix } => (message, fix.as_deref()),
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn split_fix_separates_the_fix() {
    let (m, f) = split_fix("model folder x: no such folder. Fix: give a folder");
    assert_eq!(m, "model folder x: no such folder");
    assert_eq!(f.as_deref(), Some("give a folder"));
    let (m, f) =
        split_fix("cuda:0 is not available (no driver). Fix: build with cuda, or use --device cpu");
    assert_eq!(m, "cuda:0 is not available (no driver)");
    assert_eq!(f.as_deref(), Some("build with cuda, or use --device cpu"));
    assert_eq!(split_fix("plain"), ("plain".to_string(), None));
}

#[test]
fn load_then_inputs_then_forward() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let (r, f) = run(&w, load("m"));
    assert_eq!(f, Finish::Done);
    assert!(matches!(&r[..], [Reply::ModelLoaded(s)] if s.device == "cpu"));
    let (r, _) = run(&w, Request::LoadInputs("in.safetensors".into()));
    assert!(matches!(&r[..], [Reply::InputsLoaded { map, .. }] if map.groups.spans.len() == 6));
    let (r, _) = run(&w, Request::Forward);
    assert!(matches!(&r[..], [Reply::Forward(f)] if f.top_k.len() == TOP_K));
    // A new model re-reads the loaded inputs.
    let (r, _) = run(&w, load("m2"));
    assert!(
        matches!(&r[..], [Reply::ModelLoaded(_), Reply::InputsLoaded { .. }]),
        "{r:?}"
    );
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn every_event_names_its_job_and_every_job_finishes_once() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let a = w.submit(load("m")).expect("a");
    let b = w.submit(sweep_of(&[("audio", "last")])).expect("b");
    assert_ne!(a, b);
    let ev = until_done(&w);
    for job in [a, b] {
        let n = ev
            .iter()
            .filter(|e| matches!(e, Event::Finished { job: j, .. } if *j == job))
            .count();
        assert_eq!(n, 1, "{job}: {ev:?}");
    }
    // Progress and replies of the sweep name the sweep; the last event of a job is its Finished.
    assert!(ev.iter().all(|e| match e {
        Event::Progress { job, .. } => *job == b,
        Event::Reply { job, reply } => (*job == b) == matches!(reply, Reply::Sweep(_)),
        _ => true,
    }));
    let last_of_b = ev.iter().rposition(
        |e| matches!(e, Event::Progress { job, .. } | Event::Reply { job, .. } if *job == b),
    );
    let finished_b = ev
        .iter()
        .position(|e| matches!(e, Event::Finished { job, .. } if *job == b));
    assert!(last_of_b < finished_b, "{ev:?}");
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn errors_carry_their_fix() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let (r, f) = run(&w, load("missing"));
    assert!(r.is_empty());
    let (message, fix) = failed(&f);
    assert_eq!(message, "model folder missing: no such folder");
    assert_eq!(fix, Some("give a folder"));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_panic_becomes_an_error_and_the_worker_keeps_serving() {
    let fake = Fake {
        panic_on_forward: true,
        ..Fake::default()
    };
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let (_, f) = run(&w, Request::Forward);
    let (message, fix) = failed(&f);
    assert!(message.contains("boom") && fix.is_some(), "{message}");
    let (r, _) = run(&w, load("m"));
    assert!(matches!(&r[..], [Reply::ModelLoaded(_)]));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn cancel_all_stops_the_running_job_and_skips_queued_ones() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        forward_ms: 20_000,
        started: Some(started_tx),
        ..Fake::default()
    };
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let forward = w.submit(Request::Forward).expect("forward");
    let queued = w.submit(load("queued-before-cancel")).expect("queued");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("forward started");
    let t0 = Instant::now();
    w.cancel_all();
    let after = w.submit(load("after-cancel")).expect("after");
    let ev = until_done(&w);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(finish_of(&ev, forward), Some(&Finish::Cancelled));
    assert_eq!(finish_of(&ev, queued), Some(&Finish::Cancelled));
    assert_eq!(finish_of(&ev, after), Some(&Finish::Done));
    let loaded: Vec<&str> = replies(&ev)
        .iter()
        .filter_map(|r| match r {
            Reply::ModelLoaded(s) => Some(s.source.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(loaded, vec!["after-cancel"], "{ev:?}");
    assert!(!replies(&ev).iter().any(|r| matches!(r, Reply::Forward(_))));
    assert!(w.shutdown(Duration::from_secs(5)));
}

/// Cancelling one job leaves the others alone: a queued job is skipped, the running one runs on.
#[test]
fn cancel_by_job_touches_only_that_job() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        forward_ms: 300,
        started: Some(started_tx),
        ..Fake::default()
    };
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let forward = w.submit(Request::Forward).expect("forward");
    let sweep = w.submit(sweep_of(&[("audio", "last")])).expect("sweep");
    let model = w.submit(load("m")).expect("load");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("forward started");
    w.cancel(sweep);
    let ev = until_done(&w);
    assert_eq!(finish_of(&ev, forward), Some(&Finish::Done));
    assert_eq!(finish_of(&ev, sweep), Some(&Finish::Cancelled));
    assert_eq!(finish_of(&ev, model), Some(&Finish::Done));
    assert!(!replies(&ev).iter().any(|r| matches!(r, Reply::Sweep(_))));
    // Cancelling the running job stops it.
    let long = w.submit(Request::Forward).expect("long");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("started");
    w.cancel(long);
    let ev = until_done(&w);
    assert_eq!(finish_of(&ev, long), Some(&Finish::Cancelled));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn busy_until_every_submitted_job_is_handled() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    assert!(!w.busy());
    w.submit(load("m"));
    assert!(w.busy());
    until_idle(&w);
    assert!(!w.busy());
    // A job submitted while an older Idle is still queued keeps the worker busy.
    w.submit(Request::LoadInputs("a".into()));
    w.submit(Request::Forward);
    let first = until_idle(&w);
    if !replies(&first)
        .iter()
        .any(|r| matches!(r, Reply::Forward(_)))
    {
        assert!(w.busy());
        until_idle(&w);
    }
    assert!(!w.busy());
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn notify_is_called_per_event() {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let w = Worker::spawn_with(Fake::default(), move || {
        c.fetch_add(1, Ordering::SeqCst);
    })
    .expect("spawn");
    w.submit(load("m"));
    until_idle(&w);
    // Reply + Finished + Idle.
    assert!(count.load(Ordering::SeqCst) >= 3);
    assert!(w.shutdown(Duration::from_secs(5)));
}

fn ask(path: &str, question: &str, out: &str) -> Request {
    Request::PrepareMedia(MediaRequest {
        items: vec![Item::Video(path.into())],
        question: question.into(),
        options: PrepareOptions::default(),
        out: out.into(),
    })
}

#[test]
fn prepared_media_is_read_as_inputs_then_shown() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let job = w
        .submit(ask("clip.mp4", "What happens?", "/cache/p.safetensors"))
        .expect("job");
    let ev = until_done(&w);
    assert!(
        matches!(&ev[0], Event::Status { job: j, text } if *j == job && text == "Preparing…"),
        "{ev:?}"
    );
    match &replies(&ev)[..] {
        [Reply::InputsLoaded { path, map }, Reply::MediaReady { inputs, preview }] => {
            assert_eq!(path, Path::new("/cache/p.safetensors"));
            assert_eq!(inputs, path);
            assert!(!map.groups.spans.is_empty());
            assert_eq!(preview.question, "What happens?");
        }
        other => panic!("{other:?}"),
    }
    // The prepared file is what a new model re-reads.
    let (r, _) = run(&w, load("m2"));
    assert!(matches!(
        &r[..],
        [Reply::ModelLoaded(_), Reply::InputsLoaded { path, .. }] if path == Path::new("/cache/p.safetensors")
    ));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn media_errors_carry_their_fix_and_the_worker_keeps_serving() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let (_, f) = run(&w, ask("corrupt.mp4", "What happens?", "p.safetensors"));
    let (message, fix) = failed(&f);
    assert!(
        message.contains("corrupt.mp4") && message.contains("not a media file"),
        "{message}"
    );
    assert_eq!(fix, Some("pass a video FFmpeg can read"));
    // An error without its own fix gets the worker's.
    let (_, f) = run(&w, ask("clip.mp4", "  ", "p.safetensors"));
    let (message, fix) = failed(&f);
    assert!(message.contains("question is empty"), "{message}");
    assert!(fix.is_some_and(|f| f.contains("question")), "{fix:?}");
    let (r, _) = run(&w, Request::Forward);
    assert!(matches!(&r[..], [Reply::Forward(_)]));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn cancel_stops_a_prepare_before_its_inputs_load() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        prepare_ms: 20_000,
        started: Some(started_tx),
        ..Fake::default()
    };
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let job = w
        .submit(ask("clip.mp4", "What happens?", "p.safetensors"))
        .expect("job");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("prepare started");
    let t0 = Instant::now();
    w.cancel(job);
    let ev = until_done(&w);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(finish_of(&ev, job), Some(&Finish::Cancelled));
    assert!(replies(&ev).is_empty(), "{ev:?}");
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn knockout_replies_with_its_request_and_result() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let (r, _) = run(&w, ko("audio", "last", 0, 3));
    match &r[..] {
        [Reply::Knockout(o)] => {
            let main = o.spec.main().expect("main block");
            assert_eq!(
                (main.source.to_string(), main.target.to_string()),
                ("audio".into(), "last".into())
            );
            assert_eq!((main.start, main.end), (0, 3));
            assert_eq!(o.result.base_prob, 0.5);
            assert_eq!(o.result.prob, 0.125);
            assert_eq!(o.result.rel_change, -75.0);
            assert_eq!(o.top1.0, 3);
        }
        other => panic!("{other:?}"),
    }
    assert!(w.shutdown(Duration::from_secs(5)));
}

/// The toggle grid's blocks travel with the request, come back with the result, and each is checked.
#[test]
fn extra_blocks_run_with_the_knockout() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let video = KnockoutBlock {
        source: sel("video"),
        target: sel("last"),
        start: 1,
        end: 2,
        heads: None,
    };
    let with = |extra: KnockoutBlock| {
        let mut spec = KnockoutSpec::single(sel("audio"), sel("last"), 0, 1);
        spec.blocks.push(extra);
        Request::Knockout(spec)
    };
    let (r, _) = run(&w, with(video.clone()));
    match &r[..] {
        [Reply::Knockout(o)] => assert_eq!(o.spec.blocks[1], video),
        other => panic!("{other:?}"),
    }
    // An empty group in a toggle block is the same error as in the main block.
    let image = KnockoutBlock {
        source: sel("image"),
        ..video
    };
    let (_, f) = run(&w, with(image));
    assert!(failed(&f).0.contains("\"image\" is empty"));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn queued_knockouts_coalesce_to_the_newest() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        knockout_ms: 300,
        started: Some(started_tx),
        ..Fake::default()
    };
    let ran = Arc::clone(&fake.ran);
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    w.submit(ko("audio", "last", 0, 1));
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first knockout started");
    // A drag: three more requests while the first runs; a forward in between still runs.
    let skipped = w.submit(ko("audio", "last", 0, 2)).expect("job");
    w.submit(Request::Forward);
    w.submit(ko("audio", "last", 0, 3));
    w.submit(ko("video", "last", 1, 3));
    let ev = until_done(&w);
    let done: Vec<(String, usize, usize)> = replies(&ev)
        .iter()
        .filter_map(|r| match r {
            Reply::Knockout(o) => o
                .spec
                .main()
                .map(|b| (b.source.to_string(), b.start, b.end)),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        vec![("audio".to_string(), 0, 1), ("video".to_string(), 1, 3)],
        "{ev:?}"
    );
    assert_eq!(finish_of(&ev, skipped), Some(&Finish::Superseded));
    assert!(replies(&ev).iter().any(|r| matches!(r, Reply::Forward(_))));
    assert_eq!(ran.lock().expect("lock").len(), 2);
    assert!(!w.busy());
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn an_empty_group_is_an_error_with_a_fix() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let (_, f) = run(&w, ko("image", "last", 0, 3));
    let (message, fix) = failed(&f);
    assert!(message.contains("\"image\" is empty"), "{message}");
    assert!(fix.is_some_and(|f| f.contains("audio")), "{fix:?}");
    // An error without its own fix gets the worker's.
    let (_, f) = run(&w, sweep_of(&[("nope", "last")]));
    assert!(failed(&f).1.is_some_and(|f| f.contains("pairs")));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_sweep_reports_progress_then_records() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let job = w
        .submit(sweep_of(&[("audio", "last"), ("video", "last")]))
        .expect("job");
    let ev = until_done(&w);
    let progress: Vec<(usize, usize)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                job: j,
                done,
                total,
            } if *j == job => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.last(), Some(&(6, 6)), "{ev:?}");
    assert!(
        matches!(replies(&ev)[..], [Reply::Sweep(ref records)] if records.len() == 6),
        "{ev:?}"
    );
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn cancel_stops_a_sweep_and_keeps_what_was_done() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        sweep_step_ms: 200,
        started: Some(started_tx),
        ..Fake::default()
    };
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let job = w
        .submit(sweep_of(&[
            ("audio", "last"),
            ("video", "last"),
            ("question", "last"),
        ]))
        .expect("job");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("sweep started");
    std::thread::sleep(Duration::from_millis(250));
    let t0 = Instant::now();
    w.cancel(job);
    let ev = until_done(&w);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let kept = replies(&ev).iter().find_map(|r| match r {
        Reply::Sweep(records) => Some(records.len()),
        _ => None,
    });
    assert!(kept.is_some_and(|n| n < 9), "{ev:?}");
    // The worker serves the next request.
    let (r, _) = run(&w, ko("audio", "last", 0, 1));
    assert!(matches!(&r[..], [Reply::Knockout(_)]));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_heatmap_reports_progress_then_its_matrix() {
    let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
    let job = w
        .submit(Request::Heatmap(HeatMetric::LensAnswer))
        .expect("job");
    let ev = until_done(&w);
    let progress: Vec<(usize, usize)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                job: j,
                done,
                total,
            } if *j == job => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![(1, 3), (2, 3), (3, 3)], "{ev:?}");
    match &replies(&ev)[..] {
        [Reply::Heatmap(h)] => {
            assert_eq!((h.metric, h.token.0), (HeatMetric::LensAnswer, 3));
            assert_eq!((h.matrix.layers, h.matrix.positions), (FAKE_LAYERS, 4));
            assert_eq!(h.matrix.get(1, 2), Some(6.0));
        }
        other => panic!("{other:?}"),
    }
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn queued_heatmaps_coalesce_to_the_newest_and_cancel_stops_one() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        heatmap_step_ms: 100,
        started: Some(started_tx),
        ..Fake::default()
    };
    let ran = Arc::clone(&fake.heatmaps);
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let hm = Request::Heatmap;
    w.submit(hm(HeatMetric::AttentionFromLast));
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first heatmap started");
    // Flipping through the combo while the first one runs: only the last choice runs next.
    w.submit(hm(HeatMetric::AttentionFromQuestion));
    w.submit(hm(HeatMetric::LensGain));
    w.submit(hm(HeatMetric::LensAnswer));
    let ev = until_done(&w);
    let done: Vec<HeatMetric> = replies(&ev)
        .iter()
        .filter_map(|r| match r {
            Reply::Heatmap(h) => Some(h.metric),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        vec![HeatMetric::AttentionFromLast, HeatMetric::LensAnswer],
        "{ev:?}"
    );
    assert_eq!(ran.lock().expect("lock").len(), 2);

    // A long one stops at the cancel, without a result; the next request runs.
    let job = w.submit(hm(HeatMetric::LensGain)).expect("job");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("heatmap started");
    w.cancel_all();
    let ev = until_done(&w);
    assert_eq!(finish_of(&ev, job), Some(&Finish::Cancelled));
    assert!(replies(&ev).is_empty(), "{ev:?}");
    let (r, _) = run(&w, hm(HeatMetric::AttentionFromLast));
    assert!(matches!(&r[..], [Reply::Heatmap(_)]));
    assert!(w.shutdown(Duration::from_secs(5)));
}

fn drop_of(selector: &str, from_layer: usize) -> Request {
    Request::Drop(DropSpec {
        selector: sel(selector),
        from_layer,
        generate: 0,
        curve: true,
        token: None,
    })
}

#[test]
fn queued_drops_coalesce_to_the_newest_and_report_progress() {
    let (started_tx, started_rx) = mpsc::channel();
    let fake = Fake {
        knockout_ms: 100,
        started: Some(started_tx),
        ..Fake::default()
    };
    let w = Worker::spawn_with(fake, || {}).expect("spawn");
    let first = w.submit(drop_of("audio", 0)).expect("job");
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first drop started");
    w.submit(drop_of("audio", 1));
    w.submit(drop_of("video", 2));
    let ev = until_done(&w);
    let done: Vec<(String, usize)> = replies(&ev)
        .iter()
        .filter_map(|r| match r {
            Reply::Drop(d) => Some((d.spec.selector.to_string(), d.spec.from_layer)),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        vec![("audio".into(), 0), ("video".into(), 2)],
        "{ev:?}"
    );
    let progress: Vec<(usize, usize)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Progress { job, done, total } if *job == first => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![(1, 3), (2, 3), (3, 3)]);
    // An empty group is an error with the groups there are.
    let (_, f) = run(&w, drop_of("image", 0));
    let (message, fix) = failed(&f);
    assert!(message.contains("\"image\" is empty") && fix.is_some_and(|f| f.contains("audio")));
    assert!(w.shutdown(Duration::from_secs(5)));
}

// ---------------------------------------------------------------------------------------------------
// The real engine on the demo fixture (committed; a missing one fails with the command that makes it).

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A worker over the real engine with the demo model and its audio-visual prompt loaded.
fn demo_worker() -> Worker {
    let model = fixtures().join("omni-tiny-a");
    assert!(
        model.join("config.json").is_file(),
        "the demo fixture is missing: python3 tools/make_fixtures.py makes it"
    );
    let w = Worker::spawn(|| {}).expect("spawn");
    let (_, f) = run(&w, load(&model.display().to_string()));
    assert_eq!(f, Finish::Done);
    w
}

fn demo_inputs() -> PathBuf {
    fixtures().join("goldens/av_a/inputs.safetensors")
}

/// The library's session on the same model and prompt: the reference for every number the worker sends.
fn demo_session() -> Session {
    Session::open(
        &fixtures().join("omni-tiny-a").display().to_string(),
        &demo_inputs(),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .expect("open the demo")
}

/// The real engine on the demo: a knockout equal to the library's, the errors a user can cause, a sweep.
#[test]
fn real_engine_knocks_out_and_sweeps_on_the_demo() {
    let w = demo_worker();
    let (r, _) = run(&w, Request::LoadInputs(demo_inputs()));
    let map = match &r[..] {
        [Reply::InputsLoaded { map, .. }] => Arc::clone(map),
        other => panic!("{other:?}"),
    };
    let sizes = map.group_sizes();
    assert!(
        sizes.iter().any(|(n, c)| n == "audio" && *c > 0),
        "{sizes:?}"
    );
    assert!(sizes.contains(&("image".to_string(), 0)), "{sizes:?}");
    // Every position's text comes with the map (the demo model has a tokenizer).
    assert!(map.tokens.iter().any(|t| !t.text.is_empty()));

    let (r, _) = run(&w, ko("audio", "last", 0, 3));
    let mut lib = demo_session();
    let want = lib
        .knockout(
            &KnockoutSpec::single(sel("audio"), sel("last"), 0, 3),
            &Watch::none(),
        )
        .expect("library knockout");
    match &r[..] {
        [Reply::Knockout(o)] => {
            assert_eq!(o.result, want.result);
            assert!(o.result.prob != o.result.base_prob);
        }
        other => panic!("{other:?}"),
    }
    // The demo has no image: the error says which groups exist.
    let (_, f) = run(&w, ko("image", "last", 0, 3));
    let (message, fix) = failed(&f);
    assert!(message.contains("empty"), "{message}");
    assert!(
        fix.is_some_and(|f| f.contains("audio") && !f.contains("image")),
        "{fix:?}"
    );
    let (_, f) = run(&w, ko("audio", "last", 2, 9));
    assert!(failed(&f).1.is_some_and(|f| f.contains("0 ≤ A < B ≤ 3")));
    let job = w
        .submit(sweep_of(&[("audio", "last"), ("video", "question")]))
        .expect("job");
    let ev = until_done(&w);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Progress { job: j, done: 6, total: 6 } if *j == job)),
        "{ev:?}"
    );
    assert!(
        matches!(replies(&ev)[..], [Reply::Sweep(ref records)] if records.len() == 6),
        "{ev:?}"
    );
    assert!(w.shutdown(Duration::from_secs(5)));
}

/// Every metric through the worker equals the library's matrix, and media positions carry their times.
#[test]
fn real_engine_computes_heatmaps_on_the_demo() {
    let w = demo_worker();
    let (r, _) = run(&w, Request::LoadInputs(demo_inputs()));
    let map = match &r[..] {
        [Reply::InputsLoaded { map, .. }] => Arc::clone(map),
        other => panic!("{other:?}"),
    };
    assert!(map
        .tokens
        .iter()
        .filter(|t| t.group == "audio")
        .all(|t| t.time.is_some()));
    assert!(map
        .tokens
        .iter()
        .filter(|t| t.group == "question")
        .all(|t| t.time.is_none()));
    let mut lib = demo_session();
    for metric in HeatMetric::ALL {
        let (r, _) = run(&w, Request::Heatmap(metric));
        // The knockout-effect map streams its coarser stages first: the last reply is the map.
        let Some(Reply::Heatmap(h)) = r.last() else {
            panic!("{metric:?}: {r:?}");
        };
        let (want, token) = lib
            .heatmap(
                metric,
                &Watch {
                    cancel: &AtomicBool::new(false),
                    status: &|_| {},
                    progress: &|_, _| {},
                },
            )
            .expect("library");
        assert_eq!(h.metric, metric);
        assert_eq!(h.token.0, token);
        assert_eq!((h.matrix.layers, h.matrix.positions), (3, map.seq_len()));
        assert_eq!(h.matrix.as_ref(), &want, "{metric:?}");
    }
    assert!(w.shutdown(Duration::from_secs(5)));
}

/// The real engine prepares a clip with its sound on the tiny model, reads it as inputs (both
/// modalities present) and knocks out a time range of it.
#[test]
fn real_engine_prepares_a_clip_and_knocks_out_seconds() {
    let root = fixtures();
    let clip = root.join("media/video/basic.mkv");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cache/p.safetensors");
    let w = demo_worker();
    let t0 = Instant::now();
    let job = w
        .submit(Request::PrepareMedia(MediaRequest {
            items: vec![Item::Video(clip.clone())],
            question: "What is happening in this clip?".into(),
            options: PrepareOptions::default(),
            out: out.clone(),
        }))
        .expect("job");
    let ev = until_done(&w);
    eprintln!("prepare basic.mkv: {:.2} s", t0.elapsed().as_secs_f32());
    assert_eq!(finish_of(&ev, job), Some(&Finish::Done), "{ev:?}");
    let map = replies(&ev)
        .iter()
        .find_map(|r| match r {
            Reply::InputsLoaded { path, map } if *path == out => Some(Arc::clone(map)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no inputs loaded: {ev:?}"));
    let size = |name: &str| map.groups.spans.get(name).map_or(0, Vec::len);
    // basic.mkv: 8 frames of 280×392 (4×20×28 patches) → 560 video tokens; 4 s of sound → 100.
    assert_eq!((size("video"), size("audio")), (560, 100));
    assert!(size("question") > 0 && size("last") == 1);
    assert!(out.is_file());
    let preview = replies(&ev)
        .iter()
        .find_map(|r| match r {
            Reply::MediaReady { preview, .. } => Some(Arc::clone(preview)),
            _ => None,
        })
        .expect("media ready");
    eprintln!("prepare + write: {:.2} s", preview.prepare_seconds);
    let item = &preview.items[0];
    assert_eq!((item.n_frames, item.frames.len()), (8, 8));
    assert_eq!(item.frame_size, Some((280, 392)));
    assert!((item.duration_s - 4.0).abs() < 0.05, "{}", item.duration_s);
    assert_eq!(item.mel.as_ref().map(|m| m.columns), Some(400));
    assert_eq!(preview.spans.len(), 660);

    // Seconds 0–2 (both modalities) → last, then seconds with no media: an error with the way out.
    let (r, _) = run(&w, ko("@0-2", "last", 0, 3));
    assert!(
        matches!(&r[..], [Reply::Knockout(o)] if o.spec.blocks[0].source.to_string() == "@0-2" && o.result.prob != o.result.base_prob),
        "{r:?}"
    );
    let (_, f) = run(&w, ko("@9-10", "last", 0, 3));
    let (message, fix) = failed(&f);
    assert!(
        message.contains("@9-10") && fix.is_some_and(|f| f.contains("timeline")),
        "{message} {fix:?}"
    );
    // A file that is not media: the library's message, and the worker still serves.
    let (_, f) = run(
        &w,
        Request::PrepareMedia(MediaRequest {
            items: vec![Item::Video(root.join("media/video/notmedia.mp4"))],
            question: "What?".into(),
            options: PrepareOptions::default(),
            out: dir.path().join("cache/q.safetensors"),
        }),
    );
    assert!(failed(&f).0.contains("notmedia.mp4"));
    let (r, _) = run(&w, Request::Forward);
    assert!(matches!(&r[..], [Reply::Forward(_)]));
    assert!(w.shutdown(Duration::from_secs(5)));
}

#[test]
fn real_engine_reports_missing_model_with_a_fix() {
    let w = Worker::spawn(|| {}).expect("spawn");
    let (_, f) = run(&w, load("/definitely/not/here"));
    assert!(failed(&f).1.is_some());
    let (_, f) = run(&w, Request::Forward);
    assert_eq!(failed(&f).0, "nothing to run");
    let (_, f) = run(&w, ko("audio", "last", 0, 1));
    let (message, fix) = failed(&f);
    assert!(message == "nothing to run" && fix.is_some());
    assert!(w.shutdown(Duration::from_secs(5)));
}

/// The drop request through the worker equals the library's drop on the same prompt (curve and the timed
/// prefill's score); cancel stops it.
#[test]
fn real_engine_drops_as_the_library_does() {
    let w = demo_worker();
    run(&w, Request::LoadInputs(demo_inputs()));
    let spec = DropSpec {
        selector: sel("audio,video"),
        from_layer: 1,
        generate: 2,
        curve: true,
        token: None,
    };
    let job = w.submit(Request::Drop(spec.clone())).expect("job");
    let ev = until_done(&w);
    let progress: Vec<(usize, usize)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                job: j,
                done,
                total,
            } if *j == job => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.last(), Some(&(5, 5)), "{ev:?}");
    let got = match &replies(&ev)[..] {
        [Reply::Drop(d)] => Arc::clone(d),
        other => panic!("{other:?}"),
    };
    // The flow engine's own curve and prefill on the same trace.
    let mut lib = demo_session();
    let positions = lib.select(&spec.selector).expect("positions");
    lib.trace(&Watch::none()).expect("trace");
    let trace = &lib.traced().expect("traced").trace;
    let dec = lib.decoder();
    let curve = crate::flow::generate::drop_curve(dec, trace, &positions, None).expect("curve");
    assert_eq!(got.curve, curve);
    assert_eq!((got.layers, got.dropped), (3, positions.len()));
    assert_eq!(got.token.0, trace.top1_id);
    let cut = crate::flow::generate::prefill(
        dec,
        &trace.residuals.layer(0).unwrap(),
        &trace.position_ids,
        Some((&positions, 1)),
    )
    .expect("prefill");
    let at = crate::flow::knockout::score_logits(&cut.last_logits, trace, None).expect("score");
    assert_eq!(got.at_layer, at);
    assert!(got.prefill_full_s > 0.0 && got.prefill_drop_s > 0.0);
    let (full, dropped) = got.answers.as_ref().expect("answers");
    assert!((1..=2).contains(&full.ids.len()) && (1..=2).contains(&dropped.ids.len()));
    assert_eq!(full.ids[0], trace.top1_id);
    // The last position cannot be dropped; a layer past the model is refused with the range.
    let (_, f) = run(
        &w,
        Request::Drop(DropSpec {
            selector: sel("last"),
            ..spec.clone()
        }),
    );
    assert!(failed(&f).0.contains("last prompt position"));
    let (_, f) = run(
        &w,
        Request::Drop(DropSpec {
            from_layer: 7,
            ..spec
        }),
    );
    assert!(failed(&f).1.is_some_and(|f| f.contains("from 0 to 2")));
    assert!(w.shutdown(Duration::from_secs(5)));
}

/// The knockout-effect map arrives coarse to fine: one reply per stage (groups, runs, positions), each
/// with fewer distinct columns than the next, the last equal to the library's map; the generation streams
/// token by token and ends with the library's answer.
#[test]
fn real_engine_streams_the_effect_map_and_the_answer() {
    let w = demo_worker();
    let (r, f) = run(&w, Request::LoadInputs(demo_inputs()));
    assert_eq!(f, Finish::Done, "{r:?}");
    let (r, f) = run(&w, Request::Heatmap(HeatMetric::KnockoutEffect));
    assert_eq!(f, Finish::Done);
    let maps: Vec<&Heatmap> = r
        .iter()
        .filter_map(|x| match x {
            Reply::Heatmap(h) => Some(&*h.matrix),
            _ => None,
        })
        .collect();
    // The two coarser stages as they finish, then the map itself.
    assert_eq!(maps.len(), 3, "{}", maps.len());
    let distinct = |m: &Heatmap| {
        let mut v: Vec<u32> = m.row(0).iter().map(|x| x.to_bits()).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    assert!(distinct(maps[0]) < distinct(maps[1]), "groups then runs");
    assert!(distinct(maps[1]) < distinct(maps[2]), "runs then positions");
    let mut lib = demo_session();
    let (want, _) = lib
        .heatmap(HeatMetric::KnockoutEffect, &Watch::none())
        .expect("library map");
    assert_eq!(*maps[2], want);

    let spec = crate::worker::GenerateSpec {
        knockout: Some(KnockoutSpec::single(sel("audio"), sel("last"), 0, 3)),
        max_new: 5,
    };
    let (r, f) = run(&w, Request::Generate(spec.clone()));
    assert_eq!(f, Finish::Done);
    let steps: Vec<&crate::worker::Generation> = r
        .iter()
        .filter_map(|x| match x {
            Reply::Generated(g) => Some(g),
            _ => None,
        })
        .collect();
    let last = steps.last().expect("replies");
    assert!(last.done && steps[..steps.len() - 1].iter().all(|g| !g.done));
    assert_eq!(
        steps.len(),
        last.ids.len() + 1,
        "one reply per token, then the answer"
    );
    let want = lib
        .generate_with(spec.knockout.as_ref(), 5, &Watch::none(), &mut |_| {})
        .expect("library answer");
    assert_eq!(last.ids, want.generated.ids);
}

/// A sweep asked with a typed answer plots that answer: each window's record carries its teacher-forced
/// probability with and without the knockout, as the library's sweep scores it.
#[test]
fn real_engine_sweeps_follow_a_typed_answer() {
    let w = demo_worker();
    let (_, f) = run(&w, Request::LoadInputs(demo_inputs()));
    assert_eq!(f, Finish::Done);
    let mut spec = crate::session::SweepSpec::centred(vec![(sel("audio"), sel("last"))], 2);
    spec.answers.answer = Some(" a tone".into());
    let (r, f) = run(&w, Request::Sweep(spec.clone()));
    assert_eq!(f, Finish::Done);
    let [Reply::Sweep(records)] = &r[..] else {
        panic!("{r:?}");
    };
    let mut lib = demo_session();
    let outcome = lib.sweep(&spec, &Watch::none()).expect("library sweep");
    assert_eq!(records.len(), 3);
    for (rec, a) in records.iter().zip(&outcome.answers) {
        let a = a.answer.as_ref().expect("scored");
        assert_eq!(rec.prob, a.logprob.exp());
        assert_eq!(rec.base_prob, a.base_logprob.exp());
        assert_eq!(rec.token_id, a.ids[0]);
    }
    assert!(records.iter().any(|r| r.rel_change.abs() > 1e-3));
}
