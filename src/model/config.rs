//! Configuration shared by the families: the Qwen2.5 decoder's settings and the reader every family's
//! `config.json` parser uses (keys in several spellings, errors that name the file and the key).
//!
//! Mirrors the names of transformers' configuration classes. Two spellings exist in the wild: the hub's
//! original files (transformers 4.5x: `rope_theta` + `rope_scaling.mrope_section`, vision `embed_dim`, ...)
//! and transformers-5 (`rope_parameters`, vision `hidden_size` only). Both parse into the same structs.

use std::path::Path;

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
    /// The LM head is the token embedding (`lm_head.weight` absent from the checkpoint), as in the
    /// Qwen2.5-VL-3B base of video-SALMONN 2+ 3B.
    pub tie_word_embeddings: bool,
}

pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

pub(crate) struct Reader<'a> {
    pub path: &'a Path,
    pub section: &'static str,
    pub v: &'a Value,
}

impl<'a> Reader<'a> {
    pub(crate) fn err(&self, reason: String) -> Error {
        Error::Config {
            path: self.path.to_path_buf(),
            reason: format!("{}: {reason}", self.section),
        }
    }
    pub(crate) fn first(&self, keys: &[&str]) -> Option<&'a Value> {
        keys.iter().find_map(|k| get(self.v, k))
    }
    pub(crate) fn usize_opt(&self, keys: &[&str]) -> Result<Option<usize>> {
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
    pub(crate) fn usize_or(&self, keys: &[&str], default: usize) -> Result<usize> {
        Ok(self.usize_opt(keys)?.unwrap_or(default))
    }
    pub(crate) fn usize_req(&self, keys: &[&str]) -> Result<usize> {
        self.usize_opt(keys)?
            .ok_or_else(|| self.err(format!("missing required key `{}`", keys[0])))
    }
    pub(crate) fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        match self.first(keys) {
            None => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| self.err(format!("`{}` must be a number, got {x}", keys[0]))),
        }
    }
    pub(crate) fn str_or(&self, keys: &[&str], default: &str) -> String {
        self.first(keys)
            .and_then(|x| x.as_str())
            .unwrap_or(default)
            .to_string()
    }
    pub(crate) fn bool_or(&self, keys: &[&str], default: bool) -> bool {
        self.first(keys)
            .and_then(|x| x.as_bool())
            .unwrap_or(default)
    }
    pub(crate) fn usize_list(&self, v: Option<&Value>, key: &str) -> Result<Option<Vec<usize>>> {
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
    pub(crate) fn id(&self, keys: &[&str]) -> Result<Option<u32>> {
        match self.first(keys) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(a.first().and_then(|x| x.as_u64()).map(|u| u as u32)),
            Some(x) => x
                .as_u64()
                .map(|u| Some(u as u32))
                .ok_or_else(|| self.err(format!("`{}` must be a token id, got {x}", keys[0]))),
        }
    }
    pub(crate) fn id_req(&self, keys: &[&str]) -> Result<u32> {
        self.id(keys)?
            .ok_or_else(|| self.err(format!("missing token id `{}`", keys[0])))
    }
}

impl TextConfig {
    /// Parses a Qwen2.5 `text_config`; `section` names it in errors.
    pub fn parse(path: &Path, section: &'static str, v: &Value) -> Result<Self> {
        let r = Reader { path, section, v };
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
            tie_word_embeddings: r.bool_or(&["tie_word_embeddings"], false),
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

/// The Qwen2.5-VL vision tower's settings (shared by the families).
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

impl VisionConfig {
    /// Parses a Qwen2.5-VL `vision_config`; `section` names it in errors.
    pub fn parse(path: &Path, section: &'static str, v: &Value) -> Result<Self> {
        let r = Reader { path, section, v };
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
