//! `avflow prepare` (media + question → the family processor's tensors) and `avflow forward` (one forward
//! pass on them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use avflow::media::prepare::{Item, PrepareOptions, TimeRange};
use avflow::model::{position_ids_tensor, resolve, LoadOptions, ModelSource, Positions};
use avflow::session::Model;

use super::SamplingArgs;

/// What `avflow forward` prints.
#[derive(Debug, Serialize)]
pub struct ForwardSummary {
    pub seq_len: usize,
    pub vocab: usize,
    pub top1_id: u32,
    pub top1_prob: f32,
    pub use_audio_in_video: bool,
    pub seconds: f64,
    pub out: PathBuf,
    /// The position numbering, for families with more than one (video-SALMONN 2+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positions: Option<Positions>,
}

/// `avflow forward --model M --inputs F --out O`: logits `[seq, vocab]` (f32) and `position_ids` `[3, seq]`
/// (i64), written atomically.
pub fn forward(
    model: &str,
    inputs: &Path,
    out: &Path,
    opts: &LoadOptions,
) -> anyhow::Result<ForwardSummary> {
    let t0 = Instant::now();
    let m = Model::open_with(model, opts)?;
    super::loaded(&m);
    for n in &m.notes {
        eprintln!("note: {n}");
    }
    let prompt = m.read_prompt(inputs)?;
    let e = m.net.embed(&prompt)?;
    let logits = m.net.logits(&e, None)?;
    let seq = e.input_ids.len();
    let last = logits.get(seq - 1)?;
    let top = avflow::model::decoder::top_k(&last, 1)?;
    let mut map = HashMap::new();
    map.insert("logits".to_string(), logits.to_device(&Device::Cpu)?);
    map.insert(
        "position_ids".to_string(),
        position_ids_tensor(&e.position_ids, &Device::Cpu)?,
    );
    avflow::tensor_io::save_atomic(&map, out)?;
    Ok(ForwardSummary {
        seq_len: seq,
        vocab: m.arch().text().vocab_size,
        top1_id: top[0].0,
        top1_prob: top[0].1,
        use_audio_in_video: e.use_audio_in_video,
        seconds: t0.elapsed().as_secs_f64(),
        out: out.to_path_buf(),
        positions: super::positions_setting(&m),
    })
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    #[arg(long)]
    pub model: String,
    /// A video (its audio track is interleaved unless --no-audio-in-video). Repeatable; items keep the
    /// order given on the command line.
    #[arg(long)]
    pub video: Vec<PathBuf>,
    /// An audio file. Repeatable.
    #[arg(long)]
    pub audio: Vec<PathBuf>,
    /// An image. Repeatable.
    #[arg(long)]
    pub image: Vec<PathBuf>,
    #[arg(long)]
    pub question: String,
    /// System prompt (default: the model family's official one).
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Use each video and audio item from this second on (qwen-omni-utils' `video_start`/`audio_start`);
    /// the token map's seconds then count from here.
    #[arg(long, value_name = "S")]
    pub start: Option<f64>,
    /// Use each video and audio item up to this second (`video_end`/`audio_end`).
    #[arg(long, value_name = "E")]
    pub end: Option<f64>,
    /// Refuse prompts estimated above this many media tokens.
    #[arg(long, default_value_t = 32768)]
    pub max_tokens: usize,
    /// Text the assistant's turn starts with, e.g. "Best option:(" so that the next token is an option
    /// letter (Kim et al.'s protocol; score it with `knockout --token ID`).
    #[arg(long)]
    pub answer_prefix: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the token map (groups → positions) as JSON.
    #[arg(long)]
    pub spans: Option<PathBuf>,
}

/// The media items in the order the user gave them (`--video a --audio b --video c`).
pub fn items_in_order(a: &PrepareArgs, raw: &[String]) -> Vec<Item> {
    let mut out = Vec::new();
    let (mut v, mut au, mut im) = (a.video.iter(), a.audio.iter(), a.image.iter());
    for arg in raw {
        let flag = arg.split('=').next().unwrap_or("");
        let next = match flag {
            "--video" => v.next().map(|p| Item::Video(p.clone())),
            "--audio" => au.next().map(|p| Item::Audio(p.clone())),
            "--image" => im.next().map(|p| Item::Image(p.clone())),
            _ => None,
        };
        out.extend(next);
    }
    // Anything the scan missed keeps clap's order.
    out.extend(v.map(|p| Item::Video(p.clone())));
    out.extend(au.map(|p| Item::Audio(p.clone())));
    out.extend(im.map(|p| Item::Image(p.clone())));
    out
}

/// `avflow prepare`: needs the checkpoint's config, processor files and tokenizer, not its weights.
pub fn prepare_cmd(
    a: &PrepareArgs,
    raw: &[String],
    device: &Device,
) -> anyhow::Result<serde_json::Value> {
    let resolved = resolve(&ModelSource::parse(&a.model)?)?;
    let items = items_in_order(a, raw);
    let opts = PrepareOptions {
        use_audio_in_video: !a.sampling.no_audio_in_video,
        system: a.system.clone(),
        token_budget: a.max_tokens,
        answer_prefix: a.answer_prefix.clone(),
        range: TimeRange::new(a.start, a.end)?,
        ..Default::default()
    }
    .with_sampling(a.sampling.fps, a.sampling.min_pixels, a.sampling.max_pixels);
    let mut p = resolved
        .arch
        .prepare(&resolved.dir, &items, &a.question, &opts, device)?;
    // Said now rather than after the user loads the model: a prompt this machine cannot trace.
    let dtype = avflow::model::checkpoint_dtype(&resolved.dir).unwrap_or(candle_core::DType::F32);
    let weights = resolved.parameters() as u64 * dtype.size_in_bytes() as u64;
    let activation = avflow::model::nn::activation_dtype(device, dtype);
    let seq = p.input_ids.len();
    if let Some((fit, avail)) =
        avflow::session::budget::positions_limit(resolved.arch.text(), activation, weights, device)
            .filter(|(fit, _)| seq > *fit)
    {
        p.notes.push(format!(
            "this machine has {} available beyond the model's weights: enough to trace about {fit} \
             positions, not {seq}; the analyses will refuse this prompt here (lower --fps or \
             --max-pixels, or analyse a shorter clip)",
            avflow::session::budget::gb(avail)
        ));
    }
    for n in &p.notes {
        eprintln!("note: {n}");
    }
    let cpu: HashMap<String, Tensor> = p
        .tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    avflow::tensor_io::save_atomic(&cpu, &a.out)?;
    let map = resolved.arch.prompt_from_tensors(&a.out, &cpu)?.map;
    if let Some(s) = &a.spans {
        avflow::tensor_io::write_atomic(s, serde_json::to_string(&map)?.as_bytes())?;
    }
    let tokens: serde_json::Map<String, serde_json::Value> = map
        .group_sizes()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    Ok(
        serde_json::json!({"out": a.out, "seq_len": p.input_ids.len(), "tokens": tokens, "notes": p.notes}),
    )
}
