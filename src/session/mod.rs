//! The analysis session: every analysis avflow offers, in one place, for the CLI, the app's worker and the
//! dataset runner alike (none of them implements an analysis itself).
//!
//! - [`Model`]: a loaded checkpoint of any family with its tokenizer and processor ([`Model::open`],
//!   [`Model::prepare`], [`Model::read_prompt`]); reused across prompts.
//! - [`Session`]: one model and one prompt ([`Session::open`] for both at once), traced on first use, with
//!   [`Session::select`] (typed [`Selector`]s), [`Session::forward`], [`Session::knockout`],
//!   [`Session::sweep`], [`Session::drop_positions`], [`Session::lens`], [`Session::attention`],
//!   [`Session::heatmap`] and [`Session::generate`].
//!
//! Requests and outcomes are plain values ([`KnockoutSpec`], [`SweepSpec`], [`DropSpec`] …) so a worker can
//! carry them over a channel unchanged. Long work reports through a [`Watch`] (status, progress, cancel).

mod answer;
pub mod budget;
mod drop;
mod inspect;
mod knockout;
mod sweep;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use crate::flow::Trace;
use crate::media::prepare::{Item, PrepareOptions, Prepared};
use crate::model::{
    self, Architecture, AvModel, Decoder, Embedded, LoadOptions, ModelSource, Prompt, ResolvedModel,
};
use crate::prompt::{Groups, Selector, TokenMap};

pub use crate::model::Positions;
pub use answer::{csv_columns as answer_csv_columns, AnswerScores, AnswerSpec, Scored};
pub use drop::{DropOutcome, DropSpec, Generated};
pub use inspect::{Answer, AttentionOutcome, LensOutcome};
pub use knockout::{heads_of, parse_heads, KnockoutBlock, KnockoutOutcome, KnockoutSpec};
pub use sweep::{default_pairs, parse_pairs, SweepOutcome, SweepSpec};

/// Status, progress and cancel for long work. The CLI passes [`Watch::none`]; the worker forwards
/// status and progress as events and sets the cancel flag when the user stops the job.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub cancel: &'a AtomicBool,
    pub status: &'a dyn Fn(&str),
    /// `(done, total)` in the operation's own units.
    pub progress: &'a dyn Fn(usize, usize),
}

static NEVER: AtomicBool = AtomicBool::new(false);

impl Watch<'static> {
    /// Nobody watches and nothing cancels.
    pub fn none() -> Self {
        Watch {
            cancel: &NEVER,
            status: &|_| {},
            progress: &|_, _| {},
        }
    }
}

impl Watch<'_> {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// A cancel checkpoint between stages.
    pub fn check(&self) -> Result<()> {
        if self.cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn status(&self, text: &str) {
        (self.status)(text)
    }

    pub fn progress(&self, done: usize, total: usize) {
        (self.progress)(done, total)
    }
}

/// A loaded checkpoint of any family, with its tokenizer: what prompts are prepared, read and analysed
/// with. Cheap to share (`Arc`) between sessions of several prompts.
pub struct Model {
    /// As the user gave it (folder or `owner/name[@rev]`).
    pub source: String,
    pub resolved: ResolvedModel,
    pub net: Box<dyn AvModel>,
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// Why the tokenizer is missing, when the folder has one that does not read.
    pub notes: Vec<String>,
    /// Seconds the weights took to load.
    pub load_seconds: f64,
    /// The position numbering the model runs with.
    pub positions: Positions,
    /// The repetition penalty greedy generation applies ([`Architecture::repetition_penalty`]).
    pub repetition_penalty: f32,
    /// The weights' dtype (the checkpoint's own with `--dtype auto`); activations may be wider.
    pub dtype: DType,
}

impl Model {
    /// Resolves `source` (a folder or a hub id) and loads it in `dtype` on `device`.
    pub fn open(source: &str, dtype: DType, device: &Device) -> Result<Self> {
        Self::open_with(source, &LoadOptions::new(dtype, device))
    }

    /// [`Model::open`] with every load option (the position numbering too).
    pub fn open_with(source: &str, opts: &LoadOptions) -> Result<Self> {
        let parsed = ModelSource::parse(source.trim())?;
        let resolved = model::resolve(&parsed)?;
        Self::load(parsed.display(), resolved, opts)
    }

    /// Loads an already resolved checkpoint (the worker resolves first to report what it downloads).
    pub fn load(source: String, resolved: ResolvedModel, opts: &LoadOptions) -> Result<Self> {
        let t0 = Instant::now();
        let dtype = opts.dtype_for(&resolved.dir);
        budget::check_weights_fit(
            resolved.parameters() as u64 * dtype.size_in_bytes() as u64,
            dtype,
            &opts.device,
        )?;
        let stamp = crate::model::loader::FolderStamp::of(&resolved.weight_files);
        let net = model::load_with(&resolved, opts)?;
        stamp.check_unchanged()?;
        let load_seconds = t0.elapsed().as_secs_f64();
        let mut notes = Vec::new();
        let tokenizer = if crate::media::tokenizer::has_tokenizer(&resolved.dir) {
            match crate::media::tokenizer::load_tokenizer(&resolved.dir) {
                Ok(t) => Some(t),
                Err(e) => {
                    notes.push(format!("{e}; showing token ids."));
                    None
                }
            }
        } else {
            None
        };
        if !resolved
            .arch
            .position_numberings()
            .contains(&opts.positions)
        {
            notes.push(format!(
                "{} has one position numbering: --positions {} is ignored.",
                resolved.arch.family(),
                opts.positions.name()
            ));
        }
        let repetition_penalty = resolved.arch.repetition_penalty(&resolved.dir);
        Ok(Self {
            source,
            resolved,
            net,
            tokenizer,
            notes,
            load_seconds,
            positions: opts.positions,
            repetition_penalty,
            dtype,
        })
    }

    pub fn arch(&self) -> &Arc<dyn Architecture> {
        &self.resolved.arch
    }

    pub fn decoder(&self) -> &Decoder {
        self.net.decoder()
    }

    pub fn dir(&self) -> &Path {
        &self.resolved.dir
    }

    pub fn dtype(&self) -> DType {
        self.net.dtype()
    }

    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// Text of one token. A token holding part of a UTF-8 character decodes to U+FFFD alone; its
    /// byte-level vocabulary form (`Ã¤`, `Ġ`) says more, so that is shown instead. Empty without a
    /// tokenizer.
    pub fn token_text(&self, id: u32) -> String {
        let Some(t) = &self.tokenizer else {
            return String::new();
        };
        match t.decode(&[id], false) {
            Ok(s) if !s.contains('\u{FFFD}') => s,
            Ok(s) => t.id_to_token(id).unwrap_or(s),
            Err(_) => t.id_to_token(id).unwrap_or_default(),
        }
    }

    /// Generated ids as text, special tokens left out; `None` without a tokenizer.
    pub fn decode(&self, ids: &[u32]) -> Option<String> {
        self.tokenizer.as_ref()?.decode(ids, true).ok()
    }

    /// The first token of `text` (an option letter is one token): the answer a dataset sample names.
    pub fn answer_token(&self, text: &str) -> Result<u32> {
        let tk = self.tokenizer.as_ref().ok_or_else(|| Error::Model {
            path: self.dir().to_path_buf(),
            reason: "has no tokenizer.json, which scoring a ground-truth answer needs".into(),
            fix: "download the checkpoint's tokenizer files too".into(),
        })?;
        let enc = tk
            .encode(text, false)
            .map_err(|e| Error::Prompt(format!("tokenising the answer {text:?}: {e}")))?;
        enc.get_ids()
            .first()
            .copied()
            .ok_or_else(|| Error::Prompt(format!("the answer {text:?} has no tokens")))
    }

    /// Tokens that end a generated answer.
    pub fn stop_ids(&self) -> Vec<u32> {
        self.arch().special_tokens().stop
    }

    /// How greedy generation picks tokens after `prompt`: the stop ids and the checkpoint's repetition penalty.
    pub fn decoding(&self, prompt: &[u32]) -> crate::flow::generate::Decoding {
        crate::flow::generate::Decoding {
            stop: self.stop_ids(),
            repetition_penalty: self.repetition_penalty,
            prompt: prompt.to_vec(),
        }
    }

    /// The family's processor: media and a question → its tensors, on the CPU (they go to a file or to
    /// [`Model::prompt_from`]; the encoders move what they need).
    pub fn prepare(
        &self,
        items: &[Item],
        question: &str,
        opts: &PrepareOptions,
    ) -> Result<Prepared> {
        // Media that would not fit this machine's memory once traced is refused before it is decoded.
        let dec = self.decoder();
        let limit = budget::positions_limit(&dec.cfg, dec.dtype(), 0, dec.device())
            .filter(|(fit, _)| *fit < opts.token_budget);
        let mut o = opts.clone();
        if let Some((fit, _)) = limit {
            o.token_budget = fit;
        }
        self.arch()
            .prepare(self.dir(), items, question, &o, &Device::Cpu)
            .map_err(|e| match (e, limit) {
                (Error::TooManyTokens { estimate, .. }, Some((fit, avail))) => Error::Request {
                    reason: format!(
                        "the media would make about {estimate} tokens, but with {} of memory available \
                         this machine can trace about {fit}",
                        budget::gb(avail)
                    ),
                    fix: "lower --fps or --max-pixels (the app's media settings), analyse a shorter \
                          clip or part of it, close other programs, or use a machine with more memory"
                        .into(),
                },
                (e, _) => e,
            })
    }

    /// A prompt from a processor's tensors file, with the token texts filled in.
    pub fn read_prompt(&self, path: &Path) -> Result<Prompt> {
        let p = self.arch().read_prompt(path)?;
        Ok(self.with_texts(p))
    }

    /// A prompt from freshly prepared tensors (`name` stands for the file in messages).
    pub fn prompt_from(&self, prepared: &Prepared, name: &Path) -> Result<Prompt> {
        let p = self.arch().prompt_from_tensors(name, &prepared.tensors)?;
        Ok(self.with_texts(p))
    }

    fn with_texts(&self, mut p: Prompt) -> Prompt {
        if self.tokenizer.is_some() {
            for t in &mut p.map.tokens {
                t.text = self.token_text(t.id);
            }
        }
        p
    }
}

/// How big a trace is and where it lives (the app shows it under the answer).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceInfo {
    pub positions: usize,
    /// Residuals and K/V together.
    pub bytes: u64,
    pub residual_bytes: u64,
    pub kv_bytes: u64,
    /// The folder whose mapped file holds the residuals (`None`: in memory).
    pub spilled_to: Option<PathBuf>,
}

impl TraceInfo {
    /// `trace 1.2 GB in memory` / `trace 17.4 GB: residuals (15.9 GB) mapped from /path`.
    pub fn describe(&self) -> String {
        match &self.spilled_to {
            None => format!("trace {} in memory", budget::size(self.bytes)),
            Some(dir) => format!(
                "trace {}: residuals ({}) mapped from a file in {}",
                budget::size(self.bytes),
                budget::size(self.residual_bytes),
                dir.display()
            ),
        }
    }
}

/// The traced baseline run and what it cost.
pub struct Traced {
    pub trace: Trace,
    /// Encoders, embedding and the traced decoder pass.
    pub seconds: f64,
    /// Of which the traced decoder pass.
    pub decoder_seconds: f64,
}

/// One model and one prompt: every analysis of that prompt. The trace (one decoder pass keeping each
/// layer's residual and K/V) is built on first use and kept.
pub struct Session {
    pub model: Arc<Model>,
    pub prompt: Prompt,
    traced: Option<Traced>,
    /// Answers appended after this prompt for teacher forcing, by their ids (built on first use).
    continuations: answer::Continuations,
}

impl Session {
    pub fn new(model: Arc<Model>, prompt: Prompt) -> Self {
        Self {
            model,
            prompt,
            traced: None,
            continuations: Default::default(),
        }
    }

    /// Loads the model and the inputs file, adds `spans` (a JSON file of named positions) and traces the
    /// baseline: what every flow command opens.
    pub fn open(
        model: &str,
        inputs: &Path,
        spans: Option<&Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::open_with(model, inputs, spans, &LoadOptions::new(dtype, device))
    }

    /// [`Session::open`] with every load option (the position numbering too).
    pub fn open_with(
        model: &str,
        inputs: &Path,
        spans: Option<&Path>,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let model = Model::open_with(model, opts)?;
        let prompt = model.read_prompt(inputs)?;
        let mut s = Session::new(Arc::new(model), prompt);
        if let Some(path) = spans {
            s.add_spans(path)?;
        }
        s.trace(&Watch::none())?;
        Ok(s)
    }

    /// Adds the named spans of a JSON file (`{"name": [positions…]}`, or a token map `prepare --spans`
    /// wrote) as groups selectors can name.
    pub fn add_spans(&mut self, path: &Path) -> Result<()> {
        self.prompt.map.groups.merge_file(path)
    }

    pub fn map(&self) -> &TokenMap {
        &self.prompt.map
    }

    pub fn groups(&self) -> &Groups {
        &self.prompt.map.groups
    }

    pub fn decoder(&self) -> &Decoder {
        self.model.decoder()
    }

    pub fn source(&self) -> &PathBuf {
        &self.prompt.source
    }

    /// The positions of a selector in this prompt; the error says what the prompt has instead.
    pub fn select(&self, sel: &Selector) -> Result<Vec<usize>> {
        sel.resolve(self.map()).map_err(|e| {
            let fix = if sel.is_groups() {
                let present: Vec<&str> = self
                    .groups()
                    .spans
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, _)| k.as_str())
                    .collect();
                format!(
                    "choose one of the groups this prompt has: {}",
                    present.join(", ")
                )
            } else {
                format!(
                    "select seconds where the prompt has sound or pictures (the app's media timeline), \
                     positions inside its 0..{} (the token strip), or a group",
                    self.prompt.len()
                )
            };
            Error::Request {
                reason: match e {
                    Error::Prompt(r) => r,
                    other => other.to_string(),
                },
                fix,
            }
        })
    }

    /// Parses and resolves a selector string (the CLI's arguments).
    pub fn select_str(&self, sel: &str) -> Result<Vec<usize>> {
        self.select(&sel.parse()?)
    }

    /// Runs the encoders and embeds the prompt.
    pub fn embed(&self) -> Result<Embedded> {
        self.model.net.embed(&self.prompt)
    }

    /// The traced baseline, built on first use.
    pub fn trace(&mut self, watch: &Watch) -> Result<&Traced> {
        if self.traced.is_none() {
            // Before anything runs: does the trace fit, and where do its residuals go?
            let dec = self.decoder();
            let need = budget::trace_budget(&dec.cfg, self.prompt.len(), dec.dtype());
            let placement =
                budget::plan_trace(&need, budget::available_memory(dec.device()), dec.device())?;
            let t0 = Instant::now();
            watch.status("Encoding audio and video…");
            let e = self.embed()?;
            watch.check()?;
            watch.status(&format!(
                "Tracing the baseline run over {} positions (kept for knockouts)…",
                e.input_ids.len()
            ));
            let t1 = Instant::now();
            let trace = Trace::run_placed(self.decoder(), &e.embeds, &e.position_ids, &placement)?;
            if let Some(f) = trace.residuals.file() {
                tracing::info!(
                    file = %f.display(),
                    gb = trace.residuals.bytes() as f64 / 1e9,
                    "the trace's residuals went to a mapped file: they would not fit in memory"
                );
            }
            let decoder_seconds = t1.elapsed().as_secs_f64();
            self.traced = Some(Traced {
                trace,
                seconds: t0.elapsed().as_secs_f64(),
                decoder_seconds,
            });
            watch.check()?;
        }
        self.traced
            .as_ref()
            .ok_or_else(|| Error::Other("the trace is missing".into()))
    }

    /// The trace, when it was built.
    pub fn traced(&self) -> Option<&Traced> {
        self.traced.as_ref()
    }

    /// The trace's size and place, when it was built.
    pub fn trace_info(&self) -> Option<TraceInfo> {
        let t = &self.traced.as_ref()?.trace;
        Some(TraceInfo {
            positions: t.seq_len,
            bytes: t.memory_bytes() as u64,
            residual_bytes: t.residuals.bytes() as u64,
            kv_bytes: t.kv_bytes() as u64,
            spilled_to: t
                .residuals
                .file()
                .map(|f| f.parent().unwrap_or(f).to_path_buf()),
        })
    }

    /// The decoder and the trace together, once [`Session::trace`] has built it.
    fn parts(&self) -> Result<(&Decoder, &Trace)> {
        let t = self
            .traced
            .as_ref()
            .ok_or_else(|| Error::Other("the trace is missing".into()))?;
        Ok((self.model.net.decoder(), &t.trace))
    }

    /// The token whose probability an analysis follows: `token`, else the baseline top-1 (`trace` built).
    fn watched(&self, token: Option<u32>) -> u32 {
        token
            .or(self.traced.as_ref().map(|t| t.trace.top1_id))
            .unwrap_or(0)
    }
}
