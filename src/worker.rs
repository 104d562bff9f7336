//! The background worker: one thread owns the model, so the UI thread never blocks on loading or on a
//! forward pass.
//!
//! The UI sends [`Command`]s and drains [`Event`]s; `notify` (the UI's repaint request) is called after
//! every event. Each command runs inside `catch_unwind`: a panic in model code becomes an
//! [`Event::Error`] and the worker keeps serving. Cancelling is cooperative — the running command stops
//! at its next checkpoint (between resolve / load / encode / decode stages), and commands queued before
//! the cancel are skipped.
//!
//! The model side is behind the [`Engine`] trait so the protocol (ordering, cancel, panic recovery) is
//! tested with a fake engine, without weights.

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, DeviceLocation};
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::flow::heatmap::{HeatMetric, Heatmap};
use crate::flow::{Groups, Knockout, KnockoutSet, SweepRecord, Trace};
use crate::media::prepare::{Item, PrepareOptions};
use crate::media::preview::MediaPreview;
use crate::model::{self, ModelSource, OmniInputs, OmniThinker};
use crate::ui::tokens::{token_groups, Group};

mod drop;
pub use drop::{DropOutcome, DropRequest, Generated};

/// Requests from the UI.
#[derive(Debug, Clone)]
pub enum Command {
    /// Resolve (folder or hub id) and load a Thinker; replaces the loaded one. Loaded inputs are re-read
    /// for the new model (device and special tokens may differ).
    LoadModel {
        source: String,
        dtype: DType,
        device: Device,
    },
    /// Read a prepared inputs file (safetensors with `input_ids`, media tensors, grids).
    LoadInputs { path: PathBuf },
    /// Next-token distribution after the prompt.
    RunForward,
    /// Attention knockout: the `target` group's queries lose the `source` group's keys in decoder layers
    /// `start..end` (half-open). Group names as in [`Groups`] (`system`, `video`, `image`, `audio`,
    /// `question`, `last`) or selectors (`@1-3`, `pos:4-9`). `extra` blocks apply together with this one
    /// ([`crate::flow::KnockoutSet`]: the app's toggle grid). When several are queued only the newest runs
    /// (the user is dragging a control).
    RunKnockout {
        source: String,
        target: String,
        start: usize,
        end: usize,
        extra: Vec<KnockoutBlock>,
    },
    /// Every centred window of `window` layers for every `(source, target)` pair; stopped by
    /// [`Command::Cancel`] between pairs, keeping what was done.
    RunSweep {
        pairs: Vec<(String, String)>,
        window: usize,
    },
    /// A layer × position matrix of `metric` ([`crate::flow::heatmap`]). When several are queued only the
    /// newest runs; the lens metrics report progress and stop at [`Command::Cancel`].
    Heatmap { metric: HeatMetric },
    /// Media + a question → processor inputs ([`crate::media::prepare::prepare`] with the loaded model's
    /// folder and config), written to the request's `out` file, then read exactly as
    /// [`Command::LoadInputs`] reads a file; reports [`Event::InputsLoaded`] then [`Event::MediaReady`].
    /// Cancel takes effect between preparing, writing, reading and building the timeline.
    PrepareMedia(MediaRequest),
    /// The drop view: p(answer) for every layer from which the request's positions are removed (one
    /// batched run), one prefill timed with and without dropping them, and optionally the answer both
    /// ways. When several are queued only the newest runs; cancel stops it between stages and tokens.
    Drop(DropRequest),
    /// Stop the running command at its next checkpoint and skip commands queued before this one.
    Cancel,
    /// Stop the thread.
    Shutdown,
}

/// Reports to the UI.
#[derive(Debug, Clone)]
pub enum Event {
    /// Progress of the running command, one line.
    Status(String),
    ModelLoaded {
        summary: ModelSummary,
    },
    InputsLoaded {
        path: PathBuf,
        tokens: Vec<TokenCell>,
        /// The flow engine's groups of this prompt with their sizes (`("audio", 24)`), in [`Groups`] order;
        /// what knockouts and sweeps can name.
        groups: Vec<(String, usize)>,
    },
    ForwardDone {
        /// `(id, decoded text — empty without a tokenizer, probability)`, most likely first.
        top_k: Vec<(u32, String, f32)>,
        seconds: f32,
        positions: usize,
    },
    /// Result of a [`Command::RunKnockout`], with the request it answers (the UI may have moved on).
    KnockoutDone {
        source: String,
        target: String,
        start: usize,
        end: usize,
        extra: Vec<KnockoutBlock>,
        /// Probability of the watched token (the baseline top-1) after the knockout.
        prob: f32,
        base_prob: f32,
        /// `100 · (prob − base_prob) / base_prob`.
        rel_change: f32,
        /// Top-1 token after the knockout: id and decoded text (empty without a tokenizer).
        top1: (u32, String),
        /// The watched token.
        token: (u32, String),
    },
    /// `done` of `total` sweep windows are computed.
    SweepProgress {
        done: usize,
        total: usize,
    },
    /// A sweep's records (fewer than requested when it was cancelled).
    SweepDone {
        records: Vec<SweepRecord>,
    },
    /// `done` of `total` steps of the running heatmap.
    HeatmapProgress {
        done: usize,
        total: usize,
    },
    /// A [`Command::Heatmap`]'s matrix (shared: the UI hands it to the GPU without copying).
    HeatmapDone {
        metric: HeatMetric,
        matrix: Arc<Heatmap>,
        /// The answer token the lens metrics follow (the baseline top-1): id and decoded text.
        token: (u32, String),
        seconds: f32,
    },
    /// The timeline of media prepared by [`Command::PrepareMedia`], after its inputs were read from `inputs`.
    MediaReady {
        inputs: PathBuf,
        preview: Arc<MediaPreview>,
    },
    /// `done` of `total` steps of the running drop.
    DropProgress {
        done: usize,
        total: usize,
    },
    /// A [`Command::Drop`]'s result, with the request it answers.
    DropDone {
        outcome: Arc<DropOutcome>,
    },
    /// A command failed; `fix` says what the user can do, where known.
    Error {
        message: String,
        fix: Option<String>,
    },
    /// A [`Command::Cancel`] was handled.
    Cancelled,
    /// The queue is empty: nothing runs until the next command. `handled` counts every command taken
    /// off the queue so far (run, skipped or cancel), so the UI can tell whether commands it sent since
    /// are still outstanding ([`Worker::busy`]).
    Idle {
        handled: u64,
    },
}

/// What the app shows about a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// As the user gave it (folder or `owner/name[@rev]`).
    pub source: String,
    /// Folder holding config.json (a hub snapshot for hub ids).
    pub dir: PathBuf,
    pub parameters: usize,
    pub layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub dtype: String,
    pub device: String,
    pub has_tokenizer: bool,
    pub load_seconds: f32,
}

/// One prompt position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCell {
    pub id: u32,
    /// Decoded text; empty without a tokenizer.
    pub text: String,
    pub group: Group,
    /// Seconds `[start, end)` a media position covers (the token map); `None` for text.
    pub time: Option<[f64; 2]>,
}

/// Why a command did not finish.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Cancelled,
    Error {
        message: String,
        fix: Option<String>,
    },
}

impl Failure {
    pub fn new(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Failure::Error {
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// Adds `fix` when the error did not bring its own.
    pub fn or_fix(self, default_fix: &str) -> Self {
        match self {
            Failure::Error { message, fix: None } => Failure::Error {
                message,
                fix: Some(default_fix.to_string()),
            },
            other => other,
        }
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        let (message, fix) = split_fix(&e.to_string());
        Failure::Error { message, fix }
    }
}

/// Library errors end with `. Fix: …` where they know one (see `error.rs`); the UI shows it apart.
pub fn split_fix(s: &str) -> (String, Option<String>) {
    match s.split_once("Fix: ") {
        Some((message, fix)) if !fix.trim().is_empty() => {
            let message = message.trim_end().trim_end_matches(['.', '(']).trim_end();
            let fix = fix.trim().trim_end_matches(')');
            (message.to_string(), Some(fix.to_string()))
        }
        _ => (s.to_string(), None),
    }
}

pub type Outcome<T> = std::result::Result<T, Failure>;

/// What the engine may do while a command runs.
pub struct Ctx<'a> {
    events: &'a Sender<Event>,
    notify: &'a (dyn Fn() + Send + Sync),
    cancel: &'a AtomicBool,
}

impl Ctx<'_> {
    pub fn status(&self, s: impl Into<String>) {
        // A closed channel means the UI is gone; the command finishes and the loop then ends.
        let _ = self.events.send(Event::Status(s.into()));
        (self.notify)();
    }

    /// Sweep progress, for the progress bar.
    pub fn progress(&self, done: usize, total: usize) {
        let _ = self.events.send(Event::SweepProgress { done, total });
        (self.notify)();
    }

    /// Heatmap progress, for its progress bar.
    pub fn heatmap_progress(&self, done: usize, total: usize) {
        let _ = self.events.send(Event::HeatmapProgress { done, total });
        (self.notify)();
    }

    /// Drop progress, for its progress bar.
    pub fn drop_progress(&self, done: usize, total: usize) {
        let _ = self.events.send(Event::DropProgress { done, total });
        (self.notify)();
    }

    /// The flag library loops poll themselves ([`crate::flow::sweep`]).
    pub fn cancel_flag(&self) -> &AtomicBool {
        self.cancel
    }

    /// A cancel checkpoint.
    pub fn check_cancel(&self) -> Outcome<()> {
        if self.cancel.load(Ordering::SeqCst) {
            Err(Failure::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The model side of the worker.
pub trait Engine: Send + 'static {
    fn load_model(
        &mut self,
        source: &str,
        dtype: DType,
        device: &Device,
        ctx: &Ctx,
    ) -> Outcome<ModelSummary>;
    fn load_inputs(&mut self, path: &Path, ctx: &Ctx) -> Outcome<Vec<TokenCell>>;
    fn forward(&mut self, k: usize, ctx: &Ctx) -> Outcome<ForwardResult>;
    /// The flow groups of the loaded inputs with their sizes (empty before inputs are read).
    fn flow_groups(&self) -> Vec<(String, usize)>;
    fn knockout(&mut self, req: &KnockoutRequest, ctx: &Ctx) -> Outcome<KnockoutOutcome>;
    /// Polls `ctx.cancel_flag()` and reports `ctx.progress`; a cancelled sweep returns what it finished.
    fn sweep(
        &mut self,
        pairs: &[(String, String)],
        window: usize,
        ctx: &Ctx,
    ) -> Outcome<Vec<SweepRecord>>;
    /// The inputs file currently loaded, to re-read after a model change.
    fn inputs_path(&self) -> Option<PathBuf>;
    /// Prepares `req` into `req.out` and returns its timeline; the caller then reads `req.out` as inputs.
    /// The default refuses, so engines without a media pipeline need not implement it.
    fn prepare_media(&mut self, req: &MediaRequest, ctx: &Ctx) -> Outcome<MediaPreview> {
        let _ = ctx;
        Err(Failure::new(
            format!(
                "this engine cannot prepare media ({} items)",
                req.items.len()
            ),
            "open prepared inputs (.safetensors) instead",
        ))
    }
    /// Polls `ctx.cancel_flag()` and reports `ctx.heatmap_progress`; a cancelled heatmap is
    /// [`Failure::Cancelled`].
    fn heatmap(&mut self, metric: HeatMetric, ctx: &Ctx) -> Outcome<HeatmapOutcome>;
    /// Polls cancel between stages and reports `ctx.drop_progress`. The default refuses, so engines
    /// without a decoder need not implement it.
    fn drop_tokens(&mut self, req: &DropRequest, ctx: &Ctx) -> Outcome<DropOutcome> {
        let _ = ctx;
        Err(Failure::new(
            format!("this engine cannot drop {}", req.selector),
            "load a model and inputs first",
        ))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapOutcome {
    pub matrix: Heatmap,
    pub token: (u32, String),
}

/// What [`Command::PrepareMedia`] prepares and where the inputs go.
#[derive(Debug, Clone)]
pub struct MediaRequest {
    /// In prompt order.
    pub items: Vec<Item>,
    pub question: String,
    pub options: PrepareOptions,
    /// The inputs file to write (the app's cache).
    pub out: PathBuf,
}

/// One knockout as the UI states it: group names (or selectors) and a half-open layer range, plus more
/// blocks applied together with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KnockoutRequest {
    pub source: String,
    pub target: String,
    pub start: usize,
    pub end: usize,
    /// Further blocks of the same run (the app's modality × layer toggles); empty for a plain knockout.
    pub extra: Vec<KnockoutBlock>,
}

/// One block of a knockout: `target`'s queries lose `source`'s keys in layers `start..end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KnockoutBlock {
    pub source: String,
    pub target: String,
    pub start: usize,
    pub end: usize,
}

impl KnockoutRequest {
    /// The main block, then the extra ones: what the run applies together.
    pub fn blocks(&self) -> Vec<KnockoutBlock> {
        let main = KnockoutBlock {
            source: self.source.clone(),
            target: self.target.clone(),
            start: self.start,
            end: self.end,
        };
        std::iter::once(main)
            .chain(self.extra.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KnockoutOutcome {
    pub prob: f32,
    pub base_prob: f32,
    pub rel_change: f32,
    pub top1: (u32, String),
    pub token: (u32, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardResult {
    pub top_k: Vec<(u32, String, f32)>,
    pub positions: usize,
}

/// How many next tokens a [`Command::RunForward`] reports.
pub const TOP_K: usize = 5;

/// Handle held by the UI. Dropping it asks the thread to stop (without waiting for it).
pub struct Worker {
    tx: Sender<Command>,
    rx: Receiver<Event>,
    /// Commands sent (Shutdown excluded) and commands the worker reported handled.
    sent: Cell<u64>,
    handled: Cell<u64>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// A worker over the real model code.
    pub fn spawn(notify: impl Fn() + Send + Sync + 'static) -> std::io::Result<Self> {
        Self::spawn_with(ThinkerEngine::default(), notify)
    }

    pub fn spawn_with<E: Engine>(
        engine: E,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let thread = std::thread::Builder::new()
            .name("avflow-worker".into())
            // Model code may build deep call chains in debug builds; 2 MiB is tight.
            .stack_size(32 << 20)
            .spawn(move || run_loop(engine, cmd_rx, ev_tx, flag, Box::new(notify)))?;
        Ok(Self {
            tx,
            rx,
            sent: Cell::new(0),
            handled: Cell::new(0),
            cancel,
            thread: Some(thread),
        })
    }

    /// Queues a command; `false` when the worker thread is gone.
    pub fn send(&self, cmd: Command) -> bool {
        if matches!(cmd, Command::Cancel | Command::Shutdown) {
            // Seen by the running command at its next checkpoint, long before the queue reaches `cmd`.
            self.cancel.store(true, Ordering::SeqCst);
        }
        let counted = !matches!(cmd, Command::Shutdown);
        let ok = self.tx.send(cmd).is_ok();
        if ok && counted {
            self.sent.set(self.sent.get() + 1);
        }
        ok
    }

    /// Some command sent through this handle has not finished yet (as of the last [`Self::poll`]).
    pub fn busy(&self) -> bool {
        self.handled.get() < self.sent.get()
    }

    fn observe(&self, e: &Event) {
        if let Event::Idle { handled } = e {
            self.handled.set(*handled);
        }
    }

    pub fn cancel(&self) -> bool {
        self.send(Command::Cancel)
    }

    /// Every event that arrived since the last call; `Err` once the thread has stopped and nothing is left.
    pub fn poll(&self) -> std::result::Result<Vec<Event>, WorkerGone> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(e) => {
                    self.observe(&e);
                    out.push(e);
                }
                Err(TryRecvError::Empty) => return Ok(out),
                Err(TryRecvError::Disconnected) if out.is_empty() => return Err(WorkerGone),
                Err(TryRecvError::Disconnected) => return Ok(out),
            }
        }
    }

    /// Waits for the next event (tests and headless use).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        let e = self.rx.recv_timeout(timeout).ok()?;
        self.observe(&e);
        Some(e)
    }

    /// Asks the thread to stop and waits up to `timeout`; `true` when it has stopped.
    pub fn shutdown(mut self, timeout: Duration) -> bool {
        self.send(Command::Shutdown);
        let deadline = Instant::now() + timeout;
        let Some(thread) = self.thread.take() else {
            return true;
        };
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().is_ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.send(Command::Shutdown);
        }
    }
}

/// The worker thread stopped (it only does on shutdown, or if the loop itself failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerGone;

fn run_loop<E: Engine>(
    mut engine: E,
    commands: Receiver<Command>,
    events: Sender<Event>,
    cancel: Arc<AtomicBool>,
    notify: Box<dyn Fn() + Send + Sync>,
) {
    let emit = |e: Event| {
        let _ = events.send(e);
        notify();
    };
    let mut handled = 0_u64;
    // Commands taken off the channel early, to see whether a knockout is superseded; served first.
    let mut backlog: VecDeque<Command> = VecDeque::new();
    loop {
        let cmd = match backlog.pop_front() {
            Some(c) => c,
            None => match commands.recv() {
                Ok(c) => c,
                Err(_) => break,
            },
        };
        if !matches!(cmd, Command::Shutdown) {
            handled += 1;
        }
        match cmd {
            Command::Shutdown => break,
            Command::Cancel => {
                // Everything queued before this cancel has been skipped or stopped; later commands run.
                cancel.store(false, Ordering::SeqCst);
                emit(Event::Cancelled);
            }
            cmd if cancel.load(Ordering::SeqCst) => {
                tracing::debug!("skipping {cmd:?}: cancelled");
            }
            cmd if cmd.latest_wins() && superseded(&commands, &mut backlog, &cmd) => {
                tracing::debug!("skipping {cmd:?}: a newer one of its kind is queued");
            }
            cmd => {
                let ctx = Ctx {
                    events: &events,
                    notify: notify.as_ref(),
                    cancel: &cancel,
                };
                let what = describe(&cmd);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle(&mut engine, cmd, &ctx)
                }));
                match result {
                    Ok(list) => list.into_iter().for_each(emit),
                    Err(payload) => emit(Event::Error {
                        message: format!(
                            "internal error while {what}: {}",
                            panic_message(payload.as_ref())
                        ),
                        fix: Some(
                            "this is a bug in avflow — please report it with the terminal output. The \
                             app is still usable; reload the model if results look wrong."
                                .into(),
                        ),
                    }),
                }
            }
        }
        if backlog.is_empty() && commands.is_empty() {
            emit(Event::Idle { handled });
        }
    }
}

/// Moves everything queued into `backlog` and says whether a command of `cmd`'s kind is among it.
fn superseded(
    commands: &Receiver<Command>,
    backlog: &mut VecDeque<Command>,
    cmd: &Command,
) -> bool {
    backlog.extend(commands.try_iter());
    let kind = std::mem::discriminant(cmd);
    backlog.iter().any(|c| std::mem::discriminant(c) == kind)
}

impl Command {
    /// Commands a control fires repeatedly (dragging a knockout's layers, flipping heatmap metrics,
    /// clicking through drop settings): when a newer one of the same kind is queued, only it runs.
    fn latest_wins(&self) -> bool {
        matches!(
            self,
            Command::RunKnockout { .. } | Command::Heatmap { .. } | Command::Drop(_)
        )
    }
}

fn describe(cmd: &Command) -> String {
    match cmd {
        Command::LoadModel { source, .. } => format!("loading model {source}"),
        Command::LoadInputs { path } => format!("reading inputs {}", path.display()),
        Command::RunForward => "running the model".into(),
        Command::RunKnockout {
            source,
            target,
            start,
            end,
            extra,
        } => format!(
            "knocking out {source} -> {target} in layers {start}..{end}{}",
            if extra.is_empty() {
                String::new()
            } else {
                format!(" and {} more blocks", extra.len())
            }
        ),
        Command::RunSweep { pairs, window } => {
            format!(
                "sweeping {} pairs with a {window}-layer window",
                pairs.len()
            )
        }
        Command::Heatmap { metric } => format!("computing the {} heatmap", metric.name()),
        Command::PrepareMedia(r) => format!("preparing {}", item_names(&r.items)),
        Command::Drop(r) => format!("dropping {} from layer {}", r.selector, r.from_layer),
        Command::Cancel => "cancelling".into(),
        Command::Shutdown => "shutting down".into(),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

/// Runs one command; returns the events that report its result.
fn handle<E: Engine>(engine: &mut E, cmd: Command, ctx: &Ctx) -> Vec<Event> {
    let fail = |f: Failure| match f {
        // The `Cancelled` event comes when the loop reaches the Cancel command.
        Failure::Cancelled => vec![Event::Status("Stopped.".into())],
        Failure::Error { message, fix } => vec![Event::Error { message, fix }],
    };
    match cmd {
        Command::LoadModel {
            source,
            dtype,
            device,
        } => match engine.load_model(&source, dtype, &device, ctx) {
            Err(f) => fail(f.or_fix(
                "give a model folder (config.json + *.safetensors) or a hub id such as Qwen/Qwen2.5-Omni-3B",
            )),
            Ok(summary) => {
                let mut out = vec![Event::ModelLoaded { summary }];
                if let Some(path) = engine.inputs_path() {
                    out.extend(load_inputs(engine, path, ctx, &fail));
                }
                out
            }
        },
        Command::LoadInputs { path } => load_inputs(engine, path, ctx, &fail),
        Command::RunForward => {
            let t0 = Instant::now();
            match engine.forward(TOP_K, ctx) {
                Ok(r) => vec![Event::ForwardDone {
                    top_k: r.top_k,
                    seconds: t0.elapsed().as_secs_f32(),
                    positions: r.positions,
                }],
                Err(f) => fail(f),
            }
        }
        Command::RunKnockout {
            source,
            target,
            start,
            end,
            extra,
        } => {
            let req = KnockoutRequest {
                source,
                target,
                start,
                end,
                extra,
            };
            match engine.knockout(&req, ctx) {
                Ok(r) => vec![Event::KnockoutDone {
                    source: req.source,
                    target: req.target,
                    start: req.start,
                    end: req.end,
                    extra: req.extra,
                    prob: r.prob,
                    base_prob: r.base_prob,
                    rel_change: r.rel_change,
                    top1: r.top1,
                    token: r.token,
                }],
                Err(f) => fail(f.or_fix(
                    "choose groups this prompt has and a layer range A..B with A < B ≤ the model's layers",
                )),
            }
        }
        Command::RunSweep { pairs, window } => match engine.sweep(&pairs, window, ctx) {
            Ok(records) => {
                let mut out = Vec::new();
                if ctx.check_cancel().is_err() {
                    out.push(Event::Status(format!(
                        "Sweep stopped; keeping {} finished windows.",
                        records.len()
                    )));
                }
                out.push(Event::SweepDone { records });
                out
            }
            Err(f) => fail(f.or_fix(
                "choose pairs of groups this prompt has and a window of at least 1 layer",
            )),
        },
        Command::Heatmap { metric } => {
            let t0 = Instant::now();
            match engine.heatmap(metric, ctx) {
                Ok(r) => vec![Event::HeatmapDone {
                    metric,
                    matrix: Arc::new(r.matrix),
                    token: r.token,
                    seconds: t0.elapsed().as_secs_f32(),
                }],
                Err(f) => fail(f.or_fix(
                    "load a model and inputs first; the question metric needs a prompt with a question",
                )),
            }
        }
        Command::PrepareMedia(req) => match engine.prepare_media(&req, ctx) {
            Err(f) => fail(f.or_fix(
                "open a video, audio or image file FFmpeg can read, and type a question",
            )),
            Ok(preview) => {
                let mut out = load_inputs(engine, req.out.clone(), ctx, &fail);
                if matches!(out.last(), Some(Event::InputsLoaded { .. })) {
                    out.push(Event::MediaReady {
                        inputs: req.out,
                        preview: Arc::new(preview),
                    });
                }
                out
            }
        },
        Command::Drop(req) => match engine.drop_tokens(&req, ctx) {
            Ok(outcome) => vec![Event::DropDone {
                outcome: Arc::new(outcome),
            }],
            Err(f) => fail(f.or_fix(
                "tick a media group this prompt has (or select seconds with sound or pictures) and a layer below the model's layer count",
            )),
        },
        Command::Cancel | Command::Shutdown => Vec::new(),
    }
}

/// `basic.mkv, tone.wav`: the items' file names, for status lines.
fn item_names(items: &[Item]) -> String {
    let names: Vec<String> = items
        .iter()
        .map(|it| {
            let (Item::Video(p) | Item::Audio(p) | Item::Image(p)) = it;
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    names.join(", ")
}

fn load_inputs<E: Engine>(
    engine: &mut E,
    path: PathBuf,
    ctx: &Ctx,
    fail: &dyn Fn(Failure) -> Vec<Event>,
) -> Vec<Event> {
    match engine.load_inputs(&path, ctx) {
        Ok(tokens) => vec![Event::InputsLoaded {
            path,
            tokens,
            groups: engine.flow_groups(),
        }],
        Err(f) => fail(f.or_fix(
            "open a .safetensors file of processor outputs (input_ids, and the media tensors it refers to)",
        )),
    }
}

// ---------------------------------------------------------------------------------------------------
// The real engine.

struct LoadedModel {
    /// The resolved folder: chat template, tokenizer and processor settings for [`Command::PrepareMedia`].
    dir: PathBuf,
    thinker: OmniThinker,
    tokenizer: Option<tokenizers::Tokenizer>,
    im_start: Option<u32>,
}

/// [`Engine`] over [`OmniThinker`].
#[derive(Default)]
pub struct ThinkerEngine {
    model: Option<LoadedModel>,
    /// Tensors on the model's device; `None` until read (and again while a new model loads).
    inputs: Option<OmniInputs>,
    inputs_path: Option<PathBuf>,
    /// Flow groups of the loaded inputs (cheap: from the ids alone).
    groups: Option<Groups>,
    /// The traced baseline run knockouts and sweeps replay from; built at the first of them, dropped
    /// whenever the model or the inputs change.
    trace: Option<Trace>,
}

pub fn device_name(d: &Device) -> String {
    match d.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl ThinkerEngine {
    /// Text of one token. A token holding part of a UTF-8 character decodes to U+FFFD alone; its byte-level
    /// vocabulary form (`Ã¤`, `Ġ`) says more, so that is shown instead.
    fn decode(&self, id: u32) -> String {
        let Some(t) = self.model.as_ref().and_then(|m| m.tokenizer.as_ref()) else {
            return String::new();
        };
        match t.decode(&[id], false) {
            Ok(s) if !s.contains('\u{FFFD}') => s,
            Ok(s) => t.id_to_token(id).unwrap_or(s),
            Err(_) => t.id_to_token(id).unwrap_or_default(),
        }
    }
}

impl Engine for ThinkerEngine {
    fn load_model(
        &mut self,
        source: &str,
        dtype: DType,
        device: &Device,
        ctx: &Ctx,
    ) -> Outcome<ModelSummary> {
        let t0 = Instant::now();
        let parsed = ModelSource::parse(source.trim())?;
        if let ModelSource::Hub { repo, .. } = &parsed {
            ctx.status(format!(
                "Resolving {repo} on the Hugging Face hub (the first time downloads several GB)…"
            ));
        } else {
            ctx.status(format!("Reading {source}…"));
        }
        let resolved = model::resolve(&parsed)?;
        ctx.check_cancel()?;
        let parameters = resolved.thinker_parameters();
        ctx.status(format!(
            "Loading {:.1} M parameters as {} on {}…",
            parameters as f64 / 1e6,
            dtype.as_str(),
            device_name(device)
        ));
        // Free the old model and the inputs tensors on its device before the new one is mapped; the inputs
        // path stays, so the worker re-reads them for the new model.
        self.model = None;
        self.inputs = None;
        self.groups = None;
        self.trace = None;
        let thinker = OmniThinker::load(&resolved, dtype, device)?;
        ctx.check_cancel()?;
        let tokenizer = match resolved.tokenizer_path() {
            None => None,
            Some(p) => match tokenizers::Tokenizer::from_file(&p) {
                Ok(t) => Some(t),
                Err(e) => {
                    ctx.status(format!(
                        "Tokenizer {} unreadable ({e}); showing token ids.",
                        p.display()
                    ));
                    None
                }
            },
        };
        let im_start = tokenizer
            .as_ref()
            .and_then(|t| t.token_to_id("<|im_start|>"))
            .or(thinker.cfg.tokens.bos);
        let cfg = &thinker.cfg.text;
        let summary = ModelSummary {
            source: parsed.display(),
            dir: resolved.dir.clone(),
            parameters,
            layers: cfg.num_hidden_layers,
            hidden: cfg.hidden_size,
            vocab: cfg.vocab_size,
            dtype: dtype.as_str().to_string(),
            device: device_name(device),
            has_tokenizer: tokenizer.is_some(),
            load_seconds: t0.elapsed().as_secs_f32(),
        };
        self.model = Some(LoadedModel {
            dir: resolved.dir.clone(),
            thinker,
            tokenizer,
            im_start,
        });
        Ok(summary)
    }

    fn load_inputs(&mut self, path: &Path, ctx: &Ctx) -> Outcome<Vec<TokenCell>> {
        let Some(m) = &self.model else {
            return Err(Failure::new(
                format!("cannot read {} before a model is loaded", path.display()),
                "load a model first (the inputs are read onto its device)",
            ));
        };
        ctx.status(format!("Reading {}…", path.display()));
        let inputs = OmniInputs::from_file(path)?;
        let flow_groups = Groups::from_ids(&inputs.input_ids, &m.thinker.cfg.tokens);
        let groups = token_groups(&inputs.input_ids, &m.thinker.cfg.tokens, m.im_start);
        let spg: Vec<f64> = inputs
            .video_second_per_grid
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let map = crate::media::token_map::TokenMap::build(
            &inputs.input_ids,
            &m.thinker.cfg,
            &inputs.video_grid_thw,
            &spg,
            &inputs.image_grid_thw,
        );
        let tokens = inputs
            .input_ids
            .iter()
            .zip(groups)
            .zip(&map.tokens)
            .map(|((&id, group), info)| TokenCell {
                id,
                text: self.decode(id),
                group,
                time: info.time,
            })
            .collect();
        self.inputs = Some(inputs);
        self.inputs_path = Some(path.to_path_buf());
        self.groups = Some(flow_groups);
        self.trace = None;
        Ok(tokens)
    }

    fn forward(&mut self, k: usize, ctx: &Ctx) -> Outcome<ForwardResult> {
        let (Some(m), Some(inp)) = (&self.model, &self.inputs) else {
            return Err(nothing_to_run());
        };
        let n = inp.input_ids.len();
        let Some(last) = n.checked_sub(1) else {
            return Err(Failure::new(
                "the inputs have no input_ids",
                "open an inputs file with a non-empty prompt",
            ));
        };
        ctx.status("Encoding audio and video…");
        let embedded = m.thinker.embed(inp)?;
        ctx.check_cancel()?;
        ctx.status(format!("Running the decoder over {n} positions…"));
        let logits = m.thinker.logits(&embedded, Some(&[last]))?;
        let row = logits.get(0).map_err(crate::Error::from)?;
        let top = model::decoder::top_k(&row, k)?;
        Ok(ForwardResult {
            top_k: top
                .into_iter()
                .map(|(id, p)| (id, self.decode(id), p))
                .collect(),
            positions: n,
        })
    }

    fn flow_groups(&self) -> Vec<(String, usize)> {
        self.groups.as_ref().map_or_else(Vec::new, group_sizes)
    }

    fn knockout(&mut self, req: &KnockoutRequest, ctx: &Ctx) -> Outcome<KnockoutOutcome> {
        self.ensure_trace(ctx)?;
        let (Some(m), Some(groups), Some(trace)) = (&self.model, &self.groups, &self.trace) else {
            return Err(nothing_to_run());
        };
        let layers = m.thinker.decoder.num_layers();
        let mut blocks = Vec::new();
        for b in req.blocks() {
            if b.start >= b.end || b.end > layers {
                return Err(Failure::new(
                    format!(
                        "layer range {}..{} is not inside 0..{layers} (half-open)",
                        b.start, b.end
                    ),
                    format!("choose layers A..B with 0 ≤ A < B ≤ {layers}"),
                ));
            }
            blocks.push(Knockout {
                sources: select_any(groups, self.inputs.as_ref(), &m.thinker.cfg, &b.source)?,
                targets: select_any(groups, self.inputs.as_ref(), &m.thinker.cfg, &b.target)?,
                start: b.start,
                end: b.end,
            });
        }
        ctx.status(format!(
            "Knocking out {} -> {} in layers {}..{}{}…",
            req.source,
            req.target,
            req.start,
            req.end,
            if req.extra.is_empty() {
                String::new()
            } else {
                format!(" and {} more blocks", req.extra.len())
            }
        ));
        // One block or several: the set runs them together (one block is exactly `Knockout::score`).
        let r = KnockoutSet { blocks }.score(&m.thinker.decoder, trace, None)?;
        Ok(KnockoutOutcome {
            prob: r.prob,
            base_prob: r.base_prob,
            rel_change: r.rel_change,
            top1: (r.top1_id, self.decode(r.top1_id)),
            token: (r.token_id, self.decode(r.token_id)),
        })
    }

    fn sweep(
        &mut self,
        pairs: &[(String, String)],
        window: usize,
        ctx: &Ctx,
    ) -> Outcome<Vec<SweepRecord>> {
        self.ensure_trace(ctx)?;
        let (Some(m), Some(groups), Some(trace)) = (&self.model, &self.groups, &self.trace) else {
            return Err(nothing_to_run());
        };
        // Checked here so an empty group comes back with the groups that do exist.
        for (s, t) in pairs {
            select(groups, s)?;
            select(groups, t)?;
        }
        let total = pairs.len() * m.thinker.decoder.num_layers();
        ctx.status(format!("Sweeping {} pairs ({total} windows)…", pairs.len()));
        ctx.progress(0, total);
        let records = crate::flow::sweep(
            &m.thinker.decoder,
            trace,
            groups,
            pairs,
            window,
            crate::flow::Align::Center,
            None,
            ctx.cancel_flag(),
            &mut |done, total| ctx.progress(done, total),
        )?;
        Ok(records)
    }

    fn inputs_path(&self) -> Option<PathBuf> {
        self.inputs_path.clone()
    }

    fn prepare_media(&mut self, req: &MediaRequest, ctx: &Ctx) -> Outcome<MediaPreview> {
        let Some(m) = &self.model else {
            return Err(Failure::new(
                "cannot prepare media before a model is loaded",
                "load a model first: the prompt is built with its chat template, tokenizer and settings",
            ));
        };
        let t0 = Instant::now();
        ctx.status(format!(
            "Preparing {}: decoding, sampling frames, log-mel, tokenising…",
            item_names(&req.items)
        ));
        // On the CPU whatever the model's device: the tensors go to a file first.
        let prepared = crate::media::prepare::prepare(
            &m.dir,
            &m.thinker.cfg,
            &req.items,
            &req.question,
            &req.options,
            &Device::Cpu,
        )?;
        ctx.check_cancel()?;
        ctx.status(format!("Writing {}…", req.out.display()));
        let dir = req.out.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::new(
                    format!(
                        "cannot create the folder for prepared inputs {}: {e}",
                        dir.display()
                    ),
                    "set AVFLOW_CACHE_DIR to a writable folder and restart avflow",
                )
            })?;
        }
        crate::tensor_io::save_atomic(&prepared.tensors, &req.out)?;
        let prepare_seconds = t0.elapsed().as_secs_f32();
        if let Some(dir) = dir {
            crate::ui::media_input::prune_cache(dir, crate::ui::media_input::CACHE_KEEP);
        }
        ctx.check_cancel()?;
        ctx.status("Building the timeline (thumbnails, waveform, spectrogram)…");
        let load_16k = |p: &Path| crate::media::audio::load_16k(p);
        let mut preview = crate::media::preview::build(
            &prepared,
            &req.items,
            &m.thinker.cfg,
            &req.question,
            &load_16k,
        )?;
        preview.prepare_seconds = prepare_seconds;
        ctx.check_cancel()?;
        Ok(preview)
    }

    fn heatmap(&mut self, metric: HeatMetric, ctx: &Ctx) -> Outcome<HeatmapOutcome> {
        self.ensure_trace(ctx)?;
        let (Some(m), Some(groups), Some(trace)) = (&self.model, &self.groups, &self.trace) else {
            return Err(nothing_to_run());
        };
        // Checked here so a missing group comes back with the groups that do exist.
        match metric {
            HeatMetric::AttentionFromLast => {
                select(groups, "last")?;
            }
            HeatMetric::AttentionFromQuestion => {
                select(groups, "question")?;
            }
            HeatMetric::LensAnswer | HeatMetric::LensGain => {}
            HeatMetric::KnockoutEffect => {
                select(groups, "last")?;
            }
        }
        let decoder = &m.thinker.decoder;
        ctx.status(if metric == HeatMetric::KnockoutEffect {
            format!(
                "Knockout effect: {} layers × {} position bins (one-row knockouts, batched)…",
                decoder.num_layers(),
                trace.seq_len.min(crate::flow::heatmap::EFFECT_BINS)
            )
        } else if metric.is_heavy() {
            format!(
                "Logit lens at {} positions × {} layers (lm_head at every position)…",
                trace.seq_len,
                decoder.num_layers()
            )
        } else {
            format!("Attention maps over {} layers…", decoder.num_layers())
        });
        let matrix = crate::flow::heatmap::compute(
            metric,
            decoder,
            trace,
            groups,
            ctx.cancel_flag(),
            &mut |done, total| ctx.heatmap_progress(done, total),
        )?
        .ok_or(Failure::Cancelled)?;
        Ok(HeatmapOutcome {
            matrix,
            token: (trace.top1_id, self.decode(trace.top1_id)),
        })
    }

    fn drop_tokens(&mut self, req: &DropRequest, ctx: &Ctx) -> Outcome<DropOutcome> {
        self.run_drop(req, ctx)
    }
}

impl ThinkerEngine {
    /// Builds the trace on first use: one decoder pass that keeps every layer's residual and K/V.
    fn ensure_trace(&mut self, ctx: &Ctx) -> Outcome<()> {
        if self.trace.is_some() {
            return Ok(());
        }
        let (Some(m), Some(inp)) = (&self.model, &self.inputs) else {
            return Err(nothing_to_run());
        };
        ctx.status("Encoding audio and video…");
        let embedded = m.thinker.embed(inp)?;
        ctx.check_cancel()?;
        ctx.status(format!(
            "Tracing the baseline run over {} positions (kept for knockouts)…",
            embedded.input_ids.len()
        ));
        let trace = Trace::run(&m.thinker.decoder, &embedded.embeds, &embedded.position_ids)?;
        self.trace = Some(trace);
        ctx.check_cancel()
    }
}

/// Positions of a group name, or of a selector (`@1-3`, `audio@1-3`, `item:0`, `pos:4-9`, comma-separated unions) as
/// the command line reads it ([`crate::cli::select_positions`]) with the prompt's token map.
fn select_any(
    groups: &Groups,
    inputs: Option<&OmniInputs>,
    cfg: &crate::model::ThinkerConfig,
    expr: &str,
) -> Outcome<Vec<usize>> {
    let selector =
        expr.contains(['@', ',']) || expr.starts_with("item:") || expr.starts_with("pos:");
    let Some(inp) = inputs.filter(|_| selector) else {
        return select(groups, expr);
    };
    let spg: Vec<f64> = inp
        .video_second_per_grid
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let map = crate::media::token_map::TokenMap::build(
        &inp.input_ids,
        cfg,
        &inp.video_grid_thw,
        &spg,
        &inp.image_grid_thw,
    );
    crate::cli::select_positions(groups, &map, expr).map_err(|e| {
        Failure::new(
            e.to_string(),
            "select seconds where the prompt has sound or pictures (drag on the media timeline), positions inside \
             the prompt (drag on the token strip), or choose a group",
        )
    })
}

fn nothing_to_run() -> Failure {
    Failure::new("nothing to run", "load a model and an inputs file first")
}

/// `(name, size)` of every group, in the engine's order.
pub fn group_sizes(groups: &Groups) -> Vec<(String, usize)> {
    groups
        .spans
        .iter()
        .map(|(k, v)| (k.clone(), v.len()))
        .collect()
}

/// [`Groups::select`] with a fix that lists the groups this prompt has.
fn select(groups: &Groups, names: &str) -> Outcome<Vec<usize>> {
    groups.select(names).map_err(|e| {
        let present: Vec<&str> = groups
            .spans
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k.as_str())
            .collect();
        Failure::new(
            e.to_string(),
            format!(
                "choose one of the groups this prompt has: {}",
                present.join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Scripted engine: each method does what the test asks.
    #[derive(Default)]
    struct Fake {
        inputs: Option<PathBuf>,
        /// Forward waits for this many milliseconds, polling cancel, before answering.
        forward_ms: u64,
        panic_on_forward: bool,
        started: Option<mpsc::Sender<()>>,
        /// Knockout and sweep-step delay in milliseconds.
        knockout_ms: u64,
        sweep_step_ms: u64,
        /// Prepare-media delay in milliseconds.
        prepare_ms: u64,
        /// Knockouts that actually ran, in order.
        ran: Arc<std::sync::Mutex<Vec<KnockoutRequest>>>,
        heatmap_step_ms: u64,
        /// Heatmaps that finished, in order.
        heatmaps: Arc<std::sync::Mutex<Vec<HeatMetric>>>,
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

    fn fake_select(name: &str) -> Outcome<()> {
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

    impl Engine for Fake {
        fn load_model(
            &mut self,
            source: &str,
            dtype: DType,
            device: &Device,
            _: &Ctx,
        ) -> Outcome<ModelSummary> {
            if source == "missing" {
                return Err(crate::Error::Model {
                    path: "missing".into(),
                    reason: "no such folder".into(),
                    fix: "give a folder".into(),
                }
                .into());
            }
            Ok(ModelSummary {
                source: source.into(),
                dir: source.into(),
                parameters: 10,
                layers: 1,
                hidden: 4,
                vocab: 8,
                dtype: dtype.as_str().into(),
                device: device_name(device),
                has_tokenizer: false,
                load_seconds: 0.0,
            })
        }
        fn load_inputs(&mut self, path: &Path, _: &Ctx) -> Outcome<Vec<TokenCell>> {
            self.inputs = Some(path.to_path_buf());
            Ok(vec![TokenCell {
                id: 1,
                text: String::new(),
                group: Group::Text,
                time: None,
            }])
        }
        fn forward(&mut self, k: usize, ctx: &Ctx) -> Outcome<ForwardResult> {
            if let Some(s) = &self.started {
                let _ = s.send(());
            }
            if self.panic_on_forward {
                panic!("boom");
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(self.forward_ms) {
                ctx.check_cancel()?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(ForwardResult {
                top_k: (0..k as u32)
                    .map(|i| (i, String::new(), 1.0 / k as f32))
                    .collect(),
                positions: 1,
            })
        }
        fn flow_groups(&self) -> Vec<(String, usize)> {
            FAKE_GROUPS
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect()
        }
        fn knockout(&mut self, req: &KnockoutRequest, ctx: &Ctx) -> Outcome<KnockoutOutcome> {
            for b in req.blocks() {
                fake_select(&b.source)?;
                fake_select(&b.target)?;
            }
            if let Some(s) = &self.started {
                let _ = s.send(());
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(self.knockout_ms) {
                ctx.check_cancel()?;
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Ok(mut ran) = self.ran.lock() {
                ran.push(req.clone());
            }
            let prob = 0.5 / (1 + req.end - req.start) as f32;
            Ok(KnockoutOutcome {
                prob,
                base_prob: 0.5,
                rel_change: crate::flow::knockout::rel_change(prob, 0.5),
                top1: (3, String::new()),
                token: (1, String::new()),
            })
        }
        fn sweep(
            &mut self,
            pairs: &[(String, String)],
            window: usize,
            ctx: &Ctx,
        ) -> Outcome<Vec<SweepRecord>> {
            for (s, t) in pairs {
                fake_select(s)?;
                fake_select(t)?;
            }
            if let Some(s) = &self.started {
                let _ = s.send(());
            }
            let total = pairs.len() * FAKE_LAYERS;
            let mut out = Vec::new();
            for (s, t) in pairs {
                for layer in 0..FAKE_LAYERS {
                    if ctx.cancel_flag().load(Ordering::SeqCst) {
                        return Ok(out);
                    }
                    std::thread::sleep(Duration::from_millis(self.sweep_step_ms));
                    let (start, end) = crate::flow::sweep::window(
                        layer,
                        window,
                        FAKE_LAYERS,
                        crate::flow::Align::Center,
                    );
                    out.push(SweepRecord {
                        source: s.clone(),
                        target: t.clone(),
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
            Ok(out)
        }
        fn inputs_path(&self) -> Option<PathBuf> {
            self.inputs.clone()
        }
        fn prepare_media(&mut self, req: &MediaRequest, ctx: &Ctx) -> Outcome<MediaPreview> {
            if let Some(s) = &self.started {
                let _ = s.send(());
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(self.prepare_ms) {
                ctx.check_cancel()?;
                std::thread::sleep(Duration::from_millis(2));
            }
            if req.question.trim().is_empty() {
                return Err(crate::Error::Prompt(
                    "the question is empty: pass --question \"…\"".into(),
                )
                .into());
            }
            if let Some(Item::Video(p)) = req.items.first().filter(
                |_| matches!(req.items.first(), Some(Item::Video(p)) if p.ends_with("corrupt.mp4")),
            ) {
                return Err(crate::Error::Inputs {
                    path: p.clone(),
                    reason: "not a media file. Fix: pass a video FFmpeg can read".into(),
                }
                .into());
            }
            ctx.status("Preparing…");
            Ok(MediaPreview {
                items: Vec::new(),
                seconds_per_chunk: 2.0,
                spans: Vec::new(),
                notes: Vec::new(),
                question: req.question.clone(),
                prepare_seconds: 0.0,
            })
        }
        fn heatmap(&mut self, metric: HeatMetric, ctx: &Ctx) -> Outcome<HeatmapOutcome> {
            if let Some(s) = &self.started {
                let _ = s.send(());
            }
            // One step per layer, each `heatmap_step_ms` long.
            for layer in 0..FAKE_LAYERS {
                ctx.check_cancel()?;
                std::thread::sleep(Duration::from_millis(self.heatmap_step_ms));
                ctx.heatmap_progress(layer + 1, FAKE_LAYERS);
            }
            if let Ok(mut ran) = self.heatmaps.lock() {
                ran.push(metric);
            }
            let positions = 4;
            let values = (0..FAKE_LAYERS * positions).map(|i| i as f32).collect();
            Ok(HeatmapOutcome {
                matrix: Heatmap::new(FAKE_LAYERS, positions, values).map_err(Failure::from)?,
                token: (3, String::new()),
            })
        }
    }

    fn ko(source: &str, target: &str, start: usize, end: usize) -> Command {
        Command::RunKnockout {
            source: source.into(),
            target: target.into(),
            start,
            end,
            extra: Vec::new(),
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

    fn load(source: &str) -> Command {
        Command::LoadModel {
            source: source.into(),
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }

    #[test]
    fn split_fix_separates_the_fix() {
        let (m, f) = split_fix("model folder x: no such folder. Fix: give a folder");
        assert_eq!(m, "model folder x: no such folder");
        assert_eq!(f.as_deref(), Some("give a folder"));
        let (m, f) = split_fix(
            "cuda:0 is not available (no driver). Fix: build with cuda, or use --device cpu",
        );
        assert_eq!(m, "cuda:0 is not available (no driver)");
        assert_eq!(f.as_deref(), Some("build with cuda, or use --device cpu"));
        assert_eq!(split_fix("plain"), ("plain".to_string(), None));
    }

    #[test]
    fn load_then_inputs_then_forward() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        assert!(w.send(load("m")));
        let ev = until_idle(&w);
        assert!(matches!(&ev[..], [Event::ModelLoaded { summary }] if summary.device == "cpu"));
        w.send(Command::LoadInputs {
            path: "in.safetensors".into(),
        });
        assert!(
            matches!(&until_idle(&w)[..], [Event::InputsLoaded { tokens, .. }] if tokens.len() == 1)
        );
        w.send(Command::RunForward);
        assert!(
            matches!(&until_idle(&w)[..], [Event::ForwardDone { top_k, .. }] if top_k.len() == TOP_K)
        );
        // A new model re-reads the loaded inputs.
        w.send(load("m2"));
        let ev = until_idle(&w);
        assert!(
            matches!(
                &ev[..],
                [Event::ModelLoaded { .. }, Event::InputsLoaded { .. }]
            ),
            "{ev:?}"
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn errors_carry_their_fix() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(load("missing"));
        let ev = until_idle(&w);
        match &ev[..] {
            [Event::Error { message, fix }] => {
                assert_eq!(message, "model folder missing: no such folder");
                assert_eq!(fix.as_deref(), Some("give a folder"));
            }
            other => panic!("{other:?}"),
        }
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_panic_becomes_an_error_and_the_worker_keeps_serving() {
        let w = Worker::spawn_with(
            Fake {
                panic_on_forward: true,
                ..Fake::default()
            },
            || {},
        )
        .expect("spawn");
        w.send(Command::RunForward);
        let ev = until_idle(&w);
        assert!(
            matches!(&ev[..], [Event::Error { message, fix: Some(_) }] if message.contains("boom")),
            "{ev:?}"
        );
        w.send(load("m"));
        assert!(matches!(&until_idle(&w)[..], [Event::ModelLoaded { .. }]));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn cancel_stops_the_running_command_and_skips_queued_ones() {
        let (started_tx, started_rx) = mpsc::channel();
        let w = Worker::spawn_with(
            Fake {
                forward_ms: 20_000,
                started: Some(started_tx),
                ..Fake::default()
            },
            || {},
        )
        .expect("spawn");
        w.send(Command::RunForward);
        w.send(load("queued-before-cancel"));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("forward started");
        let t0 = Instant::now();
        w.cancel();
        w.send(load("after-cancel"));
        let mut ev = Vec::new();
        while let Some(e) = w.recv_timeout(Duration::from_secs(10)) {
            let done = matches!(&e, Event::ModelLoaded { .. });
            ev.push(e);
            if done {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "cancel took {:?}",
            t0.elapsed()
        );
        let loaded: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ModelLoaded { summary } => Some(summary.source.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(loaded, vec!["after-cancel"], "{ev:?}");
        assert!(ev.iter().any(|e| matches!(e, Event::Cancelled)));
        assert!(!ev.iter().any(|e| matches!(e, Event::ForwardDone { .. })));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn busy_until_every_sent_command_is_handled() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        assert!(!w.busy());
        w.send(load("m"));
        assert!(w.busy());
        until_idle(&w);
        assert!(!w.busy());
        // A command sent while an older Idle is still queued keeps the worker busy.
        w.send(Command::LoadInputs { path: "a".into() });
        w.send(Command::RunForward);
        let first = until_idle(&w);
        if !first.iter().any(|e| matches!(e, Event::ForwardDone { .. })) {
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
        w.send(load("m"));
        until_idle(&w);
        // ModelLoaded + Idle.
        assert!(count.load(Ordering::SeqCst) >= 2);
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    fn ask(path: &str, question: &str, out: &str) -> Command {
        Command::PrepareMedia(MediaRequest {
            items: vec![Item::Video(path.into())],
            question: question.into(),
            options: PrepareOptions::default(),
            out: out.into(),
        })
    }

    #[test]
    fn prepared_media_is_read_as_inputs_then_shown() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(ask("clip.mp4", "What happens?", "/cache/p.safetensors"));
        let ev = until_idle(&w);
        match &ev[..] {
            [Event::Status(s), Event::InputsLoaded { path, groups, .. }, Event::MediaReady { inputs, preview }] =>
            {
                assert_eq!(s, "Preparing…");
                assert_eq!(path, Path::new("/cache/p.safetensors"));
                assert_eq!(inputs, path);
                assert!(!groups.is_empty());
                assert_eq!(preview.question, "What happens?");
            }
            other => panic!("{other:?}"),
        }
        // The prepared file is what a new model re-reads.
        w.send(load("m2"));
        assert!(matches!(
            &until_idle(&w)[..],
            [Event::ModelLoaded { .. }, Event::InputsLoaded { path, .. }] if path == Path::new("/cache/p.safetensors")
        ));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn media_errors_carry_their_fix_and_the_worker_keeps_serving() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(ask("corrupt.mp4", "What happens?", "p.safetensors"));
        match &until_idle(&w)[..] {
            [Event::Error { message, fix }] => {
                assert!(
                    message.contains("corrupt.mp4") && message.contains("not a media file"),
                    "{message}"
                );
                assert_eq!(fix.as_deref(), Some("pass a video FFmpeg can read"));
            }
            other => panic!("{other:?}"),
        }
        // An error without its own fix gets the worker's.
        w.send(ask("clip.mp4", "  ", "p.safetensors"));
        match &until_idle(&w)[..] {
            [Event::Error {
                message,
                fix: Some(f),
            }] => {
                assert!(message.contains("question is empty"), "{message}");
                assert!(f.contains("question"), "{f}");
            }
            other => panic!("{other:?}"),
        }
        w.send(Command::RunForward);
        assert!(matches!(&until_idle(&w)[..], [Event::ForwardDone { .. }]));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn cancel_stops_a_prepare_before_its_inputs_load() {
        let (started_tx, started_rx) = mpsc::channel();
        let w = Worker::spawn_with(
            Fake {
                prepare_ms: 20_000,
                started: Some(started_tx),
                ..Fake::default()
            },
            || {},
        )
        .expect("spawn");
        w.send(ask("clip.mp4", "What happens?", "p.safetensors"));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("prepare started");
        let t0 = Instant::now();
        w.cancel();
        let mut ev = Vec::new();
        while !ev.iter().any(|e| matches!(e, Event::Cancelled)) {
            ev.extend(until_idle(&w));
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::InputsLoaded { .. } | Event::MediaReady { .. })),
            "{ev:?}"
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn inputs_report_the_flow_groups() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(Command::LoadInputs { path: "a".into() });
        match &until_idle(&w)[..] {
            [Event::InputsLoaded { groups, .. }] => {
                assert_eq!(groups.len(), FAKE_GROUPS.len());
                assert!(groups.contains(&("audio".to_string(), 4)));
            }
            other => panic!("{other:?}"),
        }
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn knockout_reports_its_request_and_result() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(ko("audio", "last", 0, 3));
        match &until_idle(&w)[..] {
            [Event::KnockoutDone {
                source,
                target,
                start: 0,
                end: 3,
                prob,
                base_prob,
                rel_change,
                top1: (3, _),
                ..
            }] => {
                assert_eq!((source.as_str(), target.as_str()), ("audio", "last"));
                assert_eq!(*base_prob, 0.5);
                assert_eq!(*prob, 0.125);
                assert_eq!(*rel_change, -75.0);
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
            source: "video".into(),
            target: "last".into(),
            start: 1,
            end: 2,
        };
        let with = |extra: Vec<KnockoutBlock>| match ko("audio", "last", 0, 1) {
            Command::RunKnockout {
                source,
                target,
                start,
                end,
                ..
            } => Command::RunKnockout {
                source,
                target,
                start,
                end,
                extra,
            },
            other => other,
        };
        w.send(with(vec![video.clone()]));
        match &until_idle(&w)[..] {
            [Event::KnockoutDone { source, extra, .. }] => {
                assert_eq!(source, "audio");
                assert_eq!(extra, &vec![video.clone()]);
            }
            other => panic!("{other:?}"),
        }
        // An empty group in a toggle block is the same error as in the main block.
        let image = KnockoutBlock {
            source: "image".into(),
            ..video
        };
        w.send(with(vec![image]));
        assert!(
            matches!(&until_idle(&w)[..], [Event::Error { message, .. }] if message.contains("\"image\" is empty"))
        );
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
        w.send(ko("audio", "last", 0, 1));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("first knockout started");
        // A drag: three more requests while the first runs; a forward in between still runs.
        w.send(ko("audio", "last", 0, 2));
        w.send(Command::RunForward);
        w.send(ko("audio", "last", 0, 3));
        w.send(ko("video", "last", 1, 3));
        let mut ev = until_idle(&w);
        while w.busy() {
            ev.extend(until_idle(&w));
        }
        let done: Vec<(String, usize, usize)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::KnockoutDone {
                    source, start, end, ..
                } => Some((source.clone(), *start, *end)),
                _ => None,
            })
            .collect();
        assert_eq!(
            done,
            vec![("audio".to_string(), 0, 1), ("video".to_string(), 1, 3)],
            "{ev:?}"
        );
        assert!(ev.iter().any(|e| matches!(e, Event::ForwardDone { .. })));
        let ran = ran.lock().expect("lock").clone();
        assert_eq!(ran.len(), 2, "{ran:?}");
        assert!(!w.busy());
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn an_empty_group_is_an_error_with_a_fix() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(ko("image", "last", 0, 3));
        match &until_idle(&w)[..] {
            [Event::Error { message, fix }] => {
                assert!(message.contains("\"image\" is empty"), "{message}");
                assert!(
                    fix.as_deref().is_some_and(|f| f.contains("audio")),
                    "{fix:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // An error without its own fix gets the worker's.
        w.send(Command::RunSweep {
            pairs: vec![("nope".into(), "last".into())],
            window: 9,
        });
        assert!(
            matches!(&until_idle(&w)[..], [Event::Error { fix: Some(f), .. }] if f.contains("pairs")),
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_sweep_reports_progress_then_records() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(Command::RunSweep {
            pairs: vec![
                ("audio".into(), "last".into()),
                ("video".into(), "last".into()),
            ],
            window: 9,
        });
        let ev = until_idle(&w);
        let progress: Vec<(usize, usize)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::SweepProgress { done, total } => Some((*done, *total)),
                _ => None,
            })
            .collect();
        assert_eq!(progress.last(), Some(&(6, 6)), "{ev:?}");
        assert!(
            matches!(ev.last(), Some(Event::SweepDone { records }) if records.len() == 6),
            "{ev:?}"
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn cancel_stops_a_sweep_and_keeps_what_was_done() {
        let (started_tx, started_rx) = mpsc::channel();
        let w = Worker::spawn_with(
            Fake {
                sweep_step_ms: 200,
                started: Some(started_tx),
                ..Fake::default()
            },
            || {},
        )
        .expect("spawn");
        let pairs: Vec<(String, String)> = ["audio", "video", "question"]
            .iter()
            .map(|s| (s.to_string(), "last".to_string()))
            .collect();
        w.send(Command::RunSweep { pairs, window: 9 });
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("sweep started");
        std::thread::sleep(Duration::from_millis(250));
        let t0 = Instant::now();
        w.cancel();
        // Until the cancel is handled (an `Idle` may come first when the sweep sees the flag before the
        // Cancel command is queued).
        let mut ev = Vec::new();
        while !ev.iter().any(|e| matches!(e, Event::Cancelled)) {
            ev.extend(until_idle(&w));
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        let kept = ev.iter().find_map(|e| match e {
            Event::SweepDone { records } => Some(records.len()),
            _ => None,
        });
        assert!(kept.is_some_and(|n| n < 9), "{ev:?}");
        assert!(ev.iter().any(|e| matches!(e, Event::Cancelled)), "{ev:?}");
        // The worker serves the next command.
        w.send(ko("audio", "last", 0, 1));
        assert!(matches!(&until_idle(&w)[..], [Event::KnockoutDone { .. }]));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    /// The real engine on the bundled demo: a knockout, the errors a user can cause, a sweep.
    #[test]
    fn real_engine_knocks_out_and_sweeps_on_the_demo() {
        let demo = crate::ui::demo::DemoPaths::locate();
        if let Some(msg) = demo.missing_message() {
            eprintln!("SKIPPED: {msg}");
            return;
        }
        let w = Worker::spawn(|| {}).expect("spawn");
        w.send(load(&demo.model.display().to_string()));
        w.send(Command::LoadInputs {
            path: demo.inputs.clone(),
        });
        let mut ev = until_idle(&w);
        while w.busy() {
            ev.extend(until_idle(&w));
        }
        let groups = ev
            .iter()
            .find_map(|e| match e {
                Event::InputsLoaded { groups, .. } => Some(groups.clone()),
                _ => None,
            })
            .expect("inputs loaded");
        assert!(
            groups.iter().any(|(n, c)| n == "audio" && *c > 0),
            "{groups:?}"
        );
        assert!(groups.contains(&("image".to_string(), 0)), "{groups:?}");

        w.send(ko("audio", "last", 0, 3));
        let ev = until_idle(&w);
        assert!(
            matches!(ev.last(), Some(Event::KnockoutDone { prob, base_prob, .. }) if prob != base_prob),
            "{ev:?}"
        );
        // The demo has no image: the error says which groups exist.
        w.send(ko("image", "last", 0, 3));
        let ev = until_idle(&w);
        match ev.last() {
            Some(Event::Error { message, fix }) => {
                assert!(message.contains("empty"), "{message}");
                assert!(
                    fix.as_deref()
                        .is_some_and(|f| f.contains("audio") && !f.contains("image")),
                    "{fix:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        w.send(ko("audio", "last", 2, 9));
        let ev = until_idle(&w);
        assert!(
            matches!(ev.last(), Some(Event::Error { fix: Some(f), .. }) if f.contains("0 ≤ A < B ≤ 3")),
            "{ev:?}"
        );
        w.send(Command::RunSweep {
            pairs: vec![
                ("audio".into(), "last".into()),
                ("video".into(), "question".into()),
            ],
            window: 9,
        });
        let ev = until_idle(&w);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::SweepProgress { done: 6, total: 6 })),
            "{ev:?}"
        );
        assert!(
            matches!(ev.last(), Some(Event::SweepDone { records }) if records.len() == 6),
            "{ev:?}"
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_heatmap_reports_progress_then_its_matrix() {
        let w = Worker::spawn_with(Fake::default(), || {}).expect("spawn");
        w.send(Command::Heatmap {
            metric: HeatMetric::LensAnswer,
        });
        let ev = until_idle(&w);
        let progress: Vec<(usize, usize)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::HeatmapProgress { done, total } => Some((*done, *total)),
                _ => None,
            })
            .collect();
        assert_eq!(progress, vec![(1, 3), (2, 3), (3, 3)], "{ev:?}");
        match ev.last() {
            Some(Event::HeatmapDone {
                metric: HeatMetric::LensAnswer,
                matrix,
                token: (3, _),
                ..
            }) => {
                assert_eq!((matrix.layers, matrix.positions), (FAKE_LAYERS, 4));
                assert_eq!(matrix.get(1, 2), Some(6.0));
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
        let hm = |metric| Command::Heatmap { metric };
        w.send(hm(HeatMetric::AttentionFromLast));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("first heatmap started");
        // Flipping through the combo while the first one runs: only the last choice runs next.
        w.send(hm(HeatMetric::AttentionFromQuestion));
        w.send(hm(HeatMetric::LensGain));
        w.send(hm(HeatMetric::LensAnswer));
        let mut ev = until_idle(&w);
        while w.busy() {
            ev.extend(until_idle(&w));
        }
        let done: Vec<HeatMetric> = ev
            .iter()
            .filter_map(|e| match e {
                Event::HeatmapDone { metric, .. } => Some(*metric),
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
        w.send(hm(HeatMetric::LensGain));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("heatmap started");
        w.cancel();
        let mut ev = Vec::new();
        while !ev.iter().any(|e| matches!(e, Event::Cancelled)) {
            ev.extend(until_idle(&w));
        }
        assert!(
            !ev.iter().any(|e| matches!(e, Event::HeatmapDone { .. })),
            "{ev:?}"
        );
        w.send(hm(HeatMetric::AttentionFromLast));
        assert!(matches!(
            until_idle(&w).last(),
            Some(Event::HeatmapDone { .. })
        ));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    /// The real engine on the bundled demo: every metric through the worker equals the library's matrix,
    /// and media positions carry their times.
    #[test]
    fn real_engine_computes_heatmaps_on_the_demo() {
        let demo = crate::ui::demo::DemoPaths::locate();
        if let Some(msg) = demo.missing_message() {
            eprintln!("SKIPPED: {msg}");
            return;
        }
        let w = Worker::spawn(|| {}).expect("spawn");
        w.send(load(&demo.model.display().to_string()));
        w.send(Command::LoadInputs {
            path: demo.inputs.clone(),
        });
        let mut ev = until_idle(&w);
        while w.busy() {
            ev.extend(until_idle(&w));
        }
        let tokens = ev
            .iter()
            .find_map(|e| match e {
                Event::InputsLoaded { tokens, .. } => Some(tokens.clone()),
                _ => None,
            })
            .expect("inputs loaded");
        assert!(tokens
            .iter()
            .filter(|t| t.group == Group::Audio)
            .all(|t| t.time.is_some()));
        assert!(tokens
            .iter()
            .filter(|t| t.group == Group::Text)
            .all(|t| t.time.is_none()));
        let session = demo.open_session();
        for metric in HeatMetric::ALL {
            w.send(Command::Heatmap { metric });
            let ev = until_idle(&w);
            let Some(Event::HeatmapDone {
                matrix,
                token,
                metric: got,
                ..
            }) = ev.last()
            else {
                panic!("{metric:?}: {ev:?}");
            };
            assert_eq!(*got, metric);
            assert_eq!(token.0, session.trace.top1_id);
            let lib = crate::flow::heatmap::compute(
                metric,
                &session.thinker.decoder,
                &session.trace,
                &session.groups,
                &AtomicBool::new(false),
                &mut |_, _| {},
            )
            .expect("library")
            .expect("not cancelled");
            assert_eq!((matrix.layers, matrix.positions), (3, tokens.len()));
            assert_eq!(matrix.as_ref(), &lib, "{metric:?}");
        }
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    /// The real engine prepares a clip with its sound on the tiny model, reads it as inputs (both
    /// modalities present) and knocks out a time range of it.
    #[test]
    fn real_engine_prepares_a_clip_and_knocks_out_seconds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let (model, clip) = (root.join("omni-tiny-a"), root.join("media/video/basic.mkv"));
        if !model.join("config.json").is_file() || !clip.is_file() {
            eprintln!("SKIPPED: fixtures missing (python3 tools/make_fixtures.py)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("cache/p.safetensors");
        let w = Worker::spawn(|| {}).expect("spawn");
        w.send(load(&model.display().to_string()));
        let t0 = Instant::now();
        w.send(Command::PrepareMedia(MediaRequest {
            items: vec![Item::Video(clip.clone())],
            question: "What is happening in this clip?".into(),
            options: PrepareOptions::default(),
            out: out.clone(),
        }));
        let mut ev = until_idle(&w);
        while w.busy() {
            ev.extend(until_idle(&w));
        }
        eprintln!(
            "load + prepare basic.mkv: {:.2} s",
            t0.elapsed().as_secs_f32()
        );
        let groups = ev
            .iter()
            .find_map(|e| match e {
                Event::InputsLoaded { path, groups, .. } if *path == out => Some(groups.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no inputs loaded: {ev:?}"));
        let size = |name: &str| groups.iter().find(|(n, _)| n == name).map_or(0, |g| g.1);
        // basic.mkv: 8 frames of 280×392 (4×20×28 patches) → 560 video tokens; 4 s of sound → 100.
        assert_eq!((size("video"), size("audio")), (560, 100), "{groups:?}");
        assert!(size("question") > 0 && size("last") == 1, "{groups:?}");
        assert!(out.is_file());
        let preview = ev
            .iter()
            .find_map(|e| match e {
                Event::MediaReady { preview, .. } => Some(Arc::clone(preview)),
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
        w.send(ko("@0-2", "last", 0, 3));
        let ev = until_idle(&w);
        assert!(
            matches!(ev.last(), Some(Event::KnockoutDone { source, prob, base_prob, .. }) if source == "@0-2" && prob != base_prob),
            "{ev:?}"
        );
        w.send(ko("@9-10", "last", 0, 3));
        let ev = until_idle(&w);
        assert!(
            matches!(ev.last(), Some(Event::Error { message, fix: Some(f) }) if message.contains("@9-10") && f.contains("timeline")),
            "{ev:?}"
        );
        // A file that is not media: the library's message, and the worker still serves.
        w.send(Command::PrepareMedia(MediaRequest {
            items: vec![Item::Video(root.join("media/video/notmedia.mp4"))],
            question: "What?".into(),
            options: PrepareOptions::default(),
            out: dir.path().join("cache/q.safetensors"),
        }));
        let ev = until_idle(&w);
        assert!(
            matches!(ev.last(), Some(Event::Error { message, .. }) if message.contains("notmedia.mp4")),
            "{ev:?}"
        );
        w.send(Command::RunForward);
        assert!(matches!(
            until_idle(&w).last(),
            Some(Event::ForwardDone { .. })
        ));
        assert!(w.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn real_engine_reports_missing_model_with_a_fix() {
        let w = Worker::spawn(|| {}).expect("spawn");
        w.send(load("/definitely/not/here"));
        let ev = until_idle(&w);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::Error { fix: Some(_), .. })),
            "{ev:?}"
        );
        w.send(Command::RunForward);
        let ev = until_idle(&w);
        assert!(
            matches!(&ev[..], [Event::Error { message, .. }] if message == "nothing to run"),
            "{ev:?}"
        );
        w.send(ko("audio", "last", 0, 1));
        let ev = until_idle(&w);
        assert!(
            matches!(&ev[..], [Event::Error { message, fix: Some(_) }] if message == "nothing to run"),
            "{ev:?}"
        );
        assert!(w.shutdown(Duration::from_secs(5)));
    }
}
