//! Qwen2.5-Omni checkpoints and prompts for benchmarks: the hub's `config.json` layout of a Thinker with
//! given dimensions, and an audio-visual prompt in the processor's real interleaved layout with random
//! media (all of it from the seed, so the same seed gives the same file).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use crate::error::{Error, Result};
use crate::model::omni::config::ThinkerConfig;
use crate::model::omni::prompt;

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

/// A ~586-token audio-visual prompt as the processor would return it: 8 frames of 168×392 px at 2 fps
/// (4 grids × 84 tokens = 336 video tokens) with 7 s of audio (700 mel frames → 175 tokens), interleaved.
pub fn bench_inputs(
    cfg: &ThinkerConfig,
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
        return Err(Error::Other("token ids exceed the vocabulary".into()));
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
    m.insert("pixel_values_videos".into(), {
        let normal = rand_distr::Normal::new(0f32, 1.0)
            .map_err(|e| Error::Other(format!("bench pixels: {e}")))?;
        let v: Vec<f32> = (0..patches * pd).map(|_| normal.sample(&mut rng)).collect();
        Tensor::from_vec(v, (patches, pd), &dev)?
    });
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
    m.insert("input_features".into(), {
        let bins = cfg.audio.num_mel_bins;
        let v: Vec<f32> = (0..bins * mel)
            .map(|_| rng.random_range(-1f32..1.0))
            .collect();
        Tensor::from_vec(v, (1, bins, mel), &dev)?
    });
    m.insert(
        "feature_attention_mask".into(),
        Tensor::ones((1, mel), DType::I64, &dev)?,
    );
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed decides the whole prompt: ids, pixels and log-mel (benchmarks compare runs on one file).
    #[test]
    fn the_seed_decides_the_whole_prompt() {
        let cfg = ThinkerConfig::qwen25_omni_3b();
        let a = bench_inputs(&cfg, 3, 4, 2.0).expect("prompt");
        let b = bench_inputs(&cfg, 3, 4, 2.0).expect("prompt");
        let c = bench_inputs(&cfg, 4, 4, 2.0).expect("prompt");
        let flat = |m: &HashMap<String, Tensor>, k: &str| -> Vec<f32> {
            m[k].to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect(k)
        };
        for k in ["input_ids", "pixel_values_videos", "input_features"] {
            assert_eq!(flat(&a, k), flat(&b, k), "{k}");
        }
        assert_ne!(
            flat(&a, "pixel_values_videos"),
            flat(&c, "pixel_values_videos")
        );
    }
}
