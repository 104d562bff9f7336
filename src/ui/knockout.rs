//! Knockout panel: pick a source group, a target group and a layer range; the target's queries lose the
//! source's keys in those layers and the panel shows how the probability of the baseline answer moves.
//! Every change of a control asks for a new knockout; the worker runs only the newest queued one, so
//! dragging the layer range stays live. Besides groups, a source or target may be a selector of seconds
//! (`@1-3`, `audio@1-3`) picked on the media timeline; the worker resolves it with the token map.

use egui::{Color32, RichText};

use crate::flow::groups::BUILTIN;
use crate::worker::KnockoutRequest;

use super::answer::format_percent;
use super::panel::{Action, KnockoutView, Panel, ViewState};
use super::tokens::quoted;

/// Sources tried in this order for the first selection: the media first (the question the app asks).
const SOURCE_PREFERENCE: [&str; 5] = ["audio", "video", "image", "question", "system"];

/// The groups a control offers: those present (non-empty) in the prompt, built-in ones in
/// [`BUILTIN`] order, then custom spans by name.
pub fn offered_groups(groups: &[(String, usize)]) -> Vec<String> {
    let present = |name: &str| groups.iter().any(|(n, c)| n == name && *c > 0);
    let mut out: Vec<String> = BUILTIN
        .iter()
        .filter(|n| present(n))
        .map(|n| n.to_string())
        .collect();
    out.extend(
        groups
            .iter()
            .filter(|(n, c)| *c > 0 && !BUILTIN.contains(&n.as_str()))
            .map(|(n, _)| n.clone()),
    );
    out
}

/// A selector string rather than a group name (`@1-3`, `audio@0.5-2`, `item:0`): always offered, since
/// whether it selects anything is the worker's to say (with the groups that exist).
pub fn is_selector(s: &str) -> bool {
    s.contains('@') || s.starts_with("item:")
}

/// What a combo offers: the present groups, then the selectors in use or on the timeline, each once.
pub fn choices(offered: &[String], extras: &[&str]) -> Vec<String> {
    let mut out = offered.to_vec();
    for e in extras {
        if is_selector(e) && !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    out
}

/// `start..end` made valid for `layers` layers (half-open, non-empty when `layers > 0`): the end wins
/// when the two cross, as the user is dragging it.
pub fn clamp_range(start: usize, end: usize, layers: usize) -> (usize, usize) {
    if layers == 0 {
        return (0, 0);
    }
    let end = end.clamp(1, layers);
    (start.min(end - 1), end)
}

/// The selection to show: `current` while its groups are still offered (range clamped to the model),
/// otherwise the first media group → `last` over every layer. `None` when the prompt offers no pair.
pub fn reconcile(
    current: Option<&KnockoutRequest>,
    groups: &[(String, usize)],
    layers: usize,
) -> Option<KnockoutRequest> {
    let offered = offered_groups(groups);
    if offered.is_empty() || layers == 0 {
        return None;
    }
    if let Some(c) = current {
        let ok = |g: &String| offered.contains(g) || is_selector(g);
        if ok(&c.source) && ok(&c.target) {
            let (start, end) = clamp_range(c.start, c.end, layers);
            return Some(KnockoutRequest {
                start,
                end,
                ..c.clone()
            });
        }
    }
    let source = SOURCE_PREFERENCE
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .map_or_else(|| offered[0].clone(), |s| s.to_string());
    let target = if offered.iter().any(|o| o == "last") {
        "last".to_string()
    } else {
        offered[offered.len() - 1].clone()
    };
    Some(KnockoutRequest {
        source,
        target,
        start: 0,
        end: layers,
    })
}

/// Red for a drop, green for a rise, grey for no change (or no number).
pub fn change_color(rel_change: f32) -> Color32 {
    if !rel_change.is_finite() || rel_change == 0.0 {
        Color32::GRAY
    } else if rel_change < 0.0 {
        Color32::from_rgb(213, 62, 79)
    } else {
        Color32::from_rgb(26, 152, 80)
    }
}

/// `"+12.3 %"`, `"−45.0 %"` (a real minus sign), `"0.0 %"`.
pub fn format_change(rel_change: f32) -> String {
    if !rel_change.is_finite() {
        return "–".into();
    }
    let rounded = (f64::from(rel_change) * 10.0).round() / 10.0;
    if rounded == 0.0 {
        "0.0 %".into()
    } else if rounded < 0.0 {
        format!("\u{2212}{:.1} %", -rounded)
    } else {
        format!("+{rounded:.1} %")
    }
}

/// A token for display: quoted text, or `id N` without a tokenizer.
pub fn token_text((id, text): &(u32, String)) -> String {
    if text.is_empty() {
        format!("id {id}")
    } else {
        quoted(text)
    }
}

/// The result line, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct KnockoutSummary {
    /// `baseline p("x") 12.3 %`.
    pub baseline: String,
    /// `after knockout 8.12 %`.
    pub knocked: String,
    /// `change −34.2 %`.
    pub change: String,
    pub color: Color32,
    /// `top-1 after "y"`.
    pub top1: String,
    /// `audio → last, layers 0..3`: what the numbers answer.
    pub request: String,
    /// The controls have moved on since this result was asked for.
    pub stale: bool,
}

pub fn summary(view: &KnockoutView, selection: Option<&KnockoutRequest>) -> KnockoutSummary {
    let r = &view.request;
    KnockoutSummary {
        baseline: format!(
            "baseline p({}) {}",
            token_text(&view.token),
            format_percent(view.base_prob)
        ),
        knocked: format!("after knockout {}", format_percent(view.prob)),
        change: format!("change {}", format_change(view.rel_change)),
        color: change_color(view.rel_change),
        top1: format!("top-1 after {}", token_text(&view.top1)),
        request: format!(
            "{} -> {}, layers {}..{}",
            r.source, r.target, r.start, r.end
        ),
        stale: selection.is_some_and(|s| s != r),
    }
}

#[derive(Default)]
pub struct KnockoutPanel {
    selection: Option<KnockoutRequest>,
    /// The last [`super::media::SpanPick`] applied.
    seen_pick: u64,
}

impl Panel for KnockoutPanel {
    fn name(&self) -> &'static str {
        "Knockout"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let (Some(model), Some(inputs)) = (&view.model, &view.inputs) else {
            ui.weak("Load a model and inputs to knock out attention between token groups.");
            return;
        };
        let layers = model.layers;
        let Some(mut sel) = reconcile(self.selection.as_ref(), &inputs.flow_groups, layers) else {
            ui.weak("This prompt has no token groups to knock out.");
            return;
        };
        let before = sel.clone();
        if let Some(p) = view
            .span_pick
            .as_ref()
            .filter(|p| p.serial > self.seen_pick)
        {
            self.seen_pick = p.serial;
            match p.role {
                super::media::SpanRole::Source => sel.source = p.selector.clone(),
                super::media::SpanRole::Target => sel.target = p.selector.clone(),
            }
        }
        let timeline = view
            .time_selection
            .map(|r| r.selector(super::media::Modality::Both));
        let extras: Vec<&str> = [Some(sel.source.as_str()), Some(sel.target.as_str())]
            .into_iter()
            .chain([timeline.as_deref()])
            .flatten()
            .collect();
        let offered = choices(&offered_groups(&inputs.flow_groups), &extras);
        let mut run = false;
        ui.horizontal_wrapped(|ui| {
            group_combo(ui, "source", &mut sel.source, &offered);
            group_combo(ui, "target", &mut sel.target, &offered);
            ui.separator();
            let from = ui.label("from layer");
            ui.add(egui::DragValue::new(&mut sel.start).range(0..=layers.saturating_sub(1)))
                .labelled_by(from.id)
                .on_hover_text("First knocked-out decoder layer (0-based)");
            let to = ui.label("to layer");
            ui.add(egui::DragValue::new(&mut sel.end).range(1..=layers))
                .labelled_by(to.id)
                .on_hover_text("One past the last knocked-out layer");
            let (start, end) = clamp_range(sel.start, sel.end, layers);
            sel.start = start;
            sel.end = end;
            ui.weak(format!("layers {start}..{end} of {layers} (half-open)"));
            run = ui
                .button("Knock out")
                .on_hover_text(
                    "The target's queries may not attend to the source's keys in these layers",
                )
                .clicked();
        });
        if run || sel != before {
            actions.push(Action::Knockout(sel.clone()));
        }
        self.selection = Some(sel);
        let Some(result) = &view.knockout else {
            ui.weak("Change a control (or press Knock out) to see the answer's probability move.");
            return;
        };
        let s = summary(result, self.selection.as_ref());
        ui.horizontal_wrapped(|ui| {
            ui.label(&s.baseline)
                .on_hover_text(format!("{:.7}", result.base_prob));
            ui.label(RichText::new(&s.knocked).strong())
                .on_hover_text(format!("{:.7}", result.prob));
            ui.label(RichText::new(&s.change).strong().color(s.color));
            ui.monospace(&s.top1);
        });
        if s.stale {
            ui.weak(format!("{} · updating…", s.request));
        } else {
            ui.weak(&s.request);
        }
    }
}

/// `label [value ▾]`, the label in front (read left to right: "source audio target last") and naming the
/// combo for screen readers and tests.
fn group_combo(ui: &mut egui::Ui, label: &str, value: &mut String, offered: &[String]) {
    let name = ui.label(label);
    egui::ComboBox::from_id_salt(("knockout", label))
        .selected_text(value.as_str())
        .width(110.0)
        .show_ui(ui, |ui| {
            for g in offered {
                ui.selectable_value(value, g.clone(), g);
            }
        })
        .response
        .labelled_by(name.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn req(s: &str, t: &str, a: usize, b: usize) -> KnockoutRequest {
        KnockoutRequest {
            source: s.into(),
            target: t.into(),
            start: a,
            end: b,
        }
    }

    #[test]
    fn only_present_groups_are_offered_in_builtin_order() {
        let g = groups(&[
            ("audio", 4),
            ("image", 0),
            ("last", 1),
            ("mine", 2),
            ("question", 3),
            ("system", 5),
            ("video", 6),
        ]);
        assert_eq!(
            offered_groups(&g),
            vec!["system", "video", "audio", "question", "last", "mine"]
        );
        assert!(offered_groups(&[]).is_empty());
    }

    #[test]
    fn the_first_selection_is_media_into_last_over_every_layer() {
        let g = groups(&[("video", 6), ("question", 3), ("last", 1), ("audio", 0)]);
        assert_eq!(reconcile(None, &g, 36), Some(req("video", "last", 0, 36)));
        // A kept selection survives, clamped to a smaller model; a vanished group resets it.
        let kept = reconcile(Some(&req("question", "last", 30, 36)), &g, 3);
        assert_eq!(kept, Some(req("question", "last", 2, 3)));
        let reset = reconcile(Some(&req("audio", "last", 0, 2)), &g, 3);
        assert_eq!(reset, Some(req("video", "last", 0, 3)));
        assert_eq!(reconcile(None, &g, 0), None);
        assert_eq!(reconcile(None, &[], 3), None);
    }

    #[test]
    fn selectors_are_kept_and_offered() {
        let g = groups(&[("video", 6), ("audio", 4), ("last", 1)]);
        assert!(is_selector("@1-3") && is_selector("audio@0.5-2") && is_selector("item:0"));
        assert!(!is_selector("audio"));
        // A time selection survives reconciling; a vanished group still resets.
        let kept = reconcile(Some(&req("@1-3", "last", 0, 2)), &g, 3);
        assert_eq!(kept, Some(req("@1-3", "last", 0, 2)));
        let offered = offered_groups(&g);
        assert_eq!(
            choices(&offered, &["@1-3", "last", "@1-3", "video@0-2"]),
            vec!["video", "audio", "last", "@1-3", "video@0-2"]
        );
    }

    #[test]
    fn ranges_stay_half_open_and_non_empty() {
        assert_eq!(clamp_range(0, 3, 3), (0, 3));
        assert_eq!(clamp_range(5, 9, 3), (2, 3));
        assert_eq!(clamp_range(2, 2, 3), (1, 2));
        assert_eq!(clamp_range(0, 0, 3), (0, 1));
        assert_eq!(clamp_range(1, 2, 0), (0, 0));
    }

    #[test]
    fn drops_are_red_rises_green() {
        assert_eq!(change_color(-12.0), Color32::from_rgb(213, 62, 79));
        assert_eq!(change_color(3.0), Color32::from_rgb(26, 152, 80));
        assert_eq!(change_color(0.0), Color32::GRAY);
        assert_eq!(change_color(f32::NAN), Color32::GRAY);
        assert_eq!(format_change(-34.24), "\u{2212}34.2 %");
        assert_eq!(format_change(5.0), "+5.0 %");
        assert_eq!(format_change(-0.01), "0.0 %");
        assert_eq!(format_change(f32::INFINITY), "–");
    }

    #[test]
    fn summary_names_the_request_and_marks_stale_results() {
        let v = KnockoutView {
            request: req("audio", "last", 0, 3),
            prob: 0.25,
            base_prob: 0.5,
            rel_change: -50.0,
            top1: (7, String::new()),
            token: (3, "Hi".into()),
        };
        let s = summary(&v, Some(&req("audio", "last", 0, 3)));
        assert_eq!(s.baseline, "baseline p(\"Hi\") 50.0 %");
        assert_eq!(s.knocked, "after knockout 25.0 %");
        assert_eq!(s.change, "change \u{2212}50.0 %");
        assert_eq!(s.top1, "top-1 after id 7");
        assert_eq!(s.request, "audio -> last, layers 0..3");
        assert!(!s.stale);
        assert!(summary(&v, Some(&req("audio", "last", 0, 2))).stale);
    }
}
