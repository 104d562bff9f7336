//! Running a sweep over every sample of a manifest with one loaded model: prepare → trace → sweep →
//! one fsynced record per sample. Failures are recorded and skipped; finished samples are skipped on
//! resume; `--shard i/n` takes every n-th sample.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::batch::aggregate::{aggregate, Aggregate, Metric, Subset};
use crate::batch::manifest::{Manifest, Sample, Shard};
use crate::batch::store::{read_dir_results, ResultsFile, SampleRecord, Status, Timings};
use crate::flow::Align;
use crate::media::prepare::PrepareOptions;
use crate::prompt::Selector;
use crate::session::{default_pairs, Model, Session, SweepSpec, Watch};

/// The prompt suffix for multiple-choice samples (Kim et al.): the next token is the option letter.
pub const OPTION_PREFIX: &str = "Best option:(";

/// Everything that decides a batch run's numbers; written to `run.json` and checked on resume and
/// merge, so records made with different settings never mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub model: String,
    pub manifest: PathBuf,
    /// Explicit pairs, or None for each sample's default pairs.
    pub pairs: Option<Vec<(String, String)>>,
    pub window: usize,
    pub align: Align,
    pub fps: f64,
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    pub use_audio_in_video: bool,
    /// Assistant-turn prefix for multiple-choice samples (default [`OPTION_PREFIX`]).
    pub option_prefix: String,
    pub dtype: String,
    /// The model family (absent in runs written before it was recorded: the same `model` implies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The position numbering, for families with more than one (video-SALMONN 2+); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<crate::session::Positions>,
    /// `--answer`/`--options`: scored in every sample's windows (absent when none).
    #[serde(default, skip_serializing_if = "crate::session::AnswerSpec::is_empty")]
    pub answers: crate::session::AnswerSpec,
    /// The query heads the knockouts apply in (`--heads`; absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Vec<usize>>,
    pub avflow_version: String,
}

impl RunSettings {
    fn prepare_options(&self, sample: &Sample) -> PrepareOptions {
        let mut o = PrepareOptions {
            use_audio_in_video: self.use_audio_in_video,
            system: sample.system.clone(),
            range: sample.range,
            ..Default::default()
        }
        .with_sampling(Some(self.fps), self.min_pixels, self.max_pixels);
        // Multiple choice: the answer is a letter, asked for by the prefix.
        if sample.prompt.contains("\n(A) ") && !self.option_prefix.is_empty() {
            o.answer_prefix = Some(self.option_prefix.clone());
        }
        o
    }
}

/// What the caller hears while a batch runs.
#[derive(Debug, Clone)]
pub enum BatchEvent {
    /// `todo` samples of this shard will run; `skipped` were finished by an earlier run.
    Started { todo: usize, skipped: usize },
    /// A sample finished (`ok = false`: recorded as failed).
    Sample {
        id: String,
        ok: bool,
        done: usize,
        todo: usize,
        seconds: f64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub results: PathBuf,
    pub shard: Shard,
    pub skipped: usize,
    pub ran: usize,
    pub failed: usize,
    pub cancelled: bool,
    pub seconds: f64,
}

/// Runs the manifest's samples of `shard` into `out_dir` (created if needed).
#[allow(clippy::too_many_arguments)]
pub fn run_manifest(
    model: &Arc<Model>,
    manifest: &Manifest,
    settings: &RunSettings,
    shard: Shard,
    out_dir: &Path,
    resume: bool,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(&BatchEvent),
) -> anyhow::Result<BatchSummary> {
    let t0 = Instant::now();
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating the output folder {}", out_dir.display()))?;
    check_or_write_settings(out_dir, settings)?;
    let results = out_dir.join(shard.file_name());
    let (mut file, finished) = ResultsFile::open(&results, resume)?;
    if model.tokenizer.is_none() {
        let path = model.dir().join("tokenizer.json");
        anyhow::bail!(
            "{}: the tokenizer is missing or unreadable; a batch run tokenises each question",
            path.display()
        );
    }
    let mine: Vec<_> = manifest
        .entries
        .iter()
        .filter(|e| {
            let index = match e {
                Ok(s) => s.index,
                Err((i, _, _)) => *i,
            };
            shard.takes(index)
        })
        .collect();
    let id_of = |e: &&std::result::Result<Sample, (usize, String, String)>| match e {
        Ok(s) => s.id.clone(),
        Err((_, id, _)) => id.clone(),
    };
    let todo: Vec<_> = mine.iter().filter(|e| !file.is_done(&id_of(e))).collect();
    let skipped = mine.len() - todo.len();
    debug_assert!(finished.len() >= skipped);
    on_event(&BatchEvent::Started {
        todo: todo.len(),
        skipped,
    });
    let (mut ran, mut failed, mut cancelled) = (0, 0, false);
    for e in &todo {
        if cancel.load(Ordering::Relaxed) {
            cancelled = true;
            break;
        }
        let ts = Instant::now();
        let rec = match e {
            Err((index, id, msg)) => SampleRecord::failed(*index, id, None, msg.clone()),
            Ok(s) => match run_sample(model, s, settings, cancel) {
                Ok(r) => r,
                Err(_) if cancel.load(Ordering::Relaxed) => {
                    cancelled = true;
                    break;
                }
                Err(err) => {
                    SampleRecord::failed(s.index, &s.id, s.task.clone(), format!("{err:#}"))
                }
            },
        };
        let ok = rec.status == Status::Ok;
        file.append(&rec)?;
        ran += 1;
        failed += usize::from(!ok);
        on_event(&BatchEvent::Sample {
            id: rec.id.clone(),
            ok,
            done: ran,
            todo: todo.len(),
            seconds: ts.elapsed().as_secs_f64(),
        });
    }
    Ok(BatchSummary {
        results,
        shard,
        skipped,
        ran,
        failed,
        cancelled,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `run.json` in `out_dir`: written by the first run, equal for every later run, resume and shard.
fn check_or_write_settings(out_dir: &Path, settings: &RunSettings) -> anyhow::Result<()> {
    let path = out_dir.join("run.json");
    if path.exists() {
        let mut old: RunSettings = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        if old.family.is_none() {
            old.family.clone_from(&settings.family);
        }
        let (a, b) = (serde_json::to_value(&old)?, serde_json::to_value(settings)?);
        if a != b {
            let diff: Vec<String> = a
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k}: {v} there, {} now",
                        b.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                    )
                })
                .collect();
            anyhow::bail!(
                "{} holds a run with other settings ({}); use another --out or the same settings",
                out_dir.display(),
                diff.join("; ")
            );
        }
        return Ok(());
    }
    crate::tensor_io::write_atomic(&path, serde_json::to_string_pretty(settings)?.as_bytes())?;
    Ok(())
}

/// One sample end to end.
pub fn run_sample(
    model: &Arc<Model>,
    s: &Sample,
    settings: &RunSettings,
    cancel: &AtomicBool,
) -> anyhow::Result<SampleRecord> {
    let t0 = Instant::now();
    let opts = settings.prepare_options(s);
    let p = model.prepare(&s.items, &s.prompt, &opts)?;
    let prompt = model.prompt_from(&p, Path::new(&s.id))?;
    let prepare_s = t0.elapsed().as_secs_f64();
    let mut session = Session::new(Arc::clone(model), prompt);
    let watch = Watch {
        cancel,
        status: &|_| {},
        progress: &|_, _| {},
    };
    let trace_s = session.trace(&watch)?.seconds;
    let mut notes = p.notes.clone();
    let pairs: Vec<(Selector, Selector)> = match &settings.pairs {
        None => default_pairs(session.groups()),
        Some(ps) => {
            let mut kept = Vec::new();
            for (a, b) in ps {
                let parsed = a.parse::<Selector>().and_then(|a| Ok((a, b.parse()?)));
                match parsed {
                    Ok((x, y)) if session.select(&x).is_ok() && session.select(&y).is_ok() => {
                        kept.push((x, y))
                    }
                    _ => notes.push(format!("pair {a}:{b} skipped: not in this prompt")),
                }
            }
            kept
        }
    };
    if pairs.is_empty() {
        anyhow::bail!(
            "no source→target pair applies to this prompt (groups: {})",
            session.groups().summary()
        );
    }
    let answer_id = s
        .answer
        .as_deref()
        .map(|a| model.answer_token(a))
        .transpose()?;
    let trace = &session.trace(&watch)?.trace;
    let top1 = trace.top1_id;
    let base_prob = trace.base_prob(top1)?;
    let answer_prob = answer_id.map(|a| trace.base_prob(a)).transpose()?;
    let mut tokens = vec![None];
    if let Some(a) = answer_id.filter(|&a| a != top1) {
        tokens.push(Some(a));
    }
    let spec = SweepSpec {
        pairs,
        window: settings.window,
        align: settings.align,
        tokens,
        answers: settings.answers.clone(),
        heads: settings.heads.clone(),
    };
    let outcome = session.sweep(&spec, &watch)?;
    let answer_scores = outcome.answers;
    let mut lists = outcome.records;
    let answer_records = if lists.len() > 1 {
        lists.pop().unwrap_or_default()
    } else {
        vec![]
    };
    let records = lists.pop().unwrap_or_default();
    if cancel.load(Ordering::Relaxed) {
        anyhow::bail!("cancelled");
    }
    let seq_len = session.prompt.len();
    let token_counts: BTreeMap<String, usize> = session.map().group_sizes().into_iter().collect();
    Ok(SampleRecord {
        index: s.index,
        id: s.id.clone(),
        status: Status::Ok,
        error: None,
        task: s.task.clone(),
        question: s.prompt.clone(),
        answer: s.answer.clone(),
        answer_token_id: answer_id,
        top1_id: Some(top1),
        top1_text: model
            .tokenizer
            .as_ref()
            .and_then(|t| t.decode(&[top1], false).ok()),
        base_prob: Some(base_prob),
        answer_prob,
        correct: answer_id.map(|a| a == top1),
        seq_len,
        tokens: token_counts,
        notes,
        timings: Timings {
            prepare_s,
            trace_s,
            sweep_s: outcome.seconds,
        },
        records,
        answer_records,
        answer_scores,
    })
}

/// Writes `aggregate.csv`, `aggregate.json` and `tasks.csv` for `records` into `dir`, atomically, and
/// the dataset's sweep figure (`figure-sweep.{svg,pdf,png,csv,json}` + `figure-sweep.spec.json`: mean
/// relative change per pair with its 95% CI band) when any sample entered the averages.
pub fn write_aggregate(
    dir: &Path,
    records: &[SampleRecord],
    subset: Subset,
    metric: Metric,
) -> anyhow::Result<Aggregate> {
    let agg = aggregate(records, subset, metric);
    let w = |name: &str, body: &[u8]| crate::tensor_io::write_atomic(&dir.join(name), body);
    w("aggregate.csv", agg.rows_csv().as_bytes())?;
    w("tasks.csv", agg.tasks_csv().as_bytes())?;
    w(
        "aggregate.json",
        serde_json::to_string_pretty(&agg)?.as_bytes(),
    )?;
    if agg.rows.iter().any(|r| r.task == "all") {
        let settings: Option<RunSettings> = std::fs::read(dir.join("run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        write_aggregate_figure(dir, &agg, settings.as_ref())?;
    }
    Ok(agg)
}

/// The papers' central figure for a dataset: mean relative change against the layer, one curve per
/// pair, 95% CI bands, over the samples of `agg.subset`.
fn write_aggregate_figure(
    dir: &Path,
    agg: &Aggregate,
    settings: Option<&RunSettings>,
) -> anyhow::Result<Vec<PathBuf>> {
    use crate::export::{data::pair_curves, FigureKind, FigureSpec, Preset, Provenance};
    let data = pair_curves(agg.rows.iter().filter(|r| r.task == "all").map(|r| {
        (
            r.source.as_str(),
            r.target.as_str(),
            (r.layer as f64, r.mean, Some((r.ci_low, r.ci_high))),
        )
    }));
    let used = agg
        .tasks
        .iter()
        .find(|t| t.task == "all")
        .map_or(0, |t| t.used);
    let mut prov = Provenance::default()
        .with_setting("subset", serde_json::to_value(agg.subset)?)
        .with_setting("metric", serde_json::to_value(agg.metric)?)
        .with_setting("samples", used);
    let mut x_label = "layer (window centre)".to_string();
    if let Some(s) = settings {
        prov = prov
            .with_model(&s.model)
            .with_setting("manifest", s.manifest.display().to_string())
            .with_setting("pairs", serde_json::to_value(&s.pairs)?)
            .with_setting("window", s.window)
            .with_setting("align", serde_json::to_value(s.align)?)
            .with_setting("fps", s.fps);
        if let Some(f) = &s.family {
            prov = prov.with_family(f);
        }
        if let Some(p) = s.positions {
            prov = prov.with_setting("positions", p.name());
        }
        if !s.answers.is_empty() {
            prov = prov.with_setting("answers", serde_json::to_value(&s.answers)?);
        }
        if let Ok(p) = prov.clone().with_file(&s.manifest) {
            prov = p;
        }
        x_label = match s.align {
            Align::Center => format!("layer (centre of {}-layer window)", s.window),
            Align::Start => format!("layer (start of {}-layer window)", s.window),
        };
    }
    let mut spec = FigureSpec::new(FigureKind::SweepCurves, Preset::Single, prov);
    spec.x_label = x_label;
    spec.title = Some(format!("mean ± 95% CI, n = {used}"));
    Ok(crate::export::write_figure(
        &spec,
        &data,
        &dir.join("figure-sweep"),
    )?)
}

/// What `avflow merge` did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub out: PathBuf,
    pub samples: usize,
    pub failed: usize,
    pub duplicates: usize,
}

/// Merges the results of shard folders (or one folder holding several shards' files) into `out`:
/// checks the settings agree, keeps one record per sample (identical duplicates from an overlapping
/// resume are fine, conflicting ones are an error), orders by manifest index, writes the aggregate.
pub fn merge(
    dirs: &[PathBuf],
    out: &Path,
    subset: Subset,
    metric: Metric,
) -> anyhow::Result<(MergeSummary, Aggregate)> {
    anyhow::ensure!(
        !dirs.is_empty(),
        "give at least one results folder to merge"
    );
    let mut settings: Option<(PathBuf, serde_json::Value)> = None;
    let mut by_id: BTreeMap<String, SampleRecord> = BTreeMap::new();
    let mut duplicates = 0;
    for d in dirs {
        let rj = d.join("run.json");
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&rj).with_context(|| {
                format!("{} is not a batch output folder (no run.json)", d.display())
            })?)
            .with_context(|| format!("reading {}", rj.display()))?;
        match &settings {
            Some((first, v)) if *v != s => anyhow::bail!(
                "{} and {} were run with different settings; merge only shards of one run",
                first.display(),
                rj.display()
            ),
            Some(_) => {}
            None => settings = Some((rj.clone(), s)),
        }
        for r in read_dir_results(d)? {
            match by_id.get(&r.id) {
                Some(old) if old.without_timings() != r.without_timings() => anyhow::bail!(
                    "sample {} appears in two shards with different results ({}); merge shards of one run",
                    r.id,
                    d.display()
                ),
                Some(_) => duplicates += 1,
                None => {
                    by_id.insert(r.id.clone(), r);
                }
            }
        }
    }
    let mut records: Vec<SampleRecord> = by_id.into_values().collect();
    records.sort_by_key(|r| r.index);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut body = Vec::new();
    for r in &records {
        body.extend(serde_json::to_vec(r)?);
        body.push(b'\n');
    }
    crate::tensor_io::write_atomic(&out.join("results.jsonl"), &body)?;
    if let Some((_, s)) = &settings {
        crate::tensor_io::write_atomic(
            &out.join("run.json"),
            serde_json::to_string_pretty(s)?.as_bytes(),
        )?;
    }
    let agg = write_aggregate(out, &records, subset, metric)?;
    Ok((
        MergeSummary {
            out: out.to_path_buf(),
            samples: records.len(),
            failed: records.iter().filter(|r| r.status == Status::Error).count(),
            duplicates,
        },
        agg,
    ))
}
