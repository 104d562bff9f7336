//! Token strip: one small coloured cell per prompt position, wrapped into rows, with a legend and a
//! hover card (index, id, text, group). A click selects a position and a drag a range of them, which the
//! knockout panel takes as its source or target (`pos:A-B`, resolved by the worker like every selector).

use std::path::PathBuf;

use egui::{Color32, CornerRadius, Pos2, Rect, Sense, Stroke, Vec2};

use crate::prompt::Selector;

use super::media::SpanRole;
use super::panel::{Action, Panel, ViewState};
use super::tokens::{group_counts, quoted, Group};

/// The strip's name for screen readers and tests.
pub const STRIP_LABEL: &str = "token strip";

/// Where the cells go: a grid of `columns` cells per row, filled left to right, top to bottom.
///
/// Pure geometry in points relative to the strip's top-left corner, so it is unit-tested without egui.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StripLayout {
    pub cells: usize,
    pub columns: usize,
    pub rows: usize,
    /// Cell edge length.
    pub cell: f32,
    /// Space between cells.
    pub gap: f32,
}

impl StripLayout {
    /// Cells of `cell` points with `gap` between them, as many per row as fit in `width` (at least one).
    pub fn new(cells: usize, width: f32, cell: f32, gap: f32) -> Self {
        let cell = cell.max(1.0);
        let gap = gap.max(0.0);
        let pitch = cell + gap;
        // `width` holds n cells when n·cell + (n−1)·gap ≤ width.
        let fit = ((width.max(0.0) + gap) / pitch).floor() as usize;
        let columns = fit.max(1);
        let rows = cells.div_ceil(columns);
        Self {
            cells,
            columns,
            rows,
            cell,
            gap,
        }
    }

    fn pitch(&self) -> f32 {
        self.cell + self.gap
    }

    /// Total size of the strip.
    pub fn size(&self) -> (f32, f32) {
        let used_columns = self.columns.min(self.cells);
        let extent = |n: usize| {
            if n == 0 {
                0.0
            } else {
                n as f32 * self.pitch() - self.gap
            }
        };
        (extent(used_columns), extent(self.rows))
    }

    /// Top-left corner of cell `i` (`None` past the end).
    pub fn cell_origin(&self, i: usize) -> Option<(f32, f32)> {
        (i < self.cells).then(|| {
            let (row, col) = (i / self.columns, i % self.columns);
            (col as f32 * self.pitch(), row as f32 * self.pitch())
        })
    }

    /// The cell under a point, counting the gap right of / below a cell as part of it so hovering never
    /// flickers between cells.
    pub fn index_at(&self, x: f32, y: f32) -> Option<usize> {
        if x < 0.0 || y < 0.0 {
            return None;
        }
        let col = (x / self.pitch()).floor() as usize;
        let row = (y / self.pitch()).floor() as usize;
        if col >= self.columns || row >= self.rows {
            return None;
        }
        let i = row * self.columns + col;
        (i < self.cells).then_some(i)
    }

    /// The cell nearest a point (clamped into the grid, past the last cell → the last cell): where a drag
    /// that leaves the strip ends. `None` only for an empty strip.
    pub fn index_near(&self, x: f32, y: f32) -> Option<usize> {
        if self.cells == 0 {
            return None;
        }
        let clamp = |v: f32, n: usize| ((v.max(0.0) / self.pitch()).floor() as usize).min(n - 1);
        let (col, row) = (clamp(x, self.columns), clamp(y, self.rows));
        Some((row * self.columns + col).min(self.cells - 1))
    }
}

/// The positions a drag from cell `a` to cell `b` covers, both included: `[min, max + 1)`.
pub fn span_between(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b) + 1)
}

/// The selected positions as a selector: half-open, shown as the command line reads it (`pos:10-20`,
/// `pos:7` for one position).
pub fn position_selector((a, b): (usize, usize)) -> Selector {
    Selector::positions(a, b)
}

/// `positions 10..20 · 10 tokens: audio 8, video 2` for the selection row.
pub fn selection_line(groups: &[Group], (a, b): (usize, usize)) -> String {
    let picked = groups.get(a..b.min(groups.len())).unwrap_or_default();
    let counts: Vec<String> = group_counts(picked)
        .into_iter()
        .map(|(g, n)| format!("{} {n}", g.name()))
        .collect();
    let n = picked.len();
    format!(
        "positions {a}..{b} \u{b7} {n} token{}: {}",
        if n == 1 { "" } else { "s" },
        counts.join(", ")
    )
}

/// One line of the hover card.
pub fn hover_text(index: usize, id: u32, text: &str, group: Group) -> String {
    let shown = if text.is_empty() {
        String::new()
    } else {
        format!(" · {}", quoted(text))
    };
    format!("#{index} · id {id}{shown} · {}", group.name())
}

/// A group's colour from `export::palette` (through `Group::rgb`), shared with exported figures.
pub fn group_color(g: Group) -> Color32 {
    let [r, gr, b] = g.rgb();
    Color32::from_rgb(r, gr, b)
}

/// Cell size in points, and the largest strip height before it scrolls.
const CELL: f32 = 7.0;
const GAP: f32 = 1.0;
const MAX_HEIGHT: f32 = 220.0;

#[derive(Default)]
pub struct TokenStripPanel {
    /// The cell a drag started on.
    drag_from: Option<usize>,
    /// Selected positions, half-open.
    selection: Option<(usize, usize)>,
    /// The inputs the selection belongs to: another prompt clears it.
    prompt: Option<(PathBuf, usize)>,
}

impl Panel for TokenStripPanel {
    fn name(&self) -> &'static str {
        "Tokens"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let Some(inputs) = &view.inputs else {
            ui.weak("No inputs loaded. Open a prepared inputs file (Ctrl+O).");
            return;
        };
        let key = (inputs.path.clone(), inputs.ids.len());
        if self.prompt.as_ref() != Some(&key) {
            self.prompt = Some(key);
            self.selection = None;
            self.drag_from = None;
        }
        legend(ui, &inputs.groups);
        let layout = StripLayout::new(inputs.ids.len(), ui.available_width(), CELL, GAP);
        egui::ScrollArea::vertical()
            .max_height(MAX_HEIGHT)
            .auto_shrink([false, true])
            .show(ui, |ui| self.draw_strip(ui, &layout, view));
        self.selection_row(ui, &inputs.groups, actions);
    }
}

impl TokenStripPanel {
    /// What is selected, and where it can go.
    fn selection_row(&mut self, ui: &mut egui::Ui, groups: &[Group], actions: &mut Vec<Action>) {
        ui.horizontal_wrapped(|ui| {
            let Some(span) = self.selection else {
                ui.weak("Click a token or drag across tokens to select positions for a knockout.");
                return;
            };
            let selector = position_selector(span);
            ui.label(selection_line(groups, span));
            ui.monospace(selector.to_string());
            if ui
                .button("Positions as source")
                .on_hover_text("Use these positions as the knockout's source (the keys hidden)")
                .clicked()
            {
                actions.push(Action::UseSpan(SpanRole::Source, selector.clone()));
            }
            if ui
                .button("Positions as target")
                .on_hover_text(
                    "Use these positions as the knockout's target (the queries that lose the source)",
                )
                .clicked()
            {
                actions.push(Action::UseSpan(SpanRole::Target, selector.clone()));
            }
            if ui.button("Clear positions").clicked() {
                self.selection = None;
            }
        });
    }

    fn draw_strip(&mut self, ui: &mut egui::Ui, layout: &StripLayout, view: &ViewState) {
        let Some(inputs) = &view.inputs else { return };
        let (w, h) = layout.size();
        let (rect, response) =
            ui.allocate_exact_size(Vec2::new(w.max(1.0), h.max(1.0)), Sense::click_and_drag());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, STRIP_LABEL));
        let near = |p: Pos2| layout.index_near(p.x - rect.min.x, p.y - rect.min.y);
        if response.drag_started() {
            let origin = ui.input(|i| i.pointer.press_origin());
            self.drag_from = origin.or(response.interact_pointer_pos()).and_then(near);
        }
        if response.dragged() {
            if let (Some(a), Some(b)) = (
                self.drag_from,
                response.interact_pointer_pos().and_then(near),
            ) {
                self.selection = Some(span_between(a, b));
            }
        }
        if response.drag_stopped() {
            self.drag_from = None;
        }
        if response.clicked() {
            let at = response
                .interact_pointer_pos()
                .and_then(|p| layout.index_at(p.x - rect.min.x, p.y - rect.min.y));
            self.selection = at.map(|i| (i, i + 1));
        }
        let painter = ui.painter_at(rect);
        let clip = ui.clip_rect();
        let cell_rect = |i: usize| {
            layout.cell_origin(i).map(|(x, y)| {
                Rect::from_min_size(rect.min + Vec2::new(x, y), Vec2::splat(layout.cell))
            })
        };
        for (i, &g) in inputs.groups.iter().enumerate() {
            let Some(cell) = cell_rect(i) else {
                break;
            };
            if clip.intersects(cell) {
                painter.rect_filled(cell, CornerRadius::ZERO, group_color(g));
            }
        }
        if let Some((a, b)) = self.selection {
            let mark = ui.visuals().selection.stroke.color;
            for cell in (a..b).filter_map(cell_rect).filter(|c| clip.intersects(*c)) {
                painter.rect_filled(cell.shrink(2.0), CornerRadius::ZERO, mark);
                painter.rect_stroke(
                    cell,
                    CornerRadius::ZERO,
                    Stroke::new(1.0, mark),
                    egui::StrokeKind::Outside,
                );
            }
        }
        let hovered = response
            .hover_pos()
            .and_then(|p: Pos2| layout.index_at(p.x - rect.min.x, p.y - rect.min.y));
        if let Some(i) = hovered {
            if let Some(cell) = cell_rect(i) {
                painter.rect_stroke(
                    cell.expand(1.0),
                    CornerRadius::ZERO,
                    Stroke::new(1.5, ui.visuals().strong_text_color()),
                    egui::StrokeKind::Outside,
                );
            }
            let id = inputs.ids.get(i).copied().unwrap_or_default();
            let text = inputs.texts.get(i).map(String::as_str).unwrap_or_default();
            let group = inputs.groups.get(i).copied().unwrap_or(Group::Text);
            response.on_hover_ui_at_pointer(|ui| {
                ui.label(hover_text(i, id, text, group));
            });
        }
    }
}

fn legend(ui: &mut egui::Ui, groups: &[Group]) {
    ui.horizontal_wrapped(|ui| {
        ui.label(format!("{} positions:", groups.len()));
        for (g, n) in group_counts(groups) {
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(10.0), Sense::hover());
            ui.painter()
                .rect_filled(rect, CornerRadius::same(2), group_color(g));
            ui.label(format!("{} {n}", g.name()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_columns_exactly() {
        // 10 cells of 7 + 9 gaps of 1 = 79 points.
        let l = StripLayout::new(25, 79.0, 7.0, 1.0);
        assert_eq!(l.columns, 10);
        assert_eq!(l.rows, 3);
        assert_eq!(StripLayout::new(25, 78.9, 7.0, 1.0).columns, 9);
        assert_eq!(l.size(), (79.0, 23.0));
    }

    #[test]
    fn narrow_width_still_has_one_column() {
        let l = StripLayout::new(3, 2.0, 7.0, 1.0);
        assert_eq!((l.columns, l.rows), (1, 3));
    }

    #[test]
    fn empty_strip_has_no_size() {
        let l = StripLayout::new(0, 100.0, 7.0, 1.0);
        assert_eq!(l.rows, 0);
        assert_eq!(l.size(), (0.0, 0.0));
        assert_eq!(l.index_at(0.0, 0.0), None);
    }

    #[test]
    fn short_strip_is_as_wide_as_its_cells() {
        let l = StripLayout::new(3, 1000.0, 7.0, 1.0);
        assert_eq!(l.size(), (23.0, 7.0));
    }

    #[test]
    fn origin_and_hit_test_agree() {
        let l = StripLayout::new(25, 79.0, 7.0, 1.0);
        for i in 0..25 {
            let (x, y) = l.cell_origin(i).unwrap_or((-1.0, -1.0));
            assert_eq!(l.index_at(x + 3.0, y + 3.0), Some(i));
            // The gap right of / below a cell belongs to it.
            assert_eq!(l.index_at(x + 7.5, y + 7.5), Some(i));
        }
        assert_eq!(l.cell_origin(25), None);
        assert_eq!(l.cell_origin(11), Some((8.0, 8.0)));
    }

    #[test]
    fn hit_test_outside_is_none() {
        let l = StripLayout::new(25, 79.0, 7.0, 1.0);
        assert_eq!(l.index_at(-0.1, 0.0), None);
        assert_eq!(l.index_at(80.5, 0.0), None);
        // Row 2 holds cells 20..25; column 7 of row 2 would be 27.
        assert_eq!(l.index_at(7.0 * 8.0 + 1.0, 16.5), None);
        assert_eq!(l.index_at(0.0, 100.0), None);
    }

    #[test]
    fn drags_past_the_cells_end_at_the_nearest_one() {
        // 10 columns, 25 cells: row 2 holds 20..25.
        let l = StripLayout::new(25, 79.0, 7.0, 1.0);
        assert_eq!(l.index_near(3.0, 3.0), Some(0));
        assert_eq!(l.index_near(-20.0, -5.0), Some(0));
        assert_eq!(l.index_near(500.0, 3.0), Some(9));
        assert_eq!(
            l.index_near(60.0, 17.0),
            Some(24),
            "past the last cell of the last row"
        );
        assert_eq!(l.index_near(30.0, 500.0), Some(23));
        assert_eq!(
            StripLayout::new(0, 79.0, 7.0, 1.0).index_near(0.0, 0.0),
            None
        );
    }

    #[test]
    fn a_selection_is_a_half_open_position_selector() {
        assert_eq!(span_between(12, 4), (4, 13));
        assert_eq!(span_between(4, 12), (4, 13));
        assert_eq!(span_between(7, 7), (7, 8));
        assert_eq!(position_selector((4, 13)).to_string(), "pos:4-13");
        assert_eq!(position_selector((7, 8)).to_string(), "pos:7");
        assert_eq!(
            "pos:4-13".parse::<Selector>().ok(),
            Some(position_selector((4, 13)))
        );
        let g = [
            Group::System,
            Group::Audio,
            Group::Audio,
            Group::Video,
            Group::Text,
        ];
        assert_eq!(
            selection_line(&g, (1, 4)),
            "positions 1..4 \u{b7} 3 tokens: audio 2, video 1"
        );
        assert_eq!(
            selection_line(&g, (4, 5)),
            "positions 4..5 \u{b7} 1 token: text 1"
        );
        // A stale range past the end counts what is there.
        assert_eq!(
            selection_line(&g, (3, 9)),
            "positions 3..9 \u{b7} 2 tokens: text 1, video 1"
        );
    }

    #[test]
    fn hover_text_shows_id_when_no_text() {
        assert_eq!(hover_text(3, 42, "", Group::Audio), "#3 · id 42 · audio");
        assert_eq!(
            hover_text(0, 7, "\nhi", Group::Text),
            "#0 · id 7 · \"\\nhi\" · text"
        );
    }
}
