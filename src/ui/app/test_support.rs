//! What the rendered app tests share: stepping the app until a condition holds, and the app opened on the
//! bundled demo's fixed prepared prompt (not the demo clip, so positions and pictures stay fixed).

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
        dtype: DType::F32,
        demo_clip: false,
    }
}

/// A pointer drag from `a` to `b` in a few moves, one frame each.
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

/// The app of `size` on the demo, loaded and answered; `None` (test skipped, says why) without the demo.
pub fn demo_app(size: egui::Vec2) -> Option<egui_kittest::Harness<'static, AvflowApp>> {
    if let Some(msg) = DemoPaths::locate().missing_message() {
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let opts = demo_options();
    let mut harness = egui_kittest::Harness::builder()
        .with_size(size)
        .allow_missing_glyphs()
        .build_eframe(|cc| AvflowApp::new(&cc.egui_ctx, None, opts));
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
    Some(harness)
}
