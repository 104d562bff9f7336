//! The command-line edge of batch runs: `avflow sweep --manifest …` and `avflow merge …`, with a
//! terminal progress bar. The work itself is [`avflow::batch::run`].

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use avflow::batch::manifest::{Manifest, Shard};
use avflow::batch::run::{merge, run_manifest, write_aggregate, BatchEvent, RunSettings};
use avflow::batch::store::read_dir_results;
use avflow::model::LoadOptions;
use avflow::session::Model;

use super::analyse::SweepArgs;

/// `avflow sweep --manifest items.jsonl --model M --out DIR [--resume] [--shard i/n]`.
pub fn sweep_manifest(a: &SweepArgs, opts: &LoadOptions) -> anyhow::Result<serde_json::Value> {
    let manifest_path = a.manifest.as_ref().context("--manifest is required")?;
    let manifest = Manifest::read(manifest_path)?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::ALL,
    };
    let pairs = a
        .pairs
        .as_deref()
        .map(avflow::session::parse_pairs)
        .transpose()?
        .map(|ps| {
            ps.iter()
                .map(|(s, t)| (s.to_string(), t.to_string()))
                .collect()
        });
    let model = std::sync::Arc::new(Model::open_with(&a.model, opts)?);
    super::loaded(&model);
    let settings = RunSettings {
        model: a.model.clone(),
        manifest: manifest_path.clone(),
        pairs,
        window: a.window,
        align: a.align,
        fps: a.sampling.fps.unwrap_or_else(|| model.arch().default_fps()),
        min_pixels: a.sampling.min_pixels,
        max_pixels: a.sampling.max_pixels,
        use_audio_in_video: !a.sampling.no_audio_in_video,
        option_prefix: a.option_prefix.clone(),
        dtype: format!("{:?}", model.dtype).to_lowercase(),
        family: Some(model.arch().family().to_string()),
        positions: super::positions_setting(&model),
        answers: a.answers.spec()?,
        heads: avflow::session::heads_of(
            a.heads
                .as_deref()
                .map(avflow::session::parse_heads)
                .transpose()?
                .as_deref(),
            model.decoder().num_heads(),
        )?,
        avflow_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let cancel = AtomicBool::new(false);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} sweep [{bar:30}] {pos}/{len} samples  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut failed = 0usize;
    let summary = run_manifest(
        &model,
        &manifest,
        &settings,
        shard,
        &a.out,
        a.resume,
        &cancel,
        &mut |ev| match ev {
            BatchEvent::Started { todo, skipped } => {
                bar.set_length(*todo as u64);
                if *skipped > 0 {
                    bar.println(format!("resuming: {skipped} samples already done"));
                }
            }
            BatchEvent::Sample { id, ok, .. } => {
                if !ok {
                    failed += 1;
                    bar.println(format!("sample {id} failed (recorded; see results)"));
                }
                bar.set_message(format!("{failed} failed, last {id}"));
                bar.inc(1);
            }
        },
    )?;
    bar.finish_and_clear();
    let mut report = serde_json::to_value(&summary)?;
    if shard.count == 1 {
        let records = read_dir_results(&a.out)?;
        let agg = write_aggregate(&a.out, &records, a.subset, a.metric)?;
        report["aggregate"] = aggregate_report(&agg);
    } else {
        report["next"] = format!(
            "when every shard has finished: avflow merge {} --out MERGED",
            a.out.display()
        )
        .into();
    }
    Ok(report)
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Output folders of `avflow sweep --manifest` (shards), one or several.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Folder for the merged results.jsonl and aggregates.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub subset: avflow::batch::Subset,
    #[arg(long, value_enum, default_value = "predicted")]
    pub metric: avflow::batch::Metric,
}

/// `avflow merge DIR… --out D`.
pub fn merge_cmd(a: &MergeArgs) -> anyhow::Result<serde_json::Value> {
    let (summary, agg) = merge(&a.dirs, &a.out, a.subset, a.metric)?;
    let mut v = serde_json::to_value(&summary)?;
    v["aggregate"] = aggregate_report(&agg);
    Ok(v)
}

/// The aggregate's headline for the command's JSON, with a hint when no sample entered the averages.
fn aggregate_report(agg: &avflow::batch::Aggregate) -> serde_json::Value {
    let all = agg.tasks.iter().find(|t| t.task == "all");
    let used = all.map_or(0, |t| t.used);
    let mut v = serde_json::json!({
        "subset": agg.subset, "metric": agg.metric, "rows": agg.rows.len(), "samples_averaged": used,
        "accuracy": all.and_then(|t| t.accuracy),
        "files": ["aggregate.csv", "aggregate.json", "tasks.csv"],
    });
    if used == 0 {
        let why = if agg.subset == avflow::batch::Subset::Correct {
            "no sample was answered correctly; average all samples with --subset all"
        } else {
            "no sample succeeded; see the errors in results.jsonl"
        };
        eprintln!("note: the aggregate is empty: {why}");
        v["note"] = why.into();
    }
    v
}
