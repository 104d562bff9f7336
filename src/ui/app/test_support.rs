//! What the rendered app tests share: stepping the app until a condition holds, the app opened on the
//! bundled demo's fixed prepared prompt (not the demo clip, so positions and pictures stay fixed), and
//! rendering a screenshot.
//!
//! These tests need what CI has: the committed fixtures and a wgpu adapter (lavapipe from
//! mesa-vulkan-drivers is enough). Without either they fail and say how to get it, rather than pass
//! without running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device};

use super::{AvflowApp, DemoPaths, Status};
use crate::ui::AppOptions;

/// Steps the app until `done` holds (or `limit` passes); `false` on time-out.
pub fn step_until(
    harness: &mut egui_kittest::Harness<'_, AvflowApp>,
    limit: Duration,
    done: impl Fn(&AvflowApp) -> bool,
) -> bool {
    let t0 = std::time::Instant::now();
    loop {
        harness.step();
        if done(harness.state()) {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start-up options with nothing given: the app falls back to the demo's fixed prepared prompt.
pub fn demo_options() -> AppOptions {
    AppOptions {
        model: None,
        inputs: None,
        video: None,
        question: None,
        device: Device::Cpu,
        device_note: None,
        dtype: DType::F32,
        // The app's default: the checkpoint's own dtype (the fixtures are f32).
        auto_dtype: true,
        positions: crate::model::Positions::Inference,
        demo_clip: false,
    }
}

/// A pointer drag from `a` to `b` in a few moves, one frame each.
/// Types `text` into the field labelled `label` (focused first, as a click would).
pub fn type_into(harness: &mut egui_kittest::Harness<'_, AvflowApp>, label: &str, text: &str) {
    use egui_kittest::kittest::Queryable;
    harness.get_by_label(label).focus();
    harness.step();
    harness.get_by_label(label).type_text(text);
    harness.step();
}

pub fn drag(harness: &mut egui_kittest::Harness<'_, AvflowApp>, a: egui::Pos2, b: egui::Pos2) {
    harness.hover_at(a);
    harness.drag_at(a);
    harness.step();
    for k in 1..=4 {
        harness.hover_at(a + (b - a) * (k as f32 / 4.0));
        harness.step();
    }
    harness.drop_at(b);
    harness.run_steps(2);
}

/// Fails the test when the demo fixture is missing, saying how to make it.
pub fn require_demo() -> DemoPaths {
    let demo = DemoPaths::locate();
    if let Some(msg) = demo.missing_message() {
        panic!("the demo fixture is missing: {msg}");
    }
    demo
}

/// Fails the test when a fixture under `tests/fixtures` is missing, saying how to make it.
pub fn require_fixture(path: &Path) {
    assert!(
        path.exists(),
        "the fixture {} is missing: make it with `{}`",
        path.display(),
        super::super::demo::MAKE_COMMAND
    );
}

/// The app of `size` on the demo, loaded and answered; fails without the demo.
pub fn demo_app(size: egui::Vec2) -> egui_kittest::Harness<'static, AvflowApp> {
    demo_app_in(size, &test_cache_dir())
}

/// A fresh folder for what an app writes (prepared inputs, the knockout history), under the system's
/// temporary folder: tests never write into the user's own data folder.
pub fn test_cache_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::env::temp_dir()
        .join(format!("avflow-ui-tests-{}", std::process::id()))
        .join(format!("app-{n}"))
        .join("prepared")
}

/// [`demo_app`] writing into `cache_dir` (its parent holds the knockout history): two apps on the same
/// folder see the same history, as two runs of the app do.
pub fn demo_app_in(
    size: egui::Vec2,
    cache_dir: &Path,
) -> egui_kittest::Harness<'static, AvflowApp> {
    require_demo();
    let opts = demo_options();
    let cache = cache_dir.to_path_buf();
    // The app's own wgpu renderer, so the heatmap's pipeline is installed and draws in screenshots.
    let renderer = std::panic::catch_unwind(egui_kittest::wgpu::WgpuTestRenderer::new)
        .expect("no wgpu adapter: install mesa-vulkan-drivers (lavapipe)");
    let mut harness = egui_kittest::Harness::builder()
        .with_size(size)
        .allow_missing_glyphs()
        .renderer(renderer)
        .build_eframe(|cc| AvflowApp::with_cache_dir(&cc.egui_ctx, None, opts, cache));
    let loaded = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy
            && (app.view().answer.is_some() || matches!(app.status(), Status::Error { .. }))
    });
    assert!(loaded, "demo did not load: {:?}", harness.state().status());
    assert!(
        !matches!(harness.state().status(), Status::Error { .. }),
        "{:?}",
        harness.state().status()
    );
    harness.run_steps(2);
    harness
}

/// Where screenshots go: the folder named by `AVFLOW_SCREENSHOTS` (relative to the crate root), `None`
/// when it is unset or empty.
fn screenshot_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("AVFLOW_SCREENSHOTS").filter(|d| !d.is_empty())?;
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
}

/// Renders the harness on the wgpu adapter — a render failure, or no adapter, fails the test — and writes
/// the picture as `NAME` into the folder `AVFLOW_SCREENSHOTS` names, only then: a test run does not
/// rewrite the committed screenshots. Refresh them on purpose with
/// `AVFLOW_SCREENSHOTS=screenshots cargo test --lib ui::`.
pub fn save_screenshot<S>(harness: &mut egui_kittest::Harness<'_, S>, name: &str) {
    let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.render()));
    let image = match rendered {
        Ok(Ok(image)) => image,
        Ok(Err(e)) => panic!("rendering {name} failed: {e}"),
        Err(_) => {
            panic!("no wgpu adapter to render {name}: install mesa-vulkan-drivers (lavapipe)")
        }
    };
    if let Some(dir) = screenshot_dir() {
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");
        let path = dir.join(name);
        image.save(&path).expect("write the screenshot");
        eprintln!("wrote {}", path.display());
    }
}

/// Steps until the shown knockout's request satisfies `want` and the worker is idle; returns that request.
/// `what` names the step in the failure message.
pub fn knockout_shown(
    harness: &mut egui_kittest::Harness<'_, AvflowApp>,
    what: &str,
    want: impl Fn(&crate::session::KnockoutSpec) -> bool,
) -> crate::session::KnockoutSpec {
    let done = step_until(harness, Duration::from_secs(300), |app| {
        !app.view().busy && app.view().knockout.as_ref().is_some_and(|k| want(&k.spec))
    });
    assert!(
        done,
        "{what}: {:?} / {:?}",
        harness.state().status(),
        harness.state().view().knockout.as_ref().map(|k| &k.spec)
    );
    harness.run_steps(2);
    harness
        .state()
        .view()
        .knockout
        .as_ref()
        .expect("shown")
        .spec
        .clone()
}

/// Steps until both greedy answers (unedited and knocked out) have finished, asserting they did.
pub fn generation_finished(harness: &mut egui_kittest::Harness<'_, AvflowApp>) {
    let done = step_until(harness, Duration::from_secs(300), |app| {
        let g = &app.view().generation;
        !g.running()
            && g.base.as_ref().is_some_and(|b| b.done)
            && g.edited.as_ref().is_some_and(|e| e.done)
    });
    assert!(done, "{:?}", harness.state().status());
}
