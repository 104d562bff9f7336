//! The Thinker against Hugging Face transformers: goldens made by `tools/make_fixtures.py`
//! (`Qwen2_5OmniThinkerForConditionalGeneration`, f32, eager) on tiny random-weight models in the real
//! checkpoint layout, from real `Qwen2_5OmniProcessor` inputs. No network, no Python.
//!
//! `AVFLOW_TEST_DEVICE=cuda` (with `--features cuda`) runs the same cases on a GPU, and `AVFLOW_FIXTURES`
//! points at the fixtures when the test binary runs outside this checkout (`tools/gpu_check.sh`).

use candle_core::{DType, Device, Tensor};

const TOL: f32 = 1e-4;

mod common;
use common::{fixtures, golden, Golden};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    (cpu(a) - cpu(b))
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check(name: &str, case: &str, ours: &Tensor, theirs: &Tensor) {
    let d = max_abs_diff(ours, theirs);
    eprintln!("{case}: {name} max|Δ| = {d:.3e}");
    assert!(
        d <= TOL,
        "{case}: {name} differs from transformers by {d} (> {TOL})"
    );
}

fn run_case(case: &str) {
    let Golden {
        meta,
        model,
        prompt,
        expected,
        ..
    } = golden(case, DType::F32);

    let e = model.embed(&prompt).unwrap();
    // Position ids: exact.
    let pos = avflow::model::position_ids_tensor(&e.position_ids, &Device::Cpu).unwrap();
    let want = expected["position_ids"].to_dtype(DType::I64).unwrap();
    let want = if want.rank() == 3 {
        want.squeeze(1).unwrap()
    } else {
        want
    };
    assert_eq!(
        pos.to_vec2::<i64>().unwrap(),
        want.to_vec2::<i64>().unwrap(),
        "{case}: position ids differ from get_rope_index"
    );
    if let Some(uaiv) = meta.get("use_audio_in_video").and_then(|v| v.as_bool()) {
        assert_eq!(
            e.use_audio_in_video, uaiv,
            "{case}: audio-in-video detection"
        );
    }
    for (name, ours) in [
        ("audio_embeds", &e.audio_embeds),
        ("video_embeds", &e.video_embeds),
        ("image_embeds", &e.image_embeds),
    ] {
        match (ours, expected.get(name)) {
            (Some(o), Some(t)) => check(name, case, o, t),
            (None, None) => {}
            (o, t) => panic!(
                "{case}: {name}: ours present={}, reference present={}",
                o.is_some(),
                t.is_some()
            ),
        }
    }
    if let Some(t) = expected.get("inputs_embeds") {
        check(
            "inputs_embeds",
            case,
            &e.embeds,
            &t.squeeze(0).unwrap_or(t.clone()),
        );
    }
    // Residual entering each layer, then the logits at every position.
    let rot = model.decoder().rotary(&e.position_ids).unwrap();
    let mut hidden = Vec::new();
    let normed = model
        .decoder()
        .forward(&e.embeds, &rot, &mut |i, x| {
            hidden.push((i, x.clone()));
            Ok(())
        })
        .unwrap();
    for (i, h) in &hidden {
        if let Some(t) = expected.get(&format!("hidden_states.{i}")) {
            let t = if t.rank() == 3 {
                t.squeeze(0).unwrap()
            } else {
                t.clone()
            };
            check(&format!("hidden_states.{i}"), case, h, &t);
        }
    }
    let logits = model.decoder().logits(&normed).unwrap();
    let want = &expected["logits"];
    let want = if want.rank() == 3 {
        want.squeeze(0).unwrap()
    } else {
        want.clone()
    };
    check("logits", case, &logits, &want);
}

macro_rules! golden {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            run_case(stringify!($name));
        }
    )*};
}

golden!(
    av_a,
    av_b_frac,
    image_audio_a,
    video_noaudio_b,
    text_a,
    audio_only_b
);

/// `avflow forward` end to end: the binary writes logits and position ids that match the reference.
#[test]
fn forward_cli_writes_reference_logits() {
    let case = fixtures().join("goldens/av_b_frac");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("meta.json")).unwrap()).unwrap();
    let model = fixtures().join(meta["model"].as_str().unwrap());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_avflow"))
        .args(["forward", "--model"])
        .arg(&model)
        .arg("--inputs")
        .arg(case.join("inputs.safetensors"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(case.join("expected.safetensors"), &Device::Cpu).unwrap();
    let want = &expected["logits"];
    let want = if want.rank() == 3 {
        want.squeeze(0).unwrap()
    } else {
        want.clone()
    };
    check("cli logits", "av_b_frac", &got["logits"], &want);
    assert_eq!(got["position_ids"].dtype(), DType::I64);
    assert_eq!(got["position_ids"].dims()[0], 3);
    assert_eq!(
        summary["seq_len"].as_u64().unwrap() as usize,
        got["logits"].dims()[0]
    );
}

/// The bf16 path (weights in bf16; on the CPU the products round their inputs to bf16 and the MLP gate
/// is fused, see `model::nn`) stays close to transformers' f32 logits: within 4 % of their range, and
/// the same top-1 token at the last position.
#[test]
fn bf16_weights_track_the_f32_reference() {
    for case in ["av_a", "image_audio_a"] {
        let Golden {
            model,
            prompt,
            expected,
            ..
        } = golden(case, DType::BF16);
        let e = model.embed(&prompt).unwrap();
        let rot = model.decoder().rotary(&e.position_ids).unwrap();
        let normed = model
            .decoder()
            .forward(&e.embeds, &rot, &mut |_, _| Ok(()))
            .unwrap();
        let ours = model
            .decoder()
            .logits(&normed)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap();
        let want = expected["logits"]
            .flatten_to(expected["logits"].rank() - 2)
            .unwrap();
        let want = want.reshape(ours.dims()).unwrap();
        let range = max_abs_diff(&want, &want.zeros_like().unwrap());
        let d = max_abs_diff(&ours, &want);
        eprintln!("{case}: bf16 logits max|Δ| = {d:.3e} (range {range:.3e})");
        assert!(
            d <= 0.04 * range,
            "{case}: bf16 logits differ by {d} (range {range})"
        );
        let last = ours.dim(0).unwrap() - 1;
        let top = |t: &Tensor| {
            t.get(last)
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap()
        };
        assert_eq!(top(&ours), top(&want), "{case}: top-1 at the last position");
    }
}
