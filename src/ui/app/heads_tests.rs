//! The heads view driven on the bundled demo (issue 20: "which heads listen, which look"): Compute heads,
//! the grid against the library's per-head attention mass, a click on a cell knocks its group out of `last`
//! in that head of that layer only, and the shown result equals the library's per-head knockout. Renders
//! the `heads.png` screenshot (written where `AVFLOW_SCREENSHOTS` says).

use std::time::Duration;

use egui_kittest::kittest::Queryable;

use crate::flow::Knockout;
use crate::prompt::Selector;
use crate::ui::heads::{cell_knockout, GRID_LABEL};

use super::test_support::{require_demo, save_screenshot, step_until};

#[test]
fn heads_grid_and_a_click_knocks_out_one_head() {
    let demo = require_demo();
    let mut harness = super::test_support::demo_app(egui::vec2(1100.0, 900.0));
    harness.state_mut().focus_panel = Some("Heads");
    harness.run_steps(2);
    harness.get_by_label("Compute heads").click();
    let done = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy && app.view().heads.per_head.is_some()
    });
    assert!(done, "no heads: {:?}", harness.state().status());
    harness.run_steps(2);
    let per_head = harness
        .state()
        .view()
        .heads
        .per_head
        .clone()
        .expect("heads");

    // The library on the same demo: each head's mass from last, and its mean over heads.
    let mut session = demo.open_session();
    let lib = session
        .attention_with(&Selector::group("last"), true)
        .expect("attention");
    assert_eq!(lib.per_head.as_ref().expect("per head"), per_head.as_ref());
    let (layers, heads) = (per_head.len(), per_head[0].len());
    assert_eq!((layers, heads), (3, 4), "the demo: 3 layers of 4 heads");

    // Click the cell of layer 1, head 2 (audio, the first group).
    let rect = harness.get_by_label(GRID_LABEL).rect();
    let grid_left = rect.left() + 30.0;
    let side = (rect.width() - 30.0) / heads as f32;
    let cell_h = (rect.height() - 18.0) / layers as f32;
    let (l, h) = (1usize, 2usize);
    let at = egui::pos2(
        grid_left + (h as f32 + 0.5) * side,
        rect.top() + cell_h * layers as f32 - (l as f32 + 0.5) * cell_h,
    );
    harness.hover_at(at);
    harness.run_steps(1);
    harness.drag_at(at); // press …
    harness.step();
    harness.drop_at(at); // … and release in place: a click
    harness.run_steps(2);
    let want = cell_knockout("audio", l, h);
    let shown = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy && app.view().knockout.as_ref().is_some_and(|k| k.spec == want)
    });
    assert!(
        shown,
        "no per-head knockout: {:?}",
        harness.state().status()
    );
    let k = harness.state().view().knockout.clone().expect("knockout");
    let trace = &session.traced().expect("traced").trace;
    let ko = Knockout {
        sources: session.select_str("audio").expect("audio"),
        targets: session.select_str("last").expect("last"),
        start: l,
        end: l + 1,
        heads: Some(vec![h]),
    };
    let lib = ko.score(session.decoder(), trace, None).expect("score");
    assert!(
        (k.result.prob - lib.prob).abs() <= 1e-6,
        "{} vs {}",
        k.result.prob,
        lib.prob
    );
    harness.run_steps(3);
    harness.get_by_label_contains("Listening (audio)");
    // Export heads…: one figure, every group's heads side by side, as the command line writes figures.
    harness.get_by_label("Export heads…");
    let dir = tempfile::tempdir().unwrap();
    let plan = crate::ui::figure::figure_plan(
        crate::ui::figure::FigureView::Heads,
        harness.state().view(),
        crate::export::Preset::Single,
    )
    .expect("plan");
    let files = crate::ui::figure::write_plan(plan, &dir.path().join("heads")).expect("write");
    for ext in ["svg", "pdf", "png", "csv"] {
        assert!(
            files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == ext)),
            "{ext}: {files:?}"
        );
    }
    harness.state_mut().freeze_timings();
    harness.remove_cursor();
    harness.run_steps(3);
    save_screenshot(&mut harness, "heads.png");
}
