//! The app's side of the drop view (send the request, keep the newest result) and of Export… on the
//! views (save dialog or typed path → figure written on a helper thread → "Saved N files to …").

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::session::{DropOutcome, DropSpec};
use crate::worker::{Failure, Request};

use super::super::dialog::{dialog_support, pick_save_path, DialogSupport};
use super::super::figure::{
    figure_plan, figure_stem, saved_message, spawn_export, ExportRequest, ExportResult, FigureView,
};
use super::{AvflowApp, Status};

/// Export… in flight: the save dialog, then the writing thread.
#[derive(Default)]
pub(super) struct Exports {
    dialog: Option<(ExportRequest, Receiver<Option<PathBuf>>)>,
    job: Option<(FigureView, Receiver<ExportResult>)>,
    /// Where the last figure went: the next dialog opens there.
    last_dir: Option<PathBuf>,
}

const NO_DIALOG_FIX: &str =
    "type a path (folder/name, no extension) in the \"save as\" field beside Export… and press Enter";

impl AvflowApp {
    /// Computes the drop curve and timings for `req`. No busy check: the worker runs only the newest
    /// queued drop.
    pub(super) fn run_drop(&mut self, req: DropSpec) {
        if self.view.model.is_none() || self.view.inputs.is_none() {
            return;
        }
        self.status = Status::Info(format!(
            "Dropping {} (timed from layer {})…",
            req.selector, req.from_layer
        ));
        self.view.drop.running = true;
        self.view.drop.progress = None;
        self.view.drop.started = Some(std::time::Instant::now());
        self.view.drop.requested = Some(req.clone());
        self.view.drop.job = self.submit(Request::Drop(req));
    }

    pub(super) fn cancel_drop(&mut self) {
        if let (Some(w), Some(job)) = (&self.worker, self.view.drop.job) {
            w.cancel(job);
        }
        self.status = Status::Info("Cancelling the drop…".into());
    }

    pub(super) fn on_drop_done(&mut self, outcome: Arc<DropOutcome>) {
        self.status = Status::Info(format!(
            "Drop curve over {} layers; prefill {:.2}× faster without {} of {} positions from layer {}.",
            outcome.layers,
            outcome.speedup(),
            outcome.dropped,
            outcome.positions,
            outcome.spec.from_layer
        ));
        let dv = &mut self.view.drop;
        if dv.requested.as_ref() == Some(&outcome.spec) {
            dv.running = false;
            dv.progress = None;
        }
        dv.result = Some(outcome);
    }

    /// Exports the figure of `req.view`: to the typed path, or through the save dialog where one opens.
    pub(super) fn export_figure(&mut self, req: ExportRequest) {
        if self.exports.job.is_some() || self.exports.dialog.is_some() {
            self.status = Status::Info("An export is already under way.".into());
            return;
        }
        if let Some(path) = req.path.clone() {
            self.start_export(req, path);
            return;
        }
        match dialog_support() {
            DialogSupport::Unavailable(_) => {
                self.view.export.typed = true;
                self.status = Status::Error {
                    message: "cannot open a save dialog here".into(),
                    fix: Some(NO_DIALOG_FIX.into()),
                };
            }
            DialogSupport::Available => {
                let rx = pick_save_path(
                    &format!("Export the {} figure", req.view.name()),
                    req.view.file_name(),
                    self.exports.last_dir.as_deref(),
                );
                self.exports.dialog = Some((req, rx));
            }
        }
    }

    fn start_export(&mut self, req: ExportRequest, chosen: PathBuf) {
        let plan = match figure_plan(req.view, &self.view, req.preset) {
            Ok(p) => p,
            Err(f) => return self.export_failed(req.view, f),
        };
        let stem = figure_stem(&chosen);
        self.exports.last_dir = stem
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from);
        match spawn_export(plan, stem.clone()) {
            Ok(rx) => {
                self.status = Status::Info(format!(
                    "Writing the {} figure to {}.*…",
                    req.view.name(),
                    stem.display()
                ));
                self.view.export.running = Some(req.view);
                self.exports.job = Some((req.view, rx));
            }
            Err(e) => self.export_failed(
                req.view,
                Failure::new(
                    format!("could not start the export thread: {e}"),
                    "the system is out of threads or memory; close other programs and try again",
                ),
            ),
        }
    }

    fn export_failed(&mut self, view: FigureView, f: Failure) {
        let (message, fix) = match f {
            Failure::Error { message, fix } => (message, fix),
            Failure::Cancelled => ("the export was cancelled".to_string(), None),
        };
        self.view.export.last = Some((view, Err(format!("Export failed: {message}"))));
        self.status = Status::Error { message, fix };
    }

    /// Picks up the dialog's choice and the writing thread's result (every frame while one is open).
    pub(super) fn poll_exports(&mut self) {
        if let Some((req, rx)) = self.exports.dialog.take() {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => self.exports.dialog = Some((req, rx)),
                Ok(Some(path)) => self.start_export(req, path),
                Ok(None) | Err(TryRecvError::Disconnected) => {
                    self.view.export.typed = true;
                    self.status = Status::Info(format!(
                        "No file chosen. If no dialog appeared, {NO_DIALOG_FIX}."
                    ));
                }
            }
        }
        if let Some((view, rx)) = self.exports.job.take() {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => self.exports.job = Some((view, rx)),
                Ok(Ok(paths)) => {
                    let msg = saved_message(&paths);
                    self.status = Status::Info(msg.clone());
                    self.view.export.running = None;
                    self.view.export.last = Some((view, Ok(msg)));
                }
                Ok(Err(f)) => {
                    self.view.export.running = None;
                    self.export_failed(view, f);
                }
                Err(TryRecvError::Disconnected) => {
                    self.view.export.running = None;
                    self.export_failed(
                        view,
                        Failure::new(
                            "the export thread stopped without a result",
                            "try again; if it keeps failing, report it with the terminal output",
                        ),
                    );
                }
            }
        }
        if self.exports.dialog.is_some() || self.exports.job.is_some() {
            self.ctx
                .request_repaint_after(std::time::Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use egui_kittest::kittest::Queryable;

    use super::super::test_support::{demo_app, require_demo, save_screenshot, step_until};
    use super::*;
    use crate::prompt::Selector;

    /// Scrolls `panel` to the top and steps until the widget called `label` is inside the window (a
    /// kittest click lands at the widget's place on screen).
    fn bring_into_view(
        harness: &mut egui_kittest::Harness<'_, AvflowApp>,
        panel: &'static str,
        label: &str,
    ) {
        harness.state_mut().focus_panel = Some(panel);
        for _ in 0..120 {
            harness.step();
            let screen = harness.ctx.content_rect();
            if screen.contains_rect(harness.get_by_label(label).rect()) {
                harness.run_steps(2);
                return;
            }
        }
        panic!("{label} never came into view");
    }

    /// Measured durations replaced by fixed ones, so the screenshot is the same from run to run.
    fn freeze(app: &mut AvflowApp) {
        app.freeze_timings();
        if let Some(r) = app.view.drop.result.as_mut() {
            let r = Arc::make_mut(r);
            r.prefill_full_s = 0.2;
            r.prefill_drop_s = 0.1;
            if let Some((full, cut)) = r.answers.as_mut() {
                full.per_token_s = 0.01;
                cut.per_token_s = 0.01;
            }
        }
        // The status line names the speed-up too.
        if let Some(r) = app.view.drop.result.clone() {
            app.on_drop_done(r);
        }
    }

    /// The drop view on the demo the way a user gets there: the defaults (every media group, timed from
    /// the middle layer, 8 answer tokens), Compute, and the curve shown is the library's
    /// [`crate::flow::generate::drop_curve`]; then only audio from layer 0. Renders the `drop.png`
    /// screenshot (written where `AVFLOW_SCREENSHOTS` says).
    #[test]
    fn drop_view_on_the_demo() {
        let demo = require_demo();
        let mut harness = demo_app(egui::vec2(1100.0, 1000.0));
        let compute = super::super::super::drop::COMPUTE;
        bring_into_view(&mut harness, super::super::super::drop::PANEL_NAME, compute);
        harness.get_by_label(compute).click();
        harness.run_steps(2);
        let want = DropSpec {
            selector: "audio,video".parse().expect("selector"),
            from_layer: 1,
            generate: super::super::super::drop::DEFAULT_GENERATE,
            curve: true,
            token: None,
        };
        assert_eq!(harness.state().view().drop.requested.as_ref(), Some(&want));
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && !app.view().drop.running
        });
        assert!(done, "no drop result: {:?}", harness.state().status());
        let shown = harness.state().view().drop.result.clone().expect("result");
        assert_eq!(shown.spec, want);

        let session = demo.open_session();
        let trace = &session.traced().expect("the demo session is traced").trace;
        let dropped = session.select(&want.selector).expect("audio,video");
        let lib = crate::flow::generate::drop_curve(session.decoder(), trace, &dropped, None)
            .expect("library curve");
        assert_eq!(shown.curve, lib);
        let s = super::super::super::drop::summary(&shown, Some(&want));
        harness.get_by_label(&s.prob);
        harness.get_by_label(&s.speedup);
        assert!(shown.answers.is_some());

        // Only audio, from layer 0, no answers: the newest request is what is shown.
        harness.get_by_label("drop video").click();
        harness
            .get_by_label("timed from layer")
            .set_value_accesskit(0.0);
        harness
            .get_by_label("answer tokens")
            .set_value_accesskit(0.0);
        harness.run_steps(2);
        harness
            .get_by_label(super::super::super::drop::COMPUTE)
            .click();
        harness.run_steps(2);
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy
                && app
                    .view()
                    .drop
                    .result
                    .as_ref()
                    .is_some_and(|r| r.spec.selector == Selector::group("audio"))
        });
        assert!(done, "no audio drop: {:?}", harness.state().status());
        let audio = harness.state().view().drop.result.clone().expect("result");
        assert_eq!((audio.spec.from_layer, audio.answers.is_none()), (0, true));
        let lib = crate::flow::generate::drop_curve(
            session.decoder(),
            trace,
            &session.select_str("audio").expect("audio"),
            None,
        )
        .expect("library curve");
        assert_eq!(audio.curve, lib);

        // Back to the first request for the picture (answers both ways).
        harness.get_by_label("drop video").click();
        harness
            .get_by_label("timed from layer")
            .set_value_accesskit(1.0);
        harness
            .get_by_label("answer tokens")
            .set_value_accesskit(super::super::super::drop::DEFAULT_GENERATE as f64);
        harness.run_steps(2);
        harness
            .get_by_label(super::super::super::drop::COMPUTE)
            .click();
        let done = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy
                && app
                    .view()
                    .drop
                    .result
                    .as_ref()
                    .is_some_and(|r| r.spec == want)
        });
        assert!(done, "{:?}", harness.state().status());
        freeze(harness.state_mut());
        harness.state_mut().focus_panel = Some(super::super::super::drop::PANEL_NAME);
        harness.remove_cursor();
        harness.run_steps(4);
        save_screenshot(&mut harness, "drop.png");
    }

    /// Export… on the sweep of the demo, through the typed-path fallback (no dialog in tests): every
    /// file of the figure is written, the spec carries the model, the inputs' SHA-256 and the sweep's
    /// settings, and the status says where the files went.
    #[test]
    fn exports_the_sweep_of_the_demo() {
        let demo = require_demo();
        let mut harness = demo_app(egui::vec2(1100.0, 900.0));
        bring_into_view(&mut harness, "Sweep", "Run sweep");
        harness.get_by_label("Run sweep").click();
        let swept = step_until(&mut harness, Duration::from_secs(300), |app| {
            !app.view().busy && !app.view().sweep.running && !app.view().sweep.records.is_empty()
        });
        assert!(swept, "no sweep: {:?}", harness.state().status());
        // As after a dialog that could not open.
        harness.state_mut().view.export.typed = true;
        harness.run_steps(2);
        let dir = tempfile::tempdir().expect("tempdir");
        let stem = dir.path().join("figs/sweep");
        let field = super::super::super::figure::path_label(FigureView::Sweep);
        harness.get_by_label(&field).focus();
        harness.step();
        harness
            .get_by_label(&field)
            .type_text(&stem.display().to_string());
        harness.step();
        bring_into_view(&mut harness, "Sweep", "Export sweep…");
        harness.get_by_label("Export sweep…").click();
        let written = step_until(&mut harness, Duration::from_secs(120), |app| {
            app.view().export.running.is_none() && app.view().export.last.is_some()
        });
        assert!(written, "{:?}", harness.state().status());
        let (view, report) = harness.state().view().export.last.clone().expect("report");
        assert_eq!(view, FigureView::Sweep);
        let report = report.expect("saved");
        assert!(report.starts_with("Saved 6 files to "), "{report}");
        assert_eq!(
            harness.state().status(),
            &Status::Info(report.clone()),
            "the status line reports it"
        );
        for ext in ["svg", "pdf", "png", "csv", "json", "spec.json"] {
            let p = PathBuf::from(format!("{}.{ext}", stem.display()));
            assert!(p.is_file(), "{} missing", p.display());
        }
        let spec: crate::export::FigureSpec = serde_json::from_str(
            &std::fs::read_to_string(format!("{}.spec.json", stem.display())).expect("spec"),
        )
        .expect("parse spec");
        assert_eq!(spec.kind, crate::export::FigureKind::SweepCurves);
        assert_eq!(
            spec.provenance.model.as_deref(),
            Some(demo.model.display().to_string().as_str())
        );
        assert_eq!(
            spec.provenance.media[0].sha256,
            crate::export::sha256_file(&demo.inputs).expect("hash")
        );
        assert_eq!(spec.provenance.settings["window"], 9);
        // The written figure redraws byte for byte from its spec, as the CLI's do.
        let again = tempfile::tempdir().expect("tempdir");
        crate::export::regenerate(
            Path::new(&format!("{}.spec.json", stem.display())),
            Some(again.path()),
        )
        .expect("regenerate");
        let a = std::fs::read(format!("{}.svg", stem.display())).expect("svg");
        let b = std::fs::read(again.path().join("sweep.svg")).expect("svg again");
        assert_eq!(a, b);
    }
}
