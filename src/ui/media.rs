//! Media panel: the prompt's media on one time axis — the frames the model saw as thumbnails at their
//! times, the waveform, the log-mel spectrogram the audio tower read, the `seconds_per_chunk` boundaries
//! the audio and video tokens are interleaved by — and a time selection that knockouts can use.
//!
//! A selection of seconds is a [`Selector`] (`@1-3`, `audio@1-3`, `video@1-3`), the grammar of the
//! command line's `--source`/`--target`: the worker resolves it with the token map, so the panel never
//! needs positions itself (it only counts them for the label).

use std::path::PathBuf;
use std::sync::Arc;

use egui::{Color32, CornerRadius, Pos2, Rect, Sense, Stroke, TextureHandle, Vec2};

use crate::media::preview::{ItemKind, ItemPreview, MediaPreview, MediaSpan, Spectrogram};
use crate::prompt::Selector;

use super::panel::{Action, Panel, ViewState};
use super::tokens::quoted;

/// A prepared prompt's media as the app shows it.
#[derive(Debug, Clone)]
pub struct MediaView {
    /// Changes with every preview, so textures are made once per preview.
    pub serial: u64,
    pub preview: Arc<MediaPreview>,
    /// The inputs file the preview belongs to: another inputs file makes it stale.
    pub inputs: PathBuf,
}

/// Seconds `[start, end)` of the timeline, in whole milliseconds so it is exact, hashable and prints as
/// the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub start_ms: u32,
    pub end_ms: u32,
}

/// Which tokens of the selected seconds a selector takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Modality {
    /// Audio and video (`@A-B`).
    #[default]
    Both,
    Audio,
    Video,
}

impl Modality {
    pub const ALL: [Modality; 3] = [Modality::Both, Modality::Audio, Modality::Video];

    pub fn name(self) -> &'static str {
        match self {
            Modality::Both => "audio + video",
            Modality::Audio => "audio",
            Modality::Video => "video",
        }
    }

    /// The group a selector of seconds is limited to (`None`: both modalities).
    fn group(self) -> Option<&'static str> {
        match self {
            Modality::Both => None,
            Modality::Audio => Some("audio"),
            Modality::Video => Some("video"),
        }
    }
}

/// `1000` → `"1"`, `1500` → `"1.5"`, `1040` → `"1.04"`: seconds as short as they are exact.
pub fn seconds_text(ms: u32) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:03}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

impl TimeRange {
    /// `start..end` seconds rounded to 10 ms (the mel hop), ordered and clipped to `[0, duration]`;
    /// `None` when nothing is left (a click rather than a drag).
    pub fn between(a: f64, b: f64, duration: f64) -> Option<Self> {
        let to_ms = |t: f64| (t.clamp(0.0, duration.max(0.0)) * 100.0).round() as u32 * 10;
        let (s, e) = (to_ms(a.min(b)), to_ms(a.max(b)));
        (e > s).then_some(Self {
            start_ms: s,
            end_ms: e,
        })
    }

    pub fn start_s(&self) -> f64 {
        f64::from(self.start_ms) / 1000.0
    }

    pub fn end_s(&self) -> f64 {
        f64::from(self.end_ms) / 1000.0
    }

    /// `@1-3`, `audio@1-3`: what the worker's knockout (and the CLI) accepts as a source or target.
    pub fn selector(&self, m: Modality) -> Selector {
        Selector::time(m.group(), self.start_s(), self.end_s())
    }

    /// `1–3 s`.
    pub fn label(&self) -> String {
        format!(
            "{}\u{2013}{} s",
            seconds_text(self.start_ms),
            seconds_text(self.end_ms)
        )
    }
}

/// The `seconds_per_chunk` chunk holding second `t`, clipped to the clip: what a click selects (audio
/// and video are interleaved per chunk, so it is the natural unit).
pub fn chunk_at(t: f64, seconds_per_chunk: f64, duration: f64) -> Option<TimeRange> {
    if seconds_per_chunk <= 0.0 || duration <= 0.0 {
        return None;
    }
    let k = (t.clamp(0.0, duration) / seconds_per_chunk).floor();
    let k = if k * seconds_per_chunk >= duration {
        k - 1.0
    } else {
        k
    };
    TimeRange::between(
        k * seconds_per_chunk,
        ((k + 1.0) * seconds_per_chunk).min(duration),
        duration,
    )
}

/// Chunk boundaries strictly inside `(0, duration)`.
pub fn chunk_boundaries(duration: f64, seconds_per_chunk: f64) -> Vec<f64> {
    if seconds_per_chunk <= 0.0 {
        return Vec::new();
    }
    (1..)
        .map(|k| k as f64 * seconds_per_chunk)
        .take_while(|&t| t < duration - 1e-9)
        .collect()
}

/// Seconds ↔ screen x: `duration` seconds over `width` points from `left`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeAxis {
    pub duration: f64,
    pub left: f32,
    pub width: f32,
}

impl TimeAxis {
    pub fn x(&self, t: f64) -> f32 {
        if self.duration <= 0.0 {
            return self.left;
        }
        self.left + (t / self.duration) as f32 * self.width
    }

    /// The second under `x`, clamped to the clip.
    pub fn t(&self, x: f32) -> f64 {
        if self.width <= 0.0 {
            return 0.0;
        }
        (f64::from((x - self.left) / self.width) * self.duration).clamp(0.0, self.duration)
    }
}

/// Tick step and tick times: the smallest "nice" step that leaves `min_gap` points between labels.
pub fn ticks(duration: f64, width: f32, min_gap: f32) -> (f64, Vec<f64>) {
    const STEPS: [f64; 14] = [
        0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ];
    if duration <= 0.0 || width <= 0.0 {
        return (1.0, Vec::new());
    }
    let per_point = duration / f64::from(width);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| s / per_point >= f64::from(min_gap))
        .unwrap_or(STEPS[STEPS.len() - 1]);
    let n = (duration / step + 1e-9).floor() as usize;
    (step, (0..=n).map(|k| k as f64 * step).collect())
}

/// `"1.5 s"`, `"90 s"` → `"1:30"` from a minute on.
pub fn tick_label(t: f64) -> String {
    let ms = (t * 1000.0).round().max(0.0) as u32;
    if ms >= 60_000 {
        let s = ms / 1000;
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{} s", seconds_text(ms))
    }
}

/// Min/max of the waveform bins under each of `columns` equal slices of `[0, duration]` seconds;
/// `None` where the sound has ended (or never started).
pub fn envelope(
    bins: &[[f32; 2]],
    bin_seconds: f64,
    duration: f64,
    columns: usize,
) -> Vec<Option<[f32; 2]>> {
    if columns == 0 || bin_seconds <= 0.0 || duration <= 0.0 {
        return vec![None; columns];
    }
    let per_col = duration / columns as f64;
    (0..columns)
        .map(|c| {
            let a = ((c as f64 * per_col) / bin_seconds).floor() as usize;
            // At least one bin per column: zoomed in, neighbouring columns repeat a bin.
            let b = (((c + 1) as f64 * per_col) / bin_seconds).ceil() as usize;
            let slice = bins.get(a..b.max(a + 1).min(bins.len()))?;
            slice
                .iter()
                .copied()
                .reduce(|[l1, h1], [l2, h2]| [l1.min(l2), h1.max(h2)])
        })
        .collect()
}

/// The largest absolute sample: the waveform is drawn relative to it, so a quiet clip still shows.
pub fn peak(bins: &[[f32; 2]]) -> f32 {
    bins.iter()
        .map(|[lo, hi]| lo.abs().max(hi.abs()))
        .fold(0.0, f32::max)
}

/// Media positions of the selected seconds: `(audio, video)`, as the worker's `@A-B` counts them
/// (overlap with `[start, end)`).
pub fn selection_counts(spans: &[MediaSpan], r: TimeRange) -> (usize, usize) {
    let (a, b) = (r.start_s(), r.end_s());
    spans
        .iter()
        .filter(|s| s.start_s < b && s.end_s > a)
        .fold(
            (0, 0),
            |(au, vi), s| {
                if s.audio {
                    (au + 1, vi)
                } else {
                    (au, vi + 1)
                }
            },
        )
}

/// Which thumbnails to draw, left to right, so none covers another: a frame is skipped while the last
/// drawn one still occupies its place.
pub fn visible_frames(xs: &[f32], thumb_width: f32) -> Vec<usize> {
    let mut out = Vec::new();
    let mut free_from = f32::NEG_INFINITY;
    for (i, &x) in xs.iter().enumerate() {
        if x >= free_from - 0.5 {
            out.push(i);
            free_from = x + thumb_width;
        }
    }
    out
}

/// `"basic.mkv · video 4 s · 8 frames at 2 fps, 280×392 · 560 video + 100 audio positions"`.
pub fn item_line(item: &ItemPreview) -> String {
    let name = item.path.file_name().map_or_else(
        || item.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let secs = |s: f64| seconds_text((s * 1000.0).round().max(0.0) as u32);
    let size = item
        .frame_size
        .map(|(h, w)| format!("{h}\u{00d7}{w}"))
        .unwrap_or_default();
    let t = item.tokens;
    match item.kind {
        ItemKind::Video => {
            let fps = item.fps_used.map_or_else(String::new, |f| {
                format!(" at {} fps", seconds_text((f * 1000.0).round() as u32))
            });
            let sound = if t.audio > 0 {
                format!(" + {} audio", t.audio)
            } else {
                " (no sound used)".into()
            };
            format!(
                "{name} · video {} s · {} frames{fps}, {size} · {} video{sound} positions",
                secs(item.duration_s),
                item.n_frames,
                t.video
            )
        }
        ItemKind::Audio => format!(
            "{name} · audio {} s · {} audio positions",
            secs(item.duration_s),
            t.audio
        ),
        ItemKind::Image => format!("{name} · image {size} · {} image positions", t.image),
    }
}

/// Magma-like ramp: dark for quiet, bright for loud (readable in both themes, monotone in lightness).
pub fn mel_color(v: f32) -> Color32 {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [81.0, 18.0, 124.0],
        [183.0, 55.0, 121.0],
        [252.0, 137.0, 97.0],
        [252.0, 253.0, 191.0],
    ];
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = v * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let c: [u8; 3] =
        std::array::from_fn(|k| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8);
    Color32::from_rgb(c[0], c[1], c[2])
}

/// The spectrogram as an image: one column per spectrogram column, the highest mel bin at the top,
/// values scaled to the clip's own range.
pub fn mel_image(s: &Spectrogram) -> egui::ColorImage {
    let (lo, hi) = s
        .values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut pixels = Vec::with_capacity(s.n_mels * s.columns);
    for row in (0..s.n_mels).rev() {
        for c in 0..s.columns {
            let v = s.values.get(row * s.columns + c).copied().unwrap_or(lo);
            pixels.push(mel_color((v - lo) / span));
        }
    }
    egui::ColorImage::new([s.columns, s.n_mels], pixels)
}

/// `"1.23 s · chunk 0"`: what the pointer is over.
pub fn hover_label(t: f64, seconds_per_chunk: f64) -> String {
    let chunk = if seconds_per_chunk > 0.0 {
        format!(" · chunk {}", (t / seconds_per_chunk).floor() as usize)
    } else {
        String::new()
    };
    format!("{:.2} s{chunk}", t)
}

/// One horizontal band of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneKind {
    Frames,
    Wave,
    Mel,
}

/// The bands of the timeline, top to bottom: per timed item its frames, waveform and spectrogram.
pub fn lanes(items: &[ItemPreview]) -> Vec<(usize, LaneKind)> {
    let mut out = Vec::new();
    for (k, it) in items.iter().enumerate() {
        if it.kind == ItemKind::Image {
            continue;
        }
        if !it.frames.is_empty() {
            out.push((k, LaneKind::Frames));
        }
        if it.waveform.is_some() {
            out.push((k, LaneKind::Wave));
        }
        if it.mel.is_some() {
            out.push((k, LaneKind::Mel));
        }
    }
    out
}

fn lane_height(l: LaneKind) -> f32 {
    match l {
        LaneKind::Frames => 60.0,
        LaneKind::Wave => 44.0,
        LaneKind::Mel => 64.0,
    }
}

const LABEL_WIDTH: f32 = 64.0;
const AXIS_HEIGHT: f32 = 20.0;
const LANE_GAP: f32 = 3.0;
const SELECTION: Color32 = Color32::from_rgb(66, 133, 244);

/// Accessible name of the timeline (tests drag on it).
pub const TIMELINE_LABEL: &str = "timeline";

#[derive(Default)]
pub struct MediaPanel {
    textures: Option<Textures>,
    /// The second where the running drag started.
    drag_from: Option<f64>,
    modality: Modality,
}

struct Textures {
    serial: u64,
    frames: Vec<Vec<TextureHandle>>,
    mels: Vec<Option<TextureHandle>>,
}

impl MediaPanel {
    fn textures(&mut self, ctx: &egui::Context, mv: &MediaView) -> &Textures {
        let stale = self.textures.as_ref().is_none_or(|t| t.serial != mv.serial);
        if stale {
            let opts = egui::TextureOptions::LINEAR;
            let frames = mv
                .preview
                .items
                .iter()
                .enumerate()
                .map(|(k, it)| {
                    it.frames
                        .iter()
                        .enumerate()
                        .map(|(f, th)| {
                            let img = egui::ColorImage::from_rgb(
                                [th.image.width, th.image.height],
                                &th.image.data,
                            );
                            ctx.load_texture(format!("media-{}-{k}-{f}", mv.serial), img, opts)
                        })
                        .collect()
                })
                .collect();
            let mels = mv
                .preview
                .items
                .iter()
                .enumerate()
                .map(|(k, it)| {
                    it.mel.as_ref().filter(|s| s.columns > 0).map(|s| {
                        ctx.load_texture(format!("mel-{}-{k}", mv.serial), mel_image(s), opts)
                    })
                })
                .collect();
            self.textures = Some(Textures {
                serial: mv.serial,
                frames,
                mels,
            });
        }
        // Just set above when missing.
        self.textures.get_or_insert_with(|| Textures {
            serial: mv.serial,
            frames: Vec::new(),
            mels: Vec::new(),
        })
    }
}

impl Panel for MediaPanel {
    fn name(&self) -> &'static str {
        "Media"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let Some(mv) = &view.media else {
            self.textures = None;
            ui.weak(
                "Open a video, audio or image (buttons above, or drop files on the window), type a question \
                 and press Ask: the frames the model saw, the waveform and the spectrogram appear here on one \
                 time axis.",
            );
            return;
        };
        let p = Arc::clone(&mv.preview);
        ui.label(format!("Question: {}", quoted(&p.question)));
        for it in &p.items {
            ui.weak(item_line(it));
        }
        for n in &p.notes {
            ui.label(egui::RichText::new(n).color(ui.visuals().warn_fg_color));
        }
        let tex = self.textures(ui.ctx(), mv);
        let images: Vec<(usize, TextureHandle)> = p
            .items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.kind == ItemKind::Image)
            .filter_map(|(k, _)| Some((k, tex.frames.get(k)?.first()?.clone())))
            .collect();
        let frames: Vec<Vec<TextureHandle>> = tex.frames.clone();
        let mels: Vec<Option<TextureHandle>> = tex.mels.clone();
        if !images.is_empty() {
            ui.horizontal_wrapped(|ui| {
                for (k, t) in &images {
                    let size = t.size_vec2();
                    ui.add(egui::Image::new((t.id(), size)))
                        .on_hover_text(p.items[*k].path.display().to_string());
                }
            });
        }
        let duration = p.duration_s();
        if duration <= 0.0 {
            return;
        }
        self.timeline(ui, &p, &frames, &mels, view.time_selection, actions);
        self.selection_row(ui, &p, view.time_selection, actions);
    }
}

impl MediaPanel {
    fn timeline(
        &mut self,
        ui: &mut egui::Ui,
        p: &MediaPreview,
        frames: &[Vec<TextureHandle>],
        mels: &[Option<TextureHandle>],
        selection: Option<TimeRange>,
        actions: &mut Vec<Action>,
    ) {
        let duration = p.duration_s();
        let spc = p.seconds_per_chunk;
        let lanes = lanes(&p.items);
        let body: f32 = lanes.iter().map(|(_, l)| lane_height(*l) + LANE_GAP).sum();
        let width = ui.available_width().max(LABEL_WIDTH + 100.0);
        let (rect, resp) = ui.allocate_exact_size(
            Vec2::new(width, body + AXIS_HEIGHT),
            Sense::click_and_drag(),
        );
        resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, TIMELINE_LABEL));
        let axis = TimeAxis {
            duration,
            left: rect.left() + LABEL_WIDTH,
            width: rect.width() - LABEL_WIDTH - 6.0,
        };

        // Interaction: a drag selects seconds, a click the chunk under the pointer.
        if resp.drag_started() {
            let origin = ui.input(|i| i.pointer.press_origin());
            self.drag_from = origin.or(resp.interact_pointer_pos()).map(|o| axis.t(o.x));
        }
        if resp.dragged() {
            if let (Some(a), Some(pos)) = (self.drag_from, resp.interact_pointer_pos()) {
                if let Some(r) = TimeRange::between(a, axis.t(pos.x), duration) {
                    actions.push(Action::SelectTime(Some(r)));
                }
            }
        }
        if resp.drag_stopped() {
            self.drag_from = None;
        }
        if resp.clicked() {
            if let Some(pos) = resp.interact_pointer_pos() {
                actions.push(Action::SelectTime(chunk_at(axis.t(pos.x), spc, duration)));
            }
        }

        let painter = ui.painter_at(rect);
        let visuals = ui.visuals();
        let text = visuals.text_color();
        let weak = visuals.weak_text_color();
        let lane_bg = visuals.extreme_bg_color;
        let font = egui::FontId::proportional(11.0);
        let plot_left = axis.x(0.0);
        let plot_right = axis.x(duration);
        let multi = p.items.iter().filter(|i| i.kind != ItemKind::Image).count() > 1;

        let mut y = rect.top();
        for &(k, lane) in &lanes {
            let h = lane_height(lane);
            let band = Rect::from_min_max(Pos2::new(plot_left, y), Pos2::new(plot_right, y + h));
            painter.rect_filled(band, CornerRadius::same(2), lane_bg);
            let name = match lane {
                LaneKind::Frames => "frames",
                LaneKind::Wave => "sound",
                LaneKind::Mel => "log-mel",
            };
            let label = if multi {
                format!("{} {name}", k + 1)
            } else {
                name.to_string()
            };
            painter.text(
                Pos2::new(rect.left() + 2.0, band.center().y),
                egui::Align2::LEFT_CENTER,
                label,
                font.clone(),
                weak,
            );
            let it = &p.items[k];
            match lane {
                LaneKind::Frames => {
                    let th = h - 4.0;
                    let textures = frames.get(k).map(Vec::as_slice).unwrap_or_default();
                    let xs: Vec<f32> = it.frames.iter().map(|f| axis.x(f.time_s)).collect();
                    let aspect = it
                        .frame_size
                        .map_or(1.0, |(fh, fw)| fw as f32 / fh.max(1) as f32);
                    let tw = th * aspect;
                    for i in visible_frames(&xs, tw + 2.0) {
                        let Some(t) = textures.get(i) else { continue };
                        let r = Rect::from_min_size(Pos2::new(xs[i], y + 2.0), Vec2::new(tw, th));
                        painter.image(
                            t.id(),
                            r,
                            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                            Color32::WHITE,
                        );
                    }
                    // Every sampled frame's time, drawn or not.
                    for &x in &xs {
                        painter.line_segment(
                            [Pos2::new(x, y + h - 3.0), Pos2::new(x, y + h)],
                            Stroke::new(1.0, text),
                        );
                    }
                }
                LaneKind::Wave => {
                    if let Some(w) = &it.waveform {
                        let cols = (plot_right - plot_left).max(0.0) as usize;
                        let env = envelope(&w.bins, w.bin_seconds, duration, cols);
                        let scale = (h / 2.0 - 2.0) / peak(&w.bins).max(1e-6);
                        let mid = y + h / 2.0;
                        let color = Color32::from_rgb(0, 158, 115);
                        for (c, e) in env.iter().enumerate() {
                            let Some([lo, hi]) = e else { continue };
                            let x = plot_left + c as f32 + 0.5;
                            painter.line_segment(
                                [
                                    Pos2::new(x, mid - hi * scale - 0.5),
                                    Pos2::new(x, mid - lo * scale + 0.5),
                                ],
                                Stroke::new(1.0, color),
                            );
                        }
                    }
                }
                LaneKind::Mel => {
                    if let (Some(s), Some(Some(t))) = (&it.mel, mels.get(k)) {
                        let r = Rect::from_min_max(
                            Pos2::new(plot_left, y),
                            Pos2::new(axis.x(s.seconds()), y + h),
                        );
                        painter.image(
                            t.id(),
                            r,
                            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                            Color32::WHITE,
                        );
                    }
                }
            }
            y += h + LANE_GAP;
        }

        // Chunk boundaries over every lane.
        for b in chunk_boundaries(duration, spc) {
            let x = axis.x(b);
            painter.line_segment(
                [Pos2::new(x, rect.top()), Pos2::new(x, rect.top() + body)],
                Stroke::new(1.0, weak.gamma_multiply(0.8)),
            );
        }

        if let Some(r) = selection {
            let sel = Rect::from_min_max(
                Pos2::new(axis.x(r.start_s()), rect.top()),
                Pos2::new(axis.x(r.end_s()), rect.top() + body),
            );
            painter.rect_filled(sel, CornerRadius::ZERO, SELECTION.gamma_multiply(0.25));
            painter.rect_stroke(
                sel,
                CornerRadius::ZERO,
                Stroke::new(1.5, SELECTION),
                egui::StrokeKind::Inside,
            );
        }

        // Time axis.
        let ay = rect.top() + body;
        painter.line_segment(
            [Pos2::new(plot_left, ay), Pos2::new(plot_right, ay)],
            Stroke::new(1.0, weak),
        );
        let (_, ts) = ticks(duration, axis.width, 56.0);
        for t in ts {
            let x = axis.x(t);
            painter.line_segment(
                [Pos2::new(x, ay), Pos2::new(x, ay + 4.0)],
                Stroke::new(1.0, weak),
            );
            let align = if t <= 0.0 {
                egui::Align2::LEFT_TOP
            } else if x >= plot_right - 20.0 {
                egui::Align2::RIGHT_TOP
            } else {
                egui::Align2::CENTER_TOP
            };
            painter.text(
                Pos2::new(x, ay + 5.0),
                align,
                tick_label(t),
                font.clone(),
                text,
            );
        }
        painter.text(
            Pos2::new(rect.left() + 2.0, ay + 5.0),
            egui::Align2::LEFT_TOP,
            format!("{} s chunks", seconds_text((spc * 1000.0).round() as u32)),
            font,
            weak,
        );

        if let Some(pos) = resp.hover_pos() {
            if pos.x >= plot_left && pos.x <= plot_right {
                painter.line_segment(
                    [Pos2::new(pos.x, rect.top()), Pos2::new(pos.x, ay)],
                    Stroke::new(1.0, text.gamma_multiply(0.5)),
                );
                resp.on_hover_text_at_pointer(hover_label(axis.t(pos.x), spc));
            }
        }
    }

    fn selection_row(
        &mut self,
        ui: &mut egui::Ui,
        p: &MediaPreview,
        selection: Option<TimeRange>,
        actions: &mut Vec<Action>,
    ) {
        ui.horizontal_wrapped(|ui| {
            let Some(r) = selection else {
                ui.weak(format!(
                    "Drag on the timeline to select seconds; a click selects one {} s chunk.",
                    seconds_text((p.seconds_per_chunk * 1000.0).round() as u32)
                ));
                return;
            };
            ui.label(format!("Selected {}", r.label()));
            let name = ui.label("tokens");
            egui::ComboBox::from_id_salt("media-modality")
                .selected_text(self.modality.name())
                .width(100.0)
                .show_ui(ui, |ui| {
                    for m in Modality::ALL {
                        ui.selectable_value(&mut self.modality, m, m.name());
                    }
                })
                .response
                .labelled_by(name.id);
            let selector = r.selector(self.modality);
            let (audio, video) = selection_counts(&p.spans, r);
            let n = match self.modality {
                Modality::Both => format!("{audio} audio + {video} video positions"),
                Modality::Audio => format!("{audio} audio positions"),
                Modality::Video => format!("{video} video positions"),
            };
            ui.monospace(selector.to_string());
            ui.weak(n);
            if ui
                .button("Knockout source")
                .on_hover_text("Use these seconds as the knockout's source (the keys hidden)")
                .clicked()
            {
                actions.push(Action::UseSpan(SpanRole::Source, selector.clone()));
            }
            if ui
                .button("Knockout target")
                .on_hover_text(
                    "Use these seconds as the knockout's target (the queries that lose them)",
                )
                .clicked()
            {
                actions.push(Action::UseSpan(SpanRole::Target, selector.clone()));
            }
            if ui
                .button("Ask about these seconds")
                .on_hover_text(
                    "Prepare the clip again from these seconds only and answer (the From/To fields of the \
                     question row; as avflow prepare --start --end)",
                )
                .clicked()
            {
                actions.push(Action::AskRange(r));
            }
            if ui.button("Clear selection").clicked() {
                actions.push(Action::SelectTime(None));
            }
        });
    }
}

/// Which side of a knockout a picked span goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanRole {
    Source,
    Target,
}

/// A span the user sent to the knockout panel; `serial` grows with every pick so the panel applies each
/// one once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanPick {
    pub serial: u64,
    pub role: SpanRole,
    pub selector: Selector,
    /// The layers it applies in (a rectangle dragged on the heatmap); `None` keeps the panel's.
    pub layers: Option<(usize, usize)>,
    /// Add it as one more block (Shift on the heatmap) instead of replacing the source.
    pub add: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(a: u32, b: u32) -> TimeRange {
        TimeRange {
            start_ms: a,
            end_ms: b,
        }
    }

    #[test]
    fn time_and_x_map_both_ways() {
        let axis = TimeAxis {
            duration: 4.0,
            left: 100.0,
            width: 400.0,
        };
        assert_eq!(axis.x(0.0), 100.0);
        assert_eq!(axis.x(4.0), 500.0);
        assert_eq!(axis.x(1.0), 200.0);
        assert_eq!(axis.t(200.0), 1.0);
        for t in [0.0, 0.37, 2.0, 3.99] {
            assert!((axis.t(axis.x(t)) - t).abs() < 1e-6);
        }
        // Outside the plot the time is clamped to the clip.
        assert_eq!(axis.t(50.0), 0.0);
        assert_eq!(axis.t(900.0), 4.0);
        let empty = TimeAxis {
            duration: 0.0,
            left: 5.0,
            width: 0.0,
        };
        assert_eq!((empty.x(3.0), empty.t(10.0)), (5.0, 0.0));
    }

    #[test]
    fn selections_become_selectors() {
        assert_eq!(seconds_text(1000), "1");
        assert_eq!(seconds_text(1500), "1.5");
        assert_eq!(seconds_text(1040), "1.04");
        assert_eq!(seconds_text(5), "0.005");
        let r = tr(1000, 3000);
        assert_eq!(r.selector(Modality::Both).to_string(), "@1-3");
        assert_eq!(r.selector(Modality::Audio).to_string(), "audio@1-3");
        assert_eq!(
            tr(250, 1750).selector(Modality::Video).to_string(),
            "video@0.25-1.75"
        );
        assert_eq!(
            tr(1040, 3000).selector(Modality::Both).to_string(),
            "@1.04-3"
        );
        assert_eq!(r.label(), "1\u{2013}3 s");
        // Dragging right to left, past the ends, to 10 ms.
        assert_eq!(TimeRange::between(3.004, 0.996, 4.0), Some(tr(1000, 3000)));
        assert_eq!(TimeRange::between(-1.0, 9.0, 4.0), Some(tr(0, 4000)));
        assert_eq!(TimeRange::between(1.0, 1.004, 4.0), None);
    }

    #[test]
    fn a_selector_parses_back_as_the_cli_reads_it() {
        // The CLI reads what the app shows: the printed selector parses back to the same seconds.
        let r = tr(1230, 2500);
        let s = r.selector(Modality::Audio);
        assert_eq!(s, Selector::time(Some("audio"), 1.23, 2.5));
        assert_eq!(s.to_string(), "audio@1.23-2.5");
        assert_eq!(s.to_string().parse::<Selector>().ok(), Some(s));
    }

    #[test]
    fn a_click_selects_its_chunk() {
        assert_eq!(chunk_at(0.5, 2.0, 4.0), Some(tr(0, 2000)));
        assert_eq!(chunk_at(2.0, 2.0, 4.0), Some(tr(2000, 4000)));
        // The last chunk is cut at the clip's end; the very end belongs to it.
        assert_eq!(chunk_at(4.9, 2.0, 4.9), Some(tr(4000, 4900)));
        assert_eq!(chunk_at(4.0, 2.0, 4.0), Some(tr(2000, 4000)));
        assert_eq!(chunk_at(1.0, 0.0, 4.0), None);
        assert_eq!(chunk_boundaries(4.0, 2.0), vec![2.0]);
        assert_eq!(chunk_boundaries(5.0, 2.0), vec![2.0, 4.0]);
        assert!(chunk_boundaries(2.0, 2.0).is_empty());
    }

    #[test]
    fn ticks_are_nice_and_spaced() {
        let (step, ts) = ticks(4.0, 800.0, 56.0);
        assert_eq!(step, 0.5);
        assert_eq!(ts.len(), 9);
        let (step, ts) = ticks(4.0, 100.0, 56.0);
        assert_eq!((step, ts), (5.0, vec![0.0]));
        let (step, _) = ticks(120.0, 800.0, 56.0);
        assert_eq!(step, 10.0);
        assert_eq!(tick_label(1.5), "1.5 s");
        assert_eq!(tick_label(90.0), "1:30");
        assert_eq!(tick_label(0.0), "0 s");
    }

    #[test]
    fn envelope_merges_bins_per_column() {
        // 8 bins of 0.5 s over 4 s.
        let bins: Vec<[f32; 2]> = (0..8).map(|i| [-(i as f32), i as f32]).collect();
        let env = envelope(&bins, 0.5, 4.0, 4);
        assert_eq!(
            env,
            vec![
                Some([-1.0, 1.0]),
                Some([-3.0, 3.0]),
                Some([-5.0, 5.0]),
                Some([-7.0, 7.0])
            ]
        );
        // More columns than bins: each column shows the bin it lies in.
        let env = envelope(&bins, 0.5, 4.0, 16);
        assert_eq!(env[0], Some([0.0, 0.0]));
        assert_eq!(env[1], Some([0.0, 0.0]));
        assert_eq!(env[15], Some([-7.0, 7.0]));
        // A clip shorter than the axis: nothing past its end.
        let env = envelope(&bins, 0.5, 8.0, 8);
        assert_eq!(env[3], Some([-7.0, 7.0]));
        assert_eq!(env[4], None);
        assert!(envelope(&bins, 0.5, 4.0, 0).is_empty());
        assert_eq!(peak(&bins), 7.0);
    }

    #[test]
    fn counts_follow_the_token_times() {
        let span = |position, s, e, audio| MediaSpan {
            position,
            item: 0,
            start_s: s,
            end_s: e,
            audio,
        };
        let spans = vec![
            span(0, 0.0, 1.0, false),
            span(1, 1.0, 2.0, false),
            span(2, 0.96, 1.0, true),
            span(3, 1.0, 1.04, true),
            span(4, 2.0, 2.04, true),
        ];
        assert_eq!(selection_counts(&spans, tr(1000, 2000)), (1, 1));
        assert_eq!(selection_counts(&spans, tr(0, 3000)), (3, 2));
        assert_eq!(selection_counts(&spans, tr(3000, 4000)), (0, 0));
    }

    #[test]
    fn thumbnails_never_overlap() {
        assert_eq!(visible_frames(&[0.0, 10.0, 20.0, 30.0], 15.0), vec![0, 2]);
        assert_eq!(visible_frames(&[0.0, 50.0, 100.0], 40.0), vec![0, 1, 2]);
        assert!(visible_frames(&[], 10.0).is_empty());
    }

    #[test]
    fn mel_ramp_and_image_orientation() {
        assert_eq!(mel_color(0.0), Color32::from_rgb(0, 0, 4));
        assert_eq!(mel_color(1.0), Color32::from_rgb(252, 253, 191));
        assert_eq!(mel_color(f32::NAN), mel_color(0.0));
        let s = Spectrogram {
            n_mels: 2,
            columns: 3,
            // Bin 0 (low) is quiet, bin 1 (high) loud.
            values: vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            column_seconds: 0.01,
        };
        let img = mel_image(&s);
        assert_eq!(img.size, [3, 2]);
        // The top row is the highest bin.
        assert_eq!(img.pixels[0], mel_color(1.0));
        assert_eq!(img.pixels[3], mel_color(0.0));
    }

    #[test]
    fn lines_and_lanes() {
        let item = ItemPreview {
            kind: ItemKind::Video,
            path: "/x/basic.mkv".into(),
            duration_s: 4.0,
            frames: vec![],
            n_frames: 8,
            fps_used: Some(2.0),
            frame_size: Some((280, 392)),
            waveform: None,
            mel: None,
            tokens: crate::media::preview::TokenCounts {
                video: 560,
                audio: 100,
                image: 0,
            },
        };
        assert_eq!(
            item_line(&item),
            "basic.mkv · video 4 s · 8 frames at 2 fps, 280\u{00d7}392 · 560 video + 100 audio positions"
        );
        assert!(lanes(std::slice::from_ref(&item)).is_empty());
        assert_eq!(hover_label(1.234, 2.0), "1.23 s · chunk 0");
        assert_eq!(hover_label(2.5, 2.0), "2.50 s · chunk 1");
    }
}
