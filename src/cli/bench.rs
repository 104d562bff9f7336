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
        } => {
            let resolved = resolve(&ModelSource::parse(model)?)?;
            let map = resolved.arch.bench_inputs(*seed, *frames, *audio_seconds)?;
            avflow::tensor_io::save_atomic(&map, out)?;
            let n = map["input_ids"].dim(1)?;
            println!("{}", serde_json::json!({"out": out, "seq_len": n}));
            Ok(())
        }
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
