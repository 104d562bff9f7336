//! The Compare pane driven on the bundled demo (issue 20: "compare runs side by side"): A is the demo's
//! Qwen2.5-Omni fixture, B the video-SALMONN 2+ fixture on its own prompt. Open B, see A's knockout applied
//! to B at the same depth, sweep both, and check every number against the library on each model; export the
//! comparison and redraw it from its spec; and the same with B run after A (one model in memory at a
//! time). Renders the `compare.png` screenshot (written where `AVFLOW_SCREENSHOTS` says).

use std::path::{Path, PathBuf};
use std::time::Duration;

use egui_kittest::kittest::Queryable;

use crate::flow::SweepRecord;
use crate::prompt::Selector;
use crate::session::{KnockoutSpec, Session, SweepSpec, Watch};
use crate::ui::compare::{scaled_spec, CompareSide};

use super::test_support::{
    demo_app, require_demo, require_fixture, save_screenshot, step_until, type_into,
};
use super::AvflowApp;

type Harness = egui_kittest::Harness<'static, AvflowApp>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// B: the video-SALMONN 2+ fixture and a prompt prepared by its own processor.
fn b_paths() -> (PathBuf, PathBuf) {
    let (m, i) = (
        fixtures().join("salmonn-tiny-a"),
        fixtures().join("goldens/salmonn_av/inputs.safetensors"),
    );
    require_fixture(&m);
    require_fixture(&i);
    (m, i)
}

fn open_b_session() -> Session {
    let (m, i) = b_paths();
    Session::open(
        &m.display().to_string(),
        &i,
        None,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .expect("open B")
}

/// The Compare pane with B's model and inputs typed in (and "Run B after A" ticked when `sequential`),
/// after A showed an audio → last knockout in its layers 1..3.
fn compare_pane(sequential: bool) -> (Harness, KnockoutSpec) {
    let mut harness = demo_app(egui::vec2(1400.0, 1800.0));
    let spec = KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 1, 3);
    // As History's Apply does: the Knockout pane takes the request and runs it.
    harness.state_mut().view.apply = Some((1, spec.clone()));
    super::test_support::knockout_shown(&mut harness, "A's knockout", |s| *s == spec);
    harness.state_mut().focus_panel = Some("Compare");
    harness.run_steps(2);
    let (m, i) = b_paths();
    type_into(&mut harness, "B model", &m.display().to_string());
    type_into(&mut harness, "B inputs", &i.display().to_string());
    if sequential {
        harness.get_by_label("Run B after A").click();
        harness.run_steps(2);
    }
    harness.get_by_label("Open B").click();
    harness.run_steps(2);
    (harness, spec)
}

/// The library's sweep on `s` over the pairs the pane swept (`got`'s), with windows of `window` layers.
fn library_sweep(s: &mut Session, window: usize, got: &[SweepRecord]) -> Vec<SweepRecord> {
    let pairs: Vec<(Selector, Selector)> = crate::flow::sweep::record_pairs(got)
        .iter()
        .map(|(a, b)| (a.parse().expect("source"), b.parse().expect("target")))
        .collect();
    assert!(!pairs.is_empty(), "the pane swept no pair");
    let out = s
        .sweep(&SweepSpec::centred(pairs, window), &Watch::none())
        .expect("sweep");
    out.records.into_iter().next().unwrap_or_default()
}

/// Each record of `got` equals the library's of the same pair and layer (≤ 1e-6).
fn same_records(what: &str, got: &[SweepRecord], want: &[SweepRecord]) {
    for w in want {
        let g = got
            .iter()
            .find(|g| g.source == w.source && g.target == w.target && g.layer == w.layer);
        let g = g.unwrap_or_else(|| {
            panic!("{what}: no {}->{} at layer {}", w.source, w.target, w.layer)
        });
        assert_eq!(
            (g.start, g.end, g.token_id),
            (w.start, w.end, w.token_id),
            "{what}"
        );
        assert!(
            (g.prob - w.prob).abs() <= 1e-6 && (g.rel_change - w.rel_change).abs() <= 1e-3,
            "{what} {}->{} layer {}: {} vs {}",
            w.source,
            w.target,
            w.layer,
            g.prob,
            w.prob
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: records");
}

/// The pane's sweeps of A and B each equal the library's on its own model.
fn same_sweeps(a_lib: &mut Session, a: &CompareSide, b_lib: &mut Session, b: &CompareSide) {
    same_records("A", &a.records, &library_sweep(a_lib, a.window, &a.records));
    same_records("B", &b.records, &library_sweep(b_lib, b.window, &b.records));
}

fn run_comparison(harness: &mut Harness) {
    harness.get_by_label("Compare sweeps").click();
    harness.run_steps(2);
    let done = step_until(harness, Duration::from_secs(300), |app| {
        let c = &app.view().compare;
        !c.running() && c.b.is_some() && !app.view().busy
    });
    assert!(
        done,
        "no comparison: {:?} / {:?}",
        harness.state().view().compare.error,
        harness.state().status()
    );
    harness.run_steps(2);
}

#[test]
fn compare_omni_and_salmonn_on_one_depth_axis() {
    let demo = require_demo();
    let (mut harness, spec) = compare_pane(false);
    // B loads beside A and runs A's knockout at the same depth.
    let ready = step_until(&mut harness, Duration::from_secs(300), |app| {
        let c = &app.view().compare;
        c.b_model.is_some() && c.b_knockout.is_some() && !c.running()
    });
    assert!(
        ready,
        "B not ready: {:?}",
        harness.state().view().compare.error
    );
    let cmp = harness.state().view().compare.clone();
    assert!(cmp.plan.expect("plan").fits(), "two tiny models fit");
    assert_eq!(cmp.b_model.as_ref().unwrap().family, "video_salmonn2_plus");
    let mut a_lib = demo.open_session();
    let mut b_lib = open_b_session();
    let (a_layers, b_layers) = (a_lib.decoder().num_layers(), b_lib.decoder().num_layers());
    let b_spec = scaled_spec(&spec, a_layers, b_layers);
    let b_ko = cmp.b_knockout.as_ref().unwrap();
    assert_eq!(b_ko.spec, b_spec);
    let lib = b_lib.knockout(&b_spec, &Watch::none()).expect("B knockout");
    assert!(
        (b_ko.result.prob - lib.result.prob).abs() <= 1e-6,
        "{} vs {}",
        b_ko.result.prob,
        lib.result.prob
    );
    harness.get_by_label_contains("The same knockout on both");

    // Both sweeps, each equal to the library's on its own model.
    run_comparison(&mut harness);
    let cmp = harness.state().view().compare.clone();
    let (a, b) = (cmp.a.expect("A's side"), cmp.b.expect("B's side"));
    assert_eq!(a.window, crate::ui::compare::default_window(a_layers));
    assert_eq!((a.layers, b.layers), (a_layers, b_layers));
    same_sweeps(&mut a_lib, &a, &mut b_lib, &b);
    assert_eq!(
        crate::flow::sweep::record_pairs(&a.records),
        crate::flow::sweep::record_pairs(&b.records)
    );
    harness.get_by_label(crate::ui::compare::STRIPS_LABEL);
    harness.state_mut().freeze_timings();
    harness.remove_cursor();
    harness.run_steps(3);
    save_screenshot(&mut harness, "compare.png");

    // The difference view draws.
    harness.get_by_label("Difference (B - A)").click();
    harness.run_steps(3);

    // Export: one figure naming both models and inputs, which `avflow figure` redraws.
    let dir = tempfile::tempdir().unwrap();
    let plan = crate::ui::figure::figure_plan(
        crate::ui::figure::FigureView::Compare,
        harness.state().view(),
        crate::export::Preset::Single,
    )
    .expect("plan");
    let files = crate::ui::figure::write_plan(plan, &dir.path().join("cmp")).expect("write");
    for ext in ["svg", "pdf", "png", "csv", "spec.json"] {
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().ends_with(&format!("cmp.{ext}"))),
            "{ext}: {files:?}"
        );
    }
    let spec_text = std::fs::read_to_string(dir.path().join("cmp.spec.json")).unwrap();
    for want in [
        "salmonn-tiny-a",
        "omni-tiny-a",
        "salmonn_av",
        "av_a",
        "sha256",
    ] {
        assert!(spec_text.contains(want), "spec lacks {want}");
    }
    let again = crate::export::regenerate(
        &dir.path().join("cmp.spec.json"),
        Some(&dir.path().join("re")),
    )
    .expect("redraw");
    assert!(!again.is_empty());
}

#[test]
fn b_runs_after_a_with_one_model_in_memory() {
    let demo = require_demo();
    let (mut harness, spec) = compare_pane(true);
    {
        let app = harness.state();
        let c = &app.view().compare;
        assert!(c.sequential && c.b_model.is_none(), "B waits for the run");
        assert!(app.compare.worker.is_none());
    }
    harness.get_by_label_contains("loads when it runs, after A");
    harness.get_by_label("Compare sweeps").click();
    harness.run_steps(1);
    let done = step_until(&mut harness, Duration::from_secs(300), |app| {
        let c = &app.view().compare;
        !c.running() && c.b.is_some() && app.view().model.is_some() && app.view().answer.is_some()
    });
    assert!(
        done,
        "no comparison: {:?} / {:?}",
        harness.state().view().compare.error,
        harness.state().status()
    );
    // A is loaded again, on its own prompt.
    let app = harness.state();
    assert_eq!(app.view().model.as_ref().unwrap().dir, demo.model);
    assert_eq!(app.view().inputs.as_ref().unwrap().path, demo.inputs);
    assert!(app.compare.worker.is_none(), "B was stopped after its run");
    let cmp = app.view().compare.clone();
    let mut a_lib = demo.open_session();
    let mut b_lib = open_b_session();
    let (a, b) = (cmp.a.expect("A"), cmp.b.expect("B"));
    same_sweeps(&mut a_lib, &a, &mut b_lib, &b);
    // A's knockout was kept for the pane and run in B at the same depth.
    assert_eq!(cmp.a_knockout.as_ref().unwrap().spec, spec);
    let b_spec = scaled_spec(&spec, a.layers, b.layers);
    let b_ko = cmp.b_knockout.expect("B's knockout");
    let lib = b_lib.knockout(&b_spec, &Watch::none()).expect("B knockout");
    assert!((b_ko.result.prob - lib.result.prob).abs() <= 1e-6);

    // Again, watching for the moment B runs alone: A's worker (its model and trace) is gone.
    harness.get_by_label("Compare sweeps").click();
    let alone = step_until(&mut harness, Duration::from_secs(300), |app| {
        app.worker.is_none() && app.compare.worker.is_some()
    });
    assert!(alone, "B never ran alone");
    let done = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().compare.running() && app.view().answer.is_some() && !app.view().busy
    });
    assert!(done, "A did not come back");
}
