//! The app's "open media and ask" row and everything that feeds it: Open video…/audio…/image… dialogs
//! (with the typed-path fallback of the Inputs field), files dropped on the window, recent files, and the
//! [`Request::PrepareMedia`] an Ask sends. The pure decisions live in [`crate::ui::media_input`].

use std::path::{Path, PathBuf};

use egui::{Key, RichText};

use crate::media::cache::cache_file_name;
use crate::media::prepare::{Item, PrepareOptions, TimeRange as ClipRange};
use crate::ui::dialog::{dialog_support, pick_file, DialogSupport};
use crate::ui::media_input::{
    add_media, ask_problem, classify, item_label, open_order, remember, supported_text, Opened,
    AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, RECENT_MAX, VIDEO_EXTENSIONS,
};
use crate::worker::{MediaRequest, Request};

use super::{AvflowApp, Status};

/// What the running file dialog was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum OpenFor {
    #[default]
    Inputs,
    Video,
    Audio,
    Image,
}

impl OpenFor {
    fn noun(self) -> &'static str {
        match self {
            OpenFor::Inputs => "inputs file",
            OpenFor::Video => "video",
            OpenFor::Audio => "audio file",
            OpenFor::Image => "image",
        }
    }
}

/// The prompt being put together in the top bar.
#[derive(Debug, Clone)]
pub(super) struct AskState {
    /// Media in prompt order.
    pub items: Vec<Item>,
    /// The list last asked about: the next opened file starts a new prompt.
    pub asked: Option<Vec<Item>>,
    pub question: String,
    /// Interleave a video's own sound (`use_audio_in_video`).
    pub use_audio_in_video: bool,
    /// Ask as soon as the model being loaded is there.
    pub pending: bool,
    pub focus_question: bool,
    pub dialog_for: OpenFor,
    /// Where prepared inputs are written.
    pub cache_dir: PathBuf,
    /// The From/To fields: seconds of each video and audio item to ask about (empty: the whole clip).
    pub start: String,
    pub end: String,
    /// The range the prompt on screen was prepared with (its timeline counts from its start).
    pub asked_range: Option<ClipRange>,
}

impl AskState {
    pub fn new(items: Vec<Item>, question: String, cache_dir: PathBuf) -> Self {
        Self {
            items,
            asked: None,
            question,
            use_audio_in_video: true,
            pending: false,
            focus_question: false,
            dialog_for: OpenFor::Inputs,
            cache_dir,
            start: String::new(),
            end: String::new(),
            asked_range: None,
        }
    }

    /// The From/To fields as a time range, or `(message, fix)` for text that is not one.
    pub fn range(&self) -> Result<Option<ClipRange>, (String, String)> {
        let fix = || {
            "type seconds from the clip's start (e.g. 12.5), the end after the start, or leave both empty for \
             the whole clip"
                .to_string()
        };
        let seconds = |text: &str, what: &str| -> Result<Option<f64>, (String, String)> {
            let t = text.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<f64>().map(Some).map_err(|_| {
                (
                    format!("the range's {what} {t:?} is not a number of seconds"),
                    fix(),
                )
            })
        };
        ClipRange::new(seconds(&self.start, "start")?, seconds(&self.end, "end")?)
            .map_err(|e| (e.to_string(), fix()))
    }

    /// Puts seconds `a..b` of the prompt on screen in the From/To fields (its timeline counts from the
    /// range it was asked with).
    pub fn set_range_from_timeline(&mut self, a: f64, b: f64) {
        let offset = self.asked_range.map_or(0.0, |r| r.start);
        let text = |s: f64| format!("{}", (s * 1000.0).round() / 1000.0);
        self.start = text(offset + a);
        self.end = text(offset + b);
    }

    pub fn options(&self) -> PrepareOptions {
        PrepareOptions {
            use_audio_in_video: self.use_audio_in_video,
            range: self.range().ok().flatten(),
            ..PrepareOptions::default()
        }
    }
}

impl AvflowApp {
    /// Prepares the media list and the question with the loaded model (or once the model being loaded is
    /// there), reads the result as inputs and answers.
    pub(super) fn ask(&mut self) {
        if let Some((message, fix)) = ask_problem(&self.prompt.items, &self.prompt.question) {
            self.status = Status::Error {
                message,
                fix: Some(fix),
            };
            if !self.prompt.items.is_empty() {
                self.prompt.focus_question = true;
            }
            return;
        }
        if let Err((message, fix)) = self.prompt.range() {
            self.status = Status::Error {
                message,
                fix: Some(fix),
            };
            return;
        }
        if self.view.model.is_none() {
            // With no model, whatever the worker is busy with is a model load.
            if self.view.busy {
                self.prompt.pending = true;
                self.status =
                    Status::Info("The question is asked once the model has loaded.".into());
            } else {
                self.status = Status::Error {
                    message: "no model loaded to ask".into(),
                    fix: Some(
                        "load a model (a folder or a hub id such as Qwen/Qwen2.5-Omni-3B), or press Demo, then Ask"
                            .into(),
                    ),
                };
            }
            return;
        }
        self.send_ask();
    }

    pub(super) fn send_ask(&mut self) {
        self.prompt.pending = false;
        let items = self.prompt.items.clone();
        let question = self.prompt.question.trim().to_string();
        let options = self.prompt.options();
        self.prompt.asked_range = options.range;
        let out = self
            .prompt
            .cache_dir
            .join(cache_file_name(&items, &question, &options));
        let names: Vec<String> = items.iter().map(item_label).collect();
        self.status = Status::Info(format!("Preparing {}…", names.join(", ")));
        self.prompt.asked = Some(items.clone());
        for it in &items {
            remember(&mut self.recent.files, it.path(), RECENT_MAX);
        }
        self.recent.question = Some(question.clone());
        // The answer is what an Ask is for.
        self.autorun = true;
        self.submit(Request::PrepareMedia(MediaRequest {
            items,
            question,
            options,
            out,
        }));
    }

    /// Adds a media file to the prompt (or starts a new prompt after an ask).
    pub(super) fn add_media(&mut self, item: Item) {
        remember(&mut self.recent.files, item.path(), RECENT_MAX);
        self.prompt.items = add_media(&self.prompt.items, self.prompt.asked.as_deref(), item);
        self.prompt.asked = None;
    }

    /// Opens paths by what they are (dropped files, a dialog's choice, a recent file): a model folder is
    /// loaded, inputs are read (onto a model opened with them), media join the prompt — which is asked at
    /// once when a question is there.
    pub(super) fn open_paths(&mut self, paths: Vec<PathBuf>) {
        let opened = open_order(paths.iter().map(|p| classify(p)).collect());
        let (mut unknown, mut added, mut model_opened) = (Vec::new(), Vec::new(), false);
        for o in opened {
            match o {
                Opened::Model(p) => {
                    self.model_field = p.display().to_string();
                    self.load_model(self.model_field.clone());
                    model_opened = true;
                }
                Opened::Inputs(p) => {
                    self.inputs_field = p.display().to_string();
                    if model_opened || (self.view.model.is_none() && self.view.busy) {
                        self.pending_inputs = Some(p);
                    } else {
                        self.load_inputs(p);
                    }
                }
                Opened::Media(item) => {
                    added.push(item_label(&item));
                    self.add_media(item);
                }
                Opened::Unknown { path, reason } => {
                    unknown.push(format!("{} {reason}", path.display()));
                }
            }
        }
        if !unknown.is_empty() {
            self.status = Status::Error {
                message: format!("cannot open {}", unknown.join("; ")),
                fix: Some(supported_text()),
            };
        } else if !added.is_empty() {
            if self.prompt.question.trim().is_empty() {
                self.status = Status::Info(format!(
                    "Added {}. Type a question and press Ask.",
                    added.join(", ")
                ));
                self.prompt.focus_question = true;
            } else {
                self.ask();
            }
        }
    }

    /// The Inputs field's typed path: media join the prompt (the fallback where no dialog opens), a model
    /// folder loads, anything else is read as inputs (the worker says what is wrong with it).
    pub(super) fn open_typed(&mut self, path: PathBuf) {
        match classify(&path) {
            Opened::Media(_) | Opened::Model(_) => self.open_paths(vec![path]),
            Opened::Inputs(_) | Opened::Unknown { .. } => self.load_inputs(path),
        }
    }

    pub(super) fn open_media_dialog(&mut self, what: OpenFor) {
        let (filter, exts) = match what {
            OpenFor::Video => ("videos", VIDEO_EXTENSIONS),
            OpenFor::Audio => ("audio", AUDIO_EXTENSIONS),
            OpenFor::Image => ("images", IMAGE_EXTENSIONS),
            OpenFor::Inputs => return self.open_dialog(),
        };
        match dialog_support() {
            DialogSupport::Unavailable(_) => {
                self.status = Status::Error {
                    message: format!("cannot open a file dialog to choose a {}", what.noun()),
                    fix: Some(
                        "no desktop portal or zenity here: type the file's path in the Inputs field and press \
                         Enter (videos, audio and images join the prompt), or drop the file on the window"
                            .into(),
                    ),
                };
                self.focus_inputs = true;
            }
            DialogSupport::Available => {
                let start = self
                    .prompt
                    .items
                    .last()
                    .map(|i| i.path().to_path_buf())
                    .or_else(|| self.recent.files.first().cloned());
                self.prompt.dialog_for = what;
                let title = format!("Open a {}", what.noun());
                self.dialog = Some(pick_file(&title, filter, exts, start.as_deref()));
            }
        }
    }

    /// The dialog's choice, by what it was opened for.
    pub(super) fn dialog_chose(&mut self, path: PathBuf) {
        match std::mem::take(&mut self.prompt.dialog_for) {
            OpenFor::Inputs => {
                self.inputs_field = path.display().to_string();
                remember(&mut self.recent.files, &path, RECENT_MAX);
                self.load_inputs(path);
            }
            _ => self.open_paths(vec![path]),
        }
    }

    /// Files dropped on the window this frame, and a hint while they hover over it.
    pub(super) fn handle_drops(&mut self, ctx: &egui::Context) {
        let (hovering, dropped) = ctx.input(|i| {
            let dropped: Vec<PathBuf> = i
                .raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            (!i.raw.hovered_files.is_empty(), dropped)
        });
        if hovering {
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("avflow-drop-hint"),
            ));
            let r = ctx.content_rect();
            painter.rect_filled(r, 0.0, egui::Color32::from_black_alpha(170));
            painter.text(
                r.center(),
                egui::Align2::CENTER_CENTER,
                "Drop a video, audio file, image, prepared inputs or a model folder",
                egui::FontId::proportional(20.0),
                egui::Color32::WHITE,
            );
        }
        if !dropped.is_empty() {
            self.open_paths(dropped);
        }
    }

    /// Question, Ask, Open video…/audio…/image…, Recent, and the prompt's media as removable chips.
    pub(super) fn media_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("Question");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.prompt.question)
                        .hint_text("e.g. What is making the sound?")
                        .desired_width((ui.available_width() * 0.4).max(160.0)),
                )
                .labelled_by(label.id);
            if std::mem::take(&mut self.prompt.focus_question) {
                field.request_focus();
            }
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if ui
                .button("Ask")
                .on_hover_text(
                    "Prepare the media and the question with the loaded model, read them and answer (Enter in \
                     the question)",
                )
                .clicked()
                || enter
            {
                self.ask();
            }
            ui.separator();
            for (what, text) in [
                (OpenFor::Video, "Open video…"),
                (OpenFor::Audio, "Open audio…"),
                (OpenFor::Image, "Open image…"),
            ] {
                if ui
                    .add_enabled(self.dialog.is_none(), egui::Button::new(text))
                    .on_hover_text(format!(
                        "Add a {} to the prompt (or drop files on the window)",
                        what.noun()
                    ))
                    .clicked()
                {
                    self.open_media_dialog(what);
                }
            }
            let mut reopen = None;
            if !self.recent.files.is_empty() {
                ui.menu_button("Recent", |ui| {
                    for p in &self.recent.files {
                        let name = p
                            .file_name()
                            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
                        if ui
                            .button(name)
                            .on_hover_text(p.display().to_string())
                            .clicked()
                        {
                            reopen = Some(p.clone());
                            ui.close();
                        }
                    }
                });
            }
            if self.prompt.items.iter().any(|i| matches!(i, Item::Video(_))) {
                ui.checkbox(&mut self.prompt.use_audio_in_video, "use the clip's sound")
                    .on_hover_text(
                        "Interleave each video's own audio track with its frames (qwen-omni-utils' \
                         use_audio_in_video); off: pictures only",
                    );
            }
            if self.prompt.items.iter().any(|i| !matches!(i, Item::Image(_))) {
                let hover = "Ask about these seconds of each video and audio item only (as `avflow prepare \
                             --start S --end E`); empty: the whole clip. Or drag on the timeline and press \
                             'Ask about these seconds'.";
                let from = ui.label("seconds");
                ui.add(
                    egui::TextEdit::singleline(&mut self.prompt.start)
                        .hint_text("start")
                        .desired_width(44.0),
                )
                .labelled_by(from.id)
                .on_hover_text(hover);
                let to = ui.label("to");
                ui.add(
                    egui::TextEdit::singleline(&mut self.prompt.end)
                        .hint_text("end")
                        .desired_width(44.0),
                )
                .labelled_by(to.id)
                .on_hover_text(hover);
            }
            let mut remove = None;
            for (k, it) in self.prompt.items.iter().enumerate() {
                ui.label(RichText::new(item_label(it)).monospace())
                    .on_hover_text(it.path().display().to_string());
                if ui
                    .small_button("×")
                    .on_hover_text("Remove from the prompt")
                    .clicked()
                {
                    remove = Some(k);
                }
            }
            if let Some(k) = remove {
                self.prompt.items.remove(k);
                self.prompt.asked = None;
            }
            if let Some(p) = reopen {
                self.open_recent(&p);
            }
        });
    }

    fn open_recent(&mut self, p: &Path) {
        if !p.exists() {
            self.recent.files.retain(|f| f != p);
            self.status = Status::Error {
                message: format!("{} is gone", p.display()),
                fix: Some("it was removed from the recent files; open another file".into()),
            };
            return;
        }
        self.open_paths(vec![p.to_path_buf()]);
    }
}
