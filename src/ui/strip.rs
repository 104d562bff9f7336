//! Token strip: one small coloured cell per prompt position, wrapped into rows, with a legend and a
//! hover card (index, id, text, group).

use egui::{Color32, CornerRadius, Pos2, Rect, Sense, Vec2};

use super::panel::{Action, Panel, ViewState};
use super::tokens::{group_counts, quoted, Group};

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
pub struct TokenStripPanel;

impl Panel for TokenStripPanel {
    fn name(&self) -> &'static str {
        "Tokens"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, _actions: &mut Vec<Action>) {
        let Some(inputs) = &view.inputs else {
            ui.weak("No inputs loaded. Open a prepared inputs file (Ctrl+O).");
            return;
        };
        legend(ui, &inputs.groups);
        let layout = StripLayout::new(inputs.ids.len(), ui.available_width(), CELL, GAP);
        egui::ScrollArea::vertical()
            .max_height(MAX_HEIGHT)
            .auto_shrink([false, true])
            .show(ui, |ui| draw_strip(ui, &layout, view));
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

fn draw_strip(ui: &mut egui::Ui, layout: &StripLayout, view: &ViewState) {
    let Some(inputs) = &view.inputs else { return };
    let (w, h) = layout.size();
    let (rect, response) =
        ui.allocate_exact_size(Vec2::new(w.max(1.0), h.max(1.0)), Sense::hover());
    let painter = ui.painter_at(rect);
    let clip = ui.clip_rect();
    for (i, &g) in inputs.groups.iter().enumerate() {
        let Some((x, y)) = layout.cell_origin(i) else {
            break;
        };
        let cell = Rect::from_min_size(rect.min + Vec2::new(x, y), Vec2::splat(layout.cell));
        if clip.intersects(cell) {
            painter.rect_filled(cell, CornerRadius::ZERO, group_color(g));
        }
    }
    let hovered = response
        .hover_pos()
        .and_then(|p: Pos2| layout.index_at(p.x - rect.min.x, p.y - rect.min.y));
    if let Some(i) = hovered {
        if let Some((x, y)) = layout.cell_origin(i) {
            let cell = Rect::from_min_size(rect.min + Vec2::new(x, y), Vec2::splat(layout.cell));
            painter.rect_stroke(
                cell.expand(1.0),
                CornerRadius::ZERO,
                egui::Stroke::new(1.5, ui.visuals().strong_text_color()),
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
    fn hover_text_shows_id_when_no_text() {
        assert_eq!(hover_text(3, 42, "", Group::Audio), "#3 · id 42 · audio");
        assert_eq!(
            hover_text(0, 7, "\nhi", Group::Text),
            "#0 · id 7 · \"\\nhi\" · text"
        );
    }
}
