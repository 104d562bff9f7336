//! video-SALMONN 2+ against the authors' own classes: goldens made by `tools/make_salmonn_fixtures.py` (their
//! `video_SALMONN2_plus` under transformers 4.51.3, f32, eager) on a tiny random-weight model in the real
//! checkpoint layout (head tied to the embedding, as the 3B model). Both position numberings, the encoders,
//! the embedded prompt, the logits, knockouts and a drop — through the model boundary and the session, as
//! every command runs them.

use candle_core::{DType, Device, Tensor};

use avflow::model::loader::{resolve_dir, ModelSource};
use avflow::model::{LoadOptions, Positions};
use avflow::session::{DropSpec, KnockoutSpec, Model, Session, Watch};

mod common;
use common::fixtures;

const TOL: f32 = 1e-4;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let f = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    (f(a) - f(b))
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

fn check(case: &str, name: &str, ours: &Tensor, theirs: &Tensor) {
    let d = max_abs_diff(ours, theirs);
    eprintln!("{case}: {name} max|Δ| = {d:.3e}");
    assert!(
        d <= TOL,
        "{case}: {name} differs from the authors' code by {d} (> {TOL})"
    );
}

fn model_dir() -> std::path::PathBuf {
    fixtures().join("salmonn-tiny-a")
}

fn open(positions: Positions) -> Model {
    let opts = LoadOptions {
        positions,
        ..LoadOptions::new(DType::F32, &common::device())
    };
    Model::open_with(model_dir().to_str().unwrap(), &opts).expect("the SALMONN fixture loads")
}

fn case_dir(case: &str) -> std::path::PathBuf {
    fixtures().join("goldens").join(format!("salmonn_{case}"))
}

fn expected(case: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(case_dir(case).join("expected.safetensors"), &Device::Cpu)
        .unwrap()
}

fn positions_tensor(p: &avflow::model::PositionIds) -> Vec<Vec<i64>> {
    (0..3).map(|k| p.iter().map(|x| x[k]).collect()).collect()
}

#[test]
fn the_family_is_found_from_config_json() {
    let r = resolve_dir(ModelSource::Local(model_dir()), &model_dir()).unwrap();
    assert_eq!(r.arch.family(), "video_salmonn2_plus");
    assert!(r.arch.text().tie_word_embeddings);
    // The tied head is not in the checkpoint; the BERT's integer position_ids buffer is not read.
    assert!(!r.tensors.contains_key("lm_head.weight"));
    assert!(!r
        .tensors
        .contains_key("audio.qformer.bert.embeddings.position_ids"));
    assert_eq!(
        r.arch.position_numberings(),
        &[Positions::Inference, Positions::Training]
    );
}

/// Every case, both numberings: positions exact, encoders, embedded prompt and logits within 1e-4.
#[test]
fn forward_matches_the_authors_code_in_both_numberings() {
    for (positions, suffix) in [
        (Positions::Inference, "inference"),
        (Positions::Training, "training"),
    ] {
        let m = open(positions);
        for case in ["av", "video", "audio"] {
            let want = expected(case);
            let prompt = m
                .read_prompt(&case_dir(case).join("inputs.safetensors"))
                .unwrap();
            let e = m.net.embed(&prompt).unwrap();
            let pos = want[&format!("position_ids_{suffix}")]
                .to_dtype(DType::I64)
                .unwrap()
                .to_vec2::<i64>()
                .unwrap();
            assert_eq!(
                positions_tensor(&e.position_ids),
                pos,
                "{case}: {suffix} position ids"
            );
            if positions == Positions::Inference {
                for (name, ours) in [
                    ("audio_embeds", &e.audio_embeds),
                    ("video_embeds", &e.video_embeds),
                ] {
                    match (ours, want.get(name)) {
                        (Some(o), Some(t)) => check(case, name, o, t),
                        (None, None) => {}
                        (o, t) => panic!(
                            "{case}: {name}: ours {} reference {}",
                            o.is_some(),
                            t.is_some()
                        ),
                    }
                }
                check(case, "inputs_embeds", &e.embeds, &want["inputs_embeds"]);
            }
            let logits = m.net.logits(&e, None).unwrap();
            check(
                case,
                &format!("logits_{suffix}"),
                &logits,
                &want[&format!("logits_{suffix}")],
            );
        }
    }
}

/// The knockouts and the drop the fixture script ran on the authors' decoder layers (inference
/// positions), through the session.
#[test]
fn knockouts_and_drop_match_the_authors_layers() {
    let m = std::sync::Arc::new(open(Positions::Inference));
    let prompt = m
        .read_prompt(&case_dir("av").join("inputs.safetensors"))
        .unwrap();
    let mut s = Session::new(m, prompt);
    let text = std::fs::read_to_string(case_dir("av").join("knockouts.json")).unwrap();
    let kos: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(kos.len(), 3);
    for k in &kos {
        let spec = KnockoutSpec::single(
            k["source"].as_str().unwrap().parse().unwrap(),
            k["target"].as_str().unwrap().parse().unwrap(),
            k["start"].as_u64().unwrap() as usize,
            k["end"].as_u64().unwrap() as usize,
        );
        let r = s.knockout(&spec, &Watch::none()).unwrap().result;
        assert_eq!(r.token_id as u64, k["token_id"].as_u64().unwrap());
        let (p, p0) = (
            k["prob"].as_f64().unwrap(),
            k["base_prob"].as_f64().unwrap(),
        );
        eprintln!("{}: {} vs {p} (base {p0})", k["name"], r.prob);
        assert!(
            (f64::from(r.base_prob) - p0).abs() < 1e-5,
            "{}: base",
            k["name"]
        );
        assert!(
            (f64::from(r.prob) - p).abs() < 1e-5,
            "{}: {} vs {p}",
            k["name"],
            r.prob
        );
        assert!(
            (f64::from(r.prob) - p0).abs() > 1e-7,
            "{}: the knockout changed nothing",
            k["name"]
        );
    }
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir("av").join("drop.json")).unwrap())
            .unwrap();
    let out = s
        .drop_positions(
            &DropSpec {
                selector: d["dropped"].as_str().unwrap().parse().unwrap(),
                from_layer: d["from_layer"].as_u64().unwrap() as usize,
                generate: 0,
                curve: true,
                token: None,
            },
            &Watch::none(),
        )
        .unwrap();
    let p = d["prob"].as_f64().unwrap();
    eprintln!(
        "drop audio,video from layer 1: {} vs {p}",
        out.at_layer.prob
    );
    assert!((f64::from(out.at_layer.prob) - p).abs() < 1e-5);
    // The curve's point at that layer is the same measurement done as a batched knockout.
    assert!((f64::from(out.curve[1].1.prob) - p).abs() < 1e-5);
}

/// The command line on the family, no family-specific flag needed: `forward` writes the authors' logits and
/// says which numbering it used; a sweep and a drop run; `--positions` picks the numbering.
#[test]
fn commands_run_on_the_family_and_name_the_numbering() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let tmp = tempfile::tempdir().unwrap();
    let inputs = case_dir("av").join("inputs.safetensors");
    let run = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let model = model_dir();
    let (m, i) = (model.to_str().unwrap(), inputs.to_str().unwrap());
    for positions in ["inference", "training"] {
        let out = tmp.path().join(format!("{positions}.safetensors"));
        let v = run(&[
            "--positions",
            positions,
            "forward",
            "--model",
            m,
            "--inputs",
            i,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(v["positions"], positions);
        let ours = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        check(
            "av",
            positions,
            &ours["logits"],
            &expected("av")[&format!("logits_{positions}")],
        );
    }
    let recs = tmp.path().join("sweep.json");
    let v = run(&[
        "sweep",
        "--model",
        m,
        "--inputs",
        i,
        "--window",
        "2",
        "--out",
        recs.to_str().unwrap(),
    ]);
    // audio and video into last and question, then question→last: 5 pairs × 3 layers.
    assert_eq!(
        (v["records"].as_u64(), v["positions"].as_str()),
        (Some(15), Some("inference"))
    );
    let d = run(&[
        "drop",
        "--model",
        m,
        "--inputs",
        i,
        "--groups",
        "audio,video",
        "--from-layer",
        "1",
    ]);
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir("av").join("drop.json")).unwrap())
            .unwrap();
    assert!((d["prob"].as_f64().unwrap() - golden["prob"].as_f64().unwrap()).abs() < 1e-5);
    // No processor yet: a clear error with the way out, not a crash.
    let out = std::process::Command::new(bin)
        .args(["prepare", "--model", m, "--question", "What?", "--out"])
        .arg(tmp.path().join("p.safetensors"))
        .arg("--video")
        .arg(fixtures().join("media/video/basic.mkv"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Fix:") && err.contains("dataset code"),
        "{err}"
    );
}
