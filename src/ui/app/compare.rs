//! The Compare pane's second run (B): a worker of its own beside A's, so B's model, trace and sweep never
//! touch A's. Where both models do not fit in memory together, B runs after A: A's sweep and knockout are
//! kept in the pane, A's worker (and with it its model and trace) is stopped, B loads and runs, B's worker
//! stops, and A loads again from its folder (the page cache makes that quick).

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::DType;

use crate::model::{LoadOptions, ModelSource};
use crate::prompt::Selector;
use crate::session::{KnockoutSpec, SweepSpec};
use crate::ui::compare::{scaled_spec, CompareAction, CompareSide, MemoryPlan};
use crate::worker::{Event, Finish, JobId, ModelSummary, Reply, Request, Worker};

use super::{AvflowApp, Status};

/// How long a stopping worker may take to let its model go before B loads anyway.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// Where a comparison run is.
#[derive(Debug, Clone, Default, PartialEq)]
enum Stage {
    #[default]
    Idle,
    /// A's sweep for the comparison runs in A's worker; B's follows with the same pairs and window.
    SweepingA {
        pairs: Vec<(Selector, Selector)>,
        window: usize,
    },
    /// B's jobs run in B's worker.
    RunningB,
    /// B ran after A and was stopped; A loads again.
    ReloadingA,
}

/// B's worker and the comparison's progress.
#[derive(Default)]
pub(super) struct CompareRunner {
    pub(super) worker: Option<Worker>,
    stage: Stage,
    /// B's sweep: its progress goes to the pane.
    sweep_job: Option<JobId>,
    /// The window of B's sweep.
    window: usize,
    /// A's knockout whose copy at B's depth B ran (or runs).
    sent: Option<KnockoutSpec>,
    /// A's model and inputs, to load again once B (run after A) is done.
    reload: Option<(String, PathBuf)>,
}

/// B's weights in bytes as it would load (in its own dtype under `--dtype auto`, as the loader picks it),
/// where B is a local folder; `None` for a hub id (reading its size could mean downloading it).
fn weight_bytes(source: &str, opts: &LoadOptions) -> Option<u64> {
    let dir = Path::new(source);
    if !dir.join("config.json").is_file() {
        return None;
    }
    let resolved = crate::model::resolve(&ModelSource::parse(source).ok()?).ok()?;
    Some(resolved.parameters() as u64 * opts.dtype_for(dir).size_in_bytes() as u64)
}

impl AvflowApp {
    pub(super) fn on_compare(&mut self, action: CompareAction) {
        match action {
            CompareAction::Open {
                model,
                inputs,
                sequential,
            } => self.open_b(model, inputs, sequential),
            CompareAction::Run { pairs, window } => self.run_compare(pairs, window),
            CompareAction::Close => self.close_b(),
        }
    }

    fn memory_plan(&self, a: Option<&ModelSummary>, b: &str) -> MemoryPlan {
        let mut opts = LoadOptions::new(self.dtype, &self.device);
        opts.auto_dtype = self.auto_dtype;
        MemoryPlan {
            // The summary names the dtype A loaded in (`DType::as_str`).
            a_bytes: a.map_or(0, |m| {
                let bytes = m.dtype.parse::<DType>().map_or(2, |d| d.size_in_bytes());
                m.parameters as u64 * bytes as u64
            }),
            b_bytes: weight_bytes(b, &opts),
            free: crate::session::budget::available_memory(&self.device),
        }
    }

    fn open_b(&mut self, model: String, inputs: PathBuf, sequential: bool) {
        self.close_b();
        let plan = self.memory_plan(self.view.model.as_ref(), &model);
        let sequential = sequential || !plan.fits();
        let c = &mut self.view.compare;
        c.plan = Some(plan);
        c.sequential = sequential;
        c.b_opened = Some((model.clone(), inputs.clone()));
        c.error = None;
        if sequential {
            self.status = Status::Info(format!(
                "B ({model}) will load when the comparison runs, after A's sweep."
            ));
            return;
        }
        self.view.compare.stage = Some("Loading B…".into());
        self.spawn_b(model, inputs);
    }

    /// B's worker, loading B's model and inputs.
    fn spawn_b(&mut self, model: String, inputs: PathBuf) {
        let ctx = self.ctx.clone();
        let worker = match Worker::spawn(move || ctx.request_repaint()) {
            Ok(w) => w,
            Err(e) => {
                self.view.compare.error = Some(format!("could not start B's worker: {e}"));
                self.view.compare.stage = None;
                return;
            }
        };
        worker.submit(Request::LoadModel {
            source: model,
            dtype: self.dtype,
            auto_dtype: self.auto_dtype,
            device: self.device.clone(),
            positions: self.positions,
        });
        worker.submit(Request::LoadInputs(inputs));
        self.compare.worker = Some(worker);
    }

    /// Stops B's worker (its model and trace go with it) and forgets B.
    fn close_b(&mut self) {
        if let Some(w) = self.compare.worker.take() {
            w.shutdown(STOP_WAIT);
        }
        self.compare = Default::default();
        let c = &mut self.view.compare;
        c.b_model = None;
        c.b_inputs = None;
        c.b_opened = None;
        c.b = None;
        c.b_knockout = None;
        c.stage = None;
        c.progress = None;
        c.error = None;
    }

    /// The status line's Cancel reaches B's jobs too (a B run after A then ends with A loaded again).
    pub(super) fn cancel_compare(&mut self) {
        if let Some(w) = &self.compare.worker {
            w.cancel_all();
        }
    }

    /// Sweeps A (unless the Sweep pane already shows this sweep), then B over the same pairs and window.
    fn run_compare(&mut self, pairs: Vec<(Selector, Selector)>, window: usize) {
        if self.view.model.is_none() || self.view.inputs.is_none() || self.view.sweep.running {
            return;
        }
        let c = &mut self.view.compare;
        c.error = None;
        c.b = None;
        c.progress = None;
        let names: Vec<(String, String)> = pairs
            .iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect();
        let sweep = &self.view.sweep;
        let shown = !sweep.records.is_empty()
            && sweep.window == window
            && crate::flow::sweep::record_pairs(&sweep.records) == names;
        if shown {
            self.keep_a();
            self.start_b(pairs, window);
        } else {
            self.run_sweep(pairs.clone(), window);
            self.view.compare.stage = Some("Sweeping A…".into());
            self.compare.stage = Stage::SweepingA { pairs, window };
        }
    }

    /// A's sweep and identity, kept for the comparison (they outlive A's model when B runs after A).
    fn keep_a(&mut self) {
        let (Some(m), Some(i)) = (&self.view.model, &self.view.inputs) else {
            return;
        };
        self.view.compare.a = Some(CompareSide {
            model: m.source.clone(),
            family: m.family.clone(),
            inputs: i.path.clone(),
            layers: m.layers,
            window: self.view.sweep.window,
            records: self.view.sweep.records.clone(),
        });
    }

    fn start_b(&mut self, pairs: Vec<(Selector, Selector)>, window: usize) {
        let mut spec = SweepSpec::centred(pairs, window);
        // B follows its own top-1 (token ids differ between models), or the same typed answer.
        spec.answers.answer = self.view.tracked.answers.answer.clone();
        if self.view.compare.sequential {
            let Some((model, inputs)) = self.view.compare.b_opened.clone() else {
                return;
            };
            // A's results are kept in the pane; its model goes before B's comes.
            if let (Some(m), Some(i)) = (&self.view.model, &self.view.inputs) {
                self.compare.reload = Some((m.source.clone(), i.path.clone()));
            }
            if let Some(w) = self.worker.take() {
                w.shutdown(STOP_WAIT);
            }
            self.view.model = None;
            self.view.inputs = None;
            self.view.busy = false;
            self.compare.sent = None;
            self.view.compare.b_knockout = None;
            self.status = Status::Info("A's model is freed while B runs.".into());
            self.spawn_b(model, inputs);
        }
        let Some(w) = &self.compare.worker else {
            self.view.compare.error = Some("B is not open".into());
            self.view.compare.stage = None;
            return;
        };
        self.compare.sweep_job = w.submit(Request::Sweep(spec));
        self.compare.window = window;
        self.compare.stage = Stage::RunningB;
        self.view.compare.stage = Some("Sweeping B…".into());
    }

    /// Each frame: A's shown knockout is applied to B, A's sweep hands over to B's, B's events are
    /// routed to the pane, and a B run after A ends with A loaded again.
    pub(super) fn poll_compare(&mut self) {
        self.follow_knockout();
        if let Stage::SweepingA { pairs, window } = &self.compare.stage {
            let sweep = &self.view.sweep;
            if !sweep.running && sweep.job.is_none() {
                let (pairs, window) = (pairs.clone(), *window);
                if sweep.records.is_empty() || sweep.stopped {
                    self.compare.stage = Stage::Idle;
                    self.view.compare.stage = None;
                    self.view.compare.error =
                        Some("A's sweep did not finish; the comparison stopped".into());
                } else {
                    self.keep_a();
                    self.start_b(pairs, window);
                }
            }
        }
        if let Some(w) = &self.compare.worker {
            match w.poll() {
                Ok(events) => {
                    for e in events {
                        self.on_b_event(e);
                    }
                }
                Err(_) => {
                    self.compare.worker = None;
                    self.view.compare.error =
                        Some("B's worker stopped unexpectedly; open B again".into());
                }
            }
        }
        let b_idle = self.compare.worker.as_ref().is_none_or(|w| !w.busy());
        match self.compare.stage {
            Stage::RunningB if b_idle => match self.compare.reload.take() {
                Some((model, inputs)) => {
                    if let Some(w) = self.compare.worker.take() {
                        w.shutdown(STOP_WAIT);
                    }
                    self.compare.stage = Stage::ReloadingA;
                    self.view.compare.stage = Some("Loading A again…".into());
                    self.start_worker();
                    self.pending_inputs = Some(inputs);
                    self.autorun = true;
                    self.load_model(model);
                }
                None => {
                    self.compare.stage = Stage::Idle;
                    self.view.compare.stage = None;
                }
            },
            Stage::ReloadingA
                if !self.view.busy
                    && (self.view.answer.is_some()
                        || matches!(self.status, Status::Error { .. })) =>
            {
                self.compare.stage = Stage::Idle;
                self.view.compare.stage = None;
            }
            Stage::Idle if b_idle && self.view.compare.stage.is_some() => {
                // B's model and inputs are in.
                self.view.compare.stage = None;
            }
            _ => {}
        }
    }

    /// Keeps A's shown knockout for the pane and runs its copy at B's depth in B, once B is ready.
    fn follow_knockout(&mut self) {
        let c = &mut self.view.compare;
        if let Some(k) = &self.view.knockout {
            if c.a_knockout.as_ref().map(|o| &o.spec) != Some(&k.spec) {
                c.a_knockout = Some(k.clone());
                c.b_knockout = None;
            }
        }
        let (Some(w), Some(a), Some(b)) = (&self.compare.worker, &c.a_knockout, &c.b_model) else {
            return;
        };
        if c.b_inputs.is_none() || self.compare.sent.as_ref() == Some(&a.spec) {
            return;
        }
        let a_layers =
            c.a.as_ref()
                .map(|s| s.layers)
                .or(self.view.model.as_ref().map(|m| m.layers))
                .unwrap_or(b.layers);
        w.submit(Request::Knockout(scaled_spec(&a.spec, a_layers, b.layers)));
        self.compare.sent = Some(a.spec.clone());
    }

    fn on_b_event(&mut self, e: Event) {
        let c = &mut self.view.compare;
        match e {
            Event::Progress { job, done, total } if Some(job) == self.compare.sweep_job => {
                c.progress = Some((done, total));
            }
            Event::Reply { reply, .. } => match reply {
                Reply::ModelLoaded(m) => c.b_model = Some(m),
                Reply::InputsLoaded { path, map } => c.b_inputs = Some((path, map.group_sizes())),
                Reply::Sweep(records) => {
                    let (Some(m), Some((inputs, _))) = (&c.b_model, &c.b_inputs) else {
                        return;
                    };
                    c.b = Some(CompareSide {
                        model: c
                            .b_opened
                            .as_ref()
                            .map_or_else(|| m.source.clone(), |o| o.0.clone()),
                        family: m.family.clone(),
                        inputs: inputs.clone(),
                        layers: m.layers,
                        window: self.compare.window,
                        records,
                    });
                    c.progress = None;
                    self.status = Status::Info("Comparison ready: A solid, B dashed.".into());
                }
                Reply::Knockout(o) => c.b_knockout = Some(*o),
                _ => {}
            },
            Event::Finished {
                finish: Finish::Failed { message, fix },
                ..
            } => {
                c.error = Some(match fix {
                    Some(f) => format!("B: {message}. Fix: {f}"),
                    None => format!("B: {message}"),
                });
            }
            _ => {}
        }
    }
}
