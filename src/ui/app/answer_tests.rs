//! Any answer, driven by mouse and keyboard on the bundled demo: click a top-k token to follow it, type an
//! answer and options, knock out, and generate the model's own answers with and without the knockout.
//! Every number shown is checked against the library's session on the same demo.

use std::time::Duration;

use egui_kittest::kittest::Queryable;

use crate::session::{AnswerSpec, KnockoutSpec, Watch};
use crate::ui::answer::{ANSWER_FIELD, GENERATE_BUTTON, OPTIONS_FIELD};
use crate::ui::tokens::quoted;

use super::test_support::{require_demo, step_until, type_into};
use super::AvflowApp;

type Harness<'a> = egui_kittest::Harness<'a, AvflowApp>;

/// Steps until the shown knockout answers a request with these answers and token and the worker is idle.
fn knockout_with(
    harness: &mut Harness<'_>,
    token: Option<u32>,
    answers: &AnswerSpec,
) -> KnockoutSpec {
    super::test_support::knockout_shown(harness, &format!("{token:?} / {answers:?}"), |s| {
        s.token == token && &s.answers == answers
    })
}

#[test]
fn follow_a_token_an_answer_and_options_then_generate_on_the_demo() {
    let demo = require_demo();
    let mut harness = super::test_support::demo_app(egui::vec2(1100.0, 1600.0));
    let mut session = demo.open_session();

    // 1. Knock out (the panel's button), then click the second token of the top-k list: the shown
    // knockout reruns following it, equal to the library's.
    harness.get_by_label("Knock out").click();
    harness.run_steps(2);
    knockout_with(&mut harness, None, &AnswerSpec::default());
    let (id, text) = {
        let a = harness.state().view().answer.as_ref().expect("top-k");
        (a.top_k[1].0, a.top_k[1].1.clone())
    };
    harness
        .query_all_by_label(&quoted(&text))
        .next()
        .expect("second row")
        .click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().view().tracked.token,
        Some((id, text.clone()))
    );
    let spec = knockout_with(&mut harness, Some(id), &AnswerSpec::default());
    let shown = harness.state().view().knockout.clone().expect("shown");
    let lib = session.knockout(&spec, &Watch::none()).expect("library");
    assert_eq!(shown.token.0, id);
    assert_eq!(shown.result, lib.result);
    // The Answer pane says how big the trace is and where it lives, as the library's session does.
    let info = session.trace_info().expect("traced").describe();
    let pane = harness
        .state()
        .view()
        .answer
        .as_ref()
        .and_then(|a| a.trace.clone());
    assert_eq!(pane.as_deref(), Some(info.as_str()));
    harness.get_by_label(&info);

    // 2. Type an answer and options, press Follow: the knockout scores them, as the library does.
    type_into(&mut harness, ANSWER_FIELD, " a tone");
    type_into(&mut harness, OPTIONS_FIELD, "A,B");
    harness.get_by_label("Follow").click();
    harness.run_steps(2);
    let answers = AnswerSpec {
        answer: Some(" a tone".into()),
        options: vec!["A".into(), "B".into()],
    };
    let spec = knockout_with(&mut harness, Some(id), &answers);
    let shown = harness.state().view().knockout.clone().expect("shown");
    let lib = session.knockout(&spec, &Watch::none()).expect("library");
    assert_eq!(shown.answers, lib.answers);
    let a = shown.answers.answer.as_ref().expect("answer scored");
    assert!(a.ids.len() >= 2 && a.logprob.is_finite());
    assert_eq!(shown.answers.options.len(), 2);
    // The readout shows them.
    let line = format!("answer {:?}: log p {:.3}", a.text, a.base_logprob);
    assert!(
        harness.query_by_label_contains(&line).is_some(),
        "no readout line {line:?}"
    );
    for o in &shown.answers.options {
        assert!(harness
            .query_by_label_contains(&format!("({}) ", o.text))
            .is_some());
    }
    // Typing the same option twice says so and keeps the tracked answer.
    harness.get_by_label(OPTIONS_FIELD).focus();
    harness.step();
    harness.get_by_label(OPTIONS_FIELD).type_text(",A");
    harness.step();
    harness.get_by_label("Follow").click();
    harness.run_steps(2);
    assert!(harness.query_by_label_contains("listed twice").is_some());
    assert_eq!(harness.state().view().tracked.answers, answers);

    // 3. Generate: the unedited answer and the knocked-out one, each equal to the library's.
    harness.get_by_label(GENERATE_BUTTON).click();
    super::test_support::generation_finished(&mut harness);
    harness.run_steps(2);
    let g = harness.state().view().generation.clone();
    let (base, edited) = (g.base.expect("base"), g.edited.expect("edited"));
    assert_eq!(edited.spec.knockout.as_ref(), Some(&spec));
    let max = crate::ui::answer::MAX_NEW;
    let lib_base = session
        .generate_with(None, max, &Watch::none(), &mut |_| {})
        .expect("base");
    let lib_edit = session
        .generate_with(Some(&spec), max, &Watch::none(), &mut |_| {})
        .expect("edited");
    assert_eq!(base.ids, lib_base.generated.ids);
    assert_eq!(edited.ids, lib_edit.generated.ids);
    assert!(harness.query_by_label_contains("unedited").is_some());
    assert!(harness.query_by_label_contains("knocked out").is_some());

    // 4. Run sweep: the curves follow the typed answer (its teacher-forced probability per window).
    harness.get_by_label("Run sweep").click();
    let done = step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.view().busy && !app.view().sweep.running && !app.view().sweep.records.is_empty()
    });
    assert!(done, "{:?}", harness.state().status());
    let records = harness.state().view().sweep.records.clone();
    let first = &records[0];
    let mut sweep = crate::session::SweepSpec::centred(
        vec![(first.source.parse().unwrap(), first.target.parse().unwrap())],
        crate::ui::sweep::SWEEP_WINDOW,
    );
    sweep.tokens = vec![Some(id)];
    sweep.answers.answer = Some(" a tone".into());
    let lib = session
        .sweep(&sweep, &Watch::none())
        .expect("library sweep");
    let lib = lib.answer_records().expect("answer records");
    assert_eq!(first.token_id, a.ids[0]);
    assert_eq!(&records[..lib.len()], &lib[..]);
    assert!(harness
        .query_by_label_contains("curves follow the answer")
        .is_some());
}
