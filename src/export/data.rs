//! What a figure plots, independent of where it came from: curves (sweeps, drop curves, logit lens,
//! attention mass per group) and layers × tokens heatmaps. Single runs and aggregates (mean with a 95 %
//! band) use the same types, so one drawing code serves both; converters read the records and JSON the
//! flow commands already write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::sweep::SweepRecord;

/// How a curve is stroked. Sweeps colour by source group and stroke by target, so `audio → last` and
/// `audio → question` share orange but not the dash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineStyle {
    #[default]
    Solid,
    Dashed,
    Dotted,
}

/// A lower and upper bound per point (e.g. a 95 % confidence interval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

/// One curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSeries {
    /// Legend text, e.g. `audio → last`.
    pub label: String,
    /// Picks the colour: a group name (`audio`, …) gets its fixed colour (see `palette`).
    pub group_key: String,
    #[serde(default)]
    pub style: LineStyle,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<Band>,
}

/// Curves sharing axes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CurveData {
    pub series: Vec<CurveSeries>,
    /// A dashed grey horizontal line: 0 % for relative changes, the undropped probability for drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_y: Option<f64>,
    /// Legend text of the reference line (none: no legend entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_label: Option<String>,
    /// Fixed y range (e.g. `[0, 1]` for probabilities); none: fitted to the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_range: Option<[f64; 2]>,
}

/// Colour scale of a heatmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    /// Viridis, for non-negative values (attention).
    Sequential,
    /// Blue–white–red centred on 0, for signed values (changes).
    Diverging,
}

/// `(x, y, optional (lo, hi))`: one point of a curve with its band.
pub type CurvePoint = (f64, f64, Option<(f64, f64)>);

/// Columns `start..end` of a heatmap drawn as one cell per row: their majority group and per-row means.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub start: usize,
    pub end: usize,
    pub group: String,
    pub means: Vec<f64>,
}

/// A layers × tokens matrix of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatmapData {
    /// Layers (drawn bottom to top).
    pub rows: usize,
    /// Token positions (left to right).
    pub cols: usize,
    /// Row-major, `rows × cols`.
    pub values: Vec<f64>,
    /// The group of each token position (`cols` entries; colours the token axis).
    pub token_groups: Vec<String>,
    /// Colour-bar label with its unit.
    pub value_label: String,
    /// Default: diverging when the values take both signs, sequential otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colormap: Option<Colormap>,
}

impl HeatmapData {
    pub fn colormap(&self) -> Colormap {
        self.colormap.unwrap_or_else(|| {
            let neg = self.values.iter().any(|&v| v < 0.0);
            let pos = self.values.iter().any(|&v| v > 0.0);
            if neg && pos {
                Colormap::Diverging
            } else {
                Colormap::Sequential
            }
        })
    }

    /// The bin width and the bins, at most `max_bins`: columns averaged
    /// so a 5 000-token prompt draws as ≤ `max_bins` cells per row (more than the printer's dots would be
    /// lost anyway). The bin's group is its most frequent one (first on ties).
    pub fn binned(&self, max_bins: usize) -> (usize, Vec<Bin>) {
        let width = self.cols.div_ceil(max_bins.max(1)).max(1);
        let mut out = Vec::with_capacity(self.cols.div_ceil(width));
        let mut c0 = 0;
        while c0 < self.cols {
            let c1 = (c0 + width).min(self.cols);
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for g in &self.token_groups[c0..c1] {
                match counts.iter_mut().find(|(n, _)| *n == g.as_str()) {
                    Some((_, k)) => *k += 1,
                    None => counts.push((g, 1)),
                }
            }
            let group = counts
                .iter()
                .fold(
                    ("", 0),
                    |best, &(n, k)| if k > best.1 { (n, k) } else { best },
                )
                .0
                .to_string();
            let means = (0..self.rows)
                .map(|r| {
                    let row = &self.values[r * self.cols..(r + 1) * self.cols];
                    row[c0..c1].iter().sum::<f64>() / (c1 - c0) as f64
                })
                .collect();
            out.push(Bin {
                start: c0,
                end: c1,
                group,
                means,
            });
            c0 = c1;
        }
        (width, out)
    }
}

/// What one figure plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FigureData {
    Curves(CurveData),
    Heatmap(HeatmapData),
}

fn bad(what: String) -> Error {
    Error::Figure {
        reason: what,
        fix: "pass finite values of matching lengths".into(),
    }
}

impl FigureData {
    /// Lengths agree and every value is finite: JSON has no NaN, and the data file must read back.
    pub fn validate(&self) -> Result<()> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        match self {
            FigureData::Curves(c) => {
                if c.series.is_empty() {
                    return Err(bad("no curves to plot".into()));
                }
                for s in &c.series {
                    let n = s.x.len();
                    if n == 0 || s.y.len() != n {
                        return Err(bad(format!(
                            "curve {:?}: {} x values but {} y values",
                            s.label,
                            n,
                            s.y.len()
                        )));
                    }
                    if !finite(&s.x) || !finite(&s.y) {
                        return Err(bad(format!("curve {:?} has a NaN or infinity", s.label)));
                    }
                    if let Some(b) = &s.band {
                        if b.lo.len() != n || b.hi.len() != n || !finite(&b.lo) || !finite(&b.hi) {
                            return Err(bad(format!(
                                "curve {:?}: its band needs {n} finite bounds on each side",
                                s.label
                            )));
                        }
                    }
                }
                let refs = [c.reference_y].into_iter().flatten();
                let range = c.y_range.into_iter().flatten();
                if !refs.chain(range).all(f64::is_finite) {
                    return Err(bad("reference line or y range is not finite".into()));
                }
                if c.y_range.is_some_and(|[a, b]| a >= b) {
                    return Err(bad("y range must go from low to high".into()));
                }
            }
            FigureData::Heatmap(h) => {
                if h.rows == 0 || h.cols == 0 {
                    return Err(bad("empty heatmap".into()));
                }
                if h.values.len() != h.rows * h.cols || h.token_groups.len() != h.cols {
                    return Err(bad(format!(
                        "heatmap {}×{} needs {} values and {} token groups (has {} and {})",
                        h.rows,
                        h.cols,
                        h.rows * h.cols,
                        h.cols,
                        h.values.len(),
                        h.token_groups.len()
                    )));
                }
                if !finite(&h.values) {
                    return Err(bad("heatmap has a NaN or infinity".into()));
                }
            }
        }
        Ok(())
    }

    /// The data as a tidy CSV: `series,group,x,y,lo,hi` for curves, `layer,token,group,value` for heatmaps.
    pub fn to_csv(&self) -> String {
        let mut s = String::new();
        match self {
            FigureData::Curves(c) => {
                s.push_str("series,group,x,y,lo,hi\n");
                for c in &c.series {
                    for i in 0..c.x.len() {
                        let (lo, hi) = c
                            .band
                            .as_ref()
                            .map(|b| (b.lo[i].to_string(), b.hi[i].to_string()))
                            .unwrap_or_default();
                        s.push_str(&format!(
                            "{},{},{},{},{lo},{hi}\n",
                            csv_field(&c.label),
                            csv_field(&c.group_key),
                            c.x[i],
                            c.y[i]
                        ));
                    }
                }
            }
            FigureData::Heatmap(h) => {
                s.push_str("layer,token,group,value\n");
                for r in 0..h.rows {
                    for c in 0..h.cols {
                        s.push_str(&format!(
                            "{r},{c},{},{}\n",
                            csv_field(&h.token_groups[c]),
                            h.values[r * h.cols + c]
                        ));
                    }
                }
            }
        }
        s
    }
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Stroke of a sweep curve by its target: solid into the answer position, dashed into the question.
pub fn target_style(target: &str) -> LineStyle {
    match target {
        "last" => LineStyle::Solid,
        "question" => LineStyle::Dashed,
        _ => LineStyle::Dotted,
    }
}

/// One sweep curve for `source → target` from `(layer, value, optional (lo, hi))` points, coloured by the
/// source group and stroked by the target. The batch sweeps build their mean ± 95 % CI curves with this.
pub fn pair_series(source: &str, target: &str, points: &[CurvePoint]) -> CurveSeries {
    let mut pts = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let band = pts.iter().all(|p| p.2.is_some()).then(|| Band {
        lo: pts.iter().map(|p| p.2.map_or(p.1, |b| b.0)).collect(),
        hi: pts.iter().map(|p| p.2.map_or(p.1, |b| b.1)).collect(),
    });
    CurveSeries {
        label: format!("{source} → {target}"),
        group_key: source.to_string(),
        style: target_style(target),
        x: pts.iter().map(|p| p.0).collect(),
        y: pts.iter().map(|p| p.1).collect(),
        band: band.filter(|_| !pts.is_empty()),
    }
}

/// Sweep records → one curve of relative change (%) per pair, in the order the pairs first appear.
pub fn sweep_curves(records: &[SweepRecord]) -> FigureData {
    pair_curves(records.iter().map(|r| {
        (
            r.source.as_str(),
            r.target.as_str(),
            (r.layer as f64, f64::from(r.rel_change), None),
        )
    }))
}

/// `(source, target, (layer, value, optional band))` points → one curve per pair (in the order pairs
/// first appear) around a 0 % reference line: single sweeps and dataset means (with their CI) alike.
pub fn pair_curves<'a>(
    points: impl IntoIterator<Item = (&'a str, &'a str, CurvePoint)>,
) -> FigureData {
    let mut pairs: Vec<((&str, &str), Vec<CurvePoint>)> = Vec::new();
    for (s, t, p) in points {
        match pairs.iter_mut().find(|(k, _)| *k == (s, t)) {
            Some((_, v)) => v.push(p),
            None => pairs.push(((s, t), vec![p])),
        }
    }
    FigureData::Curves(CurveData {
        series: pairs
            .iter()
            .map(|((s, t), pts)| pair_series(s, t, pts))
            .collect(),
        reference_y: Some(0.0),
        reference_label: None,
        y_range: None,
    })
}

/// One `avflow drop` result (the fields of its JSON that a drop curve needs; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropPoint {
    pub groups: String,
    pub from_layer: usize,
    pub prob: f64,
    pub base_prob: f64,
}

/// Drop results (one per `--from-layer`) → answer probability against the first layer without the
/// dropped groups, one curve per group set, with the undropped probability as the reference line.
pub fn drop_curves(points: &[DropPoint]) -> FigureData {
    let mut sets: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for p in points {
        let v = (p.from_layer as f64, p.prob);
        match sets.iter_mut().find(|(g, _)| *g == p.groups) {
            Some((_, pts)) => pts.push(v),
            None => sets.push((&p.groups, vec![v])),
        }
    }
    let series = sets
        .iter()
        .enumerate()
        .map(|(i, (g, pts))| {
            let mut pts = pts.clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            CurveSeries {
                label: format!("{} dropped", g.replace(',', " + ")),
                group_key: if g.contains(',') {
                    format!("drop-set-{i}")
                } else {
                    g.to_string()
                },
                style: LineStyle::Solid,
                x: pts.iter().map(|p| p.0).collect(),
                y: pts.iter().map(|p| p.1).collect(),
                band: None,
            }
        })
        .collect();
    FigureData::Curves(CurveData {
        series,
        reference_y: points.first().map(|p| p.base_prob),
        reference_label: Some("nothing dropped".into()),
        // Fitted: small probabilities (random or tiny models) would vanish on [0, 1].
        y_range: None,
    })
}

/// What `avflow lens` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensOutput {
    pub position: usize,
    pub token_id: u32,
    pub layers: Vec<LensLayer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensLayer {
    pub layer: usize,
    pub prob: f64,
    /// `(token id, probability)`, most probable first.
    #[serde(default)]
    pub top: Vec<(u32, f64)>,
}

/// Logit lens → the answer token's probability per layer and, with `top1`, the probability of whatever
/// token leads at that layer (where the two meet, the answer has surfaced).
pub fn lens_curves(lens: &LensOutput, top1: bool) -> FigureData {
    let x: Vec<f64> = lens.layers.iter().map(|l| l.layer as f64).collect();
    let mut series = vec![CurveSeries {
        label: format!("answer token {}", lens.token_id),
        group_key: "last".into(),
        style: LineStyle::Solid,
        x: x.clone(),
        y: lens.layers.iter().map(|l| l.prob).collect(),
        band: None,
    }];
    if top1 && lens.layers.iter().all(|l| !l.top.is_empty()) {
        series.push(CurveSeries {
            label: "top-1 token (any)".into(),
            group_key: "top-1".into(),
            style: LineStyle::Dashed,
            x,
            y: lens.layers.iter().map(|l| l.top[0].1).collect(),
            band: None,
        });
    }
    FigureData::Curves(CurveData {
        series,
        reference_y: None,
        reference_label: None,
        y_range: None,
    })
}

/// What `avflow attention` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionOutput {
    pub rows: usize,
    pub layers: Vec<AttentionLayer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionLayer {
    pub layer: usize,
    pub mass: BTreeMap<String, f64>,
}

/// Attention summary → per group, the attention mass the query rows give it at each layer (groups in
/// palette order, then the rest by name).
pub fn attention_curves(att: &AttentionOutput) -> FigureData {
    let mut names: Vec<&String> = att.layers.iter().flat_map(|l| l.mass.keys()).collect();
    names.sort_by_key(|n| {
        let pos = super::palette::GROUPS.iter().position(|(g, _)| g == n);
        (pos.unwrap_or(usize::MAX), (*n).clone())
    });
    names.dedup();
    let series = names
        .iter()
        .map(|n| CurveSeries {
            label: (*n).clone(),
            group_key: (*n).clone(),
            style: LineStyle::Solid,
            x: att.layers.iter().map(|l| l.layer as f64).collect(),
            y: att
                .layers
                .iter()
                .map(|l| l.mass.get(*n).copied().unwrap_or(0.0))
                .collect(),
            band: None,
        })
        .collect();
    FigureData::Curves(CurveData {
        series,
        reference_y: None,
        reference_label: None,
        y_range: Some([0.0, 1.0]),
    })
}

/// `avflow attention --map-out` (`[layers][seq]`, rows averaged) → a heatmap; `token_groups` names each
/// position's group (e.g. from the token map of `avflow prepare --spans`).
/// The heads view of several groups as one figure: layers × query heads of each group side by side (all of
/// audio's heads, then video's, …), each block marked with its group on the axis, on one colour scale.
pub fn heads_groups_heatmap(
    per_head: &[Vec<std::collections::BTreeMap<String, f32>>],
    groups: &[String],
) -> Result<FigureData> {
    let heads = per_head.first().map_or(0, Vec::len);
    if heads == 0 || groups.is_empty() || per_head.iter().any(|l| l.len() != heads) {
        return Err(bad(
            "per-head attention needs the same heads in every layer and at least one group".into(),
        ));
    }
    let values = per_head
        .iter()
        .flat_map(|layer| {
            groups.iter().flat_map(move |g| {
                layer
                    .iter()
                    .map(move |m| f64::from(m.get(g).copied().unwrap_or(0.0)))
            })
        })
        .collect();
    let d = FigureData::Heatmap(HeatmapData {
        rows: per_head.len(),
        cols: heads * groups.len(),
        values,
        token_groups: groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.clone(), heads))
            .collect(),
        value_label: "attention mass".into(),
        colormap: Some(Colormap::Sequential),
    });
    d.validate()?;
    Ok(d)
}

/// Layers × query heads of the attention mass the query rows give `group` (`per_head`: `[layer][head]{group}`,
/// as `avflow attention --per-head` reports it): the heads view as a figure.
pub fn heads_heatmap(
    per_head: &[Vec<std::collections::BTreeMap<String, f32>>],
    group: &str,
) -> Result<FigureData> {
    let cols = per_head.first().map_or(0, Vec::len);
    if cols == 0 || per_head.iter().any(|l| l.len() != cols) {
        return Err(bad(
            "per-head attention needs the same heads in every layer".into(),
        ));
    }
    let d = FigureData::Heatmap(HeatmapData {
        rows: per_head.len(),
        cols,
        values: per_head
            .iter()
            .flatten()
            .map(|m| f64::from(m.get(group).copied().unwrap_or(0.0)))
            .collect(),
        token_groups: vec![group.to_string(); cols],
        value_label: format!("attention mass to {group}"),
        colormap: Some(Colormap::Sequential),
    });
    d.validate()?;
    Ok(d)
}

pub fn attention_heatmap(map: &[Vec<f64>], token_groups: Vec<String>) -> Result<FigureData> {
    let cols = map.first().map_or(0, Vec::len);
    if map.iter().any(|r| r.len() != cols) {
        return Err(bad("attention map rows differ in length".into()));
    }
    let d = FigureData::Heatmap(HeatmapData {
        rows: map.len(),
        cols,
        values: map.iter().flatten().copied().collect(),
        token_groups,
        value_label: "attention (fraction of the row)".into(),
        colormap: Some(Colormap::Sequential),
    });
    d.validate()?;
    Ok(d)
}

/// The group of every position from named spans (`Groups::spans`, or a token map): the first span in
/// `GROUPS` order that holds it, else the first other span by name, else `other`.
pub fn token_groups_from_spans(seq: usize, spans: &BTreeMap<String, Vec<usize>>) -> Vec<String> {
    let mut out = vec![String::new(); seq];
    let order = super::palette::GROUPS
        .iter()
        .map(|(g, _)| *g)
        .filter(|g| spans.contains_key(*g))
        .chain(
            spans
                .keys()
                .map(String::as_str)
                .filter(|k| super::palette::group_rgb(k).is_none()),
        );
    for name in order {
        for &p in &spans[name] {
            if p < seq && out[p].is_empty() {
                out[p] = name.to_string();
            }
        }
    }
    for g in &mut out {
        if g.is_empty() {
            *g = "other".into();
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-layer-window record (the sweep and compare views' tests use it too).
    pub(crate) fn rec(s: &str, t: &str, layer: usize, rel: f32) -> SweepRecord {
        SweepRecord {
            source: s.into(),
            target: t.into(),
            layer,
            start: layer,
            end: layer + 1,
            prob: 0.0,
            base_prob: 0.0,
            rel_change: rel,
            top1_id: 0,
            token_id: 0,
        }
    }

    #[test]
    fn sweep_records_become_one_curve_per_pair() {
        let d = sweep_curves(&[
            rec("audio", "last", 1, -10.0),
            rec("audio", "last", 0, -20.0),
            rec("audio", "question", 0, 5.0),
        ]);
        let FigureData::Curves(c) = d else {
            panic!("curves expected")
        };
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.series[0].label, "audio → last");
        assert_eq!(c.series[0].x, vec![0.0, 1.0]);
        assert_eq!(c.series[0].y, vec![-20.0, -10.0]);
        assert_eq!(c.series[1].style, LineStyle::Dashed);
        assert_eq!(c.series[1].group_key, "audio");
        assert_eq!(c.reference_y, Some(0.0));
    }

    #[test]
    fn outputs_of_the_flow_commands_convert() {
        let drop: Vec<DropPoint> = serde_json::from_str(
            r#"[{"groups":"audio,video","from_layer":2,"prob":0.4,"base_prob":0.5,"prefill_s":1.0},
                {"groups":"audio,video","from_layer":0,"prob":0.1,"base_prob":0.5}]"#,
        )
        .unwrap();
        let FigureData::Curves(c) = drop_curves(&drop) else {
            panic!()
        };
        assert_eq!(c.series[0].x, vec![0.0, 2.0]);
        assert_eq!(c.series[0].label, "audio + video dropped");
        assert_eq!(c.reference_y, Some(0.5));
        let lens: LensOutput = serde_json::from_str(
            r#"{"position":9,"token_id":7,"layers":[{"layer":0,"prob":0.1,"top":[[3,0.5],[7,0.1]]},
                {"layer":1,"prob":0.6,"top":[[7,0.6]]}]}"#,
        )
        .unwrap();
        let FigureData::Curves(c) = lens_curves(&lens, true) else {
            panic!()
        };
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.series[1].y, vec![0.5, 0.6]);
        let att: AttentionOutput = serde_json::from_str(
            r#"{"rows":1,"layers":[{"layer":0,"mass":{"zz":0.1,"video":0.2,"audio":0.7}}]}"#,
        )
        .unwrap();
        let FigureData::Curves(c) = attention_curves(&att) else {
            panic!()
        };
        let names: Vec<&str> = c.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(names, vec!["audio", "video", "zz"]);
    }

    #[test]
    fn heatmaps_bin_columns_and_validate() {
        let h = HeatmapData {
            rows: 2,
            cols: 5,
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0, 0.0, -1.0],
            token_groups: ["system", "audio", "audio", "video", "last"]
                .map(String::from)
                .to_vec(),
            value_label: "x".into(),
            colormap: None,
        };
        assert_eq!(h.colormap(), Colormap::Diverging);
        let (w, bins) = h.binned(2);
        assert_eq!(w, 3);
        assert_eq!(bins.len(), 2);
        assert_eq!(
            (bins[0].start, bins[0].end, bins[0].group.as_str()),
            (0, 3, "audio")
        );
        assert_eq!(bins[0].means, vec![2.0, 0.0]);
        assert_eq!(bins[1].means, vec![4.5, -0.5]);
        assert!(FigureData::Heatmap(h.clone()).validate().is_ok());
        let mut bad = h;
        bad.values[3] = f64::NAN;
        assert!(FigureData::Heatmap(bad).validate().is_err());
        let spans: BTreeMap<String, Vec<usize>> = [
            ("audio".to_string(), vec![1, 2]),
            ("custom".to_string(), vec![2, 3]),
        ]
        .into();
        assert_eq!(
            token_groups_from_spans(5, &spans),
            vec!["other", "audio", "audio", "custom", "other"]
        );
    }

    #[test]
    fn csv_quotes_labels_and_writes_bands() {
        let d = FigureData::Curves(CurveData {
            series: vec![pair_series(
                "audio,video",
                "last",
                &[(1.0, 2.0, Some((1.5, 2.5))), (0.0, 1.0, Some((0.5, 1.5)))],
            )],
            ..CurveData::default()
        });
        assert_eq!(
            d.to_csv(),
            "series,group,x,y,lo,hi\n\"audio,video → last\",\"audio,video\",0,1,0.5,1.5\n\
             \"audio,video → last\",\"audio,video\",1,2,1.5,2.5\n"
        );
    }
}

/// A layer's depth in a model of `layers` layers: `layer / (layers − 1)`, 0 for the first and 1 for the last,
/// so models of different depths share one axis.
pub fn depth(layer: usize, layers: usize) -> f64 {
    if layers <= 1 {
        0.0
    } else {
        layer as f64 / (layers - 1) as f64
    }
}

/// Two sweeps on one depth-normalised axis: per pair, A's curve solid and B's dashed, in the pair's colour,
/// labelled `A: audio → last` / `B: …` (the spec's provenance says what A and B are).
pub fn compare_curves(
    a: &[SweepRecord],
    a_layers: usize,
    b: &[SweepRecord],
    b_layers: usize,
) -> FigureData {
    let mut series = Vec::new();
    for (s, t) in crate::flow::sweep::record_pairs(a) {
        for (side, recs, layers, style) in [
            ("A", a, a_layers, LineStyle::Solid),
            ("B", b, b_layers, LineStyle::Dashed),
        ] {
            let mut pts: Vec<(f64, f64)> = recs
                .iter()
                .filter(|r| r.source == s && r.target == t)
                .map(|r| (depth(r.layer, layers), f64::from(r.rel_change)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by(|x, y| x.0.total_cmp(&y.0));
            series.push(CurveSeries {
                label: format!("{side}: {s} → {t}"),
                group_key: s.clone(),
                style,
                x: pts.iter().map(|p| p.0).collect(),
                y: pts.iter().map(|p| p.1).collect(),
                band: None,
            });
        }
    }
    FigureData::Curves(CurveData {
        series,
        reference_y: Some(0.0),
        reference_label: None,
        y_range: None,
    })
}

/// B − A of a pair's relative change at each of A's depths (B's curve read linearly between its depths).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepthDifference {
    pub source: String,
    pub target: String,
    pub depth: f64,
    pub a: f64,
    pub b: f64,
    pub b_minus_a: f64,
}

/// The difference view of two sweeps ([`compare_curves`]' pairs, at A's depths).
pub fn compare_difference(
    a: &[SweepRecord],
    a_layers: usize,
    b: &[SweepRecord],
    b_layers: usize,
) -> Vec<DepthDifference> {
    let mut out = Vec::new();
    for ra in a {
        let mut bs: Vec<(f64, f64)> = b
            .iter()
            .filter(|r| r.source == ra.source && r.target == ra.target)
            .map(|r| (depth(r.layer, b_layers), f64::from(r.rel_change)))
            .collect();
        if bs.is_empty() {
            continue;
        }
        bs.sort_by(|x, y| x.0.total_cmp(&y.0));
        let d = depth(ra.layer, a_layers);
        let vb = match bs.iter().position(|p| p.0 >= d) {
            Some(0) => bs[0].1,
            None => bs[bs.len() - 1].1,
            Some(i) => {
                let ((x0, y0), (x1, y1)) = (bs[i - 1], bs[i]);
                if x1 > x0 {
                    y0 + (y1 - y0) * (d - x0) / (x1 - x0)
                } else {
                    y1
                }
            }
        };
        let va = f64::from(ra.rel_change);
        out.push(DepthDifference {
            source: ra.source.clone(),
            target: ra.target.clone(),
            depth: d,
            a: va,
            b: vb,
            b_minus_a: vb - va,
        });
    }
    out
}

#[cfg(test)]
mod compare_tests {
    use super::tests::rec;
    use super::*;

    #[test]
    fn heads_of_several_groups_side_by_side() {
        use std::collections::BTreeMap;
        let m =
            |a: f32, v: f32| BTreeMap::from([("audio".to_string(), a), ("video".to_string(), v)]);
        // 2 layers × 2 heads.
        let per_head = vec![
            vec![m(0.1, 0.2), m(0.3, 0.4)],
            vec![m(0.5, 0.6), m(0.7, 0.8)],
        ];
        let FigureData::Heatmap(h) =
            heads_groups_heatmap(&per_head, &["audio".into(), "video".into()]).unwrap()
        else {
            panic!("not a heatmap");
        };
        assert_eq!((h.rows, h.cols), (2, 4));
        assert_eq!(h.token_groups, vec!["audio", "audio", "video", "video"]);
        let want = [0.1f32, 0.3, 0.2, 0.4, 0.5, 0.7, 0.6, 0.8];
        assert_eq!(
            h.values,
            want.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()
        );
        assert!(heads_groups_heatmap(&per_head, &[]).is_err());
    }

    /// A 3-layer and a 5-layer sweep on one depth axis: B's curve is read between its depths.
    #[test]
    fn sweeps_of_different_depths_share_one_axis() {
        let a: Vec<_> = (0..3)
            .map(|l| rec("audio", "last", l, -10.0 * l as f32))
            .collect();
        let b: Vec<_> = (0..5)
            .map(|l| rec("audio", "last", l, -5.0 * l as f32))
            .collect();
        let FigureData::Curves(c) = compare_curves(&a, 3, &b, 5) else {
            panic!("curves")
        };
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.series[0].x, [0.0, 0.5, 1.0]);
        assert_eq!(c.series[1].x, [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(c.series[1].style, LineStyle::Dashed);
        let d = compare_difference(&a, 3, &b, 5);
        // At depth 0.5: A −10, B −10 (layer 2 of 5); at 1: A −20, B −20.
        assert_eq!(
            d.iter().map(|x| x.b_minus_a).collect::<Vec<_>>(),
            [0.0, 0.0, 0.0]
        );
        let b2: Vec<_> = (0..2)
            .map(|l| rec("audio", "last", l, -30.0 * l as f32))
            .collect();
        let d = compare_difference(&a, 3, &b2, 2);
        // B at depth 0.5 is halfway between 0 and −30.
        assert_eq!(d[1].b, -15.0);
    }
}
