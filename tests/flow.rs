//! The flow engine: incremental knockouts equal a full masked forward; groups, CLI and sweeps end to end.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use avflow::flow::{Knockout, Trace};
use avflow::model::AvModel;
use avflow::prompt::Groups;

mod common;
use common::fixtures;

/// `avflow SUB --model <omni-tiny-a> --inputs <av_a's inputs>`, ready for more arguments.
fn demo_cmd(sub: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_avflow"));
    c.arg(sub)
        .arg("--model")
        .arg(fixtures().join("omni-tiny-a"))
        .arg("--inputs")
        .arg(fixtures().join("goldens/av_a/inputs.safetensors"));
    c
}

struct Case {
    model: Box<dyn AvModel>,
    embeds: Tensor,
    trace: Trace,
    groups: Groups,
}

fn open(case: &str) -> Case {
    let common::Golden { model, prompt, .. } = common::golden(case, DType::F32);
    let e = model.embed(&prompt).unwrap();
    let trace = Trace::run(model.decoder(), &e.embeds, &e.position_ids).unwrap();
    let groups = prompt.map.groups.clone();
    Case {
        model,
        embeds: e.embeds,
        trace,
        groups,
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
    (cpu(a) - cpu(b))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn trace_matches_the_plain_forward() {
    let c = open("av_a");
    let expected = candle_core::safetensors::load(
        fixtures().join("goldens/av_a/expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let logits = &expected["logits"];
    let logits = if logits.rank() == 3 {
        logits.squeeze(0).unwrap()
    } else {
        logits.clone()
    };
    let last = logits.get(logits.dim(0).unwrap() - 1).unwrap();
    assert!(max_diff(&c.trace.last_logits, &last) < 1e-4);
}

#[test]
fn incremental_knockouts_equal_full_masked_forwards() {
    for case in ["av_a", "av_b_frac", "image_audio_a"] {
        let c = open(case);
        let layers = c.model.decoder().num_layers();
        let seq = c.trace.seq_len;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut specs: Vec<Knockout> = Vec::new();
        // The research pairs on their groups, then random position sets.
        for (s, t) in [
            ("audio", "last"),
            ("video", "question"),
            ("question", "last"),
            ("last", "last"),
            ("image", "last"),
        ] {
            if let (Ok(src), Ok(tgt)) = (c.groups.select(s), c.groups.select(t)) {
                specs.push(Knockout {
                    sources: src,
                    targets: tgt,
                    start: 0,
                    end: layers.min(2),
                    heads: None,
                });
            }
        }
        for _ in 0..6 {
            let start = rng.random_range(0..layers);
            let end = rng.random_range(start + 1..=layers);
            let pick = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<usize> {
                let mut v: Vec<usize> = (0..n).map(|_| rng.random_range(0..seq)).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let (ns, nt) = (1 + rng.random_range(0..40), 1 + rng.random_range(0..10));
            let sources = pick(&mut rng, ns);
            let targets = pick(&mut rng, nt);
            specs.push(Knockout {
                sources,
                targets,
                start,
                end,
                heads: None,
            });
        }
        let mut changed = 0;
        for ko in &specs {
            let inc = ko.run(c.model.decoder(), &c.trace).unwrap();
            let full = ko.run_full(c.model.decoder(), &c.embeds, &c.trace).unwrap();
            let d = max_diff(&inc, &full);
            assert!(
                d <= 1e-5,
                "{case}: incremental vs full differ by {d} for {ko:?}"
            );
            if max_diff(&inc, &c.trace.last_logits) > 1e-4 {
                changed += 1;
            }
        }
        assert!(
            changed > 0,
            "{case}: no knockout changed the logits, the test proves nothing"
        );
    }
}

/// Several blocks applied together (the app's toggle grid) equal the full forward with each layer's union
/// mask; a one-block set is the single knockout, and adjacent blocks are the knockout over both ranges.
#[test]
fn knockout_sets_equal_full_masked_forwards() {
    use avflow::flow::KnockoutSet;
    for case in ["av_a", "av_b_frac", "image_audio_a"] {
        let c = open(case);
        let dec = c.model.decoder();
        let layers = dec.num_layers();
        let seq = c.trace.seq_len;
        let block = |s: &str, t: &str, start: usize, end: usize| {
            Some(Knockout {
                sources: c.groups.select(s).ok()?,
                targets: c.groups.select(t).ok()?,
                start,
                end: end.min(layers),
                heads: None,
            })
        };
        let mut sets: Vec<KnockoutSet> = Vec::new();
        // Grid-like: media rows into last over different layer blocks, with a gap between them.
        let grid: Vec<Knockout> = [
            block("audio", "last", 0, 1),
            block("video", "last", layers - 1, layers),
            block("image", "last", 0, layers),
            block("question", "last", layers - 1, layers),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert!(grid.len() >= 2, "{case}: too few groups for a grid");
        sets.push(KnockoutSet { blocks: grid });
        // Different targets (the first recomputed row comes from the earlier one), overlapping layers.
        let mixed: Vec<Knockout> = [
            block("audio", "question", 0, 2),
            block("video", "last", 1, layers),
            block("image", "question", 1, 2),
        ]
        .into_iter()
        .flatten()
        .collect();
        sets.push(KnockoutSet { blocks: mixed });
        // Random position sets.
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..3 {
            let blocks = (0..1 + rng.random_range(0..3))
                .map(|_| {
                    let start = rng.random_range(0..layers);
                    let end = rng.random_range(start + 1..=layers);
                    let mut pick = |n: usize| -> Vec<usize> {
                        let mut v: Vec<usize> = (0..n).map(|_| rng.random_range(0..seq)).collect();
                        v.sort_unstable();
                        v.dedup();
                        v
                    };
                    let sources = pick(1 + 30);
                    let targets = pick(1 + 8);
                    Knockout {
                        sources,
                        targets,
                        start,
                        end,
                        heads: None,
                    }
                })
                .collect();
            sets.push(KnockoutSet { blocks });
        }
        let mut changed = 0;
        for set in &sets {
            let inc = set.run(dec, &c.trace).unwrap();
            let full = set.run_full(dec, &c.embeds, &c.trace).unwrap();
            let d = max_diff(&inc, &full);
            assert!(
                d <= 1e-5,
                "{case}: incremental vs full differ by {d} for {set:?}"
            );
            if max_diff(&inc, &c.trace.last_logits) > 1e-4 {
                changed += 1;
            }
        }
        assert!(changed > 0, "{case}: no set changed the logits");

        // One block = the knockout itself; two adjacent blocks = one over both ranges.
        let one = block("audio", "last", 0, layers).unwrap();
        let single = one.run(dec, &c.trace).unwrap();
        let as_set = KnockoutSet::from(one.clone()).run(dec, &c.trace).unwrap();
        assert_eq!(max_diff(&single, &as_set), 0.0, "{case}");
        if layers >= 2 {
            let split = KnockoutSet {
                blocks: vec![
                    Knockout {
                        end: 1,
                        ..one.clone()
                    },
                    Knockout {
                        start: 1,
                        ..one.clone()
                    },
                ],
            };
            let d = max_diff(&split.run(dec, &c.trace).unwrap(), &single);
            assert!(d <= 1e-6, "{case}: split blocks differ by {d}");
        }
        assert!(KnockoutSet { blocks: vec![] }.run(dec, &c.trace).is_err());
    }
}

/// Teacher-forced answer scoring: the prompt continued by the answer's tokens, each row's log-probability
/// read off a full forward over prompt ‖ answer with the knockout mask (whose targets, when they hold the
/// last prompt position, take the answer's positions too), against the incremental run on the trace.
#[test]
fn answers_scored_by_teacher_forcing_equal_full_masked_forwards() {
    use avflow::flow::answer::{next_position, token_logprobs, Continuation};
    use avflow::flow::knockout::run_batch_answer;
    use avflow::flow::KnockoutSet;
    use avflow::model::decoder::{mask_for_rows, AttnMask};
    for case in ["av_a", "image_audio_a"] {
        let c = open(case);
        let dec = c.model.decoder();
        let layers = dec.num_layers();
        let seq = c.trace.seq_len;
        let vocab = c.trace.last_logits.dim(0).unwrap() as u32;
        let answer: Vec<u32> = vec![7 % vocab, 123 % vocab, 55 % vocab, 9 % vocab];
        let n = answer.len();
        let cont = Continuation::run(dec, &c.trace, &answer).unwrap();
        assert_eq!(cont.extra(), n - 1);
        // Reference: one full forward over prompt ‖ answer[..n-1] with `blocks`' masks.
        let next = next_position(&c.trace);
        let mut pos = c.trace.position_ids.clone();
        pos.extend((0..n as i64 - 1).map(|i| [next + i; 3]));
        let rot = dec.rotary(&pos).unwrap();
        let embeds = Tensor::cat(
            &[
                &c.embeds.to_dtype(dec.dtype()).unwrap(),
                &dec.embed(&answer[..n - 1]).unwrap(),
            ],
            0,
        )
        .unwrap();
        let total = seq + n - 1;
        let full = |blocks: &[Knockout]| -> Tensor {
            let mut x = embeds.clone();
            for l in 0..layers {
                let active: Vec<&Knockout> = blocks
                    .iter()
                    .filter(|b| b.start <= l && l < b.end)
                    .collect();
                let blocked = |q: usize, j: usize| {
                    active.iter().any(|b| {
                        let target =
                            b.targets.contains(&q) || (q >= seq && b.targets.contains(&(seq - 1)));
                        target && b.sources.contains(&j)
                    })
                };
                let mask = mask_for_rows(0..total, total, blocked, dec.device()).unwrap();
                x = dec
                    .layer(l)
                    .forward(&x, &rot, None, &AttnMask::Additive(mask), false)
                    .unwrap()
                    .hidden;
            }
            let rows = dec.final_norm(&x.narrow(0, seq - 1, n).unwrap()).unwrap();
            dec.logits(&rows).unwrap()
        };
        // The baseline: no block at all.
        let base = full(&[]);
        let base_lp = token_logprobs(&base, &answer).unwrap();
        for (a, b) in base_lp.iter().zip(&cont.base_logprobs) {
            assert!((a - b).abs() <= 1e-5, "{case}: baseline {a} vs {b}");
        }
        let block = |s: &str, t: &str, start: usize, end: usize| Knockout {
            sources: c.groups.select(s).unwrap(),
            targets: c.groups.select(t).unwrap(),
            start,
            end,
            heads: None,
        };
        let media = if c.groups.spans.get("video").is_some_and(|v| !v.is_empty()) {
            "video"
        } else {
            "image"
        };
        let specs = vec![
            block("audio", "last", 0, layers),
            block(media, "question", 0, 1),
            block("question", "last", layers - 1, layers),
        ];
        let rows = run_batch_answer(dec, &c.trace, &cont, &specs, &mut |_, _| true)
            .unwrap()
            .unwrap();
        let mut moved = 0;
        for (k, r) in specs.iter().zip(&rows) {
            assert_eq!(r.dims2().unwrap(), (n, vocab as usize));
            let reference = full(std::slice::from_ref(k));
            let d = max_diff(r, &reference);
            assert!(d <= 1e-5, "{case}: {k:?}: rows differ by {d}");
            // Row 0 is the plain knockout's last-position logits.
            let plain = k.run(dec, &c.trace).unwrap();
            assert!(max_diff(&r.get(0).unwrap(), &plain) <= 1e-5, "{case}");
            let lp: f32 = token_logprobs(r, &answer).unwrap().iter().sum();
            if (lp - cont.base_logprob()).abs() > 1e-3 {
                moved += 1;
            }
        }
        assert!(
            moved > 0,
            "{case}: no knockout moved the answer's log-probability"
        );
        // A set of blocks, and a one-token answer (no appended rows: row 0 alone).
        let set = KnockoutSet {
            blocks: specs.clone(),
        };
        let d = max_diff(
            &set.run_answer(dec, &c.trace, &cont).unwrap(),
            &full(&specs),
        );
        assert!(d <= 1e-5, "{case}: set rows differ by {d}");
        let one = Continuation::run(dec, &c.trace, &answer[..1]).unwrap();
        let r = set.run_answer(dec, &c.trace, &one).unwrap();
        assert_eq!(r.dims2().unwrap(), (1, vocab as usize));
        assert!(max_diff(&r.get(0).unwrap(), &set.run(dec, &c.trace).unwrap()) <= 1e-6);
        assert!(Continuation::run(dec, &c.trace, &[]).is_err());
    }
}

#[test]
fn groups_of_the_av_prompt() {
    let c = open("av_a");
    let g = &c.groups;
    let n = c.trace.seq_len;
    assert_eq!(g.spans["last"], vec![n - 1]);
    assert_eq!(g.spans["audio"].len(), 110);
    assert_eq!(g.spans["video"].len(), 24);
    assert!(g.spans["image"].is_empty());
    let q = &g.spans["question"];
    assert!(!q.is_empty() && q.iter().all(|&p| p > *g.spans["audio"].last().unwrap()));
    assert!(g.spans["system"].iter().all(|&p| p < g.spans["video"][0]));
}

#[test]
fn knockout_and_sweep_commands() {
    let out = demo_cmd("knockout")
        .args([
            "--source",
            "audio,video",
            "--target",
            "last",
            "--layers",
            "0..3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["prob", "base_prob", "rel_change", "top1_id", "token_id"] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    let (p, p0) = (
        v["prob"].as_f64().unwrap(),
        v["base_prob"].as_f64().unwrap(),
    );
    assert!((v["rel_change"].as_f64().unwrap() - 100.0 * (p - p0) / p0).abs() < 1e-3);

    // A bad group names itself and the choices.
    let out = demo_cmd("knockout")
        .args(["--source", "image", "--target", "last", "--layers", "0..1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"image\" is empty"));

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let out = demo_cmd("sweep")
        .args([
            "--pairs",
            "audio:last,video:question",
            "--window",
            "2",
            "--out",
        ])
        .arg(&csv)
        .arg("--figure")
        .arg(dir.path().join("fig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    // header + 2 pairs × 3 layers
    assert_eq!(text.lines().count(), 1 + 2 * 3, "{text}");
    // The report says how much recomputation the sweep needed, in decoder forwards of rows: each
    // window recomputes from its first layer to the last, the ->last pair one row, the ->question pair
    // the rows from the question's first token on; always less than one forward per window.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let passes = report["rows_in_decoder_passes"].as_f64().unwrap();
    assert!(passes > 0.0 && passes < 6.0, "{report}");
    assert!(report["recomputed_row_layers"].as_u64().unwrap() > 0);
    assert!(report["time_in_decoder_passes"].as_f64().unwrap() > 0.0);
    assert!(text.starts_with("source,target,layer,start,end,prob"));
    // --figure: the sweep drawn with its spec (inputs hashed) beside it.
    let svg = std::fs::read_to_string(dir.path().join("fig.svg")).unwrap();
    assert!(svg.contains("audio → last") && svg.contains("video → question"));
    let spec = std::fs::read_to_string(dir.path().join("fig.spec.json")).unwrap();
    assert!(
        spec.contains("inputs.safetensors") && spec.contains("sha256"),
        "{spec}"
    );
}

/// `--answer TEXT` and `--options A,B,…` on knockout and sweep: the answer's ids and log-probabilities
/// with and without the knockout, each option's probability (a one-token option's equals the knockout's
/// own metric for that token), the same numbers per window in a sweep (JSON and CSV), clear errors.
#[test]
fn answers_and_options_on_the_command_line() {
    let json = |c: &mut std::process::Command| -> serde_json::Value {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let ko = |layers: &str, extra: &[&str]| {
        json(
            demo_cmd("knockout")
                .args(["--source", "audio", "--target", "last", "--layers", layers])
                .args(extra),
        )
    };
    let v = ko(
        "0..3",
        &["--answer", " a violin and a piano", "--options", "A, B,C"],
    );
    let ids: Vec<u64> = v["answer_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(ids.len() > 2, "{v}");
    let (lp, base) = (f(&v["answer_logprob"]), f(&v["base_answer_logprob"]));
    assert!(lp < 0.0 && base < 0.0, "{v}");
    assert!(
        (lp - base).abs() > 1e-4,
        "the knockout did not move the answer: {v}"
    );
    let opts = v["options"].as_array().unwrap();
    assert_eq!(opts.len(), 3);
    let texts: Vec<&str> = opts.iter().map(|o| o["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["A", "B", "C"]);
    let best = opts
        .iter()
        .max_by(|a, b| f(&a["prob"]).total_cmp(&f(&b["prob"])))
        .unwrap();
    assert_eq!(v["option_argmax"], best["text"]);
    assert!(v["base_option_argmax"].is_string());
    // A one-token option's probability is the knockout's metric for that token.
    let a = &opts[0];
    assert_eq!(a["ids"].as_array().unwrap().len(), 1, "{a}");
    let token = a["ids"][0].as_u64().unwrap().to_string();
    let t = ko("0..3", &["--token", &token]);
    assert!(
        (f(&t["prob"]) - f(&a["prob"])).abs() <= 1e-6 * f(&t["prob"]).max(1e-12),
        "{t} vs {a}"
    );
    assert!(
        (f(&t["base_prob"]) - f(&a["base_prob"])).abs() <= 1e-6 * f(&t["base_prob"]).max(1e-12)
    );

    // The sweep scores the same answer in every window, equal to the knockout of that window.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep.json");
    json(
        demo_cmd("sweep")
            .args(["--pairs", "audio:last,video:question", "--window", "2"])
            .args([
                "--answer",
                " a violin and a piano",
                "--options",
                "A,B,C",
                "--out",
            ])
            .arg(&out),
    );
    let recs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(recs.len(), 2 * 3);
    for r in &recs {
        assert_eq!(r["answer_ids"].as_array().unwrap().len(), ids.len());
        assert_eq!(r["options"].as_array().unwrap().len(), 3);
        assert!((f(&r["base_answer_logprob"]) - base).abs() <= 1e-5, "{r}");
    }
    for r in recs.iter().filter(|r| r["source"] == "audio") {
        let layers = format!("{}..{}", r["start"], r["end"]);
        let k = ko(&layers, &["--answer", " a violin and a piano"]);
        let d = (f(&k["answer_logprob"]) - f(&r["answer_logprob"])).abs();
        assert!(d <= 1e-5, "window {layers}: sweep {r} vs knockout {k}");
    }
    let csv = dir.path().join("sweep.csv");
    json(
        demo_cmd("sweep")
            .args([
                "--pairs",
                "audio:last",
                "--window",
                "2",
                "--answer",
                "x y",
                "--options",
                "A,B",
            ])
            .arg("--out")
            .arg(&csv)
            .arg("--figure")
            .arg(dir.path().join("fig")),
    );
    // The figure's spec names what was scored.
    let spec = std::fs::read_to_string(dir.path().join("fig.spec.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(
        spec["provenance"]["settings"]["answers"],
        serde_json::json!({"answer": "x y", "options": ["A", "B"]}),
        "{spec}"
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.ends_with(",answer_logprob,base_answer_logprob,prob[A],base_prob[A],prob[B],base_prob[B],option_argmax"),
        "{header}"
    );
    assert!(text
        .lines()
        .skip(1)
        .all(|l| l.split(',').count() == header.split(',').count()));

    // Mistakes say what to do.
    let bad = demo_cmd("knockout")
        .args([
            "--source",
            "audio",
            "--target",
            "last",
            "--layers",
            "0..1",
            "--options",
            "A,A",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("listed twice"));
}

/// Knockouts against transformers: an attention function registered in transformers sets the blocked
/// pre-softmax scores to f32's minimum (tools/make_fixtures.py, `knockouts.json`). Our groups must pick
/// the same positions, and the incremental and batched engines must reproduce HF's logits.
#[test]
fn knockouts_match_transformers() {
    for case in ["av_a", "av_b_frac", "image_audio_a"] {
        let c = open(case);
        let path = fixtures().join("goldens").join(case).join("knockouts.json");
        let exps: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(exps.len() >= 6, "{case}: too few experiments");
        let pos =
            |v: &serde_json::Value| -> Vec<usize> { serde_json::from_value(v.clone()).unwrap() };
        let mut specs = Vec::new();
        for e in &exps {
            let ko = Knockout {
                sources: pos(&e["sources"]),
                targets: pos(&e["targets"]),
                start: e["start"].as_u64().unwrap() as usize,
                end: e["end"].as_u64().unwrap() as usize,
                heads: None,
            };
            for (field, list) in [("source", &ko.sources), ("target", &ko.targets)] {
                let g = e[field].as_str().unwrap();
                if avflow::prompt::groups::BUILTIN.contains(&g) {
                    assert_eq!(
                        &c.groups.select(g).unwrap(),
                        list,
                        "{case}: group {g} differs from the reference"
                    );
                }
            }
            let token = e["token_id"].as_u64().unwrap() as u32;
            assert_eq!(token, c.trace.top1_id, "{case}: baseline top-1");
            let want: Vec<f32> = serde_json::from_value(e["last_logits"].clone()).unwrap();
            let want = Tensor::new(want.as_slice(), &Device::Cpu).unwrap();
            let got = ko.run(c.model.decoder(), &c.trace).unwrap();
            let d = max_diff(&got, &want);
            assert!(
                d <= 1e-4,
                "{case} {}: logits differ from transformers by {d}",
                e["name"]
            );
            let r = ko.score(c.model.decoder(), &c.trace, Some(token)).unwrap();
            let (p, p0) = (
                e["prob"].as_f64().unwrap(),
                e["base_prob"].as_f64().unwrap(),
            );
            assert!(
                (r.prob as f64 - p).abs() < 1e-6,
                "{case} {}: prob {} vs {p}",
                e["name"],
                r.prob
            );
            assert!((r.base_prob as f64 - p0).abs() < 1e-6);
            specs.push(ko);
        }
        // Batched (as sweeps run) == one by one.
        let batched =
            avflow::flow::knockout::run_batch(c.model.decoder(), &c.trace, &specs).unwrap();
        for (ko, b) in specs.iter().zip(&batched) {
            let single = ko.run(c.model.decoder(), &c.trace).unwrap();
            let d = max_diff(&single, b);
            assert!(
                d <= 1e-5,
                "{case}: batched vs single differ by {d} for {ko:?}"
            );
        }
    }
}

/// A sweep batches pairs that share their first recomputed row (audio→question with video→question,
/// audio→last with video→last); every record still equals that window's knockout run alone, records come
/// in the order the pairs were asked for, progress reaches the total, and a cancel during the second batch
/// keeps exactly the pairs of the first.
#[test]
fn grouped_sweeps_equal_single_knockouts_and_cancel_keeps_whole_pairs() {
    use avflow::flow::sweep::{sweep, window, Align};
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = open("av_a");
    let dec = c.model.decoder();
    let pairs: Vec<(String, String)> = [
        "audio:question",
        "video:last",
        "video:question",
        "audio:last",
    ]
    .iter()
    .map(|p| {
        let (s, t) = p.split_once(':').unwrap();
        (s.to_string(), t.to_string())
    })
    .collect();
    let layers = dec.num_layers();
    let k = 3;
    let resolved: Vec<avflow::flow::Pair> = pairs
        .iter()
        .map(|(s, t)| avflow::flow::Pair {
            source: s.clone(),
            target: t.clone(),
            sources: c.groups.select(s).unwrap(),
            targets: c.groups.select(t).unwrap(),
            heads: None,
        })
        .collect();
    let run = |cancel: &AtomicBool, progress: &mut dyn FnMut(usize, usize)| {
        sweep(
            dec,
            &c.trace,
            &resolved,
            k,
            Align::Center,
            None,
            cancel,
            progress,
        )
        .unwrap()
    };
    let mut seen = Vec::new();
    let recs = run(&AtomicBool::new(false), &mut |d, t| seen.push((d, t)));
    assert_eq!(recs.len(), pairs.len() * layers);
    assert_eq!(
        seen.last(),
        Some(&(pairs.len() * layers, pairs.len() * layers))
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress went back: {seen:?}"
    );
    for (i, (s, t)) in pairs.iter().enumerate() {
        for l in 0..layers {
            let r = &recs[i * layers + l];
            assert_eq!((&r.source, &r.target, r.layer), (s, t, l));
            let (start, end) = window(l, k, layers, Align::Center);
            let ko = Knockout {
                sources: c.groups.select(s).unwrap(),
                targets: c.groups.select(t).unwrap(),
                start,
                end,
                heads: None,
            };
            let alone = ko.score(dec, &c.trace, None).unwrap();
            assert!(
                (alone.prob - r.prob).abs() <= 1e-6,
                "{s}->{t} layer {l}: {} alone vs {} in the sweep",
                alone.prob,
                r.prob
            );
        }
    }
    // Cancel once the first batch (the two ->question pairs, asked for first) is done. Progress advances
    // with the work (row-equivalents), so the first batch's share is its cost over the total.
    let specs = |pairs: &[(&str, &str)]| -> Vec<Knockout> {
        pairs
            .iter()
            .flat_map(|(s, t)| {
                let pair = avflow::flow::Pair {
                    source: s.to_string(),
                    target: t.to_string(),
                    sources: c.groups.select(s).unwrap(),
                    targets: c.groups.select(t).unwrap(),
                    heads: None,
                };
                avflow::flow::sweep::window_specs(&pair, layers, k, Align::Center)
            })
            .collect()
    };
    let cost = |p: &[(&str, &str)]| {
        avflow::flow::knockout::batch_work(dec, &c.trace, &specs(p))
            .unwrap()
            .cost()
    };
    let (cq, cl) = (
        cost(&[("audio", "question"), ("video", "question")]),
        cost(&[("video", "last"), ("audio", "last")]),
    );
    assert!(
        cq > cl,
        "a ->question batch ({cq}) costs more than a ->last one ({cl})"
    );
    let half = 2 * layers;
    let first_share = pairs.len() * layers * cq / (cq + cl);
    let stop = AtomicBool::new(false);
    let cut = run(&stop, &mut |d, _| {
        // Past the first batch's share of the progress: stop during the second batch.
        if d > first_share {
            stop.store(true, Ordering::Relaxed);
        }
    });
    let kept: Vec<(&str, &str)> = cut
        .iter()
        .map(|r| (r.source.as_str(), r.target.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(kept, vec![("audio", "question"), ("video", "question")]);
    assert_eq!(cut.len(), half);
    for r in &cut {
        let i = pairs
            .iter()
            .position(|(s, t)| *s == r.source && *t == r.target)
            .unwrap();
        assert_eq!(r.prob, recs[i * layers + r.layer].prob);
    }
}

/// Dropping positions from layer l equals masking their keys for every query from layer l on (the
/// dropped rows' own outputs feed nothing that is kept).
#[test]
fn dropping_equals_masking_the_dropped_keys() {
    use avflow::flow::generate::prefill;
    let c = open("av_a");
    let layers = c.model.decoder().num_layers();
    let seq = c.trace.seq_len;
    let dropped = c.groups.select("audio,video").unwrap();
    for from in 0..=layers {
        let cache = prefill(
            c.model.decoder(),
            &c.embeds,
            &c.trace.position_ids,
            Some((&dropped, from)),
        )
        .unwrap();
        let want = if from == layers {
            c.trace.last_logits.clone()
        } else {
            Knockout {
                sources: dropped.clone(),
                targets: (0..seq).collect(),
                start: from,
                end: layers,
                heads: None,
            }
            .run_full(c.model.decoder(), &c.embeds, &c.trace)
            .unwrap()
        };
        let d = max_diff(&cache.last_logits, &want);
        assert!(d <= 1e-5, "from layer {from}: {d}");
        // Caches of later layers hold only the kept positions.
        let kept_rows = if from < layers {
            seq - dropped.len()
        } else {
            seq
        };
        assert_eq!(cache.kv[layers - 1].rows(), kept_rows);
    }
    // The drop view's curve (one batched incremental run) equals a prefill per layer.
    let curve =
        avflow::flow::generate::drop_curve(c.model.decoder(), &c.trace, &dropped, None).unwrap();
    assert_eq!(curve.len(), layers);
    for (from, r) in &curve {
        let cache = prefill(
            c.model.decoder(),
            &c.embeds,
            &c.trace.position_ids,
            Some((&dropped, *from)),
        )
        .unwrap();
        let p = avflow::flow::trace::prob_of(&cache.last_logits, c.trace.top1_id).unwrap();
        assert!(
            (p - r.prob).abs() <= 1e-6,
            "from layer {from}: {p} vs {}",
            r.prob
        );
    }
    let e = prefill(
        c.model.decoder(),
        &c.embeds,
        &c.trace.position_ids,
        Some((&[seq - 1], 1)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("last prompt position"), "{e}");
}

/// Greedy decoding with the KV cache picks, at every step, the argmax of a full forward over the prompt
/// plus the tokens so far (text positions continue from the prompt's largest position).
#[test]
fn cached_generation_matches_full_forwards() {
    use avflow::flow::generate::{generate, prefill};
    let c = open("av_b_frac");
    let dec = c.model.decoder();
    let mut cache = prefill(dec, &c.embeds, &c.trace.position_ids, None).unwrap();
    assert!(max_diff(&cache.last_logits, &c.trace.last_logits) < 1e-5);
    let next = cache.next_position;
    let (toks, _) = generate(dec, &mut cache, 4, &[]).unwrap();
    assert_eq!(toks.len(), 4);
    let mut embeds = c.embeds.clone();
    let mut pos = c.trace.position_ids.clone();
    for (i, &t) in toks.iter().enumerate() {
        let rot = dec.rotary(&pos).unwrap();
        let normed = dec.forward(&embeds, &rot, &mut |_, _| Ok(())).unwrap();
        let n = normed.dim(0).unwrap();
        let logits = dec
            .logits(&normed.narrow(0, n - 1, 1).unwrap())
            .unwrap()
            .squeeze(0)
            .unwrap();
        let best = avflow::model::decoder::top_k(&logits, 1).unwrap()[0].0;
        assert_eq!(best, t, "step {i}");
        embeds = Tensor::cat(&[&embeds, &dec.embed(&[t]).unwrap()], 0).unwrap();
        pos.push([next + i as i64; 3]);
    }
}

/// Greedy generation under a knockout (a masked prefill, then decoding steps that keep losing the
/// sources of blocks into `last`) agrees with teacher forcing on the incremental knockout: each generated
/// token is the argmax of the knocked-out row that predicts it. Through the session, the baseline's
/// answer from the trace equals a fresh prefill's, and tokens stream as they come.
#[test]
fn generation_under_a_knockout_agrees_with_teacher_forcing() {
    use avflow::flow::answer::Continuation;
    use avflow::flow::generate::{generate_until, prefill_knockout, Decoding};
    use avflow::flow::KnockoutSet;
    use std::sync::atomic::AtomicBool;
    for case in ["av_a", "image_audio_a"] {
        let c = open(case);
        let dec = c.model.decoder();
        let layers = dec.num_layers();
        let sel = |g: &str| c.groups.select(g).unwrap();
        let sets = [
            KnockoutSet::from(Knockout {
                sources: sel("audio"),
                targets: sel("last"),
                start: 0,
                end: layers,
                heads: None,
            }),
            KnockoutSet {
                blocks: vec![
                    Knockout {
                        sources: sel("audio"),
                        targets: sel("question"),
                        start: 0,
                        end: 1,
                        heads: None,
                    },
                    Knockout {
                        sources: sel("question"),
                        targets: sel("last"),
                        start: 1,
                        end: layers,
                        heads: None,
                    },
                ],
            },
        ];
        for set in &sets {
            let mut cache = prefill_knockout(dec, &c.embeds, &c.trace.position_ids, set).unwrap();
            let last = set.run(dec, &c.trace).unwrap();
            assert!(max_diff(&cache.last_logits, &last) <= 1e-5, "{case}");
            let (ids, _) = generate_until(
                dec,
                &mut cache,
                5,
                &Decoding::greedy(&[]),
                &AtomicBool::new(false),
            )
            .unwrap();
            assert_eq!(ids.len(), 5);
            let cont = Continuation::run(dec, &c.trace, &ids).unwrap();
            let rows = set.run_answer(dec, &c.trace, &cont).unwrap();
            for (i, &t) in ids.iter().enumerate() {
                let row = rows.get(i).unwrap();
                let best = avflow::model::decoder::top_k(&row, 1).unwrap()[0].0;
                assert_eq!(best, t, "{case}: token {i} of {ids:?} under {set:?}");
            }
        }
    }

    // The session: the baseline from the trace equals a fresh prefill's answer; a knockout streams.
    let mut s = avflow::session::Session::open(
        fixtures().join("omni-tiny-a").to_str().unwrap(),
        &fixtures().join("goldens/av_a/inputs.safetensors"),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let w = avflow::session::Watch::none();
    let fresh = s.generate(6, &w).unwrap();
    let mut seen = Vec::new();
    let traced = s
        .generate_with(None, 6, &w, &mut |ids| seen.push(ids.len()))
        .unwrap();
    assert_eq!(traced.generated.ids, fresh.generated.ids);
    assert_eq!(seen, (1..=traced.generated.ids.len()).collect::<Vec<_>>());
    let spec = avflow::session::KnockoutSpec::single(
        "audio".parse().unwrap(),
        "last".parse().unwrap(),
        0,
        s.decoder().num_layers(),
    );
    let ko = s.generate_with(Some(&spec), 6, &w, &mut |_| {}).unwrap();
    assert!(!ko.generated.ids.is_empty());
}

#[test]
fn lens_drop_and_generate_commands() {
    let case = fixtures().join("goldens/av_a");
    let model = fixtures().join("omni-tiny-a");
    let bin = env!("CARGO_BIN_EXE_avflow");
    let run = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(bin)
            .arg(args[0])
            .arg("--model")
            .arg(&model)
            .arg("--inputs")
            .arg(case.join("inputs.safetensors"))
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let lens = run(&["lens"]);
    let layers = lens["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let c = open("av_a");
    let p0 = c.trace.base_prob(c.trace.top1_id).unwrap() as f64;
    // The last layer's lens is the model's own output.
    assert!((layers[2]["prob"].as_f64().unwrap() - p0).abs() < 1e-6);

    let tmp = tempfile::tempdir().unwrap();
    let stem = tmp.path().join("drop");
    let dc = run(&[
        "drop",
        "--groups",
        "audio",
        "--from-layer",
        "1",
        "--curve",
        stem.to_str().unwrap(),
    ]);
    assert_eq!(dc["curve"].as_array().unwrap().len(), 3);
    assert!((dc["curve"][1]["prob"].as_f64().unwrap() - dc["prob"].as_f64().unwrap()).abs() < 1e-6);
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    assert!(svg.contains("audio dropped") && svg.contains("nothing dropped"));
    let d = run(&[
        "drop",
        "--groups",
        "audio,video",
        "--from-layer",
        "1",
        "--generate",
        "3",
    ]);
    for k in [
        "prob",
        "top1_id",
        "answer",
        "prefill_s",
        "prefill_full_s",
        "per_token_s_dropped",
    ] {
        assert!(d.get(k).is_some(), "missing {k} in {d}");
    }
    assert_eq!(d["dropped_positions"].as_u64().unwrap(), 134);
    assert_eq!(d["answer_ids_dropped"].as_array().unwrap().len(), 3);

    let g = run(&["generate", "--max-new", "3"]);
    assert_eq!(g["answer_ids"], d["answer_ids_full"]);
    assert!(g["answer"].is_string());
}

/// Attention rows from the trace equal the probabilities of a full forward (eager) for those rows, sum to
/// one, and the group summary adds up.
#[test]
fn attention_rows_match_the_full_forward() {
    use avflow::model::decoder::AttnMask;
    let c = open("av_a");
    let dec = c.model.decoder();
    let seq = c.trace.seq_len;
    let rows = c.groups.select("question,last").unwrap();
    let maps = avflow::flow::attention::attention_rows(dec, &c.trace, &rows, true).unwrap();
    for (l, m) in maps.iter().enumerate() {
        let full = dec
            .layer(l)
            .forward(
                &c.trace.residuals.layer(l).unwrap(),
                &c.trace.rot,
                None,
                &AttnMask::Causal,
                true,
            )
            .unwrap()
            .probs
            .unwrap(); // [heads, seq, seq]
        let idx = avflow::model::decoder::index_tensor(&rows, full.device()).unwrap();
        let want = full.index_select(&idx, 1).unwrap();
        assert!(max_diff(m, &want) < 1e-6, "layer {l}");
    }
    let avg = avflow::flow::attention::attention_rows(dec, &c.trace, &rows, false).unwrap();
    let sums: Vec<f32> = avg[0].sum(1).unwrap().to_vec1().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    let summary = avflow::flow::attention::summarise(&avg, &c.groups).unwrap();
    let total: f32 = ["system", "video", "audio", "question", "last"]
        .iter()
        .map(|g| summary[1].mass[*g])
        .sum();
    // Everything but template/marker tokens is in a group.
    assert!(total > 0.0 && total <= 1.0 + 1e-5, "{total}");
    assert_eq!(summary.len(), dec.num_layers());
    let _ = seq;
}

#[test]
fn knockout_with_a_random_control_and_attention_command() {
    let out = demo_cmd("knockout")
        .args([
            "--source",
            "video",
            "--target",
            "last",
            "--layers",
            "0..3",
            "--control-seed",
            "11",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["control"]["sources"].as_array().unwrap().len(), 24);
    assert!(v["control"]["rel_change"].is_number());

    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.json");
    let out = demo_cmd("attention")
        .args(["--rows", "last", "--map-out"])
        .arg(&map)
        .arg("--figure")
        .arg(map.with_file_name("att"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    let m: Vec<Vec<f32>> = serde_json::from_str(&std::fs::read_to_string(&map).unwrap()).unwrap();
    assert_eq!(m.len(), 3);
    assert!((m[0].iter().sum::<f32>() - 1.0).abs() < 1e-4);
    // --figure: the map as a heatmap (one column per position) and the mass per group as curves.
    let heat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(map.with_file_name("att.json")).unwrap())
            .unwrap();
    let heat = heat.get("heatmap").unwrap_or(&heat);
    assert_eq!(heat["rows"], 3);
    assert_eq!(heat["cols"].as_u64().unwrap() as usize, m[0].len());
    let mass = std::fs::read_to_string(map.with_file_name("att-mass.svg")).unwrap();
    assert!(mass.contains("audio") && mass.contains("question"));
    assert_eq!(v["figure"].as_array().unwrap().len(), 12);

    // --per-head: [layer][head]{group} mass, whose mean over heads is the head-averaged mass; the ranked
    // listening (audio) and looking (video) heads; layers × heads figures per modality.
    let out = demo_cmd("attention")
        .args(["--rows", "last", "--per-head", "--figure"])
        .arg(map.with_file_name("ph"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_head = h["per_head"].as_array().unwrap();
    for (key, group) in [("listening", "audio"), ("looking", "video")] {
        let top = h[key].as_array().unwrap();
        assert!(!top.is_empty());
        let (l, hd) = (
            top[0]["layer"].as_u64().unwrap() as usize,
            top[0]["head"].as_u64().unwrap() as usize,
        );
        let best = per_head[l][hd][group].as_f64().unwrap();
        let max = per_head
            .iter()
            .flat_map(|l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m[group].as_f64().unwrap())
            })
            .fold(0.0, f64::max);
        assert_eq!(
            best, max,
            "{key}: the first head is the one with the most {group}"
        );
        let heat: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(map.with_file_name(format!("ph-heads-{group}.json"))).unwrap(),
        )
        .unwrap();
        let heat = heat.get("heatmap").unwrap_or(&heat);
        assert_eq!(heat["rows"], 3);
    }
    assert_eq!(per_head.len(), 3);
    let heads = per_head[0].as_array().unwrap().len();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("omni-tiny-a/config.json")).unwrap(),
    )
    .unwrap();
    let want_heads = cfg["thinker_config"]["text_config"]["num_attention_heads"]
        .as_u64()
        .or_else(|| cfg["text_config"]["num_attention_heads"].as_u64())
        .unwrap() as usize;
    assert_eq!(heads, want_heads);
    for (l, layer) in per_head.iter().enumerate() {
        for (g, avg) in h["layers"][l]["mass"].as_object().unwrap() {
            let mean: f64 = layer
                .as_array()
                .unwrap()
                .iter()
                .map(|head| head[g].as_f64().unwrap())
                .sum::<f64>()
                / heads as f64;
            let avg = avg.as_f64().unwrap();
            assert!(
                (mean - avg).abs() <= 1e-6,
                "layer {l} {g}: heads' mean {mean} vs {avg}"
            );
            // The same run without --per-head gives the same head-averaged numbers.
            assert_eq!(v["layers"][l]["mass"][g], h["layers"][l]["mass"][g]);
        }
    }
}

/// Time-range and item selectors (issue: "a time range in seconds selects audio and video of those
/// seconds", group ∩ time, item index), from the token map.
#[test]
fn time_range_and_item_selectors() {
    let case = fixtures().join("goldens/av_a");
    let s = avflow::session::Session::open(
        fixtures().join("omni-tiny-a").to_str().unwrap(),
        &case.join("inputs.safetensors"),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    // av_a: 4 grids of 2×3 merged tokens at 1 s per grid; 110 audio tokens at 25 per second.
    assert_eq!(s.select_str("audio@0-2").unwrap().len(), 50);
    assert_eq!(s.select_str("video@0-2").unwrap().len(), 12);
    assert_eq!(s.select_str("@0-2").unwrap().len(), 62);
    assert_eq!(s.select_str("item:0").unwrap().len(), 134);
    assert_eq!(s.select_str("audio@1-2,video@3-4").unwrap().len(), 25 + 6);
    assert!(s
        .select_str("audio@9-10")
        .unwrap_err()
        .to_string()
        .contains("selects no position"));
    assert!(s.select_str("audio@x").is_err());
    // A knockout of the first two seconds into last, through the CLI.
    let out = demo_cmd("knockout")
        .args(["--source", "@0-2", "--target", "last", "--layers", "0..3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sel: avflow::prompt::Selector = "@0-2".parse().unwrap();
    assert_eq!(sel.to_string(), "@0-2");
    assert_eq!(s.select(&sel).unwrap().len(), 62);
}

/// A trace whose residuals went to a mapped file answers every analysis bitwise as the in-memory one:
/// knockouts (several first targets, so rows are read from several offsets), the drop curve, the lens
/// heatmap and attention rows. The file is gone once the trace is.
#[test]
fn a_spilled_trace_equals_the_in_memory_one() {
    use avflow::flow::trace::Placement;
    let c = open("av_a");
    let dec = c.model.decoder();
    let dir = tempfile::tempdir().unwrap();
    let spilled = Trace::run_placed(
        dec,
        &c.embeds,
        &c.trace.position_ids,
        &Placement::File(dir.path().to_path_buf()),
    )
    .unwrap();
    assert!(spilled.residuals.file().is_some());
    assert_eq!(spilled.memory_bytes(), c.trace.memory_bytes());
    assert_eq!(max_diff(&spilled.last_logits, &c.trace.last_logits), 0.0);
    for l in 0..c.trace.residuals.len() {
        let a = c.trace.residuals.layer(l).unwrap();
        let b = spilled.residuals.layer(l).unwrap();
        assert_eq!(max_diff(&a, &b), 0.0, "residual {l}");
    }
    let seq = c.trace.seq_len;
    let audio = c.groups.select("audio").unwrap();
    let question = c.groups.select("question").unwrap();
    let layers = dec.num_layers();
    let specs = vec![
        Knockout {
            sources: audio.clone(),
            targets: vec![seq - 1],
            start: 0,
            end: layers / 2,
            heads: None,
        },
        Knockout {
            sources: audio.clone(),
            targets: question.clone(),
            start: 1,
            end: layers,
            heads: None,
        },
    ];
    let a = avflow::flow::knockout::run_batch(dec, &c.trace, &specs).unwrap();
    let b = avflow::flow::knockout::run_batch(dec, &spilled, &specs).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(max_diff(x, y), 0.0);
    }
    let da = avflow::flow::generate::drop_curve(dec, &c.trace, &audio, None).unwrap();
    let db = avflow::flow::generate::drop_curve(dec, &spilled, &audio, None).unwrap();
    assert_eq!(format!("{da:?}"), format!("{db:?}"));
    let never = std::sync::atomic::AtomicBool::new(false);
    let token = c.trace.top1_id;
    let la = avflow::flow::heatmap::lens_matrix(dec, &c.trace, token, &never, &mut |_, _| {})
        .unwrap()
        .unwrap();
    let lb = avflow::flow::heatmap::lens_matrix(dec, &spilled, token, &never, &mut |_, _| {})
        .unwrap()
        .unwrap();
    assert_eq!(la.values, lb.values);
    let ra = avflow::flow::attention::attention_rows(dec, &c.trace, &question, false).unwrap();
    let rb = avflow::flow::attention::attention_rows(dec, &spilled, &question, false).unwrap();
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(max_diff(x, y), 0.0);
    }
    drop(spilled);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Per-head knockouts (`--heads`): incremental runs, batched runs and sets equal a full forward whose
/// attention adds a dense `[heads, seq, seq]` mask blocking only those heads (≤ 1e-6, f32); a block over
/// every head equals the plain knockout; blocks of other heads change the answer differently.
#[test]
fn per_head_knockouts_equal_head_masked_full_forwards() {
    use avflow::flow::KnockoutSet;
    for case in ["av_a", "image_audio_a"] {
        let c = open(case);
        let dec = c.model.decoder();
        let (layers, heads) = (dec.num_layers(), dec.num_heads());
        assert!(heads >= 2, "{case}: the per-head test needs two heads");
        let ko = |s: &str, t: &str, start: usize, end: usize, hs: Option<Vec<usize>>| Knockout {
            sources: c.groups.select(s).unwrap(),
            targets: c.groups.select(t).unwrap(),
            start,
            end,
            heads: hs,
        };
        let media = if c.groups.select("audio").is_ok() {
            "audio"
        } else {
            "image"
        };
        let specs = vec![
            ko(media, "last", 0, layers, Some(vec![0])),
            ko(media, "last", 0, layers, Some(vec![heads - 1])),
            ko(
                media,
                "question",
                0,
                layers.min(2),
                Some(vec![0, heads - 1]),
            ),
            ko("question", "last", layers - 1, layers, Some(vec![1])),
        ];
        let batched = avflow::flow::knockout::run_batch(dec, &c.trace, &specs).unwrap();
        for (k, b) in specs.iter().zip(&batched) {
            let inc = k.run(dec, &c.trace).unwrap();
            let full = k.run_full(dec, &c.embeds, &c.trace).unwrap();
            let d = max_diff(&inc, &full);
            assert!(
                d <= 1e-6,
                "{case} {k:?}: incremental vs head-masked full forward {d}"
            );
            assert!(max_diff(b, &inc) <= 1e-6, "{case}: batched vs alone");
        }
        // Different heads, different effects (the heads are not interchangeable).
        assert!(max_diff(&batched[0], &batched[1]) > 1e-7, "{case}");
        // Every head listed is the plain knockout.
        let all = ko(media, "last", 0, layers, Some((0..heads).collect()));
        let plain = ko(media, "last", 0, layers, None);
        let d = max_diff(
            &all.run(dec, &c.trace).unwrap(),
            &plain.run(dec, &c.trace).unwrap(),
        );
        assert!(d <= 1e-6, "{case}: all heads vs plain {d}");
        // A set mixing a per-head block and an all-head block.
        let set = KnockoutSet {
            blocks: vec![
                ko(media, "last", 0, layers.min(2), Some(vec![1])),
                ko("question", "last", layers - 1, layers, None),
            ],
        };
        let d = max_diff(
            &set.run(dec, &c.trace).unwrap(),
            &set.run_full(dec, &c.embeds, &c.trace).unwrap(),
        );
        assert!(d <= 1e-6, "{case}: set {d}");
    }
}

/// `knockout --heads` and `sweep --heads` on the command line: the heads are reported, all heads equals no
/// --heads, and a head the model lacks is refused with the count.
#[test]
fn heads_on_the_command_line() {
    let run = |args: &[&str]| {
        let out = demo_cmd(args[0]).args(&args[1..]).output().unwrap();
        (
            out.status.success(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let base = [
        "knockout", "--source", "audio", "--target", "last", "--layers", "0..3",
    ];
    let (ok, plain, err) = run(&base);
    assert!(ok, "{err}");
    let (ok, one, err) = run(&[&base[..], &["--heads", "1"]].concat());
    assert!(ok, "{err}");
    assert_eq!(one["heads"], serde_json::json!([1]));
    assert_ne!(one["prob"], plain["prob"]);
    let (ok, all, _) = run(&[&base[..], &["--heads", "3,2,1,0"]].concat());
    assert!(ok);
    assert_eq!(all["prob"], plain["prob"]);
    assert!(all.get("heads").is_none());
    let (ok, _, err) = run(&[&base[..], &["--heads", "9"]].concat());
    assert!(
        !ok && err.contains("head 9") && err.contains("4 query heads"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep.json");
    let (ok, _, err) = run(&[
        "sweep",
        "--pairs",
        "audio:last",
        "--window",
        "2",
        "--heads",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
}

/// Per-head knockouts against transformers (tools/make_head_goldens.py, `head_knockouts.json`): HF's stock
/// eager decoder layers with a `[1, heads, seq, seq]` mask blocking the pairs in the listed heads only; the
/// incremental and batched engines reproduce its last-position logits.
#[test]
fn per_head_knockouts_match_transformers() {
    for case in ["av_a", "image_audio_a"] {
        let c = open(case);
        let path = fixtures()
            .join("goldens")
            .join(case)
            .join("head_knockouts.json");
        let exps: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(exps.len() >= 4, "{case}: too few experiments");
        let ints =
            |v: &serde_json::Value| -> Vec<usize> { serde_json::from_value(v.clone()).unwrap() };
        let specs: Vec<Knockout> = exps
            .iter()
            .map(|e| Knockout {
                sources: ints(&e["sources"]),
                targets: ints(&e["targets"]),
                start: e["start"].as_u64().unwrap() as usize,
                end: e["end"].as_u64().unwrap() as usize,
                heads: Some(ints(&e["heads"])),
            })
            .collect();
        let dec = c.model.decoder();
        let batched = avflow::flow::knockout::run_batch(dec, &c.trace, &specs).unwrap();
        let mut worst = 0f32;
        for ((e, ko), b) in exps.iter().zip(&specs).zip(&batched) {
            let want: Vec<f32> = serde_json::from_value(e["last_logits"].clone()).unwrap();
            let want = Tensor::new(want.as_slice(), &Device::Cpu).unwrap();
            let got = ko.run(dec, &c.trace).unwrap();
            let d = max_diff(&got, &want);
            assert!(
                d <= 1e-4,
                "{case} {}: logits differ from transformers by {d}",
                e["name"]
            );
            assert!(max_diff(b, &want) <= 1e-4, "{case} {}: batched", e["name"]);
            worst = worst.max(d);
        }
        eprintln!("{case}: per-head knockouts vs transformers, last logits max|Δ| = {worst:.2e}");
    }
}

/// `avflow compare`: Qwen2.5-Omni (A) against video-SALMONN 2+ (B), tiny fixtures: each side's records are
/// what `avflow sweep` gives on it alone, the depth axis and the difference B − A, and one figure (SVG, PDF,
/// PNG, spec naming both models and inputs) that `avflow figure` redraws byte for byte. A run against itself
/// differs by nothing.
#[test]
fn compare_two_models_on_one_depth_axis() {
    let bin = env!("CARGO_BIN_EXE_avflow");
    let dir = tempfile::tempdir().unwrap();
    let (am, ai) = (
        fixtures().join("omni-tiny-a"),
        fixtures().join("goldens/av_a/inputs.safetensors"),
    );
    let (bm, bi) = (
        fixtures().join("salmonn-tiny-a"),
        fixtures().join("goldens/salmonn_av/inputs.safetensors"),
    );
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let stem = dir.path().join("cmp");
    let cmp = run(&[
        &os("compare"),
        &os("--a-model"),
        am.as_os_str(),
        &os("--a-inputs"),
        ai.as_os_str(),
        &os("--b-model"),
        bm.as_os_str(),
        &os("--b-inputs"),
        bi.as_os_str(),
        &os("--pairs"),
        &os("audio:last,video:last"),
        &os("--window"),
        &os("1"),
        &os("--source"),
        &os("audio"),
        &os("--target"),
        &os("last"),
        &os("--layers"),
        &os("0..2"),
        &os("--figure"),
        stem.as_os_str(),
    ]);
    assert_eq!(cmp["b"]["family"], "video_salmonn2_plus");
    // The same knockout on both, each equal to `avflow knockout` on that run alone (same depth: 3 layers each).
    for (side, m, i) in [("a", &am, &ai), ("b", &bm, &bi)] {
        let alone = run(&[
            &os("knockout"),
            &os("--model"),
            m.as_os_str(),
            &os("--inputs"),
            i.as_os_str(),
            &os("--source"),
            &os("audio"),
            &os("--target"),
            &os("last"),
            &os("--layers"),
            &os("0..2"),
        ]);
        assert_eq!(cmp[side]["knockout"]["prob"], alone["prob"], "{side}");
        assert_eq!(
            cmp[side]["knockout"]["rel_change"], alone["rel_change"],
            "{side}"
        );
    }
    for (side, m, i) in [("a", &am, &ai), ("b", &bm, &bi)] {
        run(&[
            &os("sweep"),
            &os("--model"),
            m.as_os_str(),
            &os("--inputs"),
            i.as_os_str(),
            &os("--pairs"),
            &os("audio:last,video:last"),
            &os("--window"),
            &os("1"),
            &os("--out"),
            dir.path().join(format!("{side}.json")).as_os_str(),
        ]);
        let records: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{side}.json"))).unwrap(),
        )
        .unwrap();
        let records = records.get("records").unwrap_or(&records);
        assert_eq!(
            &cmp[side]["records"], records,
            "{side}: the compared sweep is the sweep alone"
        );
    }
    let diff = cmp["difference"].as_array().unwrap();
    assert_eq!(diff.len(), 6);
    for d in diff {
        let (a, b, x) = (
            d["a"].as_f64().unwrap(),
            d["b"].as_f64().unwrap(),
            d["b_minus_a"].as_f64().unwrap(),
        );
        assert!((b - a - x).abs() < 1e-9);
    }
    // The figure: every format, and the spec names both runs; `avflow figure` redraws the same bytes.
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stem.with_extension("spec.json")).unwrap())
            .unwrap();
    let settings = &spec["provenance"]["settings"];
    assert!(settings["b_model"]
        .as_str()
        .unwrap()
        .ends_with("salmonn-tiny-a"));
    assert_eq!(spec["provenance"]["media"].as_array().unwrap().len(), 2);
    let svg = std::fs::read(stem.with_extension("svg")).unwrap();
    let redraw = dir.path().join("again");
    std::fs::create_dir(&redraw).unwrap();
    run(&[
        &os("figure"),
        stem.with_extension("spec.json").as_os_str(),
        &os("--out-dir"),
        redraw.as_os_str(),
    ]);
    assert_eq!(std::fs::read(redraw.join("cmp.svg")).unwrap(), svg);
    for ext in ["pdf", "png"] {
        assert!(stem.with_extension(ext).exists(), "{ext}");
    }
    // A against itself: no difference.
    let same = run(&[
        &os("compare"),
        &os("--a-model"),
        am.as_os_str(),
        &os("--a-inputs"),
        ai.as_os_str(),
        &os("--b-model"),
        am.as_os_str(),
        &os("--b-inputs"),
        ai.as_os_str(),
        &os("--window"),
        &os("1"),
    ]);
    assert!(same["difference"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["b_minus_a"].as_f64().unwrap() == 0.0));
}
