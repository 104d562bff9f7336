//! Qwen2.5-Omni configuration, read from the checkpoint's own `config.json` (the full model's
//! `thinker_config`, or a thinker-only file). Mirrors the names of
//! `transformers/models/qwen2_5_omni/configuration_qwen2_5_omni.py`; token ids, rope settings and window
//! sizes always come from here.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::config::{get, Reader, TextConfig, VisionConfig};
use crate::prompt::SpecialTokens;

#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub num_mel_bins: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub d_model: usize,
    pub activation_function: String,
    pub scale_embedding: bool,
    pub max_source_positions: usize,
    pub n_window: usize,
    pub output_dim: usize,
}

/// Special-token ids and TMRoPE timing of the Thinker.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIds {
    pub audio: u32,
    pub image: u32,
    pub video: u32,
    pub audio_start: u32,
    pub audio_end: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub user: Option<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThinkerConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub audio: AudioConfig,
    pub tokens: TokenIds,
    /// TMRoPE temporal ids per second of media (25 for Qwen2.5-Omni).
    pub position_id_per_seconds: f64,
    /// Audio/video interleaving chunk length in seconds (2 for Qwen2.5-Omni).
    pub seconds_per_chunk: f64,
}

#[derive(Deserialize)]
struct RawTop {
    model_type: Option<String>,
    thinker_config: Option<Value>,
}

impl AudioConfig {
    fn parse(path: &Path, v: &Value) -> Result<Self> {
        let r = Reader {
            path,
            section: "thinker_config.audio_config",
            v,
        };
        let cfg = AudioConfig {
            num_mel_bins: r.usize_or(&["num_mel_bins"], 128)?,
            encoder_layers: r.usize_req(&["encoder_layers", "num_hidden_layers"])?,
            encoder_attention_heads: r
                .usize_req(&["encoder_attention_heads", "num_attention_heads"])?,
            encoder_ffn_dim: r.usize_req(&["encoder_ffn_dim", "intermediate_size"])?,
            d_model: r.usize_req(&["d_model", "hidden_size"])?,
            activation_function: r.str_or(&["activation_function"], "gelu"),
            scale_embedding: r.bool_or(&["scale_embedding"], false),
            max_source_positions: r.usize_or(&["max_source_positions"], 1500)?,
            n_window: r.usize_or(&["n_window"], 100)?,
            output_dim: r.usize_req(&["output_dim"])?,
        };
        if cfg.d_model % cfg.encoder_attention_heads != 0
            || cfg.d_model % 2 != 0
            || cfg.n_window == 0
        {
            return Err(r.err(format!(
                "d_model {} must be even and divisible by encoder_attention_heads {}; n_window {} > 0",
                cfg.d_model, cfg.encoder_attention_heads, cfg.n_window
            )));
        }
        Ok(cfg)
    }
}

impl ThinkerConfig {
    /// Parses a Thinker section (the value of `thinker_config`, or a standalone thinker config.json).
    pub fn from_value(path: &Path, t: &Value) -> Result<Self> {
        let r = Reader {
            path,
            section: "thinker_config",
            v: t,
        };
        let section = |k: &str| {
            get(t, k).ok_or_else(|| Error::Config {
                path: path.to_path_buf(),
                reason: format!("thinker_config has no `{k}`"),
            })
        };
        let text_v = section("text_config")?;
        let text = TextConfig::parse(path, "thinker_config.text_config", text_v)?;
        // transformers 5 keeps bos/eos/pad inside text_config only.
        let text_ids = Reader {
            path,
            section: "thinker_config.text_config",
            v: text_v,
        };
        let vision = VisionConfig::parse(
            path,
            "thinker_config.vision_config",
            section("vision_config")?,
        )?;
        let audio = AudioConfig::parse(path, section("audio_config")?)?;
        let tokens = TokenIds {
            audio: r.id_req(&["audio_token_index", "audio_token_id"])?,
            image: r.id_req(&["image_token_index", "image_token_id"])?,
            video: r.id_req(&["video_token_index", "video_token_id"])?,
            audio_start: r.id_req(&["audio_start_token_id"])?,
            audio_end: r.id_req(&["audio_end_token_id"])?,
            vision_start: r.id_req(&["vision_start_token_id"])?,
            vision_end: r.id_req(&["vision_end_token_id"])?,
            user: r.id(&["user_token_id"])?,
            bos: r.id(&["bos_token_id"])?.or(text_ids.id(&["bos_token_id"])?),
            eos: r.id(&["eos_token_id"])?.or(text_ids.id(&["eos_token_id"])?),
            pad: r.id(&["pad_token_id"])?.or(text_ids.id(&["pad_token_id"])?),
        };
        if vision.out_hidden_size != text.hidden_size || audio.output_dim != text.hidden_size {
            return Err(r.err(format!(
                "encoders must project to the decoder width {}: vision.out_hidden_size {}, audio.output_dim {}",
                text.hidden_size, vision.out_hidden_size, audio.output_dim
            )));
        }
        for id in [
            tokens.audio,
            tokens.image,
            tokens.video,
            tokens.audio_start,
            tokens.vision_start,
        ] {
            if id as usize >= text.vocab_size {
                return Err(r.err(format!(
                    "special token id {id} is outside the vocabulary ({})",
                    text.vocab_size
                )));
            }
        }
        Ok(ThinkerConfig {
            text,
            vision,
            audio,
            tokens,
            position_id_per_seconds: r.f64_or(&["position_id_per_seconds"], 25.0)?,
            seconds_per_chunk: r.f64_or(&["seconds_per_chunk"], 2.0)?,
        })
    }

    /// The Thinker's config when `v` (a parsed `config.json`) is a Qwen2.5-Omni checkpoint (full model or
    /// thinker-only); `None` when its `model_type` is another family's.
    pub fn detect(path: &Path, v: &Value) -> Result<Option<Self>> {
        let top: RawTop = serde_json::from_value(v.clone()).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("unexpected layout: {e}"),
        })?;
        match top.model_type.as_deref() {
            Some("qwen2_5_omni") => {
                let t = top.thinker_config.ok_or_else(|| Error::Config {
                    path: path.to_path_buf(),
                    reason: "model_type qwen2_5_omni but no `thinker_config`".into(),
                })?;
                Self::from_value(path, &t).map(Some)
            }
            Some("qwen2_5_omni_thinker") => Self::from_value(path, v).map(Some),
            _ => Ok(None),
        }
    }

    /// Reads a Qwen2.5-Omni `config.json`; another family's is an error.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Self::detect(path, &v)?.ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            reason: "not a Qwen2.5-Omni config (model_type qwen2_5_omni)".into(),
        })
    }

    /// The special tokens every prompt of this model is classified with.
    pub fn special_tokens(&self) -> SpecialTokens {
        let t = &self.tokens;
        SpecialTokens {
            audio: Some(t.audio),
            image: Some(t.image),
            video: Some(t.video),
            markers: vec![t.audio_start, t.audio_end, t.vision_start, t.vision_end],
            im_start: t.bos,
            im_end: t.eos,
            user: t.user,
            stop: t.eos.into_iter().chain(t.pad).collect(),
        }
    }

    /// Real Qwen2.5-Omni-3B Thinker dimensions (used by the benchmark to build a random-weight model).
    pub fn qwen25_omni_3b() -> Self {
        ThinkerConfig {
            text: TextConfig {
                vocab_size: 151936,
                hidden_size: 2048,
                intermediate_size: 11008,
                num_hidden_layers: 36,
                num_attention_heads: 16,
                num_key_value_heads: 2,
                head_dim: 128,
                rms_norm_eps: 1e-6,
                rope_theta: 1_000_000.0,
                mrope_section: vec![16, 24, 24],
                hidden_act: "silu".into(),
                tie_word_embeddings: false,
            },
            vision: VisionConfig {
                depth: 32,
                hidden_size: 1280,
                intermediate_size: 3420,
                num_heads: 16,
                in_channels: 3,
                patch_size: 14,
                temporal_patch_size: 2,
                spatial_merge_size: 2,
                window_size: 112,
                out_hidden_size: 2048,
                fullatt_block_indexes: vec![7, 15, 23, 31],
                hidden_act: "silu".into(),
                rope_theta: 10000.0,
            },
            audio: AudioConfig {
                num_mel_bins: 128,
                encoder_layers: 32,
                encoder_attention_heads: 20,
                encoder_ffn_dim: 5120,
                d_model: 1280,
                activation_function: "gelu".into(),
                scale_embedding: false,
                max_source_positions: 1500,
                n_window: 100,
                output_dim: 2048,
            },
            tokens: TokenIds {
                audio: 151646,
                image: 151655,
                video: 151656,
                audio_start: 151647,
                audio_end: 151648,
                vision_start: 151652,
                vision_end: 151653,
                user: Some(872),
                bos: Some(151644),
                eos: Some(151645),
                pad: Some(151643),
            },
            position_id_per_seconds: 25.0,
            seconds_per_chunk: 2.0,
        }
    }

    /// Real Qwen2.5-Omni-7B Thinker dimensions: the 3B's encoders projecting to the wider decoder.
    pub fn qwen25_omni_7b() -> Self {
        let mut c = Self::qwen25_omni_3b();
        c.text = TextConfig {
            vocab_size: 152064,
            hidden_size: 3584,
            intermediate_size: 18944,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            ..c.text
        };
        c.vision.out_hidden_size = 3584;
        c.audio.output_dim = 3584;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_mrope_section() {
        let mut v = serde_json::json!({
            "model_type": "qwen2_5_omni_thinker",
            "audio_token_index": 1, "image_token_index": 2, "video_token_index": 3,
            "audio_start_token_id": 4, "audio_end_token_id": 5, "vision_start_token_id": 6, "vision_end_token_id": 7,
            "text_config": {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2,
                            "rope_scaling": {"mrope_section": [2, 3, 3]}},
            "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64},
            "audio_config": {"encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 64, "d_model": 32, "output_dim": 64}
        });
        let ok = ThinkerConfig::detect(Path::new("c.json"), &v)
            .unwrap()
            .unwrap();
        assert_eq!(ok.text.head_dim, 16);
        assert_eq!(ok.text.mrope_section, vec![2, 3, 3]);
        v["text_config"]["rope_scaling"]["mrope_section"] = serde_json::json!([2, 3, 4]);
        let e = ThinkerConfig::detect(Path::new("c.json"), &v).unwrap_err();
        assert!(e.to_string().contains("mrope_section"), "{e}");
    }
}
