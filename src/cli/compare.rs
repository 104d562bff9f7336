//! `avflow compare`: the same sweep on two runs — another clip, another model of either family, another size —
//! on one depth-normalised axis, with the difference B − A, as JSON and one figure. The runs load one model at a
//! time (A is swept and dropped before B loads), so two 3B checkpoints need the memory of one.

use std::path::{Path, PathBuf};

use anyhow::Context;

use avflow::export::{compare_spec, data, CompareRun};
use avflow::flow::sweep::scale_layers;
use avflow::flow::Align;
use avflow::model::LoadOptions;
use avflow::session::{default_pairs, parse_pairs, KnockoutSpec, SweepSpec, Watch};

use super::FlowInput;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Run A: a model folder or hub id …
    #[arg(long)]
    pub a_model: String,
    /// … and its prepared inputs.
    #[arg(long)]
    pub a_inputs: PathBuf,
    /// Run B: a model folder or hub id (either family, any size) …
    #[arg(long)]
    pub b_model: String,
    /// … and its prepared inputs.
    #[arg(long)]
    pub b_inputs: PathBuf,
    /// SOURCE:TARGET pairs, comma-separated (default: those A's prompt has, of each modality into question
    /// and last, and question→last); both prompts must have them.
    #[arg(long)]
    pub pairs: Option<String>,
    /// Window size in layers (the same for both; depth-normalised on the figure).
    #[arg(long, default_value_t = 9)]
    pub window: usize,
    #[arg(long, value_enum, default_value = "center")]
    pub align: Align,
    /// Also apply one knockout to both runs (with --target and --layers): SOURCE's keys hidden from TARGET in
    /// A's layers A..B, and in B in the same stretch of depth (its layers scaled by B's depth over A's).
    #[arg(long, requires_all = ["target", "layers"])]
    pub source: Option<String>,
    #[arg(long, requires = "source")]
    pub target: Option<String>,
    /// A's layers A..B (half-open, 0-based).
    #[arg(long, requires = "source")]
    pub layers: Option<String>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw both sweeps on one depth axis (A solid, B dashed) to STEM.{svg,pdf,png,csv,json} + STEM.spec.json
    /// (naming both models and inputs; `avflow figure` redraws it).
    #[arg(long)]
    pub figure: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: avflow::export::Preset,
}

/// One side's sweep, with what it ran on, and the shared knockout's result on it.
struct Side {
    model: String,
    inputs: PathBuf,
    family: String,
    layers: usize,
    records: Vec<avflow::flow::SweepRecord>,
    seconds: f64,
    knockout: Option<serde_json::Value>,
}

fn sweep_side(
    model: &str,
    inputs: &Path,
    pairs: Option<&str>,
    knockout: Option<(&str, &str, usize, usize, Option<usize>)>,
    a: &CompareArgs,
    opts: &LoadOptions,
) -> anyhow::Result<Side> {
    let input = FlowInput {
        model: model.to_string(),
        inputs: inputs.to_path_buf(),
        spans: None,
    };
    let mut s = input.open(opts)?;
    let pairs = match pairs {
        Some(p) => parse_pairs(p)?,
        None => default_pairs(s.groups()),
    };
    let mut spec = SweepSpec::centred(pairs, a.window);
    spec.align = a.align;
    let out = s
        .sweep(&spec, &Watch::none())
        .with_context(|| format!("sweeping {model} on {}", inputs.display()))?;
    let layers = s.decoder().num_layers();
    let knockout = match knockout {
        None => None,
        Some((src, tgt, start, end, of)) => {
            // Scaled from the other run's depth (B), or as given (A).
            let (start, end) = match of {
                Some(from) => scale_layers(start, end, from, layers),
                None => (start, end),
            };
            let spec = KnockoutSpec::single(src.parse()?, tgt.parse()?, start, end);
            let r = s
                .knockout(&spec, &Watch::none())
                .with_context(|| format!("knocking out {src} -> {tgt} in {model}"))?;
            Some(serde_json::json!({
                "source": src, "target": tgt, "start": start, "end": end,
                "prob": r.result.prob, "base_prob": r.result.base_prob,
                "rel_change": r.result.rel_change, "top1_id": r.result.top1_id,
                "token_id": r.result.token_id,
            }))
        }
    };
    Ok(Side {
        model: model.to_string(),
        inputs: inputs.to_path_buf(),
        family: s.model.arch().family().to_string(),
        layers: s.decoder().num_layers(),
        records: out.records.into_iter().next().unwrap_or_default(),
        seconds: out.seconds,
        knockout,
    })
}

impl Side {
    fn run(&self) -> CompareRun<'_> {
        CompareRun {
            model: &self.model,
            family: &self.family,
            inputs: &self.inputs,
            layers: self.layers,
            records: &self.records,
        }
    }
}

pub fn compare_cmd(a: &CompareArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    // A first, to learn the pairs when none are given; its session (model and trace) is dropped before B.
    let ko = match (&a.source, &a.target, &a.layers) {
        (Some(s), Some(t), Some(l)) => Some((s.as_str(), t.as_str(), super::parse_layers(l)?)),
        _ => None,
    };
    // A runs the range as given; B the same stretch of depth (scaled by B's layers over A's).
    let side_a = sweep_side(
        &a.a_model,
        &a.a_inputs,
        a.pairs.as_deref(),
        ko.map(|(s, t, (x, y))| (s, t, x, y, None)),
        a,
        opts,
    )?;
    let pairs: Vec<String> = avflow::flow::sweep::record_pairs(&side_a.records)
        .iter()
        .map(|(s, t)| format!("{s}:{t}"))
        .collect();
    let side_b = sweep_side(
        &a.b_model,
        &a.b_inputs,
        Some(&pairs.join(",")),
        ko.map(|(s, t, (x, y))| (s, t, x, y, Some(side_a.layers))),
        a,
        opts,
    )?;
    let json_side = |s: &Side| {
        serde_json::json!({
            "model": s.model, "inputs": s.inputs, "family": s.family, "layers": s.layers,
            "sweep_s": s.seconds, "records": s.records, "knockout": s.knockout,
        })
    };
    let difference = data::compare_difference(
        &side_a.records,
        side_a.layers,
        &side_b.records,
        side_b.layers,
    );
    let mut report = serde_json::json!({
        "a": json_side(&side_a),
        "b": json_side(&side_b),
        "pairs": pairs,
        "window": a.window,
        "depth": "layer / (layers - 1)",
        "difference": difference,
        "memory": "one model at a time: A was swept and freed before B loaded",
    });
    if let Some(stem) = &a.figure {
        let prov = avflow::export::Provenance::default()
            .with_file(&a.a_inputs)?
            .with_file(&a.b_inputs)?;
        let (spec, curves) = compare_spec(side_a.run(), side_b.run(), a.window, prov, a.preset);
        let files = avflow::export::write_figure(&spec, &curves, stem)?;
        report["figure"] = serde_json::to_value(&files)?;
    }
    if let Some(out) = &a.out {
        avflow::tensor_io::write_atomic(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(report)
}
