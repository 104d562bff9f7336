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
    let stem = tmp.path().join("sweep-figure");
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
        "--figure",
        stem.to_str().unwrap(),
    ]);
    // The figure's spec names the family and the numbering.
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("sweep-figure.spec.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            spec["provenance"]["family"].as_str(),
            spec["provenance"]["settings"]["positions"].as_str()
        ),
        (Some("video_salmonn2_plus"), Some("inference"))
    );
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
    // `prepare` writes the dataset code's tensors; the prepared prompt runs as any inputs file.
    let prepared = tmp.path().join("p.safetensors");
    let v = run(&[
        "prepare",
        "--model",
        m,
        "--question",
        "What is happening in the clip?",
        "--video",
        fixtures().join("media/video/basic.mkv").to_str().unwrap(),
        "--out",
        prepared.to_str().unwrap(),
    ]);
    assert_eq!(v["seq_len"], 182, "{v}");
    let t = candle_core::safetensors::load(&prepared, &Device::Cpu).unwrap();
    for name in [
        "input_ids",
        "pixel_values_videos",
        "second_per_grid_ts",
        "audio_feature",
        "audio_lengths",
    ] {
        assert!(t.contains_key(name), "prepare wrote no {name}");
    }
}

/// `avflow prepare` against the authors' dataset code (`LazySupervisedDataset._get_item` with their
/// inference settings, torchcodec decoding) on committed media: a 4-s clip with sound, the same without its
/// sound, a silent video, two audio files (one resampled and downmixed), an image with audio, and time
/// ranges (`--start/--end`) of a clip with its sound and of a recording.
#[test]
fn prepare_reproduces_the_authors_dataset_code() {
    use avflow::media::prepare::{Item, PrepareOptions};

    let dev = Device::Cpu;
    let model = model_dir();
    let inference = open(Positions::Inference);
    let training = open(Positions::Training);
    let ints = |t: &Tensor| -> Vec<i64> {
        t.to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    for case in [
        "prep_av",
        "prep_video",
        "prep_video_silent",
        "prep_audio",
        "prep_audio_stereo",
        "prep_image_audio",
        "prep_av_range",
        "prep_audio_range",
    ] {
        let dir = case_dir(case);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let load = |f: &str| candle_core::safetensors::load(dir.join(f), &dev).unwrap();
        let (want, media, expected) = (
            load("inputs.safetensors"),
            load("media.safetensors"),
            load("expected.safetensors"),
        );
        let path = |k: &str| {
            fixtures()
                .join("media")
                .join(meta["media"][k].as_str().unwrap())
        };
        let mut items = Vec::new();
        for (k, make) in [
            ("image", Item::Image as fn(std::path::PathBuf) -> Item),
            ("video", Item::Video),
            ("audio", Item::Audio),
        ] {
            if meta["media"].get(k).is_some() {
                items.push(make(path(k)));
            }
        }
        // A time range (`--start/--end`): theirs on the range's frames and samples (the harness's rule).
        let range = match &meta["range"] {
            serde_json::Value::Array(r) => {
                avflow::media::prepare::TimeRange::new(r[0].as_f64(), r[1].as_f64()).unwrap()
            }
            _ => None,
        };
        // Decoding alone: the frames torchcodec returned and its 16 kHz mono samples.
        if let Some(w) = media.get("wave") {
            let src = items
                .iter()
                .find(|i| !matches!(i, Item::Image(_)))
                .unwrap()
                .path();
            let mut ours = avflow::media::audio::load_16k_ffmpeg(src).unwrap();
            if let Some(r) = range {
                ours = ours[r.samples(16_000, ours.len())].to_vec();
            }
            let ours = Tensor::new(ours.as_slice(), &dev).unwrap();
            assert_eq!(ours.dims(), w.dims(), "{case}: samples");
            check(case, "16 kHz wave", &ours, w);
        }
        if let Some(f) = media.get("frames") {
            let src = items
                .iter()
                .find(|i| matches!(i, Item::Video(_)))
                .unwrap()
                .path();
            let idx: Vec<usize> = ints(&media["frame_idx"])
                .iter()
                .map(|&i| i as usize)
                .collect();
            let stream = avflow::media::video::FrameIndex::read(src).unwrap();
            let (frames, _) = stream
                .decode(
                    &idx,
                    &|h, w| Ok((h, w)),
                    avflow::media::video::Filter::TorchBicubicAaU8,
                )
                .unwrap();
            let ours: Vec<u8> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
            let theirs = f.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            assert!(
                ours == theirs,
                "{case}: decoded frames differ from torchcodec's"
            );
        }
        let opts = PrepareOptions {
            use_audio_in_video: meta["use_audio"].as_bool().unwrap_or(true),
            range,
            ..Default::default()
        };
        let p = inference
            .arch()
            .prepare(
                &model,
                &items,
                meta["question"].as_str().unwrap(),
                &opts,
                &dev,
            )
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            ints(&p.tensors["input_ids"]),
            ints(&want["input_ids"]),
            "{case}: input_ids"
        );
        for name in ["video_grid_thw", "image_grid_thw", "audio_lengths"] {
            match (p.tensors.get(name), want.get(name)) {
                (Some(a), Some(b)) => assert_eq!(ints(a), ints(b), "{case}: {name}"),
                (None, None) => {}
                (a, b) => panic!(
                    "{case}: {name}: ours {} theirs {}",
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
        for (name, tol) in [
            ("pixel_values_videos", 1e-5f32),
            ("pixel_values", 1e-5),
            ("audio_feature", 1e-4),
            ("second_per_grid_ts", 1e-9),
        ] {
            match (p.tensors.get(name), want.get(name)) {
                (Some(a), Some(b)) => {
                    let d = max_abs_diff(a, b);
                    eprintln!("{case}: {name} max|Δ| = {d:.2e}");
                    assert!(d <= tol, "{case}: {name} differs by {d}");
                }
                (None, None) => {}
                (a, b) => panic!(
                    "{case}: {name}: ours {} theirs {}",
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
        // Our prepared prompt through our model: their positions (both numberings) and logits.
        for (m, suffix) in [(&inference, "inference"), (&training, "training")] {
            let prompt = m.arch().prompt_from_tensors(&dir, &p.tensors).unwrap();
            let e = m.net.embed(&prompt).unwrap();
            let pos: Vec<i64> = positions_tensor(&e.position_ids).concat();
            let golden = match suffix {
                "inference" => ints(&expected["position_ids_inference"]),
                _ => ints(&want["position_ids_training"]),
            };
            assert_eq!(pos, golden, "{case}: {suffix} position ids");
            let logits = m.net.logits(&e, None).unwrap();
            check(
                case,
                &format!("prepare→forward logits ({suffix})"),
                &logits,
                &expected[&format!("logits_{suffix}")],
            );
        }
    }
}

/// `avflow sweep --manifest` on the family with no family-specific flag: each sample prepared with the
/// authors' processing (a clip with sound, an audio file, a silent clip), swept, aggregated; `run.json` and
/// the dataset figure's spec name the family and the position numbering.
#[test]
fn a_dataset_sweep_runs_on_the_family() {
    let tmp = tempfile::tempdir().unwrap();
    let media = fixtures().join("media");
    let lines = [
        serde_json::json!({"id": "clip", "video": media.join("video/basic.mkv"),
            "question": "What do you hear?", "options": ["a tone", "speech"], "answer": "A", "task": "hearing"}),
        serde_json::json!({"id": "sound", "audio": media.join("audio/mono16k.wav"),
            "question": "What is it?", "answer": "a tone", "task": "hearing"}),
        serde_json::json!({"id": "silent", "video": media.join("video/noaudio.mkv"),
            "question": "What moves?", "answer": "a square", "task": "seeing"}),
    ];
    let manifest = tmp.path().join("items.jsonl");
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&manifest, body).unwrap();
    let out = tmp.path().join("run");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_avflow"))
        .args(["--positions", "training", "sweep", "--manifest"])
        .arg(&manifest)
        .arg("--model")
        .arg(model_dir())
        .arg("--out")
        .arg(&out)
        .args(["--window", "2", "--subset", "all"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (rep["ran"].as_u64(), rep["failed"].as_u64()),
        (Some(3), Some(0)),
        "{rep}"
    );
    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: &str| recs.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(
        (
            by_id("clip")["tokens"]["video"].as_u64(),
            by_id("clip")["tokens"]["audio"].as_u64()
        ),
        (Some(80), Some(60))
    );
    assert_eq!(by_id("sound")["tokens"]["audio"], 60);
    assert!(by_id("silent")["tokens"]
        .get("audio")
        .is_none_or(|a| a == 0));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        (
            run["family"].as_str(),
            run["positions"].as_str(),
            run["fps"].as_f64()
        ),
        (Some("video_salmonn2_plus"), Some("training"), Some(10.0))
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("figure-sweep.spec.json")).unwrap())
            .unwrap();
    let prov = &spec["provenance"];
    assert_eq!(
        (
            prov["family"].as_str(),
            prov["settings"]["positions"].as_str()
        ),
        (Some("video_salmonn2_plus"), Some("training"))
    );
}

/// Greedy answers through the session equal the authors' `generate()` (inference positions while decoding),
/// with the repetition penalty a checkpoint's `generation_config.json` gives (1, Qwen2.5-VL's 1.05, 1.5).
#[test]
fn generation_follows_the_checkpoints_repetition_penalty() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(case_dir("av").join("generate.json")).unwrap(),
    )
    .unwrap();
    let n = golden["max_new_tokens"].as_u64().unwrap() as usize;
    for run in golden["runs"].as_array().unwrap() {
        let mut m = open(Positions::Inference);
        m.repetition_penalty = run["repetition_penalty"].as_f64().unwrap() as f32;
        let prompt = m
            .read_prompt(&case_dir("av").join("inputs.safetensors"))
            .unwrap();
        let s = Session::new(std::sync::Arc::new(m), prompt);
        let answer = s.generate(n, &Watch::none()).unwrap();
        let want: Vec<u32> = run["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            answer.generated.ids, want,
            "penalty {}",
            run["repetition_penalty"]
        );
    }
}
