//! Draws a figure as SVG with plotters. The SVG is the master: the PDF and the PNG are made from it, so
//! all three show the same thing.
//!
//! Coordinates are printer dots at 300 per inch (plotters works in integer pixels; at 1/72 in curves would
//! visibly kink), and the root element is sized in inches, so any renderer places the figure at its paper
//! size. Sizes below are given in points and converted.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{Colormap, CurveData, FigureData, HeatmapData, LineStyle};
use super::palette::{self, Rgb};
use super::{FigureSpec, FONT_BYTES, FONT_FAMILY};
use crate::error::{Error, Result};

/// SVG user units per inch.
pub const DOTS_PER_INCH: f64 = 300.0;
/// Dots per typographic point.
const PT: f64 = DOTS_PER_INCH / 72.0;
/// Tick labels and legend: 8 pt; axis labels and title: 9 pt (with 9–10 pt body text).
const TICK_PT: f64 = 8.0;
const LABEL_PT: f64 = 9.0;
/// Heatmap cells per row at most: more than the dots of a column-wide plot would not show.
pub const MAX_HEATMAP_BINS: usize = 1000;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn pe<E: std::fmt::Debug>(e: E) -> Error {
    Error::Figure {
        reason: format!("drawing failed: {e:?}"),
        fix: "report this with the spec and data files".into(),
    }
}

/// plotters measures text (legend boxes, label areas) with the bundled font, registered once.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and parsed by a test: failure here would be a broken build.
        let _ = plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES);
    });
}

/// A text style of `pt` points. plotters writes `font-size = size / 1.24` into the SVG.
fn font(pt: f64) -> TextStyle<'static> {
    TextStyle::from((FONT_FAMILY, pt * PT * 1.24)).color(&BLACK)
}

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn dots(pt: f64) -> i32 {
    (pt * PT).round() as i32
}

/// Typographic minus instead of a hyphen.
fn minus(s: String) -> String {
    s.replace('-', "\u{2212}")
}

/// A tick label with as many decimals as a step of about `span / 5` needs.
fn tick_label(v: f64, span: f64) -> String {
    let step = 10f64.powf((span / 5.0).abs().max(1e-12).log10().floor());
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    minus(format!("{v:.decimals$}"))
}

/// An integer tick label, empty between integers (layers, token positions).
fn int_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        minus(format!("{}", v.round() as i64))
    } else {
        String::new()
    }
}

/// The SVG of a figure, with `metadata` (already-escaped XML) inside the root element.
pub fn svg(
    spec: &FigureSpec,
    data: &FigureData,
    title_xml: &str,
    metadata: &str,
) -> Result<String> {
    register_font();
    let (w_in, h_in) = spec.size_in(data);
    let (w, h) = (
        (w_in * DOTS_PER_INCH).round() as u32,
        (h_in * DOTS_PER_INCH).round() as u32,
    );
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let margin = dots(3.0);
        let root = root.margin(margin, margin, margin, margin);
        let body = match &spec.title {
            Some(t) if !t.is_empty() => root.titled(t, font(LABEL_PT)).map_err(pe)?,
            _ => root,
        };
        match data {
            FigureData::Curves(c) => curves(&body, spec, c)?,
            FigureData::Heatmap(hm) => heatmap(&body, spec, hm)?,
        }
        body.present().map_err(pe)?;
    }
    Ok(with_inches_and_metadata(
        &buf, w_in, h_in, title_xml, metadata,
    ))
}

/// Sizes the root element in inches (the viewBox stays in dots) and puts the title and metadata first.
fn with_inches_and_metadata(svg: &str, w_in: f64, h_in: f64, title: &str, meta: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return svg.to_string();
    };
    let Some(end) = svg[start..].find('>').map(|e| start + e + 1) else {
        return svg.to_string();
    };
    let head = &svg[start..end];
    let view_box = head
        .split("viewBox=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("0 0 0 0");
    format!(
        "{}<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w_in}in\" height=\"{h_in}in\" \
         viewBox=\"{view_box}\">\n<title>{title}</title>\n<metadata id=\"avflow-figure-spec\">{meta}</metadata>\n{}",
        &svg[..start],
        &svg[end..].trim_start_matches('\n')
    )
}

/// One legend entry: label, colour, stroke (None: a filled square), whether a band sample goes behind.
struct LegendItem {
    label: String,
    color: Rgb,
    stroke: Option<LineStyle>,
    band: bool,
}

const SAMPLE_LEN: f64 = 14.0;

/// Lays the items out in rows across `width` dots; returns each item's (x, row) and the row count.
fn legend_layout(area: &Area, items: &[LegendItem], width: i32) -> Result<(Vec<(i32, i32)>, i32)> {
    let style = font(TICK_PT);
    let mut pos = Vec::with_capacity(items.len());
    let (mut x, mut row) = (0, 0);
    for it in items {
        let (tw, _) = area.estimate_text_size(&it.label, &style).map_err(pe)?;
        let iw = dots(SAMPLE_LEN + 3.0) + tw as i32;
        if x > 0 && x + iw > width {
            x = 0;
            row += 1;
        }
        pos.push((x, row));
        x += iw + dots(9.0);
    }
    Ok((pos, if items.is_empty() { 0 } else { row + 1 }))
}

const LEGEND_ROW_PT: f64 = 11.0;

/// Draws the legend rows at the top of `area`; returns the area below them.
fn legend<'a>(area: &Area<'a>, items: &[LegendItem], left: i32) -> Result<Area<'a>> {
    let (w, _) = area.dim_in_pixel();
    let (pos, rows) = legend_layout(area, items, w as i32 - left)?;
    if rows == 0 {
        return Ok(area.clone());
    }
    let row_h = dots(LEGEND_ROW_PT);
    let (top, rest) = area.split_vertically(rows * row_h + dots(2.0));
    for (it, &(x, row)) in items.iter().zip(&pos) {
        let x = left + x;
        let yc = row * row_h + row_h / 2;
        let color = rgb(it.color);
        let sample = dots(SAMPLE_LEN);
        match it.stroke {
            Some(style) => {
                if it.band {
                    top.draw(&Rectangle::new(
                        [(x, yc - dots(3.0)), (x + sample, yc + dots(3.0))],
                        color.mix(BAND_ALPHA).filled(),
                    ))
                    .map_err(pe)?;
                }
                line(&top, vec![(x, yc), (x + sample, yc)], color, style, LINE_W)?;
            }
            None => {
                let s = dots(3.5);
                top.draw(&Rectangle::new(
                    [(x + sample / 2 - s, yc - s), (x + sample / 2 + s, yc + s)],
                    color.filled(),
                ))
                .map_err(pe)?;
            }
        }
        top.draw(&Text::new(
            it.label.clone(),
            (x + sample + dots(3.0), yc),
            font(TICK_PT).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(pe)?;
    }
    Ok(rest)
}

/// Curve stroke in dots (1.25 pt), band opacity.
const LINE_W: u32 = 5;
const BAND_ALPHA: f64 = 0.22;

/// Dash and gap lengths in dots for a style (None: solid).
fn dashes(style: LineStyle) -> Option<(i32, i32)> {
    match style {
        LineStyle::Solid => None,
        LineStyle::Dashed => Some((dots(4.0), dots(2.5))),
        LineStyle::Dotted => Some((dots(1.2), dots(1.8))),
    }
}

/// A polyline in backend coordinates on a plain area.
fn line(
    area: &Area,
    pts: Vec<(i32, i32)>,
    color: RGBColor,
    style: LineStyle,
    width: u32,
) -> Result<()> {
    let s = color.stroke_width(width);
    match dashes(style) {
        None => area.draw(&PathElement::new(pts, s)).map_err(pe),
        Some((d, g)) => area
            .draw(&plotters::element::DashedPathElement::new(pts, d, g, s))
            .map_err(pe),
    }
}

fn curve_colors(c: &CurveData) -> Vec<Rgb> {
    let keys: Vec<&str> = c.series.iter().map(|s| s.group_key.as_str()).collect();
    palette::assign(&keys)
}

fn legend_items_for_curves(c: &CurveData, band: bool) -> Vec<LegendItem> {
    let colors = curve_colors(c);
    let mut items: Vec<LegendItem> = c
        .series
        .iter()
        .zip(colors)
        .map(|(s, color)| LegendItem {
            label: s.label.clone(),
            color,
            stroke: Some(s.style),
            band: band && s.band.is_some(),
        })
        .collect();
    if let (Some(_), Some(label)) = (c.reference_y, &c.reference_label) {
        items.push(LegendItem {
            label: label.clone(),
            color: palette::GREY,
            stroke: Some(LineStyle::Dashed),
            band: false,
        });
    }
    items
}

/// The y range: fixed, or the data's (bands and reference line included) with 6 % headroom.
fn y_range(c: &CurveData, band: bool) -> (f64, f64) {
    if let Some([a, b]) = c.y_range {
        return (a, b);
    }
    let mut vals: Vec<f64> = c.series.iter().flat_map(|s| s.y.iter().copied()).collect();
    if band {
        for s in &c.series {
            if let Some(b) = &s.band {
                vals.extend(b.lo.iter().chain(&b.hi));
            }
        }
    }
    vals.extend(c.reference_y);
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.06 } else { 1.0 };
    (lo - pad, hi + pad)
}

/// Width in dots of the y label area: the widest tick label, the tick, and the rotated axis label.
fn y_area_width(area: &Area, labels: &[String]) -> Result<i32> {
    let style = font(TICK_PT);
    let mut widest = 0;
    for l in labels {
        widest = widest.max(area.estimate_text_size(l, &style).map_err(pe)?.0 as i32);
    }
    Ok(widest + dots(3.0 + 3.0 + LABEL_PT + 4.0))
}

fn curves(area: &Area, spec: &FigureSpec, c: &CurveData) -> Result<()> {
    let band = spec.band;
    let (y0, y1) = y_range(c, band);
    let xs = c.series.iter().flat_map(|s| s.x.iter().copied());
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let xpad = if x1 > x0 { (x1 - x0) * 0.02 } else { 0.5 };
    let (x0, x1) = (x0 - xpad, x1 + xpad);
    let span = y1 - y0;
    let ylab = |v: &f64| tick_label(*v, span);
    let y_area = y_area_width(area, &[ylab(&y0), ylab(&y1), ylab(&((y0 + y1) / 2.0))])?;
    let body = legend(area, &legend_items_for_curves(c, band), y_area)?;
    let mut chart = ChartBuilder::on(&body)
        .margin_top(dots(4.0))
        .margin_right(dots(6.0))
        .x_label_area_size(dots(3.0 + 3.0 + TICK_PT + 3.0 + LABEL_PT + 2.0))
        .y_label_area_size(y_area)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(pe)?;
    let xlab = |v: &f64| int_label(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225).stroke_width(1))
        .axis_style(BLACK.stroke_width(3))
        .set_all_tick_mark_size(dots(3.0))
        .x_labels(((x1 - x0).floor().clamp(0.0, 9.0) as usize + 1).clamp(2, 10))
        .y_labels(6)
        .x_label_formatter(&xlab)
        .y_label_formatter(&ylab)
        .label_style(font(TICK_PT))
        .axis_desc_style(font(LABEL_PT))
        .x_desc(spec.x_label.clone())
        .y_desc(spec.y_label.clone())
        .draw()
        .map_err(pe)?;
    if let Some(r) = c.reference_y {
        let grey = rgb(palette::GREY).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, r), (x1, r)],
                dots(3.0),
                dots(2.0),
                grey,
            ))
            .map_err(pe)?;
    }
    let colors: Vec<RGBColor> = curve_colors(c).into_iter().map(rgb).collect();
    if band {
        for (s, color) in c.series.iter().zip(&colors) {
            if let Some(b) = &s.band {
                let poly: Vec<(f64, f64)> =
                    s.x.iter()
                        .zip(&b.lo)
                        .map(|(&x, &y)| (x, y))
                        .chain(s.x.iter().zip(&b.hi).rev().map(|(&x, &y)| (x, y)))
                        .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(BAND_ALPHA).filled(),
                    )))
                    .map_err(pe)?;
            }
        }
    }
    for (s, color) in c.series.iter().zip(&colors) {
        let pts: Vec<(f64, f64)> = s.x.iter().copied().zip(s.y.iter().copied()).collect();
        let st = color.stroke_width(LINE_W);
        match dashes(s.style) {
            None => chart.draw_series(LineSeries::new(pts, st)).map(|_| ()),
            Some((d, g)) => chart
                .draw_series(DashedLineSeries::new(pts, d, g, st))
                .map(|_| ()),
        }
        .map_err(pe)?;
    }
    Ok(())
}

/// Colour of `t` in [0, 1]: piecewise-linear through the control points.
fn ramp(stops: &[Rgb], t: f64) -> Rgb {
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    [0, 1, 2].map(|k| (a[k] as f64 + (b[k] as f64 - a[k] as f64) * f).round() as u8)
}

/// Viridis (matplotlib), sampled at 9 points.
const VIRIDIS: [Rgb; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];
/// ColorBrewer RdBu (reversed: blue is negative), safe for colour-blind readers.
const RDBU: [Rgb; 7] = [
    [33, 102, 172],
    [103, 169, 207],
    [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199],
    [239, 138, 98],
    [178, 24, 43],
];

/// Value range and colour function of a heatmap.
fn scale(h: &HeatmapData) -> (f64, f64, Colormap) {
    let lo = h.values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = h.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let cm = h.colormap();
    let (lo, hi) = match cm {
        Colormap::Diverging => {
            let m = lo.abs().max(hi.abs()).max(1e-12);
            (-m, m)
        }
        Colormap::Sequential => (lo.min(0.0), if hi > lo.min(0.0) { hi } else { lo + 1.0 }),
    };
    (lo, hi, cm)
}

fn color_of(v: f64, lo: f64, hi: f64, cm: Colormap) -> Rgb {
    let t = (v - lo) / (hi - lo);
    match cm {
        Colormap::Sequential => ramp(&VIRIDIS, t),
        Colormap::Diverging => ramp(&RDBU, t),
    }
}

/// Groups present in a heatmap's token axis: palette order, then others as they appear.
fn present_groups(groups: &[String]) -> Vec<String> {
    let mut out: Vec<String> = palette::GROUPS
        .iter()
        .filter(|(g, _)| groups.iter().any(|x| x == g))
        .map(|(g, _)| g.to_string())
        .collect();
    for g in groups {
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    out
}

fn heatmap(area: &Area, spec: &FigureSpec, h: &HeatmapData) -> Result<()> {
    let groups = present_groups(&h.token_groups);
    let keys: Vec<&str> = groups.iter().map(String::as_str).collect();
    let colors = palette::assign(&keys);
    let group_color = |g: &str| {
        let i = groups.iter().position(|x| x == g).unwrap_or(0);
        colors[i]
    };
    let items: Vec<LegendItem> = groups
        .iter()
        .map(|g| LegendItem {
            label: g.clone(),
            color: group_color(g),
            stroke: None,
            band: false,
        })
        .collect();
    let ylab = |v: &f64| {
        if *v < -0.25 {
            String::new()
        } else {
            int_label(*v)
        }
    };
    let y_area = y_area_width(area, &[ylab(&(h.rows as f64))])?;
    let body = legend(area, &items, y_area)?;
    let (bw, _) = body.dim_in_pixel();
    let bar_w = dots(52.0).min(bw as i32 / 3);
    let (main, bar) = body.split_horizontally(bw as i32 - bar_w);
    let x_area = dots(3.0 + 3.0 + TICK_PT + 3.0 + LABEL_PT + 2.0);
    let top = dots(4.0);
    let (_, mh) = main.dim_in_pixel();
    // Rows and the group strip share the plot's height: the strip is 5 pt, 1.5 pt below row 0.
    let plot_h = (mh as i32 - x_area - top).max(10) as f64;
    let (strip, gap) = (5.0 * PT, 1.5 * PT);
    let per_row = ((plot_h - strip - gap) / h.rows as f64).max(0.5);
    let (s_rows, g_rows) = (strip / per_row, gap / per_row);
    let y_lo = -0.5 - s_rows - g_rows;
    let xlab = |v: &f64| int_label(*v);
    let mut chart = ChartBuilder::on(&main)
        .margin_top(top)
        .margin_right(dots(4.0))
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(-0.5..h.cols as f64 - 0.5, y_lo..h.rows as f64 - 0.5)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .axis_style(BLACK.stroke_width(3))
        .set_all_tick_mark_size(dots(3.0))
        .x_labels(h.cols.clamp(2, 8))
        .y_labels(h.rows.clamp(2, 8))
        .x_label_formatter(&xlab)
        .y_label_formatter(&ylab)
        .label_style(font(TICK_PT))
        .axis_desc_style(font(LABEL_PT))
        .x_desc(spec.x_label.clone())
        .y_desc(spec.y_label.clone())
        .draw()
        .map_err(pe)?;
    let (lo, hi, cm) = scale(h);
    let (_, bins) = h.binned(MAX_HEATMAP_BINS);
    // Runs of equal colour become one rectangle: smaller files, same picture.
    let mut rects: Vec<Rectangle<(f64, f64)>> = Vec::new();
    let mut push_runs = |y0: f64, y1: f64, colors: Vec<(usize, usize, Rgb)>| {
        let mut i = 0;
        while i < colors.len() {
            let (c0, mut c1, col) = colors[i];
            while i + 1 < colors.len() && colors[i + 1].2 == col {
                i += 1;
                c1 = colors[i].1;
            }
            rects.push(Rectangle::new(
                [(c0 as f64 - 0.5, y0), (c1 as f64 - 0.5, y1)],
                rgb(col).filled(),
            ));
            i += 1;
        }
    };
    for r in 0..h.rows {
        let colors = bins
            .iter()
            .map(|b| (b.start, b.end, color_of(b.means[r], lo, hi, cm)))
            .collect();
        push_runs(r as f64 - 0.5, r as f64 + 0.5, colors);
    }
    let strip_colors = bins
        .iter()
        .map(|b| (b.start, b.end, group_color(&b.group)))
        .collect();
    push_runs(y_lo, y_lo + s_rows, strip_colors);
    chart.draw_series(rects).map_err(pe)?;
    colour_bar(&bar, h, lo, hi, cm, top, x_area)
}

/// The colour bar right of a heatmap, with its own axis and the value label.
fn colour_bar(
    area: &Area,
    h: &HeatmapData,
    lo: f64,
    hi: f64,
    cm: Colormap,
    top: i32,
    bottom: i32,
) -> Result<()> {
    let span = hi - lo;
    let lab = |v: &f64| tick_label(*v, span);
    let (aw, _) = area.dim_in_pixel();
    let mut chart = ChartBuilder::on(area)
        .margin_top(top)
        .margin_bottom(bottom)
        .margin_left(dots(6.0))
        .right_y_label_area_size((aw as i32 - dots(6.0 + 7.0)).max(1))
        .build_cartesian_2d(0f64..1f64, lo..hi)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .axis_style(BLACK.stroke_width(2))
        .set_all_tick_mark_size(dots(2.5))
        .y_labels(5)
        .y_label_formatter(&lab)
        .label_style(font(TICK_PT))
        .axis_desc_style(font(TICK_PT))
        .y_desc(h.value_label.clone())
        .draw()
        .map_err(pe)?;
    let steps = 96;
    chart
        .draw_series((0..steps).map(|i| {
            let a = lo + span * i as f64 / steps as f64;
            let b = lo + span * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                rgb(color_of((a + b) / 2.0, lo, hi, cm)).filled(),
            )
        }))
        .map_err(pe)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_and_colours() {
        assert_eq!(tick_label(-12.5, 100.0), "\u{2212}12");
        assert_eq!(tick_label(0.5, 1.0), "0.5");
        assert_eq!(tick_label(0.25, 0.1), "0.25");
        assert_eq!(tick_label(-1e-17, 1.0), "0.0");
        assert_eq!(int_label(3.0), "3");
        assert_eq!(int_label(2.5), "");
        assert_eq!(ramp(&VIRIDIS, 0.0), VIRIDIS[0]);
        assert_eq!(ramp(&VIRIDIS, 1.0), VIRIDIS[8]);
        assert_eq!(ramp(&RDBU, 0.5), [247, 247, 247]);
        assert_eq!(
            color_of(0.0, -1.0, 1.0, Colormap::Diverging),
            [247, 247, 247]
        );
    }
}
