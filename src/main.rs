//! `avflow`: no subcommand opens the desktop app; subcommands do the same work headless.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "avflow",
    version,
    about = "How sound and sight flow through audio-visual LLMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// App: model folder or hub id (default: the bundled demo model).
    #[arg(long)]
    model: Option<String>,
    /// App: a prepared inputs file (safetensors, as `avflow forward` reads).
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// App: a video to open.
    #[arg(long)]
    video: Option<PathBuf>,
    /// App: the question to ask.
    #[arg(long)]
    question: Option<String>,
    /// auto (the first GPU this binary was built for and can open, else the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", global = true, help = DEVICE_HELP)]
    device: String,
    /// Weights dtype: auto (the checkpoint's own `torch_dtype`, as transformers loads it), f32, bf16 or f16.
    #[arg(long, default_value = "auto", global = true)]
    dtype: String,
    /// Position numbering, for families with two (video-SALMONN 2+): what the authors' released inference
    /// computes, or what the model was trained with. Ignored, with a note, for Qwen2.5-Omni.
    #[arg(long, value_enum, default_value = "inference", global = true)]
    positions: avflow::model::Positions,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Media + question → the processor's tensors (and a token map with --spans).
    Prepare(cli::prepare::PrepareArgs),
    /// Run the Thinker on processor inputs; write logits [seq, vocab] and position_ids [3, seq].
    Forward {
        #[arg(long)]
        model: String,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Knock out attention from SOURCE to TARGET in layers A..B; print the answer probability change.
    Knockout(cli::analyse::KnockoutArgs),
    /// Every window of k layers for every SOURCE:TARGET pair; write JSON or CSV records.
    Sweep(cli::analyse::SweepArgs),
    /// Remove groups of positions from a layer on; answer probability, timings, optionally the answer.
    Drop(cli::analyse::DropArgs),
    /// Greedy answer with a KV cache.
    Generate(cli::analyse::GenerateArgs),
    /// Logit lens: the answer token's probability read from every layer's residual.
    Lens(cli::analyse::LensArgs),
    /// Attention of chosen rows (default: last) to each token group, per layer.
    Attention(cli::analyse::AttentionArgs),
    /// The same sweep on two runs (another clip, model, family or size) on one depth axis, with B − A.
    Compare(cli::compare::CompareArgs),
    /// Merge the per-sample results of `sweep --manifest` shards and write the aggregates.
    Merge(cli::batch::MergeArgs),
    /// Time load / audio tower / vision tower / decoder / peak memory on a random-weight Thinker.
    Bench(cli::bench::BenchArgs),
    /// Redraw a figure from its spec (stem.spec.json) and data, byte for byte; or draw one from a
    /// command's JSON output (--from).
    Figure(cli::figure::FigureArgs),
}

/// Run-time settings that libraries read when they load, before `main`, so they are set by re-executing
/// once (only those the user has not set):
/// - `RAYON_NUM_THREADS=1` where oneDNN does the products: oneDNN runs on OpenMP, and avflow's own
///   passes run on the same OpenMP team (`kernels::parallel`), whose threads spin between products. On the
///   2-vCPU machines this project targets, products with sleeping (passive) OpenMP threads ran at about
///   one core's speed (586×2048×11008 bf16: 52–55 ms vs 27 ms spinning), and candle's own thread pool
///   would compete with the spinning threads, so candle's few remaining element-wise ops stay on the
///   calling thread. Measured: 5 interleaved runs each of a 586-token 3B bf16 forward, 12.55 s mean with
///   this vs 13.04 s with passive OpenMP threads and candle on 2 threads (transformers: 14.8 s).
/// - `MIMALLOC_PURGE_DELAY=-1`: by default mimalloc hands freed memory back to the OS after 10 ms, so
///   each layer's multi-MB activation buffers are faulted in and zeroed again (2 MB huge pages on
///   Linux). Keeping them cut a 586-token 3B forward's page faults from 145 k to 59 k and its time by
///   about a fifth (one run each), for ~30 MB more peak memory.
fn tune_runtime_env() {
    #[cfg(unix)]
    {
        let rayon = if avflow::kernels::gemm::enabled() {
            Some(("RAYON_NUM_THREADS", "1"))
        } else {
            None
        };
        let missing: Vec<(&str, &str)> = rayon
            .into_iter()
            .chain([("MIMALLOC_PURGE_DELAY", "-1")])
            .filter(|(k, _)| std::env::var_os(k).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let err = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .envs(missing.iter().copied())
                .exec();
            // exec returns only on failure: carry on with the defaults.
            eprintln!("note: could not re-execute with {missing:?} ({err}); continuing");
        }
    }
}

fn main() {
    tune_runtime_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            // symphonia logs its probe's dead ends as errors; avflow tries FFmpeg next and reports what
            // failed itself (RUST_LOG=symphonia=debug shows them).
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,symphonia=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run() {
        let message = format!("{e:#}");
        eprintln!("error: {message}");
        if !message.contains("Fix:") {
            if let Some(fix) =
                avflow::device::gpu_failure_fix(cli::device_ran_on().as_deref(), &message)
            {
                eprintln!("Fix: {fix}");
            }
        }
        std::process::exit(1);
    }
}

/// `--device`'s help, with what this binary was built for.
const DEVICE_HELP: &str = if cfg!(feature = "cuda") {
    "auto (default: the first GPU this binary was built for and can open, else the CPU), cpu, cuda, cuda:N or \
     metal. This build: cuda"
} else if cfg!(feature = "metal") {
    "auto (default: the first GPU this binary was built for and can open, else the CPU), cpu, cuda, cuda:N or \
     metal. This build: metal"
} else {
    "auto (default: the first GPU this binary was built for and can open, else the CPU), cpu, cuda, cuda:N or \
     metal. This build: CPU only (bash scripts/setup.sh builds the GPU version where it finds one)"
};

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let chosen = avflow::device::resolve(cli.device.parse()?)?;
    if let Some(note) = &chosen.note {
        eprintln!("note: {note}");
    }
    let device = chosen.device;
    cli::ran_on(&chosen.name, None);
    let (dtype, auto_dtype) = avflow::device::parse_dtype_choice(&cli.dtype)?;
    let opts = avflow::model::LoadOptions {
        positions: cli.positions,
        auto_dtype,
        ..avflow::model::LoadOptions::new(dtype, &device)
    };
    // Headless commands print one JSON object on stdout.
    let report = match cli.command {
        Some(Command::Forward { model, inputs, out }) => {
            serde_json::to_value(cli::prepare::forward(&model, &inputs, &out, &opts)?)?
        }
        Some(Command::Prepare(args)) => {
            // args_os: a non-UTF-8 file name must reach the library (and its clear error), not panic here.
            let raw: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            cli::prepare::prepare_cmd(&args, &raw, &device)?
        }
        Some(Command::Knockout(args)) => cli::analyse::knockout(&args, &opts)?,
        Some(Command::Sweep(args)) if args.manifest.is_some() => {
            cli::batch::sweep_manifest(&args, &opts)?
        }
        Some(Command::Sweep(args)) => cli::analyse::sweep(&args, &opts)?,
        Some(Command::Drop(args)) => cli::analyse::drop_cmd(&args, &opts)?,
        Some(Command::Generate(args)) => cli::analyse::generate_cmd(&args, &opts)?,
        Some(Command::Attention(args)) => cli::analyse::attention_cmd(&args, &opts)?,
        Some(Command::Compare(args)) => cli::compare::compare_cmd(&args, &opts)?,
        Some(Command::Lens(args)) => cli::analyse::lens_cmd(&args, &opts)?,
        Some(Command::Merge(args)) => cli::batch::merge_cmd(&args)?,
        Some(Command::Bench(args)) => return cli::bench::bench(&args, &opts),
        Some(Command::Figure(args)) => cli::figure::figure_cmd(&args)?,
        None => {
            return avflow::ui::run(avflow::ui::AppOptions {
                model: cli.model,
                inputs: cli.inputs,
                video: cli.video,
                question: cli.question,
                device,
                device_note: chosen.note,
                dtype,
                auto_dtype,
                positions: cli.positions,
                demo_clip: true,
            })
            .context("the app stopped with an error")
        }
    };
    println!("{}", cli::with_device(report));
    Ok(())
}
