//! The real engine: a thin shell over the library's [`Session`], holding the loaded model and the current
//! prompt's session (and so its trace) between requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::device::device_name;
use crate::media::preview::MediaPreview;
use crate::model::{self, ModelSource};
use crate::session::{Model, Session};

use super::{
    item_names, Ctx, Engine, Failure, ForwardResult, Generation, HeatmapOutcome, MediaRequest,
    ModelSummary, Outcome, Reply, Request, TOP_K,
};

/// [`Engine`] over [`Session`].
#[derive(Default)]
pub struct SessionEngine {
    model: Option<Arc<Model>>,
    /// The loaded prompt's session; `None` until inputs are read (and again while a new model loads).
    session: Option<Session>,
    /// The inputs file currently loaded, re-read after a model change.
    inputs_path: Option<PathBuf>,
}

fn nothing_to_run() -> Failure {
    Failure::new("nothing to run", "load a model and an inputs file first")
}

impl SessionEngine {
    fn session(&mut self) -> Outcome<&mut Session> {
        self.session.as_mut().ok_or_else(nothing_to_run)
    }

    fn load_model(
        &mut self,
        source: &str,
        (dtype, auto_dtype): (DType, bool),
        device: &Device,
        positions: crate::model::Positions,
        ctx: &Ctx,
    ) -> Outcome<ModelSummary> {
        let t0 = Instant::now();
        let parsed = ModelSource::parse(source.trim())?;
        if let ModelSource::Hub { repo, .. } = &parsed {
            ctx.status(format!(
                "Resolving {repo} on the Hugging Face hub (the first time downloads several GB)…"
            ));
        } else {
            ctx.status(format!("Reading {source}…"));
        }
        let resolved = model::resolve(&parsed)?;
        ctx.check_cancel()?;
        let parameters = resolved.parameters();
        let opts = crate::model::LoadOptions {
            positions,
            auto_dtype,
            ..crate::model::LoadOptions::new(dtype, device)
        };
        let dtype = opts.dtype_for(&resolved.dir);
        ctx.status(format!(
            "Loading {:.1} M parameters as {} on {}…",
            parameters as f64 / 1e6,
            dtype.as_str(),
            device_name(device)
        ));
        // Free the old model and the prompt tensors on its device before the new one is loaded; the inputs
        // path stays, so the worker re-reads them for the new model.
        self.model = None;
        self.session = None;
        let m = Model::load(parsed.display(), resolved, &opts)?;
        ctx.check_cancel()?;
        for note in &m.notes {
            ctx.status(note.clone());
        }
        let text = m.arch().text();
        let summary = ModelSummary {
            source: m.source.clone(),
            dir: m.dir().to_path_buf(),
            family: m.arch().family().to_string(),
            parameters,
            layers: text.num_hidden_layers,
            hidden: text.hidden_size,
            vocab: text.vocab_size,
            dtype: dtype.as_str().to_string(),
            device: device_name(device),
            has_tokenizer: m.tokenizer.is_some(),
            load_seconds: t0.elapsed().as_secs_f32(),
            positions: (m.arch().position_numberings().len() > 1).then_some(m.positions),
        };
        self.model = Some(Arc::new(m));
        Ok(summary)
    }

    fn load_inputs(&mut self, path: &Path, ctx: &Ctx) -> Outcome<Reply> {
        let Some(m) = &self.model else {
            return Err(Failure::new(
                format!("cannot read {} before a model is loaded", path.display()),
                "load a model first (the inputs are read onto its device)",
            ));
        };
        ctx.status(format!("Reading {}…", path.display()));
        let prompt = m.read_prompt(path)?;
        let map = Arc::new(prompt.map.clone());
        self.session = Some(Session::new(Arc::clone(m), prompt));
        self.inputs_path = Some(path.to_path_buf());
        Ok(Reply::InputsLoaded {
            path: path.to_path_buf(),
            map,
        })
    }

    fn prepare_media(&mut self, req: &MediaRequest, ctx: &Ctx) -> Outcome<Vec<Reply>> {
        let Some(m) = self.model.clone() else {
            return Err(Failure::new(
                "cannot prepare media before a model is loaded",
                "load a model first: the prompt is built with its chat template, tokenizer and settings",
            ));
        };
        let t0 = Instant::now();
        ctx.status(format!(
            "Preparing {}: decoding, sampling frames, log-mel, tokenising…",
            item_names(&req.items)
        ));
        let prepared = m.prepare(&req.items, &req.question, &req.options)?;
        ctx.check_cancel()?;
        ctx.status(format!("Writing {}…", req.out.display()));
        let dir = req.out.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::new(
                    format!(
                        "cannot create the folder for prepared inputs {}: {e}",
                        dir.display()
                    ),
                    "set AVFLOW_CACHE_DIR to a writable folder and restart avflow",
                )
            })?;
        }
        crate::tensor_io::save_atomic(&prepared.tensors, &req.out)?;
        let prepare_seconds = t0.elapsed().as_secs_f32();
        if let Some(dir) = dir {
            crate::media::cache::prune_cache(dir, crate::media::cache::CACHE_KEEP);
        }
        ctx.check_cancel()?;
        // Read back exactly as an opened file is.
        let loaded = self.load_inputs(&req.out, ctx)?;
        ctx.check_cancel()?;
        ctx.status("Building the timeline (thumbnails, waveform, spectrogram)…");
        let prompt = &self.session()?.prompt;
        let views = m.arch().media_views(prompt)?;
        // The waveform of what was asked about: the time range's samples when there is one.
        let range = req.options.range;
        let load_16k = |p: &Path| crate::media::audio::load_16k_range(p, range.as_ref());
        let mut preview: MediaPreview = crate::media::preview::build(
            &views,
            &prompt.map,
            &req.items,
            &req.question,
            &prepared.notes,
            &load_16k,
        )?;
        preview.prepare_seconds = prepare_seconds;
        ctx.check_cancel()?;
        Ok(vec![
            loaded,
            Reply::MediaReady {
                inputs: req.out.clone(),
                preview: Arc::new(preview),
            },
        ])
    }
}

impl Engine for SessionEngine {
    fn run(&mut self, request: &Request, ctx: &Ctx) -> Outcome<Vec<Reply>> {
        match request {
            Request::LoadModel {
                source,
                dtype,
                auto_dtype,
                device,
                positions,
            } => {
                let summary =
                    self.load_model(source, (*dtype, *auto_dtype), device, *positions, ctx)?;
                let mut out = vec![Reply::ModelLoaded(summary)];
                if let Some(path) = self.inputs_path.clone() {
                    out.push(self.load_inputs(&path, ctx)?);
                }
                Ok(out)
            }
            Request::LoadInputs(path) => Ok(vec![self.load_inputs(path, ctx)?]),
            Request::PrepareMedia(req) => self.prepare_media(req, ctx),
            Request::Forward => {
                let t0 = Instant::now();
                let s = self.session()?;
                let top_k = ctx.with_watch(|w| s.traced_top_k(TOP_K, w))?;
                Ok(vec![Reply::Forward(ForwardResult {
                    top_k,
                    positions: s.prompt.len(),
                    seconds: t0.elapsed().as_secs_f32(),
                    trace: s.trace_info(),
                })])
            }
            Request::Knockout(spec) => {
                let s = self.session()?;
                let outcome = ctx.with_watch(|w| s.knockout(spec, w))?;
                Ok(vec![Reply::Knockout(Box::new(outcome))])
            }
            Request::Sweep(spec) => {
                let s = self.session()?;
                let outcome = ctx.with_watch(|w| s.sweep(spec, w))?;
                if outcome.cancelled {
                    let n: usize = outcome.records.first().map_or(0, Vec::len);
                    ctx.status(format!("Sweep stopped; keeping {n} finished windows."));
                }
                // A sweep asked with a typed answer plots that answer's probability.
                let records = match outcome.answer_records() {
                    Some(r) if spec.answers.answer.is_some() => r,
                    _ => outcome.first(),
                };
                Ok(vec![Reply::Sweep(records)])
            }
            Request::Heatmap(metric) => {
                let t0 = Instant::now();
                let s = self.session()?;
                let (matrix, token) = if *metric == crate::flow::heatmap::HeatMetric::KnockoutEffect
                {
                    // Coarse to fine: each stage is shown while the next one computes.
                    ctx.with_watch(|w| s.trace(w).map(|_| ()))?;
                    let top1 = s.traced().map(|t| t.trace.top1_id);
                    let text = |t: u32| s.model.token_text(t);
                    let token = top1.map(|t| (t, text(t)));
                    ctx.with_watch(|w| {
                        s.knockout_effect_stages(w, &mut |_, m| {
                            if let Some(token) = &token {
                                ctx.reply(Reply::Heatmap(HeatmapOutcome {
                                    metric: *metric,
                                    matrix: Arc::new(m.clone()),
                                    token: token.clone(),
                                    seconds: t0.elapsed().as_secs_f32(),
                                }));
                            }
                        })
                    })?
                } else {
                    ctx.with_watch(|w| s.heatmap(*metric, w))?
                };
                Ok(vec![Reply::Heatmap(HeatmapOutcome {
                    metric: *metric,
                    matrix: Arc::new(matrix),
                    token: (token, s.model.token_text(token)),
                    seconds: t0.elapsed().as_secs_f32(),
                })])
            }
            Request::Heads(rows) => {
                let s = self.session()?;
                ctx.status(format!("Measuring each head's attention from {rows}…"));
                let out = s.attention_with(rows, true)?;
                Ok(vec![Reply::Heads {
                    rows: rows.clone(),
                    per_head: Arc::new(out.per_head.unwrap_or_default()),
                }])
            }
            Request::Drop(spec) => {
                let s = self.session()?;
                let outcome = ctx.with_watch(|w| s.drop_positions(spec, w))?;
                Ok(vec![Reply::Drop(Arc::new(outcome))])
            }
            Request::Generate(spec) => {
                let t0 = Instant::now();
                let s = self.session()?;
                let model = Arc::clone(&s.model);
                let reply = |ids: &[u32], done: bool| {
                    Reply::Generated(Generation {
                        spec: spec.clone(),
                        ids: ids.to_vec(),
                        text: model.decode(ids).unwrap_or_default(),
                        done,
                        seconds: t0.elapsed().as_secs_f32(),
                    })
                };
                let answer = ctx.with_watch(|w| {
                    s.generate_with(spec.knockout.as_ref(), spec.max_new, w, &mut |ids| {
                        ctx.reply(reply(ids, false))
                    })
                })?;
                Ok(vec![reply(&answer.generated.ids, true)])
            }
        }
    }
}
