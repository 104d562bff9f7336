//! Qwen2.5-Omni configuration, read from the checkpoint's own `config.json`.
//!
//! Mirrors the names of `transformers/models/qwen2_5_omni/configuration_qwen2_5_omni.py`. Two spellings exist
//! in the wild: the hub's original files (transformers 4.5x: `rope_theta` + `rope_scaling.mrope_section`,
//! vision `embed_dim`, ...) and transformers-5 (`rope_parameters`, vision `hidden_size` only). Both parse
//! into the same resolved structs. Token ids, rope settings and window sizes always come from here.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The Qwen2.5 decoder (shared by Qwen2.5-Omni and video-SALMONN 2+).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Split of the rotary half-dimension between (temporal, height, width); sums to `head_dim / 2`.
    pub mrope_section: Vec<usize>,
    pub hidden_act: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub window_size: usize,
    pub out_hidden_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub hidden_act: String,
    pub rope_theta: f64,
}

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

/// Model families the loader recognises. Only the Omni Thinker runs today; the seam is kept visible so the
/// flow engine sees a decoder, an embedded sequence and a token map, never a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen25Omni,
}

#[derive(Deserialize)]
struct RawTop {
    model_type: Option<String>,
    thinker_config: Option<Value>,
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

struct Reader<'a> {
    path: &'a Path,
    section: &'static str,
    v: &'a Value,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: String) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            reason: format!("{}: {reason}", self.section),
        }
    }
    fn first(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter().find_map(|k| get(self.v, k))
    }
    fn usize_opt(&self, keys: &[&str]) -> Result<Option<usize>> {
        match self.first(keys) {
            None => Ok(None),
            Some(x) => x.as_u64().map(|u| Some(u as usize)).ok_or_else(|| {
                self.err(format!(
                    "`{}` must be a non-negative integer, got {x}",
                    keys[0]
                ))
            }),
        }
    }
    fn usize_or(&self, keys: &[&str], default: usize) -> Result<usize> {
        Ok(self.usize_opt(keys)?.unwrap_or(default))
    }
    fn usize_req(&self, keys: &[&str]) -> Result<usize> {
        self.usize_opt(keys)?
            .ok_or_else(|| self.err(format!("missing required key `{}`", keys[0])))
    }
    fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        match self.first(keys) {
            None => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| self.err(format!("`{}` must be a number, got {x}", keys[0]))),
        }
    }
    fn str_or(&self, keys: &[&str], default: &str) -> String {
        self.first(keys)
            .and_then(|x| x.as_str())
            .unwrap_or(default)
            .to_string()
    }
    fn bool_or(&self, keys: &[&str], default: bool) -> bool {
        self.first(keys)
            .and_then(|x| x.as_bool())
            .unwrap_or(default)
    }
    fn usize_list(&self, v: Option<&Value>, key: &str) -> Result<Option<Vec<usize>>> {
        match v {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|u| u as usize)
                        .ok_or_else(|| self.err(format!("`{key}` must list integers")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.err(format!("`{key}` must be a list, got {other}"))),
        }
    }
    fn id(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.first(keys) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(a.first().and_then(|x| x.as_u64()).map(|u| u as u32)),
            Some(x) => x
                .as_u64()
                .map(|u| Some(u as u32))
                .ok_or_else(|| self.err(format!("`{}` must be a token id, got {x}", keys[0]))),
        }
    }
    fn id_req(&self, keys: &[&str]) -> Result<u32> {
        self.id(keys)?
            .ok_or_else(|| self.err(format!("missing token id `{}`", keys[0])))
    }
}

impl TextConfig {
    fn parse(path: &Path, v: &Value) -> Result<Self> {
        let r = Reader {
            path,
            section: "thinker_config.text_config",
            v,
        };
        let hidden_size = r.usize_req(&["hidden_size"])?;
        let num_attention_heads = r.usize_req(&["num_attention_heads"])?;
        let num_key_value_heads = r.usize_or(&["num_key_value_heads"], num_attention_heads)?;
        let head_dim = r.usize_or(&["head_dim"], hidden_size / num_attention_heads.max(1))?;
        // transformers 5: rope_parameters {rope_theta, mrope_section}; hub files: rope_theta + rope_scaling.
        let rope_params = get(v, "rope_parameters");
        let rope_scaling = get(v, "rope_scaling");
        let rope_theta = match rope_params.and_then(|p| get(p, "rope_theta")) {
            Some(t) => t
                .as_f64()
                .ok_or_else(|| r.err("rope_parameters.rope_theta must be a number".into()))?,
            None => r.f64_or(&["rope_theta"], 10000.0)?,
        };
        let section = rope_params
            .and_then(|p| get(p, "mrope_section"))
            .or_else(|| rope_scaling.and_then(|p| get(p, "mrope_section")));
        let mrope_section = r
            .usize_list(section, "mrope_section")?
            .unwrap_or_else(|| vec![16, 24, 24]);
        let cfg = TextConfig {
            vocab_size: r.usize_req(&["vocab_size"])?,
            hidden_size,
            intermediate_size: r.usize_req(&["intermediate_size"])?,
            num_hidden_layers: r.usize_req(&["num_hidden_layers"])?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: r.f64_or(&["rms_norm_eps"], 1e-6)?,
            rope_theta,
            mrope_section,
            hidden_act: r.str_or(&["hidden_act"], "silu"),
        };
        if cfg.num_attention_heads % cfg.num_key_value_heads.max(1) != 0
            || cfg.num_key_value_heads == 0
        {
            return Err(r.err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                cfg.num_attention_heads, cfg.num_key_value_heads
            )));
        }
        let half: usize = cfg.mrope_section.iter().sum();
        if cfg.mrope_section.len() != 3 || half * 2 != cfg.head_dim {
            return Err(r.err(format!(
                "mrope_section {:?} must have 3 parts summing to head_dim/2 = {}",
                cfg.mrope_section,
                cfg.head_dim / 2
            )));
        }
        Ok(cfg)
    }
}

impl VisionConfig {
    fn parse(path: &Path, v: &Value) -> Result<Self> {
        let r = Reader {
            path,
            section: "thinker_config.vision_config",
            v,
        };
        // Qwen2.5 vision: `hidden_size` is the ViT width; the hub file repeats it as `embed_dim`.
        let hidden_size = r.usize_req(&["hidden_size", "embed_dim"])?;
        let rope_theta = match get(v, "rope_parameters").and_then(|p| get(p, "rope_theta")) {
            Some(t) => t.as_f64().unwrap_or(10000.0),
            None => 10000.0,
        };
        let fullatt = r
            .usize_list(get(v, "fullatt_block_indexes"), "fullatt_block_indexes")?
            .unwrap_or_else(|| vec![7, 15, 23, 31]);
        let cfg = VisionConfig {
            depth: r.usize_req(&["depth", "num_hidden_layers"])?,
            hidden_size,
            intermediate_size: r.usize_req(&["intermediate_size"])?,
            num_heads: r.usize_req(&["num_heads", "num_attention_heads"])?,
            in_channels: r.usize_or(&["in_channels", "in_chans"], 3)?,
            patch_size: r.usize_or(&["patch_size", "spatial_patch_size"], 14)?,
            temporal_patch_size: r.usize_or(&["temporal_patch_size"], 2)?,
            spatial_merge_size: r.usize_or(&["spatial_merge_size"], 2)?,
            window_size: r.usize_or(&["window_size"], 112)?,
            out_hidden_size: r.usize_req(&["out_hidden_size"])?,
            fullatt_block_indexes: fullatt,
            hidden_act: r.str_or(&["hidden_act"], "silu"),
            rope_theta,
        };
        if cfg.hidden_size % cfg.num_heads != 0 {
            return Err(r.err(format!(
                "hidden_size {} not divisible by num_heads {}",
                cfg.hidden_size, cfg.num_heads
            )));
        }
        let unit = cfg.spatial_merge_size * cfg.patch_size;
        if cfg.window_size < unit || cfg.window_size % unit != 0 {
            return Err(r.err(format!(
                "window_size {} must be a multiple of spatial_merge_size*patch_size = {unit}",
                cfg.window_size
            )));
        }
        Ok(cfg)
    }
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
        let text = TextConfig::parse(path, text_v)?;
        // transformers 5 keeps bos/eos/pad inside text_config only.
        let text_ids = Reader {
            path,
            section: "thinker_config.text_config",
            v: text_v,
        };
        let vision = VisionConfig::parse(path, section("vision_config")?)?;
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

    /// Reads `config.json` of a Qwen2.5-Omni checkpoint (full model or thinker-only).
    pub fn from_file(path: &Path) -> Result<(Family, Self)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::from_json_str(path, &text)
    }

    pub fn from_json_str(path: &Path, text: &str) -> Result<(Family, Self)> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
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
                Ok((Family::Qwen25Omni, Self::from_value(path, &t)?))
            }
            Some("qwen2_5_omni_thinker") => Ok((Family::Qwen25Omni, Self::from_value(path, &v)?)),
            other => Err(Error::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "unknown model_type {:?}: avflow reads Qwen2.5-Omni checkpoints (model_type \"qwen2_5_omni\", e.g. Qwen/Qwen2.5-Omni-3B); video-SALMONN 2+ support is planned",
                    other.unwrap_or("<missing>")
                ),
            }),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_model_type() {
        let e =
            ThinkerConfig::from_json_str(Path::new("x/config.json"), r#"{"model_type":"llama"}"#)
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("unknown model_type") && e.contains("llama") && e.contains("x/config.json"),
            "{e}"
        );
    }

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
        let ok = ThinkerConfig::from_json_str(Path::new("c.json"), &v.to_string())
            .unwrap()
            .1;
        assert_eq!(ok.text.head_dim, 16);
        assert_eq!(ok.text.mrope_section, vec![2, 3, 3]);
        v["text_config"]["rope_scaling"]["mrope_section"] = serde_json::json!([2, 3, 4]);
        let e = ThinkerConfig::from_json_str(Path::new("c.json"), &v.to_string()).unwrap_err();
        assert!(e.to_string().contains("mrope_section"), "{e}");
    }
}
