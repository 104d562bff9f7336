//! The heatmap as the instrument, driven by mouse on the bundled demo in the default workspace (1366×768):
//! a click on a band knocks that run out, a dragged rectangle knocks out its positions over its layers,
//! Shift+click adds a block, the context menu makes a span the target. Every number shown is the library's
//! knockout of the same request.

use std::time::Duration;

use egui::{Modifiers, PointerButton, Pos2};
use egui_kittest::kittest::Queryable;

use crate::flow::heatmap::HeatMetric;
use crate::session::{KnockoutSpec, Watch};
use crate::ui::heatmap::{Geometry, TokenWindow, CELLS_LABEL};
use crate::ui::heatmap_pick::{run_at, span_selector};

use super::test_support::{drag, require_demo, step_until};
use super::AvflowApp;

type Harness<'a> = egui_kittest::Harness<'a, AvflowApp>;

/// A click of `button` at `p` with `modifiers` held from before the press to after the release.
fn click_at(harness: &mut Harness<'_>, p: Pos2, button: PointerButton, modifiers: Modifiers) {
    harness.event(egui::Event::ModifiersChanged(modifiers));
    harness.hover_at(p);
    harness.step();
    for pressed in [true, false] {
        harness.event(egui::Event::PointerButton {
            pos: p,
            button,
            pressed,
            modifiers,
        });
        harness.step();
    }
    harness.event(egui::Event::ModifiersChanged(Modifiers::NONE));
    harness.run_steps(2);
}

fn shown(h: &mut Harness<'_>, what: &str, want: impl Fn(&KnockoutSpec) -> bool) -> KnockoutSpec {
    super::test_support::knockout_shown(h, what, want)
}

#[test]
fn click_drag_shift_click_and_menu_on_the_heatmap() {
    let demo = require_demo();
    let mut harness = super::test_support::demo_app(egui::vec2(1366.0, 768.0));
    let mut session = demo.open_session();
    harness.state_mut().focus_panel = Some(crate::ui::heatmap::PANEL_NAME);
    harness
        .state_mut()
        .show_heatmap(HeatMetric::AttentionFromLast);
    let computed = step_until(&mut harness, Duration::from_secs(300), |app| {
        app.view()
            .heatmap
            .result(HeatMetric::AttentionFromLast)
            .is_some()
            && !app.view().busy
    });
    assert!(computed, "{:?}", harness.state().status());
    harness.run_steps(3);
    let map = std::sync::Arc::clone(&harness.state().view().inputs.as_ref().expect("inputs").map);
    let layers = harness.state().view().model.as_ref().expect("model").layers;
    let positions = map.tokens.len();
    let geo = Geometry {
        rect: harness.get_by_label(CELLS_LABEL).rect(),
        layers,
        positions,
        window: TokenWindow::full(positions),
    };
    let at = |layer: usize, pos: usize| {
        let (y0, y1) = geo.row_span(layer);
        Pos2::new(
            (geo.x_of(pos as f64) + geo.x_of(pos as f64 + 1.0)) / 2.0,
            (y0 + y1) / 2.0,
        )
    };
    let check = |session: &mut crate::session::Session, h: &Harness<'_>, spec: &KnockoutSpec| {
        let lib = session.knockout(spec, &Watch::none()).expect("library");
        let shown = h.state().view().knockout.clone().expect("shown");
        assert_eq!(shown.result, lib.result, "{spec:?}");
    };
    let audio = map.groups.spans["audio"][0];
    let (a, b, _) = run_at(&map, audio).expect("an audio run");

    // 1. A click on an audio band: that run is the source, over the panel's layers.
    click_at(
        &mut harness,
        at(0, audio),
        PointerButton::Primary,
        Modifiers::NONE,
    );
    let want = span_selector(&map, a, b);
    let spec = shown(&mut harness, "click", |s| {
        s.blocks.len() == 1 && s.blocks[0].source == want
    });
    check(&mut session, &harness, &spec);

    // 2. A rectangle from layer 0 to layer 1 over the first audio run and what follows it.
    let q = map.groups.spans["question"][0];
    drag(&mut harness, at(0, a), at(1, q));
    let want = span_selector(&map, a, q + 1);
    let spec = shown(&mut harness, "drag", |s| {
        s.blocks.len() == 1
            && s.blocks[0].source == want
            && (s.blocks[0].start, s.blocks[0].end) == (0, 2)
    });
    check(&mut session, &harness, &spec);

    // 3. Shift+click on the question: one more block, same target, the panel's layers.
    click_at(
        &mut harness,
        at(layers - 1, q),
        PointerButton::Primary,
        Modifiers::SHIFT,
    );
    let (qa, qb, _) = run_at(&map, q).expect("question run");
    let added = span_selector(&map, qa, qb);
    let spec = shown(&mut harness, "shift-click", |s| {
        s.blocks.len() == 2
            && s.blocks[1].source == added
            && s.blocks[1].target == s.blocks[0].target
    });
    check(&mut session, &harness, &spec);
    assert!(harness
        .query_by_label_contains(&format!("{added} in layers"))
        .is_some());

    // 4. The context menu on the question: use it as the target.
    click_at(
        &mut harness,
        at(0, q),
        PointerButton::Secondary,
        Modifiers::NONE,
    );
    harness
        .get_by_label(&format!("Use {added} as the target"))
        .click();
    harness.run_steps(2);
    let spec = shown(&mut harness, "menu", |s| s.blocks[0].target == added);
    check(&mut session, &harness, &spec);

    // The readout beside the map names the request.
    let describe = spec.describe();
    assert!(
        harness.query_by_label_contains(&describe).is_some(),
        "no readout {describe:?}"
    );

    // The README's picture: a rectangle knocked out of the answer, with the options followed.
    harness.state_mut().track(crate::ui::panel::Tracked {
        token: None,
        answers: crate::session::AnswerSpec {
            answer: None,
            options: vec!["A".into(), "B".into()],
        },
    });
    drag(&mut harness, at(0, a), at(1, q));
    shown(&mut harness, "options", |s| {
        s.answers.options.len() == 2
            && s.blocks.len() == 1
            && (s.blocks[0].start, s.blocks[0].end) == (0, 2)
    });
    // The model's own answers with and without this knockout, in the Answer pane (its Generate button
    // is clicked in answer_tests).
    harness.state_mut().generate();
    super::test_support::generation_finished(&mut harness);
    harness.run_steps(2);
    harness.get_by_label_contains("unedited").scroll_to_me();
    harness.run_steps(3);
    super::test_support::save_screenshot(&mut harness, "explorer.png");
}
