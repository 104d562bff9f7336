//! Drop panel: the answer probability against the layer from which audio/video positions are removed
//! (they keep no K/V there, so later layers run on fewer rows), with the prefill speed-up that buys,
//! measured on one real prefill dropping from a chosen layer against the full one, and optionally the
//! greedy answer both ways. The question it answers: from which layer on does the model no longer need
//! the media, and what does not carrying them save?
//!
//! The worker runs one [`DropSpec`] through the library's session ([`crate::session::Session::drop_positions`]:
//! the whole curve as one batched run, the prefills timed as `avflow drop` does); this module only
//! prepares the request and draws the [`DropOutcome`] it sends back.

use std::sync::Arc;
use std::time::Instant;

use egui::{Color32, RichText};
use egui_plot::{HLine, Legend, Line, LineStyle, Plot, PlotPoints, Points, VLine};

use crate::export::palette;
use crate::prompt::Selector;
use crate::session::{DropOutcome, DropSpec, Generated};
use crate::worker::JobId;

use super::answer::format_percent;
use super::figure::{export_row, ExportControls, FigureView};
use super::knockout::{format_change, token_text};
use super::media::{Modality, TimeRange};
use super::panel::{Action, Panel, ViewState};

pub const PANEL_NAME: &str = "Drop";

/// The compute button's text (the heatmap has a "Compute" of its own).
pub const COMPUTE: &str = "Compute drop curve";

/// The groups that can be dropped, in the order their boxes are drawn (and a selector names them).
pub const MEDIA_GROUPS: [&str; 3] = ["audio", "video", "image"];

/// Answer tokens generated both ways unless the user picks another number: enough to see whether the
/// answer changes, few enough to take seconds on a 3B model.
pub const DEFAULT_GENERATE: usize = 8;
pub const MAX_GENERATE: usize = 64;

/// The drop view: the running request and the last result.
#[derive(Debug, Clone, Default)]
pub struct DropView {
    pub running: bool,
    /// The worker's job of the newest request: its progress events are routed here, Cancel stops it.
    pub job: Option<JobId>,
    /// `(done, total)` steps of the running computation.
    pub progress: Option<(usize, usize)>,
    pub started: Option<Instant>,
    /// The newest request sent (the result may answer an older one while it runs).
    pub requested: Option<DropSpec>,
    pub result: Option<Arc<DropOutcome>>,
}

/// Size of each media group in this prompt (`0`: absent), in [`MEDIA_GROUPS`] order.
pub fn media_sizes(flow_groups: &[(String, usize)]) -> [usize; 3] {
    MEDIA_GROUPS.map(|g| {
        flow_groups
            .iter()
            .find(|(n, _)| n == g)
            .map_or(0, |(_, c)| *c)
    })
}

/// The first choice: every media group the prompt has.
pub fn default_ticks(sizes: [usize; 3]) -> [bool; 3] {
    sizes.map(|c| c > 0)
}

/// The middle layer: the README's benchmark point, and where the curves of the papers usually turn.
pub fn default_from_layer(layers: usize) -> usize {
    layers / 2
}

/// What is dropped: the selected seconds (both modalities) when chosen and present, else the union of the
/// ticked groups the prompt has (`audio,video`); `None` when that is nothing.
pub fn selector(
    ticks: [bool; 3],
    sizes: [usize; 3],
    time: Option<TimeRange>,
    use_time: bool,
) -> Option<Selector> {
    if let Some(r) = time.filter(|_| use_time) {
        return Some(r.selector(Modality::Both));
    }
    let names: Vec<&str> = MEDIA_GROUPS
        .iter()
        .zip(ticks.iter().zip(sizes))
        .filter(|(_, (&t, c))| t && *c > 0)
        .map(|(g, _)| *g)
        .collect();
    (!names.is_empty()).then(|| Selector::groups(&names))
}

/// The curve's colour, as the exported figure picks it: a single group keeps its own, anything else
/// takes the first free colour of the palette.
pub fn curve_color(selector: &Selector) -> Color32 {
    let [r, g, b] = if selector.terms().len() > 1 {
        palette::CYCLE[0]
    } else {
        palette::key_rgb(&selector.to_string(), 0)
    };
    Color32::from_rgb(r, g, b)
}

/// `audio + video`: the selector's terms, for a legend.
pub fn selector_name(selector: &Selector) -> String {
    let terms: Vec<String> = selector.terms().iter().map(ToString::to_string).collect();
    terms.join(" + ")
}

/// What the plot draws.
#[derive(Debug, Clone, PartialEq)]
pub struct DropPlot {
    /// Legend text: `audio + video dropped`.
    pub name: String,
    pub color: Color32,
    /// `[first dropped layer, p(answer)]` in layer order.
    pub points: Vec<[f64; 2]>,
    /// p(answer) with nothing dropped.
    pub reference: f64,
    /// The timed prefill: `[its layer, its p(answer)]`.
    pub timed: [f64; 2],
}

pub fn plot_data(o: &DropOutcome) -> DropPlot {
    DropPlot {
        name: format!("{} dropped", selector_name(&o.spec.selector)),
        color: curve_color(&o.spec.selector),
        points: o
            .curve
            .iter()
            .map(|(l, r)| [*l as f64, f64::from(r.prob)])
            .collect(),
        reference: o
            .curve
            .first()
            .map_or(f64::from(o.at_layer.base_prob), |(_, r)| {
                f64::from(r.base_prob)
            }),
        timed: [o.spec.from_layer as f64, f64::from(o.at_layer.prob)],
    }
}

/// `850 ms`, `8.21 s`.
pub fn format_seconds(s: f64) -> String {
    if !s.is_finite() {
        "–".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// The text lines of a result, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct DropSummary {
    /// `prefill 1.57× faster dropping from layer 18`.
    pub speedup: String,
    /// `full 8.21 s, dropped 5.23 s · 511 of 586 positions dropped`.
    pub timing: String,
    /// `p("yes") from layer 18: 40.0 % · nothing dropped 50.0 % · change −20.0 %`.
    pub prob: String,
    /// `(full prompt, dropped)` answers, with the time per token.
    pub answers: Option<(String, String)>,
    /// The controls have moved on since this result was asked for.
    pub stale: bool,
}

pub fn summary(o: &DropOutcome, requested: Option<&DropSpec>) -> DropSummary {
    let r = &o.spec;
    let answer = |label: &str, g: &Generated| {
        format!(
            "{label}: {} ({} token{}, {}/token)",
            super::tokens::quoted(g.text.trim()),
            g.ids.len(),
            if g.ids.len() == 1 { "" } else { "s" },
            format_seconds(g.per_token_s)
        )
    };
    DropSummary {
        speedup: format!(
            "prefill {:.2}× faster dropping from layer {}",
            o.speedup(),
            r.from_layer
        ),
        timing: format!(
            "full {}, dropped {} · {} of {} positions dropped",
            format_seconds(o.prefill_full_s),
            format_seconds(o.prefill_drop_s),
            o.dropped,
            o.positions
        ),
        prob: format!(
            "p({}) from layer {}: {} · nothing dropped {} · change {}",
            token_text(&o.token),
            r.from_layer,
            format_percent(o.at_layer.prob),
            format_percent(o.at_layer.base_prob),
            format_change(o.at_layer.rel_change)
        ),
        answers: o
            .answers
            .as_ref()
            .map(|(full, cut)| (answer("full prompt", full), answer("dropped", cut))),
        stale: requested.is_some_and(|q| q != r),
    }
}

/// The request the Compute button sends: the app always draws the curve and watches the baseline top-1.
pub fn request(selector: Selector, from_layer: usize, generate: usize) -> DropSpec {
    DropSpec {
        selector,
        from_layer,
        generate,
        curve: true,
        token: None,
    }
}

/// `3 / 5 steps · 4 s`.
pub fn progress_text(done: usize, total: usize, elapsed_s: f32) -> String {
    format!("{done} / {total} steps · {elapsed_s:.0} s")
}

pub struct DropPanel {
    /// Ticked groups, [`MEDIA_GROUPS`] order; `None` until the first prompt (then every present group).
    ticks: Option<[bool; 3]>,
    /// Drop the media timeline's selected seconds instead of the groups.
    use_time: bool,
    /// `None`: the middle layer of the loaded model.
    from_layer: Option<usize>,
    generate: usize,
    export: ExportControls,
}

impl Default for DropPanel {
    fn default() -> Self {
        Self {
            ticks: None,
            use_time: false,
            from_layer: None,
            generate: DEFAULT_GENERATE,
            export: ExportControls::default(),
        }
    }
}

impl Panel for DropPanel {
    fn name(&self) -> &'static str {
        PANEL_NAME
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let (Some(model), Some(inputs)) = (&view.model, &view.inputs) else {
            ui.weak(
                "Load a model and inputs to see what dropping audio and video costs and saves.",
            );
            return;
        };
        let layers = model.layers;
        let sizes = media_sizes(&inputs.flow_groups);
        let mut ticks = self.ticks.unwrap_or_else(|| default_ticks(sizes));
        let mut from = self
            .from_layer
            .unwrap_or_else(|| default_from_layer(layers))
            .min(layers.saturating_sub(1));
        let dv = &view.drop;
        let mut compute = false;
        ui.horizontal_wrapped(|ui| {
            ui.label("drop");
            for ((g, tick), size) in MEDIA_GROUPS.iter().zip(ticks.iter_mut()).zip(sizes) {
                ui.add_enabled(size > 0, egui::Checkbox::new(tick, *g))
                    .accessible_name(format!("drop {g}"))
                    .on_hover_text(format!("{size} {g} positions"))
                    .on_disabled_hover_text(format!("This prompt has no {g}"));
            }
            if let Some(r) = view.time_selection {
                ui.checkbox(&mut self.use_time, format!("only {} (timeline)", r.label()))
                    .on_hover_text(format!(
                        "Drop the audio and video of the selected seconds ({}) instead of whole groups",
                        r.selector(Modality::Both)
                    ));
            }
            ui.separator();
            let label = ui.label("timed from layer");
            ui.add(egui::DragValue::new(&mut from).range(0..=layers.saturating_sub(1)))
                .labelled_by(label.id)
                .on_hover_text(
                    "The first layer without the dropped positions in the timed prefill (the curve covers every layer)",
                );
            let label = ui.label("answer tokens");
            ui.add(egui::DragValue::new(&mut self.generate).range(0..=MAX_GENERATE))
                .labelled_by(label.id)
                .on_hover_text("Generate this many tokens with and without dropping (0: none)");
        });
        self.ticks = Some(ticks);
        self.from_layer = Some(from);
        let sel = selector(ticks, sizes, view.time_selection, self.use_time);
        ui.horizontal_wrapped(|ui| {
            compute = ui
                .add_enabled(sel.is_some(), egui::Button::new(COMPUTE))
                .on_hover_text(
                    "p(answer) for every first dropped layer (one batched run), and one prefill timed with and \
                     without dropping. While one runs, the newest request runs next.",
                )
                .on_disabled_hover_text("Tick a group this prompt has")
                .clicked();
            ui.weak(match &sel {
                Some(s) => format!("drops {s}"),
                None => "nothing to drop".into(),
            });
        });
        if let (true, Some(selector)) = (compute, sel) {
            actions.push(Action::Drop(request(selector, from, self.generate)));
        }
        if dv.running {
            ui.horizontal(|ui| {
                let (done, total) = dv.progress.unwrap_or((0, 0));
                let elapsed = dv.started.map_or(0.0, |t| t.elapsed().as_secs_f32());
                ui.add(
                    egui::ProgressBar::new(super::sweep::progress_fraction(done, total))
                        .desired_width(320.0)
                        .text(progress_text(done, total, elapsed)),
                );
                if ui.button("Cancel drop").clicked() {
                    actions.push(Action::CancelDrop);
                }
            });
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(500));
        }
        export_row(
            ui,
            &mut self.export,
            FigureView::Drop,
            &view.export,
            dv.result.is_some(),
            actions,
        );
        let Some(result) = &dv.result else {
            if !dv.running {
                ui.weak("Press Compute drop curve to draw the curve and time the prefill.");
            }
            return;
        };
        let s = summary(result, dv.requested.as_ref());
        ui.horizontal_wrapped(|ui| {
            ui.label(RichText::new(&s.speedup).strong());
            ui.weak(&s.timing);
        });
        ui.label(&s.prob);
        if let Some((full, cut)) = &s.answers {
            ui.monospace(full);
            ui.monospace(cut);
        }
        if s.stale {
            ui.weak("updating…");
        }
        draw_plot(ui, &plot_data(result));
    }
}

fn draw_plot(ui: &mut egui::Ui, p: &DropPlot) {
    let [r, g, b] = palette::GREY;
    let grey = Color32::from_rgb(r, g, b);
    Plot::new("drop_plot")
        // Bottom right: the curve rises towards the reference as dropping starts later, leaving that
        // corner free.
        .legend(Legend::default().position(egui_plot::Corner::RightBottom))
        .x_axis_label("first dropped layer")
        .y_axis_label("p(answer)")
        .height(240.0)
        .allow_scroll(false)
        .show(ui, |plot| {
            plot.hline(
                HLine::new("nothing dropped", p.reference)
                    .color(grey)
                    .style(LineStyle::Dashed { length: 8.0 }),
            );
            plot.vline(
                VLine::new("timed prefill", p.timed[0])
                    .color(grey)
                    .style(LineStyle::Dotted { spacing: 4.0 }),
            );
            plot.line(
                Line::new(p.name.clone(), PlotPoints::from(p.points.clone()))
                    .color(p.color)
                    .width(2.0),
            );
            plot.points(
                Points::new(p.name.clone(), PlotPoints::from(p.points.clone()))
                    .id("drop_points")
                    .color(p.color)
                    .radius(3.0),
            );
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::KnockoutResult;

    fn groups(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn score(p: f32) -> KnockoutResult {
        KnockoutResult {
            prob: p,
            base_prob: 0.5,
            rel_change: crate::flow::knockout::rel_change(p, 0.5),
            top1_id: 7,
            token_id: 7,
        }
    }

    fn outcome(selector: &str) -> DropOutcome {
        DropOutcome {
            spec: request(selector.parse().expect("selector"), 1, 2),
            dropped: 511,
            positions: 586,
            layers: 3,
            curve: vec![(0, score(0.1)), (1, score(0.4)), (2, score(0.5))],
            at_layer: score(0.4),
            token: (7, "yes".into()),
            prefill_full_s: 8.21,
            prefill_drop_s: 0.5,
            answers: Some((
                Generated {
                    ids: vec![1, 2],
                    text: " a dog".into(),
                    decode_s: 1.32,
                    per_token_s: 0.66,
                },
                Generated {
                    ids: vec![1],
                    text: "a cat".into(),
                    decode_s: 1.5,
                    per_token_s: 1.5,
                },
            )),
        }
    }

    #[test]
    fn present_media_groups_are_ticked_first() {
        let g = groups(&[("audio", 4), ("image", 0), ("video", 6), ("last", 1)]);
        let sizes = media_sizes(&g);
        assert_eq!(sizes, [4, 6, 0]);
        assert_eq!(default_ticks(sizes), [true, true, false]);
        assert_eq!(media_sizes(&[]), [0, 0, 0]);
        assert_eq!(default_from_layer(36), 18);
        assert_eq!(default_from_layer(3), 1);
        assert_eq!(default_from_layer(0), 0);
    }

    #[test]
    fn the_selector_names_ticked_groups_or_the_selected_seconds() {
        let sizes = [4, 6, 0];
        let text = |s: Option<Selector>| s.map(|s| s.to_string());
        let picked = selector([true, true, false], sizes, None, false);
        assert_eq!(text(picked.clone()).as_deref(), Some("audio,video"));
        assert!(picked.is_some_and(|s| s.is_groups()));
        assert_eq!(
            text(selector([false, true, true], sizes, None, false)).as_deref(),
            Some("video")
        );
        // A tick on an absent group drops nothing.
        assert_eq!(selector([false, false, true], sizes, None, false), None);
        let r = TimeRange {
            start_ms: 1000,
            end_ms: 3000,
        };
        assert_eq!(
            text(selector([true, true, false], sizes, Some(r), true)).as_deref(),
            Some("@1-3")
        );
        // The timeline choice only counts while a selection exists.
        assert_eq!(
            text(selector([true, false, false], sizes, None, true)).as_deref(),
            Some("audio")
        );
        assert_eq!(
            text(selector([true, false, false], sizes, Some(r), false)).as_deref(),
            Some("audio")
        );
        // What Compute sends: always with the curve, watching the baseline top-1.
        let spec = request(Selector::group("audio"), 2, 8);
        assert!(spec.curve && spec.token.is_none());
        assert_eq!(spec.steps(), 5);
    }

    #[test]
    fn the_plot_follows_the_curve_and_the_palette() {
        let p = plot_data(&outcome("audio,video"));
        assert_eq!(p.name, "audio + video dropped");
        assert_eq!(
            p.points,
            vec![[0.0, 0.1_f32 as f64], [1.0, 0.4_f32 as f64], [2.0, 0.5]]
        );
        assert_eq!(p.reference, 0.5);
        assert_eq!(p.timed, [1.0, 0.4_f32 as f64]);
        let [r, g, b] = palette::CYCLE[0];
        assert_eq!(p.color, Color32::from_rgb(r, g, b));
        let color = |s: &str| curve_color(&s.parse().expect("selector"));
        assert_eq!(color("audio"), Color32::from_rgb(230, 159, 0));
        assert_eq!(color("@1-3"), Color32::from_rgb(r, g, b));
        assert_eq!(plot_data(&outcome("@1-3")).name, "@1-3 dropped");
    }

    #[test]
    fn the_summary_reads_speedup_probability_and_answers() {
        let o = outcome("audio,video");
        let s = summary(&o, Some(&o.spec));
        assert_eq!(s.speedup, "prefill 16.42× faster dropping from layer 1");
        assert_eq!(
            s.timing,
            "full 8.21 s, dropped 500 ms · 511 of 586 positions dropped"
        );
        assert_eq!(
            s.prob,
            "p(\"yes\") from layer 1: 40.0 % · nothing dropped 50.0 % · change \u{2212}20.0 %"
        );
        assert_eq!(
            s.answers,
            Some((
                "full prompt: \"a dog\" (2 tokens, 660 ms/token)".to_string(),
                "dropped: \"a cat\" (1 token, 1.50 s/token)".to_string()
            ))
        );
        assert!(!s.stale);
        let newer = DropSpec {
            from_layer: 2,
            ..o.spec.clone()
        };
        assert!(summary(&o, Some(&newer)).stale);
        assert_eq!(progress_text(2, 5, 3.4), "2 / 5 steps · 3 s");
        assert_eq!(format_seconds(f64::NAN), "–");
    }
}
