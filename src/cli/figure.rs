//! `avflow figure`: redraw a figure from its spec, or draw one from a command's JSON output.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};

#[derive(clap::Args, Debug)]
pub struct FigureArgs {
    /// A figure spec (`stem.spec.json`, written beside every figure): redraw that figure.
    #[arg(required_unless_present = "from")]
    pub spec: Option<PathBuf>,
    /// With a spec: where the files go (default: beside the spec).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Instead of a spec: a JSON output of `sweep` (records), `lens`, `attention`, or `drop` (an array or
    /// one object per line, one per --from-layer).
    #[arg(long, conflicts_with = "spec", requires_all = ["kind", "out"])]
    pub from: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub kind: Option<avflow::export::FigureKind>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: avflow::export::Preset,
    /// Output stem: writes STEM.svg, .pdf, .png, .csv, .json and .spec.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub title: Option<String>,
}

/// `avflow figure SPEC [--out-dir D]` or `avflow figure --from OUTPUT.json --kind K --out STEM`.
pub fn figure_cmd(a: &FigureArgs) -> anyhow::Result<serde_json::Value> {
    let t0 = Instant::now();
    let files = match (&a.spec, &a.from, a.kind, &a.out) {
        (Some(spec), _, _, _) => avflow::export::regenerate(spec, a.out_dir.as_deref())?,
        (None, Some(from), Some(kind), Some(out)) => {
            let text = std::fs::read_to_string(from)
                .with_context(|| format!("reading {}", from.display()))?;
            let prov = avflow::export::Provenance::default()
                .with_file(from)?
                .with_setting("from", from.display().to_string());
            let (mut spec, data) = avflow::export::figure_from_output(kind, &text, a.preset, prov)?;
            spec.title = a.title.clone();
            avflow::export::write_figure(&spec, &data, out)?
        }
        _ => bail!("give a spec, or --from FILE --kind KIND --out STEM"),
    };
    Ok(serde_json::json!({"files": files, "seconds": t0.elapsed().as_secs_f64()}))
}
