//! The heatmap as the instrument: what a click, a Shift+click, a dragged rectangle or the context menu on
//! the layers × positions map asks the knockout for, and where the shown knockout's blocks lie on it.
//!
//! - A click on the cells picks the contiguous run of one group under the pointer (a 2-s chunk of audio or
//!   video in an interleaved prompt, the question, the system prompt) as the knockout's source over the
//!   knockout panel's layers; a click on the group strip under the map picks the whole group.
//! - A drag draws a rectangle: its positions are the source and its rows the layers, updated live while
//!   the mouse moves (the worker keeps only the newest request).
//! - Shift adds the span as one more block instead of replacing the source (a Shift+drag adds it when
//!   the mouse is released).
//! - The context menu offers source, target, one more block, and dropping the span from the clicked layer.
//!
//! Panning moves to Ctrl+drag, the middle button and the horizontal scroll; zooming stays on Ctrl+wheel
//! and pinch. Everything deciding a pick is a pure function here (unit-tested).

use egui::{Color32, Pos2, Rect, Stroke, StrokeKind};

use crate::prompt::{Selector, TokenMap};
use crate::session::KnockoutSpec;

use super::heatmap::Geometry;

/// The flow group of a position (`template` for the chat template's own tokens).
fn group_of(map: &TokenMap, pos: usize) -> &str {
    map.tokens.get(pos).map_or("", |t| t.group.as_str())
}

/// The groups a click can pick: those a knockout can name.
fn pickable(group: &str) -> bool {
    !group.is_empty() && group != "template"
}

/// The contiguous run `[a, b)` of one group around `pos`, and the group; `None` on template tokens.
pub fn run_at(map: &TokenMap, pos: usize) -> Option<(usize, usize, String)> {
    let g = group_of(map, pos);
    if !pickable(g) {
        return None;
    }
    let mut a = pos;
    while a > 0 && group_of(map, a - 1) == g {
        a -= 1;
    }
    let mut b = pos + 1;
    while b < map.tokens.len() && group_of(map, b) == g {
        b += 1;
    }
    Some((a, b, g.to_string()))
}

/// The selector of positions `[a, b)`: a group's name when they are exactly that group, else `pos:A-B`
/// (`pos:A` for one position).
pub fn span_selector(map: &TokenMap, a: usize, b: usize) -> Selector {
    let exact = map
        .groups
        .spans
        .iter()
        .filter(|(name, _)| name.as_str() != "last" || b - a == 1)
        .find(|(_, pos)| {
            pos.len() == b - a && pos.first() == Some(&a) && pos.last() == Some(&(b - 1))
        });
    if let Some((name, _)) = exact {
        return Selector::group(name);
    }
    let text = if b == a + 1 {
        format!("pos:{a}")
    } else {
        format!("pos:{a}-{b}")
    };
    text.parse()
        .unwrap_or_else(|_| Selector::group(group_of(map, a)))
}

/// The selector of the whole group holding `pos` (a click on the group strip).
pub fn group_selector(map: &TokenMap, pos: usize) -> Option<Selector> {
    let g = group_of(map, pos);
    pickable(g).then(|| Selector::group(g))
}

/// The cells between two corners of a dragged rectangle: layers `[l0, l1)` and positions `[a, b)`.
pub fn rect_cells(from: (usize, usize), to: (usize, usize)) -> ((usize, usize), (usize, usize)) {
    let (l0, l1) = (from.0.min(to.0), from.0.max(to.0) + 1);
    let (a, b) = (from.1.min(to.1), from.1.max(to.1) + 1);
    ((l0, l1), (a, b))
}

/// What a pick asks for, in words (status lines, the context menu).
pub fn describe(sel: &Selector, layers: Option<(usize, usize)>) -> String {
    match layers {
        Some((a, b)) => format!("{sel} in layers {a}..{b}"),
        None => sel.to_string(),
    }
}

/// Ascending positions as runs `[a, b)`.
pub fn runs(positions: &[usize]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = Vec::new();
    for &p in positions {
        match v.last_mut() {
            Some((_, b)) if *b == p => *b = p + 1,
            _ => v.push((p, p + 1)),
        }
    }
    v
}

/// The screen rectangles of a knockout's blocks: each source run over the block's layers (targets are
/// rows of the answer, not drawn). Blocks whose selectors do not resolve are left out.
pub fn block_rects(map: &TokenMap, spec: &KnockoutSpec, geo: &Geometry) -> Vec<Rect> {
    let mut out = Vec::new();
    for b in &spec.blocks {
        let Ok(mut pos) = b.source.resolve(map) else {
            continue;
        };
        pos.sort_unstable();
        let end = b.end.min(geo.layers);
        if b.start >= end {
            continue;
        }
        let (top, _) = geo.row_span(end - 1);
        let (_, bottom) = geo.row_span(b.start);
        for (a, z) in runs(&pos) {
            let (x0, x1) = (geo.x_of(a as f64), geo.x_of(z as f64));
            let r = Rect::from_min_max(Pos2::new(x0, top), Pos2::new(x1.max(x0 + 1.0), bottom))
                .intersect(geo.rect);
            if r.width() > 0.0 && r.height() > 0.0 {
                out.push(r);
            }
        }
    }
    out
}

/// Outlines the shown knockout's blocks, and the rectangle being dragged.
pub fn draw_overlay(
    painter: &egui::Painter,
    blocks: &[Rect],
    dragging: Option<Rect>,
    strong: Color32,
) {
    for r in blocks {
        painter.rect_filled(*r, 0.0, Color32::from_white_alpha(28));
        painter.rect_stroke(*r, 0.0, Stroke::new(1.5, strong), StrokeKind::Inside);
    }
    if let Some(r) = dragging {
        painter.rect_stroke(
            r,
            0.0,
            Stroke::new(2.0, Color32::from_rgb(255, 200, 0)),
            StrokeKind::Inside,
        );
    }
}

/// How the heatmap's columns are shown: one per position, or merged over each run of one group (a 2-s
/// chunk in interleaved prompts), each media item's modality (a clip's sound, its pictures) or each group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Merge {
    #[default]
    Positions,
    Runs,
    Items,
    Groups,
}

impl Merge {
    pub const ALL: [Merge; 4] = [Merge::Positions, Merge::Runs, Merge::Items, Merge::Groups];

    pub fn name(self) -> &'static str {
        match self {
            Merge::Positions => "positions",
            Merge::Runs => "runs (2-s chunks)",
            Merge::Items => "media items",
            Merge::Groups => "groups",
        }
    }
}

/// The columns merged: every position of a run (or group) takes the bin's total when `sum` (attention mass:
/// how much the whole span gets) or its mean otherwise (probabilities and changes); positions of the chat
/// template keep their own values.
pub fn merged(
    m: &crate::flow::heatmap::Heatmap,
    map: &TokenMap,
    merge: Merge,
    sum: bool,
) -> crate::flow::heatmap::Heatmap {
    let n = m.positions;
    let mut bins: Vec<Vec<usize>> = Vec::new();
    match merge {
        Merge::Positions => return m.clone(),
        Merge::Runs => {
            let mut p = 0;
            while p < n {
                match run_at(map, p) {
                    Some((_, b, _)) => {
                        bins.push((p..b.min(n)).collect());
                        p = b.max(p + 1);
                    }
                    None => p += 1,
                }
            }
        }
        Merge::Items | Merge::Groups => {
            // Items: one bin per (item, group), so a clip's sound and pictures stay apart; text groups
            // (no item) are merged whole.
            let mut by: std::collections::BTreeMap<(Option<usize>, &str), Vec<usize>> =
                Default::default();
            for p in 0..n {
                let g = group_of(map, p);
                if pickable(g) {
                    let item = if merge == Merge::Items {
                        map.tokens.get(p).and_then(|t| t.item)
                    } else {
                        None
                    };
                    by.entry((item, g)).or_default().push(p);
                }
            }
            bins = by.into_values().collect();
        }
    }
    let mut values = m.values.clone();
    for l in 0..m.layers {
        let row = &m.values[l * n..(l + 1) * n];
        for bin in &bins {
            let total: f32 = bin.iter().map(|&p| row[p]).sum();
            let v = if sum {
                total
            } else {
                total / bin.len().max(1) as f32
            };
            for &p in bin {
                values[l * n + p] = v;
            }
        }
    }
    crate::flow::heatmap::Heatmap::new(m.layers, n, values).unwrap_or_else(|_| m.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// system ×2, audio ×3, video ×2, audio ×2, question ×2, last.
    fn map() -> TokenMap {
        let groups = [
            "system", "system", "audio", "audio", "audio", "video", "video", "audio", "audio",
            "question", "question", "last",
        ];
        TokenMap::of_groups(&groups)
    }

    #[test]
    fn a_click_picks_the_run_of_one_group() {
        let m = map();
        assert_eq!(run_at(&m, 3), Some((2, 5, "audio".into())));
        assert_eq!(run_at(&m, 8), Some((7, 9, "audio".into())));
        assert_eq!(run_at(&m, 0), Some((0, 2, "system".into())));
        assert_eq!(run_at(&m, 11), Some((11, 12, "last".into())));
    }

    #[test]
    fn spans_name_their_group_when_they_are_all_of_it() {
        let m = map();
        assert_eq!(span_selector(&m, 0, 2).to_string(), "system");
        assert_eq!(span_selector(&m, 9, 11).to_string(), "question");
        assert_eq!(span_selector(&m, 11, 12).to_string(), "last");
        // One of the two audio runs is positions, not the group.
        assert_eq!(span_selector(&m, 2, 5).to_string(), "pos:2-5");
        assert_eq!(span_selector(&m, 4, 5).to_string(), "pos:4");
        // Every selector resolves to exactly the span.
        for (a, b) in [(2, 5), (4, 5), (0, 2), (5, 7)] {
            assert_eq!(
                span_selector(&m, a, b).resolve(&m).unwrap(),
                (a..b).collect::<Vec<_>>()
            );
        }
        assert_eq!(group_selector(&m, 7).unwrap().to_string(), "audio");
    }

    #[test]
    fn merged_columns_sum_attention_and_average_the_rest() {
        let m = map();
        let h =
            crate::flow::heatmap::Heatmap::new(1, 12, (0..12).map(|v| v as f32).collect()).unwrap();
        let runs = merged(&h, &m, Merge::Runs, true);
        // Audio run 2..5 sums 2+3+4 = 9; the second audio run 7..9 sums 15.
        assert_eq!(runs.row(0)[2..5], [9.0, 9.0, 9.0]);
        assert_eq!(runs.row(0)[7..9], [15.0, 15.0]);
        let groups = merged(&h, &m, Merge::Groups, false);
        // Audio as a group: the mean of 2, 3, 4, 7, 8.
        assert_eq!(groups.row(0)[7], 24.0 / 5.0);
        assert_eq!(groups.row(0)[2], 24.0 / 5.0);
        assert_eq!(merged(&h, &m, Merge::Positions, true), h);
        // Items: the second audio run belongs to another item, so it stays apart from the first.
        let mut m2 = m.clone();
        for p in 7..9 {
            m2.tokens[p].item = Some(1);
        }
        for p in 2..7 {
            m2.tokens[p].item = Some(0);
        }
        let items = merged(&h, &m2, Merge::Items, true);
        assert_eq!(items.row(0)[2], 9.0);
        assert_eq!(items.row(0)[7], 15.0);
        assert_eq!(items.row(0)[5], 11.0);
    }

    #[test]
    fn rectangles_cover_both_corners_whichever_way_they_are_dragged() {
        assert_eq!(rect_cells((5, 9), (2, 3)), ((2, 6), (3, 10)));
        assert_eq!(rect_cells((1, 4), (1, 4)), ((1, 2), (4, 5)));
    }

    #[test]
    fn blocks_land_on_their_sources_and_layers() {
        let m = map();
        let geo = Geometry {
            rect: Rect::from_min_size(Pos2::ZERO, egui::vec2(120.0, 40.0)),
            layers: 4,
            positions: 12,
            window: super::super::heatmap::TokenWindow::full(12),
        };
        let spec = KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 1, 3);
        let rects = block_rects(&m, &spec, &geo);
        // Two audio runs: positions 2..5 and 7..9, rows of layers 1 and 2 (layer 0 at the bottom).
        assert_eq!(rects.len(), 2);
        assert_eq!((rects[0].left(), rects[0].right()), (20.0, 50.0));
        assert_eq!((rects[1].left(), rects[1].right()), (70.0, 90.0));
        assert_eq!((rects[0].top(), rects[0].bottom()), (10.0, 30.0));
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![(1, 4), (7, 8), (9, 11)]);
    }
}
