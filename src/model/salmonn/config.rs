//! video-SALMONN 2+ configuration, read from the checkpoint's own `config.json`: a Qwen2.5-VL config
//! (`model_type` `qwen2_5_vl`, architecture `video_SALMONN2_plus`) with an `audio_config` (Whisper) holding a
//! `qformer_config` (BERT). Mirrors `qwenvl/model/configuration_qwen2_5_vl.py` of bytedance/video-SALMONN-2,
//! including its defaults (every audio and Q-Former dimension a released config leaves out) and its rule that
//! the projection maps to the LLM width whatever `qformer_config.out_hidden_size` says.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::config::{get, Reader, TextConfig, VisionConfig};
use crate::prompt::SpecialTokens;

/// The Whisper encoder (`WhisperConfig`; defaults: Whisper-large-v3).
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperConfig {
    pub num_mel_bins: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub d_model: usize,
    pub activation_function: String,
    /// Encoder frames of one 30-s segment (the input is `2·max_source_positions` mel frames).
    pub max_source_positions: usize,
    /// Seconds one Q-Former window reads (and the stride between windows).
    pub second_per_window: f64,
    pub second_stride: f64,
}

/// The window-level Q-Former (`BertConfig` of the authors' `modeling_bert.py`; defaults as theirs).
#[derive(Debug, Clone, PartialEq)]
pub struct QFormerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// Width of the encoder states the cross-attention reads (Whisper's `d_model`).
    pub encoder_width: usize,
    /// A cross-attention every this many layers.
    pub cross_attention_freq: usize,
    /// Learned queries per window.
    pub query_length: usize,
}

/// Special-token ids of the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIds {
    pub image: u32,
    pub video: u32,
    pub audio: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SalmonnConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub whisper: WhisperConfig,
    pub qformer: QFormerConfig,
    pub tokens: TokenIds,
}

impl SalmonnConfig {
    /// The config when `v` (a parsed `config.json`) is a video-SALMONN 2+ checkpoint (a Qwen2.5-VL config
    /// with an `audio_config`); `None` for anything else.
    pub fn detect(path: &Path, v: &Value) -> Result<Option<Self>> {
        let salmonn_arch = v
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("video_SALMONN2_plus")));
        let vl = v.get("model_type").and_then(|t| t.as_str()) == Some("qwen2_5_vl");
        if !(vl && (salmonn_arch || get(v, "audio_config").is_some())) {
            return Ok(None);
        }
        Self::from_value(path, v).map(Some)
    }

    fn from_value(path: &Path, v: &Value) -> Result<Self> {
        let r = Reader {
            path,
            section: "config",
            v,
        };
        let text = TextConfig::parse(path, "config", v)?;
        let vision_v = get(v, "vision_config").ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            reason: "a video-SALMONN 2+ config needs `vision_config`".into(),
        })?;
        let vision = VisionConfig::parse(path, "vision_config", vision_v)?;
        let empty = Value::Object(Default::default());
        let audio_v = get(v, "audio_config").unwrap_or(&empty);
        let a = Reader {
            path,
            section: "audio_config",
            v: audio_v,
        };
        let whisper = WhisperConfig {
            num_mel_bins: a.usize_or(&["num_mel_bins"], 128)?,
            encoder_layers: a.usize_or(&["encoder_layers"], 32)?,
            encoder_attention_heads: a.usize_or(&["encoder_attention_heads"], 20)?,
            encoder_ffn_dim: a.usize_or(&["encoder_ffn_dim"], 5120)?,
            d_model: a.usize_or(&["d_model"], 1280)?,
            activation_function: a.str_or(&["activation_function"], "gelu"),
            max_source_positions: a.usize_or(&["max_source_positions"], 1500)?,
            second_per_window: a.f64_or(&["second_per_window"], 0.5)?,
            second_stride: a.f64_or(&["second_stride"], 0.5)?,
        };
        let q_v = get(audio_v, "qformer_config").unwrap_or(&empty);
        let q = Reader {
            path,
            section: "audio_config.qformer_config",
            v: q_v,
        };
        let qformer = QFormerConfig {
            hidden_size: q.usize_or(&["hidden_size"], 3072)?,
            num_hidden_layers: q.usize_or(&["num_hidden_layers"], 2)?,
            num_attention_heads: q.usize_or(&["num_attention_heads"], 12)?,
            intermediate_size: q.usize_or(&["intermediate_size"], 12288)?,
            hidden_act: q.str_or(&["hidden_act"], "gelu"),
            layer_norm_eps: q.f64_or(&["layer_norm_eps"], 1e-12)?,
            encoder_width: q.usize_or(&["encoder_width"], 1280)?,
            cross_attention_freq: q.usize_or(&["cross_attention_freq"], 1)?,
            query_length: q.usize_or(&["query_length"], 1)?,
        };
        let tokens = TokenIds {
            image: r.id(&["image_token_id"])?.unwrap_or(151655),
            video: r.id(&["video_token_id"])?.unwrap_or(151656),
            audio: r.id(&["audio_token_id"])?.unwrap_or(151665),
            vision_start: r.id(&["vision_start_token_id"])?.unwrap_or(151652),
            vision_end: r.id(&["vision_end_token_id"])?.unwrap_or(151653),
            bos: r.id(&["bos_token_id"])?,
            eos: r.id(&["eos_token_id"])?,
        };
        let cfg = SalmonnConfig {
            text,
            vision,
            whisper,
            qformer,
            tokens,
        };
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let err = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let (w, q) = (&self.whisper, &self.qformer);
        if w.d_model % w.encoder_attention_heads != 0 || q.hidden_size % q.num_attention_heads != 0
        {
            return Err(err(format!(
                "audio_config: d_model {} and qformer hidden_size {} must divide by their heads ({}, {})",
                w.d_model, q.hidden_size, w.encoder_attention_heads, q.num_attention_heads
            )));
        }
        if q.encoder_width != w.d_model {
            return Err(err(format!(
                "audio_config.qformer_config.encoder_width {} must equal the Whisper d_model {}",
                q.encoder_width, w.d_model
            )));
        }
        if self.vision.out_hidden_size != self.text.hidden_size {
            return Err(err(format!(
                "vision_config.out_hidden_size {} must equal hidden_size {}",
                self.vision.out_hidden_size, self.text.hidden_size
            )));
        }
        if self.window_frames() == 0 || w.max_source_positions % self.window_frames() != 0 {
            return Err(err(format!(
                "audio_config: windows of {} s do not tile the {} frames of a 30-s segment",
                w.second_per_window, w.max_source_positions
            )));
        }
        for id in [
            self.tokens.audio,
            self.tokens.video,
            self.tokens.vision_start,
        ] {
            if id as usize >= self.text.vocab_size {
                return Err(err(format!(
                    "special token id {id} is outside the vocabulary ({})",
                    self.text.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Encoder frames per Q-Former window: `round(max_source_positions · second_per_window / 30)` (25).
    pub fn window_frames(&self) -> usize {
        let w = &self.whisper;
        (w.max_source_positions as f64 * w.second_per_window / 30.0).round() as usize
    }

    /// Audio tokens per 30-s segment (60 with the released windows).
    pub fn tokens_per_segment(&self) -> usize {
        self.whisper.max_source_positions / self.window_frames().max(1) * self.qformer.query_length
    }

    /// The special tokens every prompt of this model is classified with. The chat template's
    /// `<|im_start|>` / `<|im_end|>` are the ids right after `<|endoftext|>` (Qwen2's vocabulary: 151643,
    /// 151644, 151645), the config's `bos_token_id` and `eos_token_id`.
    pub fn special_tokens(&self) -> SpecialTokens {
        let t = &self.tokens;
        SpecialTokens {
            audio: Some(t.audio),
            image: Some(t.image),
            video: Some(t.video),
            markers: vec![t.vision_start, t.vision_end],
            im_start: t.bos.map(|b| b + 1),
            im_end: t.eos,
            user: None,
            stop: t.eos.into_iter().chain(t.bos).collect(),
        }
    }

    /// The released 3B model's dimensions: Qwen2.5-VL-3B (tied head) with Whisper-large-v3 and the
    /// authors' default Q-Former.
    pub fn salmonn_3b() -> Self {
        Self::reference(2048, 11008, 36, 16, 2, 151936, true)
    }

    /// The released 7B model's dimensions.
    pub fn salmonn_7b() -> Self {
        Self::reference(3584, 18944, 28, 28, 4, 152064, false)
    }

    fn reference(
        hidden: usize,
        inter: usize,
        layers: usize,
        heads: usize,
        kv: usize,
        vocab: usize,
        tie: bool,
    ) -> Self {
        SalmonnConfig {
            text: TextConfig {
                vocab_size: vocab,
                hidden_size: hidden,
                intermediate_size: inter,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                num_key_value_heads: kv,
                head_dim: hidden / heads,
                rms_norm_eps: 1e-6,
                rope_theta: 1_000_000.0,
                mrope_section: vec![16, 24, 24],
                hidden_act: "silu".into(),
                tie_word_embeddings: tie,
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
                out_hidden_size: hidden,
                fullatt_block_indexes: vec![7, 15, 23, 31],
                hidden_act: "silu".into(),
                rope_theta: 10000.0,
            },
            whisper: WhisperConfig {
                num_mel_bins: 128,
                encoder_layers: 32,
                encoder_attention_heads: 20,
                encoder_ffn_dim: 5120,
                d_model: 1280,
                activation_function: "gelu".into(),
                max_source_positions: 1500,
                second_per_window: 0.5,
                second_stride: 0.5,
            },
            qformer: QFormerConfig {
                hidden_size: 3072,
                num_hidden_layers: 2,
                num_attention_heads: 12,
                intermediate_size: 12288,
                hidden_act: "gelu".into(),
                layer_norm_eps: 1e-12,
                encoder_width: 1280,
                cross_attention_freq: 1,
                query_length: 1,
            },
            tokens: TokenIds {
                image: 151655,
                video: 151656,
                audio: 151665,
                vision_start: 151652,
                vision_end: 151653,
                bos: Some(151643),
                eos: Some(151645),
            },
        }
    }
}
