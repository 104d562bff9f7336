//! Qwen2.5-Omni Thinker: audio tower + vision tower + placeholder replacement + TMRoPE + the Qwen2.5
//! decoder. Port of `Qwen2_5OmniThinkerForConditionalGeneration` (eager, no generation state):
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! The Thinker turns processor inputs into an [`Embedded`] sequence (embeddings + position ids); from
//! there everything runs through [`Decoder`], which is all the flow engine sees.

pub mod audio;
pub mod inputs;
pub mod prompt;
pub mod rope_index;
pub mod vision;
pub mod weights;

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::config::ThinkerConfig;
use crate::model::decoder::{index_tensor, Decoder, PositionIds};
use crate::model::loader::ResolvedModel;

pub use audio::AudioEncoder;
pub use inputs::OmniInputs;
pub use vision::VisionEncoder;

/// A prompt ready for the decoder.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub input_ids: Vec<u32>,
    /// `[seq, hidden]` in the model dtype, media placeholders replaced by encoder outputs.
    pub embeds: Tensor,
    pub position_ids: PositionIds,
    /// `max(position) + 1 − seq`: the offset generation continues from.
    pub rope_delta: i64,
    pub use_audio_in_video: bool,
    pub audio_embeds: Option<Tensor>,
    pub video_embeds: Option<Tensor>,
    pub image_embeds: Option<Tensor>,
    pub timings: EncodeTimings,
}

#[derive(Debug, Clone, Default)]
pub struct EncodeTimings {
    pub audio: Duration,
    pub vision: Duration,
}

#[derive(Debug, Clone)]
pub struct OmniThinker {
    pub cfg: ThinkerConfig,
    pub audio: AudioEncoder,
    pub vision: VisionEncoder,
    pub decoder: Decoder,
}

impl OmniThinker {
    /// `vb` rooted at the Thinker (keys `model.*`, `lm_head.*`, `visual.*`, `audio_tower.*`).
    pub fn new(cfg: &ThinkerConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            audio: AudioEncoder::new(&cfg.audio, vb.pp("audio_tower"))?,
            vision: VisionEncoder::new(&cfg.vision, vb.pp("visual"))?,
            decoder: Decoder::new(&cfg.text, vb)?,
        })
    }

    /// Loads the Thinker of a resolved checkpoint; a weight that does not match the config is reported
    /// with the folder and the fix.
    pub fn load(model: &ResolvedModel, dtype: DType, device: &Device) -> Result<Self> {
        model.check_expected(&weights::thinker_tensors(&model.config))?;
        let vb = model.var_builder(dtype, device)?;
        Self::new(&model.config, vb).map_err(|e| match e {
            Error::Candle(c) => Error::Weights {
                path: model.dir.clone(),
                reason: format!("weights do not match {}: {c}", model.config_path.display()),
                fix: "config.json and the *.safetensors files must come from the same checkpoint; re-download it".into(),
            },
            other => other,
        })
    }

    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    pub fn dtype(&self) -> DType {
        self.decoder.dtype()
    }

    /// Runs the encoders, replaces placeholders and computes TMRoPE position ids.
    pub fn embed(&self, inp: &OmniInputs) -> Result<Embedded> {
        let tk = &self.cfg.tokens;
        let ids = &inp.input_ids;
        let count = |tok: u32| ids.iter().filter(|&&t| t == tok).count();
        let (n_audio, n_image, n_video) = (count(tk.audio), count(tk.image), count(tk.video));
        let mut timings = EncodeTimings::default();

        let audio_embeds = match &inp.audio_features {
            Some(f) => {
                let t0 = Instant::now();
                let a = self
                    .audio
                    .forward(&f.to_device(self.device())?, &inp.audio_lens)?;
                // GPU kernels run asynchronously: wait for them so the timing is the tower's.
                self.device().synchronize()?;
                timings.audio = t0.elapsed();
                Some(a)
            }
            None => None,
        };
        let t0 = Instant::now();
        let image_embeds = match &inp.pixel_values {
            Some(p) => Some(
                self.vision
                    .forward(&p.to_device(self.device())?, &inp.image_grid_thw)?,
            ),
            None => None,
        };
        let video_embeds = match &inp.pixel_values_videos {
            Some(p) => Some(
                self.vision
                    .forward(&p.to_device(self.device())?, &inp.video_grid_thw)?,
            ),
            None => None,
        };
        self.device().synchronize()?;
        timings.vision = t0.elapsed();

        let rows = |t: &Option<Tensor>| t.as_ref().map_or(Ok(0), |t| t.dim(0));
        for (what, placeholders, feats) in [
            ("audio", n_audio, rows(&audio_embeds)?),
            ("image", n_image, rows(&image_embeds)?),
            ("video", n_video, rows(&video_embeds)?),
        ] {
            if placeholders != feats {
                return Err(Error::Prompt(format!(
                    "{placeholders} {what} placeholder tokens but the {what} inputs give {feats} embeddings; \
                     the input_ids and the media tensors must come from the same processor call"
                )));
            }
        }

        // One gather: rows 0..seq are the token embeddings, then audio, image, video features.
        let text = self.decoder.embed(ids)?;
        let seq = ids.len();
        let mut sources = vec![text];
        let mut next = [seq, 0, 0];
        for (slot, t) in [&audio_embeds, &image_embeds, &video_embeds]
            .into_iter()
            .enumerate()
        {
            let start = sources.iter().map(|s| s.dim(0).unwrap_or(0)).sum::<usize>();
            next[slot] = start;
            if let Some(t) = t {
                sources.push(t.to_dtype(self.dtype())?);
            }
        }
        let (mut a, mut i, mut v) = (next[0], next[1], next[2]);
        let gather: Vec<usize> = ids
            .iter()
            .enumerate()
            .map(|(p, &t)| {
                if t == tk.audio {
                    a += 1;
                    a - 1
                } else if t == tk.image {
                    i += 1;
                    i - 1
                } else if t == tk.video {
                    v += 1;
                    v - 1
                } else {
                    p
                }
            })
            .collect();
        let all = Tensor::cat(&sources, 0)?;
        let embeds = all.index_select(&index_tensor(&gather, self.device())?, 0)?;

        let use_audio_in_video = rope_index::detects_audio_in_video(ids, &self.cfg);
        let (position_ids, rope_delta) = rope_index::rope_index(
            ids,
            &self.cfg,
            &rope_index::RopeInputs {
                image_grids: &inp.image_grid_thw,
                video_grids: &inp.video_grid_thw,
                second_per_grid: &inp.video_second_per_grid,
                audio_lens: &inp.audio_lens,
                use_audio_in_video,
            },
        )?;
        Ok(Embedded {
            input_ids: ids.clone(),
            embeds,
            position_ids,
            rope_delta,
            use_audio_in_video,
            audio_embeds,
            video_embeds,
            image_embeds,
            timings,
        })
    }

    /// Full forward: logits (f32) at the requested positions (all when `rows` is `None`).
    pub fn logits(&self, e: &Embedded, rows: Option<&[usize]>) -> Result<Tensor> {
        let rot = self.decoder.rotary(&e.position_ids)?;
        let normed = self.decoder.forward(&e.embeds, &rot, &mut |_, _| Ok(()))?;
        let normed = match rows {
            Some(r) => normed.index_select(&index_tensor(r, self.device())?, 0)?,
            None => normed,
        };
        self.decoder.logits(&normed)
    }
}

/// Position ids as an i64 tensor `[3, seq]` (transformers' layout without the batch dim).
pub fn position_ids_tensor(pos: &PositionIds, device: &Device) -> Result<Tensor> {
    let n = pos.len();
    let mut v = Vec::with_capacity(3 * n);
    for k in 0..3 {
        v.extend(pos.iter().map(|p| p[k]));
    }
    Ok(Tensor::from_vec(v, (3, n), device)?)
}
