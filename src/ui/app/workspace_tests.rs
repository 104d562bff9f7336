//! The workspace in the rendered app on the bundled demo: the default layout at a laptop's 1366×768, a
//! layout moved by dragging a tab that comes back from eframe's storage, Reset layout (button and
//! shortcut), and `focus_panel` opening a tab hidden behind another. Renders the `workspace.png`
//! screenshot (written where `AVFLOW_SCREENSHOTS` says, see [`super::test_support::save_screenshot`]).

use std::time::Duration;

use egui_kittest::kittest::{NodeT, Queryable};

use crate::ui::workspace::{MemoryStorage, RESET_LABEL, RESET_SHORTCUT};

use super::test_support::{demo_app, demo_options, drag, save_screenshot, step_until};
use super::{AvflowApp, HEATMAP_SHORTCUT};

type Harness<'a> = egui_kittest::Harness<'a, AvflowApp>;

/// A laptop's screen.
const LAPTOP: egui::Vec2 = egui::vec2(1366.0, 768.0);

/// The least a pane needs to be worth showing: a row of controls across, a few lines down.
const USABLE: egui::Vec2 = egui::vec2(300.0, 64.0);

fn names() -> Vec<&'static str> {
    crate::ui::panel::registry()
        .iter()
        .map(|p| p.name())
        .collect()
}

/// Opens `panel`'s pane the way the app's shortcuts do, and returns where it was drawn.
fn shown_rect(harness: &mut Harness<'_>, panel: &'static str) -> egui::Rect {
    harness.state_mut().focus_panel = Some(panel);
    harness.run_steps(2);
    assert!(
        harness.state().workspace.is_shown(panel),
        "{panel} not shown"
    );
    harness
        .state()
        .workspace
        .pane_rect(panel)
        .unwrap_or_else(|| panic!("{panel} has no rect"))
}

/// Whether the tab button called `panel` says it is the open one (egui reports a selected widget as
/// toggled on).
fn tab_selected(harness: &Harness<'_>, panel: &str) -> bool {
    harness.get_by_label(panel).accesskit_node().toggled() == Some(egui::accesskit::Toggled::True)
}

/// The default layout at 1366×768: every pane inside the window and of a usable size, the heatmap the
/// largest, the panes where the layout puts them; Ctrl+Shift+R undoes a change of tab.
#[test]
fn the_default_layout_fits_a_laptop_screen() {
    let mut harness = super::test_support::demo_app(LAPTOP);
    assert!(harness.state().workspace.is_default());
    let screen = harness.ctx.content_rect();
    let mut rects = Vec::new();
    for name in names() {
        let r = shown_rect(&mut harness, name);
        eprintln!("{name}: {:.0}×{:.0} at {:?}", r.width(), r.height(), r.min);
        assert!(screen.contains_rect(r), "{name} {r:?} outside {screen:?}");
        assert!(
            r.width() >= USABLE.x && r.height() >= USABLE.y,
            "{name} is {:?}, less than {USABLE:?}",
            r.size()
        );
        rects.push((name, r));
    }
    let rect = |n: &str| rects.iter().find(|(m, _)| *m == n).expect("pane").1;
    let heat = rect("Heatmap");
    for (name, r) in &rects {
        if *name != "Heatmap" {
            assert!(
                heat.area() > r.area(),
                "{name} ({:?}) is not smaller than the heatmap ({:?})",
                r.size(),
                heat.size()
            );
        }
    }
    // Media above Tokens left of the heatmap; the readout to its right; Sweep and Drop in one place below.
    let (media, tokens) = (rect("Media"), rect("Tokens"));
    assert!(media.bottom() <= tokens.top());
    assert!(media.right() <= heat.left() && tokens.right() <= heat.left());
    let (answer, knockout) = (rect("Answer"), rect("Knockout"));
    assert!(answer.left() >= heat.right() && knockout.left() >= heat.right());
    assert!(answer.bottom() <= knockout.top());
    assert_eq!(
        rect("Sweep"),
        rect("Drop"),
        "Sweep and Drop are tabs of one pane"
    );
    assert!(rect("Sweep").top() >= heat.bottom());
    assert!((rect("Sweep").left() - heat.left()).abs() < 1.0);

    // Opening Drop changed which tab is open: the shortcut puts everything back.
    assert!(!harness.state().workspace.is_default());
    harness.key_press_modifiers(RESET_SHORTCUT.modifiers, RESET_SHORTCUT.logical_key);
    harness.run_steps(2);
    assert!(harness.state().workspace.is_default());
    assert!(tab_selected(&harness, "Sweep") && !tab_selected(&harness, "Drop"));

    // The picture with the heatmap filled (Ctrl+Shift+H), beside the answer and the knockout.
    harness.key_press_modifiers(HEATMAP_SHORTCUT.modifiers, HEATMAP_SHORTCUT.logical_key);
    let computed = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy && !app.view().heatmap.results.is_empty()
    });
    assert!(computed, "no heatmap: {:?}", harness.state().status());
    harness.state_mut().freeze_timings();
    harness.remove_cursor();
    harness.run_steps(3);
    assert!(harness.state().workspace.is_default());
    save_screenshot(&mut harness, "workspace.png");
}

/// Drop's tab dragged onto the knockout pane: the layout is saved with the app's settings and the next
/// start opens it as it was left; Reset layout brings the default back.
#[test]
fn a_dragged_layout_is_saved_restored_and_reset() {
    let mut harness = demo_app(LAPTOP);
    let heat = shown_rect(&mut harness, "Heatmap");
    let knockout = shown_rect(&mut harness, "Knockout");
    let tab = harness.get_by_label("Drop").rect();
    drag(&mut harness, tab.center(), knockout.center());
    harness.run_steps(2);
    let moved = harness.state().workspace.clone();
    assert!(!moved.is_default(), "the drag moved nothing");
    let dropped = shown_rect(&mut harness, "Drop");
    assert!(
        dropped.left() >= heat.right(),
        "Drop {dropped:?} is not in the readout column"
    );
    assert!(
        !harness.state().workspace.is_shown("Knockout"),
        "Drop did not join Knockout's tabs"
    );
    let layout = harness.state().workspace.clone();

    let mut storage = MemoryStorage::default();
    eframe::App::save(harness.state_mut(), &mut storage);
    // The first app (and its worker) ends before the next starts, as across a restart.
    drop(harness);
    let opts = demo_options();
    let mut again = egui_kittest::Harness::builder()
        .with_size(LAPTOP)
        .allow_missing_glyphs()
        .build_eframe(|cc| {
            AvflowApp::with_cache_dir(
                &cc.egui_ctx,
                Some(&storage),
                opts,
                super::test_support::test_cache_dir(),
            )
        });
    again.run_steps(2);
    assert_eq!(again.state().workspace, layout);
    assert!(again.state().workspace.is_shown("Drop"));
    assert!(tab_selected(&again, "Drop") && !tab_selected(&again, "Knockout"));

    again.get_by_label(RESET_LABEL).click();
    again.run_steps(2);
    assert!(again.state().workspace.is_default());
    assert!(tab_selected(&again, "Knockout") && tab_selected(&again, "Sweep"));
}

/// `focus_panel` on a pane behind another tab (Drop behind Sweep) opens that tab: its widgets are drawn
/// inside its pane and can be clicked; the other panes stay open.
#[test]
fn focusing_a_hidden_tab_opens_it() {
    let mut harness = demo_app(LAPTOP);
    let compute = crate::ui::drop::COMPUTE;
    assert!(!harness.state().workspace.is_shown("Drop"));
    assert!(harness.query_by_label(compute).is_none(), "Drop is drawn");
    assert!(tab_selected(&harness, "Sweep") && !tab_selected(&harness, "Drop"));

    harness.state_mut().focus_panel = Some(crate::ui::drop::PANEL_NAME);
    harness.run_steps(2);
    let ws = &harness.state().workspace;
    assert!(ws.is_shown("Drop") && !ws.is_shown("Sweep"));
    for other in ["Media", "Tokens", "Heatmap", "Answer", "Knockout"] {
        assert!(ws.is_shown(other), "{other} closed");
    }
    assert!(tab_selected(&harness, "Drop") && !tab_selected(&harness, "Sweep"));
    let pane = ws.pane_rect("Drop").expect("drawn");
    let button = harness.get_by_label(compute).rect();
    assert!(pane.contains_rect(button), "{button:?} outside {pane:?}");
    assert!(
        harness.query_by_label("Run sweep").is_none(),
        "Sweep still drawn"
    );
}
