//! Heads panel: which heads listen and which look. A layers × query heads grid of the attention mass the
//! answer position (`last`) gives one group (audio, video, image, question), from the trace; the heads that
//! give it the most are listed beside it, and a click on a cell knocks that group out of `last` in that head
//! of that layer only (`avflow knockout --heads H --layers L..L+1`).

use std::sync::Arc;

use egui::{Color32, Rect, RichText, Sense, Stroke};

use crate::flow::attention::{rank_heads, HeadMass, HeadScore};
use crate::prompt::Selector;
use crate::session::{KnockoutBlock, KnockoutSpec};

use super::colormap::Colormap;
use super::figure::{export_row, ExportControls, FigureView};
use super::panel::{Action, Panel, ViewState};

/// What the heads view holds: the per-head mass once computed (`[layer][head]{group}`), from `last`.
#[derive(Debug, Clone, Default)]
pub struct HeadsView {
    pub per_head: Option<Arc<HeadMass>>,
    /// A computation is on its way.
    pub pending: bool,
}

/// Accessible name of the grid (tests click cells of it).
pub const GRID_LABEL: &str = "heads grid";

/// The groups a heads grid can show, where this prompt has them, listening first.
pub fn head_groups(groups: &[(String, usize)]) -> Vec<String> {
    ["audio", "video", "image", "question"]
        .iter()
        .filter(|g| groups.iter().any(|(n, c)| n == *g && *c > 0))
        .map(|g| g.to_string())
        .collect()
}

/// The knockout a click on cell (`layer`, `head`) runs: `group` → `last` in that head of that layer.
pub fn cell_knockout(group: &str, layer: usize, head: usize) -> KnockoutSpec {
    let mut spec = KnockoutSpec::single(
        Selector::group(group),
        Selector::group("last"),
        layer,
        layer + 1,
    );
    spec.blocks[0].heads = Some(vec![head]);
    spec
}

/// `L2 H1 0.77`.
pub fn score_text(s: &HeadScore) -> String {
    format!("L{} H{} {:.2}", s.layer, s.head, s.mass)
}

/// The block a knockout result ran, when it is one cell of the grid: `(layer, head)`.
fn shown_cell(b: &KnockoutBlock, group: &str) -> Option<(usize, usize)> {
    match b.heads.as_deref() {
        Some([h]) if b.end == b.start + 1 && b.source.to_string() == group => Some((b.start, *h)),
        _ => None,
    }
}

#[derive(Default)]
pub struct HeadsPanel {
    group: Option<String>,
    export: ExportControls,
}

impl Panel for HeadsPanel {
    fn name(&self) -> &'static str {
        "Heads"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let Some(inputs) = view.inputs.as_ref() else {
            ui.weak("Load a model and inputs to see which heads listen and which look.");
            return;
        };
        let groups = head_groups(&inputs.flow_groups);
        if groups.is_empty() {
            ui.weak("This prompt has no media or question to attend to.");
            return;
        }
        let group = self
            .group
            .clone()
            .filter(|g| groups.contains(g))
            .unwrap_or_else(|| groups[0].clone());
        let Some(per_head) = view.heads.per_head.clone() else {
            ui.horizontal(|ui| {
                let busy = view.busy || view.heads.pending;
                if ui
                    .add_enabled(!busy, egui::Button::new("Compute heads"))
                    .on_hover_text(
                        "Each query head's attention from the answer position to every group, in every \
                         layer (avflow attention --per-head)",
                    )
                    .clicked()
                {
                    actions.push(Action::Heads);
                }
                if view.heads.pending {
                    ui.spinner();
                }
            });
            return;
        };
        let mut chosen = group.clone();
        ui.horizontal(|ui| {
            let label = ui.label("attention from last to");
            egui::ComboBox::from_id_salt("heads-group")
                .selected_text(&chosen)
                .show_ui(ui, |ui| {
                    for g in &groups {
                        ui.selectable_value(&mut chosen, g.clone(), g);
                    }
                })
                .response
                .labelled_by(label.id);
        });
        self.group = Some(chosen.clone());
        export_row(
            ui,
            &mut self.export,
            FigureView::Heads,
            &view.export,
            true,
            actions,
        );
        let layers = per_head.len();
        let heads = per_head.first().map_or(0, Vec::len);
        if layers == 0 || heads == 0 {
            ui.weak("No heads measured.");
            return;
        }
        let mass = |l: usize, h: usize| per_head[l][h].get(&chosen).copied().unwrap_or(0.0);
        let max = (0..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .map(|(l, h)| mass(l, h))
            .fold(0f32, f32::max)
            .max(1e-9);
        let shown = view
            .knockout
            .as_ref()
            .and_then(|k| k.spec.main())
            .and_then(|b| shown_cell(b, &chosen));
        // The grid: layers bottom to top, heads left to right.
        let side = ((ui.available_width() - 40.0) / heads as f32).clamp(8.0, 36.0);
        let cell_h = ((ui.available_height() - 90.0) / layers as f32).clamp(4.0, 28.0);
        let (rect, response) = ui.allocate_exact_size(
            egui::vec2(side * heads as f32 + 30.0, cell_h * layers as f32 + 18.0),
            Sense::click(),
        );
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, GRID_LABEL));
        let grid = Rect::from_min_size(
            rect.min + egui::vec2(30.0, 0.0),
            egui::vec2(side * heads as f32, cell_h * layers as f32),
        );
        let painter = ui.painter_at(rect);
        let cell = |l: usize, h: usize| {
            Rect::from_min_size(
                egui::pos2(
                    grid.left() + h as f32 * side,
                    grid.bottom() - (l + 1) as f32 * cell_h,
                ),
                egui::vec2(side, cell_h),
            )
        };
        for l in 0..layers {
            for h in 0..heads {
                let [r, g, b] = Colormap::Viridis.color(mass(l, h) / max);
                painter.rect_filled(cell(l, h), 0.0, Color32::from_rgb(r, g, b));
            }
        }
        if let Some((l, h)) = shown.filter(|&(l, h)| l < layers && h < heads) {
            painter.rect_stroke(
                cell(l, h),
                0.0,
                Stroke::new(2.0, Color32::WHITE),
                egui::StrokeKind::Inside,
            );
        }
        let small = egui::FontId::proportional(10.0);
        let text = ui.visuals().text_color();
        for l in (0..layers).step_by(layers.div_ceil(8).max(1)) {
            painter.text(
                egui::pos2(grid.left() - 4.0, cell(l, 0).center().y),
                egui::Align2::RIGHT_CENTER,
                format!("L{l}"),
                small.clone(),
                text,
            );
        }
        for h in (0..heads).step_by(heads.div_ceil(8).max(1)) {
            painter.text(
                egui::pos2(cell(0, h).center().x, grid.bottom() + 2.0),
                egui::Align2::CENTER_TOP,
                format!("H{h}"),
                small.clone(),
                text,
            );
        }
        let at = |p: egui::Pos2| -> Option<(usize, usize)> {
            if !grid.contains(p) {
                return None;
            }
            let h = ((p.x - grid.left()) / side) as usize;
            let l = ((grid.bottom() - p.y) / cell_h) as usize;
            (l < layers && h < heads).then_some((l, h))
        };
        if let Some((l, h)) = response.hover_pos().and_then(at) {
            response.clone().on_hover_text(format!(
                "layer {l}, head {h}: {:.3} of last's attention on {chosen}; click to knock {chosen} out of \
                 last in this head of this layer",
                mass(l, h)
            ));
        }
        if response.clicked() {
            if let Some((l, h)) = response.interact_pointer_pos().and_then(at) {
                actions.push(Action::Knockout(cell_knockout(&chosen, l, h)));
            }
        }
        let listening = rank_heads(&per_head, "audio", 3);
        let look = if groups.iter().any(|g| g == "video") {
            "video"
        } else {
            "image"
        };
        let looking = rank_heads(&per_head, look, 3);
        let line = |who: &str, top: &[HeadScore]| {
            format!(
                "{who}: {}",
                top.iter().map(score_text).collect::<Vec<_>>().join(", ")
            )
        };
        if !listening.is_empty() {
            ui.label(RichText::new(line("Listening (audio)", &listening)).small());
        }
        if !looking.is_empty() {
            ui.label(RichText::new(line(&format!("Looking ({look})"), &looking)).small());
        }
        if let Some(k) = view.knockout.as_ref().filter(|_| shown.is_some()) {
            ui.label(
                RichText::new(format!(
                    "{}: p {:.4} -> {:.4} ({:+.1}%)",
                    k.spec.describe(),
                    k.result.base_prob,
                    k.result.prob,
                    k.result.rel_change
                ))
                .strong(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_become_one_head_one_layer_knockouts() {
        let spec = cell_knockout("audio", 2, 3);
        let b = spec.main().unwrap();
        assert_eq!((b.start, b.end, b.heads.clone()), (2, 3, Some(vec![3])));
        assert_eq!(b.source.to_string(), "audio");
        assert_eq!(b.target.to_string(), "last");
        assert_eq!(shown_cell(b, "audio"), Some((2, 3)));
        assert_eq!(shown_cell(b, "video"), None);
        let groups = vec![
            ("audio".to_string(), 10),
            ("video".to_string(), 0),
            ("question".to_string(), 4),
        ];
        assert_eq!(head_groups(&groups), ["audio", "question"]);
    }
}
