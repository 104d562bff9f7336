//! The app on the second model family: `avflow --model salmonn-tiny-a --video basic.mkv --question … --positions
//! training` opens the tiny video-SALMONN 2+ fixture with no family-specific step, prepares the clip with the
//! family's processor, answers, and runs a knockout chosen in the panel; the number shown is the library's on
//! the same prepared file and numbering. The model line names the numbering, and the positions choice
//! reloads the model with the other one. Renders the `salmonn.png` screenshot (written where
//! `AVFLOW_SCREENSHOTS` says).

use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device};
use egui_kittest::kittest::Queryable;

use crate::model::{LoadOptions, Positions};
use crate::prompt::Selector;
use crate::session::{KnockoutSpec, Session};
use crate::ui::AppOptions;

use super::test_support::{require_fixture, save_screenshot, step_until};
use super::{model_line, AvflowApp, Status};

#[test]
fn opens_a_salmonn_checkpoint_asks_a_clip_and_knocks_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (model, clip) = (
        root.join("salmonn-tiny-a"),
        root.join("media/video/basic.mkv"),
    );
    require_fixture(&model.join("config.json"));
    require_fixture(&clip);
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/app-salmonn");
    let _ = std::fs::remove_dir_all(&cache);
    let opts = AppOptions {
        model: Some(model.display().to_string()),
        inputs: None,
        video: Some(clip.clone()),
        question: Some("What is happening in the clip?".into()),
        device: Device::Cpu,
        device_note: None,
        dtype: DType::F32,
        auto_dtype: false,
        positions: Positions::Training,
        demo_clip: false,
    };
    let mut harness = egui_kittest::Harness::builder()
        .with_size(egui::vec2(1100.0, 1150.0))
        .allow_missing_glyphs()
        .build_eframe(|cc| AvflowApp::with_cache_dir(&cc.egui_ctx, None, opts, cache.clone()));
    let ready = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy
            && ((app.view().media.is_some() && app.view().answer.is_some())
                || matches!(app.status(), Status::Error { .. }))
    });
    assert!(ready, "not ready: {:?}", harness.state().status());
    let app = harness.state();
    assert!(
        !matches!(app.status(), Status::Error { .. }),
        "{:?}",
        app.status()
    );
    let m = app.view().model.clone().expect("model");
    assert_eq!(
        (m.family.as_str(), m.positions),
        ("video_salmonn2_plus", Some(Positions::Training))
    );
    assert!(
        model_line(&m).ends_with("training positions"),
        "{}",
        model_line(&m)
    );
    let media = app.view().media.clone().expect("media");
    let groups = &app.view().inputs.as_ref().expect("inputs").flow_groups;
    let size = |n: &str| groups.iter().find(|(g, _)| g == n).map_or(0, |g| g.1);
    // 20 grid steps of 4 video tokens, 60 audio tokens (one 30-s segment).
    assert_eq!((size("video"), size("audio")), (80, 60), "{groups:?}");
    harness.run_steps(2);

    // audio → last over layers 0..2, chosen in the knockout panel.
    for (combo, choice) in [("source", "audio"), ("target", "last")] {
        harness.get_by_label(combo).click();
        harness.run_steps(2);
        harness.get_by_label(choice).click();
        harness.run_steps(2);
    }
    harness.get_by_label("from layer").set_value_accesskit(0.0);
    harness.run_steps(2);
    harness.get_by_label("to layer").set_value_accesskit(2.0);
    harness.run_steps(2);
    let want = KnockoutSpec::single(Selector::group("audio"), Selector::group("last"), 0, 2);
    let done = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy && app.view().knockout.as_ref().is_some_and(|k| k.spec == want)
    });
    assert!(
        done,
        "no knockout: {:?} / {:?}",
        harness.state().status(),
        harness.state().view().knockout
    );
    let shown = harness.state().view().knockout.clone().expect("knockout");

    // The same knockout through the library, on the file the app prepared, with the training numbering.
    let session = Session::open_with(
        &model.display().to_string(),
        &media.inputs,
        None,
        &LoadOptions {
            positions: Positions::Training,
            ..LoadOptions::new(DType::F32, &Device::Cpu)
        },
    )
    .expect("open the prepared inputs");
    let ko = crate::flow::Knockout {
        sources: session.select_str("audio").expect("audio"),
        targets: session.select_str("last").expect("last"),
        start: 0,
        end: 2,
        heads: None,
    };
    let trace = &session.traced().expect("traced").trace;
    let lib = ko.score(session.decoder(), trace, None).expect("score");
    let close = |x: f32, y: f32| (x - y).abs() <= 1e-6_f32.max(1e-5 * y.abs());
    assert!(
        close(shown.result.prob, lib.prob),
        "{} vs {}",
        shown.result.prob,
        lib.prob
    );
    assert!(close(shown.result.base_prob, lib.base_prob));
    harness.state_mut().freeze_timings();
    harness.remove_cursor();
    harness.run_steps(3);
    save_screenshot(&mut harness, "salmonn.png");

    // The other numbering: the model reloads with it and the answer is recomputed.
    harness.get_by_label("positions").click();
    harness.run_steps(2);
    harness.get_by_label("inference").click();
    harness.run_steps(2);
    let reloaded = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy
            && app
                .view()
                .model
                .as_ref()
                .is_some_and(|m| m.positions == Some(Positions::Inference))
            && app.view().answer.is_some()
    });
    assert!(reloaded, "no reload: {:?}", harness.state().status());
}
