//! The window: top bar (model + inputs), status line, and the registered panels as the panes of the
//! [`super::workspace`].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use crossbeam_channel::{Receiver, TryRecvError};
use egui::{Color32, Key, KeyboardShortcut, Modifiers, RichText};
use serde::{Deserialize, Serialize};

use crate::model::ModelSource;
use crate::prompt::Selector;
use crate::session::{KnockoutSpec, SweepSpec};
use crate::worker::{Event, Finish, JobId, ModelSummary, Reply, Request, Worker};

use super::demo::DemoPaths;
use super::dialog::{dialog_support, pick_inputs_file, DialogSupport};
use super::panel::{
    registry, Action, AnswerView, HeatResult, HeatmapView, InputsView, Panel, SweepView, ViewState,
};
use super::workspace::{Workspace, RESET_LABEL, RESET_SHORTCUT};
use super::AppOptions;

#[cfg(test)]
mod answer_tests;
mod ask;
mod compare;
#[cfg(test)]
mod compare_tests;
mod export_drop;
#[cfg(test)]
mod heads_tests;
#[cfg(test)]
mod heatmap_tests;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod knockout_tests;
#[cfg(test)]
mod salmonn_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod workspace_tests;

/// Opens the heatmap's pane and computes its metric. Not Cmd+H: macOS hides the app with it.
pub const HEATMAP_SHORTCUT: KeyboardShortcut =
    KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::H);

/// Key under which eframe persists [`Recent`].
pub const STORAGE_KEY: &str = "avflow.recent";

/// What the app remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    pub model: Option<String>,
    pub inputs: Option<PathBuf>,
    /// Media and inputs files opened, newest first (the Recent menu). `default`: settings saved before
    /// these fields existed still load.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The last question asked.
    #[serde(default)]
    pub question: Option<String>,
}

/// What to load at start-up, and what to pre-fill without loading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Startup {
    /// The prompt's media (`--video`) and question (`--question`, else last time's).
    pub media: Vec<crate::media::prepare::Item>,
    pub question_field: String,
    /// Prepare `media` + `question_field` with `load_model` once it has loaded, then answer.
    pub ask: bool,
    pub model_field: String,
    pub inputs_field: String,
    pub load_model: Option<String>,
    pub load_inputs: Option<PathBuf>,
    /// Load the demo (both files exist).
    pub demo: bool,
    pub notes: Vec<String>,
}

/// Start-up choice: command-line values win (the rest is only pre-filled from last time); with none, the
/// model and inputs of last time if they still exist; otherwise the bundled demo.
pub fn plan_startup(
    model: Option<&str>,
    inputs: Option<&Path>,
    video: Option<&Path>,
    question: Option<&str>,
    recent: &Recent,
    demo: &DemoPaths,
) -> Startup {
    let mut s = Startup::default();
    let question = question.map(str::trim).filter(|q| !q.is_empty());
    s.question_field = question
        .map(str::to_string)
        .or_else(|| recent.question.clone())
        .unwrap_or_default();
    s.media = video
        .map(|v| vec![crate::media::prepare::Item::Video(v.to_path_buf())])
        .unwrap_or_default();
    let recent_model = recent
        .model
        .clone()
        .filter(|m| !m.trim().is_empty() && model_still_there(m));
    let recent_inputs = recent.inputs.clone().filter(|p| p.is_file());
    let field = |p: &Path| p.display().to_string();
    if let (Some(v), Some(_)) = (video, question) {
        // Asked at start-up: with the given model, else last time's, else the demo model. Nothing else is
        // read: the prepared video becomes the inputs.
        s.ask = true;
        let demo_model = demo
            .model
            .join("config.json")
            .is_file()
            .then(|| field(&demo.model));
        match model.map(str::to_string).or(recent_model).or(demo_model) {
            Some(m) => {
                s.model_field = m.clone();
                s.load_model = Some(m);
            }
            None => s.notes.push(format!(
                "Load a model (folder or hub id) and press Ask to prepare {}.",
                v.display()
            )),
        }
        if let Some(i) = inputs {
            s.inputs_field = field(i);
            s.notes.push(format!(
                "--inputs {} is not read: the --video is prepared and read instead.",
                i.display()
            ));
        }
        return s;
    }
    if let Some(v) = video {
        s.notes.push(format!(
            "Type a question and press Ask to prepare {} with the model.",
            v.display()
        ));
    } else if question.is_some() {
        s.notes.push(
            "Open a video, audio or image (or drop one on the window) and press Ask to put the question to it."
                .into(),
        );
    }
    if model.is_some() || inputs.is_some() {
        s.load_model = model.map(str::to_string);
        s.load_inputs = inputs.map(Path::to_path_buf);
        s.model_field = model
            .map(str::to_string)
            .or(recent_model)
            .unwrap_or_default();
        s.inputs_field = inputs
            .map(field)
            .or(recent_inputs.as_deref().map(field))
            .unwrap_or_default();
        if s.load_model.is_none() && s.model_field.is_empty() {
            s.notes
                .push("Load a model (folder or hub id) to read the inputs.".into());
        }
        if s.load_model.is_none() && !s.model_field.is_empty() {
            s.load_model = Some(s.model_field.clone());
        }
        return s;
    }
    if let Some(m) = recent_model {
        s.model_field = m.clone();
        s.load_model = Some(m);
        if let Some(i) = recent_inputs {
            s.inputs_field = field(&i);
            s.load_inputs = Some(i);
        }
        return s;
    }
    s.model_field = field(&demo.model);
    s.inputs_field = field(&demo.inputs);
    match (demo.missing_message(), &demo.clip) {
        (Some(msg), _) => s.notes.push(msg),
        (None, Some(clip)) => {
            // The bundled demo clip, asked with the demo model: frames, sound and answer in one go.
            s.demo = true;
            s.ask = true;
            s.load_model = Some(s.model_field.clone());
            s.inputs_field = String::new();
            s.media = vec![crate::media::prepare::Item::Video(clip.clone())];
            if s.question_field.is_empty() {
                s.question_field = super::demo::DEMO_QUESTION.to_string();
            }
        }
        (None, None) => {
            s.demo = true;
            s.load_model = Some(s.model_field.clone());
            s.load_inputs = Some(demo.inputs.clone());
        }
    }
    s
}

/// A remembered local folder that was deleted is dropped; hub ids are kept (they resolve from the cache).
fn model_still_there(m: &str) -> bool {
    Path::new(m).is_dir() || matches!(ModelSource::parse(m), Ok(ModelSource::Hub { .. }))
}

/// One line about the loaded model.
pub fn model_line(m: &ModelSummary) -> String {
    format!(
        "{} · {} params · {} layers · hidden {} · vocab {} · {} on {} · {}loaded in {:.1} s",
        m.source,
        human_count(m.parameters),
        m.layers,
        m.hidden,
        m.vocab,
        m.dtype,
        m.device,
        if m.has_tokenizer {
            ""
        } else {
            "no tokenizer · "
        },
        m.load_seconds
    ) + &m
        .positions
        .map(|p| format!(" · {} positions", p.name()))
        .unwrap_or_default()
}

/// `1234` → `1.2 K`, `3_000_000_000` → `3.0 B`.
pub fn human_count(n: usize) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.1} B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} K", x / 1e3)
    } else {
        n.to_string()
    }
}

/// The status line.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Info(String),
    Error {
        message: String,
        fix: Option<String>,
    },
}

/// The first minute, measured from launch: when the model was ready, the prompt read (prepared first
/// when asked in the app), and the first knockout's number shown (its trace included).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FirstMinute {
    pub model_s: Option<f32>,
    pub prompt_s: Option<f32>,
    pub first_number_s: Option<f32>,
}

impl FirstMinute {
    /// `first number 12.3 s after launch (model 10.1 s, prompt 11.0 s)`; `None` until there is one.
    pub fn line(&self) -> Option<String> {
        let total = self.first_number_s?;
        let part = |name: &str, v: Option<f32>| v.map(|v| format!("{name} {v:.1} s"));
        let parts: Vec<String> = [part("model", self.model_s), part("prompt", self.prompt_s)]
            .into_iter()
            .flatten()
            .collect();
        Some(format!(
            "first number {total:.1} s after launch ({})",
            parts.join(", ")
        ))
    }
}

pub struct AvflowApp {
    /// When the app started, and the first minute's milestones since.
    started: std::time::Instant,
    first_minute: FirstMinute,
    device: Device,
    dtype: DType,
    /// Load in the checkpoint's own dtype (`dtype` where it names none).
    auto_dtype: bool,
    positions: crate::model::Positions,
    ctx: egui::Context,
    worker: Option<Worker>,
    model_field: String,
    inputs_field: String,
    view: ViewState,
    panels: Vec<Box<dyn Panel>>,
    status: Status,
    /// Shown under the status line until dismissed.
    notes: Vec<String>,
    demo: DemoPaths,
    demo_loaded: bool,
    recent: Recent,
    /// Start-up chain: inputs to read once the model has loaded, then run once.
    pending_inputs: Option<PathBuf>,
    autorun: bool,
    dialog: Option<Receiver<Option<PathBuf>>>,
    focus_inputs: bool,
    /// The media and question being asked (see [`ask`]).
    prompt: ask::AskState,
    /// Numbers media previews, so the media panel makes its textures once per preview.
    media_serial: u64,
    /// The panels as dockable panes: their layout (saved between runs) and which tabs are open.
    workspace: Workspace,
    /// Bring this panel's pane (by name) into view on the next frame: its tab opens and it scrolls to the
    /// top (keyboard shortcuts, tests).
    focus_panel: Option<&'static str>,
    /// The heatmap was opened by its shortcut: focus it again when its result arrives (another tab may
    /// have been opened over it meanwhile).
    focus_heatmap_on_result: bool,
    /// Numbers heatmap results, so the GPU uploads a matrix only when a new one arrives.
    heatmap_generation: u64,
    /// The heatmap's GPU resources were looked for (installed when the renderer is wgpu).
    gpu_checked: bool,
    /// Export… in flight: the save dialog, then the thread writing the figure.
    exports: export_drop::Exports,
    /// The Compare pane's second run: its worker and where the comparison is.
    compare: compare::CompareRunner,
}

impl AvflowApp {
    /// The app, writing prepared inputs to [`super::media_input::default_cache_dir`].
    pub fn new(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        opts: AppOptions,
    ) -> Self {
        Self::with_cache_dir(ctx, storage, opts, super::media_input::default_cache_dir())
    }

    /// [`Self::new`] writing prepared inputs to `cache_dir` (tests keep them in a temporary folder).
    pub fn with_cache_dir(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        opts: AppOptions,
        cache_dir: PathBuf,
    ) -> Self {
        let recent: Recent = storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default();
        let mut demo = DemoPaths::locate();
        if !opts.demo_clip {
            demo.clip = None;
        }
        let plan = plan_startup(
            opts.model.as_deref(),
            opts.inputs.as_deref(),
            opts.video.as_deref(),
            opts.question.as_deref(),
            &recent,
            &demo,
        );
        let panels = registry();
        let workspace = Workspace::load(storage, panels.iter().map(|p| p.name()).collect());
        let mut app = Self {
            started: std::time::Instant::now(),
            first_minute: FirstMinute::default(),
            device: opts.device,
            dtype: opts.dtype,
            auto_dtype: opts.auto_dtype,
            positions: opts.positions,
            ctx: ctx.clone(),
            worker: None,
            model_field: plan.model_field,
            inputs_field: plan.inputs_field,
            view: ViewState::default(),
            panels,
            workspace,
            status: Status::Info("Ready.".into()),
            notes: plan.notes.into_iter().chain(opts.device_note).collect(),
            demo,
            demo_loaded: false,
            recent,
            pending_inputs: plan.load_inputs,
            autorun: plan.demo,
            dialog: None,
            focus_inputs: false,
            prompt: ask::AskState::new(plan.media, plan.question_field, cache_dir),
            media_serial: 0,
            focus_panel: None,
            focus_heatmap_on_result: false,
            heatmap_generation: 0,
            gpu_checked: false,
            exports: export_drop::Exports::default(),
            compare: compare::CompareRunner::default(),
        };
        app.start_worker();
        match plan.load_model {
            Some(m) => app.load_model(m),
            None => app.pending_inputs = None,
        }
        app.prompt.pending = plan.ask && app.view.busy;
        app
    }

    fn start_worker(&mut self) {
        let ctx = self.ctx.clone();
        match Worker::spawn(move || ctx.request_repaint()) {
            Ok(w) => self.worker = Some(w),
            Err(e) => {
                self.status = Status::Error {
                    message: format!("could not start the worker thread: {e}"),
                    fix: Some(
                        "the system is out of threads or memory; close other programs and restart"
                            .into(),
                    ),
                }
            }
        }
    }

    /// Queues `request`; its job id, or `None` (with the error shown) when the worker is gone.
    fn submit(&mut self, request: Request) -> Option<JobId> {
        let job = self.worker.as_ref().and_then(|w| w.submit(request));
        if job.is_some() {
            self.view.busy = true;
        } else {
            self.status = Status::Error {
                message: "the worker is not running".into(),
                fix: Some("restart avflow".into()),
            };
        }
        job
    }

    /// For families with two position numberings (video-SALMONN 2+): which one the loaded model runs; a
    /// change reloads the model with the other (the weights come from the page cache).
    fn positions_choice(&mut self, ui: &mut egui::Ui) {
        use crate::model::Positions;
        let Some((current, source)) = self
            .view
            .model
            .as_ref()
            .and_then(|m| Some((m.positions?, m.source.clone())))
        else {
            return;
        };
        let mut chosen = current;
        egui::ComboBox::from_label("positions")
            .selected_text(current.name())
            .show_ui(ui, |ui| {
                for p in [Positions::Inference, Positions::Training] {
                    ui.selectable_value(&mut chosen, p, p.name());
                }
            })
            .response
            .on_hover_text(
                "Position ids: `inference` is what the authors' released inference computes (the video-only \
                 numbering), `training` what the model was trained with (audio and video on one time axis). \
                 Changing it reloads the model.",
            );
        if chosen != current && !self.view.busy {
            self.positions = chosen;
            // The worker re-reads the inputs for the reloaded model: answer them again.
            self.autorun = self.view.inputs.is_some();
            self.load_model(source);
        }
    }

    fn load_model(&mut self, source: String) {
        let source = source.trim().to_string();
        if source.is_empty() {
            self.status = Status::Error {
                message: "no model given".into(),
                fix: Some("type a model folder or a hub id such as Qwen/Qwen2.5-Omni-3B".into()),
            };
            return;
        }
        self.status = Status::Info(format!("Loading {source}…"));
        self.submit(Request::LoadModel {
            source,
            dtype: self.dtype,
            auto_dtype: self.auto_dtype,
            device: self.device.clone(),
            positions: self.positions,
        });
    }

    fn load_inputs(&mut self, path: PathBuf) {
        if path.as_os_str().is_empty() {
            self.status = Status::Error {
                message: "no inputs file given".into(),
                fix: Some(
                    "press Open… (Ctrl+O) or type the path of a .safetensors inputs file".into(),
                ),
            };
            return;
        }
        self.status = Status::Info(format!("Reading {}…", path.display()));
        self.submit(Request::LoadInputs(path));
    }

    fn load_demo(&mut self) {
        match self.demo.missing_message() {
            Some(msg) => {
                self.status = Status::Error {
                    message: "the bundled demo is missing".into(),
                    fix: Some(msg),
                }
            }
            None => {
                self.model_field = self.demo.model.display().to_string();
                self.inputs_field = self.demo.inputs.display().to_string();
                self.pending_inputs = Some(self.demo.inputs.clone());
                self.autorun = true;
                self.load_model(self.model_field.clone());
            }
        }
    }

    fn run_forward(&mut self) {
        if self.view.model.is_none() || self.view.inputs.is_none() {
            self.status = Status::Error {
                message: "nothing to run yet".into(),
                fix: Some("load a model and an inputs file first".into()),
            };
            return;
        }
        if self.view.busy {
            return;
        }
        self.status = Status::Info("Running…".into());
        self.submit(Request::Forward);
    }

    fn open_dialog(&mut self) {
        match dialog_support() {
            DialogSupport::Unavailable(msg) => {
                self.status = Status::Error {
                    message: "cannot open a file dialog".into(),
                    fix: Some(msg),
                };
                self.focus_inputs = true;
            }
            DialogSupport::Available => {
                self.prompt.dialog_for = ask::OpenFor::Inputs;
                let start = PathBuf::from(&self.inputs_field);
                self.dialog = Some(pick_inputs_file(Some(&start)));
            }
        }
    }

    fn poll_dialog(&mut self) {
        let Some(rx) = &self.dialog else { return };
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {
                self.ctx
                    .request_repaint_after(std::time::Duration::from_millis(100));
            }
            Ok(Some(path)) => {
                self.dialog = None;
                self.dialog_chose(path);
            }
            Ok(None) | Err(TryRecvError::Disconnected) => {
                self.dialog = None;
                self.status = Status::Info(
                    "No file chosen. If no dialog appeared, type the inputs path in the field and press Enter."
                        .into(),
                );
                self.focus_inputs = true;
            }
        }
    }

    fn poll_worker(&mut self) {
        let Some(worker) = &self.worker else { return };
        let events = match worker.poll() {
            Ok(ev) => ev,
            Err(_) => {
                self.worker = None;
                self.view.busy = false;
                self.status = Status::Error {
                    message: "the worker stopped unexpectedly; it was restarted and the model must be reloaded".into(),
                    fix: Some("load the model again".into()),
                };
                self.view.model = None;
                self.view.inputs = None;
                self.start_worker();
                return;
            }
        };
        for e in events {
            self.on_event(e);
        }
        self.view.busy = self.worker.as_ref().is_some_and(Worker::busy);
        if !self.view.busy {
            // Whatever ended them (done, cancelled, an error before they ran), nothing runs now.
            self.view.sweep.running = false;
            self.view.sweep.job = None;
            self.view.heatmap.running = None;
            self.view.heatmap.job = None;
            self.view.drop.running = false;
            self.view.drop.job = None;
        }
    }

    fn run_knockout(&mut self, spec: KnockoutSpec) {
        if self.view.model.is_none() || self.view.inputs.is_none() {
            return;
        }
        // No busy check: the worker keeps only the newest queued knockout.
        self.submit(Request::Knockout(spec));
    }

    /// The knockout history of the loaded model on `inputs`, from its file (an empty one when new).
    fn load_history(&mut self, inputs: &Path) {
        let Some(model) = self.view.model.as_ref().map(|m| m.source.clone()) else {
            return;
        };
        let dir = self.prompt.cache_dir.parent().map_or_else(
            || self.prompt.cache_dir.join("history"),
            |p| p.join("history"),
        );
        let file = super::history::KnockoutHistory::file_in(&dir, &model, inputs);
        let (history, note) = super::history::KnockoutHistory::load(&file, &model, inputs);
        if let Some(n) = &note {
            self.notes.push(n.clone());
        }
        self.view.history = super::history::HistoryView {
            history,
            file: Some(file),
            note,
        };
    }

    /// Writes the history file (atomically); a failure is shown in the panel, nothing else stops.
    fn save_history(&mut self) {
        let h = &mut self.view.history;
        if let Some(file) = &h.file {
            if let Err(e) = h.history.save(file) {
                h.note = Some(format!(
                    "The knockout history could not be saved to {}: {e}",
                    file.display()
                ));
            }
        }
    }

    /// Follows another answer from now on; the shown knockout is rerun for it.
    fn track(&mut self, tracked: super::panel::Tracked) {
        self.view.tracked = tracked;
        if let Some(k) = &self.view.knockout {
            let mut spec = k.spec.clone();
            self.view.tracked.apply(&mut spec);
            self.run_knockout(spec);
        }
    }

    /// The model's own answers: unedited, and with the shown knockout when there is one.
    fn generate(&mut self) {
        if self.view.model.is_none() || self.view.inputs.is_none() {
            return;
        }
        self.cancel_generate();
        self.view.generation = Default::default();
        let knockout = self.view.knockout.as_ref().map(|k| k.spec.clone());
        let mut jobs = Vec::new();
        let sides = std::iter::once(None).chain(knockout.map(Some));
        for k in sides {
            let spec = crate::worker::GenerateSpec {
                knockout: k,
                max_new: super::answer::MAX_NEW,
            };
            jobs.extend(self.submit(Request::Generate(spec)));
        }
        self.view.generation.jobs = jobs;
        self.status = Status::Info("Generating the model's answers…".into());
    }

    fn cancel_generate(&mut self) {
        if let Some(w) = &self.worker {
            for &job in &self.view.generation.jobs {
                w.cancel(job);
            }
        }
    }

    fn run_sweep(&mut self, pairs: Vec<(Selector, Selector)>, window: usize) {
        if self.view.model.is_none() || self.view.inputs.is_none() || self.view.sweep.running {
            return;
        }
        self.status = Status::Info("Sweeping…".into());
        let mut spec = SweepSpec::centred(pairs, window);
        spec.tokens = vec![self.view.tracked.token.as_ref().map(|t| t.0)];
        // A typed answer is what the curves follow then (its teacher-forced probability per window);
        // options are read in the knockout pane, not plotted.
        spec.answers.answer = self.view.tracked.answers.answer.clone();
        let job = self.submit(Request::Sweep(spec));
        self.view.sweep = SweepView {
            running: job.is_some(),
            job,
            stopped: false,
            progress: None,
            started: Some(std::time::Instant::now()),
            records: Vec::new(),
            window,
            seconds: 0.0,
        };
    }

    /// Stops the running sweep (the windows it finished are kept).
    fn cancel_sweep(&mut self) {
        if let (Some(w), Some(job)) = (&self.worker, self.view.sweep.job) {
            w.cancel(job);
            self.view.sweep.stopped = true;
        }
        self.status = Status::Info("Cancelling the sweep…".into());
    }

    fn cancel_heatmap(&mut self) {
        if let (Some(w), Some(job)) = (&self.worker, self.view.heatmap.job) {
            w.cancel(job);
        }
        self.status = Status::Info("Cancelling the heatmap…".into());
    }

    /// The status line's Cancel: every job submitted so far.
    fn cancel_all(&mut self) {
        if let Some(w) = &self.worker {
            w.cancel_all();
        }
        self.cancel_compare();
        if self.view.sweep.running {
            self.view.sweep.stopped = true;
        }
        self.status = Status::Info("Cancelling…".into());
    }

    /// Shows `metric`; computes it unless it is already there or running. A newer request replaces a
    /// queued one in the worker; one already running finishes (or is cancelled from the panel).
    fn show_heatmap(&mut self, metric: crate::flow::heatmap::HeatMetric) {
        self.view.heatmap.metric = metric;
        let hm = &self.view.heatmap;
        if self.view.model.is_none()
            || self.view.inputs.is_none()
            || hm.result(metric).is_some()
            || hm.running == Some(metric)
        {
            return;
        }
        self.status = Status::Info(format!("Computing the {} heatmap…", metric.name()));
        self.view.heatmap.running = Some(metric);
        self.view.heatmap.progress = None;
        self.view.heatmap.started = Some(std::time::Instant::now());
        self.view.heatmap.job = self.submit(Request::Heatmap(metric));
    }

    /// Drops what belonged to the previous model or prompt (the chosen heatmap metric stays).
    fn clear_results(&mut self) {
        self.view.answer = None;
        self.view.knockout = None;
        self.view.sweep = SweepView::default();
        self.view.heatmap = HeatmapView {
            metric: self.view.heatmap.metric,
            ..HeatmapView::default()
        };
        self.view.drop = super::drop::DropView::default();
        self.view.heads = Default::default();
        self.cancel_generate();
        self.view.generation = Default::default();
        // A picked token belongs to the old prompt's top-k; a typed answer and options carry over.
        self.view.tracked.token = None;
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Status { text, .. } => self.status = Status::Info(text),
            Event::Progress { job, done, total } => {
                let progress = Some((done, total));
                let v = &mut self.view;
                if v.sweep.job == Some(job) {
                    v.sweep.progress = progress;
                } else if v.heatmap.job == Some(job) {
                    v.heatmap.progress = progress;
                } else if v.drop.job == Some(job) {
                    v.drop.progress = progress;
                }
            }
            Event::Reply { job, reply } => self.on_reply(job, reply),
            Event::Finished { job, finish } => self.on_finished(job, finish),
            // `busy` is recomputed from the worker's counters after each poll.
            Event::Idle { .. } => {}
        }
    }

    fn on_reply(&mut self, job: JobId, reply: Reply) {
        match reply {
            Reply::ModelLoaded(summary) => {
                let now = self.started.elapsed().as_secs_f32();
                self.first_minute.model_s.get_or_insert(now);
                self.demo_loaded = self.demo.is_demo_model(&summary.dir);
                self.status = Status::Info(format!("Loaded {}.", summary.source));
                self.recent.model =
                    Some(self.model_field.trim().to_string()).filter(|s| !s.is_empty());
                self.view.model = Some(summary);
                self.clear_results();
                if let Some(p) = self.pending_inputs.take() {
                    self.load_inputs(p);
                }
                if self.prompt.pending {
                    self.send_ask();
                }
            }
            Reply::InputsLoaded { path, map } => {
                let now = self.started.elapsed().as_secs_f32();
                self.first_minute.prompt_s.get_or_insert(now);
                self.load_history(&path);
                self.status = Status::Info(format!(
                    "Read {} positions from {}.",
                    map.seq_len(),
                    path.display()
                ));
                self.inputs_field = path.display().to_string();
                self.recent.inputs = Some(path.clone());
                if !path.starts_with(&self.prompt.cache_dir) {
                    super::media_input::remember(
                        &mut self.recent.files,
                        &path,
                        super::media_input::RECENT_MAX,
                    );
                }
                // The timeline belongs to the inputs it was prepared into.
                if self.view.media.as_ref().is_some_and(|m| m.inputs != path) {
                    self.view.media = None;
                    self.view.time_selection = None;
                }
                self.view.inputs = Some(InputsView::new(path, &map));
                self.clear_results();
                if std::mem::take(&mut self.autorun) {
                    self.submit(Request::Forward);
                }
            }
            Reply::Forward(f) => {
                self.status = Status::Info("Done.".into());
                self.view.answer = Some(AnswerView {
                    top_k: f.top_k,
                    seconds: f.seconds,
                    positions: f.positions,
                    trace: f.trace.as_ref().map(crate::session::TraceInfo::describe),
                });
            }
            Reply::Knockout(outcome) => {
                let now = self.started.elapsed().as_secs_f32();
                self.first_minute.first_number_s.get_or_insert(now);
                // Logged for tools/xvfb_check.sh, which clicks the real window's heatmap.
                tracing::info!(
                    request = %outcome.spec.describe(),
                    prob = outcome.result.prob,
                    change = outcome.result.rel_change,
                    "knockout shown"
                );
                if let Some(main) = outcome.spec.main() {
                    self.status = Status::Info(format!(
                        "Knocked out {} -> {} in layers {}..{}{}{}.",
                        main.source,
                        main.target,
                        main.start,
                        main.end,
                        main.heads_text(),
                        match outcome.spec.blocks.len() - 1 {
                            0 => String::new(),
                            1 => " and 1 toggled block".into(),
                            n => format!(" and {n} toggled blocks"),
                        }
                    ));
                }
                self.view.history.history.record(&outcome);
                self.save_history();
                self.view.knockout = Some(*outcome);
            }
            Reply::Generated(g) => {
                if g.done {
                    self.status = Status::Info(format!(
                        "The model's answer {}: {} tokens in {:.1} s.",
                        if g.spec.knockout.is_some() {
                            "with the knockout"
                        } else {
                            "unedited"
                        },
                        g.ids.len(),
                        g.seconds
                    ));
                }
                self.view.generation.update(g);
            }
            Reply::Sweep(records) => {
                let sweep = &mut self.view.sweep;
                self.status = Status::Info(if sweep.job == Some(job) && sweep.stopped {
                    format!("Sweep stopped; keeping {} finished windows.", records.len())
                } else {
                    format!("Sweep done: {} windows.", records.len())
                });
                sweep.seconds = sweep.started.map_or(0.0, |t| t.elapsed().as_secs_f32());
                sweep.records = records;
                sweep.running = false;
            }
            Reply::Heatmap(h) => {
                self.status = Status::Info(format!(
                    "Heatmap ready: {} ({} layers × {} positions).",
                    h.metric.name(),
                    h.matrix.layers,
                    h.matrix.positions
                ));
                self.heatmap_generation += 1;
                if std::mem::take(&mut self.focus_heatmap_on_result) {
                    self.focus_panel = Some(super::heatmap::PANEL_NAME);
                }
                let hm = &mut self.view.heatmap;
                if hm.job == Some(job) {
                    hm.running = None;
                    hm.progress = None;
                    hm.job = None;
                }
                hm.results.retain(|r| r.metric != h.metric);
                hm.results.push(HeatResult {
                    metric: h.metric,
                    matrix: h.matrix,
                    token: h.token,
                    seconds: h.seconds,
                    generation: self.heatmap_generation,
                });
            }
            Reply::Drop(outcome) => self.on_drop_done(outcome),
            Reply::Heads { per_head, .. } => {
                self.view.heads = super::heads::HeadsView {
                    per_head: Some(per_head),
                    pending: false,
                };
                self.status = Status::Info(
                    "Heads measured: click a cell to knock its group out of last in that head only.".into(),
                );
            }
            Reply::MediaReady { inputs, preview } => {
                self.status = Status::Info(format!(
                    "Prepared {} in {:.2} s ({} positions).",
                    inputs.display(),
                    preview.prepare_seconds,
                    self.view.inputs.as_ref().map_or(0, |i| i.ids.len())
                ));
                self.view.time_selection = None;
                self.media_serial += 1;
                self.view.media = Some(super::media::MediaView {
                    serial: self.media_serial,
                    preview,
                    inputs,
                });
            }
        }
    }

    /// The last event of a job: the view waiting for it stops waiting; a cancel or a failure also ends
    /// the start-up chain (inputs after the model, the answer after the inputs).
    fn on_finished(&mut self, job: JobId, finish: Finish) {
        let v = &mut self.view;
        if v.sweep.job == Some(job) {
            v.sweep.running = false;
            v.sweep.job = None;
        }
        if v.heatmap.job == Some(job) {
            v.heatmap.running = None;
            v.heatmap.progress = None;
            v.heatmap.job = None;
        }
        if v.drop.job == Some(job) {
            v.drop.running = false;
            v.drop.progress = None;
            v.drop.job = None;
        }
        v.generation.jobs.retain(|&j| j != job);
        let status = match finish {
            // A superseded job's newer twin reports for it.
            Finish::Done | Finish::Superseded => return,
            Finish::Cancelled => Status::Info("Cancelled.".into()),
            Finish::Failed { message, fix } => Status::Error { message, fix },
        };
        self.prompt.pending = false;
        self.pending_inputs = None;
        self.autorun = false;
        self.status = status;
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let open = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
        let run = KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter);
        let (open, run, heatmap, reset) = ctx.input_mut(|i| {
            let open = i.consume_shortcut(&open);
            let run = i.consume_shortcut(&run) | i.consume_key(Modifiers::NONE, Key::F5);
            let heatmap = i.consume_shortcut(&HEATMAP_SHORTCUT);
            let reset = i.consume_shortcut(&RESET_SHORTCUT);
            (open, run, heatmap, reset)
        });
        if reset {
            self.workspace.reset();
        }
        if open {
            self.open_dialog();
        }
        if run {
            self.run_forward();
        }
        if heatmap {
            self.focus_panel = Some(super::heatmap::PANEL_NAME);
            self.show_heatmap(self.view.heatmap.metric);
            self.focus_heatmap_on_result = self.view.heatmap.running.is_some();
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Model");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.model_field)
                        .hint_text("model folder or hub id, e.g. Qwen/Qwen2.5-Omni-3B")
                        .desired_width(ui.available_width() * 0.45),
                )
                .labelled_by(label.id);
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if ui
                .button("Load")
                .on_hover_text("Load the model (Enter in the field)")
                .clicked()
                || enter
            {
                self.load_model(self.model_field.clone());
            }
            if ui
                .button("Demo")
                .on_hover_text("Load the bundled tiny demo model and prompt")
                .clicked()
            {
                self.load_demo();
            }
            ui.separator();
            let label = ui.label("Inputs");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.inputs_field)
                        .hint_text("prepared inputs .safetensors")
                        .desired_width((ui.available_width() - 260.0).max(120.0)),
                )
                .labelled_by(label.id);
            if std::mem::take(&mut self.focus_inputs) {
                field.request_focus();
            }
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if ui
                .add_enabled(self.dialog.is_none(), egui::Button::new("Open…"))
                .on_hover_text("Choose an inputs file (Ctrl+O)")
                .clicked()
            {
                self.open_dialog();
            }
            if ui
                .button("Read")
                .on_hover_text("Read the inputs file (Enter in the field)")
                .clicked()
                || enter
            {
                self.open_typed(PathBuf::from(self.inputs_field.trim()));
            }
            ui.separator();
            if ui
                .button(RESET_LABEL)
                .on_hover_text(format!(
                    "Put the panes back where they start ({})",
                    ui.ctx().format_shortcut(&RESET_SHORTCUT)
                ))
                .clicked()
            {
                self.workspace.reset();
            }
        });
    }

    fn status_line(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if self.view.busy {
                ui.spinner();
                if ui
                    .button("Cancel")
                    .on_hover_text("Stop at the next checkpoint")
                    .clicked()
                {
                    self.cancel_all();
                }
            }
            match &self.status {
                Status::Info(s) => {
                    ui.label(s);
                }
                Status::Error { message, .. } => {
                    ui.add(
                        egui::Label::new(
                            RichText::new(format!("Error: {message}"))
                                .color(ui.visuals().error_fg_color),
                        )
                        .wrap(),
                    );
                }
            }
        });
        if let Status::Error { fix: Some(fix), .. } = &self.status {
            ui.add(egui::Label::new(RichText::new(format!("Fix: {fix}")).strong()).wrap());
        }
        let mut dismissed = None;
        for (i, note) in self.notes.iter().enumerate() {
            ui.horizontal(|ui| {
                if ui.small_button("Dismiss").clicked() {
                    dismissed = Some(i);
                }
                ui.add(
                    egui::Label::new(RichText::new(note).color(ui.visuals().warn_fg_color)).wrap(),
                );
            });
        }
        if let Some(i) = dismissed {
            self.notes.remove(i);
        }
        ui.horizontal(|ui| {
            if self.demo_loaded && self.view.model.is_some() {
                ui.label(
                    RichText::new(" DEMO — tiny random-weight model, not real weights ")
                        .strong()
                        .color(Color32::BLACK)
                        .background_color(Color32::from_rgb(240, 228, 66)),
                );
            }
            match &self.view.model {
                Some(m) => ui.weak(model_line(m)),
                None => ui.weak("No model loaded."),
            };
            self.positions_choice(ui);
        });
        if let Some(line) = self.first_minute.line() {
            ui.weak(line).on_hover_text(
                "Time to the first number: launch, then model ready, prompt read, trace and first knockout",
            );
        }
    }

    /// The current view (tests read it).
    pub fn view(&self) -> &ViewState {
        &self.view
    }

    /// The first minute's milestones so far.
    pub fn first_minute(&self) -> FirstMinute {
        self.first_minute
    }

    /// Replaces measured durations by fixed ones, so screenshots do not change from run to run.
    #[cfg(test)]
    fn freeze_timings(&mut self) {
        if let Some(m) = self.view.model.as_mut() {
            m.load_seconds = 0.25;
        }
        if let Some(a) = self.view.answer.as_mut() {
            a.seconds = 0.042;
        }
        self.view.sweep.seconds = 0.5;
        if let Some(m) = self.view.media.as_mut() {
            std::sync::Arc::make_mut(&mut m.preview).prepare_seconds = 0.05;
        }
        for r in &mut self.view.heatmap.results {
            r.seconds = 0.1;
        }
        if self.first_minute.first_number_s.is_some() {
            self.first_minute = FirstMinute {
                model_s: Some(0.3),
                prompt_s: Some(0.4),
                first_number_s: Some(0.6),
            };
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn is_demo(&self) -> bool {
        self.demo_loaded
    }
}

impl eframe::App for AvflowApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        if !self.gpu_checked {
            // Once: the heatmap's pipeline needs the renderer's device and target format.
            self.gpu_checked = true;
            if let Some(rs) = frame.wgpu_render_state() {
                super::heatmap_gpu::install(ui.ctx(), rs);
            }
        }
        self.poll_worker();
        self.poll_compare();
        self.poll_dialog();
        self.poll_exports();
        let ctx = ui.ctx().clone();
        self.shortcuts(&ctx);
        self.handle_drops(&ctx);
        egui::Panel::top("top_bar").show(ui, |ui| {
            ui.add_space(4.0);
            self.top_bar(ui);
            self.media_bar(ui);
            ui.add_space(2.0);
            self.status_line(ui);
            ui.add_space(4.0);
        });
        let mut actions = Vec::new();
        if let Some(panel) = self.focus_panel.take() {
            self.workspace.focus(panel);
        }
        egui::CentralPanel::default().show(ui, |ui| {
            self.workspace
                .ui(ui, &mut self.panels, &self.view, &mut actions);
        });
        for a in actions {
            match a {
                Action::Run => self.run_forward(),
                Action::Knockout(req) => self.run_knockout(req),
                Action::Sweep { pairs, window } => self.run_sweep(pairs, window),
                Action::SelectTime(r) => self.view.time_selection = r,
                Action::AskRange(r) => {
                    self.prompt.set_range_from_timeline(r.start_s(), r.end_s());
                    self.view.time_selection = None;
                    self.ask();
                }
                Action::UseSpan(role, selector) => {
                    let serial = self.view.span_pick.as_ref().map_or(0, |p| p.serial) + 1;
                    self.status = Status::Info(format!(
                        "Knockout {}: {selector}.",
                        match role {
                            super::media::SpanRole::Source => "source",
                            super::media::SpanRole::Target => "target",
                        }
                    ));
                    self.view.span_pick = Some(super::media::SpanPick {
                        serial,
                        role,
                        selector,
                        layers: None,
                        add: false,
                    });
                }
                Action::CancelSweep => self.cancel_sweep(),
                Action::Heatmap(metric) => self.show_heatmap(metric),
                Action::CancelHeatmap => self.cancel_heatmap(),
                Action::Drop(req) => self.run_drop(req),
                Action::Heads => {
                    if self
                        .submit(Request::Heads(Selector::group("last")))
                        .is_some()
                    {
                        self.view.heads.pending = true;
                    }
                }
                Action::CancelDrop => self.cancel_drop(),
                Action::Export(req) => self.export_figure(req),
                Action::PickSpan {
                    role,
                    selector,
                    layers,
                    add,
                } => {
                    let serial = self.view.span_pick.as_ref().map_or(0, |p| p.serial) + 1;
                    self.view.span_pick = Some(super::media::SpanPick {
                        serial,
                        role,
                        selector,
                        layers,
                        add,
                    });
                }
                Action::Focus(panel) => self.focus_panel = Some(panel),
                Action::History(e) => {
                    let export = matches!(e, super::history::HistoryEdit::Export(_));
                    let note = super::history::edit(&mut self.view.history, e);
                    if !export {
                        self.save_history();
                    }
                    if note.is_some() {
                        self.view.history.note = note;
                    }
                }
                Action::ApplyKnockout(spec, token) => {
                    self.view.tracked = super::panel::Tracked {
                        token: spec.token.map(|id| (id, token.1.clone())),
                        answers: spec.answers.clone(),
                    };
                    let serial = self.view.apply.as_ref().map_or(0, |a| a.0) + 1;
                    self.view.apply = Some((serial, spec));
                    self.focus_panel = Some("Knockout");
                }
                Action::Track(t) => self.track(t),
                Action::Generate => self.generate(),
                Action::CancelGenerate => self.cancel_generate(),
                Action::Compare(c) => self.on_compare(c),
            }
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.recent);
        self.workspace.save(storage);
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{require_demo, require_fixture, save_screenshot, step_until};
    use super::*;

    fn demo_in(root: &Path, complete: bool) -> DemoPaths {
        let d = DemoPaths::choose(root, root);
        if complete {
            std::fs::create_dir_all(&d.model).expect("mkdir");
            std::fs::write(d.model.join("config.json"), "{}").expect("write");
            std::fs::create_dir_all(d.inputs.parent().expect("parent")).expect("mkdir");
            std::fs::write(&d.inputs, b"").expect("write");
        }
        d
    }

    #[test]
    fn no_args_no_history_loads_the_demo() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), true);
        let s = plan_startup(None, None, None, None, &Recent::default(), &demo);
        assert!(s.demo);
        assert_eq!(
            s.load_model.as_deref(),
            Some(demo.model.display().to_string().as_str())
        );
        assert_eq!(s.load_inputs.as_deref(), Some(demo.inputs.as_path()));
        assert!(s.notes.is_empty());
    }

    #[test]
    fn no_args_with_the_demo_clip_asks_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut demo = demo_in(root.path(), true);
        let clip = root.path().join(super::super::demo::CLIP_FILE);
        demo.clip = Some(clip.clone());
        let s = plan_startup(None, None, None, None, &Recent::default(), &demo);
        assert!(s.demo && s.ask);
        assert_eq!(s.media, vec![crate::media::prepare::Item::Video(clip)]);
        assert_eq!(s.question_field, super::super::demo::DEMO_QUESTION);
        assert_eq!(s.load_inputs, None);
        // Last time's question is kept.
        let recent = Recent {
            question: Some("Who speaks?".into()),
            ..Recent::default()
        };
        let s = plan_startup(None, None, None, None, &recent, &demo);
        assert_eq!(s.question_field, "Who speaks?");
    }

    #[test]
    fn missing_demo_is_a_note_not_a_load() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), false);
        let s = plan_startup(None, None, None, None, &Recent::default(), &demo);
        assert!(!s.demo);
        assert_eq!(s.load_model, None);
        assert!(
            s.notes.iter().any(|n| n.contains("make_fixtures.py")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn history_wins_over_the_demo_and_args_win_over_history() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), true);
        let inputs = root.path().join("mine.safetensors");
        std::fs::write(&inputs, b"").expect("write");
        let recent = Recent {
            model: Some("Qwen/Qwen2.5-Omni-3B".into()),
            inputs: Some(inputs.clone()),
            ..Recent::default()
        };
        let s = plan_startup(None, None, None, None, &recent, &demo);
        assert!(!s.demo);
        assert_eq!(s.load_model.as_deref(), Some("Qwen/Qwen2.5-Omni-3B"));
        assert_eq!(s.load_inputs.as_deref(), Some(inputs.as_path()));

        let s = plan_startup(Some("other/model"), None, None, None, &recent, &demo);
        assert_eq!(s.load_model.as_deref(), Some("other/model"));
        // Remembered inputs are offered, not read: they may not fit the new model.
        assert_eq!(s.load_inputs, None);
        assert_eq!(s.inputs_field, inputs.display().to_string());
    }

    #[test]
    fn deleted_folders_are_forgotten() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), true);
        let recent = Recent {
            model: Some(root.path().join("gone").display().to_string()),
            inputs: Some(root.path().join("gone.safetensors")),
            ..Recent::default()
        };
        let s = plan_startup(None, None, None, None, &recent, &demo);
        assert!(s.demo);
    }

    #[test]
    fn inputs_arg_alone_uses_the_remembered_model() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), true);
        let recent = Recent {
            model: Some("Qwen/Qwen2.5-Omni-3B".into()),
            inputs: None,
            ..Recent::default()
        };
        let s = plan_startup(
            None,
            Some(Path::new("x.safetensors")),
            None,
            None,
            &recent,
            &demo,
        );
        assert_eq!(s.load_model.as_deref(), Some("Qwen/Qwen2.5-Omni-3B"));
        assert_eq!(s.load_inputs.as_deref(), Some(Path::new("x.safetensors")));
        let s = plan_startup(
            None,
            Some(Path::new("x.safetensors")),
            None,
            None,
            &Recent::default(),
            &demo,
        );
        assert_eq!(s.load_model, None);
        assert_eq!(s.notes.len(), 1);
    }

    #[test]
    fn video_and_question_are_asked_at_start_up() {
        use crate::media::prepare::Item;
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), true);
        let clip = Path::new("a.mp4");
        // No model given, none remembered: the demo model is asked; the demo prompt is not read.
        let s = plan_startup(
            None,
            None,
            Some(clip),
            Some(" what? "),
            &Recent::default(),
            &demo,
        );
        assert!(s.ask);
        assert_eq!(s.media, vec![Item::Video(clip.into())]);
        assert_eq!(s.question_field, "what?");
        assert_eq!(s.load_model, Some(demo.model.display().to_string()));
        assert_eq!(s.load_inputs, None);
        assert!(!s.demo);
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        // A given model wins; given inputs are not read, and the note says so.
        let s = plan_startup(
            Some("other/model"),
            Some(Path::new("x.safetensors")),
            Some(clip),
            Some("what?"),
            &Recent::default(),
            &demo,
        );
        assert_eq!(s.load_model.as_deref(), Some("other/model"));
        assert_eq!(s.load_inputs, None);
        assert!(
            s.notes.iter().any(|n| n.contains("--inputs")),
            "{:?}",
            s.notes
        );
        // No model anywhere: nothing loads, the note says what to do.
        let missing = demo_in(&root.path().join("none"), false);
        let s = plan_startup(
            None,
            None,
            Some(clip),
            Some("what?"),
            &Recent::default(),
            &missing,
        );
        assert!(s.ask && s.load_model.is_none());
        assert!(
            s.notes.iter().any(|n| n.contains("Load a model")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn video_or_question_alone_prefills_and_explains() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = demo_in(root.path(), true);
        let s = plan_startup(
            None,
            None,
            Some(Path::new("a.mp4")),
            None,
            &Recent::default(),
            &demo,
        );
        assert!(!s.ask);
        assert_eq!(s.media.len(), 1);
        assert!(
            s.notes.iter().any(|n| n.contains("Type a question")),
            "{:?}",
            s.notes
        );
        // The demo still loads as without arguments.
        assert!(s.demo);
        let recent = Recent {
            question: Some("last time?".into()),
            ..Recent::default()
        };
        let s = plan_startup(None, None, None, None, &recent, &demo);
        assert_eq!(s.question_field, "last time?");
        let s = plan_startup(None, None, None, Some("why?"), &recent, &demo);
        assert_eq!(s.question_field, "why?");
        assert!(s.media.is_empty() && !s.ask);
        assert!(
            s.notes.iter().any(|n| n.contains("Open a video")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn settings_saved_before_recent_files_still_load() {
        let old: Recent =
            serde_json::from_str(r#"{"model":"m","inputs":null}"#).expect("old settings");
        assert_eq!(old.model.as_deref(), Some("m"));
        assert!(old.files.is_empty() && old.question.is_none());
    }

    #[test]
    fn summary_line_and_counts() {
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(1_234), "1.2 K");
        assert_eq!(human_count(3_400_000_000), "3.4 B");
        let m = ModelSummary {
            source: "demo".into(),
            dir: "d".into(),
            family: "qwen2_5_omni".into(),
            parameters: 2_500_000,
            layers: 2,
            hidden: 64,
            vocab: 1000,
            dtype: "f32".into(),
            device: "cpu".into(),
            has_tokenizer: false,
            load_seconds: 0.31,
            positions: None,
        };
        assert_eq!(
            model_line(&m),
            "demo · 2.5 M params · 2 layers · hidden 64 · vocab 1000 · f32 on cpu · no tokenizer · loaded in 0.3 s"
        );
    }

    /// Renders the whole app on the demo: the `app.png` screenshot (written where `AVFLOW_SCREENSHOTS`
    /// says). Rendering needs a wgpu adapter (lavapipe from mesa-vulkan-drivers suffices); the test fails
    /// without one, or without the demo fixture.
    #[test]
    fn renders_the_app_and_saves_a_screenshot() {
        use std::time::{Duration, Instant};
        require_demo();
        let opts = super::test_support::demo_options();
        let mut harness = egui_kittest::Harness::builder()
            .with_size(egui::vec2(1100.0, 640.0))
            // Token texts are model data (CJK, emoji, byte-level forms) that the built-in Latin font may
            // lack; the app draws tofu for those, so must the test.
            .allow_missing_glyphs()
            .build_eframe(|cc| {
                AvflowApp::with_cache_dir(
                    &cc.egui_ctx,
                    None,
                    opts,
                    super::test_support::test_cache_dir(),
                )
            });
        let t0 = Instant::now();
        loop {
            harness.step();
            let app = harness.state();
            let settled = !app.view().busy
                && (app.view().answer.is_some() || matches!(app.status(), Status::Error { .. }));
            if settled || t0.elapsed() > Duration::from_secs(300) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        harness.run_steps(3);
        let app = harness.state();
        assert!(
            !matches!(app.status(), Status::Error { .. }),
            "demo failed: {:?}",
            app.status()
        );
        assert!(app.is_demo());
        assert!(app.view().model.is_some());
        let inputs = app.view().inputs.as_ref().map(|i| i.ids.len()).unwrap_or(0);
        assert!(inputs > 0);
        let answer = app.view().answer.as_ref().map(|a| a.top_k.len());
        assert_eq!(answer, Some(crate::worker::TOP_K));
        harness.state_mut().freeze_timings();
        // Hover a cell of the token strip (cells of 7 points, 1-point gaps) so the picture shows its card.
        let strip = {
            use egui_kittest::kittest::Queryable;
            harness
                .get_by_label(super::super::strip::STRIP_LABEL)
                .rect()
        };
        harness.hover_at(strip.left_top() + egui::vec2(20.0 * 8.0 + 3.5, 3.5));
        harness.run_steps(4);
        save_screenshot(&mut harness, "app.png");
    }

    /// The heatmap on the demo the way a user gets there: Ctrl+Shift+H opens it and computes the chosen
    /// metric, the combo switches metric (each matrix equals the library's), switching back re-uses the
    /// computed one, hovering shows the cell. Renders the `heatmap.png` screenshot (written where
    /// `AVFLOW_SCREENSHOTS` says). Needs a wgpu adapter for the app's renderer (lavapipe is enough); fails
    /// without one.
    #[test]
    fn heatmap_on_the_demo() {
        use crate::flow::heatmap::{compute, HeatMetric};
        use egui_kittest::kittest::Queryable;
        use std::time::Duration;
        let demo = require_demo();
        let mut harness = super::test_support::demo_app(egui::vec2(1100.0, 760.0));
        let session = demo.open_session();
        let trace = &session.traced().expect("the demo session is traced").trace;
        let library = |metric| {
            compute(
                metric,
                session.decoder(),
                trace,
                session.groups(),
                &std::sync::atomic::AtomicBool::new(false),
                &mut |_, _| {},
            )
            .expect("library heatmap")
            .expect("not cancelled")
        };
        let shown = |app: &AvflowApp, metric| {
            app.view()
                .heatmap
                .result(metric)
                .map(|r| (r.matrix.clone(), r.generation))
        };

        harness.key_press_modifiers(HEATMAP_SHORTCUT.modifiers, HEATMAP_SHORTCUT.logical_key);
        let first = HeatMetric::AttentionFromLast;
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && shown(app, first).is_some()
        });
        assert!(done, "no heatmap: {:?}", harness.state().status());
        let (matrix, generation) = shown(harness.state(), first).expect("result");
        assert_eq!(*matrix, library(first));

        // Another metric through the combo.
        let lens = HeatMetric::LensAnswer;
        harness.get_by_label("metric").click();
        harness.run_steps(2);
        harness.get_by_label(lens.name()).click();
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && shown(app, lens).is_some()
        });
        assert!(done, "no lens heatmap: {:?}", harness.state().status());
        let (lens_matrix, _) = shown(harness.state(), lens).expect("result");
        assert_eq!(*lens_matrix, library(lens));
        harness.run_steps(2);
        assert!(harness.query_by_label_contains("answer token:").is_some());

        // Back to the first: shown from the cache, not computed again.
        harness.get_by_label("metric").click();
        harness.run_steps(2);
        harness.get_by_label(first.name()).click();
        harness.run_steps(3);
        assert!(!harness.state().view().busy);
        assert_eq!(harness.state().view().heatmap.metric, first);
        assert_eq!(
            shown(harness.state(), first).map(|(_, g)| g),
            Some(generation)
        );

        harness.state_mut().freeze_timings();
        harness
            .get_by_label(super::super::heatmap::CELLS_LABEL)
            .hover();
        harness.run_steps(4);
        assert!(
            harness.query_by_label_contains("layer ").is_some(),
            "no hover card"
        );
        save_screenshot(&mut harness, "heatmap.png");
    }

    /// Drives the Knockout panel on the demo the way a user does (source combo, layer range), checks the
    /// shown probability against [`crate::flow::Knockout::score`] run directly, then runs a sweep.
    /// Renders the `sweep.png` screenshot, written where `AVFLOW_SCREENSHOTS` says (`knockout.png` comes
    /// from `knockout_tests`).
    #[test]
    fn knockout_and_sweep_on_the_demo() {
        use egui_kittest::kittest::Queryable;
        use std::time::Duration;
        let demo = require_demo();
        let mut harness = super::test_support::demo_app(egui::vec2(1100.0, 1150.0));

        // source = audio (through the combo), target = last, layers 0..3 (moving the end, live).
        harness.get_by_label("source").click();
        harness.run_steps(2);
        harness.get_by_label("audio").click();
        harness.run_steps(2);
        harness.get_by_label("target").click();
        harness.run_steps(2);
        harness.get_by_label("last").click();
        harness.run_steps(2);
        harness.get_by_label("from layer").set_value_accesskit(0.0);
        harness.run_steps(2);
        harness.get_by_label("to layer").set_value_accesskit(1.0);
        harness.run_steps(2);
        harness.get_by_label("to layer").set_value_accesskit(3.0);
        harness.run_steps(2);
        let want = KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 0, 3);
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && app.view().knockout.as_ref().is_some_and(|k| k.spec == want)
        });
        assert!(
            done,
            "no knockout result: {:?} / {:?}",
            harness.state().status(),
            harness.state().view().knockout
        );
        harness.run_steps(3);
        let shown = harness.state().view().knockout.clone().expect("result");

        // The same knockout straight through the library.
        let session = demo.open_session();
        let ko = crate::flow::Knockout {
            sources: session.groups().select("audio").expect("audio"),
            targets: session.groups().select("last").expect("last"),
            start: 0,
            end: 3,
            heads: None,
        };
        let trace = &session.traced().expect("the demo session is traced").trace;
        let lib = ko.score(session.decoder(), trace, None).expect("score");
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-6_f32.max(1e-5 * b.abs());
        let res = &shown.result;
        assert!(close(res.prob, lib.prob), "{} vs {}", res.prob, lib.prob);
        assert!(close(res.base_prob, lib.base_prob));
        assert_eq!(shown.top1.0, lib.top1_id);
        assert_ne!(res.prob, res.base_prob, "the knockout changed nothing");
        // What the panel shows is the library's number.
        let knocked = format!(
            "after knockout {}",
            super::super::answer::format_percent(lib.prob)
        );
        harness.get_by_label(&knocked);
        harness.get_by_label(&format!(
            "change {}",
            super::super::knockout::format_change(lib.rel_change)
        ));

        // A sweep over the demo's pairs.
        harness.get_by_label("Run sweep").click();
        harness.run_steps(2);
        let swept = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && !app.view().sweep.running
        });
        assert!(
            swept,
            "sweep did not finish: {:?}",
            harness.state().status()
        );
        let app = harness.state();
        assert!(
            !matches!(app.status(), Status::Error { .. }),
            "{:?}",
            app.status()
        );
        let groups = &app.view().inputs.as_ref().expect("inputs").flow_groups;
        let pairs = super::super::sweep::sweep_pairs(groups);
        assert!(!pairs.is_empty());
        let layers = app.view().model.as_ref().expect("model").layers;
        assert_eq!(app.view().sweep.records.len(), pairs.len() * layers);
        harness.state_mut().freeze_timings();
        harness.run_steps(3);
        save_screenshot(&mut harness, "sweep.png");
    }

    /// A dropped file, as the windowing layer hands it over.
    #[derive(Debug)]
    struct Dropped(PathBuf);

    impl egui::DroppedFile for Dropped {
        fn path(&self) -> &Path {
            &self.0
        }
        fn bytes(&self) -> Result<Vec<u8>, String> {
            std::fs::read(&self.0).map_err(|e| e.to_string())
        }
    }

    fn drop_file(harness: &mut egui_kittest::Harness<'_, AvflowApp>, path: &Path) {
        harness
            .input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(path.to_path_buf())));
        harness.step();
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// A cache folder of its own per test, at a fixed place (the inputs path is in the screenshot).
    fn test_cache(name: &str) -> PathBuf {
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/tmp")
            .join(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn app_options(
        model: Option<&Path>,
        video: Option<&Path>,
        question: Option<&str>,
    ) -> AppOptions {
        AppOptions {
            model: model.map(|m| m.display().to_string()),
            inputs: None,
            video: video.map(Path::to_path_buf),
            question: question.map(str::to_string),
            device: Device::Cpu,
            device_note: None,
            dtype: DType::F32,
            auto_dtype: false,
            positions: crate::model::Positions::Inference,
            demo_clip: false,
        }
    }

    /// `avflow --model omni-tiny-a --video basic.mkv --question …`: the clip is prepared in the app, read
    /// and answered; the media panel shows its frames, waveform and spectrogram; a drag on the timeline
    /// selects 1–3 s, which becomes the knockout's source, and the panel shows the library's number for
    /// that selector. Renders the `media.png` screenshot (written where `AVFLOW_SCREENSHOTS` says).
    #[test]
    fn asks_a_clip_and_knocks_out_a_time_range() {
        use egui_kittest::kittest::Queryable;
        use std::time::{Duration, Instant};
        let (model, clip) = (
            fixtures().join("omni-tiny-a"),
            fixtures().join("media/video/basic.mkv"),
        );
        require_fixture(&model.join("config.json"));
        require_fixture(&clip);
        let cache = test_cache("app-media-clip");
        let opts = app_options(Some(&model), Some(&clip), Some("What is making the sound?"));
        let mut harness = egui_kittest::Harness::builder()
            .with_size(egui::vec2(1100.0, 860.0))
            .allow_missing_glyphs()
            .build_eframe(|cc| AvflowApp::with_cache_dir(&cc.egui_ctx, None, opts, cache.clone()));
        let t0 = Instant::now();
        let ready = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy
                && ((app.view().media.is_some() && app.view().answer.is_some())
                    || matches!(app.status(), Status::Error { .. }))
        });
        eprintln!(
            "start-up → model loaded, basic.mkv prepared, read and answered: {:.2} s",
            t0.elapsed().as_secs_f32()
        );
        assert!(ready, "not ready: {:?}", harness.state().status());
        let app = harness.state();
        assert!(
            !matches!(app.status(), Status::Error { .. }),
            "{:?}",
            app.status()
        );
        let media = app.view().media.clone().expect("media");
        eprintln!(
            "prepare + write in the worker: {:.3} s",
            media.preview.prepare_seconds
        );
        assert!(
            media.inputs.starts_with(&cache),
            "{}",
            media.inputs.display()
        );
        let groups = &app.view().inputs.as_ref().expect("inputs").flow_groups;
        let size = |n: &str| groups.iter().find(|(g, _)| g == n).map_or(0, |g| g.1);
        assert!(size("audio") > 0 && size("video") > 0, "{groups:?}");
        let item = &media.preview.items[0];
        assert_eq!(item.frames.len(), 8);
        assert!(item.waveform.is_some() && item.mel.is_some());
        harness.run_steps(2);

        // Drag over 1–3 s of the timeline.
        let rect = harness
            .get_by_label(super::super::media::TIMELINE_LABEL)
            .rect();
        let axis = super::super::media::TimeAxis {
            duration: media.preview.duration_s(),
            left: rect.left() + 64.0,
            width: rect.width() - 64.0 - 6.0,
        };
        let y = rect.top() + 30.0;
        let (a, b) = (egui::pos2(axis.x(1.0), y), egui::pos2(axis.x(3.0), y));
        super::test_support::drag(&mut harness, a, b);
        let want = super::super::media::TimeRange {
            start_ms: 1000,
            end_ms: 3000,
        };
        assert_eq!(harness.state().view().time_selection, Some(want));
        harness.get_by_label("@1-3");

        harness.get_by_label("Knockout source").click();
        harness.run_steps(2);
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy
                && app.view().knockout.as_ref().is_some_and(|k| {
                    k.spec
                        .main()
                        .is_some_and(|b| b.source.to_string() == "@1-3")
                })
        });
        assert!(done, "no knockout: {:?}", harness.state().status());
        let shown = harness.state().view().knockout.clone().expect("knockout");
        let main = shown.spec.main().expect("main block");
        assert_eq!(main.target, Selector::group("last"));

        // The same selector through the library, on the prepared file.
        let session = crate::session::Session::open(
            &model.display().to_string(),
            &media.inputs,
            None,
            DType::F32,
            &Device::Cpu,
        )
        .expect("open the prepared inputs");
        let sources = session.select_str("@1-3").expect("@1-3");
        let expected: Vec<usize> = media
            .preview
            .spans
            .iter()
            .filter(|s| s.start_s < 3.0 && s.end_s > 1.0)
            .map(|s| s.position)
            .collect();
        assert_eq!(sources, expected);
        let ko = crate::flow::Knockout {
            sources,
            targets: session.select_str("last").expect("last"),
            start: main.start,
            end: main.end,
            heads: None,
        };
        let trace = &session.traced().expect("the session is traced").trace;
        let lib = ko.score(session.decoder(), trace, None).expect("score");
        let close = |x: f32, y: f32| (x - y).abs() <= 1e-6_f32.max(1e-5 * y.abs());
        assert!(
            close(shown.result.prob, lib.prob),
            "{} vs {}",
            shown.result.prob,
            lib.prob
        );
        harness.get_by_label(&format!(
            "after knockout {}",
            super::super::answer::format_percent(lib.prob)
        ));

        harness.state_mut().freeze_timings();
        harness.remove_cursor();
        harness.run_steps(3);
        save_screenshot(&mut harness, "media.png");

        // The same seconds as a time range of the clip: asked again from 1 s to 3 s only, as `avflow
        // prepare --start 1 --end 3` (4 frames at 2 fps, 2 s of sound).
        let first_inputs = media.inputs.clone();
        // (accesskit: the pointer left the window for the screenshot.)
        harness
            .get_by_label("Ask about these seconds")
            .click_accesskit();
        let asked = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy
                && (app
                    .view()
                    .media
                    .as_ref()
                    .is_some_and(|m| m.inputs != first_inputs)
                    || matches!(app.status(), Status::Error { .. }))
        });
        assert!(asked, "not asked again: {:?}", harness.state().status());
        let app = harness.state();
        assert_eq!(
            (app.prompt.start.as_str(), app.prompt.end.as_str()),
            ("1", "3")
        );
        let ranged = app.view().media.clone().expect("media");
        assert_eq!(ranged.preview.items[0].frames.len(), 4);
        // 2 s of the 4-s clip (the spectrogram rounds up to its last window).
        assert!(
            (ranged.preview.duration_s() - 2.0).abs() < 0.15,
            "{}",
            ranged.preview.duration_s()
        );
        let opts = crate::media::prepare::PrepareOptions {
            range: crate::media::prepare::TimeRange::new(Some(1.0), Some(3.0)).unwrap(),
            ..Default::default()
        };
        let resolved = crate::model::loader::resolve_dir(
            crate::model::loader::ModelSource::Local(model.clone()),
            &model,
        )
        .unwrap();
        let p = resolved
            .arch
            .prepare(
                &resolved.dir,
                &[crate::media::prepare::Item::Video(clip.clone())],
                "What is making the sound?",
                &opts,
                &Device::Cpu,
            )
            .unwrap();
        let app_ids = crate::tensor_io::load(&ranged.inputs, &Device::Cpu).unwrap()["input_ids"]
            .flatten_all()
            .unwrap()
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(app_ids, p.input_ids);
    }

    /// A file that is not media, dropped with a question typed: the library's error (naming the file) is
    /// shown, and the app stays usable — the next clip dropped is prepared and answered.
    #[test]
    fn a_corrupt_drop_shows_the_error_and_the_app_goes_on() {
        use egui_kittest::kittest::Queryable;
        use std::time::Duration;
        let model = fixtures().join("omni-tiny-a");
        let (bad, good) = (
            fixtures().join("media/video/notmedia.mp4"),
            fixtures().join("media/video/basic.mkv"),
        );
        require_fixture(&model.join("config.json"));
        require_fixture(&bad);
        require_fixture(&good);
        let cache = test_cache("app-media-corrupt");
        let opts = app_options(Some(&model), None, None);
        let mut harness = egui_kittest::Harness::builder()
            .with_size(egui::vec2(1100.0, 700.0))
            .allow_missing_glyphs()
            .build_eframe(|cc| AvflowApp::with_cache_dir(&cc.egui_ctx, None, opts, cache.clone()));
        let loaded = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && app.view().model.is_some()
        });
        assert!(loaded, "{:?}", harness.state().status());

        harness.get_by_label("Question").focus();
        harness.step();
        harness.get_by_label("Question").type_text("What is this?");
        harness.step();
        drop_file(&mut harness, &bad);
        let failed = step_until(&mut harness, Duration::from_secs(60), |app| {
            !app.view().busy && matches!(app.status(), Status::Error { .. })
        });
        assert!(failed, "{:?}", harness.state().status());
        harness.run_steps(2);
        let Status::Error { message, .. } = harness.state().status().clone() else {
            unreachable!()
        };
        eprintln!("shown: {message}");
        assert!(message.contains("notmedia.mp4"), "{message}");
        harness.get_by_label_contains("Error: ");
        assert!(harness.state().view().media.is_none());

        // Remove the bad file and drop a good one: it is asked with the same question.
        harness.get_by_label("×").click();
        harness.step();
        drop_file(&mut harness, &good);
        let ok = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy
                && (app.view().answer.is_some() || matches!(app.status(), Status::Error { .. }))
        });
        assert!(ok, "{:?}", harness.state().status());
        assert!(
            !matches!(harness.state().status(), Status::Error { .. }),
            "{:?}",
            harness.state().status()
        );
        assert!(harness.state().view().media.is_some());
    }
}
