//! Sweep panel: knock out a window of layers centred on each layer in turn, for each modality → text
//! pair, and plot the relative change of the answer's probability against the layer (the papers'
//! central figure).

use egui::Color32;
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints};

use crate::export::{data::target_style, palette};

use crate::flow::SweepRecord;
use crate::prompt::Selector;

use super::figure::{export_row, ExportControls, FigureView};
use super::panel::{Action, Panel, SweepView, ViewState};

/// Layers per window, as in Geva et al. 2023.
pub const SWEEP_WINDOW: usize = 9;

/// The pairs a sweep runs, in this order, where both groups are present.
const PAIRS: [(&str, &str); 5] = [
    ("audio", "last"),
    ("video", "last"),
    ("audio", "question"),
    ("video", "question"),
    ("question", "last"),
];

/// The default pairs whose groups are both non-empty in this prompt.
pub fn sweep_pairs(groups: &[(String, usize)]) -> Vec<(Selector, Selector)> {
    let present = |name: &str| groups.iter().any(|(n, c)| n == name && *c > 0);
    PAIRS
        .iter()
        .filter(|(s, t)| present(s) && present(t))
        .map(|(s, t)| (Selector::group(s), Selector::group(t)))
        .collect()
}

/// One plotted line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `audio -> last`.
    pub name: String,
    pub source: String,
    pub target: String,
    /// `[layer, relative change %]`, by layer.
    pub points: Vec<[f64; 2]>,
}

/// One line per `(source, target)` pair, in the order the pairs first appear.
pub fn plot_series(records: &[SweepRecord]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in records {
        let name = format!("{} -> {}", r.source, r.target);
        let point = [r.layer as f64, f64::from(r.rel_change)];
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => out.push(Series {
                name,
                source: r.source.clone(),
                target: r.target.clone(),
                points: vec![point],
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a[0].total_cmp(&b[0]));
    }
    out
}

/// The `i`-th free colour of `export::palette`, for a source that is no group.
pub fn series_color(i: usize) -> Color32 {
    let [r, g, b] = palette::CYCLE[i % palette::CYCLE.len()];
    Color32::from_rgb(r, g, b)
}

/// A source's colour as the exported figures draw it: its group's, else the `i`-th free colour.
pub fn source_color(source: &str, i: usize) -> Color32 {
    palette::group_rgb(source)
        .map(|[r, g, b]| Color32::from_rgb(r, g, b))
        .unwrap_or_else(|| series_color(i))
}

/// An exported figure's line style as the app's plots draw it.
pub fn plot_style(style: crate::export::LineStyle) -> LineStyle {
    match style {
        crate::export::LineStyle::Solid => LineStyle::Solid,
        crate::export::LineStyle::Dashed => LineStyle::Dashed { length: 8.0 },
        crate::export::LineStyle::Dotted => LineStyle::Dotted { spacing: 4.0 },
    }
}

/// As the exported figures draw a pair: the source group's colour, the stroke by target (solid into
/// `last`, dashed into `question`).
pub fn series_look(s: &Series, i: usize) -> (Color32, LineStyle) {
    (
        source_color(&s.source, i),
        plot_style(target_style(&s.target)),
    )
}

/// Progress text: `6 / 15 windows · about 12 s left`.
pub fn progress_text(done: usize, total: usize, elapsed_s: f32) -> String {
    if done == 0 || total == 0 {
        return format!("0 / {total} windows · starting…");
    }
    let left = elapsed_s / done as f32 * total.saturating_sub(done) as f32;
    let eta = if left < 1.0 {
        "less than a second left".to_string()
    } else if left < 90.0 {
        format!("about {left:.0} s left")
    } else {
        format!("about {:.0} min left", left / 60.0)
    };
    format!("{done} / {total} windows · {eta}")
}

/// Fraction for the progress bar.
pub fn progress_fraction(done: usize, total: usize) -> f32 {
    if total == 0 {
        0.0
    } else {
        (done as f32 / total as f32).clamp(0.0, 1.0)
    }
}

/// Under the plot: how much was computed, and how long it took.
pub fn done_line(sweep: &SweepView) -> String {
    let pairs = plot_series(&sweep.records).len();
    format!(
        "{} windows over {pairs} pairs in {:.1} s",
        sweep.records.len(),
        sweep.seconds
    )
}

#[derive(Default)]
pub struct SweepPanel {
    export: ExportControls,
}

impl Panel for SweepPanel {
    fn name(&self) -> &'static str {
        "Sweep"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let pairs = view
            .inputs
            .as_ref()
            .map(|i| sweep_pairs(&i.flow_groups))
            .unwrap_or_default();
        let sweep = &view.sweep;
        ui.horizontal_wrapped(|ui| {
            let can_run =
                view.model.is_some() && !pairs.is_empty() && !sweep.running && !view.busy;
            if ui
                .add_enabled(can_run, egui::Button::new("Run sweep"))
                .on_hover_text("Knock out a centred window of layers at every layer, for each pair")
                .on_disabled_hover_text(
                    "Load a model and inputs with media and a question; wait for the running command",
                )
                .clicked()
            {
                actions.push(Action::Sweep {
                    pairs: pairs.clone(),
                    window: SWEEP_WINDOW,
                });
            }
            let names: Vec<String> = pairs.iter().map(|(s, t)| format!("{s} -> {t}")).collect();
            let follows = match (&view.tracked.answers.answer, &view.tracked.token) {
                (Some(a), _) => format!("; curves follow the answer {a:?}"),
                (None, Some((_, t))) => format!("; curves follow the token {t:?}"),
                (None, None) => String::new(),
            };
            ui.weak(format!(
                "{}; window {SWEEP_WINDOW} layers{follows}",
                if names.is_empty() {
                    "no pairs in this prompt".to_string()
                } else {
                    names.join(", ")
                }
            ));
        });
        if sweep.running {
            let (done, total) = sweep.progress.unwrap_or((0, 0));
            let elapsed = sweep.started.map_or(0.0, |t| t.elapsed().as_secs_f32());
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(progress_fraction(done, total))
                        .desired_width(320.0)
                        .text(progress_text(done, total, elapsed)),
                );
                if ui.button("Cancel sweep").clicked() {
                    actions.push(Action::CancelSweep);
                }
            });
            // The ETA counts down between progress events.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(500));
        }
        export_row(
            ui,
            &mut self.export,
            FigureView::Sweep,
            &view.export,
            !sweep.records.is_empty() && !sweep.running,
            actions,
        );
        if sweep.records.is_empty() {
            return;
        }
        let series = plot_series(&sweep.records);
        Plot::new("sweep_plot")
            .legend(Legend::default())
            .x_axis_label("layer")
            .y_axis_label("relative change (%)")
            .height(260.0)
            .allow_scroll(false)
            .show(ui, |plot| {
                for (i, s) in series.iter().enumerate() {
                    let (color, style) = series_look(s, i);
                    plot.line(
                        Line::new(s.name.clone(), PlotPoints::from(s.points.clone()))
                            .color(color)
                            .style(style)
                            .width(2.0),
                    );
                }
            });
        ui.weak(done_line(sweep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::export::data::tests::rec;

    #[test]
    fn pairs_follow_the_prompt() {
        let g: Vec<(String, usize)> = [("audio", 4), ("video", 0), ("question", 3), ("last", 1)]
            .iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect();
        let p = sweep_pairs(&g);
        let names: Vec<String> = p.iter().map(|(s, t)| format!("{s}:{t}")).collect();
        assert_eq!(names, vec!["audio:last", "audio:question", "question:last"]);
        assert!(sweep_pairs(&[]).is_empty());
    }

    #[test]
    fn series_group_records_by_pair_sorted_by_layer() {
        let s = plot_series(&[
            rec("audio", "last", 1, -10.0),
            rec("audio", "last", 0, -20.0),
            rec("video", "last", 0, 5.0),
        ]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "audio -> last");
        assert_eq!(s[0].points, vec![[0.0, -20.0], [1.0, -10.0]]);
        assert_eq!(s[1].points, vec![[0.0, 5.0]]);
        assert!(plot_series(&[]).is_empty());
    }

    #[test]
    fn progress_and_eta() {
        assert_eq!(progress_text(0, 15, 3.0), "0 / 15 windows · starting…");
        assert_eq!(
            progress_text(5, 15, 10.0),
            "5 / 15 windows · about 20 s left"
        );
        assert_eq!(
            progress_text(1, 200, 60.0),
            "1 / 200 windows · about 199 min left"
        );
        assert_eq!(
            progress_text(15, 15, 3.0),
            "15 / 15 windows · less than a second left"
        );
        assert_eq!(progress_fraction(3, 12), 0.25);
        assert_eq!(progress_fraction(0, 0), 0.0);
        let v = SweepView {
            records: vec![rec("audio", "last", 0, 1.0), rec("video", "last", 0, 1.0)],
            seconds: 0.5,
            ..SweepView::default()
        };
        assert_eq!(done_line(&v), "2 windows over 2 pairs in 0.5 s");
        assert_ne!(series_color(0), series_color(1));
        let s = plot_series(&[rec("audio", "question", 0, 1.0), rec("x", "last", 0, 1.0)]);
        assert_eq!(
            series_look(&s[0], 0),
            (
                Color32::from_rgb(230, 159, 0),
                LineStyle::Dashed { length: 8.0 }
            )
        );
        assert_eq!(series_look(&s[1], 1).1, LineStyle::Solid);
    }
}
