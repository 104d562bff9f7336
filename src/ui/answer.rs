//! Answer panel: the model's top next tokens after the prompt, with probabilities.

use egui::{Color32, CornerRadius, Sense, Vec2};

use super::panel::{Action, Panel, ViewState};
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

#[derive(Default)]
pub struct AnswerPanel;

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
            ui.weak("top-5 next tokens after the prompt");
        });
        let Some(answer) = &view.answer else {
            return;
        };
        let rows = answer_rows(&answer.top_k);
        egui::Grid::new("answer_grid")
            .num_columns(4)
            .striped(true)
            .spacing([12.0, 4.0])
            .show(ui, |ui| {
                for row in &rows {
                    ui.label(format!("{}.", row.rank));
                    ui.monospace(&row.text)
                        .on_hover_text(format!("id {}", row.id));
                    ui.label(&row.percent);
                    bar(ui, row.bar);
                    ui.end_row();
                }
            });
        ui.weak(timing_line(answer.seconds, answer.positions));
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
