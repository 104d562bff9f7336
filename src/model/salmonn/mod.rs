//! video-SALMONN 2+ (3B, 7B): Qwen2.5-VL (decoder with multimodal rotary, the Qwen2.5-VL vision tower) plus
//! an audio branch (Whisper-large-v3's encoder, a window-level Q-Former, a projection): 2 audio tokens per
//! second, interleaved with the video per temporal grid step. Port of `video_SALMONN2_plus`
//! (`qwenvl/model/modeling_qwen2_5_vl.py` of bytedance/video-SALMONN-2):
//! <https://github.com/bytedance/video-SALMONN-2/tree/main/video_SALMONN2_plus>
//!
//! [`SalmonnArch`] is the family's [`Architecture`], [`SalmonnModel`] its [`AvModel`]. Both position
//! numberings of the authors' code are offered ([`Positions`]; see `rope`).

pub mod audio;
pub mod bench;
pub mod config;
pub mod inputs;
pub mod processor;
pub mod rope;
pub mod token_map;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::media::prepare::{Item, PrepareOptions, Prepared};
use crate::media::preview::{patches_by_grid, ImageView, MediaViews, MelView, VideoView};
use crate::model::decoder::{index_tensor, Decoder};
use crate::model::loader::ResolvedModel;
use crate::model::vision::VisionEncoder;
use crate::model::{
    Architecture, AvModel, Embedded, EncodeTimings, FamilyEntry, LoadOptions, Positions, Prompt,
    TextConfig,
};
use crate::prompt::SpecialTokens;

use audio::AudioBranch;
use config::SalmonnConfig;
use inputs::SalmonnInputs;

/// The registry entry ([`crate::model::FAMILIES`]). Its checkpoints say `model_type: qwen2_5_vl`, shared
/// with plain Qwen2.5-VL; the architecture name (and the `audio_config`) tells them apart.
pub const FAMILY: FamilyEntry = FamilyEntry {
    id: "video_salmonn2_plus",
    name: "video-SALMONN 2+",
    detect: |path, v| {
        Ok(SalmonnConfig::detect(path, v)?
            .map(|cfg| Arc::new(SalmonnArch { cfg }) as Arc<dyn Architecture>))
    },
    sizes: &["3b", "7b"],
    reference: |size| {
        let cfg = match size {
            "3b" => SalmonnConfig::salmonn_3b(),
            "7b" => SalmonnConfig::salmonn_7b(),
            _ => return None,
        };
        Some(Arc::new(SalmonnArch { cfg }) as Arc<dyn Architecture>)
    },
};

/// A video-SALMONN 2+ checkpoint as its config describes it.
#[derive(Debug, Clone)]
pub struct SalmonnArch {
    pub cfg: SalmonnConfig,
}

/// The SALMONN tensors of a prompt this family read.
fn inputs_of(prompt: &Prompt) -> Result<&SalmonnInputs> {
    prompt
        .inputs::<SalmonnInputs>()
        .ok_or_else(|| Error::Inputs {
            path: prompt.source.clone(),
            reason: "was read for another model family".into(),
        })
}

impl Architecture for SalmonnArch {
    fn family(&self) -> &'static str {
        FAMILY.id
    }

    fn position_numberings(&self) -> &'static [Positions] {
        &[Positions::Inference, Positions::Training]
    }

    fn text(&self) -> &TextConfig {
        &self.cfg.text
    }

    fn special_tokens(&self) -> SpecialTokens {
        self.cfg.special_tokens()
    }

    fn weight_prefix(&self) -> &'static str {
        ""
    }

    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        weights::salmonn_tensors(&self.cfg)
    }

    fn checkpoint_hint(&self) -> String {
        "use a released video-SALMONN 2+ checkpoint (tsinghua-ee/video-SALMONN2_plus_3B_full or _7B_full: keys \
         model.*, visual.*, audio.*)"
            .into()
    }

    fn load(&self, model: &ResolvedModel, opts: &LoadOptions) -> Result<Box<dyn AvModel>> {
        let vb = model.var_builder(opts.dtype, &opts.device)?;
        let cfg = &self.cfg;
        Ok(Box::new(SalmonnModel {
            arch: Arc::new(self.clone()),
            cfg: cfg.clone(),
            audio: AudioBranch::new(cfg, vb.pp("audio"))?,
            vision: VisionEncoder::new(&cfg.vision, vb.pp("visual"))?,
            decoder: Decoder::new(&cfg.text, vb)?,
            positions: opts.positions,
        }))
    }

    fn prompt_from_tensors(
        &self,
        source: &Path,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Prompt> {
        let inp = SalmonnInputs::from_map(source, tensors)?;
        let map = token_map::build(
            &inp.input_ids,
            &self.cfg,
            &inp.video_grid_thw,
            &inp.second_per_grid_ts,
            &inp.image_grid_thw,
        );
        Ok(Prompt::new(
            source.to_path_buf(),
            inp.input_ids.clone(),
            map,
            inp,
        ))
    }

    fn prepare(
        &self,
        model_dir: &Path,
        items: &[Item],
        question: &str,
        opts: &PrepareOptions,
        device: &Device,
    ) -> Result<Prepared> {
        processor::prepare(model_dir, &self.cfg, items, question, opts, device)
    }

    /// `video_SALMONN2_plus.generate` runs with the checkpoint's `generation_config.json` (the released
    /// models inherit Qwen2.5-VL's `repetition_penalty` 1.05).
    fn repetition_penalty(&self, dir: &Path) -> f32 {
        crate::model::generation_config_penalty(dir)
    }

    fn default_fps(&self) -> f64 {
        1.0 / processor::BASE_INTERVAL
    }

    fn media_views(&self, prompt: &Prompt) -> Result<MediaViews> {
        let inp = inputs_of(prompt)?;
        let videos = patches_by_grid(inp.pixel_values_videos.as_ref(), &inp.video_grid_thw)?
            .into_iter()
            .zip(&inp.second_per_grid_ts)
            .map(|((grid, patches), &s)| VideoView {
                grid,
                second_per_grid: s,
                patches,
            })
            .collect();
        let images = patches_by_grid(inp.pixel_values.as_ref(), &inp.image_grid_thw)?
            .into_iter()
            .map(|(grid, patches)| ImageView { grid, patches })
            .collect();
        // Each audio item's 30-s segments side by side: `[mel_bins, segments · frames]`.
        let mut audio = Vec::new();
        if let Some(f) = &inp.audio_feature {
            let (segments, _bins, frames) = f.dims3()?;
            let per = self.cfg.tokens_per_segment().max(1);
            let lens: Vec<usize> = if inp.audio_lengths.is_empty() {
                vec![segments]
            } else {
                inp.audio_lengths.iter().map(|&a| a.div_ceil(per)).collect()
            };
            let mut first = 0;
            for n in lens {
                let n = n.min(segments.saturating_sub(first));
                let part = f.narrow(0, first, n)?; // [n, bins, frames]
                let values = part
                    .permute((1, 0, 2))?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1()?;
                audio.push(MelView {
                    values,
                    frames: n * frames,
                });
                first += n;
            }
        }
        Ok(MediaViews {
            videos,
            images,
            audio,
        })
    }

    fn hub_config(&self) -> serde_json::Value {
        bench::hub_config_json(&self.cfg)
    }

    fn with_layers(&self, layers: usize) -> Arc<dyn Architecture> {
        let mut cfg = self.cfg.clone();
        cfg.text.num_hidden_layers = layers;
        Arc::new(SalmonnArch { cfg })
    }

    fn bench_inputs(
        &self,
        seed: u64,
        frames: usize,
        audio_seconds: f64,
    ) -> Result<HashMap<String, Tensor>> {
        bench::bench_inputs(&self.cfg, seed, frames, audio_seconds)
    }
}

/// The loaded model.
pub struct SalmonnModel {
    arch: Arc<dyn Architecture>,
    cfg: SalmonnConfig,
    audio: AudioBranch,
    vision: VisionEncoder,
    decoder: Decoder,
    positions: Positions,
}

impl SalmonnModel {
    fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// Encoders, placeholder replacement (in sequence order, by placeholder id) and position ids.
    pub fn embed_inputs(&self, inp: &SalmonnInputs) -> Result<Embedded> {
        let tk = &self.cfg.tokens;
        let ids = &inp.input_ids;
        let count = |tok: u32| ids.iter().filter(|&&t| t == tok).count();
        let mut timings = EncodeTimings::default();
        let t0 = Instant::now();
        let audio_embeds = match &inp.audio_feature {
            Some(f) => Some(self.audio.forward(&f.to_device(self.device())?)?),
            None => None,
        };
        self.device().synchronize()?;
        timings.audio = t0.elapsed();
        let t1 = Instant::now();
        let encode = |p: &Option<Tensor>, grids: &[[usize; 3]]| -> Result<Option<Tensor>> {
            match p {
                Some(p) => Ok(Some(
                    self.vision.forward(&p.to_device(self.device())?, grids)?,
                )),
                None => Ok(None),
            }
        };
        let image_embeds = encode(&inp.pixel_values, &inp.image_grid_thw)?;
        let video_embeds = encode(&inp.pixel_values_videos, &inp.video_grid_thw)?;
        self.device().synchronize()?;
        timings.vision = t1.elapsed();
        let rows = |t: &Option<Tensor>| t.as_ref().map_or(Ok(0), |t| t.dim(0));
        for (what, placeholders, feats) in [
            ("audio", count(tk.audio), rows(&audio_embeds)?),
            ("image", count(tk.image), rows(&image_embeds)?),
            ("video", count(tk.video), rows(&video_embeds)?),
        ] {
            if placeholders != feats {
                return Err(Error::Prompt(format!(
                    "{placeholders} {what} placeholder tokens but the {what} inputs give {feats} embeddings; \
                     the input_ids and the media tensors must come from the same processing"
                )));
            }
        }
        // One gather: rows 0..seq are the token embeddings, then audio, image, video features.
        let dtype = self.decoder.dtype();
        let seq = ids.len();
        let mut sources = vec![self.decoder.embed(ids)?];
        let mut next = [seq, 0, 0];
        for (slot, t) in [&audio_embeds, &image_embeds, &video_embeds]
            .into_iter()
            .enumerate()
        {
            next[slot] = sources.iter().map(|s| s.dim(0).unwrap_or(0)).sum::<usize>();
            if let Some(t) = t {
                sources.push(t.to_dtype(dtype)?);
            }
        }
        let (mut a, mut i, mut v) = (next[0], next[1], next[2]);
        let gather: Vec<usize> = ids
            .iter()
            .enumerate()
            .map(|(p, &t)| {
                let slot = if t == tk.audio {
                    &mut a
                } else if t == tk.image {
                    &mut i
                } else if t == tk.video {
                    &mut v
                } else {
                    return p;
                };
                *slot += 1;
                *slot - 1
            })
            .collect();
        let embeds =
            Tensor::cat(&sources, 0)?.index_select(&index_tensor(&gather, self.device())?, 0)?;
        let audio_lengths: Vec<usize> = if inp.audio_lengths.is_empty() {
            inp.audio_feature
                .as_ref()
                .map(|f| f.dim(0).map(|s| vec![s * self.cfg.tokens_per_segment()]))
                .transpose()?
                .unwrap_or_default()
        } else {
            inp.audio_lengths.clone()
        };
        let (position_ids, rope_delta) = rope::rope_index(
            ids,
            tk,
            &rope::RopeInputs {
                video_grids: &inp.video_grid_thw,
                image_grids: &inp.image_grid_thw,
                second_per_grid: &inp.second_per_grid_ts,
                audio_lengths: &audio_lengths,
                merge: self.cfg.vision.spatial_merge_size,
            },
            self.positions,
        )?;
        Ok(Embedded {
            input_ids: ids.clone(),
            embeds,
            position_ids,
            rope_delta,
            use_audio_in_video: audio_embeds.is_some() && video_embeds.is_some(),
            audio_embeds,
            video_embeds,
            image_embeds,
            timings,
        })
    }
}

impl AvModel for SalmonnModel {
    fn architecture(&self) -> &Arc<dyn Architecture> {
        &self.arch
    }

    fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn embed(&self, prompt: &Prompt) -> Result<Embedded> {
        self.embed_inputs(inputs_of(prompt)?)
    }
}
