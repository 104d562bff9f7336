//! History panel: every knockout tried on this model and prompt, newest first (pinned ones on top), with
//! its numbers; each can be re-applied, pinned, renamed, and the list saved as JSON or CSV. The list is kept
//! in a file per model and inputs (atomic writes), so it survives a restart with the same model and inputs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::session::{KnockoutOutcome, KnockoutSpec};

use super::answer::format_percent;
use super::knockout::format_change;
use super::panel::{Action, Panel, ViewState};

pub const PANEL_NAME: &str = "History";

/// Unpinned entries kept; older ones are forgotten (pinned ones never are).
pub const MAX_ENTRIES: usize = 500;

/// One knockout tried, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub spec: KnockoutSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub pinned: bool,
    pub prob: f32,
    pub base_prob: f32,
    pub rel_change: f32,
    /// The token followed: id and text.
    pub token: (u32, String),
    /// Top-1 after the knockout: id and text.
    pub top1: (u32, String),
    /// The typed answer's log-probability after the knockout, when one was followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_logprob: Option<f32>,
    /// The option preferred after the knockout, when options were followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_choice: Option<String>,
    /// Seconds since the Unix epoch of the last run.
    pub tried: u64,
}

impl HistoryEntry {
    pub fn of(o: &KnockoutOutcome) -> Self {
        let tried = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            spec: o.spec.clone(),
            name: None,
            pinned: false,
            prob: o.result.prob,
            base_prob: o.result.base_prob,
            rel_change: o.result.rel_change,
            token: o.token.clone(),
            top1: o.top1.clone(),
            answer_logprob: o.answers.answer.as_ref().map(|a| a.logprob),
            option_choice: o
                .answers
                .choice()
                .map(|i| o.answers.options[i].text.clone()),
            tried,
        }
    }

    /// The name, else the request (`audio -> last in layers 0..9`).
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.spec.describe())
    }
}

/// The knockouts tried on one model and prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KnockoutHistory {
    /// Which model and inputs the numbers belong to.
    pub model: String,
    pub inputs: PathBuf,
    pub entries: Vec<HistoryEntry>,
}

impl KnockoutHistory {
    pub fn new(model: &str, inputs: &Path) -> Self {
        Self {
            model: model.to_string(),
            inputs: inputs.to_path_buf(),
            entries: Vec::new(),
        }
    }

    /// Records a result: a request tried before moves to the front with the new numbers (its name and pin
    /// kept); the oldest unpinned entries beyond [`MAX_ENTRIES`] are forgotten.
    pub fn record(&mut self, o: &KnockoutOutcome) {
        let mut e = HistoryEntry::of(o);
        if let Some(i) = self.entries.iter().position(|x| x.spec == o.spec) {
            let old = self.entries.remove(i);
            e.name = old.name;
            e.pinned = old.pinned;
        }
        self.entries.insert(0, e);
        let mut unpinned = 0;
        self.entries.retain(|x| {
            if x.pinned {
                return true;
            }
            unpinned += 1;
            unpinned <= MAX_ENTRIES
        });
    }

    /// Entries in display order: pinned first, each part newest first; with their indices.
    pub fn ordered(&self) -> Vec<(usize, &HistoryEntry)> {
        let mut v: Vec<(usize, &HistoryEntry)> = self.entries.iter().enumerate().collect();
        v.sort_by_key(|(i, e)| (!e.pinned, *i));
        v
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One row per entry: name, request, numbers.
    pub fn to_csv(&self) -> String {
        let cell = |c: &str| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        };
        let mut s = String::from(
            "name,request,pinned,prob,base_prob,rel_change,token_id,token,top1_id,top1,answer_logprob,option_choice\n",
        );
        for (_, e) in self.ordered() {
            let row = [
                e.name.clone().unwrap_or_default(),
                e.spec.describe(),
                e.pinned.to_string(),
                e.prob.to_string(),
                e.base_prob.to_string(),
                e.rel_change.to_string(),
                e.token.0.to_string(),
                e.token.1.clone(),
                e.top1.0.to_string(),
                e.top1.1.clone(),
                e.answer_logprob.map(|x| x.to_string()).unwrap_or_default(),
                e.option_choice.clone().unwrap_or_default(),
            ];
            s.push_str(&row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
            s.push('\n');
        }
        s
    }

    /// The file holding the history of `model` on `inputs` in `dir`: named by a hash of the model, the
    /// inputs' path, size and modification time (a rewritten inputs file starts a new history).
    pub fn file_in(dir: &Path, model: &str, inputs: &Path) -> PathBuf {
        use sha2::Digest;
        let meta = std::fs::metadata(inputs).ok();
        let stamp = meta.as_ref().map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            (m.len(), t)
        });
        let key = format!("{model}\n{}\n{stamp:?}", inputs.display());
        let hash = sha2::Sha256::digest(key.as_bytes());
        let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("knockouts-{hex}.json"))
    }

    /// Reads a history file; a missing one is an empty history, an unreadable one too (with the reason).
    pub fn load(path: &Path, model: &str, inputs: &Path) -> (Self, Option<String>) {
        match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Self::new(model, inputs), None),
            Err(e) => (
                Self::new(model, inputs),
                Some(format!(
                    "could not read the knockout history {}: {e}",
                    path.display()
                )),
            ),
            Ok(bytes) => match serde_json::from_slice::<Self>(&bytes) {
                Ok(h) => (h, None),
                Err(e) => (
                    Self::new(model, inputs),
                    Some(format!(
                        "the knockout history {} is damaged ({e}); starting a new one",
                        path.display()
                    )),
                ),
            },
        }
    }

    /// Writes the history atomically (a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> crate::error::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| crate::error::Error::io(format!("creating {}", dir.display()), e))?;
        }
        crate::tensor_io::write_atomic(path, self.to_json().as_bytes())
    }
}

/// What the history view shows, with the file it lives in.
#[derive(Debug, Clone, Default)]
pub struct HistoryView {
    pub history: KnockoutHistory,
    pub file: Option<PathBuf>,
    /// The last save or export, for the panel's status line.
    pub note: Option<String>,
}

/// What the panel asks the app to change in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEdit {
    Pin(usize, bool),
    Rename(usize, Option<String>),
    Remove(usize),
    /// Save the list as JSON or CSV (by the extension) to this path.
    Export(PathBuf),
}

#[derive(Default)]
pub struct HistoryPanel {
    /// The entry being renamed, its text, and whether its field still has to take the focus.
    renaming: Option<(usize, String, bool)>,
    export_path: String,
}

impl Panel for HistoryPanel {
    fn name(&self) -> &'static str {
        PANEL_NAME
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let h = &view.history.history;
        if h.entries.is_empty() {
            ui.weak("Every knockout you try is listed here, with its numbers: re-apply, pin, rename, export.");
            return;
        }
        if self.export_path.is_empty() {
            self.export_path = default_export(&view.history).display().to_string();
        }
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{} knockouts", h.entries.len()));
            let l = ui.label("save to");
            ui.add(egui::TextEdit::singleline(&mut self.export_path).desired_width(220.0))
                .labelled_by(l.id)
                .on_hover_text("A .json or .csv path");
            for ext in ["json", "csv"] {
                if ui.button(format!("Save {}", ext.to_uppercase())).clicked() {
                    let path = Path::new(&self.export_path).with_extension(ext);
                    self.export_path = path.display().to_string();
                    actions.push(Action::History(HistoryEdit::Export(path)));
                }
            }
        });
        if let Some(n) = &view.history.note {
            ui.weak(n);
        }
        egui::Grid::new("knockout_history")
            .num_columns(5)
            .striped(true)
            .spacing([8.0, 3.0])
            .show(ui, |ui| {
                for (i, e) in h.ordered() {
                    let star = if e.pinned { "Unpin" } else { "Pin" };
                    if ui
                        .button(star)
                        .on_hover_text(if e.pinned {
                            "Unpin"
                        } else {
                            "Pin: keep it on top"
                        })
                        .clicked()
                    {
                        actions.push(Action::History(HistoryEdit::Pin(i, !e.pinned)));
                    }
                    ui.horizontal(|ui| {
                        if ui
                            .button("Apply")
                            .on_hover_text("Set the knockout (and the followed answer) to this one")
                            .clicked()
                        {
                            actions.push(Action::ApplyKnockout(e.spec.clone(), e.token.clone()));
                        }
                        if ui
                            .small_button("Remove")
                            .on_hover_text("Remove from the history")
                            .clicked()
                        {
                            actions.push(Action::History(HistoryEdit::Remove(i)));
                        }
                    });
                    match &mut self.renaming {
                        Some((j, text, focus)) if *j == i => {
                            let r = ui.text_edit_singleline(text);
                            if std::mem::take(focus) {
                                r.request_focus();
                            }
                            if r.lost_focus() {
                                let name = Some(text.trim().to_string()).filter(|t| !t.is_empty());
                                actions.push(Action::History(HistoryEdit::Rename(i, name)));
                                self.renaming = None;
                            }
                        }
                        _ => {
                            let r = ui
                                .add(egui::Label::new(e.label()).sense(egui::Sense::click()))
                                .on_hover_text(format!("{}\nClick to rename", e.spec.describe()));
                            if r.clicked() {
                                self.renaming = Some((i, e.name.clone().unwrap_or_default(), true));
                            }
                        }
                    }
                    ui.label(format!(
                        "{} -> {}",
                        format_percent(e.base_prob),
                        format_percent(e.prob)
                    ));
                    ui.colored_label(
                        super::knockout::change_color(e.rel_change),
                        format_change(e.rel_change),
                    );
                    ui.end_row();
                }
            });
    }
}

/// Where an export goes unless the user types another path: the home folder, named after the history.
pub fn default_export(v: &HistoryView) -> PathBuf {
    let dir = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let stem = v
        .file
        .as_ref()
        .and_then(|f| f.file_stem())
        .map_or("knockouts".into(), |s| s.to_string_lossy().into_owned());
    dir.join(format!("avflow-{stem}.json"))
}

/// Applies an edit to the history; returns the note to show.
pub fn edit(v: &mut HistoryView, e: HistoryEdit) -> Option<String> {
    let h = &mut v.history;
    match e {
        HistoryEdit::Pin(i, on) => {
            if let Some(x) = h.entries.get_mut(i) {
                x.pinned = on;
            }
            None
        }
        HistoryEdit::Rename(i, name) => {
            if let Some(x) = h.entries.get_mut(i) {
                x.name = name;
            }
            None
        }
        HistoryEdit::Remove(i) => {
            if i < h.entries.len() {
                h.entries.remove(i);
            }
            None
        }
        HistoryEdit::Export(path) => {
            let body = if path.extension().is_some_and(|x| x == "csv") {
                h.to_csv()
            } else {
                h.to_json()
            };
            Some(
                match crate::tensor_io::write_atomic(&path, body.as_bytes()) {
                    Ok(()) => format!("Saved {} knockouts to {}.", h.entries.len(), path.display()),
                    Err(err) => format!(
                        "Could not save {}: {err}. Choose a folder you can write to.",
                        path.display()
                    ),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::KnockoutResult;
    use crate::prompt::Selector;

    fn outcome(source: &str, prob: f32) -> KnockoutOutcome {
        KnockoutOutcome {
            spec: KnockoutSpec::single(Selector::group(source), Selector::group("last"), 0, 2),
            result: KnockoutResult {
                prob,
                base_prob: 0.5,
                rel_change: crate::flow::knockout::rel_change(prob, 0.5),
                top1_id: 7,
                token_id: 3,
            },
            top1: (7, "x".into()),
            token: (3, "A".into()),
            seconds: 0.0,
            control: None,
            answers: Default::default(),
        }
    }

    #[test]
    fn records_move_to_the_front_keep_names_and_pins_and_forget_the_oldest() {
        let mut h = KnockoutHistory::new("m", Path::new("in.safetensors"));
        h.record(&outcome("audio", 0.25));
        h.record(&outcome("video", 0.4));
        h.entries[1].name = Some("audio early".into());
        h.entries[1].pinned = true;
        h.record(&outcome("audio", 0.3));
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[0].prob, 0.3);
        assert_eq!(h.entries[0].name.as_deref(), Some("audio early"));
        assert!(h.entries[0].pinned);
        // Pinned first in display order.
        h.entries[0].pinned = false;
        h.entries[1].pinned = true;
        let order: Vec<usize> = h.ordered().iter().map(|(i, _)| *i).collect();
        assert_eq!(order, vec![1, 0]);
        for k in 0..MAX_ENTRIES + 10 {
            let mut o = outcome("audio", 0.1);
            o.spec.blocks[0].end = 2 + k;
            h.record(&o);
        }
        assert_eq!(h.entries.iter().filter(|e| !e.pinned).count(), MAX_ENTRIES);
        assert!(h
            .entries
            .iter()
            .any(|e| e.pinned && e.spec.blocks[0].source.to_string() == "video"));
    }

    #[test]
    fn files_round_trip_and_damaged_ones_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = dir.path().join("in.safetensors");
        std::fs::write(&inputs, b"x").unwrap();
        let file = KnockoutHistory::file_in(dir.path(), "m", &inputs);
        assert_eq!(file, KnockoutHistory::file_in(dir.path(), "m", &inputs));
        assert_ne!(file, KnockoutHistory::file_in(dir.path(), "other", &inputs));
        let mut h = KnockoutHistory::new("m", &inputs);
        h.record(&outcome("audio", 0.25));
        h.entries[0].name = Some("first, \"quoted\"".into());
        h.save(&file).unwrap();
        let (back, note) = KnockoutHistory::load(&file, "m", &inputs);
        assert!(note.is_none());
        assert_eq!(back, h);
        let csv = back.to_csv();
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("\"first, \"\"quoted\"\"\",audio -> last in layers 0..2,false,0.25"));
        std::fs::write(&file, b"{not json").unwrap();
        let (fresh, note) = KnockoutHistory::load(&file, "m", &inputs);
        assert!(fresh.entries.is_empty());
        assert!(note.unwrap().contains("damaged"));
    }
}
