//! The knockout history on the bundled demo: every knockout tried is listed with its numbers, can be
//! pinned, renamed, re-applied and saved as CSV, and comes back when the app starts again on the same
//! model and inputs.

use std::time::Duration;

use egui_kittest::kittest::Queryable;

use crate::prompt::Selector;
use crate::session::KnockoutSpec;
use crate::ui::history::PANEL_NAME;

use super::test_support::{demo_app_in, step_until, test_cache_dir};
use super::AvflowApp;

type Harness<'a> = egui_kittest::Harness<'a, AvflowApp>;

fn knock_out(h: &mut Harness<'_>, spec: &KnockoutSpec) {
    h.state_mut().run_knockout(spec.clone());
    let done = step_until(h, Duration::from_secs(300), |app| {
        !app.view().busy
            && app
                .view()
                .knockout
                .as_ref()
                .is_some_and(|k| &k.spec == spec)
    });
    assert!(done, "{:?}", h.state().status());
    h.run_steps(2);
}

#[test]
fn history_lists_pins_renames_applies_exports_and_survives_a_restart() {
    let cache = test_cache_dir();
    let size = egui::vec2(1366.0, 768.0);
    let mut h = demo_app_in(size, &cache);
    let a = KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 0, 2);
    let b = KnockoutSpec::single(Selector::group("video"), Selector::group("last"), 1, 3);
    knock_out(&mut h, &a);
    knock_out(&mut h, &b);
    // The first minute: model ready, then the prompt, then the first number, all measured from launch.
    let fm = h.state().first_minute();
    let (m, p, n) = (
        fm.model_s.expect("model"),
        fm.prompt_s.expect("prompt"),
        fm.first_number_s.expect("first number"),
    );
    assert!(0.0 < m && m <= p && p <= n, "{fm:?}");
    assert!(h.query_by_label_contains("first number").is_some());
    let entries = &h.state().view().history.history.entries;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].spec, b, "newest first");
    let shown_a_prob = entries[1].prob;

    h.state_mut().focus_panel = Some(PANEL_NAME);
    h.run_steps(3);
    for spec in [&a, &b] {
        assert!(
            h.query_by_label(&spec.describe()).is_some(),
            "{}",
            spec.describe()
        );
    }
    // Pin the older one (its star is the second row's): it moves on top.
    h.query_all_by_label("Pin")
        .nth(1)
        .expect("second star")
        .click();
    h.run_steps(2);
    assert!(h.state().view().history.history.entries[1].pinned);
    // Rename it: click its name, type, Enter.
    h.get_by_label(&a.describe()).click();
    h.run_steps(2);
    // The name became a focused text field: type into it.
    h.event(egui::Event::Text("audio early".into()));
    h.run_steps(1);
    h.key_press(egui::Key::Enter);
    h.run_steps(3);
    assert_eq!(
        h.state().view().history.history.entries[1].name.as_deref(),
        Some("audio early")
    );

    // Apply it (pinned, so the first row): the knockout panel asks for it again.
    h.query_all_by_label("Apply").next().expect("apply").click();
    h.run_steps(2);
    let done = step_until(&mut h, Duration::from_secs(300), |app| {
        !app.view().busy && app.view().knockout.as_ref().is_some_and(|k| k.spec == a)
    });
    assert!(
        done,
        "{:?}",
        h.state().view().knockout.as_ref().map(|k| &k.spec)
    );
    assert_eq!(
        h.state().view().knockout.as_ref().unwrap().result.prob,
        shown_a_prob
    );
    // Applying re-records it at the front, keeping its name and pin.
    let first = &h.state().view().history.history.entries[0];
    assert_eq!((first.spec.clone(), first.pinned), (a.clone(), true));

    // Save as CSV.
    h.state_mut().focus_panel = Some(PANEL_NAME);
    h.run_steps(2);
    let csv = cache.parent().unwrap().join("tried.csv");
    h.get_by_label("save to").focus();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_label("save to")
        .type_text(&csv.display().to_string());
    h.run_steps(1);
    h.get_by_label("Save CSV").click();
    h.run_steps(2);
    let text = std::fs::read_to_string(&csv).expect("csv written");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("audio early,audio -> last in layers 0..2,true,"));

    // A new app on the same folder, model and inputs has the same history.
    drop(h);
    let h2 = demo_app_in(size, &cache);
    let back = &h2.state().view().history.history.entries;
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].name.as_deref(), Some("audio early"));
    assert!(back[0].pinned);
}
