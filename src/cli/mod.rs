//! The headless subcommands: thin shells that parse arguments, call the library's analysis session
//! ([`avflow::session`]) and print one JSON object. Part of the binary, so no library module can lean on
//! them.

pub mod analyse;
pub mod batch;
pub mod bench;
pub mod compare;
pub mod figure;
pub mod prepare;

use std::path::PathBuf;

use anyhow::Context;

use avflow::export::Provenance;
use avflow::model::{LoadOptions, Positions};
use avflow::session::{Model, Session};

/// The model, the prepared inputs and optional extra spans: what every flow command opens.
#[derive(clap::Args, Debug)]
pub struct FlowInput {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub inputs: PathBuf,
    /// JSON file of extra named spans: {"name": [positions…]}.
    #[arg(long)]
    pub spans: Option<PathBuf>,
}

impl FlowInput {
    /// Loads the model and the inputs, adds the spans and traces the baseline.
    pub fn open(&self, opts: &LoadOptions) -> anyhow::Result<Session> {
        let s = Session::open_with(&self.model, &self.inputs, self.spans.as_deref(), opts)?;
        loaded(&s.model);
        for n in &s.model.notes {
            eprintln!("note: {n}");
        }
        Ok(s)
    }
}

/// How videos and images are sampled into tokens (`prepare` and batch sweeps).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Video sampling rate, frames per second (default: the model's processor: 2 for Qwen2.5-Omni as
    /// qwen-omni-utils, 10 for video-SALMONN 2+, one frame per 0.1 s).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Lower bound on a frame's or image's pixels after resizing (default: the model's processor).
    #[arg(long)]
    pub min_pixels: Option<usize>,
    /// Upper bound on a frame's or image's pixels after resizing (default: the model's processor; for
    /// video-SALMONN 2+ the bound at 768 frames, scaled up for fewer).
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Leave a video's own audio track out of the prompt.
    #[arg(long)]
    pub no_audio_in_video: bool,
}

/// `A..B` (half-open, 0-based).
pub fn parse_layers(s: &str) -> anyhow::Result<(usize, usize)> {
    let (a, b) = s.split_once("..").with_context(|| {
        format!("bad layer range {s:?}: write A..B (half-open, 0-based), e.g. 0..9")
    })?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

/// Peak resident memory of this process (Linux `VmHWM`), in GB.
pub fn peak_rss_gb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e9)
}

/// Where this process ran: the device's name and the weights' dtype of the model it loaded (`None` until
/// one is), for every JSON report ([`with_device`]).
static RAN_ON: std::sync::Mutex<(String, Option<candle_core::DType>)> =
    std::sync::Mutex::new((String::new(), None));

/// Records the device (and, once a model is loaded, its dtype) this process runs on.
pub fn ran_on(device: &str, dtype: Option<candle_core::DType>) {
    let mut r = RAN_ON.lock().unwrap_or_else(|e| e.into_inner());
    if !device.is_empty() {
        r.0 = device.to_string();
    }
    if dtype.is_some() {
        r.1 = dtype;
    }
}

/// The device this process runs on, once chosen.
pub fn device_ran_on() -> Option<String> {
    let r = RAN_ON.lock().unwrap_or_else(|e| e.into_inner());
    (!r.0.is_empty()).then(|| r.0.clone())
}

/// Records a loaded model's device and dtype.
pub fn loaded(model: &Model) {
    ran_on(
        &avflow::device::device_name(model.net.device()),
        Some(model.dtype),
    );
}

/// A command's JSON report with `"device"` and, where a model was loaded, `"dtype"` (what ran), unless the
/// command set them itself.
pub fn with_device(mut report: serde_json::Value) -> serde_json::Value {
    let r = RAN_ON.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(o) = report.as_object_mut() {
        o.entry("device").or_insert_with(|| r.0.clone().into());
        if let Some(d) = r.1 {
            o.entry("dtype")
                .or_insert_with(|| avflow::device::dtype_name(d).into());
        }
    }
    report
}

/// `"positions": "inference"` for families with more than one position numbering (video-SALMONN 2+), so a
/// record says which one made it; nothing for the others (their outputs stay as they were).
pub fn positions_field(model: &Model, v: &mut serde_json::Value) {
    if model.arch().position_numberings().len() > 1 {
        v["positions"] = model.positions.name().into();
    }
}

/// A figure's provenance for a run of `model` (as the user named it `source`): the model, its family and,
/// for families with more than one, the position numbering.
pub fn model_provenance(model: &Model, source: &str) -> Provenance {
    let prov = Provenance::default()
        .with_model(source)
        .with_family(model.arch().family())
        .with_setting("device", avflow::device::device_name(model.net.device()))
        .with_setting("dtype", avflow::device::dtype_name(model.dtype));
    match positions_setting(model) {
        Some(p) => prov.with_setting("positions", p.name()),
        None => prov,
    }
}

/// The position numbering, for families that have more than one.
pub fn positions_setting(model: &Model) -> Option<Positions> {
    (model.arch().position_numberings().len() > 1).then_some(model.positions)
}
