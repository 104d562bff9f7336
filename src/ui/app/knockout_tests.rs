//! The knockout panel driven on the bundled demo the way a user does it (issue 5: "click or drag to knock
//! out and watch the answer change live"): a drag on the layer axis, a toggle of the modality × layer grid,
//! Ctrl+Z and Redo, Pin as A beside the live B, and a drag on the token strip sent as the source. Every
//! number shown is checked against the library ([`crate::flow::KnockoutSet`] on the same demo). Renders
//! the `knockout.png` screenshot (written where `AVFLOW_SCREENSHOTS` says, see
//! [`super::test_support::save_screenshot`]).

use std::time::Duration;

use egui_kittest::kittest::{NodeT, Queryable};

use crate::flow::{Knockout, KnockoutSet};
use crate::prompt::Selector;
use crate::session::{KnockoutBlock, KnockoutOutcome, KnockoutSpec};
use crate::ui::answer::format_percent;
use crate::ui::knockout::{self as panel, LayerAxis};
use crate::ui::strip::{position_selector, STRIP_LABEL};
use crate::ui::tokens::Group;

use super::test_support::{drag, require_demo, save_screenshot, step_until};
use super::AvflowApp;

type Harness<'a> = egui_kittest::Harness<'a, AvflowApp>;

/// Steps until the shown knockout answers `want` and the worker is idle; returns it.
fn result_for(harness: &mut Harness<'_>, want: &KnockoutSpec) -> KnockoutOutcome {
    let done = step_until(harness, Duration::from_secs(300), |app| {
        !app.view().busy
            && app
                .view()
                .knockout
                .as_ref()
                .is_some_and(|k| &k.spec == want)
    });
    assert!(
        done,
        "no result for {want:?}: {:?} / {:?}",
        harness.state().status(),
        harness.state().view().knockout
    );
    harness.run_steps(2);
    harness.state().view().knockout.clone().expect("result")
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6_f32.max(1e-5 * b.abs())
}

fn block(source: &str, start: usize, end: usize) -> KnockoutBlock {
    KnockoutBlock {
        source: Selector::group(source),
        target: Selector::group("last"),
        start,
        end,
        heads: None,
    }
}

#[test]
fn knockout_drag_toggle_undo_and_compare_on_the_demo() {
    let demo = require_demo();
    let mut harness = super::test_support::demo_app(egui::vec2(1100.0, 1400.0));
    let layers = harness.state().view().model.as_ref().expect("model").layers;
    assert_eq!(layers, 3, "the demo decoder has 3 layers");

    // The library on the same demo: what every shown number must equal.
    let session = demo.open_session();
    let library = |blocks: &[(&str, usize, usize)]| {
        let set = KnockoutSet {
            blocks: blocks
                .iter()
                .map(|&(s, start, end)| Knockout {
                    sources: session.select_str(s).expect("source"),
                    targets: session.select_str("last").expect("last"),
                    start,
                    end,
                    heads: None,
                })
                .collect(),
        };
        let trace = &session.traced().expect("the demo session is traced").trace;
        set.score(session.decoder(), trace, None)
            .expect("library knockout")
    };

    // 1. Drag on the layer axis from layer 0 to layer 1: audio -> last in layers 0..2, live.
    let rect = harness.get_by_label(panel::AXIS_LABEL).rect();
    let axis = LayerAxis {
        left: rect.left(),
        width: rect.width(),
        layers,
    };
    let mid = |l: usize| egui::pos2((axis.x(l) + axis.x(l + 1)) / 2.0, rect.top() + 8.0);
    drag(&mut harness, mid(0), mid(1));
    let mut want = KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 0, 2);
    let dragged = result_for(&mut harness, &want);
    let lib = library(&[("audio", 0, 2)]);
    assert!(
        close(dragged.result.prob, lib.prob),
        "{} vs {}",
        dragged.result.prob,
        lib.prob
    );
    assert!(close(dragged.result.base_prob, lib.base_prob));
    assert_eq!(dragged.top1.0, lib.top1_id);
    // The number fields follow the axis.
    let field =
        |h: &Harness<'_>, label: &str| h.get_by_label(label).accesskit_node().numeric_value();
    assert_eq!(
        (field(&harness, "from layer"), field(&harness, "to layer")),
        (Some(0.0), Some(2.0))
    );

    // 2. Toggle video × layers 2..3: run together with the main block.
    harness.get_by_label("video layers 2..3").click();
    harness.run_steps(2);
    want.blocks.push(block("video", 2, 3));
    let toggled = result_for(&mut harness, &want);
    let lib = library(&[("audio", 0, 2), ("video", 2, 3)]);
    eprintln!(
        "baseline {} · audio 0..2: {} · + video 2..3: {} (library {})",
        toggled.result.base_prob, dragged.result.prob, toggled.result.prob, lib.prob
    );
    assert!(
        close(toggled.result.prob, lib.prob),
        "{} vs {}",
        toggled.result.prob,
        lib.prob
    );
    assert_ne!(
        toggled.result.prob, toggled.result.base_prob,
        "the knockout changed nothing"
    );
    assert_ne!(
        toggled.result.prob, dragged.result.prob,
        "the toggle changed nothing"
    );
    harness.get_by_label(&format!("after knockout {}", format_percent(lib.prob)));
    harness.get_by_label(&format!("change {}", panel::format_change(lib.rel_change)));

    // 3. Pin it as A, then Ctrl+Z: the drag's settings and number come back as B.
    harness.get_by_label("Pin as A").click();
    harness.run_steps(2);
    harness.key_press_modifiers(
        panel::UNDO_SHORTCUT.modifiers,
        panel::UNDO_SHORTCUT.logical_key,
    );
    harness.run_steps(1);
    want.blocks.truncate(1);
    let undone = result_for(&mut harness, &want);
    assert!(
        close(undone.result.prob, dragged.result.prob),
        "{} vs {}",
        undone.result.prob,
        dragged.result.prob
    );
    harness.get_by_label(&format!(
        "after knockout {}",
        format_percent(dragged.result.prob)
    ));
    let cmp = panel::compare(&toggled, &undone);
    harness.get_by_label(&cmp.difference);
    for (name, a, b) in &cmp.rows {
        for text in [name, a, b] {
            assert!(
                harness.query_all_by_label(text).next().is_some(),
                "comparison cell {text:?} not shown"
            );
        }
    }
    assert!(harness.query_by_label("A (pinned)").is_some());
    assert!(harness.query_by_label("B (live)").is_some());

    // 4. Redo (the button) brings the toggle back.
    harness.get_by_label("Redo").click();
    harness.run_steps(2);
    want.blocks.push(block("video", 2, 3));
    let redone = result_for(&mut harness, &want);
    assert!(close(redone.result.prob, toggled.result.prob));

    // 5. Drag across ten audio tokens on the strip and send them as the source.
    let groups = harness
        .state()
        .view()
        .inputs
        .as_ref()
        .expect("inputs")
        .groups
        .clone();
    let first_audio = groups
        .iter()
        .position(|g| *g == Group::Audio)
        .expect("audio");
    let span = (first_audio, first_audio + 10);
    let strip = harness.get_by_label(STRIP_LABEL).rect();
    // Cells of 7 points with 1-point gaps, as many per row as the strip is wide.
    let columns = ((strip.width() + 1.0) / 8.0).round() as usize;
    let cell = |i: usize| {
        let (row, col) = (i / columns, i % columns);
        egui::pos2(
            strip.left() + col as f32 * 8.0 + 3.5,
            strip.top() + row as f32 * 8.0 + 3.5,
        )
    };
    drag(&mut harness, cell(span.0), cell(span.1 - 1));
    let selector = position_selector(span);
    let shown = selector.to_string();
    harness.get_by_label(&shown);
    harness.get_by_label("Positions as source").click();
    harness.run_steps(2);
    want.blocks[0].source = selector.clone();
    let picked = result_for(&mut harness, &want);
    assert_eq!(
        session.select(&selector).expect("pos selector"),
        (span.0..span.1).collect::<Vec<_>>()
    );
    let lib = library(&[(shown.as_str(), 0, 2), ("video", 2, 3)]);
    assert!(
        close(picked.result.prob, lib.prob),
        "{} vs {}",
        picked.result.prob,
        lib.prob
    );
    // A is still the pinned toggle result; B is the live one.
    let cmp = panel::compare(&toggled, &picked);
    harness.get_by_label(&cmp.difference);

    harness.state_mut().freeze_timings();
    harness.remove_cursor();
    harness.run_steps(3);
    save_screenshot(&mut harness, "knockout.png");
}
