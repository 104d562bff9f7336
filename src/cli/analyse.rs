//! The flow commands on one prepared clip: `knockout`, `sweep`, `drop`, `generate`, `lens`, `attention`.
//! Each opens a [`Session`], asks it for one analysis and prints its outcome as JSON (figures on request).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;

use avflow::export::{data, FigureKind, FigureSpec};
use avflow::flow::attention::rank_heads;
use avflow::session::{
    default_pairs, parse_heads, parse_pairs, AnswerScores, AnswerSpec, DropSpec, KnockoutSpec,
    Model, Session, SweepSpec, Watch,
};

use avflow::model::LoadOptions;

use super::{model_provenance, parse_layers, positions_field, FlowInput};

#[derive(clap::Args, Debug)]
pub struct KnockoutArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Source group(s), comma-separated: system, video, image, audio, question, last (or a --spans name).
    #[arg(long)]
    pub source: String,
    /// Target group(s), comma-separated.
    #[arg(long)]
    pub target: String,
    /// Decoder layers A..B (half-open, 0-based).
    #[arg(long)]
    pub layers: String,
    /// Token whose probability is reported (default: the baseline top-1).
    #[arg(long)]
    pub token: Option<u32>,
    /// Also run a size-matched random control (random sources, same count) with this seed.
    #[arg(long)]
    pub control_seed: Option<u64>,
    /// Block only these query heads (0-based, comma-separated) in every layer of --layers; all heads listed
    /// equals no --heads.
    #[arg(long, value_name = "H[,H…]")]
    pub heads: Option<String>,
    #[command(flatten)]
    pub answers: AnswerArgs,
}

/// A typed answer and multiple-choice options, scored with and without the edit.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AnswerArgs {
    /// Also score this answer text (its tokens as written, after the prompt) by teacher forcing: adds
    /// answer_ids, answer_logprob and base_answer_logprob (natural log, summed over its tokens).
    #[arg(long)]
    pub answer: Option<String>,
    /// Also score each of these comma-separated options (e.g. A,B,C,D) the same way: adds options
    /// [{text, ids, prob, base_prob, logprob, base_logprob}], option_argmax and base_option_argmax.
    #[arg(long)]
    pub options: Option<String>,
}

impl AnswerArgs {
    pub fn spec(&self) -> anyhow::Result<AnswerSpec> {
        Ok(AnswerSpec::from_args(
            self.answer.as_deref(),
            self.options.as_deref(),
        )?)
    }
}

pub fn knockout(a: &KnockoutArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let mut s = a.input.open(opts)?;
    let (start, end) = parse_layers(&a.layers)?;
    let mut spec = KnockoutSpec::single(a.source.parse()?, a.target.parse()?, start, end);
    spec.blocks[0].heads = a.heads.as_deref().map(parse_heads).transpose()?;
    spec.token = a.token;
    spec.control_seed = a.control_seed;
    spec.answers = a.answers.spec()?;
    let r = s.knockout(&spec, &Watch::none())?;
    let mut v = serde_json::to_value(&r.result)?;
    v["source"] = a.source.clone().into();
    v["target"] = a.target.clone().into();
    v["start"] = start.into();
    v["end"] = end.into();
    // As run: sorted, and absent when every head was listed.
    if let Some(h) =
        avflow::session::heads_of(r.spec.blocks[0].heads.as_deref(), s.decoder().num_heads())?
    {
        v["heads"] = serde_json::to_value(h)?;
    }
    v["knockout_s"] = r.seconds.into();
    v["trace_s"] = s.traced().map_or(0.0, |t| t.seconds).into();
    v["groups"] = s.groups().summary().into();
    positions_field(&s.model, &mut v);
    r.answers.write_json(&mut v);
    if let Some(c) = r.control {
        v["control"] = serde_json::json!({"seed": c.seed, "sources": c.sources, "prob": c.result.prob, "rel_change": c.result.rel_change, "top1_id": c.result.top1_id});
    }
    Ok(v)
}

/// Sweep records as JSON, each with its window's answer scores (the knockout command's fields) when the
/// sweep scored answers.
pub fn records_json(
    recs: &[avflow::flow::SweepRecord],
    answers: &[AnswerScores],
) -> anyhow::Result<serde_json::Value> {
    let mut out = Vec::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        let mut v = serde_json::to_value(r)?;
        if let Some(a) = answers.get(i) {
            a.write_json(&mut v);
        }
        out.push(v);
    }
    Ok(out.into())
}

#[derive(clap::Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Query rows: groups or spans, comma-separated.
    #[arg(long, default_value = "last")]
    pub rows: String,
    /// Also write the full head-averaged map [layers, seq] (rows averaged) to this JSON file.
    #[arg(long)]
    pub map_out: Option<PathBuf>,
    /// Also draw the map as a layers × tokens heatmap (token axis coloured by group) to
    /// STEM.{svg,pdf,png,csv,json} + STEM.spec.json, and the mass per group to STEM-mass.*.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: avflow::export::Preset,
    /// Also report each head's attention mass per group: `per_head` = `[layer][head]{group: mass}` (its mean
    /// over heads is `layers`' mass).
    #[arg(long)]
    pub per_head: bool,
}

/// Attention mass of the chosen rows to each group, per layer.
pub fn attention_cmd(a: &AttentionArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let mut s = a.input.open(opts)?;
    let out = s.attention_with(&a.rows.parse()?, a.per_head)?;
    if let Some(path) = &a.map_out {
        avflow::tensor_io::write_atomic(path, serde_json::to_string(&out.map)?.as_bytes())?;
    }
    let mut report = serde_json::json!({"rows": out.rows.len(), "layers": out.mass});
    if let Some(heads) = &out.per_head {
        report["per_head"] = serde_json::to_value(heads)?;
        // The heads that listen (audio) and look (video, else image) the most, from the rows.
        let look = if s.groups().spans.get("video").is_some_and(|v| !v.is_empty()) {
            "video"
        } else {
            "image"
        };
        report["listening"] = serde_json::to_value(rank_heads(heads, "audio", 5))?;
        report["looking"] = serde_json::to_value(rank_heads(heads, look, 5))?;
    }
    positions_field(&s.model, &mut report);
    let mut figures = Vec::new();
    if let Some(stem) = &a.figure {
        let prov = model_provenance(&s.model, &a.input.model)
            .with_file(&a.input.inputs)?
            .with_setting("rows", a.rows.clone());
        let map64: Vec<Vec<f64>> = out
            .map
            .iter()
            .map(|r| r.iter().map(|&x| f64::from(x)).collect())
            .collect();
        let groups = data::token_groups_from_spans(s.groups().seq_len, &s.groups().spans);
        let heat = data::attention_heatmap(&map64, groups)?;
        let mut spec = FigureSpec::new(FigureKind::AttentionMap, a.preset, prov.clone());
        spec.title = Some(format!("attention from {}", a.rows));
        figures.extend(avflow::export::write_figure(&spec, &heat, stem)?);
        let (spec, curves) = avflow::export::figure_from_output(
            FigureKind::AttentionMass,
            &report.to_string(),
            a.preset,
            prov.clone(),
        )?;
        let mut mass = stem.as_os_str().to_owned();
        mass.push("-mass");
        figures.extend(avflow::export::write_figure(
            &spec,
            &curves,
            Path::new(&mass),
        )?);
        // With --per-head: layers × heads of the mass to each modality (STEM-heads-GROUP.*).
        for (g, heads) in ["audio", "video", "image"]
            .iter()
            .filter(|g| s.groups().spans.get(**g).is_some_and(|v| !v.is_empty()))
            .filter_map(|g| out.per_head.as_ref().map(|h| (*g, h)))
        {
            let heat = data::heads_heatmap(heads, g)?;
            let mut spec = FigureSpec::new(FigureKind::Heatmap, a.preset, prov.clone());
            spec.x_label = "query head".into();
            spec.y_label = "layer".into();
            spec.title = Some(format!("attention from {} to {g}, per head", a.rows));
            let mut stem_g = stem.as_os_str().to_owned();
            stem_g.push(format!("-heads-{g}"));
            figures.extend(avflow::export::write_figure(
                &spec,
                &heat,
                Path::new(&stem_g),
            )?);
        }
    }
    if !figures.is_empty() {
        report["figure"] = serde_json::to_value(&figures)?;
    }
    Ok(report)
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[arg(long)]
    pub model: String,
    /// Prepared inputs of one clip (`avflow prepare`); or use --manifest for a dataset.
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub inputs: Option<PathBuf>,
    /// JSON file of extra named spans: {"name": [positions…]}.
    #[arg(long, conflicts_with = "manifest")]
    pub spans: Option<PathBuf>,
    /// Batch mode: a JSONL file, one sample per line (media paths, question, optional options/answer/task);
    /// --out is then a folder of per-sample results (results.jsonl) and aggregates.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// SOURCE:TARGET pairs, comma-separated (default: each modality into question and last, question→last).
    #[arg(long)]
    pub pairs: Option<String>,
    /// Window size in layers.
    #[arg(long, default_value_t = 9)]
    pub window: usize,
    #[arg(long, value_enum, default_value = "center")]
    pub align: avflow::flow::Align,
    /// Knock out in these query heads only (0-based, comma-separated), in every window.
    #[arg(long, value_name = "H[,H…]")]
    pub heads: Option<String>,
    /// Score this token id instead of the baseline's top-1 (single-clip mode).
    #[arg(long, conflicts_with = "manifest")]
    pub token: Option<u32>,
    /// --answer TEXT / --options A,B,…: scored in every window too (each record gains the knockout
    /// command's answer fields; with --manifest, every sample's records).
    #[command(flatten)]
    pub answers: AnswerArgs,
    /// results.json or results.csv (single clip); a folder (with --manifest).
    #[arg(long)]
    pub out: PathBuf,
    /// Batch: continue the run in --out, skipping finished samples.
    #[arg(long, requires = "manifest")]
    pub resume: bool,
    /// Batch: take samples I, I+N, I+2N… (`--shard $SLURM_ARRAY_TASK_ID/N`, or `auto/N`).
    #[arg(long, requires = "manifest")]
    pub shard: Option<String>,
    /// Batch: how each sample's media are sampled.
    #[command(flatten)]
    pub sampling: super::SamplingArgs,
    /// Batch: text the assistant turn starts with for multiple-choice samples (next token = the letter).
    #[arg(long, default_value = avflow::batch::run::OPTION_PREFIX)]
    pub option_prefix: String,
    /// Batch: samples averaged (auto = correctly answered ones when answers are given).
    #[arg(long, value_enum, default_value = "auto")]
    pub subset: avflow::batch::Subset,
    /// Batch: the token whose probability change is averaged.
    #[arg(long, value_enum, default_value = "predicted")]
    pub metric: avflow::batch::Metric,
    /// Single clip: also draw the sweep figure to STEM.{svg,pdf,png,csv,json} + STEM.spec.json.
    #[arg(long, conflicts_with = "manifest")]
    pub figure: Option<PathBuf>,
    /// Figure width: one column (3.25 in) or two (6.75 in).
    #[arg(long, value_enum, default_value = "single")]
    pub preset: avflow::export::Preset,
}

/// `avflow sweep` on one clip (`--manifest` runs [`super::batch::sweep_manifest`] instead).
pub fn sweep(a: &SweepArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let input = FlowInput {
        model: a.model.clone(),
        inputs: a.inputs.clone().context("give --inputs (or --manifest)")?,
        spans: a.spans.clone(),
    };
    let mut s = input.open(opts)?;
    let pairs = match &a.pairs {
        Some(p) => parse_pairs(p)?,
        None => default_pairs(s.groups()),
    };
    let spec = SweepSpec {
        pairs,
        window: a.window,
        align: a.align,
        tokens: vec![a.token],
        answers: a.answers.spec()?,
        heads: a.heads.as_deref().map(parse_heads).transpose()?,
    };
    let t0 = Instant::now();
    let progress = |done: usize, total: usize| {
        let el = t0.elapsed().as_secs_f64();
        if done == 0 {
            eprint!("\rsweep 0/{total}  {el:.1}s elapsed   ");
        } else {
            let eta = el / done as f64 * (total - done) as f64;
            eprint!("\rsweep {done}/{total}  {el:.1}s elapsed, ETA {eta:.1}s   ");
        }
    };
    let cancel = AtomicBool::new(false);
    let watch = Watch {
        cancel: &cancel,
        status: &|_| {},
        progress: &progress,
    };
    let outcome = s.sweep(&spec, &watch)?;
    let sweep_s = outcome.seconds;
    let answers = outcome.answers.clone();
    let recs = outcome.first();
    eprintln!();
    let body = if a.out.extension().is_some_and(|e| e == "csv") {
        let (header, cells) = avflow::session::answer_csv_columns(&answers);
        avflow::flow::sweep::to_csv_with(&recs, &header, &cells)
    } else {
        serde_json::to_string_pretty(&records_json(&recs, &answers)?)?
    };
    avflow::tensor_io::write_atomic(&a.out, body.as_bytes())?;
    let figure = match &a.figure {
        Some(stem) => {
            let mut prov = model_provenance(&s.model, &input.model).with_file(&input.inputs)?;
            if !spec.answers.is_empty() {
                prov = prov.with_setting("answers", serde_json::to_value(&spec.answers)?);
            }
            avflow::export::sweep_figure(&recs, a.window, a.align, prov, a.preset, stem)?
        }
        None => vec![],
    };
    // How far the sweep is from its floor, in units of the traced decoder pass timed in this process
    // (robust to the machine's speed swings): the rows it had to recompute, and the time it took.
    let work = s.sweep_work(&spec)?;
    let traced = s.traced().context("the trace is missing")?;
    let forward_rows = (traced.trace.seq_len * s.decoder().num_layers()).max(1) as f64;
    let mut report = serde_json::json!({
        "out": a.out, "records": recs.len(), "figure": figure, "pairs": spec.pairs.len(), "window": a.window,
        "trace_s": traced.seconds, "trace_decoder_s": traced.decoder_seconds, "sweep_s": sweep_s,
        "trace_memory_mb": traced.trace.memory_bytes() as f64 / 1e6,
        "recomputed_row_layers": work.row_layers, "layer_calls": work.calls,
        "rows_in_decoder_passes": work.row_layers as f64 / forward_rows,
        "time_in_decoder_passes": sweep_s / traced.decoder_seconds.max(1e-9),
    });
    positions_field(&s.model, &mut report);
    Ok(report)
}

#[derive(clap::Args, Debug)]
pub struct DropArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Groups whose positions are removed, comma-separated (e.g. audio,video).
    #[arg(long)]
    pub groups: String,
    /// First decoder layer that no longer sees them.
    #[arg(long)]
    pub from_layer: usize,
    /// Also generate up to N answer tokens greedily (with and without dropping, timed).
    #[arg(long)]
    pub generate: Option<usize>,
    #[arg(long)]
    pub token: Option<u32>,
    /// Also compute the answer probability for every first-dropped layer and draw the drop curve to
    /// STEM.{svg,pdf,png,csv,json} + STEM.spec.json.
    #[arg(long)]
    pub curve: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: avflow::export::Preset,
}

pub fn drop_cmd(a: &DropArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let mut s = a.input.open(opts)?;
    let spec = DropSpec {
        selector: a.groups.parse()?,
        from_layer: a.from_layer,
        generate: a.generate.unwrap_or(0),
        curve: a.curve.is_some(),
        token: a.token,
    };
    let d = s.drop_positions(&spec, &Watch::none())?;
    let r = &d.at_layer;
    let mut v = serde_json::json!({
        "groups": a.groups, "dropped_positions": d.dropped, "from_layer": a.from_layer,
        "prob": r.prob, "base_prob": r.base_prob, "rel_change": r.rel_change, "top1_id": r.top1_id,
        "token_id": r.token_id, "prefill_s": d.prefill_drop_s, "prefill_full_s": d.prefill_full_s,
        "prefill_speedup": d.speedup(),
    });
    positions_field(&s.model, &mut v);
    if let Some((full, dropped)) = &d.answers {
        for (key, g) in [("full", full), ("dropped", dropped)] {
            v[format!("answer_{key}")] = s.model.decode(&g.ids).unwrap_or_default().into();
            v[format!("answer_ids_{key}")] = serde_json::to_value(&g.ids)?;
            v[format!("decode_s_{key}")] = g.decode_s.into();
            v[format!("per_token_s_{key}")] = g.per_token_s.into();
        }
        v["answer"] = v["answer_dropped"].clone();
    }
    if let Some(stem) = &a.curve {
        let points: Vec<data::DropPoint> = d
            .curve
            .iter()
            .map(|(l, r)| data::DropPoint {
                groups: a.groups.clone(),
                from_layer: *l,
                prob: f64::from(r.prob),
                base_prob: f64::from(r.base_prob),
            })
            .collect();
        let prov = model_provenance(&s.model, &a.input.model)
            .with_file(&a.input.inputs)?
            .with_setting("groups", a.groups.clone())
            .with_setting("token", r.token_id)
            .with_setting(
                "prefill_speedup_at_from_layer",
                v["prefill_speedup"].clone(),
            );
        let mut spec = FigureSpec::new(FigureKind::DropCurve, a.preset, prov);
        spec.title = Some(format!(
            "prefill {:.2}× faster dropping from layer {}",
            d.speedup(),
            a.from_layer
        ));
        let files = avflow::export::write_figure(&spec, &data::drop_curves(&points), stem)?;
        v["curve"] = serde_json::to_value(
            d.curve
                .iter()
                .map(|(l, r)| serde_json::json!({"from_layer": l, "prob": r.prob, "rel_change": r.rel_change}))
                .collect::<Vec<_>>(),
        )?;
        v["figure"] = serde_json::to_value(files)?;
    }
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub max_new: usize,
}

pub fn generate_cmd(a: &GenerateArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let model = Model::open_with(&a.model, opts)?;
    super::loaded(&model);
    let prompt = model.read_prompt(&a.inputs)?;
    let s = Session::new(std::sync::Arc::new(model), prompt);
    let ans = s.generate(a.max_new, &Watch::none())?;
    let g = &ans.generated;
    let mut v = serde_json::json!({
        "answer": s.model.decode(&g.ids), "answer_ids": g.ids,
        "prefill_s": ans.prefill_s, "decode_s": g.decode_s, "per_token_s": g.per_token_s,
    });
    positions_field(&s.model, &mut v);
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct LensArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Group or span whose first position is read (default: last).
    #[arg(long, default_value = "last")]
    pub at: String,
    /// Token whose probability is followed (default: the baseline top-1).
    #[arg(long)]
    pub token: Option<u32>,
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

pub fn lens_cmd(a: &LensArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let mut s = a.input.open(opts)?;
    let out = s.lens(&a.at.parse()?, a.token, a.top)?;
    let layers: Vec<serde_json::Value> = out
        .layers
        .into_iter()
        .map(|(l, p, top)| serde_json::json!({"layer": l, "prob": p, "top": top}))
        .collect();
    let mut v =
        serde_json::json!({"position": out.position, "token_id": out.token, "layers": layers});
    positions_field(&s.model, &mut v);
    Ok(v)
}
