//! The background worker: one thread owns the model and the analysis session, so the UI thread never
//! blocks on loading or on a forward pass.
//!
//! The UI submits [`Request`]s — the library's own request values ([`KnockoutSpec`], [`SweepSpec`],
//! [`DropSpec`] …) — and gets a [`JobId`] for each; it drains [`Event`]s, every one naming its job:
//! status lines, one kind of progress, the job's [`Reply`]s (the library's outcomes) and exactly one
//! [`Event::Finished`] per job. `notify` (the UI's repaint request) is called after every event.
//!
//! Each job runs inside `catch_unwind`: a panic in model code becomes a failed job and the worker keeps
//! serving. Cancelling is by job and cooperative: the running job stops at its next checkpoint (between
//! stages, between a sweep's layer calls, between generated tokens); a queued one is skipped. When the
//! user drags a control, only the newest queued knockout, heatmap or drop runs.
//!
//! The model side is behind the one-method [`Engine`] trait, so the protocol (ordering, cancel, panic
//! recovery) is tested with a fake engine, without weights.

mod engine;

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::flow::heatmap::{HeatMetric, Heatmap};
use crate::flow::SweepRecord;
use crate::media::prepare::{Item, PrepareOptions};
use crate::media::preview::MediaPreview;
use crate::prompt::TokenMap;
use crate::session::{DropOutcome, DropSpec, KnockoutOutcome, KnockoutSpec, SweepSpec, Watch};

pub use engine::SessionEngine;

/// Names one submitted request in every event about it.
pub type JobId = u64;

/// What the UI asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Resolve (folder or hub id) and load a model; replaces the loaded one. Loaded inputs are re-read for
    /// the new model (device and special tokens may differ).
    LoadModel {
        source: String,
        /// With `auto_dtype`, only where the checkpoint names none.
        dtype: DType,
        /// Load in the checkpoint's own dtype.
        auto_dtype: bool,
        device: Device,
        /// The position numbering (families with two; ignored, with a note, by the others).
        positions: crate::model::Positions,
    },
    /// Read a prepared inputs file (the family processor's tensors).
    LoadInputs(PathBuf),
    /// Media + a question → processor inputs with the loaded model's processor, written to the request's
    /// `out` file, then read exactly as [`Request::LoadInputs`] reads a file; replies
    /// [`Reply::InputsLoaded`] then [`Reply::MediaReady`].
    PrepareMedia(MediaRequest),
    /// Next-token distribution after the prompt ([`TOP_K`] tokens), from the trace it builds (kept for the
    /// knockouts after it).
    Forward,
    /// An attention knockout (one or several blocks run together).
    Knockout(KnockoutSpec),
    /// Every window for every pair; a cancelled sweep replies with what it finished.
    Sweep(SweepSpec),
    /// A layer × position matrix of a metric ([`crate::flow::heatmap`]).
    Heatmap(HeatMetric),
    /// The drop view: what removing positions costs and saves.
    Drop(DropSpec),
    /// Each query head's attention mass per group, from these query rows, in every layer (the heads view).
    Heads(crate::prompt::Selector),
    /// The model's own greedy answer, with the knockout or without (`None`); streamed: a
    /// [`Reply::Generated`] per token, the last one `done`.
    Generate(GenerateSpec),
}

/// A greedy answer to ask for: under this knockout (`None`: the unedited model), at most `max_new` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GenerateSpec {
    pub knockout: Option<KnockoutSpec>,
    pub max_new: usize,
}

/// A greedy answer so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The request it answers.
    pub spec: GenerateSpec,
    pub ids: Vec<u32>,
    pub text: String,
    /// The answer is complete (an end token, `max_new` or a cancel).
    pub done: bool,
    pub seconds: f32,
}

impl Request {
    /// Requests a control fires repeatedly (dragging a knockout's layers, flipping heatmap metrics,
    /// clicking through drop settings): when a newer one of the same kind is queued, only it runs.
    fn latest_wins(&self) -> bool {
        matches!(
            self,
            Request::Knockout(_) | Request::Heatmap(_) | Request::Drop(_) | Request::Heads(_)
        )
    }

    /// For status lines and errors: "knocking out audio -> last in layers 0..9".
    pub fn describe(&self) -> String {
        match self {
            Request::LoadModel { source, .. } => format!("loading model {source}"),
            Request::LoadInputs(path) => format!("reading inputs {}", path.display()),
            Request::Forward => "running the model".into(),
            Request::Knockout(spec) => format!("knocking out {}", spec.describe()),
            Request::Sweep(spec) => format!(
                "sweeping {} pairs with a {}-layer window",
                spec.pairs.len(),
                spec.window
            ),
            Request::Heatmap(metric) => format!("computing the {} heatmap", metric.name()),
            Request::PrepareMedia(r) => format!("preparing {}", item_names(&r.items)),
            Request::Drop(d) => format!("dropping {} from layer {}", d.selector, d.from_layer),
            Request::Heads(rows) => format!("measuring each head's attention from {rows}"),
            Request::Generate(g) => match &g.knockout {
                Some(k) => format!("generating the answer with {} knocked out", k.describe()),
                None => "generating the answer".into(),
            },
        }
    }

    /// What the user can do when this request fails without a fix of its own.
    fn default_fix(&self) -> &'static str {
        match self {
            Request::LoadModel { .. } => {
                "give a model folder (config.json + *.safetensors) or a hub id such as Qwen/Qwen2.5-Omni-3B"
            }
            Request::LoadInputs(_) => {
                "open a .safetensors file of processor outputs (input_ids, and the media tensors it refers to)"
            }
            Request::PrepareMedia(_) => {
                "open a video, audio or image file FFmpeg can read, and type a question"
            }
            Request::Forward => "load a model and an inputs file first",
            Request::Knockout(_) => {
                "choose groups this prompt has and a layer range A..B with A < B ≤ the model's layers"
            }
            Request::Sweep(_) => {
                "choose pairs of groups this prompt has and a window of at least 1 layer"
            }
            Request::Heatmap(_) => {
                "load a model and inputs first; the question metric needs a prompt with a question"
            }
            Request::Heads(_) => "load a model and inputs first",
            Request::Drop(_) => {
                "tick a media group this prompt has (or select seconds with sound or pictures) and a layer below the model's layer count"
            }
            Request::Generate(_) => {
                "load a model with its tokenizer and an inputs file first; a knockout needs groups this prompt has"
            }
        }
    }
}

/// What [`Request::PrepareMedia`] prepares and where the inputs go.
#[derive(Debug, Clone)]
pub struct MediaRequest {
    /// In prompt order.
    pub items: Vec<Item>,
    pub question: String,
    pub options: PrepareOptions,
    /// The inputs file to write (the app's cache).
    pub out: PathBuf,
}

/// What the app shows about a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// As the user gave it (folder or `owner/name[@rev]`).
    pub source: String,
    /// Folder holding config.json (a hub snapshot for hub ids).
    pub dir: PathBuf,
    /// The family (`config.json`'s model_type), e.g. `qwen2_5_omni`.
    pub family: String,
    pub parameters: usize,
    pub layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub dtype: String,
    pub device: String,
    pub has_tokenizer: bool,
    pub load_seconds: f32,
    /// The position numbering in use, for families with more than one (video-SALMONN 2+).
    pub positions: Option<crate::model::Positions>,
}

/// The next tokens after the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardResult {
    /// `(id, decoded text — empty without a tokenizer, probability)`, most likely first.
    pub top_k: Vec<(u32, String, f32)>,
    pub positions: usize,
    pub seconds: f32,
    /// The trace the forward built: its size and where it lives.
    pub trace: Option<crate::session::TraceInfo>,
}

/// A heatmap and the answer token its lens metrics follow.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapOutcome {
    pub metric: HeatMetric,
    /// Shared: the UI hands it to the GPU without copying.
    pub matrix: Arc<Heatmap>,
    /// The followed token (the baseline top-1): id and text.
    pub token: (u32, String),
    pub seconds: f32,
}

/// How many next tokens a [`Request::Forward`] reports.
pub const TOP_K: usize = 5;

/// What a job produced: the library's outcomes, as they are.
#[derive(Debug, Clone)]
pub enum Reply {
    ModelLoaded(ModelSummary),
    /// The prompt read from `path`: its token map (every position's group, item, seconds and text).
    InputsLoaded {
        path: PathBuf,
        map: Arc<TokenMap>,
    },
    /// The timeline of media prepared by [`Request::PrepareMedia`], after its inputs were read.
    MediaReady {
        inputs: PathBuf,
        preview: Arc<MediaPreview>,
    },
    Forward(ForwardResult),
    Knockout(Box<KnockoutOutcome>),
    /// A sweep's records (fewer than requested when it was cancelled).
    Sweep(Vec<SweepRecord>),
    Heatmap(HeatmapOutcome),
    Drop(Arc<DropOutcome>),
    /// Each head's attention mass per group (`[layer][head]{group}`) from the query rows it names.
    Heads {
        rows: crate::prompt::Selector,
        per_head: Arc<crate::flow::attention::HeadMass>,
    },
    /// A greedy answer as it grows (one per token), the last one `done`.
    Generated(Generation),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Its replies were sent.
    Done,
    /// Stopped or skipped by a cancel.
    Cancelled,
    /// Skipped: a newer request of the same kind was queued behind it.
    Superseded,
    /// It failed; `fix` says what the user can do, where known.
    Failed {
        message: String,
        fix: Option<String>,
    },
}

/// Reports to the UI.
#[derive(Debug, Clone)]
pub enum Event {
    /// What the job is doing, one line.
    Status { job: JobId, text: String },
    /// `done` of `total` steps of the job (configurations of a sweep, steps of a heatmap or a drop).
    Progress {
        job: JobId,
        done: usize,
        total: usize,
    },
    /// A result of the job (a load of a model with inputs loaded replies twice).
    Reply { job: JobId, reply: Reply },
    /// The job ended; always the last event about it.
    Finished { job: JobId, finish: Finish },
    /// The queue is empty: nothing runs until the next request. `handled` counts every job taken off the
    /// queue so far (run or skipped), so the UI can tell whether jobs it submitted since are still
    /// outstanding ([`Worker::busy`]).
    Idle { handled: u64 },
}

/// Why a job did not finish.
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

    /// A GPU's failure (out of memory, a driver error) gets the GPU's fix when it brought none.
    pub fn or_gpu_fix(self) -> Self {
        match self {
            Failure::Error { message, fix: None } => {
                let fix = crate::device::gpu_failure_fix(None, &message);
                Failure::Error { message, fix }
            }
            other => other,
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
        if matches!(e, crate::Error::Cancelled) {
            return Failure::Cancelled;
        }
        let (message, fix) = split_fix(&e.to_string());
        Failure::Error { message, fix }
    }
}

impl From<candle_core::Error> for Failure {
    fn from(e: candle_core::Error) -> Self {
        crate::Error::from(e).into()
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

/// What the engine may do while a job runs.
pub struct Ctx<'a> {
    job: JobId,
    events: &'a Sender<Event>,
    notify: &'a (dyn Fn() + Send + Sync),
    cancel: &'a AtomicBool,
}

impl Ctx<'_> {
    pub fn job(&self) -> JobId {
        self.job
    }

    fn emit(&self, e: Event) {
        // A closed channel means the UI is gone; the job finishes and the loop then ends.
        let _ = self.events.send(e);
        (self.notify)();
    }

    pub fn status(&self, text: impl Into<String>) {
        self.emit(Event::Status {
            job: self.job,
            text: text.into(),
        });
    }

    /// A reply before the job ends (a streamed answer's tokens).
    pub fn reply(&self, reply: Reply) {
        self.emit(Event::Reply {
            job: self.job,
            reply,
        });
    }

    pub fn progress(&self, done: usize, total: usize) {
        self.emit(Event::Progress {
            job: self.job,
            done,
            total,
        });
    }

    /// The flag library loops poll themselves: set when this job is cancelled.
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

    /// Status, progress and cancel as the library's session takes them; `f` runs with it.
    pub fn with_watch<R>(&self, f: impl FnOnce(&Watch) -> R) -> R {
        let status = |s: &str| self.status(s);
        let progress = |d: usize, t: usize| self.progress(d, t);
        f(&Watch {
            cancel: self.cancel,
            status: &status,
            progress: &progress,
        })
    }
}

/// The model side of the worker: runs one request and returns its replies (several for a model load
/// that re-reads inputs, or for prepared media).
pub trait Engine: Send + 'static {
    fn run(&mut self, request: &Request, ctx: &Ctx) -> Outcome<Vec<Reply>>;
}

/// Which jobs are cancelled: every job below `below` (a cancel of everything), the ids in `ids`, and the
/// running one through its flag.
#[derive(Default)]
struct Cancels {
    below: AtomicU64,
    ids: Mutex<BTreeSet<JobId>>,
    running: AtomicU64,
    flag: AtomicBool,
}

impl Cancels {
    fn is_cancelled(&self, job: JobId) -> bool {
        job < self.below.load(Ordering::SeqCst)
            || self.ids.lock().map(|s| s.contains(&job)).unwrap_or(false)
    }

    fn start(&self, job: JobId) {
        self.running.store(job, Ordering::SeqCst);
        self.flag.store(self.is_cancelled(job), Ordering::SeqCst);
    }

    fn cancel(&self, job: JobId) {
        if let Ok(mut s) = self.ids.lock() {
            s.insert(job);
        }
        if self.running.load(Ordering::SeqCst) == job {
            self.flag.store(true, Ordering::SeqCst);
        }
    }

    fn cancel_below(&self, next: JobId) {
        self.below.fetch_max(next, Ordering::SeqCst);
        if self.running.load(Ordering::SeqCst) < next {
            self.flag.store(true, Ordering::SeqCst);
        }
    }

    fn forget(&self, job: JobId) {
        if let Ok(mut s) = self.ids.lock() {
            s.remove(&job);
        }
    }
}

enum Command {
    /// Boxed: requests are large (a sweep's pairs, a model's device) next to `Shutdown`.
    Run {
        job: JobId,
        request: Box<Request>,
    },
    Shutdown,
}

/// Handle held by the UI. Dropping it asks the thread to stop (without waiting for it).
pub struct Worker {
    tx: Sender<Command>,
    rx: Receiver<Event>,
    /// Jobs submitted and jobs the worker reported handled.
    next: Cell<JobId>,
    handled: Cell<u64>,
    cancels: Arc<Cancels>,
    thread: Option<JoinHandle<()>>,
}

/// Job ids start here, so that 0 is never a job (the running-job marker starts at 0).
const FIRST_JOB: JobId = 1;

impl Worker {
    /// A worker over the real model code.
    pub fn spawn(notify: impl Fn() + Send + Sync + 'static) -> std::io::Result<Self> {
        Self::spawn_with(SessionEngine::default(), notify)
    }

    pub fn spawn_with<E: Engine>(
        engine: E,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, rx) = crossbeam_channel::unbounded();
        let cancels = Arc::new(Cancels::default());
        let shared = Arc::clone(&cancels);
        let thread = std::thread::Builder::new()
            .name("avflow-worker".into())
            // Model code may build deep call chains in debug builds; 2 MiB is tight.
            .stack_size(32 << 20)
            .spawn(move || run_loop(engine, cmd_rx, ev_tx, shared, Box::new(notify)))?;
        Ok(Self {
            tx,
            rx,
            next: Cell::new(FIRST_JOB),
            handled: Cell::new(0),
            cancels,
            thread: Some(thread),
        })
    }

    /// Queues a request; its job id, or `None` when the worker thread is gone.
    pub fn submit(&self, request: Request) -> Option<JobId> {
        let job = self.next.get();
        self.tx
            .send(Command::Run {
                job,
                request: Box::new(request),
            })
            .ok()?;
        self.next.set(job + 1);
        Some(job)
    }

    /// Cancels one job: stops it at its next checkpoint if it runs, skips it if it is queued.
    pub fn cancel(&self, job: JobId) {
        self.cancels.cancel(job);
    }

    /// Cancels every job submitted so far (the status line's Cancel button).
    pub fn cancel_all(&self) {
        self.cancels.cancel_below(self.next.get());
    }

    /// Some job submitted through this handle has not finished yet (as of the last [`Self::poll`]).
    pub fn busy(&self) -> bool {
        self.handled.get() < self.next.get() - FIRST_JOB
    }

    fn observe(&self, e: &Event) {
        if let Event::Idle { handled } = e {
            self.handled.set(*handled);
        }
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
        self.stop();
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

    fn stop(&self) {
        // Seen by the running job at its next checkpoint, long before the queue reaches the shutdown.
        self.cancel_all();
        let _ = self.tx.send(Command::Shutdown);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
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
    cancels: Arc<Cancels>,
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
        let next = match backlog.pop_front() {
            Some(c) => c,
            None => match commands.recv() {
                Ok(c) => c,
                Err(_) => break,
            },
        };
        let Command::Run { job, request } = next else {
            break;
        };
        let request: Request = *request;
        handled += 1;
        let finish = if cancels.is_cancelled(job) {
            tracing::debug!("skipping job {job} ({}): cancelled", request.describe());
            Finish::Cancelled
        } else if request.latest_wins() && superseded(&commands, &mut backlog, &request) {
            tracing::debug!(
                "skipping job {job} ({}): a newer one is queued",
                request.describe()
            );
            Finish::Superseded
        } else {
            cancels.start(job);
            let ctx = Ctx {
                job,
                events: &events,
                notify: notify.as_ref(),
                cancel: &cancels.flag,
            };
            let what = request.describe();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.run(&request, &ctx)
            }));
            cancels.start(0);
            match result {
                Ok(Ok(replies)) => {
                    for reply in replies {
                        emit(Event::Reply { job, reply });
                    }
                    Finish::Done
                }
                Ok(Err(Failure::Cancelled)) => Finish::Cancelled,
                Ok(Err(f)) => match f.or_gpu_fix().or_fix(request.default_fix()) {
                    Failure::Error { message, fix } => Finish::Failed { message, fix },
                    Failure::Cancelled => Finish::Cancelled,
                },
                Err(payload) => Finish::Failed {
                    message: format!(
                        "internal error while {what}: {}",
                        panic_message(payload.as_ref())
                    ),
                    fix: Some(
                        "this is a bug in avflow — please report it with the terminal output. The \
                         app is still usable; reload the model if results look wrong."
                            .into(),
                    ),
                },
            }
        };
        cancels.forget(job);
        emit(Event::Finished { job, finish });
        if backlog.is_empty() && commands.is_empty() {
            emit(Event::Idle { handled });
        }
    }
}

/// Moves everything queued into `backlog` and says whether a request of `request`'s kind is among it.
fn superseded(
    commands: &Receiver<Command>,
    backlog: &mut VecDeque<Command>,
    request: &Request,
) -> bool {
    backlog.extend(commands.try_iter());
    let kind = std::mem::discriminant(request);
    backlog.iter().any(
        |c| matches!(c, Command::Run { request: r, .. } if std::mem::discriminant(&**r) == kind),
    )
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

/// `basic.mkv, tone.wav`: the items' file names, for status lines.
pub fn item_names(items: &[Item]) -> String {
    let names: Vec<String> = items.iter().map(Item::file_name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests;
