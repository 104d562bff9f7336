//! Compare pane: a second run (B) beside the loaded one (A) — another clip, another model of either family,
//! another size, the same question. Both sweeps on one depth axis (`layer / (layers − 1)`, so a 28-layer and
//! a 36-layer model line up), their difference B − A, the same sweeps as heat strips on one colour scale
//! with the pairs aligned row by row, and the knockout shown in the Knockout pane applied to both (in B, the
//! same stretch of depth) with both readouts. Export… writes the figure `avflow compare --figure` writes.
//!
//! B runs in a worker of its own (the app's `compare` module); where the two models do not fit in memory
//! together, B runs after A: A's results are kept here, its model is freed while B runs, then loaded again.

use std::path::PathBuf;

use egui::{Color32, Rect, RichText, Sense, Stroke};
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints};

use crate::export::data::{compare_curves, compare_difference, depth, target_style};
use crate::export::FigureData;
use crate::flow::SweepRecord;
use crate::prompt::Selector;
use crate::session::{KnockoutOutcome, KnockoutSpec};
use crate::worker::ModelSummary;

use super::colormap::Colormap;
use super::figure::{export_row, ExportControls, FigureView};
use super::panel::{Action, Panel, ViewState};
use super::sweep::{plot_style, source_color, sweep_pairs, SWEEP_WINDOW};

/// Share of the free memory B may take beside A (the rest: B's trace, the UI, the system).
const FILL: f64 = 0.85;

/// One run of the comparison as swept: what it ran on and its records.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareSide {
    /// The model as the user gave it.
    pub model: String,
    pub family: String,
    pub inputs: PathBuf,
    pub layers: usize,
    pub window: usize,
    pub records: Vec<SweepRecord>,
}

impl CompareSide {
    /// This side as the figure writer takes it.
    pub fn run(&self) -> crate::export::CompareRun<'_> {
        crate::export::CompareRun {
            model: &self.model,
            family: &self.family,
            inputs: &self.inputs,
            layers: self.layers,
            records: &self.records,
        }
    }
}

/// What the memory allows: A's weights (loaded), B's (read from its folder, where it is one), and the
/// memory the device can still give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub a_bytes: u64,
    pub b_bytes: Option<u64>,
    pub free: Option<u64>,
}

impl MemoryPlan {
    /// B's weights fit beside A's (unknown sizes count as fitting: the load's own check still guards).
    pub fn fits(&self) -> bool {
        match (self.b_bytes, self.free) {
            (Some(b), Some(f)) => b as f64 <= f as f64 * FILL,
            _ => true,
        }
    }

    /// One line for the pane: what each needs, what is free, and what avflow does about it.
    pub fn text(&self) -> String {
        use crate::session::budget::size as gb;
        let b = self
            .b_bytes
            .map_or_else(|| "an unknown size (not a local folder)".into(), gb);
        let free = self.free.map_or_else(|| "unknown".into(), gb);
        if self.fits() {
            format!(
                "Memory: A holds {}, B needs {b}, {free} free: both stay loaded.",
                gb(self.a_bytes)
            )
        } else {
            format!(
                "Memory: A holds {}, B needs {b}, only {free} free: B runs after A (A's results are kept, \
                 its model is freed while B runs and loaded again after).",
                gb(self.a_bytes)
            )
        }
    }
}

/// What the pane shows.
#[derive(Debug, Clone, Default)]
pub struct CompareView {
    /// B as loaded (absent while B runs after A and is not loaded).
    pub b_model: Option<ModelSummary>,
    /// B's inputs file and its flow groups with their sizes.
    pub b_inputs: Option<(PathBuf, Vec<(String, usize)>)>,
    /// B's source and inputs as opened (kept while B is not loaded).
    pub b_opened: Option<(String, PathBuf)>,
    pub a: Option<CompareSide>,
    pub b: Option<CompareSide>,
    /// The knockout shown in A and the same stretch of depth in B.
    pub a_knockout: Option<KnockoutOutcome>,
    pub b_knockout: Option<KnockoutOutcome>,
    pub plan: Option<MemoryPlan>,
    /// B loads only while it runs, after A.
    pub sequential: bool,
    /// What runs now, one line (`None`: nothing).
    pub stage: Option<String>,
    /// `(done, total)` windows of B's sweep.
    pub progress: Option<(usize, usize)>,
    pub error: Option<String>,
}

impl CompareView {
    pub fn running(&self) -> bool {
        self.stage.is_some()
    }
}

/// What the Compare pane asks the app for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareAction {
    /// Open B: load it beside A, or (`sequential`) only remember it, to load while it runs.
    Open {
        model: String,
        inputs: PathBuf,
        sequential: bool,
    },
    /// Sweep both runs over these pairs with windows of `window` layers (A's sweep reused when it is the
    /// same), and apply A's shown knockout to B.
    Run {
        pairs: Vec<(Selector, Selector)>,
        window: usize,
    },
    /// Close B (its worker and model).
    Close,
}

/// The pairs both prompts can sweep: the Sweep pane's pairs for A whose groups B's prompt also has.
pub fn common_pairs(
    a: &[(String, usize)],
    b: Option<&[(String, usize)]>,
) -> Vec<(Selector, Selector)> {
    let has = |g: &[(String, usize)], s: &Selector| {
        let name = s.to_string();
        g.iter().any(|(n, c)| *n == name && *c > 0)
    };
    sweep_pairs(a)
        .into_iter()
        .filter(|(s, t)| b.is_none_or(|b| has(b, s) && has(b, t)))
        .collect()
}

/// `spec` as run in a model of `to` layers when it was made for one of `from`: every block's layers the same
/// stretch of depth; the watched token left to B's own top-1 (token ids differ between models), a typed
/// answer and options kept (they are text).
pub fn scaled_spec(spec: &KnockoutSpec, from: usize, to: usize) -> KnockoutSpec {
    let mut out = spec.clone();
    for b in &mut out.blocks {
        (b.start, b.end) = crate::flow::sweep::scale_layers(b.start, b.end, from, to);
        // Heads are per model: a head index of A means nothing in B.
        b.heads = None;
    }
    out.token = None;
    out
}

/// A readout: `layers 1..2 · p 0.412 -> 0.331 (-19.7%) · top-1 "a"`.
pub fn readout(o: &KnockoutOutcome) -> String {
    let layers = o
        .spec
        .main()
        .map(|m| format!("layers {}..{}", m.start, m.end))
        .unwrap_or_default();
    format!(
        "{layers} · p {:.4} -> {:.4} ({:+.1}%) · top-1 {:?}",
        o.result.base_prob, o.result.prob, o.result.rel_change, o.top1.1
    )
}

/// One row of the heat strips: a run's relative change per layer, each layer a cell `[d0, d1)` of depth.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatRow {
    /// `A: audio → last`.
    pub label: String,
    pub cells: Vec<(f64, f64, f64)>,
}

/// The cells of one run's pair on the depth axis: layer `l` of `L` centred on `l / (L − 1)`, half a layer
/// either side, clipped to `[0, 1]` (a one-layer model fills the row).
fn depth_cells(records: &[SweepRecord], layers: usize, s: &str, t: &str) -> Vec<(f64, f64, f64)> {
    let half = if layers <= 1 {
        1.0
    } else {
        0.5 / (layers - 1) as f64
    };
    let mut cells: Vec<(f64, f64, f64)> = records
        .iter()
        .filter(|r| r.source == s && r.target == t)
        .map(|r| {
            let d = depth(r.layer, layers);
            (
                (d - half).max(0.0),
                (d + half).min(1.0),
                f64::from(r.rel_change),
            )
        })
        .collect();
    cells.sort_by(|x, y| x.0.total_cmp(&y.0));
    cells
}

/// A's and B's rows of every pair, A above B, pairs in A's order.
pub fn heat_rows(a: &CompareSide, b: &CompareSide) -> Vec<HeatRow> {
    let mut rows = Vec::new();
    for (s, t) in crate::flow::sweep::record_pairs(&a.records) {
        for (side, run) in [("A", a), ("B", b)] {
            rows.push(HeatRow {
                label: format!("{side}: {s} -> {t}"),
                cells: depth_cells(&run.records, run.layers, &s, &t),
            });
        }
    }
    rows
}

/// The one colour scale of every strip: `[-m, m]` with `m` the largest change of either run (at least 1%).
pub fn shared_scale(rows: &[HeatRow]) -> f64 {
    rows.iter()
        .flat_map(|r| r.cells.iter().map(|c| c.2.abs()))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
}

/// Curves of both runs on the depth axis as the exported figure draws them ([`compare_curves`]): per pair, A
/// solid and B dashed in the source's colour; labels with `->` (the app's font has no arrow).
fn curve_lines(
    a: &CompareSide,
    b: &CompareSide,
) -> Vec<(String, Color32, LineStyle, Vec<[f64; 2]>)> {
    let FigureData::Curves(c) = compare_curves(&a.records, a.layers, &b.records, b.layers) else {
        return Vec::new();
    };
    let pairs = crate::flow::sweep::record_pairs(&a.records);
    c.series
        .into_iter()
        .map(|s| {
            let i = pairs
                .iter()
                .position(|(p, _)| *p == s.group_key)
                .unwrap_or(0);
            let pts = s.x.iter().zip(&s.y).map(|(&x, &y)| [x, y]).collect();
            (
                s.label.replace('→', "->"),
                source_color(&s.group_key, i),
                plot_style(s.style),
                pts,
            )
        })
        .collect()
}

/// The window a comparison starts with: a quarter of A's depth, as the protocol's 9 of 36 layers (at least
/// one layer), so a small model's curves are not one flat window.
pub fn default_window(layers: usize) -> usize {
    ((layers as f64 / 4.0).round() as usize).clamp(1, SWEEP_WINDOW)
}

/// Accessible name of the heat strips (tests find them by it).
pub const STRIPS_LABEL: &str = "comparison heat strips";

#[derive(Default)]
pub struct ComparePanel {
    model: String,
    inputs: String,
    sequential: bool,
    window: Option<usize>,
    difference: bool,
    export: ExportControls,
}

impl ComparePanel {
    fn open_row(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let cmp = &view.compare;
        egui::Grid::new("compare_open")
            .num_columns(2)
            .show(ui, |ui| {
                let l = ui.label("B model");
                ui.add(
                    egui::TextEdit::singleline(&mut self.model)
                        .hint_text("folder or hub id, either family")
                        .desired_width(320.0),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("B inputs");
                ui.add(
                    egui::TextEdit::singleline(&mut self.inputs)
                        .hint_text("prepared inputs (.safetensors) for B's model")
                        .desired_width(320.0),
                )
                .labelled_by(l.id);
                ui.end_row();
            });
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut self.sequential, "Run B after A")
                .on_hover_text("One model in memory at a time: A's results are kept, its model is freed while B runs");
            let ready = view.model.is_some()
                && view.inputs.is_some()
                && !self.model.trim().is_empty()
                && !self.inputs.trim().is_empty()
                && !cmp.running();
            if ui
                .add_enabled(ready, egui::Button::new("Open B"))
                .on_disabled_hover_text("Load A first, type B's model and inputs, wait for the comparison")
                .clicked()
            {
                actions.push(Action::Compare(CompareAction::Open {
                    model: self.model.trim().to_string(),
                    inputs: PathBuf::from(self.inputs.trim()),
                    sequential: self.sequential,
                }));
            }
            if cmp.b_opened.is_some()
                && ui
                    .add_enabled(!cmp.running(), egui::Button::new("Close B"))
                    .clicked()
            {
                actions.push(Action::Compare(CompareAction::Close));
            }
        });
    }

    fn run_row(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let cmp = &view.compare;
        let Some(inputs) = &view.inputs else { return };
        let pairs = common_pairs(
            &inputs.flow_groups,
            cmp.b_inputs.as_ref().map(|(_, g)| g.as_slice()),
        );
        let layers = view.model.as_ref().map_or(SWEEP_WINDOW * 4, |m| m.layers);
        let window = self.window.get_or_insert(default_window(layers));
        ui.horizontal_wrapped(|ui| {
            ui.label("window");
            ui.add(egui::DragValue::new(window).range(1..=64).suffix(" layers"));
            let ready = cmp.b_opened.is_some()
                && (cmp.b_inputs.is_some() || cmp.sequential)
                && !pairs.is_empty()
                && !cmp.running()
                && !view.busy;
            if ui
                .add_enabled(ready, egui::Button::new("Compare sweeps"))
                .on_hover_text("Sweep A and B over the same pairs; B's curve on A's depth axis")
                .on_disabled_hover_text("Open B and wait for both to be ready")
                .clicked()
            {
                actions.push(Action::Compare(CompareAction::Run {
                    pairs: pairs.clone(),
                    window: *window,
                }));
            }
            let names: Vec<String> = pairs.iter().map(|(s, t)| format!("{s} -> {t}")).collect();
            ui.weak(if names.is_empty() {
                "no pair both prompts have".to_string()
            } else {
                names.join(", ")
            });
        });
        if let Some(stage) = &cmp.stage {
            ui.horizontal(|ui| {
                ui.spinner();
                let progress = cmp
                    .progress
                    .map(|(d, t)| format!(" ({d} / {t} windows)"))
                    .unwrap_or_default();
                ui.label(format!("{stage}{progress}"));
            });
        }
    }

    fn readouts(ui: &mut egui::Ui, view: &ViewState) {
        let cmp = &view.compare;
        let Some(a) = &cmp.a_knockout else {
            ui.weak("Run a knockout (Knockout pane or a heatmap click): it is applied to B too.");
            return;
        };
        let what = a
            .spec
            .main()
            .map(|m| format!("{} -> {}", m.source, m.target))
            .unwrap_or_default();
        ui.label(RichText::new(format!("The same knockout on both: {what}")).strong());
        ui.label(format!("A: {}", readout(a)));
        match &cmp.b_knockout {
            Some(b) => ui.label(format!("B: {}", readout(b))),
            None if cmp.running() => ui.weak("B: running…"),
            None => ui.weak("B: not run yet"),
        };
    }

    fn strips(ui: &mut egui::Ui, rows: &[HeatRow]) {
        let scale = shared_scale(rows);
        let label_w = 150.0;
        let row_h = 16.0;
        let width = ui.available_width().max(label_w + 120.0);
        let (rect, response) = ui.allocate_exact_size(
            egui::vec2(width, row_h * rows.len() as f32 + 16.0),
            Sense::hover(),
        );
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, STRIPS_LABEL));
        let painter = ui.painter_at(rect);
        let x0 = rect.left() + label_w;
        let w = rect.right() - x0 - 4.0;
        let text = ui.visuals().text_color();
        for (i, row) in rows.iter().enumerate() {
            let y = rect.top() + row_h * i as f32;
            painter.text(
                egui::pos2(rect.left(), y + row_h / 2.0),
                egui::Align2::LEFT_CENTER,
                &row.label,
                egui::FontId::proportional(11.0),
                text,
            );
            for &(d0, d1, v) in &row.cells {
                let t = (0.5 + v / (2.0 * scale)) as f32;
                let [r, g, b] = Colormap::Diverging.color(t);
                let cell = Rect::from_min_max(
                    egui::pos2(x0 + w * d0 as f32, y + 1.0),
                    egui::pos2(x0 + w * d1 as f32, y + row_h - 1.0),
                );
                painter.rect_filled(cell, 0.0, Color32::from_rgb(r, g, b));
            }
            if i % 2 == 1 {
                // A pair's two rows, then a rule.
                painter.hline(
                    x0..=x0 + w,
                    y + row_h,
                    Stroke::new(1.0, ui.visuals().weak_text_color()),
                );
            }
        }
        painter.text(
            egui::pos2(x0, rect.bottom()),
            egui::Align2::LEFT_BOTTOM,
            format!("depth 0 … 1 · colour: relative change, ±{scale:.1}% (one scale for A and B)"),
            egui::FontId::proportional(11.0),
            ui.visuals().weak_text_color(),
        );
    }
}

impl Panel for ComparePanel {
    fn name(&self) -> &'static str {
        "Compare"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        if view.model.is_none() && view.compare.a.is_none() {
            ui.weak("Load a model and inputs (A), then open a second run (B) to compare them.");
            return;
        }
        let cmp = &view.compare;
        self.open_row(ui, view, actions);
        if let Some(plan) = &cmp.plan {
            ui.weak(plan.text());
        }
        if let Some(e) = &cmp.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(b) = &cmp.b_model {
            ui.label(format!(
                "B: {} · {} layers · {} · {}{}",
                b.source,
                b.layers,
                b.family,
                b.dtype,
                cmp.b_inputs
                    .as_ref()
                    .map(|(p, _)| format!(" · {}", p.display()))
                    .unwrap_or_default()
            ));
        } else if let Some((m, i)) = &cmp.b_opened {
            ui.label(format!(
                "B: {m} on {} (loads when it runs, after A)",
                i.display()
            ));
        }
        ui.separator();
        self.run_row(ui, view, actions);
        Self::readouts(ui, view);
        let (Some(a), Some(b)) = (&cmp.a, &cmp.b) else {
            return;
        };
        ui.separator();
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.difference, "Difference (B - A)");
            ui.weak(format!(
                "A: {} ({} layers) solid · B: {} ({} layers) dashed",
                crate::export::short_model(&a.model),
                a.layers,
                crate::export::short_model(&b.model),
                b.layers
            ));
        });
        Self::strips(ui, &heat_rows(a, b));
        let difference = self.difference;
        Plot::new("compare_plot")
            .legend(Legend::default())
            .x_axis_label("depth (layer / (layers - 1))")
            .y_axis_label(if difference {
                "B - A (points of relative change)"
            } else {
                "relative change (%)"
            })
            .height(220.0)
            .allow_scroll(false)
            .show(ui, |plot| {
                if difference {
                    let diff = compare_difference(&a.records, a.layers, &b.records, b.layers);
                    for (i, (s, t)) in crate::flow::sweep::record_pairs(&a.records)
                        .into_iter()
                        .enumerate()
                    {
                        let pts: Vec<[f64; 2]> = diff
                            .iter()
                            .filter(|d| d.source == s && d.target == t)
                            .map(|d| [d.depth, d.b_minus_a])
                            .collect();
                        plot.line(
                            Line::new(format!("B - A: {s} -> {t}"), PlotPoints::from(pts))
                                .color(source_color(&s, i))
                                .style(plot_style(target_style(&t)))
                                .width(2.0),
                        );
                    }
                } else {
                    for (name, color, style, pts) in curve_lines(a, b) {
                        plot.line(
                            Line::new(name, PlotPoints::from(pts))
                                .color(color)
                                .style(style)
                                .width(2.0),
                        );
                    }
                }
            });
        export_row(
            ui,
            &mut self.export,
            FigureView::Compare,
            &view.export,
            !cmp.running(),
            actions,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::data::tests::rec;

    fn side(layers: usize, recs: Vec<SweepRecord>) -> CompareSide {
        CompareSide {
            model: "m".into(),
            family: "f".into(),
            inputs: PathBuf::from("x"),
            layers,
            window: 1,
            records: recs,
        }
    }

    #[test]
    fn windows_start_at_a_quarter_of_the_depth() {
        assert_eq!(default_window(36), 9);
        assert_eq!(default_window(28), 7);
        assert_eq!(default_window(3), 1);
        assert_eq!(default_window(1), 1);
        assert_eq!(default_window(80), 9);
    }

    #[test]
    fn memory_plan_says_what_fits() {
        let gib = 1u64 << 30;
        let both = MemoryPlan {
            a_bytes: 9 * gib,
            b_bytes: Some(9 * gib),
            free: Some(14 * gib),
        };
        assert!(both.fits());
        assert!(both.text().contains("both stay loaded"), "{}", both.text());
        let one = MemoryPlan {
            free: Some(10 * gib),
            ..both
        };
        assert!(!one.fits());
        assert!(one.text().contains("B runs after A"), "{}", one.text());
        let unknown = MemoryPlan {
            b_bytes: None,
            ..one
        };
        assert!(unknown.fits());
        assert!(unknown.text().contains("unknown size"));
    }

    #[test]
    fn pairs_both_prompts_have() {
        let a = vec![
            ("audio".to_string(), 4),
            ("video".to_string(), 8),
            ("question".to_string(), 3),
            ("last".to_string(), 1),
        ];
        let b = vec![
            ("audio".to_string(), 2),
            ("question".to_string(), 2),
            ("last".to_string(), 1),
        ];
        let all = common_pairs(&a, None);
        let both = common_pairs(&a, Some(&b));
        assert!(both.len() < all.len());
        assert!(both
            .iter()
            .all(|(s, t)| s.to_string() != "video" && t.to_string() != "video"));
        assert!(both
            .iter()
            .any(|(s, t)| s.to_string() == "audio" && t.to_string() == "last"));
    }

    #[test]
    fn a_knockout_keeps_its_depth_in_b() {
        let mut spec =
            KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 18, 27);
        spec.token = Some(7);
        spec.blocks[0].heads = Some(vec![3]);
        let b = scaled_spec(&spec, 36, 28);
        assert_eq!((b.blocks[0].start, b.blocks[0].end), (14, 21));
        assert_eq!(b.token, None);
        assert_eq!(b.blocks[0].heads, None);
    }

    #[test]
    fn strips_align_on_depth_with_one_scale() {
        let a = side(
            3,
            vec![
                rec("audio", "last", 0, -10.0),
                rec("audio", "last", 1, -40.0),
                rec("audio", "last", 2, 0.0),
            ],
        );
        let b = side(5, (0..5).map(|l| rec("audio", "last", l, 20.0)).collect());
        let rows = heat_rows(&a, &b);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].label, "A: audio -> last");
        assert_eq!(rows[1].label, "B: audio -> last");
        // Each row spans depth 0..1 without gaps.
        for r in &rows {
            assert_eq!(r.cells.first().unwrap().0, 0.0);
            assert_eq!(r.cells.last().unwrap().1, 1.0);
            for w in r.cells.windows(2) {
                assert!((w[0].1 - w[1].0).abs() < 1e-12);
            }
        }
        // A's middle layer sits at depth 0.5, as B's third.
        assert_eq!((rows[0].cells[1].0, rows[0].cells[1].1), (0.25, 0.75));
        assert_eq!((rows[1].cells[2].0, rows[1].cells[2].1), (0.375, 0.625));
        assert_eq!(shared_scale(&rows), 40.0);
        let lines = curve_lines(&a, &b);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].3, vec![[0.0, -10.0], [0.5, -40.0], [1.0, 0.0]]);
        assert_eq!(lines[1].3.len(), 5);
    }
}
