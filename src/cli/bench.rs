//! `avflow bench`: random-weight checkpoints at a released model's real dimensions, prompts in its real
//! layout, and the timed forward the benchmark tables report.

use std::path::PathBuf;
use std::time::Instant;

use avflow::model::{self, resolve, LoadOptions, ModelSource};
use avflow::session::Model;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Write a random-weight model with the real dimensions of a family's released checkpoint (default:
    /// the Qwen2.5-Omni-3B Thinker; `--family video_salmonn2_plus --size 7b` …) in the hub layout (bf16
    /// shards).
    MakeModel {
        #[arg(long)]
        out: PathBuf,
        /// Keep only this many decoder layers (for quick runs); default all of them.
        #[arg(long)]
        layers: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The model family: qwen2_5_omni or video_salmonn2_plus.
        #[arg(long, default_value = "qwen2_5_omni")]
        family: String,
        /// The released size whose dimensions the checkpoint takes: 3b or 7b.
        #[arg(long)]
        size: Option<String>,
    },
    /// Write an audio-visual prompt as processor tensors (default ~586 tokens: 8 frames = 336 video tokens,
    /// 7 s of audio = 175 tokens).
    MakeInputs {
        #[arg(long)]
        model: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Video frames at 2 fps (even); 84 tokens per pair of frames.
        #[arg(long, default_value_t = 8)]
        frames: usize,
        /// Seconds of audio (25 tokens per second).
        #[arg(long, default_value_t = 7.0)]
        audio_seconds: f64,
        /// Instead of --frames/--audio-seconds: the longest clip (video at 2 fps with its sound, in the
        /// family's interleaved layout) whose prompt has at most this many tokens.
        #[arg(long)]
        tokens: Option<usize>,
    },
    /// Time each analysis on one prompt, with the peak memory of each step: load, trace (encoders and
    /// the traced pass), one audio/video -> last knockout, a sweep of four pairs over every 9-layer
    /// window, the drop curve of the audio, and the attention heatmap from the last position. Prints one
    /// JSON line; a step that cannot run says why in its `error`.
    Steps {
        #[arg(long)]
        model: String,
        #[arg(long)]
        inputs: PathBuf,
        /// Also the whole drop curve (one drop per first layer: about layers / 2 traced passes).
        #[arg(long)]
        drop_curve: bool,
        /// Only the memory plan: what the trace needs, what the machine has, where the residuals would
        /// go (or why the prompt is refused); nothing runs.
        #[arg(long)]
        plan: bool,
    },
    /// Time load, audio tower, vision tower, decoder and lm_head; print JSON with peak RSS.
    Run {
        #[arg(long)]
        model: String,
        #[arg(long)]
        inputs: PathBuf,
        /// Run the forward this many times and report the last (on a GPU the first one also loads and
        /// compiles kernels; its time is reported as `first_forward_s`).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
}

pub fn bench(args: &BenchArgs, opts: &LoadOptions) -> anyhow::Result<()> {
    let device = &opts.device;
    match &args.what {
        BenchCommand::MakeModel {
            out,
            layers,
            seed,
            family,
            size,
        } => {
            let mut arch = model::family(family)?.released(size.as_deref())?;
            if let Some(l) = layers {
                arch = arch.with_layers(*l);
            }
            model::random::write_random_checkpoint(arch.as_ref(), out, *seed)?;
            println!(
                "{}",
                serde_json::json!({"out": out, "layers": arch.text().num_hidden_layers})
            );
            Ok(())
        }
        BenchCommand::MakeInputs {
            model,
            out,
            seed,
            frames,
            audio_seconds,
            tokens,
        } => {
            let resolved = resolve(&ModelSource::parse(model)?)?;
            let map = match tokens {
                Some(n) => inputs_of_length(resolved.arch.as_ref(), *seed, *n)?,
                None => resolved.arch.bench_inputs(*seed, *frames, *audio_seconds)?,
            };
            avflow::tensor_io::save_atomic(&map, out)?;
            let n = map["input_ids"].dim(1)?;
            println!("{}", serde_json::json!({"out": out, "seq_len": n}));
            Ok(())
        }
        BenchCommand::Steps {
            model,
            inputs,
            drop_curve,
            plan,
        } => steps(model, inputs, *drop_curve, *plan, opts),
        BenchCommand::Run {
            model,
            inputs,
            repeat,
        } => {
            let t0 = Instant::now();
            let m = Model::open_with(model, opts)?;
            device.synchronize()?;
            let load = t0.elapsed().as_secs_f64();
            let prompt = m.read_prompt(inputs)?;
            let dec = m.decoder();
            let run = || -> anyhow::Result<_> {
                let t1 = Instant::now();
                let e = m.net.embed(&prompt)?;
                let embed_s = t1.elapsed().as_secs_f64();
                let rot = dec.rotary(&e.position_ids)?;
                let t2 = Instant::now();
                let normed = dec.forward(&e.embeds, &rot, &mut |_, _| Ok(()))?;
                device.synchronize()?;
                let decoder_s = t2.elapsed().as_secs_f64();
                let t3 = Instant::now();
                let logits = dec.logits(&normed)?;
                device.synchronize()?;
                drop(logits);
                let lm_head_s = t3.elapsed().as_secs_f64();
                Ok((e, embed_s, decoder_s, lm_head_s))
            };
            let mut last = run()?;
            let first_forward_s = (*repeat > 1).then_some(last.1 + last.2 + last.3);
            for _ in 1..*repeat {
                last = run()?;
            }
            let (e, embed_s, decoder_s, lm_head_s) = last;
            println!(
                "{}",
                serde_json::json!({
                    "impl": "avflow",
                    "dtype": format!("{:?}", m.dtype),
                    "threads": avflow::kernels::parallel::threads(),
                    "cpu_gemm": avflow::kernels::gemm::backend_name(),
                    "seq_len": e.input_ids.len(),
                    "parameters": m.resolved.parameters(),
                    "load_s": load,
                    "audio_tower_s": e.timings.audio.as_secs_f64(),
                    "vision_tower_s": e.timings.vision.as_secs_f64(),
                    "embed_total_s": embed_s,
                    "decoder_s": decoder_s,
                    "lm_head_all_positions_s": lm_head_s,
                    "forward_s": embed_s + decoder_s + lm_head_s,
                    "first_forward_s": first_forward_s,
                    "repeat": repeat,
                    "device": avflow::device::device_name(device),
                    "peak_rss_gb": super::peak_rss_gb(),
                })
            );
            Ok(())
        }
    }
}

/// The longest clip of whole seconds (2 fps video with its sound) whose prompt has at most `tokens`
/// tokens: a bisection over the family's own bench layout.
fn inputs_of_length(
    arch: &dyn model::Architecture,
    seed: u64,
    tokens: usize,
) -> anyhow::Result<std::collections::HashMap<String, candle_core::Tensor>> {
    let make = |s: usize| arch.bench_inputs(seed, 2 * s, s as f64);
    let len =
        |m: &std::collections::HashMap<String, candle_core::Tensor>| -> anyhow::Result<usize> {
            Ok(m["input_ids"].dim(1)?)
        };
    let (mut lo, mut hi) = (1usize, 2usize);
    if len(&make(lo)?)? > tokens {
        anyhow::bail!("even a 1-second clip takes more than {tokens} tokens in this layout");
    }
    while len(&make(hi)?)? <= tokens {
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if len(&make(mid)?)? <= tokens {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(make(lo)?)
}

/// Resets the process's peak resident memory (Linux: `/proc/self/clear_refs`), so each step reports its
/// own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `avflow bench steps`.
fn steps(
    model: &str,
    inputs: &std::path::Path,
    drop_curve: bool,
    plan: bool,
    opts: &LoadOptions,
) -> anyhow::Result<()> {
    use avflow::flow::heatmap::HeatMetric;
    use avflow::prompt::Selector;
    use avflow::session::{KnockoutSpec, Session, SweepSpec, Watch};
    use serde_json::json;
    let w = Watch::none();
    let mut out = json!({"impl": "avflow", "model": model, "inputs": inputs});
    let step = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<serde_json::Value>| {
        reset_peak();
        let t0 = Instant::now();
        let r = f();
        let mut v = match r {
            Ok(v) => v,
            Err(e) => json!({"error": format!("{e:#}")}),
        };
        v["s"] = json!(t0.elapsed().as_secs_f64());
        v["peak_rss_gb"] = json!(super::peak_rss_gb());
        eprintln!("{name}: {v}");
        v
    };
    let t_launch = Instant::now();
    let mut loaded = None;
    out["load"] = step("load", &mut || {
        let m = Model::open_with(model, opts)?;
        let v = json!({"dtype": format!("{:?}", m.dtype), "parameters": m.resolved.parameters()});
        loaded = Some(m);
        Ok(v)
    });
    let Some(m) = loaded else {
        println!("{out}");
        return Ok(());
    };
    let prompt = m.read_prompt(inputs)?;
    let seq = prompt.len();
    out["seq_len"] = json!(seq);
    out["threads"] = json!(avflow::kernels::parallel::threads());
    out["device"] = json!(avflow::device::device_name(&opts.device));
    let mut s = Session::new(std::sync::Arc::new(m), prompt);
    if plan {
        let dec = s.decoder();
        let need = avflow::session::budget::trace_budget(&dec.cfg, seq, dec.dtype());
        let avail = avflow::session::budget::available_memory(dec.device());
        out["plan"] = json!({
            "budget": need,
            "available_bytes": avail,
            "placement": match avflow::session::budget::plan_trace(&need, avail, dec.device()) {
                Ok(p) => json!(format!("{p:?}")),
                Err(e) => json!({"refused": e.to_string()}),
            },
        });
        println!("{out}");
        return Ok(());
    }
    let layers = s.decoder().num_layers();
    let media = ["audio", "video", "image"]
        .into_iter()
        .find(|g| s.groups().spans.get(*g).is_some_and(|p| !p.is_empty()))
        .unwrap_or("audio");
    out["trace"] = step("trace", &mut || {
        let t = s.trace(&w)?;
        let v =
            json!({"decoder_s": t.decoder_seconds, "encoders_s": t.seconds - t.decoder_seconds});
        Ok(json!({"detail": v, "trace": s.trace_info()}))
    });
    if s.traced().is_none() {
        println!("{out}");
        return Ok(());
    }
    out["first_number_s"] = json!(t_launch.elapsed().as_secs_f64());
    let mid = layers / 2;
    let (a, b) = (mid.saturating_sub(4), (mid + 5).min(layers));
    out["knockout"] = step("knockout", &mut || {
        let spec = KnockoutSpec::single(Selector::group(media), Selector::group("last"), a, b);
        let o = s.knockout(&spec, &w)?;
        Ok(json!({"request": spec.describe(), "rel_change": o.result.rel_change}))
    });
    out["first_number_s"] = json!(
        out["first_number_s"].as_f64().unwrap_or(0.0)
            + out["knockout"]["s"].as_f64().unwrap_or(0.0)
    );
    out["sweep"] = step("sweep", &mut || {
        let pairs = [
            "audio:last",
            "video:last",
            "audio:question",
            "video:question",
        ]
        .iter()
        .filter(|p| {
            let g = p.split(':').next().unwrap_or("");
            s.groups().spans.get(g).is_some_and(|v| !v.is_empty())
        })
        .map(|p| avflow::session::parse_pairs(p).map(|mut v| v.remove(0)))
        .collect::<avflow::error::Result<Vec<_>>>()?;
        let o = s.sweep(&SweepSpec::centred(pairs, 9), &w)?;
        Ok(json!({"configurations": o.first().len()}))
    });
    out["drop"] = step("drop", &mut || {
        // Dropping the media from the middle layer on: one point of the drop curve, the same batched
        // run the curve makes per layer (the whole curve costs about layers / 2 traced passes).
        let dropped = s.select(&Selector::group(media))?;
        let t = s.traced().ok_or_else(|| anyhow::anyhow!("no trace"))?;
        let first = dropped.iter().min().copied().unwrap_or(0);
        let targets: Vec<usize> = (first..seq).filter(|p| !dropped.contains(p)).collect();
        let k = avflow::flow::Knockout {
            sources: dropped.clone(),
            targets,
            start: mid,
            end: layers,
            heads: None,
        };
        let r = k.score(s.decoder(), &t.trace, None)?;
        Ok(json!({"from_layer": mid, "dropped": dropped.len(), "rel_change": r.rel_change}))
    });
    if drop_curve {
        out["drop_curve"] = step("drop_curve", &mut || {
            let dropped = s.select(&Selector::group(media))?;
            let t = s.traced().ok_or_else(|| anyhow::anyhow!("no trace"))?;
            let c = avflow::flow::generate::drop_curve(s.decoder(), &t.trace, &dropped, None)?;
            Ok(json!({"layers": c.len()}))
        });
    }
    out["heatmap"] = step("heatmap", &mut || {
        let (h, _) = s.heatmap(HeatMetric::AttentionFromLast, &w)?;
        Ok(json!({"layers": h.layers, "positions": h.positions}))
    });
    let peak = [
        "load",
        "trace",
        "knockout",
        "sweep",
        "drop_curve",
        "heatmap",
    ]
    .iter()
    .filter_map(|k| out[*k]["peak_rss_gb"].as_f64())
    .fold(0.0, f64::max);
    out["peak_rss_gb"] = json!(peak);
    println!("{out}");
    Ok(())
}
