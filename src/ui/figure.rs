//! Export… on the views: the figure a view shows, saved with the writers the command line uses
//! ([`crate::export::write_figure`], the spec of [`crate::export::sweep_figure`]) — SVG, PDF, PNG, CSV,
//! the data JSON and the spec with its provenance — so a figure from the app and one from `avflow sweep
//! --figure` are the same kind of file and `avflow figure SPEC` redraws either.
//!
//! What is plotted comes from the view state by pure functions ([`figure_plan`], unit-tested). Hashing the
//! inputs file and rendering the PDF and PNG take up to seconds, so [`spawn_export`] does them on a helper
//! thread (not the worker: an export should not wait behind a sweep).

use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

use crate::export::data::{drop_curves, DropPoint};
use crate::export::{
    Colormap, FigureData, FigureKind, FigureSpec, HeatmapData, Preset, Provenance,
};
use crate::flow::heatmap::HeatMetric;
use crate::flow::Align;
use crate::session::DropOutcome;
use crate::worker::Failure;

use super::panel::{Action, HeatResult, InputsView, ViewState};
use super::tokens::Group;

/// The views that export a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FigureView {
    Sweep,
    Heatmap,
    Drop,
    /// The Heads pane: layers × query heads per group.
    Heads,
    /// The Compare pane: two runs' sweeps on one depth axis.
    Compare,
}

impl FigureView {
    /// As the view is called in buttons and messages.
    pub fn name(self) -> &'static str {
        match self {
            FigureView::Sweep => "sweep",
            FigureView::Heatmap => "heatmap",
            FigureView::Drop => "drop curve",
            FigureView::Heads => "heads",
            FigureView::Compare => "comparison",
        }
    }

    /// The file name the save dialog proposes.
    pub fn file_name(self) -> &'static str {
        match self {
            FigureView::Sweep => "sweep",
            FigureView::Heatmap => "heatmap",
            FigureView::Drop => "drop",
            FigureView::Heads => "heads",
            FigureView::Compare => "compare",
        }
    }
}

/// A panel's Export…: which figure, how wide, and where (`None`: ask with the save dialog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub view: FigureView,
    pub preset: Preset,
    pub path: Option<PathBuf>,
}

/// What the panels show about exporting.
#[derive(Debug, Clone, Default)]
pub struct ExportState {
    /// No save dialog opens here (or none appeared): the panels offer a path field instead.
    pub typed: bool,
    /// The view whose figure is being written.
    pub running: Option<FigureView>,
    /// The last export's report: `Saved 6 files to …`, or the error.
    pub last: Option<(FigureView, Result<String, String>)>,
}

/// A panel's own export settings.
#[derive(Debug, Clone)]
pub struct ExportControls {
    pub preset: Preset,
    /// The typed path (folder/name), used where no dialog opens.
    pub path: String,
}

impl Default for ExportControls {
    fn default() -> Self {
        Self {
            preset: Preset::Single,
            path: String::new(),
        }
    }
}

/// `single column (3.25 in)`.
pub fn preset_name(p: Preset) -> String {
    let cols = match p {
        Preset::Single => "single",
        Preset::Double => "double",
    };
    format!("{cols} column ({} in)", p.width_in())
}

/// The button text: one per view, so each is found by its name.
pub fn button_text(view: FigureView) -> String {
    format!("Export {}…", view.name())
}

/// The accessible name of the typed-path field.
pub fn path_label(view: FigureView) -> String {
    format!("save {} as", view.name())
}

/// Draws `Export <view>…` with the width choice (and, where no dialog opens, the path field); pushes
/// [`Action::Export`]. `ready`: the view has a figure to save.
pub fn export_row(
    ui: &mut egui::Ui,
    controls: &mut ExportControls,
    view: FigureView,
    state: &ExportState,
    ready: bool,
    actions: &mut Vec<Action>,
) {
    ui.horizontal_wrapped(|ui| {
        let idle = state.running.is_none();
        let mut go = ui
            .add_enabled(ready && idle, egui::Button::new(button_text(view)))
            .on_hover_text(
                "Save this figure as SVG, PDF, 300-dpi PNG, CSV, the data JSON and a spec with its \
                 provenance (`avflow figure SPEC` redraws it)",
            )
            .on_disabled_hover_text(if idle {
                "Compute the view first"
            } else {
                "A figure is being written"
            })
            .clicked();
        let width = ui.label("width");
        egui::ComboBox::from_id_salt(("export_preset", view.name()))
            .selected_text(preset_name(controls.preset))
            .show_ui(ui, |ui| {
                for p in [Preset::Single, Preset::Double] {
                    ui.selectable_value(&mut controls.preset, p, preset_name(p));
                }
            })
            .response
            .labelled_by(width.id);
        if state.typed {
            ui.label("save as");
            // Named after its view rather than by the shared "save as" label, so each is found apart.
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut controls.path)
                        .hint_text(format!("folder/{} (no extension)", view.file_name()))
                        .desired_width(260.0),
                )
                .accessible_name(path_label(view));
            go |= ready
                && idle
                && field.lost_focus()
                && ui.input(|i| i.key_pressed(egui::Key::Enter));
        }
        if state.running == Some(view) {
            ui.spinner();
            ui.weak("writing…");
        }
        if go {
            let typed = controls.path.trim();
            actions.push(Action::Export(ExportRequest {
                view,
                preset: controls.preset,
                path: (state.typed && !typed.is_empty()).then(|| PathBuf::from(typed)),
            }));
        }
    });
    if let Some((v, report)) = &state.last {
        if *v == view {
            match report {
                Ok(s) => ui.weak(s),
                Err(e) => ui.colored_label(ui.visuals().error_fg_color, e),
            };
        }
    }
}

/// What one export writes: the figure, and the inputs files whose SHA-256 go into the provenance (hashed
/// on the helper thread; a comparison has two).
#[derive(Debug, Clone, PartialEq)]
pub struct FigurePlan {
    pub spec: FigureSpec,
    pub data: FigureData,
    pub inputs: Vec<PathBuf>,
}

fn failure(message: impl Into<String>, fix: impl Into<String>) -> Failure {
    Failure::new(message, fix)
}

/// The figure `view` shows now, as the command line would write it: the model as loaded, the question
/// when the prompt was asked in the app, dtype and device, and the view's settings in the provenance.
pub fn figure_plan(
    view: FigureView,
    state: &ViewState,
    preset: Preset,
) -> Result<FigurePlan, Failure> {
    if view == FigureView::Compare {
        return compare_plan(state, preset);
    }
    let (Some(model), Some(inputs)) = (&state.model, &state.inputs) else {
        return Err(failure(
            "nothing to export yet",
            "load a model and inputs and compute the view first",
        ));
    };
    let mut prov = Provenance::default()
        .with_model(&model.source)
        .with_family(&model.family)
        .with_setting("dtype", model.dtype.clone())
        .with_setting("device", model.device.clone());
    if let Some(p) = model.positions {
        prov = prov.with_setting("positions", p.name());
    }
    if let Some(m) = state.media.as_ref().filter(|m| m.inputs == inputs.path) {
        prov.question = Some(m.preview.question.clone());
    }
    let (spec, data) = match view {
        FigureView::Sweep => {
            let sweep = &state.sweep;
            if sweep.records.is_empty() {
                return Err(failure(
                    "the sweep has no results yet",
                    "press Run sweep first",
                ));
            }
            crate::export::sweep_spec(&sweep.records, sweep.window, Align::Center, prov, preset)
        }
        FigureView::Heatmap => {
            let hm = &state.heatmap;
            let result = hm.result(hm.metric).ok_or_else(|| {
                failure(
                    format!("the {} heatmap is not computed", hm.metric.name()),
                    "press Compute (Ctrl+Shift+H) first",
                )
            })?;
            heatmap_figure(result, inputs, prov, preset)?
        }
        FigureView::Compare => unreachable!("handled above"),
        FigureView::Heads => {
            let per_head = state.heads.per_head.as_ref().ok_or_else(|| {
                failure(
                    "the heads are not measured",
                    "press Compute heads in the Heads pane first",
                )
            })?;
            let groups = super::heads::head_groups(&inputs.flow_groups);
            crate::export::heads_spec(per_head, &groups, "last", prov, preset)
                .map_err(|e| Failure::from(e).or_fix("compute the heads again"))?
        }
        FigureView::Drop => {
            let outcome = state.drop.result.as_ref().ok_or_else(|| {
                failure(
                    "the drop curve is not computed",
                    "press Compute drop curve in the Drop panel first",
                )
            })?;
            drop_figure(outcome, prov, preset)
        }
    };
    Ok(FigurePlan {
        spec,
        data,
        inputs: vec![inputs.path.clone()],
    })
}

/// The Compare pane's figure, as `avflow compare --figure` writes it (both models and inputs named).
fn compare_plan(state: &ViewState, preset: Preset) -> Result<FigurePlan, Failure> {
    let (Some(a), Some(b)) = (&state.compare.a, &state.compare.b) else {
        return Err(failure(
            "the comparison has no results yet",
            "open B and press Compare sweeps in the Compare pane first",
        ));
    };
    let (spec, data) =
        crate::export::compare_spec(a.run(), b.run(), a.window, Provenance::default(), preset);
    Ok(FigurePlan {
        spec,
        data,
        inputs: vec![a.inputs.clone(), b.inputs.clone()],
    })
}

/// A position's group on an exported token axis: the flow groups' names where the app's groups have one
/// (so the palette colours them as in the app), `text` for the other prompt text, `other` for media
/// brackets, and `last` for the answer position.
pub fn token_axis_groups(groups: &[Group]) -> Vec<String> {
    let last = groups.len().saturating_sub(1);
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                return "last".to_string();
            }
            match g {
                Group::Marker => "other".to_string(),
                g => g.name().to_string(),
            }
        })
        .collect()
}

/// The heatmap view as a figure: attention metrics as an attention map (like `avflow attention
/// --figure`), lens metrics as a heatmap, with the colour map the app uses for the metric.
pub fn heatmap_figure(
    result: &HeatResult,
    inputs: &InputsView,
    prov: Provenance,
    preset: Preset,
) -> Result<(FigureSpec, FigureData), Failure> {
    let m = &result.matrix;
    if m.positions != inputs.groups.len() {
        return Err(failure(
            format!(
                "the heatmap has {} positions but the inputs {}",
                m.positions,
                inputs.groups.len()
            ),
            "compute the heatmap again for the loaded inputs",
        ));
    }
    if let Some(i) = m.values.iter().position(|v| !v.is_finite()) {
        return Err(failure(
            format!(
                "the heatmap holds a non-finite value (layer {}, position {})",
                i / m.positions.max(1),
                i % m.positions.max(1)
            ),
            "a figure needs finite values; check the model's dtype (f32 avoids overflow)",
        ));
    }
    let (kind, label, colormap) = match result.metric {
        HeatMetric::AttentionFromLast | HeatMetric::AttentionFromQuestion => (
            FigureKind::AttentionMap,
            "attention (fraction of the row)",
            Colormap::Sequential,
        ),
        HeatMetric::LensAnswer => (
            FigureKind::Heatmap,
            "p(answer), logit lens",
            Colormap::Sequential,
        ),
        HeatMetric::LensGain => (
            FigureKind::Heatmap,
            "gain in p(answer) per layer (pp)",
            Colormap::Diverging,
        ),
        HeatMetric::KnockoutEffect => (
            FigureKind::Heatmap,
            "change in p(answer) when last cannot see the token (%)",
            Colormap::Diverging,
        ),
    };
    let data = FigureData::Heatmap(HeatmapData {
        rows: m.layers,
        cols: m.positions,
        values: m.values.iter().map(|&v| f64::from(v)).collect(),
        token_groups: token_axis_groups(&inputs.groups),
        value_label: label.into(),
        colormap: Some(colormap),
    });
    let prov = prov
        .with_setting("metric", result.metric.name())
        .with_setting("token", result.token.0);
    let mut spec = FigureSpec::new(kind, preset, prov);
    spec.title = Some(result.metric.name().to_string());
    Ok((spec, data))
}

/// The drop view as `avflow drop --curve` draws it: p(answer) per first dropped layer with the undropped
/// probability as the reference line, and the measured speed-up in the title and settings.
pub fn drop_figure(
    outcome: &DropOutcome,
    prov: Provenance,
    preset: Preset,
) -> (FigureSpec, FigureData) {
    let req = &outcome.spec;
    let groups = req.selector.to_string();
    let points: Vec<DropPoint> = outcome
        .curve
        .iter()
        .map(|(l, r)| DropPoint {
            groups: groups.clone(),
            from_layer: *l,
            prob: f64::from(r.prob),
            base_prob: f64::from(r.base_prob),
        })
        .collect();
    let prov = prov
        .with_setting("groups", groups)
        .with_setting("token", outcome.at_layer.token_id)
        .with_setting("from_layer", req.from_layer)
        .with_setting("dropped_positions", outcome.dropped)
        .with_setting("prefill_speedup_at_from_layer", outcome.speedup());
    let mut spec = FigureSpec::new(FigureKind::DropCurve, preset, prov);
    spec.title = Some(format!(
        "prefill {:.2}× faster dropping from layer {}",
        outcome.speedup(),
        req.from_layer
    ));
    (spec, drop_curves(&points))
}

/// The stem the figure is written under: the chosen path without the extension of one of the files a
/// figure has (`fig.svg`, `fig.spec.json` → `fig`), so picking any of them in the dialog works.
pub fn figure_stem(chosen: &Path) -> PathBuf {
    let Some(name) = chosen.file_name().and_then(|n| n.to_str()) else {
        return chosen.to_path_buf();
    };
    let stem = [".spec.json", ".svg", ".pdf", ".png", ".csv", ".json"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext).filter(|s| !s.is_empty()))
        .unwrap_or(name);
    chosen.with_file_name(stem)
}

/// `Saved 6 files to /x: sweep.{json, csv, pdf, png, svg, spec.json}.`
pub fn saved_message(paths: &[PathBuf]) -> String {
    let Some(first) = paths.first() else {
        return "Nothing was written.".into();
    };
    let dir = first
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| ".".to_string(), |p| p.display().to_string());
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let stem = names
        .first()
        .and_then(|n| n.strip_suffix(".json"))
        .unwrap_or("");
    let exts: Vec<&str> = names
        .iter()
        .map(|n| {
            n.strip_prefix(stem)
                .and_then(|e| e.strip_prefix('.'))
                .unwrap_or(n)
        })
        .collect();
    format!(
        "Saved {} files to {dir}: {stem}.{{{}}}.",
        paths.len(),
        exts.join(", ")
    )
}

/// Hashes the inputs into the provenance and writes every file of the figure under `stem`.
pub fn write_plan(plan: FigurePlan, stem: &Path) -> Result<Vec<PathBuf>, Failure> {
    let FigurePlan {
        mut spec,
        data,
        inputs,
    } = plan;
    for inputs in &inputs {
        spec.provenance = spec.provenance.with_file(inputs).map_err(|e| {
            Failure::from(e)
                .or_fix("the inputs file was moved or deleted; read it again and export")
        })?;
    }
    crate::export::write_figure(&spec, &data, stem)
        .map_err(|e| Failure::from(e).or_fix("choose a folder you can write to"))
}

/// What the export thread reports: the files written, or why not.
pub type ExportResult = Result<Vec<PathBuf>, Failure>;

/// [`write_plan`] on a helper thread; the receiver yields its result once.
pub fn spawn_export(plan: FigurePlan, stem: PathBuf) -> std::io::Result<Receiver<ExportResult>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("avflow-export".into())
        .spawn(move || {
            // A panic in the drawing code must not take the app down: it becomes an error.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_plan(plan, &stem)))
                    .unwrap_or_else(|_| {
                        Err(failure(
                            "internal error while writing the figure",
                            "this is a bug in avflow — please report it with the terminal output",
                        ))
                    });
            let _ = tx.send(result);
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::flow::heatmap::Heatmap;
    use crate::flow::{KnockoutResult, SweepRecord};
    use crate::session::DropSpec;
    use crate::worker::ModelSummary;

    fn model() -> ModelSummary {
        ModelSummary {
            source: "Qwen/Qwen2.5-Omni-3B@main".into(),
            dir: "d".into(),
            family: "qwen2_5_omni".into(),
            parameters: 1,
            layers: 3,
            hidden: 1,
            vocab: 1,
            dtype: "bf16".into(),
            device: "cpu".into(),
            has_tokenizer: true,
            load_seconds: 0.0,
            positions: None,
        }
    }

    fn inputs(groups: Vec<Group>) -> InputsView {
        InputsView {
            path: "prompt.safetensors".into(),
            ids: (0..groups.len() as u32).collect(),
            texts: vec![String::new(); groups.len()],
            times: vec![None; groups.len()],
            groups,
            flow_groups: Vec::new(),
            map: Default::default(),
        }
    }

    fn rec(s: &str, t: &str, layer: usize) -> SweepRecord {
        SweepRecord {
            source: s.into(),
            target: t.into(),
            layer,
            start: layer.saturating_sub(1),
            end: layer + 2,
            prob: 0.25,
            base_prob: 0.5,
            rel_change: -50.0,
            top1_id: 7,
            token_id: 7,
        }
    }

    fn state() -> ViewState {
        ViewState {
            model: Some(model()),
            inputs: Some(inputs(vec![
                Group::System,
                Group::Marker,
                Group::Audio,
                Group::Video,
                Group::Text,
                Group::Text,
            ])),
            ..ViewState::default()
        }
    }

    fn outcome() -> DropOutcome {
        let r = |p: f32| KnockoutResult {
            prob: p,
            base_prob: 0.5,
            rel_change: crate::flow::knockout::rel_change(p, 0.5),
            top1_id: 7,
            token_id: 7,
        };
        DropOutcome {
            spec: DropSpec {
                selector: "audio,video".parse().expect("selector"),
                from_layer: 1,
                generate: 0,
                curve: true,
                token: None,
            },
            dropped: 2,
            positions: 6,
            layers: 3,
            curve: vec![(0, r(0.1)), (1, r(0.3)), (2, r(0.45))],
            at_layer: r(0.3),
            token: (7, "yes".into()),
            prefill_full_s: 3.0,
            prefill_drop_s: 2.0,
            answers: None,
        }
    }

    #[test]
    fn the_sweep_exports_as_the_cli_writes_it() {
        let mut s = state();
        assert!(figure_plan(FigureView::Sweep, &s, Preset::Single).is_err());
        s.sweep.records = vec![rec("audio", "last", 0), rec("audio", "last", 1)];
        s.sweep.window = 9;
        let plan = figure_plan(FigureView::Sweep, &s, Preset::Double).expect("plan");
        let prov = Provenance::default()
            .with_model("Qwen/Qwen2.5-Omni-3B@main")
            .with_family("qwen2_5_omni")
            .with_setting("dtype", "bf16")
            .with_setting("device", "cpu");
        let (spec, data) =
            crate::export::sweep_spec(&s.sweep.records, 9, Align::Center, prov, Preset::Double);
        assert_eq!(plan.spec, spec);
        assert_eq!(plan.data, data);
        assert_eq!(plan.inputs, vec![PathBuf::from("prompt.safetensors")]);
        let p = &plan.spec.provenance;
        assert_eq!(
            (
                p.model.as_deref(),
                p.revision.as_deref(),
                p.family.as_deref()
            ),
            (
                Some("Qwen/Qwen2.5-Omni-3B"),
                Some("main"),
                Some("qwen2_5_omni")
            )
        );
        assert_eq!(p.settings["window"], 9);
        assert_eq!(p.settings["pairs"], "audio:last");
        assert_eq!(plan.spec.x_label, "layer (centre of 9-layer window)");
        // Nothing loaded: an error with its fix.
        let err = figure_plan(FigureView::Sweep, &ViewState::default(), Preset::Single);
        assert!(matches!(err, Err(Failure::Error { fix: Some(_), .. })));
    }

    #[test]
    fn the_heatmap_exports_each_metric_with_its_token_axis() {
        let mut s = state();
        assert!(figure_plan(FigureView::Heatmap, &s, Preset::Single).is_err());
        let values: Vec<f32> = (0..18).map(|i| i as f32 / 100.0).collect();
        for metric in HeatMetric::ALL {
            s.heatmap.metric = metric;
            s.heatmap.results = vec![HeatResult {
                metric,
                matrix: Arc::new(Heatmap::new(3, 6, values.clone()).expect("shape")),
                token: (7, "yes".into()),
                seconds: 0.1,
                generation: 1,
            }];
            let plan = figure_plan(FigureView::Heatmap, &s, Preset::Single).expect("plan");
            let FigureData::Heatmap(h) = &plan.data else {
                panic!("not a heatmap")
            };
            assert_eq!((h.rows, h.cols), (3, 6));
            assert_eq!(h.values[7], f64::from(0.07_f32));
            assert_eq!(
                h.token_groups,
                vec!["system", "other", "audio", "video", "text", "last"]
            );
            assert_eq!(plan.spec.provenance.settings["metric"], metric.name());
            assert_eq!(plan.spec.title.as_deref(), Some(metric.name()));
            let attention = matches!(
                metric,
                HeatMetric::AttentionFromLast | HeatMetric::AttentionFromQuestion
            );
            assert_eq!(
                plan.spec.kind,
                if attention {
                    FigureKind::AttentionMap
                } else {
                    FigureKind::Heatmap
                }
            );
            let diverging = matches!(metric, HeatMetric::LensGain | HeatMetric::KnockoutEffect);
            assert_eq!(
                h.colormap,
                Some(if diverging {
                    Colormap::Diverging
                } else {
                    Colormap::Sequential
                })
            );
            plan.data.validate().expect("valid");
        }
        // A matrix of another prompt, or a NaN, is refused with a fix.
        s.heatmap.results[0].matrix = Arc::new(Heatmap::new(1, 2, vec![0.0, 1.0]).expect("shape"));
        assert!(figure_plan(FigureView::Heatmap, &s, Preset::Single).is_err());
        let mut nan = values.clone();
        nan[4] = f32::NAN;
        s.heatmap.results[0].matrix = Arc::new(Heatmap::new(3, 6, nan).expect("shape"));
        let err = figure_plan(FigureView::Heatmap, &s, Preset::Single);
        assert!(
            matches!(&err, Err(Failure::Error { message, .. }) if message.contains("position 4")),
            "{err:?}"
        );
    }

    #[test]
    fn the_drop_curve_exports_as_drop_curve_does() {
        let mut s = state();
        assert!(figure_plan(FigureView::Drop, &s, Preset::Single).is_err());
        s.drop.result = Some(Arc::new(outcome()));
        let plan = figure_plan(FigureView::Drop, &s, Preset::Single).expect("plan");
        assert_eq!(plan.spec.kind, FigureKind::DropCurve);
        assert_eq!(
            plan.spec.title.as_deref(),
            Some("prefill 1.50× faster dropping from layer 1")
        );
        let st = &plan.spec.provenance.settings;
        assert_eq!(st["groups"], "audio,video");
        assert_eq!(st["from_layer"], 1);
        assert_eq!(st["prefill_speedup_at_from_layer"], 1.5);
        let FigureData::Curves(c) = &plan.data else {
            panic!("not curves")
        };
        assert_eq!(c.series.len(), 1);
        assert_eq!(c.series[0].label, "audio + video dropped");
        assert_eq!(c.series[0].x, vec![0.0, 1.0, 2.0]);
        assert_eq!(c.series[0].y[1], f64::from(0.3_f32));
        assert_eq!(c.reference_y, Some(0.5));
    }

    #[test]
    fn stems_lose_the_figure_extensions() {
        assert_eq!(
            figure_stem(Path::new("/x/fig.svg")),
            PathBuf::from("/x/fig")
        );
        assert_eq!(
            figure_stem(Path::new("/x/fig.spec.json")),
            PathBuf::from("/x/fig")
        );
        assert_eq!(figure_stem(Path::new("fig")), PathBuf::from("fig"));
        assert_eq!(
            figure_stem(Path::new("/x/fig.v2")),
            PathBuf::from("/x/fig.v2")
        );
        assert_eq!(figure_stem(Path::new("/x/.svg")), PathBuf::from("/x/.svg"));
    }

    #[test]
    fn the_report_names_the_folder_and_the_files() {
        let paths: Vec<PathBuf> = ["json", "csv", "pdf", "png", "svg", "spec.json"]
            .iter()
            .map(|e| PathBuf::from(format!("/tmp/out/sweep.{e}")))
            .collect();
        assert_eq!(
            saved_message(&paths),
            "Saved 6 files to /tmp/out: sweep.{json, csv, pdf, png, svg, spec.json}."
        );
        assert_eq!(saved_message(&[]), "Nothing was written.");
        assert_eq!(preset_name(Preset::Double), "double column (6.75 in)");
        assert_eq!(button_text(FigureView::Drop), "Export drop curve…");
    }

    #[test]
    fn a_missing_inputs_file_is_an_error_with_a_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = state();
        s.drop.result = Some(Arc::new(outcome()));
        let mut plan = figure_plan(FigureView::Drop, &s, Preset::Single).expect("plan");
        plan.inputs = vec![dir.path().join("gone.safetensors")];
        let err = write_plan(plan.clone(), &dir.path().join("drop"));
        assert!(
            matches!(&err, Err(Failure::Error { message, fix: Some(_) }) if message.contains("gone.safetensors")),
            "{err:?}"
        );
        // With the file there, every format and the spec with the file's hash.
        let inputs = dir.path().join("prompt.safetensors");
        std::fs::write(&inputs, b"abc").expect("write");
        plan.inputs = vec![inputs];
        let rx = spawn_export(plan, dir.path().join("figs/drop")).expect("thread");
        let paths = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("result")
            .expect("written");
        assert_eq!(paths.len(), 6);
        assert!(paths.iter().all(|p| p.is_file()));
        let spec = std::fs::read_to_string(dir.path().join("figs/drop.spec.json")).expect("spec");
        assert!(
            spec.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            "{spec}"
        );
    }
}
