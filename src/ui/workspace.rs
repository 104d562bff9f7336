//! The workspace: the registered panels as dockable panes (egui_tiles) instead of one long scroll, so the
//! heatmap, the knockout readout and the token strip share the screen at a laptop's height.
//!
//! A pane is one [`Panel`] by name; the panels themselves do not know they are docked. The tree of panes
//! is what the user arranges (drag a tab to move a pane, drag a gap to resize) and what eframe's storage
//! keeps between runs under [`WORKSPACE_KEY`]; a stored tree that does not hold exactly the registry's
//! panes (written by a version with other panels, or damaged) gives way to [`default_tree`]. The app asks
//! for a pane through [`Workspace::focus`] (keyboard shortcuts, a heatmap result), which opens its tab.

use egui_tiles::{
    Behavior, Container, Linear, LinearDir, SimplificationOptions, Tile, TileId, Tiles, Tree,
    UiResponse,
};
use serde::{Deserialize, Serialize};

use super::panel::{Action, Panel, ViewState};

/// Key under which eframe persists the pane tree (beside the app's `Recent`).
pub const WORKSPACE_KEY: &str = "avflow.workspace";

/// Restores the default layout. Chosen to clash with none of the app's other keys: Ctrl+O, Ctrl+Enter, F5,
/// Ctrl+Shift+H (heatmap), Ctrl+Z / Ctrl+Shift+Z (knockout undo/redo) and egui_tiles' Ctrl+Tab.
pub const RESET_SHORTCUT: egui::KeyboardShortcut = egui::KeyboardShortcut::new(
    egui::Modifiers::COMMAND.plus(egui::Modifiers::SHIFT),
    egui::Key::R,
);

/// The label of the top bar's button that restores the default layout.
pub const RESET_LABEL: &str = "Reset layout";

/// One pane: the panel it shows, by [`Panel::name`]. A name rather than an index, so a stored layout
/// still means the same panels when the registry's order changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pane {
    pub panel: String,
}

impl Pane {
    fn new(panel: &str) -> Self {
        Self {
            panel: panel.to_string(),
        }
    }
}

/// Groups of tabs with their share of a column, top to bottom.
type Column = &'static [(&'static [&'static str], f32)];

/// The default's left column: the two views of the prompt along time and position, Media above Tokens,
/// each tall enough for a clip's frames, waveform and spectrogram or a few hundred token cells.
const PROMPT_COLUMN: Column = &[(&["Media"], 0.5), (&["Tokens"], 0.5)];

/// The default's centre: the heatmap, which gets the most room, over the sweep and drop curves, the heads
/// grid and the comparison as tabs.
const CENTRE_COLUMN: Column = &[
    (&["Heatmap"], 0.62),
    (&["Sweep", "Drop", "Heads", "Compare"], 0.38),
];

/// The default's readout column, right of the heatmap: the answer and the knockout that changes it, with
/// the knockouts tried as a tab beside it.
const READOUT_COLUMN: Column = &[(&["Answer"], 0.32), (&["Knockout", "History"], 0.68)];

/// The columns left to right with their width shares, fitted to a 1366×768 window: every pane keeps a
/// usable size and the heatmap stays the largest.
const COLUMNS: [(Column, f32); 3] = [
    (PROMPT_COLUMN, 0.27),
    (CENTRE_COLUMN, 0.45),
    (READOUT_COLUMN, 0.28),
];

/// The column whose last group (the tabs below the heatmap) takes registered panels the plan does not
/// place.
const SPARE_COLUMN: usize = 1;

/// The default layout for the panels `names` (the registry's). A registered panel the plan above does not
/// place joins the tabs below the heatmap, so the default always holds every pane exactly once; a planned
/// name that is not registered is left out.
pub fn default_tree(names: &[&str]) -> Tree<Pane> {
    let mut tiles = Tiles::default();
    let unplanned: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            !COLUMNS
                .iter()
                .flat_map(|(c, _)| c.iter())
                .any(|(group, _)| group.contains(n))
        })
        .collect();
    let columns: Vec<(TileId, f32)> = COLUMNS
        .iter()
        .enumerate()
        .filter_map(|(i, (plan, share))| {
            let extra: &[&str] = if i == SPARE_COLUMN { &unplanned } else { &[] };
            Some((column(&mut tiles, plan, names, extra)?, *share))
        })
        .collect();
    let root = linear(&mut tiles, LinearDir::Horizontal, &columns);
    Tree::new(egui::Id::unique(WORKSPACE_KEY), root, tiles)
}

/// One column of tab groups; `extra` panes join its last group. `None` when none of its panes is
/// registered.
fn column(tiles: &mut Tiles<Pane>, plan: Column, names: &[&str], extra: &[&str]) -> Option<TileId> {
    let mut groups = Vec::new();
    for (i, (group, share)) in plan.iter().enumerate() {
        let last = i + 1 == plan.len();
        let panes: Vec<TileId> = group
            .iter()
            .copied()
            .filter(|n| names.contains(n))
            .chain(extra.iter().copied().filter(|_| last))
            .map(|n| tiles.insert_pane(Pane::new(n)))
            .collect();
        if !panes.is_empty() {
            groups.push((tiles.insert_tab_tile(panes), *share));
        }
    }
    (!groups.is_empty()).then(|| linear(tiles, LinearDir::Vertical, &groups))
}

fn linear(tiles: &mut Tiles<Pane>, dir: LinearDir, children: &[(TileId, f32)]) -> TileId {
    let mut container = Linear::new(dir, children.iter().map(|c| c.0).collect());
    for &(child, share) in children {
        container.shares.set_share(child, share);
    }
    tiles.insert_container(container)
}

/// Whether `tree` can be shown as it is: a root, every child it names present, no tile reached twice (a
/// cycle would recurse without end in egui_tiles), finite positive shares, and its panes exactly `names`,
/// each once.
pub fn fits_registry(tree: &Tree<Pane>, names: &[&str]) -> bool {
    let Some(root) = tree.root else {
        return false;
    };
    let mut seen = std::collections::HashSet::new();
    let mut panes = Vec::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            return false;
        }
        match tree.tiles.get(id) {
            None => return false,
            Some(Tile::Pane(p)) => panes.push(p.panel.as_str()),
            Some(Tile::Container(c)) => {
                let shares_ok = match c {
                    Container::Linear(l) => l.shares.iter().all(|(_, s)| s.is_finite() && *s > 0.0),
                    Container::Grid(g) => g
                        .col_shares
                        .iter()
                        .chain(&g.row_shares)
                        .all(|s| s.is_finite() && *s > 0.0),
                    Container::Tabs(_) => true,
                };
                if !shares_ok {
                    return false;
                }
                stack.extend(c.children().copied());
            }
        }
    }
    let mut want = names.to_vec();
    want.sort_unstable();
    panes.sort_unstable();
    panes == want
}

/// The panes and their arrangement, plus what the next frame must do for a focused pane.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    tree: Tree<Pane>,
    /// The panel names the tree must hold (the registry's, in its order).
    names: Vec<&'static str>,
    /// A pane just focused: its scroll area starts at the top on the next frame, as the old single scroll
    /// brought a panel's heading into view.
    scroll_to_top: Option<String>,
}

impl Workspace {
    /// The default layout of the panels `names`.
    pub fn new(names: Vec<&'static str>) -> Self {
        Self {
            tree: default_tree(&names),
            names,
            scroll_to_top: None,
        }
    }

    /// The layout stored under [`WORKSPACE_KEY`], or the default when there is none, it does not parse,
    /// or it does not fit the registry (see [`fits_registry`]).
    pub fn load(storage: Option<&dyn eframe::Storage>, names: Vec<&'static str>) -> Self {
        let stored: Option<Tree<Pane>> = storage.and_then(|s| eframe::get_value(s, WORKSPACE_KEY));
        match stored.filter(|t| fits_registry(t, &names)) {
            Some(mut tree) => {
                // Hidden tiles have no way back in the app: show them all.
                let ids: Vec<TileId> = tree.tiles.tile_ids().collect();
                for id in ids {
                    tree.tiles.set_visible(id, true);
                }
                Self {
                    tree,
                    names,
                    scroll_to_top: None,
                }
            }
            None => Self::new(names),
        }
    }

    pub fn save(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, WORKSPACE_KEY, &self.tree);
    }

    /// Back to the default layout.
    pub fn reset(&mut self) {
        self.tree = default_tree(&self.names);
        self.scroll_to_top = None;
    }

    /// Whether the layout is the default one (the shares and active tabs included).
    pub fn is_default(&self) -> bool {
        self.tree == default_tree(&self.names)
    }

    /// Makes the pane of `panel` visible: its tab, and the tabs holding it, become the active ones, and
    /// its content scrolls to the top on the next frame. `false` when no pane shows that panel.
    pub fn focus(&mut self, panel: &str) -> bool {
        let Some(id) = self.pane_id(panel) else {
            return false;
        };
        let mut up = Some(id);
        while let Some(t) = up {
            self.tree.tiles.set_visible(t, true);
            up = self.tree.tiles.parent_of(t);
        }
        self.tree
            .make_active(|_, tile| matches!(tile, Tile::Pane(p) if p.panel == panel));
        self.scroll_to_top = Some(panel.to_string());
        true
    }

    fn pane_id(&self, panel: &str) -> Option<TileId> {
        self.tree.tiles.find_pane(&Pane::new(panel))
    }

    /// Whether the pane of `panel` is shown (not behind another tab).
    pub fn is_shown(&self, panel: &str) -> bool {
        self.pane_id(panel)
            .is_some_and(|id| self.tree.active_tiles().contains(&id))
    }

    /// Where the pane of `panel` was drawn in the last frame (below its tab bar); `None` when it was not
    /// shown.
    pub fn pane_rect(&self, panel: &str) -> Option<egui::Rect> {
        self.tree.tiles.rect(self.pane_id(panel)?)
    }

    /// The tree (tests rearrange it as a drag would).
    #[cfg(test)]
    pub fn tree_mut(&mut self) -> &mut Tree<Pane> {
        &mut self.tree
    }

    /// Draws the panes into `ui`, each panel in a scroll area of its own; requests go into `actions`.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        panels: &mut [Box<dyn Panel>],
        view: &ViewState,
        actions: &mut Vec<Action>,
    ) {
        let mut behavior = PaneBehavior {
            panels,
            view,
            actions,
            scroll_to_top: self.scroll_to_top.take(),
        };
        self.tree.ui(&mut behavior, ui);
    }
}

/// How egui_tiles draws our panes: the panel named by the pane, in a scroll area.
struct PaneBehavior<'a> {
    panels: &'a mut [Box<dyn Panel>],
    view: &'a ViewState,
    actions: &'a mut Vec<Action>,
    scroll_to_top: Option<String>,
}

impl Behavior<Pane> for PaneBehavior<'_> {
    fn pane_ui(&mut self, ui: &mut egui::Ui, _tile_id: TileId, pane: &mut Pane) -> UiResponse {
        let Some(panel) = self.panels.iter_mut().find(|p| p.name() == pane.panel) else {
            // Only a tree that skipped `fits_registry` gets here; say so rather than draw nothing.
            ui.weak(format!("No panel called {:?}.", pane.panel));
            return UiResponse::None;
        };
        // Both directions: a pane narrower than a panel's fixed-width rows scrolls sideways instead of
        // cutting them off. The salt is the panel's name, so the scroll position follows the pane when
        // it moves.
        let mut area = egui::ScrollArea::both()
            .id_salt(("avflow.pane", panel.name()))
            .auto_shrink([false, false]);
        if self.scroll_to_top.as_deref() == Some(panel.name()) {
            area = area.scroll_offset(egui::Vec2::ZERO);
        }
        area.show(ui, |ui| {
            egui::Frame::new()
                .inner_margin(egui::Margin::symmetric(6, 4))
                .show(ui, |ui| panel.ui(ui, self.view, self.actions));
        });
        UiResponse::None
    }

    fn tab_title_for_pane(&mut self, pane: &Pane) -> egui::WidgetText {
        pane.panel.clone().into()
    }

    /// Every pane keeps a tab: its title, and the handle to drag it elsewhere.
    fn simplification_options(&self) -> SimplificationOptions {
        SimplificationOptions {
            all_panes_must_have_tabs: true,
            ..SimplificationOptions::default()
        }
    }

    /// A few points, so the resize handles between panes are easy to catch.
    fn gap_width(&self, _style: &egui::Style) -> f32 {
        4.0
    }

    /// Below this a pane shows nothing useful (a combo box, a line of text).
    fn min_size(&self) -> f32 {
        48.0
    }
}

/// eframe's storage kept in memory, holding what the app's file-backed one holds (RON strings by key).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct MemoryStorage(std::collections::HashMap<String, String>);

#[cfg(test)]
impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[cfg(test)]
mod tests {
    use eframe::Storage as _;

    use super::*;
    use crate::ui::panel::registry;

    fn names() -> Vec<&'static str> {
        registry().iter().map(|p| p.name()).collect()
    }

    fn panes_of(tree: &Tree<Pane>) -> Vec<String> {
        let mut v: Vec<String> = tree
            .tiles
            .tiles()
            .filter_map(|t| match t {
                Tile::Pane(p) => Some(p.panel.clone()),
                Tile::Container(_) => None,
            })
            .collect();
        v.sort();
        v
    }

    /// The tab group holding `panel`, and the tabs in it.
    fn tabs_of(tree: &Tree<Pane>, panel: &str) -> Vec<String> {
        let id = tree.tiles.find_pane(&Pane::new(panel)).expect("pane");
        let parent = tree.tiles.parent_of(id).expect("parent");
        let Some(Container::Tabs(tabs)) = tree.tiles.get_container(parent) else {
            panic!("{panel} is not in a tab group");
        };
        tabs.children
            .iter()
            .map(|c| tree.tiles.get_pane(c).expect("pane").panel.clone())
            .collect()
    }

    #[test]
    fn the_default_holds_every_registered_panel_once_where_planned() {
        let tree = default_tree(&names());
        let mut want: Vec<String> = names().iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(panes_of(&tree), want);
        assert!(fits_registry(&tree, &names()));
        // Sweep, Drop, Heads and Compare share a tab group, Sweep open; the others have one each.
        assert_eq!(
            tabs_of(&tree, "Drop"),
            vec!["Sweep", "Drop", "Heads", "Compare"]
        );
        let ws = Workspace::new(names());
        assert!(ws.is_shown("Sweep") && !ws.is_shown("Drop"));
        for solo in ["Media", "Tokens", "Heatmap", "Answer"] {
            assert_eq!(tabs_of(&tree, solo), vec![solo]);
            assert!(ws.is_shown(solo), "{solo}");
        }
        // The knockouts tried sit as a tab beside the knockout, which is open.
        assert_eq!(tabs_of(&tree, "History"), vec!["Knockout", "History"]);
        assert!(ws.is_shown("Knockout") && !ws.is_shown("History"));
        // Root: three columns; Media above Tokens, the heatmap above Sweep/Drop, Answer above Knockout.
        let root = tree.root.expect("root");
        let Some(Container::Linear(cols)) = tree.tiles.get_container(root) else {
            panic!("root is not a row");
        };
        assert_eq!(cols.dir, LinearDir::Horizontal);
        let column_panes = |col: TileId| -> Vec<String> {
            let Some(Container::Linear(l)) = tree.tiles.get_container(col) else {
                panic!("not a column");
            };
            assert_eq!(l.dir, LinearDir::Vertical);
            l.children
                .iter()
                .map(|&g| {
                    let c = tree.tiles.get_container(g).expect("tabs");
                    tree.tiles
                        .get_pane(&c.children_vec()[0])
                        .expect("pane")
                        .panel
                        .clone()
                })
                .collect()
        };
        assert_eq!(cols.children.len(), 3);
        assert_eq!(column_panes(cols.children[0]), vec!["Media", "Tokens"]);
        assert_eq!(column_panes(cols.children[1]), vec!["Heatmap", "Sweep"]);
        assert_eq!(column_panes(cols.children[2]), vec!["Answer", "Knockout"]);
    }

    #[test]
    fn an_unplanned_panel_joins_the_tabs_below_the_heatmap() {
        let mut with_new = names();
        with_new.push("Attention");
        let tree = default_tree(&with_new);
        assert!(fits_registry(&tree, &with_new));
        assert_eq!(
            tabs_of(&tree, "Attention"),
            vec!["Sweep", "Drop", "Heads", "Compare", "Attention"]
        );
        // A planned panel that is not registered is left out, and its group with it.
        let fewer: Vec<&str> = names().into_iter().filter(|n| *n != "Answer").collect();
        let tree = default_tree(&fewer);
        assert!(fits_registry(&tree, &fewer));
        assert!(tree.tiles.find_pane(&Pane::new("Answer")).is_none());
    }

    #[test]
    fn trees_that_do_not_fit_the_registry_are_refused() {
        let names = names();
        // Written by a version without the drop view.
        let older: Vec<&str> = names.iter().copied().filter(|n| *n != "Drop").collect();
        assert!(!fits_registry(&default_tree(&older), &names));
        // One with a panel this version does not have.
        let mut newer = names.clone();
        newer.push("Attention");
        assert!(!fits_registry(&default_tree(&newer), &names));
        // A pane twice (in two groups).
        let mut twice = default_tree(&names);
        let heat = twice.tiles.find_pane(&Pane::new("Heatmap")).expect("pane");
        let drop_tabs = twice
            .tiles
            .parent_of(twice.tiles.find_pane(&Pane::new("Drop")).expect("pane"))
            .expect("tabs");
        if let Some(Tile::Container(c)) = twice.tiles.get_mut(drop_tabs) {
            c.add_child(heat);
        }
        assert!(!fits_registry(&twice, &names));
        // A cycle: the root inside one of its children.
        let mut cycle = default_tree(&names);
        let root = cycle.root.expect("root");
        if let Some(Tile::Container(c)) = cycle.tiles.get_mut(drop_tabs) {
            c.add_child(root);
        }
        assert!(!fits_registry(&cycle, &names));
        // A child that is not there.
        let mut dangling = default_tree(&names);
        if let Some(Tile::Container(c)) = dangling.tiles.get_mut(drop_tabs) {
            c.add_child(TileId::from_u64(999));
        }
        assert!(!fits_registry(&dangling, &names));
        // A share that would make NaN rectangles.
        let mut nan = default_tree(&names);
        if let Some(Tile::Container(Container::Linear(l))) = nan.tiles.get_mut(root) {
            let first = l.children[0];
            l.shares.set_share(first, f32::NAN);
        }
        assert!(!fits_registry(&nan, &names));
        // No root at all.
        assert!(!fits_registry(
            &Tree::empty(egui::Id::unique("empty")),
            &names
        ));
    }

    /// A rearranged layout (Drop moved beside the knockout, the columns resized, Drop's tab open) comes
    /// back from storage as it was saved; Reset restores the default.
    #[test]
    fn a_layout_survives_storage_and_reset_restores_the_default() {
        let mut ws = Workspace::new(names());
        let tree = ws.tree_mut();
        let knockout_tabs = tree
            .tiles
            .parent_of(tree.tiles.find_pane(&Pane::new("Knockout")).expect("pane"))
            .expect("tabs");
        let drop = tree.tiles.find_pane(&Pane::new("Drop")).expect("pane");
        tree.move_tile_to_container(drop, knockout_tabs, 1, false);
        let root = tree.root.expect("root");
        if let Some(Tile::Container(Container::Linear(l))) = tree.tiles.get_mut(root) {
            let first = l.children[0];
            l.shares.set_share(first, 0.5);
        }
        assert!(ws.focus("Drop"));
        assert!(!ws.is_default());
        assert_eq!(
            tabs_of(&ws.tree, "Drop"),
            vec!["Knockout", "Drop", "History"]
        );

        let mut storage = MemoryStorage::default();
        ws.save(&mut storage);
        let back = Workspace::load(Some(&storage), names());
        assert_eq!(back.tree, ws.tree);
        assert!(back.is_shown("Drop") && !back.is_shown("Knockout"));
        assert_eq!(
            tabs_of(&back.tree, "Drop"),
            vec!["Knockout", "Drop", "History"]
        );

        let mut back = back;
        back.reset();
        assert!(back.is_default());
        assert_eq!(back.tree, default_tree(&names()));
    }

    #[test]
    fn a_stored_layout_that_does_not_fit_or_parse_gives_the_default() {
        let mut storage = MemoryStorage::default();
        assert!(Workspace::load(Some(&storage), names()).is_default());
        assert!(Workspace::load(None, names()).is_default());
        let older: Vec<&'static str> = names().into_iter().filter(|n| *n != "Drop").collect();
        let mut old = Workspace::new(older);
        old.focus("Heatmap");
        old.save(&mut storage);
        assert!(Workspace::load(Some(&storage), names()).is_default());
        storage.set_string(WORKSPACE_KEY, "(not a tree".into());
        assert!(Workspace::load(Some(&storage), names()).is_default());
    }

    #[test]
    fn focus_opens_a_tab_behind_another() {
        let mut ws = Workspace::new(names());
        assert!(!ws.is_shown("Drop"));
        assert!(ws.focus("Drop"));
        assert!(ws.is_shown("Drop") && !ws.is_shown("Sweep"));
        // The other panes stay open.
        for other in ["Media", "Tokens", "Heatmap", "Answer", "Knockout"] {
            assert!(ws.is_shown(other), "{other}");
        }
        assert!(ws.focus("Sweep"));
        assert!(ws.is_shown("Sweep") && !ws.is_shown("Drop"));
        assert!(!ws.focus("No such panel"));
    }
}
