//! Knockout panel: pick a source, a target and a layer range; the target's queries lose the source's keys
//! in those layers and the panel shows how the probability of the baseline answer moves.
//!
//! Every change of a control asks for a new knockout; the worker runs only the newest queued one, so
//! dragging on the layer axis stays live. Sources and targets are typed [`Selector`]s: besides groups, a
//! selector of seconds (`@1-3`, `audio@1-3`, picked on the media timeline) or of positions (`pos:10-20`,
//! picked on the token strip); the worker resolves it with the token map. A grid of toggles (modality ×
//! layer block) adds more blocks into the same target, run together with the main one as one
//! [`KnockoutSpec`] ([`crate::flow::KnockoutSet`]).
//! Settings have a bounded undo history (a drag is one step), and a result can be pinned as A to compare
//! with the live one (B).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use egui::{
    Color32, CornerRadius, Key, KeyboardShortcut, Modifiers, Pos2, Rect, RichText, Sense, Stroke,
    Vec2,
};

use crate::prompt::groups::BUILTIN;
use crate::prompt::Selector;
use crate::session::{KnockoutBlock, KnockoutOutcome, KnockoutSpec};

use super::answer::format_percent;
use super::panel::{Action, Panel, ViewState};
use super::tokens::quoted;

/// Sources tried in this order for the first selection: the media first (the question the app asks).
const SOURCE_PREFERENCE: [&str; 5] = ["audio", "video", "image", "question", "system"];

/// Rows of the toggle grid, in this order where present: the parts of a prompt whose keys one would hide.
pub const TOGGLE_ROWS: [&str; 5] = ["audio", "video", "image", "question", "system"];

/// Undo the last change of the knockout settings.
pub const UNDO_SHORTCUT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
/// Redo what was undone. Checked before [`UNDO_SHORTCUT`], which it would also match.
pub const REDO_SHORTCUT: KeyboardShortcut =
    KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::Z);

/// Settings kept for undo; older ones are forgotten.
pub const HISTORY_LEN: usize = 100;

/// The layer axis's name for screen readers and tests (the grid's cells are `"audio layers 0..12"`).
pub const AXIS_LABEL: &str = "knocked-out layers";

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

/// Whether `sel` may stay a source or target: a selector of seconds, items or positions (`@1-3`,
/// `audio@0.5-2`, `item:0`, `pos:4-9`) always may, since whether it selects anything is the worker's to
/// say (with the groups that exist); group names only while the prompt offers them.
fn still_offered(sel: &Selector, offered: &[String]) -> bool {
    !sel.is_groups() || offered.iter().any(|o| Selector::group(o) == *sel)
}

/// What a combo offers: the present groups, then the selectors (not group names) in use or on the
/// timeline, each once.
pub fn choices(offered: &[String], extras: &[Selector]) -> Vec<Selector> {
    let mut out: Vec<Selector> = offered.iter().map(|g| Selector::group(g)).collect();
    for e in extras {
        if !e.is_groups() && !out.contains(e) {
            out.push(e.clone());
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

/// Everything the user set: what undo and redo step through, and what one knockout run is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockoutSettings {
    pub source: Selector,
    pub target: Selector,
    /// The main block's layers, half-open.
    pub start: usize,
    pub end: usize,
    /// The toggle grid: per modality row, the layers whose keys are hidden from `target` as well. Rows
    /// with no layer are left out, so equal grids compare equal.
    pub toggles: BTreeMap<String, BTreeSet<usize>>,
    /// More blocks into the same target (Shift on the heatmap adds them): each its own source and layers.
    pub extra: Vec<KnockoutBlock>,
}

impl KnockoutSettings {
    pub fn new(source: Selector, target: Selector, start: usize, end: usize) -> Self {
        Self {
            source,
            target,
            start,
            end,
            toggles: BTreeMap::new(),
            extra: Vec::new(),
        }
    }

    /// The run these settings ask for: the main block, then one block per run of toggled layers, watching
    /// the baseline top-1.
    pub fn request(&self) -> KnockoutSpec {
        let mut spec = KnockoutSpec::single(
            self.source.clone(),
            self.target.clone(),
            self.start,
            self.end,
        );
        spec.blocks
            .extend(toggle_blocks(&self.toggles, &self.target));
        spec.blocks.extend(self.extra.iter().map(|b| KnockoutBlock {
            target: self.target.clone(),
            ..b.clone()
        }));
        spec
    }

    /// The settings that ask for `spec` again: its first block is the main one, the others extra blocks
    /// (the toggle grid's blocks come back as such too, into the same target). `None` without blocks.
    pub fn from_spec(spec: &KnockoutSpec, layers: usize) -> Option<Self> {
        let (main, rest) = spec.blocks.split_first()?;
        let (start, end) = clamp_range(main.start, main.end, layers);
        Some(Self {
            source: main.source.clone(),
            target: main.target.clone(),
            start,
            end,
            toggles: BTreeMap::new(),
            extra: rest.to_vec(),
        })
    }

    /// Applies a span sent from the heatmap, the media timeline or the token strip: as the source or the
    /// target, with its layers when it has them; added as one more block instead when `add`.
    pub fn apply_pick(&mut self, p: &super::media::SpanPick, layers: usize) {
        let (start, end) = p
            .layers
            .map_or((self.start, self.end), |(a, b)| clamp_range(a, b, layers));
        match (p.role, p.add) {
            (super::media::SpanRole::Source, true) => {
                let block = KnockoutBlock {
                    source: p.selector.clone(),
                    target: self.target.clone(),
                    start,
                    end,
                    heads: None,
                };
                if !self.extra.contains(&block) {
                    self.extra.push(block);
                }
            }
            (super::media::SpanRole::Source, false) => {
                self.source = p.selector.clone();
                (self.start, self.end) = (start, end);
                self.extra.clear();
            }
            (super::media::SpanRole::Target, _) => {
                self.target = p.selector.clone();
                if p.layers.is_some() {
                    (self.start, self.end) = (start, end);
                }
            }
        }
    }
}

/// The settings to show: `current` while its groups are still offered (layers clamped to the model,
/// toggles of absent rows or layers dropped), otherwise the first media group → `last` over every layer.
/// `None` when the prompt offers no pair.
pub fn reconcile(
    current: Option<&KnockoutSettings>,
    groups: &[(String, usize)],
    layers: usize,
) -> Option<KnockoutSettings> {
    let offered = offered_groups(groups);
    if offered.is_empty() || layers == 0 {
        return None;
    }
    if let Some(c) = current {
        if still_offered(&c.source, &offered) && still_offered(&c.target, &offered) {
            let (start, end) = clamp_range(c.start, c.end, layers);
            let rows = toggle_rows(groups);
            let toggles = c
                .toggles
                .iter()
                .filter(|(row, _)| rows.contains(row))
                .map(|(row, ls)| {
                    let kept: BTreeSet<usize> = ls.range(..layers).copied().collect();
                    (row.clone(), kept)
                })
                .filter(|(_, ls)| !ls.is_empty())
                .collect();
            let extra = c
                .extra
                .iter()
                .filter(|b| still_offered(&b.source, &offered) && b.start < layers)
                .map(|b| KnockoutBlock {
                    end: b.end.min(layers),
                    ..b.clone()
                })
                .collect();
            return Some(KnockoutSettings {
                start,
                end,
                toggles,
                extra,
                ..c.clone()
            });
        }
    }
    let source = SOURCE_PREFERENCE
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .map_or(offered[0].as_str(), |s| s);
    let target = if offered.iter().any(|o| o == "last") {
        "last"
    } else {
        offered[offered.len() - 1].as_str()
    };
    Some(KnockoutSettings::new(
        Selector::group(source),
        Selector::group(target),
        0,
        layers,
    ))
}

/// The grid's rows: [`TOGGLE_ROWS`] present in this prompt.
pub fn toggle_rows(groups: &[(String, usize)]) -> Vec<String> {
    TOGGLE_ROWS
        .iter()
        .filter(|r| groups.iter().any(|(n, c)| n == *r && *c > 0))
        .map(|r| r.to_string())
        .collect()
}

/// The grid's columns: `columns` blocks of (nearly) equal size covering `0..layers`, each non-empty
/// (thirds by default: early, middle and late layers).
pub fn layer_blocks(layers: usize, columns: usize) -> Vec<(usize, usize)> {
    let n = columns.clamp(1, layers.max(1));
    if layers == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|k| (k * layers / n, (k + 1) * layers / n))
        .collect()
}

/// How much of a cell's layers are toggled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    Off,
    /// Some layers of the block (set with other columns).
    Partly,
    On,
}

pub fn cell_state(on: Option<&BTreeSet<usize>>, (a, b): (usize, usize)) -> CellState {
    let n = on.map_or(0, |s| s.range(a..b).count());
    if n == 0 {
        CellState::Off
    } else if n == b - a {
        CellState::On
    } else {
        CellState::Partly
    }
}

/// A click on a cell: a full cell turns off, an empty or partly set one turns fully on.
pub fn toggle_cell(
    toggles: &mut BTreeMap<String, BTreeSet<usize>>,
    row: &str,
    block: (usize, usize),
) {
    let on = cell_state(toggles.get(row), block) == CellState::On;
    let layers = toggles.entry(row.to_string()).or_default();
    for l in block.0..block.1 {
        if on {
            layers.remove(&l);
        } else {
            layers.insert(l);
        }
    }
    if layers.is_empty() {
        toggles.remove(row);
    }
}

/// Maximal runs of consecutive layers as half-open ranges: `{0, 1, 2, 5}` → `[(0, 3), (5, 6)]`.
pub fn runs(layers: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &l in layers {
        match out.last_mut() {
            Some((_, end)) if *end == l => *end = l + 1,
            _ => out.push((l, l + 1)),
        }
    }
    out
}

/// The grid as knockout blocks into `target`: one per row and run of toggled layers, rows in order.
pub fn toggle_blocks(
    toggles: &BTreeMap<String, BTreeSet<usize>>,
    target: &Selector,
) -> Vec<KnockoutBlock> {
    TOGGLE_ROWS
        .iter()
        .filter_map(|row| Some((*row, toggles.get(*row)?)))
        .flat_map(|(row, layers)| {
            runs(layers)
                .into_iter()
                .map(move |(start, end)| KnockoutBlock {
                    source: Selector::group(row),
                    target: target.clone(),
                    start,
                    end,
                    heads: None,
                })
        })
        .collect()
}

/// The layer axis: `layers` equal cells from `left` over `width` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAxis {
    pub left: f32,
    pub width: f32,
    pub layers: usize,
}

impl LayerAxis {
    fn cell(&self) -> f32 {
        self.width / self.layers.max(1) as f32
    }

    /// The layer under `x`, clamped to the axis (a drag past either end keeps the end layer).
    pub fn layer_at(&self, x: f32) -> usize {
        let l = ((x - self.left) / self.cell()).floor();
        if l.is_nan() || l < 0.0 {
            0
        } else {
            (l as usize).min(self.layers.saturating_sub(1))
        }
    }

    /// Left edge of `layer` (`layers` is the right end).
    pub fn x(&self, layer: usize) -> f32 {
        self.left + layer as f32 * self.cell()
    }

    /// Label every `step` layers so numbers stay `min_gap` points apart: 1, 2, 5, 10, 20, …
    pub fn tick_step(&self, min_gap: f32) -> usize {
        let cell = self.cell().max(1e-3);
        [1, 2, 5, 10, 20, 50, 100, 200, 500]
            .into_iter()
            .find(|&s| s as f32 * cell >= min_gap)
            .unwrap_or(1000)
    }
}

/// The layers a drag from layer `a` to layer `b` covers, both included: `[min, max + 1)`.
pub fn drag_range(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b) + 1)
}

/// A bounded undo history of settings. [`History::observe`] is called every frame with the current
/// value; a change is recorded once it settles (no pointer held), so a drag over many values is one step.
#[derive(Debug, Clone)]
pub struct History<T> {
    past: VecDeque<T>,
    future: Vec<T>,
    /// The last recorded value: what undo returns to from a newer one.
    settled: Option<T>,
    cap: usize,
}

impl<T: Clone + PartialEq> History<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            past: VecDeque::new(),
            future: Vec::new(),
            settled: None,
            cap: cap.max(1),
        }
    }

    /// Records `current` as a step when it differs from the last settled value and `gesture` (a pointer
    /// held down) is over. A new step clears what could be redone.
    pub fn observe(&mut self, current: &T, gesture: bool) {
        let Some(settled) = self.settled.as_mut() else {
            self.settled = Some(current.clone());
            return;
        };
        if gesture || settled == current {
            return;
        }
        let before = std::mem::replace(settled, current.clone());
        self.past.push_back(before);
        while self.past.len() > self.cap {
            self.past.pop_front();
        }
        self.future.clear();
    }

    /// The value before `current` (recording `current` first if it is an unsettled change).
    pub fn undo(&mut self, current: &T) -> Option<T> {
        self.observe(current, false);
        let prev = self.past.pop_back()?;
        self.future.push(current.clone());
        self.settled = Some(prev.clone());
        Some(prev)
    }

    /// The value undone last, unless something changed since.
    pub fn redo(&mut self, current: &T) -> Option<T> {
        self.observe(current, false);
        let next = self.future.pop()?;
        self.past.push_back(current.clone());
        self.settled = Some(next.clone());
        Some(next)
    }

    pub fn can_undo(&self) -> bool {
        !self.past.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.future.is_empty()
    }

    /// Forgets everything (another prompt: its settings are not this one's).
    pub fn clear(&mut self) {
        self.past.clear();
        self.future.clear();
        self.settled = None;
    }
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
    signed(rel_change, " %")
}

/// One decimal with a real minus sign and `unit` appended; `"–"` for no number.
fn signed(x: f32, unit: &str) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let rounded = (f64::from(x) * 10.0).round() / 10.0;
    if rounded == 0.0 {
        format!("0.0{unit}")
    } else if rounded < 0.0 {
        format!("\u{2212}{:.1}{unit}", -rounded)
    } else {
        format!("+{rounded:.1}{unit}")
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

/// `audio -> last, layers 0..3` (the main block), then each further block: `+ video 2..3` (into the same
/// target) or `+ video -> question 2..3`.
pub fn request_label(r: &KnockoutSpec) -> String {
    let Some((main, extra)) = r.blocks.split_first() else {
        return String::new();
    };
    let mut s = main.label();
    for b in extra {
        if b.target == main.target {
            s.push_str(&format!(" + {} {}..{}", b.source, b.start, b.end));
        } else {
            s.push_str(&format!(
                " + {} -> {} {}..{}",
                b.source, b.target, b.start, b.end
            ));
        }
    }
    s
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
    /// `audio -> last, layers 0..3`: what the numbers answer.
    pub request: String,
    /// The controls have moved on since this result was asked for.
    pub stale: bool,
}

pub fn summary(view: &KnockoutOutcome, selection: Option<&KnockoutSpec>) -> KnockoutSummary {
    let r = &view.spec;
    let res = &view.result;
    KnockoutSummary {
        baseline: format!(
            "baseline p({}) {}",
            token_text(&view.token),
            format_percent(res.base_prob)
        ),
        knocked: format!("after knockout {}", format_percent(res.prob)),
        change: format!("change {}", format_change(res.rel_change)),
        color: change_color(res.rel_change),
        top1: format!("top-1 after {}", token_text(&view.top1)),
        request: request_label(r),
        // A result of some heads only came from the heads view, not from these controls: shown as is.
        stale: selection.is_some_and(|s| s != r) && r.blocks.iter().all(|b| b.heads.is_none()),
    }
}

/// A pinned result (A) beside the live one (B), ready to draw as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// `(row name, A's cell, B's cell)`: the settings, p(answer), change against the baseline, top-1.
    pub rows: Vec<(String, String, String)>,
    /// `B − A: −12.3 points (B/A ×0.62)`.
    pub difference: String,
    pub color: Color32,
    /// The two watch different tokens or baselines (another prompt or model): their numbers do not
    /// compare.
    pub warning: Option<String>,
}

pub fn compare(a: &KnockoutOutcome, b: &KnockoutOutcome) -> Comparison {
    let (ra, rb) = (&a.result, &b.result);
    let points = 100.0 * (rb.prob - ra.prob);
    let ratio = if ra.prob > 0.0 {
        format!(" (B/A \u{d7}{:.2})", rb.prob / ra.prob)
    } else {
        String::new()
    };
    let same_baseline = a.token.0 == b.token.0 && ra.base_prob == rb.base_prob;
    Comparison {
        rows: vec![
            (
                "knockout".into(),
                request_label(&a.spec),
                request_label(&b.spec),
            ),
            (
                format!("p({})", token_text(&b.token)),
                format_percent(ra.prob),
                format_percent(rb.prob),
            ),
            (
                "change".into(),
                format_change(ra.rel_change),
                format_change(rb.rel_change),
            ),
            ("top-1 after".into(), token_text(&a.top1), token_text(&b.top1)),
        ],
        difference: format!("B \u{2212} A: {}{ratio}", signed(points, " points")),
        color: change_color(points),
        warning: (!same_baseline).then(|| {
            format!(
                "A watched p({}) from a baseline of {}; B watches p({}) from {}: another prompt or model, \
                 so the two do not compare. Pin again.",
                token_text(&a.token),
                format_percent(ra.base_prob),
                token_text(&b.token),
                format_percent(rb.base_prob)
            )
        }),
    }
}

/// Which prompt the panel's settings, history and pin belong to.
type PromptKey = (PathBuf, PathBuf, usize);

pub struct KnockoutPanel {
    settings: Option<KnockoutSettings>,
    /// The last [`super::media::SpanPick`] applied.
    seen_pick: u64,
    /// The last request re-applied from the knockout history.
    seen_apply: u64,
    history: History<KnockoutSettings>,
    /// Columns of the toggle grid.
    columns: usize,
    /// The layer a drag on the axis started at.
    axis_from: Option<usize>,
    /// Result A of the comparison.
    pinned: Option<KnockoutOutcome>,
    prompt: Option<PromptKey>,
}

impl Default for KnockoutPanel {
    fn default() -> Self {
        Self {
            settings: None,
            seen_pick: 0,
            seen_apply: 0,
            history: History::new(HISTORY_LEN),
            columns: 3,
            axis_from: None,
            pinned: None,
            prompt: None,
        }
    }
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
        let key = (model.dir.clone(), inputs.path.clone(), inputs.ids.len());
        if self.prompt.as_ref() != Some(&key) {
            self.prompt = Some(key);
            self.history.clear();
            self.pinned = None;
        }
        let layers = model.layers;
        let Some(mut sel) = reconcile(self.settings.as_ref(), &inputs.flow_groups, layers) else {
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
            sel.apply_pick(p, layers);
        }
        if let Some((serial, spec)) = view.apply.as_ref().filter(|(s, _)| *s > self.seen_apply) {
            self.seen_apply = *serial;
            if let Some(s) = KnockoutSettings::from_spec(spec, layers) {
                sel = s;
            }
        }
        let (undo, redo) = self.shortcuts(ui);
        let timeline = view
            .time_selection
            .map(|r| r.selector(super::media::Modality::Both));
        let extras: Vec<Selector> = [sel.source.clone(), sel.target.clone()]
            .into_iter()
            .chain(timeline)
            .collect();
        let offered = choices(&offered_groups(&inputs.flow_groups), &extras);
        let mut run = false;
        let (mut undo_clicked, mut redo_clicked) = (false, false);
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
            run = ui
                .button("Knock out")
                .on_hover_text(
                    "The target's queries may not attend to the source's keys in these layers",
                )
                .clicked();
            ui.separator();
            undo_clicked = ui
                .add_enabled(self.history.can_undo(), egui::Button::new("Undo"))
                .on_hover_text("Undo the last change of these settings (Ctrl+Z)")
                .clicked();
            redo_clicked = ui
                .add_enabled(self.history.can_redo(), egui::Button::new("Redo"))
                .on_hover_text("Redo what was undone (Ctrl+Shift+Z)")
                .clicked();
        });
        self.layer_axis(ui, &mut sel, layers);
        self.toggle_grid(ui, &mut sel, &inputs.flow_groups, layers);
        extra_blocks(ui, &mut sel);

        // A drag (on the axis or a number field) is one undo step, recorded when the pointer lets go.
        let gesture = ui.input(|i| i.pointer.any_down());
        if undo || undo_clicked {
            if let Some(prev) = self.history.undo(&sel) {
                sel = prev;
            }
        } else if redo || redo_clicked {
            if let Some(next) = self.history.redo(&sel) {
                sel = next;
            }
        } else {
            self.history.observe(&sel, gesture);
        }
        let mut request = sel.request();
        view.tracked.apply(&mut request);
        if run || sel != before {
            actions.push(Action::Knockout(request.clone()));
        }
        self.settings = Some(sel);

        let Some(result) = &view.knockout else {
            ui.weak("Change a control (or press Knock out) to see the answer's probability move.");
            return;
        };
        let s = summary(result, Some(&request));
        ui.horizontal_wrapped(|ui| {
            ui.label(&s.baseline)
                .on_hover_text(format!("{:.7}", result.result.base_prob));
            ui.label(RichText::new(&s.knocked).strong())
                .on_hover_text(format!("{:.7}", result.result.prob));
            ui.label(RichText::new(&s.change).strong().color(s.color));
            ui.monospace(&s.top1);
            ui.separator();
            if ui
                .button("Pin as A")
                .on_hover_text("Keep this result as A and compare the next ones (B) with it")
                .clicked()
            {
                self.pinned = Some(result.clone());
            }
            if self.pinned.is_some() && ui.button("Unpin").clicked() {
                self.pinned = None;
            }
        });
        answers_readout(ui, &result.answers);
        if s.stale {
            ui.weak(format!("{} · updating…", s.request));
        } else {
            ui.weak(&s.request);
        }
        if let Some(a) = &self.pinned {
            comparison_table(ui, &compare(a, result));
        }
    }
}

/// The blocks added on the heatmap (Shift+click or Shift+drag), each removable.
fn extra_blocks(ui: &mut egui::Ui, sel: &mut KnockoutSettings) {
    if sel.extra.is_empty() {
        return;
    }
    let mut remove = None;
    ui.horizontal_wrapped(|ui| {
        ui.label("also");
        for (i, b) in sel.extra.iter().enumerate() {
            let text = format!("{} in layers {}..{}", b.source, b.start, b.end);
            if ui
                .button(format!("{text} (remove)"))
                .on_hover_text("Remove this block")
                .clicked()
            {
                remove = Some(i);
            }
        }
        if ui.small_button("Clear blocks").clicked() {
            remove = Some(usize::MAX);
        }
    });
    match remove {
        Some(usize::MAX) => sel.extra.clear(),
        Some(i) => {
            sel.extra.remove(i);
        }
        None => {}
    }
}

/// One line per scored text: the typed answer's log-probability before → after, and each option's
/// probability before → after, the preferred option in bold (and a note when the knockout flips it).
pub fn answer_lines(a: &crate::session::AnswerScores) -> Vec<(String, bool)> {
    let mut v = Vec::new();
    if let Some(s) = &a.answer {
        v.push((
            format!(
                "answer {:?}: log p {:.3} -> {:.3} (×{:.3})",
                s.text,
                s.base_logprob,
                s.logprob,
                (s.logprob - s.base_logprob).exp()
            ),
            false,
        ));
    }
    let (choice, base) = (a.choice(), a.base_choice());
    for (i, o) in a.options.iter().enumerate() {
        v.push((
            format!(
                "({}) {} -> {}",
                o.text,
                format_percent(o.base_prob()),
                format_percent(o.prob())
            ),
            choice == Some(i),
        ));
    }
    if let (Some(c), Some(b)) = (choice, base) {
        if c != b {
            v.push((
                format!(
                    "the knockout flips the choice: ({}) -> ({})",
                    a.options[b].text, a.options[c].text
                ),
                true,
            ));
        }
    }
    v
}

fn answers_readout(ui: &mut egui::Ui, a: &crate::session::AnswerScores) {
    let lines = answer_lines(a);
    if lines.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        for (text, strong) in lines {
            let t = RichText::new(text);
            ui.label(if strong { t.strong() } else { t });
            ui.separator();
        }
    });
}

impl KnockoutPanel {
    /// Ctrl+Z / Ctrl+Shift+Z, unless a text field has the keyboard (it undoes its own typing then).
    fn shortcuts(&self, ui: &egui::Ui) -> (bool, bool) {
        let ctx = ui.ctx();
        let typing = ctx
            .memory(|m| m.focused())
            .is_some_and(|id| egui::text_edit::TextEditState::load(ctx, id).is_some());
        if typing {
            return (false, false);
        }
        ctx.input_mut(|i| {
            let redo = i.consume_shortcut(&REDO_SHORTCUT);
            let undo = !redo && i.consume_shortcut(&UNDO_SHORTCUT);
            (undo, redo)
        })
    }

    /// A horizontal bar of the model's layers; a drag selects the layers it covers, a click one layer.
    fn layer_axis(&mut self, ui: &mut egui::Ui, sel: &mut KnockoutSettings, layers: usize) {
        ui.horizontal(|ui| {
            ui.label("layers");
            let width = (ui.available_width() - 8.0).clamp(120.0, 720.0);
            let (rect, resp) =
                ui.allocate_exact_size(Vec2::new(width, 30.0), Sense::click_and_drag());
            resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Slider, true, AXIS_LABEL));
            let axis = LayerAxis {
                left: rect.left(),
                width: rect.width(),
                layers,
            };
            if resp.drag_started() {
                let origin = ui.input(|i| i.pointer.press_origin());
                self.axis_from = origin
                    .or(resp.interact_pointer_pos())
                    .map(|p| axis.layer_at(p.x));
            }
            if resp.dragged() {
                if let (Some(a), Some(p)) = (self.axis_from, resp.interact_pointer_pos()) {
                    (sel.start, sel.end) = drag_range(a, axis.layer_at(p.x));
                }
            }
            if resp.drag_stopped() {
                self.axis_from = None;
            }
            if resp.clicked() {
                if let Some(p) = resp.interact_pointer_pos() {
                    let l = axis.layer_at(p.x);
                    (sel.start, sel.end) = (l, l + 1);
                }
            }

            let painter = ui.painter_at(rect);
            let visuals = ui.visuals();
            let bar = Rect::from_min_max(rect.min, Pos2::new(rect.right(), rect.top() + 16.0));
            painter.rect_filled(bar, CornerRadius::same(2), visuals.extreme_bg_color);
            let chosen = Rect::from_min_max(
                Pos2::new(axis.x(sel.start), bar.top()),
                Pos2::new(axis.x(sel.end), bar.bottom()),
            );
            let accent = visuals.selection.bg_fill;
            painter.rect_filled(chosen, CornerRadius::same(2), accent);
            let weak = visuals.weak_text_color();
            for l in 1..layers {
                let x = axis.x(l);
                painter.line_segment(
                    [
                        Pos2::new(x, bar.top() + 3.0),
                        Pos2::new(x, bar.bottom() - 3.0),
                    ],
                    Stroke::new(1.0, weak.gamma_multiply(0.5)),
                );
            }
            let font = egui::FontId::proportional(10.0);
            let step = axis.tick_step(22.0);
            for l in (0..=layers).step_by(step) {
                let align = if l == 0 {
                    egui::Align2::LEFT_TOP
                } else if l == layers {
                    egui::Align2::RIGHT_TOP
                } else {
                    egui::Align2::CENTER_TOP
                };
                painter.text(
                    Pos2::new(axis.x(l), bar.bottom() + 1.0),
                    align,
                    l.to_string(),
                    font.clone(),
                    weak,
                );
            }
            if let Some(p) = resp.hover_pos() {
                let l = axis.layer_at(p.x);
                resp.on_hover_text_at_pointer(format!(
                    "layer {l} · drag to select a range of layers, click for one"
                ));
            }
        });
    }

    /// Rows of modalities × columns of layer blocks; an "on" cell hides that modality's keys from the
    /// target in those layers, together with the main block.
    fn toggle_grid(
        &mut self,
        ui: &mut egui::Ui,
        sel: &mut KnockoutSettings,
        groups: &[(String, usize)],
        layers: usize,
    ) {
        let rows = toggle_rows(groups);
        if rows.is_empty() {
            return;
        }
        ui.horizontal(|ui| {
            ui.label(format!(
                "Also hide from {}, per block of layers:",
                sel.target
            ));
            let name = ui.label("columns");
            ui.add(egui::DragValue::new(&mut self.columns).range(1..=layers.max(1)))
                .labelled_by(name.id)
                .on_hover_text("How many equal blocks of layers the grid has");
            if !sel.toggles.is_empty() && ui.small_button("Clear toggles").clicked() {
                sel.toggles.clear();
            }
        });
        let blocks = layer_blocks(layers, self.columns);
        egui::Grid::new("knockout-toggles")
            .spacing(Vec2::new(4.0, 3.0))
            .show(ui, |ui| {
                ui.label("");
                for (a, b) in &blocks {
                    ui.weak(format!("{a}..{b}"));
                }
                ui.end_row();
                for row in &rows {
                    let color = crate::export::palette::group_rgb(row)
                        .map_or(Color32::GRAY, |[r, g, b]| Color32::from_rgb(r, g, b));
                    row_name(ui, row, color);
                    for &block in &blocks {
                        let state = cell_state(sel.toggles.get(row), block);
                        if toggle_cell_widget(ui, row, block, state, color).clicked() {
                            toggle_cell(&mut sel.toggles, row, block);
                        }
                    }
                    ui.end_row();
                }
            });
    }
}

/// A row's name, painted rather than a label: the cells carry it for screen readers (`"audio layers
/// 0..12"`), and a second node named `audio` would make the source combo's item ambiguous to find.
fn row_name(ui: &mut egui::Ui, row: &str, color: Color32) {
    let font = egui::TextStyle::Body.resolve(ui.style());
    let galley = ui.painter().layout_no_wrap(row.to_string(), font, color);
    let (rect, _) = ui.allocate_exact_size(galley.size(), Sense::hover());
    ui.painter().galley(rect.min, galley, color);
}

/// One grid cell: filled when on, half-filled when some of its layers are on.
fn toggle_cell_widget(
    ui: &mut egui::Ui,
    row: &str,
    (a, b): (usize, usize),
    state: CellState,
    color: Color32,
) -> egui::Response {
    let label = format!("{row} layers {a}..{b}");
    let (rect, resp) = ui.allocate_exact_size(Vec2::new(36.0, 16.0), Sense::click());
    resp.widget_info(|| {
        egui::WidgetInfo::selected(egui::Role::CheckBox, true, state == CellState::On, &label)
    });
    let painter = ui.painter_at(rect.expand(1.0));
    let visuals = ui.visuals();
    painter.rect_filled(rect, CornerRadius::same(2), visuals.extreme_bg_color);
    let fill = match state {
        CellState::On => Some(rect),
        CellState::Partly => Some(Rect::from_min_max(
            rect.min,
            Pos2::new(rect.center().x, rect.bottom()),
        )),
        CellState::Off => None,
    };
    if let Some(r) = fill {
        painter.rect_filled(r, CornerRadius::same(2), color);
    }
    let stroke = if resp.hovered() {
        Stroke::new(1.5, visuals.strong_text_color())
    } else {
        Stroke::new(1.0, visuals.weak_text_color().gamma_multiply(0.6))
    };
    painter.rect_stroke(
        rect,
        CornerRadius::same(2),
        stroke,
        egui::StrokeKind::Inside,
    );
    resp.on_hover_text(match state {
        CellState::On => format!("{row} hidden in layers {a}..{b}: click to show it again"),
        CellState::Partly => format!("{row} hidden in some of layers {a}..{b}: click for all"),
        CellState::Off => format!("Click to hide {row} from the target in layers {a}..{b} too"),
    })
}

/// A (pinned) and B (live) in columns.
fn comparison_table(ui: &mut egui::Ui, c: &Comparison) {
    egui::Grid::new("knockout-compare")
        .striped(true)
        .spacing(Vec2::new(16.0, 2.0))
        .show(ui, |ui| {
            ui.label("");
            ui.strong("A (pinned)");
            ui.strong("B (live)");
            ui.end_row();
            for (name, a, b) in &c.rows {
                ui.weak(name.as_str());
                ui.label(a.as_str());
                ui.label(b.as_str());
                ui.end_row();
            }
        });
    ui.label(RichText::new(&c.difference).strong().color(c.color));
    if let Some(w) = &c.warning {
        ui.label(RichText::new(w).color(ui.visuals().warn_fg_color));
    }
}

/// `label [value ▾]`, the label in front (read left to right: "source audio target last") and naming the
/// combo for screen readers and tests.
fn group_combo(ui: &mut egui::Ui, label: &str, value: &mut Selector, offered: &[Selector]) {
    let name = ui.label(label);
    egui::ComboBox::from_id_salt(("knockout", label))
        .selected_text(value.to_string())
        .width(110.0)
        .show_ui(ui, |ui| {
            for g in offered {
                ui.selectable_value(value, g.clone(), g.to_string());
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

    fn sel(s: &str) -> Selector {
        s.parse().expect("selector")
    }

    fn req(s: &str, t: &str, a: usize, b: usize) -> KnockoutSpec {
        KnockoutSpec::single(sel(s), sel(t), a, b)
    }

    fn set(s: &str, t: &str, a: usize, b: usize) -> KnockoutSettings {
        KnockoutSettings::new(sel(s), sel(t), a, b)
    }

    fn block(s: &str, t: &str, a: usize, b: usize) -> KnockoutBlock {
        KnockoutBlock {
            source: sel(s),
            target: sel(t),
            start: a,
            end: b,
            heads: None,
        }
    }

    fn layers(ls: &[usize]) -> BTreeSet<usize> {
        ls.iter().copied().collect()
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
        assert_eq!(
            toggle_rows(&g),
            vec!["audio", "video", "question", "system"]
        );
    }

    #[test]
    fn the_first_selection_is_media_into_last_over_every_layer() {
        let g = groups(&[("video", 6), ("question", 3), ("last", 1), ("audio", 0)]);
        assert_eq!(reconcile(None, &g, 36), Some(set("video", "last", 0, 36)));
        // A kept selection survives, clamped to a smaller model; a vanished group resets it.
        let kept = reconcile(Some(&set("question", "last", 30, 36)), &g, 3);
        assert_eq!(kept, Some(set("question", "last", 2, 3)));
        let reset = reconcile(Some(&set("audio", "last", 0, 2)), &g, 3);
        assert_eq!(reset, Some(set("video", "last", 0, 3)));
        assert_eq!(reconcile(None, &g, 0), None);
        assert_eq!(reconcile(None, &[], 3), None);
    }

    #[test]
    fn reconciling_drops_toggles_of_absent_rows_and_layers() {
        let g = groups(&[("video", 6), ("question", 3), ("last", 1)]);
        let mut s = set("video", "last", 0, 3);
        s.toggles.insert("video".into(), layers(&[1, 2, 7]));
        s.toggles.insert("audio".into(), layers(&[0]));
        s.toggles.insert("question".into(), layers(&[5]));
        let r = reconcile(Some(&s), &g, 3).expect("kept");
        assert_eq!(
            r.toggles,
            BTreeMap::from([("video".to_string(), layers(&[1, 2]))])
        );
    }

    #[test]
    fn selectors_are_kept_and_offered() {
        let g = groups(&[("video", 6), ("audio", 4), ("last", 1)]);
        let offered = offered_groups(&g);
        for s in ["@1-3", "audio@0.5-2", "item:0", "pos:4-9", "pos:7"] {
            assert!(still_offered(&sel(s), &offered), "{s}");
        }
        assert!(still_offered(&sel("audio"), &offered));
        assert!(!still_offered(&sel("image"), &offered));
        assert!(!still_offered(&sel("audio,video"), &offered));
        // A time selection survives reconciling; a vanished group still resets.
        let kept = reconcile(Some(&set("@1-3", "last", 0, 2)), &g, 3);
        assert_eq!(kept, Some(set("@1-3", "last", 0, 2)));
        let kept = reconcile(Some(&set("audio", "pos:3-5", 0, 2)), &g, 3);
        assert_eq!(kept, Some(set("audio", "pos:3-5", 0, 2)));
        let extras: Vec<Selector> = ["@1-3", "last", "@1-3", "video@0-2", "pos:2-4"]
            .into_iter()
            .map(sel)
            .collect();
        let shown: Vec<String> = choices(&offered, &extras)
            .iter()
            .map(Selector::to_string)
            .collect();
        assert_eq!(
            shown,
            vec!["video", "audio", "last", "@1-3", "video@0-2", "pos:2-4"]
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
    fn the_layer_axis_maps_drags_to_half_open_ranges() {
        let axis = LayerAxis {
            left: 100.0,
            width: 360.0,
            layers: 36,
        };
        assert_eq!(axis.layer_at(100.0), 0);
        assert_eq!(axis.layer_at(109.9), 0);
        assert_eq!(axis.layer_at(110.0), 1);
        assert_eq!(axis.layer_at(459.0), 35);
        // Past either end: the end layer.
        assert_eq!(axis.layer_at(20.0), 0);
        assert_eq!(axis.layer_at(900.0), 35);
        assert_eq!(axis.x(0), 100.0);
        assert_eq!(axis.x(36), 460.0);
        for l in 0..36 {
            assert_eq!(axis.layer_at(axis.x(l) + 5.0), l);
        }
        // Dragging either way covers both end layers.
        assert_eq!(drag_range(3, 8), (3, 9));
        assert_eq!(drag_range(8, 3), (3, 9));
        assert_eq!(drag_range(4, 4), (4, 5));
        // Labels at least 22 points apart: cells of 10 points → every 5th layer.
        assert_eq!(axis.tick_step(22.0), 5);
        let few = LayerAxis { layers: 3, ..axis };
        assert_eq!(few.tick_step(22.0), 1);
        let empty = LayerAxis { layers: 0, ..axis };
        assert_eq!(empty.layer_at(150.0), 0);
    }

    #[test]
    fn layer_blocks_cover_every_layer_once() {
        assert_eq!(layer_blocks(36, 3), vec![(0, 12), (12, 24), (24, 36)]);
        assert_eq!(layer_blocks(3, 3), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(layer_blocks(10, 3), vec![(0, 3), (3, 6), (6, 10)]);
        // More columns than layers: one per layer; none: one block.
        assert_eq!(layer_blocks(2, 5), vec![(0, 1), (1, 2)]);
        assert_eq!(layer_blocks(4, 0), vec![(0, 4)]);
        assert!(layer_blocks(0, 3).is_empty());
    }

    #[test]
    fn cells_toggle_their_layers_and_become_blocks() {
        let mut t = BTreeMap::new();
        toggle_cell(&mut t, "audio", (0, 12));
        toggle_cell(&mut t, "video", (24, 36));
        assert_eq!(cell_state(t.get("audio"), (0, 12)), CellState::On);
        assert_eq!(cell_state(t.get("audio"), (12, 24)), CellState::Off);
        assert_eq!(cell_state(t.get("image"), (0, 12)), CellState::Off);
        // Another column split: a half-covered cell is partly on; a click turns it fully on.
        assert_eq!(cell_state(t.get("audio"), (9, 18)), CellState::Partly);
        toggle_cell(&mut t, "audio", (9, 18));
        assert_eq!(t["audio"], (0..18).collect());
        // Adjacent cells of a row make one block; rows in grid order whatever the insertion order.
        toggle_cell(&mut t, "audio", (18, 20));
        assert_eq!(
            toggle_blocks(&t, &sel("last")),
            vec![
                block("audio", "last", 0, 20),
                block("video", "last", 24, 36)
            ]
        );
        // Clicking a full cell clears it; an empty row disappears (equal grids compare equal).
        toggle_cell(&mut t, "video", (24, 36));
        assert!(!t.contains_key("video"));
        assert_eq!(
            runs(&layers(&[0, 1, 2, 5, 7, 8])),
            vec![(0, 3), (5, 6), (7, 9)]
        );
        assert!(runs(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn settings_ask_for_the_main_block_plus_the_toggles_into_the_target() {
        let mut s = set("@1-3", "last", 0, 2);
        assert_eq!(s.request(), req("@1-3", "last", 0, 2));
        toggle_cell(&mut s.toggles, "video", (2, 3));
        toggle_cell(&mut s.toggles, "question", (0, 1));
        let r = s.request();
        assert_eq!(
            r.blocks[1..],
            [
                block("video", "last", 2, 3),
                block("question", "last", 0, 1)
            ]
        );
        assert_eq!(r.blocks.len(), 3);
        assert_eq!((r.token, r.control_seed), (None, None));
        assert_eq!(
            request_label(&r),
            "@1-3 -> last, layers 0..2 + video 2..3 + question 0..1"
        );
        // The toggles follow the target.
        s.target = sel("question");
        assert!(s.request().blocks[1..]
            .iter()
            .all(|b| b.target == sel("question")));
        let mut other = req("audio", "last", 0, 1);
        other.blocks.push(block("video", "question", 1, 2));
        assert_eq!(
            request_label(&other),
            "audio -> last, layers 0..1 + video -> question 1..2"
        );
    }

    #[test]
    fn history_records_settled_changes_and_drags_as_one_step() {
        let mut h = History::new(3);
        assert!(!h.can_undo() && !h.can_redo());
        h.observe(&0, false);
        assert!(!h.can_undo(), "the first value is no step");
        // A drag through 1, 2, 3 with the pointer held, released at 3: one step.
        for v in [1, 2, 3] {
            h.observe(&v, true);
        }
        assert!(!h.can_undo());
        h.observe(&3, false);
        h.observe(&3, false);
        assert!(h.can_undo());
        h.observe(&4, false);
        assert_eq!(h.undo(&4), Some(3));
        assert_eq!(h.undo(&3), Some(0));
        assert_eq!(h.undo(&0), None);
        assert_eq!(h.redo(&0), Some(3));
        assert_eq!(h.redo(&3), Some(4));
        assert_eq!(h.redo(&4), None);
        // Undo, then a new change: nothing to redo any more.
        assert_eq!(h.undo(&4), Some(3));
        h.observe(&9, false);
        assert!(!h.can_redo());
        assert_eq!(h.undo(&9), Some(3));
        // An unsettled change (pointer still held) is recorded before undoing it.
        let mut h = History::new(3);
        h.observe(&0, false);
        h.observe(&5, true);
        assert_eq!(h.undo(&5), Some(0));
        assert_eq!(h.redo(&0), Some(5));
        h.clear();
        assert!(!h.can_undo() && !h.can_redo());
    }

    #[test]
    fn history_is_bounded() {
        let mut h = History::new(3);
        for v in 0..10 {
            h.observe(&v, false);
        }
        let mut cur = 9;
        let mut seen = Vec::new();
        while let Some(prev) = h.undo(&cur) {
            seen.push(prev);
            cur = prev;
        }
        assert_eq!(seen, vec![8, 7, 6]);
        // Settings work as values: toggles are part of a step.
        let mut h = History::new(HISTORY_LEN);
        let a = set("audio", "last", 0, 3);
        let mut b = a.clone();
        toggle_cell(&mut b.toggles, "video", (0, 1));
        h.observe(&a, false);
        h.observe(&b, false);
        assert_eq!(h.undo(&b), Some(a));
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

    fn view(r: KnockoutSpec, prob: f32) -> KnockoutOutcome {
        KnockoutOutcome {
            spec: r,
            result: crate::flow::KnockoutResult {
                prob,
                base_prob: 0.5,
                rel_change: crate::flow::knockout::rel_change(prob, 0.5),
                top1_id: 7,
                token_id: 3,
            },
            top1: (7, String::new()),
            token: (3, "Hi".into()),
            seconds: 0.0,
            control: None,
            answers: Default::default(),
        }
    }

    #[test]
    fn summary_names_the_request_and_marks_stale_results() {
        let v = view(req("audio", "last", 0, 3), 0.25);
        let s = summary(&v, Some(&req("audio", "last", 0, 3)));
        assert_eq!(s.baseline, "baseline p(\"Hi\") 50.0 %");
        assert_eq!(s.knocked, "after knockout 25.0 %");
        assert_eq!(s.change, "change \u{2212}50.0 %");
        assert_eq!(s.top1, "top-1 after id 7");
        assert_eq!(s.request, "audio -> last, layers 0..3");
        assert!(!s.stale);
        assert!(summary(&v, Some(&req("audio", "last", 0, 2))).stale);
        let mut with_toggle = req("audio", "last", 0, 3);
        with_toggle.blocks.push(block("video", "last", 0, 1));
        assert!(summary(&v, Some(&with_toggle)).stale);
    }

    #[test]
    fn a_pinned_result_compares_with_the_live_one() {
        let mut live = req("audio", "last", 0, 2);
        live.blocks.push(block("video", "last", 2, 3));
        let a = view(req("audio", "last", 0, 3), 0.25);
        let b = KnockoutOutcome {
            top1: (3, "Hi".into()),
            ..view(live, 0.4)
        };
        let c = compare(&a, &b);
        assert_eq!(
            c.rows,
            vec![
                (
                    "knockout".to_string(),
                    "audio -> last, layers 0..3".to_string(),
                    "audio -> last, layers 0..2 + video 2..3".to_string()
                ),
                (
                    "p(\"Hi\")".to_string(),
                    "25.0 %".to_string(),
                    "40.0 %".to_string()
                ),
                (
                    "change".to_string(),
                    "\u{2212}50.0 %".to_string(),
                    "\u{2212}20.0 %".to_string()
                ),
                (
                    "top-1 after".to_string(),
                    "id 7".to_string(),
                    "\"Hi\"".to_string()
                ),
            ]
        );
        assert_eq!(c.difference, "B \u{2212} A: +15.0 points (B/A \u{d7}1.60)");
        assert_eq!(c.color, change_color(1.0));
        assert_eq!(c.warning, None);
        // The other way round: a drop; A at zero has no ratio.
        let back = compare(&b, &a);
        assert_eq!(
            back.difference,
            "B \u{2212} A: \u{2212}15.0 points (B/A \u{d7}0.62)"
        );
        let zero = compare(&view(req("audio", "last", 0, 3), 0.0), &a);
        assert_eq!(zero.difference, "B \u{2212} A: +25.0 points");
        // Another baseline (another prompt or model) is flagged.
        let mut other = a.clone();
        other.result.base_prob = 0.3;
        assert!(compare(&other, &b)
            .warning
            .is_some_and(|w| w.contains("do not compare")));
    }
}
