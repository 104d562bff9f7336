//! Figures and data of a flow analysis, ready for a paper: sweep curves (with optional 95 % bands),
//! layers × tokens heatmaps, drop curves, logit lens and attention mass, as SVG, PDF and 300-dpi PNG plus
//! the data as CSV and JSON.
//!
//! Every figure is written with a spec (`stem.spec.json`, also embedded in the SVG's `<metadata>` and the
//! PDF's document info) that records how it was made — model, media hashes, question, settings, avflow
//! version — and names its data file. `avflow figure stem.spec.json` redraws the figure from the spec and
//! data alone, byte for byte: nothing written depends on the time, the machine's fonts or hash seeds.
//!
//! The SVG is drawn once (plotters, `draw`) and is the master; the PDF (svg2pdf) and the PNG (resvg) are
//! made from it (`render`), so the three never disagree. The colours come from `palette`, which the app
//! uses too.

pub mod data;
pub mod draw;
pub mod palette;
pub mod render;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use data::{
    attention_curves, attention_heatmap, drop_curves, lens_curves, pair_series, sweep_curves,
    token_groups_from_spans, AttentionOutput, Band, Colormap, CurveData, CurvePoint, CurveSeries,
    DropPoint, FigureData, HeatmapData, LensOutput, LineStyle,
};

use crate::error::{Error, Result};
use crate::flow::sweep::{Align, SweepRecord};

/// The one font of every figure (SIL OFL; see assets/fonts/), compiled in so a regenerated figure does
/// not depend on where avflow runs. Liberation Sans has Helvetica's metrics, the usual figure font.
pub const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/LiberationSans-Regular.ttf");
pub const FONT_FAMILY: &str = "Liberation Sans";

/// What a figure shows; picks the default axis labels and which data it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FigureKind {
    /// Relative change of the answer probability against the layer, one curve per source → target pair.
    SweepCurves,
    /// A layers × tokens matrix of a metric.
    Heatmap,
    /// Answer probability against the layer from which tokens are dropped.
    DropCurve,
    /// Answer-token (and top-1) probability read from each layer.
    LogitLens,
    /// Attention mass from the query rows to each group, per layer.
    AttentionMass,
    /// Attention from the query rows to every token, per layer (a heatmap).
    AttentionMap,
}

impl FigureKind {
    fn is_heatmap(self) -> bool {
        matches!(self, FigureKind::Heatmap | FigureKind::AttentionMap)
    }

    /// Default `(x label, y label)`, with units.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            FigureKind::SweepCurves => ("layer (window centre)", "change in p(answer) (%)"),
            FigureKind::Heatmap | FigureKind::AttentionMap => ("token position", "layer"),
            FigureKind::DropCurve => ("tokens dropped from layer", "p(answer)"),
            FigureKind::LogitLens => ("layer", "probability"),
            FigureKind::AttentionMass => ("layer", "attention mass (fraction)"),
        }
    }
}

/// Paper sizes: widths of one and two columns of the usual two-column templates (ACL, IEEE, NeurIPS-like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 3.25 in wide.
    Single,
    /// 6.75 in wide.
    Double,
}

impl Preset {
    pub fn width_in(self) -> f64 {
        match self {
            Preset::Single => 3.25,
            Preset::Double => 6.75,
        }
    }

    fn default_height_in(self, heatmap: bool) -> f64 {
        match (self, heatmap) {
            (Preset::Single, false) => 2.4,
            (Preset::Double, false) => 2.6,
            (Preset::Single, true) => 2.8,
            (Preset::Double, true) => 3.2,
        }
    }
}

/// Files besides the data JSON (always written: regeneration reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Svg,
    Pdf,
    Png,
    Csv,
}

fn all_formats() -> Vec<Format> {
    vec![Format::Svg, Format::Pdf, Format::Png, Format::Csv]
}

fn yes() -> bool {
    true
}

fn default_dpi() -> u32 {
    300
}

/// A file the figure was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaHash {
    pub path: String,
    pub sha256: String,
}

/// How the data behind a figure was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Model folder or hub id as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model family (`qwen2_5_omni`, `video_salmonn2_plus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// See [`weights_sha256`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// Media files and prepared inputs, with their SHA-256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<MediaHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// Pairs, window, align, token, clips… whatever the command was run with.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// The avflow that computed the data.
    pub avflow_version: String,
}

impl Default for Provenance {
    fn default() -> Self {
        Self {
            model: None,
            family: None,
            revision: None,
            weights_sha256: None,
            media: Vec::new(),
            question: None,
            settings: serde_json::Map::new(),
            avflow_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl Provenance {
    /// The model as given on the command line (`owner/name@rev` gives the revision).
    pub fn with_model(mut self, model: &str) -> Self {
        let is_dir = Path::new(model).is_dir();
        match model.rsplit_once('@') {
            Some((id, rev)) if !is_dir && !rev.is_empty() => {
                self.model = Some(id.to_string());
                self.revision = Some(rev.to_string());
            }
            _ => self.model = Some(model.to_string()),
        }
        self
    }

    pub fn with_family(mut self, family: &str) -> Self {
        self.family = Some(family.to_string());
        self
    }

    /// Adds a file (media or prepared inputs) with its SHA-256.
    pub fn with_file(mut self, path: &Path) -> Result<Self> {
        self.media.push(MediaHash {
            path: path.display().to_string(),
            sha256: sha256_file(path)?,
        });
        Ok(self)
    }

    pub fn with_setting(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.settings.insert(key.to_string(), value.into());
        self
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("hashing {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("hashing {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// A fingerprint of a model folder: SHA-256 over `config.json` and every `*.safetensors` file, as the
/// lines `name sha256` sorted by name. Reads every weight byte (a few seconds per GB): for provenance of
/// a local checkpoint, where no hub revision names it.
pub fn weights_sha256(dir: &Path) -> Result<String> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n == "config.json" || n.ends_with(".safetensors"))
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for n in &names {
        h.update(format!("{n} {}\n", sha256_file(&dir.join(n))?).as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Everything needed to draw a figure again, except its data (in the file `data` names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureSpec {
    pub kind: FigureKind,
    pub preset: Preset,
    /// Besides the data JSON, which is always written.
    #[serde(default = "all_formats")]
    pub formats: Vec<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub x_label: String,
    pub y_label: String,
    /// Draw the curves' bands (95 % CI) where the data has them.
    #[serde(default = "yes")]
    pub band: bool,
    /// Default: by preset and kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height_in: Option<f64>,
    /// PNG resolution.
    #[serde(default = "default_dpi")]
    pub dpi: u32,
    /// The data file, relative to this spec (set when written).
    #[serde(default)]
    pub data: String,
    /// What the drawing did to the data (e.g. heatmap columns averaged); set when written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub provenance: Provenance,
}

impl FigureSpec {
    /// A spec with the kind's default labels, every format, 300 dpi, bands on.
    pub fn new(kind: FigureKind, preset: Preset, provenance: Provenance) -> Self {
        let (x, y) = kind.labels();
        Self {
            kind,
            preset,
            formats: all_formats(),
            title: None,
            x_label: x.into(),
            y_label: y.into(),
            band: true,
            height_in: None,
            dpi: 300,
            data: String::new(),
            notes: Vec::new(),
            provenance,
        }
    }

    /// Width and height in inches.
    pub fn size_in(&self, data: &FigureData) -> (f64, f64) {
        let heat = matches!(data, FigureData::Heatmap(_));
        (
            self.preset.width_in(),
            self.height_in
                .unwrap_or_else(|| self.preset.default_height_in(heat)),
        )
    }

    fn check(&self, data: &FigureData) -> Result<()> {
        let heat = matches!(data, FigureData::Heatmap(_));
        if heat != self.kind.is_heatmap() {
            return Err(Error::Figure {
                reason: format!(
                    "a {:?} figure cannot plot {} data",
                    self.kind,
                    if heat { "heatmap" } else { "curve" }
                ),
                fix: "use kind heatmap or attention_map for heatmaps, a curve kind for curves"
                    .into(),
            });
        }
        if !(72..=2400).contains(&self.dpi) {
            return Err(Error::Figure {
                reason: format!("dpi {} is out of range", self.dpi),
                fix: "use 300 (or 600 for line art), between 72 and 2400".into(),
            });
        }
        if self
            .height_in
            .is_some_and(|h| !(h.is_finite() && (0.5..=20.0).contains(&h)))
        {
            return Err(Error::Figure {
                reason: "height_in must be between 0.5 and 20 inches".into(),
                fix: "leave it out for the preset's height".into(),
            });
        }
        Ok(())
    }
}

/// What the drawing does to the data, said in the spec (and so in the metadata).
fn notes(data: &FigureData) -> Vec<String> {
    match data {
        FigureData::Heatmap(h) if h.cols > draw::MAX_HEATMAP_BINS => {
            let (w, bins) = h.binned(draw::MAX_HEATMAP_BINS);
            vec![format!(
                "{} token columns averaged in bins of {w} ({} bins) for drawing; the data file has every column",
                h.cols,
                bins.len()
            )]
        }
        _ => Vec::new(),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `stem` + `suffix` (`fig` + `.svg`), keeping non-UTF-8 stems intact.
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `stem.json` (data), `stem.spec.json` and the spec's formats (`stem.svg`, `.pdf`, `.png`,
/// `.csv`), each atomically; returns the paths written, data first and spec last.
///
/// The written spec names `stem.json` as its data and carries `notes` on what the drawing did, so the
/// spec given here may leave `data` and `notes` empty.
pub fn write_figure(spec: &FigureSpec, data: &FigureData, out_stem: &Path) -> Result<Vec<PathBuf>> {
    data.validate()?;
    spec.check(data)?;
    let name = out_stem
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Figure {
            reason: format!("{} is no file stem", out_stem.display()),
            fix: "give a path like figures/sweep (a UTF-8 file name, no extension needed)".into(),
        })?;
    let mut spec = spec.clone();
    spec.data = format!("{name}.json");
    spec.notes = notes(data);
    let json_err = |e: serde_json::Error| Error::Other(format!("serialising the figure: {e}"));
    let spec_json = serde_json::to_string_pretty(&spec).map_err(json_err)? + "\n";
    let spec_compact = serde_json::to_string(&spec).map_err(json_err)?;
    let data_json = serde_json::to_string(data).map_err(json_err)? + "\n";
    let title = spec.title.clone().unwrap_or_else(|| {
        format!(
            "avflow {}",
            serde_json::to_value(spec.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        )
    });
    let mut out: Vec<(PathBuf, Vec<u8>)> =
        vec![(with_suffix(out_stem, ".json"), data_json.into_bytes())];
    let wants = |f: Format| spec.formats.contains(&f);
    if wants(Format::Csv) {
        out.push((with_suffix(out_stem, ".csv"), data.to_csv().into_bytes()));
    }
    if wants(Format::Svg) || wants(Format::Pdf) || wants(Format::Png) {
        let svg = draw::svg(&spec, data, &xml_escape(&title), &xml_escape(&spec_compact))?;
        if wants(Format::Pdf) || wants(Format::Png) {
            let tree = render::tree(&svg)?;
            if wants(Format::Pdf) {
                let keywords = format!(
                    "avflow, {title}, {}",
                    spec.provenance
                        .model
                        .as_deref()
                        .unwrap_or("model not recorded")
                );
                let creator = format!("avflow {}", spec.provenance.avflow_version);
                let info = render::PdfInfo {
                    title: &title,
                    subject: &spec_compact,
                    keywords: &keywords,
                    creator: &creator,
                };
                out.push((with_suffix(out_stem, ".pdf"), render::pdf(&tree, &info)?));
            }
            if wants(Format::Png) {
                out.push((with_suffix(out_stem, ".png"), render::png(&tree, spec.dpi)?));
            }
        }
        if wants(Format::Svg) {
            out.push((with_suffix(out_stem, ".svg"), svg.into_bytes()));
        }
    }
    out.push((with_suffix(out_stem, ".spec.json"), spec_json.into_bytes()));
    for (path, bytes) in &out {
        crate::tensor_io::write_atomic(path, bytes)?;
    }
    Ok(out.into_iter().map(|(p, _)| p).collect())
}

/// Reads `stem.spec.json` and the data file it names, and writes the figure again into `out_dir`
/// (default: beside the spec) under the same stem. Same avflow, same bytes.
pub fn regenerate(spec_path: &Path, out_dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let spec: FigureSpec = serde_json::from_str(&read(spec_path)?).map_err(|e| Error::Figure {
        reason: format!("{} is not a figure spec: {e}", spec_path.display()),
        fix: "pass the stem.spec.json written beside a figure".into(),
    })?;
    let dir = spec_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let data_path = dir.join(&spec.data);
    let text = std::fs::read_to_string(&data_path).map_err(|e| Error::Figure {
        reason: format!(
            "{} names its data {}, which cannot be read: {e}",
            spec_path.display(),
            data_path.display()
        ),
        fix: "keep the data JSON written with the figure beside its spec".into(),
    })?;
    let data: FigureData = serde_json::from_str(&text).map_err(|e| Error::Figure {
        reason: format!("{} is not figure data: {e}", data_path.display()),
        fix: "keep the data JSON written with the figure beside its spec".into(),
    })?;
    let file = spec_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("figure.spec.json");
    let stem = file
        .strip_suffix(".spec.json")
        .or_else(|| file.strip_suffix(".json"))
        .unwrap_or(file);
    write_figure(&spec, &data, &out_dir.unwrap_or(dir).join(stem)).map_err(|e| match e {
        // What the data holds is checked while drawing: say which file held it.
        Error::Figure { reason, fix } => Error::Figure {
            reason: format!(
                "{} (with {}): {reason}",
                data_path.display(),
                spec_path.display()
            ),
            fix,
        },
        other => other,
    })
}

/// A sweep's records as a figure (`avflow sweep … --figure STEM`): relative change per pair, the axis
/// named after the window alignment, the settings in the provenance.
pub fn sweep_figure(
    records: &[SweepRecord],
    window: usize,
    align: Align,
    provenance: Provenance,
    preset: Preset,
    out_stem: &Path,
) -> Result<Vec<PathBuf>> {
    let (spec, data) = sweep_spec(records, window, align, provenance, preset);
    write_figure(&spec, &data, out_stem)
}

/// The spec and data [`sweep_figure`] writes, apart from the writing: the app builds them on the UI
/// thread (cheap) and writes them on a helper thread, and both sides then write the same bytes.
pub fn sweep_spec(
    records: &[SweepRecord],
    window: usize,
    align: Align,
    provenance: Provenance,
    preset: Preset,
) -> (FigureSpec, FigureData) {
    let pairs: Vec<String> = crate::flow::sweep::record_pairs(records)
        .iter()
        .map(|(s, t)| format!("{s}:{t}"))
        .collect();
    let provenance = provenance
        .with_setting("pairs", pairs.join(","))
        .with_setting("window", window)
        .with_setting(
            "align",
            match align {
                Align::Center => "center",
                Align::Start => "start",
            },
        )
        .with_setting("token", records.first().map(|r| r.token_id));
    let mut spec = FigureSpec::new(FigureKind::SweepCurves, preset, provenance);
    spec.x_label = match align {
        Align::Center => format!("layer (centre of {window}-layer window)"),
        Align::Start => format!("layer (start of {window}-layer window)"),
    };
    (spec, sweep_curves(records))
}

/// The heads view as a figure (the app's Heads pane): each query head's attention mass from `rows` on each
/// group, layers × heads, the groups side by side ([`data::heads_groups_heatmap`]).
pub fn heads_spec(
    per_head: &[Vec<std::collections::BTreeMap<String, f32>>],
    groups: &[String],
    rows: &str,
    provenance: Provenance,
    preset: Preset,
) -> Result<(FigureSpec, FigureData)> {
    let data = data::heads_groups_heatmap(per_head, groups)?;
    let provenance = provenance
        .with_setting("rows", rows)
        .with_setting("groups", groups.join(","));
    let mut spec = FigureSpec::new(FigureKind::Heatmap, preset, provenance);
    spec.x_label = format!("query head ({})", groups.join(", "));
    spec.y_label = "layer".into();
    spec.title = Some(format!("attention from {rows}, per head"));
    Ok((spec, data))
}

/// One run of a comparison: what it ran on and its sweep.
#[derive(Debug, Clone, Copy)]
pub struct CompareRun<'a> {
    /// The model as the user gave it (folder or hub id).
    pub model: &'a str,
    pub family: &'a str,
    pub inputs: &'a Path,
    pub layers: usize,
    pub records: &'a [SweepRecord],
}

/// The comparison figure (`avflow compare --figure STEM`, and the app's Compare pane): both sweeps on one
/// depth axis, A solid and B dashed, with a provenance naming both models and inputs (`avflow figure`
/// redraws it). The inputs' hashes are the caller's to add (`Provenance::with_file`), off the UI thread.
pub fn compare_spec(
    a: CompareRun<'_>,
    b: CompareRun<'_>,
    window: usize,
    provenance: Provenance,
    preset: Preset,
) -> (FigureSpec, FigureData) {
    let pairs: Vec<String> = crate::flow::sweep::record_pairs(a.records)
        .iter()
        .map(|(s, t)| format!("{s}:{t}"))
        .collect();
    let provenance = provenance
        .with_model(a.model)
        .with_family(a.family)
        .with_setting("a_model", a.model)
        .with_setting("a_inputs", a.inputs.display().to_string())
        .with_setting("a_layers", a.layers)
        .with_setting("b_model", b.model)
        .with_setting("b_family", b.family)
        .with_setting("b_inputs", b.inputs.display().to_string())
        .with_setting("b_layers", b.layers)
        .with_setting("pairs", pairs.join(","))
        .with_setting("window", window);
    let data = data::compare_curves(a.records, a.layers, b.records, b.layers);
    let mut spec = FigureSpec::new(FigureKind::SweepCurves, preset, provenance);
    spec.x_label = format!("depth (layer / (layers − 1)), {window}-layer windows");
    spec.title = Some(format!(
        "A: {} ({} layers) vs B: {} ({} layers)",
        short_model(a.model),
        a.layers,
        short_model(b.model),
        b.layers
    ));
    (spec, data)
}

/// The last part of a model folder or hub id, for a title.
pub fn short_model(model: &str) -> &str {
    model
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(model)
}

/// A figure from the JSON a command printed or wrote: `sweep --out x.json` records (sweep_curves),
/// `lens` (logit_lens), `attention` (attention_mass), `drop` outputs as an array or one per line
/// (drop_curve). Heatmaps need token groups, which these outputs lack: build them with the library.
pub fn figure_from_output(
    kind: FigureKind,
    text: &str,
    preset: Preset,
    provenance: Provenance,
) -> Result<(FigureSpec, FigureData)> {
    fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| Error::Figure {
            reason: format!("not {what}: {e}"),
            fix: format!("pass the JSON that {what} prints or writes"),
        })
    }
    let data = match kind {
        FigureKind::SweepCurves => sweep_curves(&parse::<Vec<SweepRecord>>(
            text,
            "avflow sweep --out x.json",
        )?),
        FigureKind::LogitLens => lens_curves(&parse(text, "avflow lens")?, true),
        FigureKind::AttentionMass => attention_curves(&parse(text, "avflow attention")?),
        FigureKind::DropCurve => {
            let trimmed = text.trim_start();
            let points: Vec<DropPoint> = if trimmed.starts_with('[') {
                parse(text, "avflow drop (an array of its outputs)")?
            } else {
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| parse(l, "avflow drop (one output per line)"))
                    .collect::<Result<_>>()?
            };
            drop_curves(&points)
        }
        FigureKind::Heatmap | FigureKind::AttentionMap => {
            return Err(Error::Figure {
                reason: "heatmaps need each token's group, which command outputs do not carry"
                    .into(),
                fix: "build HeatmapData with avflow::export::attention_heatmap and write_figure"
                    .into(),
            })
        }
    };
    Ok((FigureSpec::new(kind, preset, provenance), data))
}
