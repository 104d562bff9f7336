//! Answer panel: the model's top next tokens after the prompt, with probabilities; which answer knockouts
//! follow (a clicked token, a typed answer, the options of a multiple-choice question); and the model's
//! own greedy answer with and without the shown knockout.

use egui::{Color32, CornerRadius, Sense, Vec2};

use super::panel::{Action, Panel, Tracked, ViewState};
use super::tokens::quoted;

/// How many next tokens the worker is asked for.
pub const TOP_K: usize = 5;

/// One row of the answer table, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRow {
    pub rank: usize,
    pub id: u32,
    /// Token text with whitespace made visible, or `id N` when there is no tokenizer.
    pub text: String,
    /// `"12.3 %"`; tiny values keep two significant digits (`"0.0042 %"`).
    pub percent: String,
    /// Bar length in 0..=1, relative to the most likely token.
    pub bar: f32,
}

/// Turns `(id, text, probability)` rows (most likely first) into display rows.
pub fn answer_rows(top_k: &[(u32, String, f32)]) -> Vec<AnswerRow> {
    let max = top_k.iter().map(|r| r.2).fold(0.0_f32, f32::max);
    top_k
        .iter()
        .enumerate()
        .map(|(i, (id, text, p))| AnswerRow {
            rank: i + 1,
            id: *id,
            text: if text.is_empty() {
                format!("id {id}")
            } else {
                quoted(text)
            },
            percent: format_percent(*p),
            bar: if max > 0.0 && p.is_finite() {
                (p / max).clamp(0.0, 1.0)
            } else {
                0.0
            },
        })
        .collect()
}

/// A probability as a percentage with a precision that keeps small values readable.
pub fn format_percent(p: f32) -> String {
    if !p.is_finite() {
        return "–".into();
    }
    let pct = f64::from(p) * 100.0;
    if pct == 0.0 {
        "0 %".into()
    } else if pct >= 10.0 {
        format!("{pct:.1} %")
    } else if pct >= 0.01 {
        format!("{pct:.2} %")
    } else {
        // Two significant digits.
        let digits = (-pct.log10().floor()) as usize + 1;
        format!("{pct:.digits$} %")
    }
}

/// Footer line: how long the forward pass took.
pub fn timing_line(seconds: f32, positions: usize) -> String {
    if seconds < 1.0 {
        format!(
            "forward over {positions} positions in {:.0} ms",
            seconds * 1000.0
        )
    } else {
        format!("forward over {positions} positions in {seconds:.2} s")
    }
}

/// Labels of the answer panel's fields and button (tests find them by these).
pub const ANSWER_FIELD: &str = "answer";
pub const OPTIONS_FIELD: &str = "options";
pub const GENERATE_BUTTON: &str = "Generate";

/// Most tokens of a generated answer.
pub const MAX_NEW: usize = 64;

/// The option letters a multiple-choice prompt lists (`(A) … (B) …` in its text), in order; empty when it
/// lists fewer than two.
pub fn option_letters(prompt: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for c in 'A'..='Z' {
        if prompt.contains(&format!("({c})")) {
            v.push(c.to_string());
        } else {
            break;
        }
    }
    if v.len() < 2 {
        v.clear();
    }
    v
}

/// What the panel says it follows: "the baseline top-1", `token "A"`, plus the answer and options.
pub fn tracking_line(t: &Tracked) -> String {
    let mut parts = vec![match &t.token {
        None => "the baseline top-1".to_string(),
        Some((id, text)) if text.is_empty() => format!("token id {id}"),
        Some((_, text)) => format!("token {}", quoted(text)),
    }];
    if let Some(a) = &t.answers.answer {
        parts.push(format!("the answer {}", quoted(a)));
    }
    if !t.answers.options.is_empty() {
        parts.push(format!("options {}", t.answers.options.join(", ")));
    }
    format!("Knockouts follow {}.", parts.join(", "))
}

/// A streamed answer for display: its text (or ids without a tokenizer) and whether it is complete.
pub fn generation_text(g: &crate::worker::Generation) -> String {
    let text = if g.text.is_empty() && !g.ids.is_empty() {
        format!("{:?}", g.ids)
    } else {
        g.text.clone()
    };
    if g.done {
        format!("{text}  ({} tokens, {:.1} s)", g.ids.len(), g.seconds)
    } else {
        format!("{text} …")
    }
}

#[derive(Default)]
pub struct AnswerPanel {
    /// The typed answer and the options being edited (applied with Enter or Follow).
    answer: String,
    options: String,
    /// The last error of these fields (an option listed twice).
    error: Option<String>,
    /// The tracked answer these fields were last synced from.
    synced: Option<Tracked>,
}

impl AnswerPanel {
    /// The fields follow the app's tracked answer when it changes elsewhere (a restart, a reset).
    fn sync(&mut self, t: &Tracked) {
        if self.synced.as_ref() != Some(t) {
            self.answer = t.answers.answer.clone().unwrap_or_default();
            self.options = t.answers.options.join(",");
            self.synced = Some(t.clone());
        }
    }

    fn follow(&mut self, view: &ViewState, actions: &mut Vec<Action>) {
        let answer = Some(self.answer.as_str()).filter(|a| !a.is_empty());
        match crate::session::AnswerSpec::from_args(answer, Some(&self.options)) {
            Ok(answers) => {
                self.error = None;
                actions.push(Action::Track(Tracked {
                    token: view.tracked.token.clone(),
                    answers,
                }));
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    fn tracking(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        self.sync(&view.tracked);
        let mut apply = false;
        ui.horizontal_wrapped(|ui| {
            let l = ui.label(ANSWER_FIELD);
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.answer).desired_width(160.0).hint_text("typed answer"))
                .labelled_by(l.id)
                .on_hover_text("Scored by teacher forcing: the sum of its tokens' log-probabilities, with and without the knockout");
            apply |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let l = ui.label(OPTIONS_FIELD);
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.options).desired_width(100.0).hint_text("A,B,C,D"))
                .labelled_by(l.id)
                .on_hover_text("Comma-separated options of a multiple-choice question: each one's probability, the preferred one highlighted");
            apply |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let prompt = view.inputs.as_ref().map(|i| i.texts.concat()).unwrap_or_default();
            let letters = option_letters(&prompt);
            if !letters.is_empty() && self.options.is_empty() {
                let label = format!("Use {}", letters.join(", "));
                if ui.button(label).on_hover_text("The options the question lists").clicked() {
                    self.options = letters.join(",");
                    apply = true;
                }
            }
            apply |= ui.button("Follow").on_hover_text("Score this answer and these options in every knockout and sweep").clicked();
            if view.tracked != Tracked::default()
                && ui.button("Top-1").on_hover_text("Follow the baseline's top-1 token only").clicked()
            {
                self.answer.clear();
                self.options.clear();
                actions.push(Action::Track(Tracked::default()));
            }
        });
        if apply {
            self.follow(view, actions);
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        ui.weak(tracking_line(&view.tracked));
    }

    fn generation(&self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        let g = &view.generation;
        ui.horizontal(|ui| {
            ui.strong("Model's answer");
            let can = view.model.is_some() && view.inputs.is_some() && !g.running();
            let b = ui
                .add_enabled(can, egui::Button::new(GENERATE_BUTTON))
                .on_hover_text("Greedy answers of the unedited model and of the model with the shown knockout, side by side");
            if b.clicked() {
                actions.push(Action::Generate);
            }
            if g.running() && ui.button("Stop").clicked() {
                actions.push(Action::CancelGenerate);
            }
        });
        if g.base.is_none() && g.edited.is_none() {
            return;
        }
        ui.columns(2, |cols| {
            cols[0].weak("unedited");
            if let Some(b) = &g.base {
                cols[0].label(generation_text(b));
            }
            let edited = g.edited.as_ref();
            cols[1].weak(match edited.and_then(|e| e.spec.knockout.as_ref()) {
                Some(k) => format!("with {} knocked out", k.describe()),
                None => "with the knockout".to_string(),
            });
            match edited {
                Some(e) => {
                    let differs = g
                        .base
                        .as_ref()
                        .is_some_and(|b| b.done && e.done && b.ids != e.ids);
                    let text = egui::RichText::new(generation_text(e));
                    cols[1].label(if differs { text.strong() } else { text });
                }
                None => {
                    cols[1].weak("set a knockout to compare");
                }
            }
        });
    }
}

impl Panel for AnswerPanel {
    fn name(&self) -> &'static str {
        "Answer"
    }

    fn ui(&mut self, ui: &mut egui::Ui, view: &ViewState, actions: &mut Vec<Action>) {
        ui.horizontal(|ui| {
            let can_run = view.model.is_some() && view.inputs.is_some() && !view.busy;
            if ui
                .add_enabled(can_run, egui::Button::new("Run"))
                .on_hover_text("Next-token prediction after the prompt (Ctrl+Enter or F5)")
                .on_disabled_hover_text("Load a model and inputs first")
                .clicked()
            {
                actions.push(Action::Run);
            }
            ui.weak("top-5 next tokens after the prompt; click one to follow it");
        });
        if let Some(answer) = &view.answer {
            let rows = answer_rows(&answer.top_k);
            let followed = view.tracked.token.as_ref().map(|t| t.0);
            egui::Grid::new("answer_grid")
                .num_columns(4)
                .striped(true)
                .spacing([12.0, 4.0])
                .show(ui, |ui| {
                    for (row, (_, text, _)) in rows.iter().zip(&answer.top_k) {
                        ui.label(format!("{}.", row.rank));
                        let on = followed == Some(row.id) || (followed.is_none() && row.rank == 1);
                        let r = ui
                            .selectable_label(on, egui::RichText::new(&row.text).monospace())
                            .on_hover_text(format!(
                                "id {} · click to follow this token in knockouts and sweeps",
                                row.id
                            ));
                        if r.clicked() {
                            // The first row is the baseline top-1, which knockouts follow by default.
                            let token = (row.rank > 1).then(|| (row.id, text.clone()));
                            actions.push(Action::Track(Tracked {
                                token,
                                answers: view.tracked.answers.clone(),
                            }));
                        }
                        ui.label(&row.percent);
                        bar(ui, row.bar);
                        ui.end_row();
                    }
                });
            ui.weak(timing_line(answer.seconds, answer.positions));
            if let Some(t) = &answer.trace {
                ui.weak(t);
            }
        }
        ui.separator();
        self.tracking(ui, view, actions);
        ui.separator();
        self.generation(ui, view, actions);
    }
}

fn bar(ui: &mut egui::Ui, fraction: f32) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(120.0, 10.0), Sense::hover());
    ui.painter()
        .rect_filled(rect, CornerRadius::same(2), ui.visuals().faint_bg_color);
    let mut filled = rect;
    filled.set_width(rect.width() * fraction);
    ui.painter().rect_filled(
        filled,
        CornerRadius::same(2),
        Color32::from_rgb(86, 180, 233),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_rank_text_percent_and_bar() {
        let rows = answer_rows(&[
            (13, "Hello".into(), 0.5),
            (198, "\n".into(), 0.25),
            (7, String::new(), 0.0),
        ]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].rank, 1);
        assert_eq!(rows[0].text, "\"Hello\"");
        assert_eq!(rows[0].percent, "50.0 %");
        assert_eq!(rows[0].bar, 1.0);
        assert_eq!(rows[1].text, "\"\\n\"");
        assert_eq!(rows[1].bar, 0.5);
        assert_eq!(rows[2].text, "id 7");
        assert_eq!(rows[2].percent, "0 %");
        assert_eq!(rows[2].bar, 0.0);
    }

    #[test]
    fn percent_precision() {
        assert_eq!(format_percent(1.0), "100.0 %");
        assert_eq!(format_percent(0.123), "12.3 %");
        assert_eq!(format_percent(0.01234), "1.23 %");
        assert_eq!(format_percent(0.0002), "0.02 %");
        assert_eq!(format_percent(0.0000042), "0.00042 %");
        assert_eq!(format_percent(f32::NAN), "–");
    }

    #[test]
    fn empty_and_nan_rows_do_not_panic() {
        assert!(answer_rows(&[]).is_empty());
        let rows = answer_rows(&[(1, "a".into(), f32::NAN)]);
        assert_eq!(rows[0].bar, 0.0);
    }

    #[test]
    fn timing_units() {
        assert_eq!(
            timing_line(0.0423, 18),
            "forward over 18 positions in 42 ms"
        );
        assert_eq!(timing_line(2.5, 18), "forward over 18 positions in 2.50 s");
    }
}
