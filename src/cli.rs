//! Headless commands (the `avflow` subcommands). The app calls the same library functions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::model::omni::{position_ids_tensor, prompt, weights};
use crate::model::{resolve, ModelSource, OmniInputs, OmniThinker, ThinkerConfig};

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
}

/// `avflow forward --model M --inputs F --out O`: logits `[seq, vocab]` (f32) and `position_ids` `[3, seq]`
/// (i64), written atomically.
pub fn forward(
    model: &str,
    inputs: &Path,
    out: &Path,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<ForwardSummary> {
    let t0 = Instant::now();
    let resolved = resolve(&ModelSource::parse(model)?)?;
    let thinker = OmniThinker::load(&resolved, dtype, device)?;
    let inp = OmniInputs::from_file(inputs)?;
    let e = thinker.embed(&inp)?;
    let logits = thinker.logits(&e, None)?;
    let seq = e.input_ids.len();
    let last = logits.get(seq - 1)?;
    let top = crate::model::decoder::top_k(&last, 1)?;
    let mut map = HashMap::new();
    map.insert("logits".to_string(), logits.to_device(&Device::Cpu)?);
    map.insert(
        "position_ids".to_string(),
        position_ids_tensor(&e.position_ids, &Device::Cpu)?,
    );
    crate::tensor_io::save_atomic(&map, out)?;
    Ok(ForwardSummary {
        seq_len: seq,
        vocab: thinker.cfg.text.vocab_size,
        top1_id: top[0].0,
        top1_prob: top[0].1,
        use_audio_in_video: e.use_audio_in_video,
        seconds: t0.elapsed().as_secs_f64(),
        out: out.to_path_buf(),
    })
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Write a random-weight Thinker with the real Qwen2.5-Omni-3B dimensions in the hub layout (bf16 shards).
    MakeModel {
        #[arg(long)]
        out: PathBuf,
        /// Keep only this many decoder layers (for quick runs); default all 36.
        #[arg(long)]
        layers: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
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

pub fn bench(args: &BenchArgs, dtype: DType, device: &Device) -> anyhow::Result<()> {
    match &args.what {
        BenchCommand::MakeModel { out, layers, seed } => {
            let mut cfg = ThinkerConfig::qwen25_omni_3b();
            if let Some(l) = layers {
                cfg.text.num_hidden_layers = *l;
            }
            write_random_checkpoint(&cfg, out, *seed)?;
            println!(
                "{}",
                serde_json::json!({"out": out, "layers": cfg.text.num_hidden_layers})
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
            let map = bench_inputs(&resolved.config, *seed, *frames, *audio_seconds)?;
            crate::tensor_io::save_atomic(&map, out)?;
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
            let resolved = resolve(&ModelSource::parse(model)?)?;
            let thinker = OmniThinker::load(&resolved, dtype, device)?;
            device.synchronize()?;
            let load = t0.elapsed().as_secs_f64();
            let inp = OmniInputs::from_file(inputs)?;
            let run = || -> anyhow::Result<_> {
                let t1 = Instant::now();
                let e = thinker.embed(&inp)?;
                let embed_s = t1.elapsed().as_secs_f64();
                let rot = thinker.decoder.rotary(&e.position_ids)?;
                let t2 = Instant::now();
                let normed = thinker
                    .decoder
                    .forward(&e.embeds, &rot, &mut |_, _| Ok(()))?;
                device.synchronize()?;
                let decoder_s = t2.elapsed().as_secs_f64();
                let t3 = Instant::now();
                let logits = thinker.decoder.logits(&normed)?;
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
                    "dtype": format!("{dtype:?}"),
                    "threads": crate::kernels::parallel::threads(),
                    "cpu_gemm": crate::kernels::gemm::backend_name(),
                    "seq_len": e.input_ids.len(),
                    "parameters": resolved.thinker_parameters(),
                    "load_s": load,
                    "audio_tower_s": e.timings.audio.as_secs_f64(),
                    "vision_tower_s": e.timings.vision.as_secs_f64(),
                    "embed_total_s": embed_s,
                    "decoder_s": decoder_s,
                    "lm_head_all_positions_s": lm_head_s,
                    "forward_s": embed_s + decoder_s + lm_head_s,
                    "first_forward_s": first_forward_s,
                    "repeat": repeat,
                    "device": crate::worker::device_name(device),
                    "peak_rss_gb": peak_rss_gb(),
                })
            );
            Ok(())
        }
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in GB.
pub fn peak_rss_gb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e9)
}

/// The hub's config.json for a Qwen2.5-Omni checkpoint with the given Thinker (hub key names).
pub fn hub_config_json(cfg: &ThinkerConfig) -> serde_json::Value {
    let (t, v, a, k) = (&cfg.text, &cfg.vision, &cfg.audio, &cfg.tokens);
    serde_json::json!({
        "architectures": ["Qwen2_5OmniModel"],
        "model_type": "qwen2_5_omni",
        "enable_audio_output": false,
        "torch_dtype": "bfloat16",
        "thinker_config": {
            "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"],
            "model_type": "qwen2_5_omni_thinker",
            "audio_token_index": k.audio, "image_token_index": k.image, "video_token_index": k.video,
            "audio_start_token_id": k.audio_start, "audio_end_token_id": k.audio_end,
            "vision_start_token_id": k.vision_start, "vision_end_token_id": k.vision_end,
            "user_token_id": k.user, "bos_token_id": k.bos, "eos_token_id": k.eos, "pad_token_id": k.pad,
            "position_id_per_seconds": cfg.position_id_per_seconds as i64,
            "seconds_per_chunk": cfg.seconds_per_chunk as i64,
            "torch_dtype": "bfloat16",
            "text_config": {
                "model_type": "qwen2_5_omni_text",
                "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
                "hidden_act": t.hidden_act, "rms_norm_eps": t.rms_norm_eps, "rope_theta": t.rope_theta,
                "rope_scaling": {"mrope_section": t.mrope_section, "rope_type": "default", "type": "default"},
                "max_position_embeddings": 32768, "tie_word_embeddings": false, "use_sliding_window": false,
                "sliding_window": 32768, "max_window_layers": 70, "torch_dtype": "bfloat16"
            },
            "vision_config": {
                "model_type": "qwen2_5_omni_vision_encoder",
                "depth": v.depth, "embed_dim": v.hidden_size, "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size, "num_heads": v.num_heads, "in_channels": v.in_channels,
                "in_chans": v.in_channels, "patch_size": v.patch_size, "spatial_patch_size": v.patch_size,
                "temporal_patch_size": v.temporal_patch_size, "spatial_merge_size": v.spatial_merge_size,
                "window_size": v.window_size, "out_hidden_size": v.out_hidden_size,
                "fullatt_block_indexes": v.fullatt_block_indexes, "hidden_act": v.hidden_act,
                "tokens_per_second": 25, "torch_dtype": "bfloat16"
            },
            "audio_config": {
                "model_type": "qwen2_5_omni_audio_encoder",
                "num_mel_bins": a.num_mel_bins, "encoder_layers": a.encoder_layers,
                "encoder_attention_heads": a.encoder_attention_heads, "encoder_ffn_dim": a.encoder_ffn_dim,
                "d_model": a.d_model, "activation_function": a.activation_function,
                "scale_embedding": a.scale_embedding, "max_source_positions": a.max_source_positions,
                "n_window": a.n_window, "output_dim": a.output_dim, "torch_dtype": "bfloat16"
            }
        }
    })
}

/// Writes a random-weight checkpoint (bf16, shards of ≤ 2 GB + index) in the hub layout.
pub fn write_random_checkpoint(cfg: &ThinkerConfig, dir: &Path, seed: u64) -> anyhow::Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::tensor_io::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&hub_config_json(cfg))?.as_bytes(),
    )?;
    let tensors = weights::thinker_tensors(cfg);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let limit: usize = 2_000_000_000;
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![vec![]];
    let mut size = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        if size + bytes > limit && !shards.last().is_some_and(|s| s.is_empty()) {
            shards.push(vec![]);
            size = 0;
        }
        size += bytes;
        if let Some(s) = shards.last_mut() {
            s.push((name, shape));
        }
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let fname = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, shape) in shard {
            let numel: usize = shape.iter().product();
            let is_norm = name.ends_with("norm.weight")
                || name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight")
                || name.ends_with("ln_q.weight")
                || name.contains("layer_norm.weight")
                || name.ends_with("ln_post.weight");
            let mut bytes = Vec::with_capacity(numel * 2);
            for _ in 0..numel {
                let x: f32 = if is_norm {
                    1.0
                } else {
                    rng.random_range(-0.035f32..0.035)
                };
                bytes.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
            total += bytes.len();
            weight_map.insert(name.clone(), serde_json::Value::String(fname.clone()));
            data.push((name.clone(), shape.clone(), bytes));
        }
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(name, shape, bytes)| {
                Ok((
                    name.clone(),
                    TensorView::new(Dtype::BF16, shape.clone(), bytes)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let path = dir.join(&fname);
        safetensors::serialize_to_file(views, None, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    crate::tensor_io::write_atomic(
        &dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?.as_bytes(),
    )?;
    Ok(())
}

/// A ~586-token audio-visual prompt as the processor would return it: 8 frames of 168×392 px at 2 fps
/// (4 grids × 84 tokens = 336 video tokens) with 7 s of audio (700 mel frames → 175 tokens), interleaved.
pub fn bench_inputs(
    cfg: &ThinkerConfig,
    seed: u64,
    frames: usize,
    audio_seconds: f64,
) -> anyhow::Result<HashMap<String, Tensor>> {
    if frames < 2 || frames % 2 != 0 || audio_seconds <= 0.1 {
        bail!("--frames must be even and ≥ 2, --audio-seconds > 0.1");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tk = &cfg.tokens;
    let text_vocab = tk.pad.unwrap_or(151643).min(cfg.text.vocab_size as u32);
    let mut words =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..text_vocab)).collect() };
    let (im_start, im_end, nl) = (tk.bos.unwrap_or(151644), tk.eos.unwrap_or(151645), 198u32);
    let grid = [frames / 2, 12, 28];
    let mel = (audio_seconds * 100.0).round() as usize;
    let audio_tokens = crate::model::omni::audio::output_lengths(mel).1;
    let mut ids = vec![im_start, 8948, nl];
    ids.extend(words(38));
    ids.extend([im_end, nl, im_start, tk.user.unwrap_or(872), nl]);
    ids.extend(prompt::video_with_audio_ids(cfg, grid, 1.0, audio_tokens));
    ids.extend(words(20));
    ids.extend([im_end, nl, im_start, 77091, nl]);
    if ids.iter().any(|&i| i as usize >= cfg.text.vocab_size) {
        bail!("token ids exceed the vocabulary");
    }
    let n = ids.len();
    let dev = Device::Cpu;
    let patches = grid[0] * grid[1] * grid[2];
    let pd = cfg.vision.in_channels
        * cfg.vision.temporal_patch_size
        * cfg.vision.patch_size
        * cfg.vision.patch_size;
    let mut m = HashMap::new();
    let ids_i64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    m.insert("input_ids".into(), Tensor::from_vec(ids_i64, (1, n), &dev)?);
    m.insert(
        "attention_mask".into(),
        Tensor::ones((1, n), DType::I64, &dev)?,
    );
    m.insert(
        "pixel_values_videos".into(),
        Tensor::randn(0f32, 1.0, (patches, pd), &dev)?,
    );
    m.insert(
        "video_grid_thw".into(),
        Tensor::from_vec(
            grid.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            (1, 3),
            &dev,
        )?,
    );
    m.insert(
        "video_second_per_grid".into(),
        Tensor::new(&[1.0f32], &dev)?,
    );
    m.insert(
        "input_features".into(),
        Tensor::rand(-1f32, 1.0, (1, cfg.audio.num_mel_bins, mel), &dev)?,
    );
    m.insert(
        "feature_attention_mask".into(),
        Tensor::ones((1, mel), DType::I64, &dev)?,
    );
    Ok(m)
}

/// A prompt ready for flow experiments: the model, the embedded prompt, its groups and the traced run.
pub struct FlowSession {
    pub thinker: OmniThinker,
    pub groups: crate::flow::Groups,
    /// Per-position time ranges, items and grid cells (for `GROUP@A-B`, `@A-B`, `item:K` selectors).
    pub map: crate::media::token_map::TokenMap,
    pub trace: crate::flow::Trace,
    pub embeds: Tensor,
    pub trace_seconds: f64,
    /// Of which the traced decoder pass (the rest is the encoders and embedding).
    pub trace_decoder_seconds: f64,
}

/// Loads the model and inputs, computes the groups (plus `--spans`) and traces the baseline.
pub fn open_flow(
    model: &str,
    inputs: &Path,
    spans: Option<&Path>,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<FlowSession> {
    let resolved = resolve(&ModelSource::parse(model)?)?;
    let thinker = OmniThinker::load(&resolved, dtype, device)?;
    let inp = OmniInputs::from_file(inputs)?;
    let p = trace_prompt(&thinker, &inp, spans)?;
    Ok(FlowSession {
        thinker,
        groups: p.groups,
        map: p.map,
        trace: p.trace,
        embeds: p.embeds,
        trace_seconds: p.trace_seconds,
        trace_decoder_seconds: p.trace_decoder_seconds,
    })
}

/// One prompt embedded and traced with a model the caller keeps (batch runs reuse one model).
pub struct TracedPrompt {
    pub input_ids: Vec<u32>,
    pub groups: crate::flow::Groups,
    pub map: crate::media::token_map::TokenMap,
    pub trace: crate::flow::Trace,
    pub embeds: Tensor,
    pub trace_seconds: f64,
    /// Of which the traced decoder pass.
    pub trace_decoder_seconds: f64,
}

/// Embeds the inputs, computes the groups (plus `spans`) and the token map, and traces the baseline.
pub fn trace_prompt(
    thinker: &OmniThinker,
    inp: &OmniInputs,
    spans: Option<&Path>,
) -> anyhow::Result<TracedPrompt> {
    let t0 = Instant::now();
    let e = thinker.embed(inp)?;
    let mut groups = crate::flow::Groups::from_ids(&e.input_ids, &thinker.cfg.tokens);
    if let Some(s) = spans {
        groups.merge_file(s)?;
    }
    let spg: Vec<f64> = inp
        .video_second_per_grid
        .iter()
        .map(|&x| x as f64)
        .collect();
    let map = crate::media::token_map::TokenMap::build(
        &e.input_ids,
        &thinker.cfg,
        &inp.video_grid_thw,
        &spg,
        &inp.image_grid_thw,
    );
    let t1 = Instant::now();
    let trace = crate::flow::Trace::run(&thinker.decoder, &e.embeds, &e.position_ids)?;
    let trace_decoder_seconds = t1.elapsed().as_secs_f64();
    Ok(TracedPrompt {
        input_ids: e.input_ids,
        groups,
        map,
        trace,
        embeds: e.embeds,
        trace_seconds: t0.elapsed().as_secs_f64(),
        trace_decoder_seconds,
    })
}

impl FlowSession {
    /// Positions of a selector (see [`select_positions`]).
    pub fn select(&self, expr: &str) -> anyhow::Result<Vec<usize>> {
        select_positions(&self.groups, &self.map, expr)
    }

    /// A copy of the groups with every selector of `exprs` added as a named span (for sweeps).
    pub fn groups_with(&self, exprs: &[&str]) -> anyhow::Result<crate::flow::Groups> {
        groups_with(&self.groups, &self.map, exprs)
    }
}

/// Positions of a selector: comma-separated terms, each a group or span name (`audio`), a group
/// within a time range in seconds (`audio@1-3`), a time range over both modalities (`@1-3`), a
/// media item (`item:0`), or prompt positions (`pos:10-20`, half-open like layer ranges; `pos:7` is one
/// position — what a drag on the app's token strip selects). Unknown or empty selections are errors
/// naming them.
pub fn select_positions(
    groups: &crate::flow::Groups,
    map: &crate::media::token_map::TokenMap,
    expr: &str,
) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for term in expr.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let picked: Vec<usize> = if let Some(range) = term.strip_prefix("pos:") {
            position_range(range, groups.seq_len)
                .with_context(|| format!("bad position range in {term:?}"))?
        } else if let Some(k) = term.strip_prefix("item:") {
            let k: usize = k
                .parse()
                .with_context(|| format!("bad item index in {term:?}"))?;
            map.tokens
                .iter()
                .filter(|t| t.item == Some(k) && (t.time.is_some() || t.grid.is_some()))
                .map(|t| t.position)
                .collect()
        } else if let Some((group, range)) = term.split_once('@') {
            let (a, b) = range.split_once('-').with_context(|| {
                format!(
                    "bad time range in {term:?}: write GROUP@START-END in seconds, e.g. audio@1-3"
                )
            })?;
            let (a, b): (f64, f64) = (a.trim().parse()?, b.trim().parse()?);
            let in_time = map.time_span(a, b, None);
            if group.is_empty() {
                in_time
            } else {
                let g = groups.select(group)?;
                in_time
                    .into_iter()
                    .filter(|p| g.binary_search(p).is_ok())
                    .collect()
            }
        } else {
            groups.select(term)?
        };
        if picked.is_empty() {
            bail!(
                "selector {term:?} selects no position in this prompt (groups: {})",
                groups.summary()
            );
        }
        out.extend(picked);
    }
    if out.is_empty() {
        bail!("no positions selected: give a group such as audio, video, question or last");
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `A-B` → positions `A..B` (half-open), `A` → `[A]`, checked against a prompt of `seq` positions.
fn position_range(range: &str, seq: usize) -> anyhow::Result<Vec<usize>> {
    let (a, b) = match range.split_once('-') {
        Some((a, b)) => (a.trim().parse::<usize>()?, b.trim().parse::<usize>()?),
        None => {
            let a = range.trim().parse::<usize>()?;
            (a, a + 1)
        }
    };
    if a >= b || b > seq {
        bail!(
            "positions {a}..{b} are not a non-empty range inside the prompt's 0..{seq} (half-open: \
             pos:A-B takes A up to B−1, pos:A one position)"
        );
    }
    Ok((a..b).collect())
}

#[cfg(test)]
mod selector_tests {
    use super::select_positions;
    use crate::flow::Groups;
    use crate::media::token_map::TokenMap;

    /// 10 positions: system 0..3, audio 3..7, question 7..9, last 9.
    fn prompt() -> (Groups, TokenMap) {
        let mut groups = Groups {
            seq_len: 10,
            ..Groups::default()
        };
        for (name, span) in [
            ("system", 0..3),
            ("audio", 3..7),
            ("question", 7..9),
            ("last", 9..10),
        ] {
            groups.spans.insert(name.into(), span.collect());
        }
        let map = TokenMap {
            tokens: Vec::new(),
            groups: groups.clone(),
        };
        (groups, map)
    }

    #[test]
    fn position_ranges_are_half_open_and_join_other_terms() {
        let (g, m) = prompt();
        let sel = |e: &str| select_positions(&g, &m, e).map_err(|e| format!("{e:#}"));
        assert_eq!(sel("pos:2-5"), Ok(vec![2, 3, 4]));
        assert_eq!(sel("pos:4"), Ok(vec![4]));
        assert_eq!(sel(" pos: 8 - 10 "), Ok(vec![8, 9]));
        assert_eq!(sel("pos:0-2,last"), Ok(vec![0, 1, 9]));
        assert_eq!(sel("pos:3-5,audio"), Ok(vec![3, 4, 5, 6]));
        for bad in [
            "pos:5-5", "pos:6-2", "pos:9-11", "pos:10", "pos:x", "pos:1-",
        ] {
            let e = sel(bad).expect_err(bad);
            assert!(e.contains("bad position range"), "{bad}: {e}");
        }
        assert!(sel("pos:9-11").unwrap_err().contains("0..10"));
    }
}

/// A copy of `groups` with every selector of `exprs` added as a named span (for sweeps).
pub fn groups_with(
    groups: &crate::flow::Groups,
    map: &crate::media::token_map::TokenMap,
    exprs: &[&str],
) -> anyhow::Result<crate::flow::Groups> {
    let mut g = groups.clone();
    for e in exprs {
        if !g.spans.contains_key(*e) {
            g.spans
                .insert(e.to_string(), select_positions(groups, map, e)?);
        }
    }
    Ok(g)
}

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
    pub fn open(&self, dtype: DType, device: &Device) -> anyhow::Result<FlowSession> {
        open_flow(
            &self.model,
            &self.inputs,
            self.spans.as_deref(),
            dtype,
            device,
        )
    }
}

/// `A..B` (half-open, 0-based).
pub fn parse_layers(s: &str) -> anyhow::Result<(usize, usize)> {
    let (a, b) = s.split_once("..").with_context(|| {
        format!("bad layer range {s:?}: write A..B (half-open, 0-based), e.g. 0..9")
    })?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

#[derive(clap::Args, Debug)]
pub struct KnockoutArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Source group(s), comma-separated: system, video, image, audio, question, last (or a --spans name).
    #[arg(long)]
    pub source: String,
    /// Target group(s), comma-separated.
    #[arg(long)]
    pub target: String,
    /// Decoder layers A..B (half-open, 0-based).
    #[arg(long)]
    pub layers: String,
    /// Token whose probability is reported (default: the baseline top-1).
    #[arg(long)]
    pub token: Option<u32>,
    /// Also run a size-matched random control (random sources, same count) with this seed.
    #[arg(long)]
    pub control_seed: Option<u64>,
}

pub fn knockout(
    a: &KnockoutArgs,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<serde_json::Value> {
    let s = a.input.open(dtype, device)?;
    let (start, end) = parse_layers(&a.layers)?;
    let ko = crate::flow::Knockout {
        sources: s.select(&a.source)?,
        targets: s.select(&a.target)?,
        start,
        end,
    };
    let t0 = Instant::now();
    let r = ko.score(&s.thinker.decoder, &s.trace, a.token)?;
    let mut v = serde_json::to_value(&r)?;
    v["source"] = a.source.clone().into();
    v["target"] = a.target.clone().into();
    v["start"] = start.into();
    v["end"] = end.into();
    v["knockout_s"] = t0.elapsed().as_secs_f64().into();
    v["trace_s"] = s.trace_seconds.into();
    v["groups"] = s.groups.summary().into();
    if let Some(seed) = a.control_seed {
        let ctl = crate::flow::Knockout {
            sources: crate::flow::groups::random_control(&ko.sources, &ko.targets, seed)?,
            ..ko.clone()
        };
        let c = ctl.score(&s.thinker.decoder, &s.trace, a.token)?;
        v["control"] = serde_json::json!({"seed": seed, "sources": ctl.sources, "prob": c.prob, "rel_change": c.rel_change, "top1_id": c.top1_id});
    }
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Query rows: groups or spans, comma-separated.
    #[arg(long, default_value = "last")]
    pub rows: String,
    /// Also write the full head-averaged map [layers, seq] (rows averaged) to this JSON file.
    #[arg(long)]
    pub map_out: Option<PathBuf>,
    /// Also draw the map as a layers × tokens heatmap (token axis coloured by group) to
    /// STEM.{svg,pdf,png,csv,json} + STEM.spec.json, and the mass per group to STEM-mass.*.
    #[arg(long)]
    pub figure: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: crate::export::Preset,
}

/// Attention mass of the chosen rows to each group, per layer.
pub fn attention_cmd(
    a: &AttentionArgs,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<serde_json::Value> {
    let s = a.input.open(dtype, device)?;
    let rows = s.groups.select(&a.rows)?;
    let maps = crate::flow::attention::attention_rows(&s.thinker.decoder, &s.trace, &rows, false)?;
    let summary = crate::flow::attention::summarise(&maps, &s.groups)?;
    let m: Vec<Vec<f32>> = maps
        .iter()
        .map(|t| t.mean(0)?.to_vec1())
        .collect::<candle_core::Result<_>>()?;
    if let Some(out) = &a.map_out {
        crate::tensor_io::write_atomic(out, serde_json::to_string(&m)?.as_bytes())?;
    }
    let report = serde_json::json!({"rows": rows.len(), "layers": summary});
    let mut figures = Vec::new();
    if let Some(stem) = &a.figure {
        use crate::export::{data, FigureKind, FigureSpec, Provenance};
        let prov = Provenance::default()
            .with_model(&a.input.model)
            .with_file(&a.input.inputs)?
            .with_setting("rows", a.rows.clone());
        let map64: Vec<Vec<f64>> = m
            .iter()
            .map(|r| r.iter().map(|&x| f64::from(x)).collect())
            .collect();
        let groups = data::token_groups_from_spans(s.groups.seq_len, &s.groups.spans);
        let heat = data::attention_heatmap(&map64, groups)?;
        let mut spec = FigureSpec::new(FigureKind::AttentionMap, a.preset, prov.clone());
        spec.title = Some(format!("attention from {}", a.rows));
        figures.extend(crate::export::write_figure(&spec, &heat, stem)?);
        let (spec, curves) = crate::export::figure_from_output(
            FigureKind::AttentionMass,
            &report.to_string(),
            a.preset,
            prov,
        )?;
        let mut mass = stem.as_os_str().to_owned();
        mass.push("-mass");
        figures.extend(crate::export::write_figure(
            &spec,
            &curves,
            Path::new(&mass),
        )?);
    }
    let mut report = report;
    if !figures.is_empty() {
        report["figure"] = serde_json::to_value(&figures)?;
    }
    Ok(report)
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[arg(long)]
    pub model: String,
    /// Prepared inputs of one clip (`avflow prepare`); or use --manifest for a dataset.
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub inputs: Option<PathBuf>,
    /// JSON file of extra named spans: {"name": [positions…]}.
    #[arg(long, conflicts_with = "manifest")]
    pub spans: Option<PathBuf>,
    /// Batch mode: a JSONL file, one sample per line (media paths, question, optional options/answer/task);
    /// --out is then a folder of per-sample results (results.jsonl) and aggregates.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// SOURCE:TARGET pairs, comma-separated (default: each modality into question and last, question→last).
    #[arg(long)]
    pub pairs: Option<String>,
    /// Window size in layers.
    #[arg(long, default_value_t = 9)]
    pub window: usize,
    #[arg(long, value_enum, default_value = "center")]
    pub align: crate::flow::Align,
    /// Score this token id instead of the baseline's top-1 (single-clip mode).
    #[arg(long, conflicts_with = "manifest")]
    pub token: Option<u32>,
    /// results.json or results.csv (single clip); a folder (with --manifest).
    #[arg(long)]
    pub out: PathBuf,
    /// Batch: continue the run in --out, skipping finished samples.
    #[arg(long, requires = "manifest")]
    pub resume: bool,
    /// Batch: take samples I, I+N, I+2N… (`--shard $SLURM_ARRAY_TASK_ID/N`, or `auto/N`).
    #[arg(long, requires = "manifest")]
    pub shard: Option<String>,
    /// Batch: how each sample's media are sampled.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Batch: text the assistant turn starts with for multiple-choice samples (next token = the letter).
    #[arg(long, default_value = crate::batch::run::OPTION_PREFIX)]
    pub option_prefix: String,
    /// Batch: samples averaged (auto = correctly answered ones when answers are given).
    #[arg(long, value_enum, default_value = "auto")]
    pub subset: crate::batch::Subset,
    /// Batch: the token whose probability change is averaged.
    #[arg(long, value_enum, default_value = "predicted")]
    pub metric: crate::batch::Metric,
    /// Single clip: also draw the sweep figure to STEM.{svg,pdf,png,csv,json} + STEM.spec.json.
    #[arg(long, conflicts_with = "manifest")]
    pub figure: Option<PathBuf>,
    /// Figure width: one column (3.25 in) or two (6.75 in).
    #[arg(long, value_enum, default_value = "single")]
    pub preset: crate::export::Preset,
}

pub fn sweep(a: &SweepArgs, dtype: DType, device: &Device) -> anyhow::Result<serde_json::Value> {
    if a.manifest.is_some() {
        return crate::batch::command::sweep_manifest(a, dtype, device);
    }
    let input = FlowInput {
        model: a.model.clone(),
        inputs: a.inputs.clone().context("give --inputs (or --manifest)")?,
        spans: a.spans.clone(),
    };
    let s = input.open(dtype, device)?;
    let pairs = match &a.pairs {
        Some(p) => crate::flow::sweep::parse_pairs(p)?,
        None => crate::flow::sweep::default_pairs(&s.groups),
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let mut progress = |done: usize, total: usize| {
        let el = t0.elapsed().as_secs_f64();
        if done == 0 {
            eprint!("\rsweep 0/{total}  {el:.1}s elapsed   ");
        } else {
            let eta = el / done as f64 * (total - done) as f64;
            eprint!("\rsweep {done}/{total}  {el:.1}s elapsed, ETA {eta:.1}s   ");
        }
    };
    let exprs: Vec<&str> = pairs
        .iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect();
    let groups = s.groups_with(&exprs)?;
    let recs = crate::flow::sweep(
        &s.thinker.decoder,
        &s.trace,
        &groups,
        &pairs,
        a.window,
        a.align,
        a.token,
        &cancel,
        &mut progress,
    )?;
    let sweep_s = t0.elapsed().as_secs_f64();
    eprintln!();
    let body = if a.out.extension().is_some_and(|e| e == "csv") {
        crate::flow::sweep::to_csv(&recs)
    } else {
        serde_json::to_string_pretty(&recs)?
    };
    crate::tensor_io::write_atomic(&a.out, body.as_bytes())?;
    let figure = match &a.figure {
        Some(stem) => {
            let prov = crate::export::Provenance::default()
                .with_model(&input.model)
                .with_file(&input.inputs)?;
            crate::export::sweep_figure(&recs, a.window, a.align, prov, a.preset, stem)?
        }
        None => vec![],
    };
    // How far the sweep is from its floor, in units of the traced decoder pass timed in this process
    // (robust to the machine's speed swings): the rows it had to recompute, and the time it took.
    let work = crate::flow::sweep::sweep_work(
        &s.thinker.decoder,
        &s.trace,
        &groups,
        &pairs,
        a.window,
        a.align,
    )?;
    let forward_rows = (s.trace.seq_len * s.thinker.decoder.num_layers()).max(1) as f64;
    Ok(serde_json::json!({
        "out": a.out, "records": recs.len(), "figure": figure, "pairs": pairs.len(), "window": a.window,
        "trace_s": s.trace_seconds, "trace_decoder_s": s.trace_decoder_seconds, "sweep_s": sweep_s,
        "trace_memory_mb": s.trace.memory_bytes() as f64 / 1e6,
        "recomputed_row_layers": work.row_layers, "layer_calls": work.calls,
        "rows_in_decoder_passes": work.row_layers as f64 / forward_rows,
        "time_in_decoder_passes": sweep_s / s.trace_decoder_seconds.max(1e-9),
    }))
}

/// Token ids → text with the model folder's tokenizer (ids when there is none).
pub fn decode_tokens(model_dir: &Path, ids: &[u32]) -> Option<String> {
    let tk = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).ok()?;
    tk.decode(ids, true).ok()
}

fn stop_ids(t: &crate::model::ThinkerConfig) -> Vec<u32> {
    t.tokens.eos.into_iter().chain(t.tokens.pad).collect()
}

#[derive(clap::Args, Debug)]
pub struct DropArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Groups whose positions are removed, comma-separated (e.g. audio,video).
    #[arg(long)]
    pub groups: String,
    /// First decoder layer that no longer sees them.
    #[arg(long)]
    pub from_layer: usize,
    /// Also generate up to N answer tokens greedily (with and without dropping, timed).
    #[arg(long)]
    pub generate: Option<usize>,
    #[arg(long)]
    pub token: Option<u32>,
    /// Also compute the answer probability for every first-dropped layer and draw the drop curve to
    /// STEM.{svg,pdf,png,csv,json} + STEM.spec.json.
    #[arg(long)]
    pub curve: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: crate::export::Preset,
}

pub fn drop_cmd(a: &DropArgs, dtype: DType, device: &Device) -> anyhow::Result<serde_json::Value> {
    use crate::flow::generate::{generate, prefill};
    let s = a.input.open(dtype, device)?;
    let dropped = s.select(&a.groups)?;
    let dec = &s.thinker.decoder;
    let pos = &s.trace.position_ids;
    let t0 = Instant::now();
    let mut full = prefill(dec, &s.embeds, pos, None)?;
    let prefill_full = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut dr = prefill(dec, &s.embeds, pos, Some((&dropped, a.from_layer)))?;
    let prefill_drop = t1.elapsed().as_secs_f64();
    let r = crate::flow::knockout::score_logits(&dr.last_logits, &s.trace, a.token)?;
    let mut v = serde_json::json!({
        "groups": a.groups, "dropped_positions": dropped.len(), "from_layer": a.from_layer,
        "prob": r.prob, "base_prob": r.base_prob, "rel_change": r.rel_change, "top1_id": r.top1_id,
        "token_id": r.token_id, "prefill_s": prefill_drop, "prefill_full_s": prefill_full,
        "prefill_speedup": prefill_full / prefill_drop.max(1e-9),
    });
    if let Some(n) = a.generate {
        let stop = stop_ids(&s.thinker.cfg);
        let resolved = resolve(&ModelSource::parse(&a.input.model)?)?;
        for (key, cache) in [("full", &mut full), ("dropped", &mut dr)] {
            let t = Instant::now();
            let (toks, times) = generate(dec, cache, n, &stop)?;
            let per = if times.is_empty() {
                0.0
            } else {
                times.iter().map(|d| d.as_secs_f64()).sum::<f64>() / times.len() as f64
            };
            v[format!("answer_{key}")] = decode_tokens(&resolved.dir, &toks)
                .unwrap_or_default()
                .into();
            v[format!("answer_ids_{key}")] = serde_json::to_value(&toks)?;
            v[format!("decode_s_{key}")] = t.elapsed().as_secs_f64().into();
            v[format!("per_token_s_{key}")] = per.into();
        }
        v["answer"] = v["answer_dropped"].clone();
    }
    if let Some(stem) = &a.curve {
        let curve = crate::flow::generate::drop_curve(dec, &s.trace, &dropped, a.token)?;
        let points: Vec<crate::export::data::DropPoint> = curve
            .iter()
            .map(|(l, r)| crate::export::data::DropPoint {
                groups: a.groups.clone(),
                from_layer: *l,
                prob: f64::from(r.prob),
                base_prob: f64::from(r.base_prob),
            })
            .collect();
        let prov = crate::export::Provenance::default()
            .with_model(&a.input.model)
            .with_file(&a.input.inputs)?
            .with_setting("groups", a.groups.clone())
            .with_setting("token", r.token_id)
            .with_setting(
                "prefill_speedup_at_from_layer",
                v["prefill_speedup"].clone(),
            );
        let mut spec =
            crate::export::FigureSpec::new(crate::export::FigureKind::DropCurve, a.preset, prov);
        spec.title = Some(format!(
            "prefill {:.2}× faster dropping from layer {}",
            prefill_full / prefill_drop.max(1e-9),
            a.from_layer
        ));
        let files =
            crate::export::write_figure(&spec, &crate::export::data::drop_curves(&points), stem)?;
        v["curve"] = serde_json::to_value(
            curve
                .iter()
                .map(|(l, r)| serde_json::json!({"from_layer": l, "prob": r.prob, "rel_change": r.rel_change}))
                .collect::<Vec<_>>(),
        )?;
        v["figure"] = serde_json::to_value(files)?;
    }
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub max_new: usize,
}

pub fn generate_cmd(
    a: &GenerateArgs,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<serde_json::Value> {
    let resolved = resolve(&ModelSource::parse(&a.model)?)?;
    let thinker = OmniThinker::load(&resolved, dtype, device)?;
    let inp = OmniInputs::from_file(&a.inputs)?;
    let t0 = Instant::now();
    let e = thinker.embed(&inp)?;
    let mut cache =
        crate::flow::generate::prefill(&thinker.decoder, &e.embeds, &e.position_ids, None)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let (toks, times) = crate::flow::generate::generate(
        &thinker.decoder,
        &mut cache,
        a.max_new,
        &stop_ids(&thinker.cfg),
    )?;
    let per = times.iter().map(|d| d.as_secs_f64()).sum::<f64>() / times.len().max(1) as f64;
    Ok(serde_json::json!({
        "answer": decode_tokens(&resolved.dir, &toks), "answer_ids": toks,
        "prefill_s": prefill_s, "decode_s": t1.elapsed().as_secs_f64(), "per_token_s": per,
    }))
}

#[derive(clap::Args, Debug)]
pub struct LensArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Group or span whose first position is read (default: last).
    #[arg(long, default_value = "last")]
    pub at: String,
    /// Token whose probability is followed (default: the baseline top-1).
    #[arg(long)]
    pub token: Option<u32>,
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

pub fn lens_cmd(a: &LensArgs, dtype: DType, device: &Device) -> anyhow::Result<serde_json::Value> {
    let s = a.input.open(dtype, device)?;
    let position = s.groups.select(&a.at)?[0];
    let token = a.token.unwrap_or(s.trace.top1_id);
    let rows = crate::flow::generate::logit_lens(
        &s.thinker.decoder,
        &s.trace.residuals,
        position,
        token,
        a.top,
    )?;
    let layers: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(l, p, top)| serde_json::json!({"layer": l, "prob": p, "top": top}))
        .collect();
    Ok(serde_json::json!({"position": position, "token_id": token, "layers": layers}))
}

/// How videos and images are sampled into tokens (`prepare` and batch sweeps).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Video sampling rate (frames per second).
    #[arg(long, default_value_t = 2.0)]
    pub fps: f64,
    /// Lower bound on a frame's or image's pixels after resizing (default: qwen-omni-utils').
    #[arg(long)]
    pub min_pixels: Option<usize>,
    /// Upper bound on a frame's or image's pixels after resizing (default: qwen-omni-utils').
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Leave a video's own audio track out of the prompt.
    #[arg(long)]
    pub no_audio_in_video: bool,
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
    /// System prompt (default: Qwen2.5-Omni's official one).
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
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
pub fn items_in_order(a: &PrepareArgs, raw: &[String]) -> Vec<crate::media::prepare::Item> {
    use crate::media::prepare::Item;
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

pub fn prepare_cmd(
    a: &PrepareArgs,
    raw: &[String],
    device: &Device,
) -> anyhow::Result<serde_json::Value> {
    use crate::media::prepare::{prepare, PrepareOptions};
    let resolved = resolve(&ModelSource::parse(&a.model)?)?;
    let items = items_in_order(a, raw);
    let opts = PrepareOptions {
        use_audio_in_video: !a.sampling.no_audio_in_video,
        system: a.system.clone(),
        token_budget: a.max_tokens,
        answer_prefix: a.answer_prefix.clone(),
        ..Default::default()
    }
    .with_sampling(a.sampling.fps, a.sampling.min_pixels, a.sampling.max_pixels);
    let p = prepare(
        &resolved.dir,
        &resolved.config,
        &items,
        &a.question,
        &opts,
        device,
    )?;
    for n in &p.notes {
        eprintln!("note: {n}");
    }
    let cpu: HashMap<String, Tensor> = p
        .tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    crate::tensor_io::save_atomic(&cpu, &a.out)?;
    let grids = |name: &str| -> anyhow::Result<Vec<[usize; 3]>> {
        Ok(match p.tensors.get(name) {
            Some(t) => t
                .to_dtype(DType::I64)?
                .to_vec2::<i64>()?
                .iter()
                .map(|r| [r[0] as usize, r[1] as usize, r[2] as usize])
                .collect(),
            None => vec![],
        })
    };
    let spg: Vec<f64> = match p.tensors.get("video_second_per_grid") {
        Some(t) => t.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        None => vec![],
    };
    let map = crate::media::token_map::TokenMap::build(
        &p.input_ids,
        &resolved.config,
        &grids("video_grid_thw")?,
        &spg,
        &grids("image_grid_thw")?,
    );
    let groups = &map.groups;
    if let Some(s) = &a.spans {
        crate::tensor_io::write_atomic(s, serde_json::to_string(&map)?.as_bytes())?;
    }
    let tokens: serde_json::Map<String, serde_json::Value> = groups
        .spans
        .iter()
        .map(|(k, v)| (k.clone(), v.len().into()))
        .collect();
    Ok(
        serde_json::json!({"out": a.out, "seq_len": p.input_ids.len(), "tokens": tokens, "notes": p.notes}),
    )
}

#[derive(clap::Args, Debug)]
pub struct FigureArgs {
    /// A figure spec (`stem.spec.json`, written beside every figure): redraw that figure.
    #[arg(required_unless_present = "from")]
    pub spec: Option<PathBuf>,
    /// With a spec: where the files go (default: beside the spec).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Instead of a spec: a JSON output of `sweep` (records), `lens`, `attention`, or `drop` (an array or
    /// one object per line, one per --from-layer).
    #[arg(long, conflicts_with = "spec", requires_all = ["kind", "out"])]
    pub from: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub kind: Option<crate::export::FigureKind>,
    #[arg(long, value_enum, default_value = "single")]
    pub preset: crate::export::Preset,
    /// Output stem: writes STEM.svg, .pdf, .png, .csv, .json and .spec.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub title: Option<String>,
}

/// `avflow figure SPEC [--out-dir D]` or `avflow figure --from OUTPUT.json --kind K --out STEM`.
pub fn figure_cmd(a: &FigureArgs) -> anyhow::Result<serde_json::Value> {
    let t0 = Instant::now();
    let files = match (&a.spec, &a.from, a.kind, &a.out) {
        (Some(spec), _, _, _) => crate::export::regenerate(spec, a.out_dir.as_deref())?,
        (None, Some(from), Some(kind), Some(out)) => {
            let text = std::fs::read_to_string(from)
                .with_context(|| format!("reading {}", from.display()))?;
            let prov = crate::export::Provenance::default()
                .with_file(from)?
                .with_setting("from", from.display().to_string());
            let (mut spec, data) = crate::export::figure_from_output(kind, &text, a.preset, prov)?;
            spec.title = a.title.clone();
            crate::export::write_figure(&spec, &data, out)?
        }
        _ => bail!("give a spec, or --from FILE --kind KIND --out STEM"),
    };
    Ok(serde_json::json!({"files": files, "seconds": t0.elapsed().as_secs_f64()}))
}
