//! video-SALMONN 2+ checkpoints and prompts for benchmarks: the `config.json` the authors' `save_pretrained`
//! writes for given dimensions, and an audio-visual prompt in their dataset code's interleaved layout with
//! random media from a seed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use crate::error::{Error, Result};
use crate::model::salmonn::config::SalmonnConfig;

pub fn hub_config_json(cfg: &SalmonnConfig) -> serde_json::Value {
    let (t, v, w, q, k) = (
        &cfg.text,
        &cfg.vision,
        &cfg.whisper,
        &cfg.qformer,
        &cfg.tokens,
    );
    let vision = serde_json::json!({
        "model_type": "qwen2_5_vl", "depth": v.depth, "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size, "num_heads": v.num_heads, "in_channels": v.in_channels,
        "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
        "spatial_merge_size": v.spatial_merge_size, "window_size": v.window_size,
        "out_hidden_size": v.out_hidden_size, "fullatt_block_indexes": v.fullatt_block_indexes,
        "hidden_act": v.hidden_act, "tokens_per_second": 2
    });
    let qformer = serde_json::json!({
        "model_type": "bert", "hidden_size": q.hidden_size, "num_hidden_layers": q.num_hidden_layers,
        "num_attention_heads": q.num_attention_heads, "intermediate_size": q.intermediate_size,
        "hidden_act": q.hidden_act, "layer_norm_eps": q.layer_norm_eps, "encoder_width": q.encoder_width,
        "cross_attention_freq": q.cross_attention_freq, "query_length": q.query_length,
        "add_cross_attention": true, "out_hidden_size": t.hidden_size
    });
    let audio = serde_json::json!({
        "model_type": "whisper", "num_mel_bins": w.num_mel_bins, "encoder_layers": w.encoder_layers,
        "encoder_attention_heads": w.encoder_attention_heads, "encoder_ffn_dim": w.encoder_ffn_dim,
        "d_model": w.d_model, "activation_function": w.activation_function,
        "max_source_positions": w.max_source_positions, "second_per_window": w.second_per_window,
        "second_stride": w.second_stride, "qformer_config": qformer
    });
    let mut c = serde_json::json!({
        "architectures": ["video_SALMONN2_plus"],
        "model_type": "qwen2_5_vl",
        "torch_dtype": "bfloat16",
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads, "hidden_act": t.hidden_act, "rms_norm_eps": t.rms_norm_eps,
        "rope_theta": t.rope_theta, "rope_scaling": {"type": "mrope", "mrope_section": t.mrope_section},
        "tie_word_embeddings": t.tie_word_embeddings, "max_position_embeddings": 128000,
        "use_sliding_window": false, "sliding_window": 32768
    });
    let ids = serde_json::json!({
        "bos_token_id": k.bos, "eos_token_id": k.eos,
        "image_token_id": k.image, "video_token_id": k.video, "audio_token_id": k.audio,
        "vision_start_token_id": k.vision_start, "vision_end_token_id": k.vision_end
    });
    if let (Some(c), Some(ids)) = (c.as_object_mut(), ids.as_object()) {
        c.extend(ids.clone());
        c.insert("vision_config".into(), vision);
        c.insert("audio_config".into(), audio);
    }
    c
}

/// An audio-visual prompt as the authors' dataset code lays it out: system and user turns, then
/// `<|vision_start|>`, per temporal grid step its 84 video tokens (12×28 patches merged 2×2) and its share of
/// the audio tokens (`f(k+1) − f(k)` with `f(k) = int(k·s·2)`, the last step the remainder),
/// `<|vision_end|>`, a question and the assistant header. `frames` at 2 fps (`s` = 1 s per step);
/// the sound is `ceil(audio_seconds / 30)` 30-s segments of 60 tokens each.
pub fn bench_inputs(
    cfg: &SalmonnConfig,
    seed: u64,
    frames: usize,
    audio_seconds: f64,
) -> Result<HashMap<String, Tensor>> {
    if frames < 2 || frames % 2 != 0 || audio_seconds <= 0.1 {
        return Err(Error::Other(
            "--frames must be even and ≥ 2, --audio-seconds > 0.1".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tk = &cfg.tokens;
    let text_vocab = tk.bos.unwrap_or(151643).min(cfg.text.vocab_size as u32);
    let (im_start, im_end, nl) = (
        tk.bos.map_or(151644, |b| b + 1),
        tk.eos.unwrap_or(151645),
        198u32,
    );
    let grid = [frames / 2, 12, 28];
    let per_step = grid[1] * grid[2] / 4;
    let segments = (audio_seconds / 30.0).ceil() as usize;
    let audio_tokens = segments * cfg.tokens_per_segment();
    let second = 1.0f64;
    let f = |k: usize| ((k as f32) * (second as f32) * 2.0) as usize;
    let mut ids = vec![im_start, 8948, nl];
    ids.extend((0..5).map(|_| rng.random_range(0..text_vocab)));
    ids.extend([im_end, nl, im_start, 872, nl, tk.vision_start]);
    for k in 0..grid[0] {
        let count = if k + 1 == grid[0] {
            audio_tokens.saturating_sub(f(k))
        } else {
            f(k + 1) - f(k)
        };
        ids.extend(std::iter::repeat_n(tk.video, per_step));
        ids.extend(std::iter::repeat_n(tk.audio, count));
    }
    ids.extend([tk.vision_end, nl]);
    ids.extend((0..20).map(|_| rng.random_range(0..text_vocab)));
    ids.extend([im_end, nl, im_start, 77091, nl]);
    if ids.iter().any(|&i| i as usize >= cfg.text.vocab_size) {
        return Err(Error::Other("token ids exceed the vocabulary".into()));
    }
    let dev = Device::Cpu;
    let n = ids.len();
    let patches = grid[0] * grid[1] * grid[2];
    let v = &cfg.vision;
    let pd = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size;
    let normal = rand_distr::Normal::new(0f32, 1.0)
        .map_err(|e| Error::Other(format!("bench pixels: {e}")))?;
    let pixels: Vec<f32> = (0..patches * pd).map(|_| normal.sample(&mut rng)).collect();
    let mel_frames = 2 * cfg.whisper.max_source_positions;
    let bins = cfg.whisper.num_mel_bins;
    let mel: Vec<f32> = (0..segments * bins * mel_frames)
        .map(|_| rng.random_range(-1f32..1.0))
        .collect();
    let mut m = HashMap::new();
    let ids_i64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    m.insert("input_ids".into(), Tensor::from_vec(ids_i64, (1, n), &dev)?);
    m.insert(
        "attention_mask".into(),
        Tensor::ones((1, n), DType::I64, &dev)?,
    );
    m.insert(
        "pixel_values_videos".into(),
        Tensor::from_vec(pixels, (patches, pd), &dev)?,
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
        "second_per_grid_ts".into(),
        Tensor::new(&[second as f32], &dev)?,
    );
    m.insert(
        "audio_feature".into(),
        Tensor::from_vec(mel, (segments, bins, mel_frames), &dev)?,
    );
    m.insert(
        "audio_lengths".into(),
        Tensor::new(&[audio_tokens as i64], &dev)?,
    );
    Ok(m)
}
