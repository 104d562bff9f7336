//! The panel seam: every panel is a pure "prepare view data" function (unit-tested, in the panel's module)
//! plus a draw function behind this small trait. Panels read one shared [`ViewState`] and ask the app for
//! work through [`Action`]s, so they never talk to the worker themselves.

use std::path::PathBuf;
use std::sync::Arc;

use crate::flow::heatmap::{HeatMetric, Heatmap};
use crate::flow::SweepRecord;
use crate::prompt::{Selector, TokenMap};
use crate::session::{DropSpec, KnockoutOutcome, KnockoutSpec};
use crate::worker::{JobId, ModelSummary};

use super::drop::DropView;
use super::figure::{ExportRequest, ExportState};
use super::media::{MediaView, SpanPick, SpanRole, TimeRange};
use super::tokens::Group;

/// What panels may ask the app to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the forward pass on the loaded model and inputs.
    Run,
    /// Run (or replace the queued) attention knockout.
    Knockout(KnockoutSpec),
    /// Sweep windows of `window` layers over these `(source, target)` pairs.
    Sweep {
        pairs: Vec<(Selector, Selector)>,
        window: usize,
    },
    /// Stop the running sweep (keeping the windows already computed).
    CancelSweep,
    /// Select these seconds of the media timeline (`None`: clear the selection).
    SelectTime(Option<TimeRange>),
    /// Ask the question again about these seconds of the timeline only (a time range of the clip).
    AskRange(TimeRange),
    /// Hand a selector (`@1-3`) to the knockout panel as its source or target.
    UseSpan(SpanRole, Selector),
    /// Show this heatmap metric, computing it unless it is already there or on its way.
    Heatmap(HeatMetric),
    /// Stop the running heatmap computation.
    CancelHeatmap,
    /// Compute the drop curve and time the prefill (the worker runs only the newest queued request).
    Drop(DropSpec),
    /// Stop the running drop computation.
    CancelDrop,
    /// Measure each head's attention from `last` (the heads view).
    Heads,
    /// Save a view's figure (sweep, heatmap, drop curve) with the command line's writers.
    Export(ExportRequest),
    /// A span picked on the heatmap: as the knockout's source or target, with its layers when dragged,
    /// added as one more block with Shift.
    PickSpan {
        role: SpanRole,
        selector: Selector,
        layers: Option<(usize, usize)>,
        add: bool,
    },
    /// Follow this answer in every knockout and sweep from now on (and rerun the shown knockout).
    Track(Tracked),
    /// Show this panel (activate its tab).
    Focus(&'static str),
    /// Change the knockout history (pin, rename, remove, export).
    History(super::history::HistoryEdit),
    /// Set the knockout panel to this request and follow its token (id and text) again.
    ApplyKnockout(KnockoutSpec, (u32, String)),
    /// Generate the model's own answer with and without the shown knockout.
    Generate,
    /// Stop the answers being generated (keeping their tokens so far).
    CancelGenerate,
    /// Open, run or close the second run of the Compare pane.
    Compare(super::compare::CompareAction),
}

/// The answer knockouts and sweeps follow: a token (the baseline top-1 when `None`), a typed answer of
/// several tokens and the options of a multiple-choice question (both scored by teacher forcing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tracked {
    /// A token picked in the top-k list: id and text.
    pub token: Option<(u32, String)>,
    pub answers: crate::session::AnswerSpec,
}

impl Tracked {
    /// `spec` following this answer.
    pub fn apply(&self, spec: &mut KnockoutSpec) {
        spec.token = self.token.as_ref().map(|t| t.0);
        spec.answers = self.answers.clone();
    }
}

/// The model's own answers: the unedited model's and the knocked-out one's, as they stream in.
#[derive(Debug, Clone, Default)]
pub struct GenerationView {
    pub base: Option<crate::worker::Generation>,
    pub edited: Option<crate::worker::Generation>,
    /// The worker's jobs generating them (Stop cancels both).
    pub jobs: Vec<JobId>,
}

impl GenerationView {
    pub fn running(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Files a streamed answer under the side it answers.
    pub fn update(&mut self, g: crate::worker::Generation) {
        if g.spec.knockout.is_some() {
            self.edited = Some(g);
        } else {
            self.base = Some(g);
        }
    }
}

/// The loaded inputs, split into columns of the worker's token map so the strip draws without per-frame
/// allocation.
#[derive(Debug, Clone, Default)]
pub struct InputsView {
    pub path: PathBuf,
    pub ids: Vec<u32>,
    /// Decoded token text per position; empty strings when the model has no tokenizer.
    pub texts: Vec<String>,
    pub groups: Vec<Group>,
    /// Seconds `[start, end)` of each media position (from the token map); `None` elsewhere.
    pub times: Vec<Option<[f64; 2]>>,
    /// The flow engine's groups (`system`, `video`, …, `last`) with their sizes: what knockouts can name.
    pub flow_groups: Vec<(String, usize)>,
    /// The token map itself: what selectors resolve against (the heatmap draws the shown knockout's
    /// blocks with it).
    pub map: Arc<TokenMap>,
}

impl InputsView {
    pub fn new(path: PathBuf, map: &Arc<TokenMap>) -> Self {
        let tokens = &map.tokens;
        Self {
            path,
            ids: tokens.iter().map(|t| t.id).collect(),
            texts: tokens.iter().map(|t| t.text.clone()).collect(),
            groups: tokens.iter().map(Group::of).collect(),
            times: tokens.iter().map(|t| t.time).collect(),
            flow_groups: map.group_sizes(),
            map: Arc::clone(map),
        }
    }
}

/// The last answer of the model.
#[derive(Debug, Clone, Default)]
pub struct AnswerView {
    pub top_k: Vec<(u32, String, f32)>,
    pub seconds: f32,
    pub positions: usize,
    /// The trace's size and where it lives (`TraceInfo::describe`).
    pub trace: Option<String>,
}

/// The sweep: running state and the last records.
#[derive(Debug, Clone, Default)]
pub struct SweepView {
    pub running: bool,
    /// The worker's job of the running sweep: its progress events are routed here, its Cancel stops it.
    pub job: Option<JobId>,
    /// The user stopped the running sweep: its records are the windows it finished.
    pub stopped: bool,
    /// `(done, total)` windows of the running sweep.
    pub progress: Option<(usize, usize)>,
    pub started: Option<std::time::Instant>,
    pub records: Vec<SweepRecord>,
    /// Layers per window of these records (the exported figure names it).
    pub window: usize,
    /// How long the last finished sweep took.
    pub seconds: f32,
}

/// One computed heatmap.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatResult {
    pub metric: HeatMetric,
    pub matrix: Arc<Heatmap>,
    /// The answer token the lens metrics follow (the baseline top-1): id and text.
    pub token: (u32, String),
    pub seconds: f32,
    /// Unique per result while the app runs: the GPU re-uploads the matrix only when this changes.
    pub generation: u64,
}

/// The heatmap: the metric shown, what was computed for this prompt, and the running request.
#[derive(Debug, Clone, Default)]
pub struct HeatmapView {
    pub metric: HeatMetric,
    /// At most one result per metric, kept until the model or the inputs change.
    pub results: Vec<HeatResult>,
    pub running: Option<HeatMetric>,
    /// The worker's job computing `running`.
    pub job: Option<JobId>,
    /// `(done, total)` steps of the running computation (lens metrics report them).
    pub progress: Option<(usize, usize)>,
    pub started: Option<std::time::Instant>,
}

impl HeatmapView {
    pub fn result(&self, metric: HeatMetric) -> Option<&HeatResult> {
        self.results.iter().find(|r| r.metric == metric)
    }
}

/// Everything panels read.
#[derive(Debug, Clone, Default)]
pub struct ViewState {
    pub model: Option<ModelSummary>,
    pub inputs: Option<InputsView>,
    pub answer: Option<AnswerView>,
    /// The last knockout result, with the request it answers (the baseline top-1 is the watched token).
    pub knockout: Option<KnockoutOutcome>,
    pub sweep: SweepView,
    pub heatmap: HeatmapView,
    pub drop: DropView,
    /// Export… of the views: typed-path fallback, the running export, the last report.
    pub export: ExportState,
    /// The media of a prompt prepared in the app (frames, waveform, spectrogram, token times).
    pub media: Option<MediaView>,
    /// The seconds selected on the media timeline.
    pub time_selection: Option<TimeRange>,
    /// The newest span sent to the knockout panel.
    pub span_pick: Option<SpanPick>,
    /// A command is running in the worker.
    pub busy: bool,
    /// The answer knockouts and sweeps follow.
    pub tracked: Tracked,
    /// The model's own answers, with and without the knockout.
    pub generation: GenerationView,
    /// Each head's attention from `last` to every group.
    pub heads: super::heads::HeadsView,
    /// The knockouts tried on this model and prompt.
    pub history: super::history::HistoryView,
    /// The second run (B) beside this one, and both runs' sweeps and knockouts.
    pub compare: super::compare::CompareView,
    /// A request for the knockout panel to adopt (re-applied from the history); `serial` grows with
    /// each so the panel applies each one once.
    pub apply: Option<(u64, KnockoutSpec)>,
}

pub trait Panel {
    /// Heading shown above the panel.
    fn name(&self) -> &'static str;
    /// Draws the panel; requests go into `actions`, handled by the app after the frame's panels ran.
    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>);
}

/// The panels of the main area, in display order.
pub fn registry() -> Vec<Box<dyn Panel>> {
    vec![
        Box::new(super::strip::TokenStripPanel::default()),
        Box::new(super::media::MediaPanel::default()),
        Box::new(super::answer::AnswerPanel::default()),
        Box::new(super::knockout::KnockoutPanel::default()),
        Box::new(super::history::HistoryPanel::default()),
        Box::new(super::sweep::SweepPanel::default()),
        Box::new(super::heatmap::HeatmapPanel::default()),
        Box::new(super::drop::DropPanel::default()),
        Box::new(super::heads::HeadsPanel::default()),
        Box::new(super::compare::ComparePanel::default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_ordered() {
        let names: Vec<&str> = registry().iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            vec![
                "Tokens", "Media", "Answer", "Knockout", "History", "Sweep", "Heatmap", "Drop",
                "Heads", "Compare"
            ]
        );
    }

    #[test]
    fn inputs_view_splits_columns() {
        use crate::prompt::{Groups, TokenInfo};
        let info = |position: usize, id: u32, text: &str, group: &str, time| TokenInfo {
            position,
            id,
            group: group.into(),
            item: None,
            time,
            grid: None,
            chunk: None,
            marker: false,
            text: text.into(),
        };
        let mut groups = Groups {
            seq_len: 2,
            ..Groups::default()
        };
        groups.spans.insert("system".into(), vec![0]);
        groups.spans.insert("audio".into(), vec![1]);
        let map = TokenMap {
            tokens: vec![
                info(0, 1, "a", "system", None),
                info(1, 2, "", "audio", Some([0.04, 0.08])),
            ],
            groups,
            seconds_per_chunk: 2.0,
        };
        let v = InputsView::new(PathBuf::from("x.safetensors"), &Arc::new(map));
        assert_eq!(v.ids, vec![1, 2]);
        assert_eq!(v.texts, vec!["a".to_string(), String::new()]);
        assert_eq!(v.groups, vec![Group::System, Group::Audio]);
        assert_eq!(v.times, vec![None, Some([0.04, 0.08])]);
        assert_eq!(
            v.flow_groups,
            vec![("audio".to_string(), 1), ("system".to_string(), 1)]
        );
    }
}
