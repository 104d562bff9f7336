//! Qwen2.5-Omni Thinker: audio tower + vision tower + placeholder replacement + TMRoPE + the Qwen2.5
//! decoder. Port of `Qwen2_5OmniThinkerForConditionalGeneration` (eager, no generation state):
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! [`OmniArch`] is the family's [`Architecture`] (config, processor, token map, weights); [`OmniThinker`]
//! its [`AvModel`], which turns processor inputs into an [`Embedded`] sequence (embeddings + position ids);
//! from there everything runs through the [`Decoder`].

pub mod audio;
pub mod bench;
pub mod config;
pub mod inputs;
pub mod processor;
pub mod prompt;
pub mod rope_index;
pub mod token_map;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::media::prepare::{Item, PrepareOptions, Prepared};
use crate::media::preview::{patches_by_grid, ImageView, MediaViews, MelView, VideoView};
use crate::model::decoder::{index_tensor, Decoder};
use crate::model::loader::ResolvedModel;
use crate::model::vision::VisionEncoder;
use crate::model::{
    Architecture, AvModel, Embedded, EncodeTimings, FamilyEntry, LoadOptions, Prompt, TextConfig,
};
use crate::prompt::SpecialTokens;

pub use audio::AudioEncoder;
pub use config::ThinkerConfig;
pub use inputs::OmniInputs;

/// The registry entry ([`crate::model::FAMILIES`]).
pub const FAMILY: FamilyEntry = FamilyEntry {
    id: "qwen2_5_omni",
    name: "Qwen2.5-Omni",
    detect: |path, v| {
        Ok(ThinkerConfig::detect(path, v)?
            .map(|cfg| Arc::new(OmniArch { cfg }) as Arc<dyn Architecture>))
    },
    sizes: &["3b", "7b"],
    reference: |size| {
        let cfg = match size {
            "3b" => ThinkerConfig::qwen25_omni_3b(),
            "7b" => ThinkerConfig::qwen25_omni_7b(),
            _ => return None,
        };
        Some(Arc::new(OmniArch { cfg }) as Arc<dyn Architecture>)
    },
};

/// A Qwen2.5-Omni checkpoint's Thinker as its config describes it.
#[derive(Debug, Clone)]
pub struct OmniArch {
    pub cfg: ThinkerConfig,
}

/// The Omni tensors of a prompt this family read.
fn inputs_of(prompt: &Prompt) -> Result<&OmniInputs> {
    prompt.inputs::<OmniInputs>().ok_or_else(|| Error::Inputs {
        path: prompt.source.clone(),
        reason: "was read for another model family".into(),
    })
}

impl Architecture for OmniArch {
    fn family(&self) -> &'static str {
        FAMILY.id
    }

    fn text(&self) -> &TextConfig {
        &self.cfg.text
    }

    fn special_tokens(&self) -> SpecialTokens {
        self.cfg.special_tokens()
    }

    fn weight_prefix(&self) -> &'static str {
        "thinker."
    }

    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        weights::thinker_tensors(&self.cfg)
    }

    fn checkpoint_hint(&self) -> String {
        "use a full Qwen2.5-Omni checkpoint (keys thinker.model.*, thinker.visual.*, thinker.audio_tower.*, \
         thinker.lm_head.weight)"
            .into()
    }

    fn load(&self, model: &ResolvedModel, opts: &LoadOptions) -> Result<Box<dyn AvModel>> {
        let vb = model.var_builder(opts.dtype, &opts.device)?;
        Ok(Box::new(OmniThinker::new(Arc::new(self.clone()), vb)?))
    }

    fn prompt_from_tensors(
        &self,
        source: &Path,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Prompt> {
        let inp = OmniInputs::from_map(source, tensors)?;
        let spg: Vec<f64> = inp
            .video_second_per_grid
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let map = token_map::build(
            &inp.input_ids,
            &self.cfg,
            &inp.video_grid_thw,
            &spg,
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

    fn media_views(&self, prompt: &Prompt) -> Result<MediaViews> {
        let inp = inputs_of(prompt)?;
        let videos = patches_by_grid(inp.pixel_values_videos.as_ref(), &inp.video_grid_thw)?
            .into_iter()
            .zip(&inp.video_second_per_grid)
            .map(|((grid, patches), &spg)| VideoView {
                grid,
                second_per_grid: f64::from(spg),
                patches,
            })
            .collect();
        let images = patches_by_grid(inp.pixel_values.as_ref(), &inp.image_grid_thw)?
            .into_iter()
            .map(|(grid, patches)| ImageView { grid, patches })
            .collect();
        // `audio_features` is `[n_mels, Σ frames]`: clip `k`'s columns follow the earlier clips'.
        let mut audio = Vec::new();
        if let Some(f) = &inp.audio_features {
            let mel = f.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let mut col = 0;
            for &n in &inp.audio_lens {
                let values = mel
                    .iter()
                    .flat_map(|row| row.get(col..col + n).unwrap_or_default().to_vec())
                    .collect();
                audio.push(MelView { values, frames: n });
                col += n;
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
        Arc::new(OmniArch { cfg })
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

#[derive(Debug, Clone)]
pub struct OmniThinker {
    pub arch: Arc<dyn Architecture>,
    pub cfg: ThinkerConfig,
    pub audio: AudioEncoder,
    pub vision: VisionEncoder,
    pub decoder: Decoder,
}

impl OmniThinker {
    /// `vb` rooted at the Thinker (keys `model.*`, `lm_head.*`, `visual.*`, `audio_tower.*`).
    pub fn new(arch: Arc<OmniArch>, vb: VarBuilder) -> Result<Self> {
        let cfg = arch.cfg.clone();
        Ok(Self {
            audio: AudioEncoder::new(&cfg.audio, vb.pp("audio_tower"))?,
            vision: VisionEncoder::new(&cfg.vision, vb.pp("visual"))?,
            decoder: Decoder::new(&cfg.text, vb)?,
            arch,
            cfg,
        })
    }

    fn device(&self) -> &Device {
        self.decoder.device()
    }

    fn dtype(&self) -> DType {
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
}

impl AvModel for OmniThinker {
    fn architecture(&self) -> &Arc<dyn Architecture> {
        &self.arch
    }

    fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn embed(&self, prompt: &Prompt) -> Result<Embedded> {
        OmniThinker::embed(self, inputs_of(prompt)?)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::media::audio::N_MELS;
    use crate::media::prepare::Item;
    use crate::media::preview::{build, ItemKind};

    /// An image and an audio file prepared on the tiny model through the family's processor and media views: the image is a thumbnail without time, the
    /// audio has its waveform and spectrogram over its length, and every audio position has its time.
    #[test]
    fn image_and_audio_from_a_real_prompt() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let (model, image, sound) = (
            root.join("omni-tiny-a"),
            root.join("media/video/still.png"),
            root.join("media/audio/stereo44k.wav"),
        );
        let resolved = crate::model::resolve(
            &crate::model::ModelSource::parse(&model.display().to_string()).expect("source"),
        )
        .expect("resolve");
        let items = vec![Item::Image(image.clone()), Item::Audio(sound.clone())];
        let q = "Does the sound match the picture?";
        let arch = &resolved.arch;
        let prepared = arch
            .prepare(
                &resolved.dir,
                &items,
                q,
                &crate::media::prepare::PrepareOptions::default(),
                &candle_core::Device::Cpu,
            )
            .expect("prepare");
        let prompt = arch
            .prompt_from_tensors(Path::new("prepared"), &prepared.tensors)
            .expect("prompt");
        let views = arch.media_views(&prompt).expect("views");
        let load = |p: &Path| crate::media::audio::load_16k(p);
        let p = build(&views, &prompt.map, &items, q, &prepared.notes, &load).expect("preview");
        assert_eq!(p.items.len(), 2);
        let (im, au) = (&p.items[0], &p.items[1]);
        assert_eq!(
            (im.kind, im.frames.len(), im.duration_s),
            (ItemKind::Image, 1, 0.0)
        );
        assert!(im.tokens.image > 0 && im.waveform.is_none());
        assert_eq!(au.kind, ItemKind::Audio);
        let mel = au.mel.as_ref().expect("mel");
        // 1.5 s of sound: 150 mel frames (the golden's audio_frames), 100 waveform bins per second.
        assert_eq!((mel.n_mels, mel.columns), (N_MELS, 150));
        let w = au.waveform.as_ref().expect("waveform");
        assert_eq!(w.bins.len(), 150);
        assert!((au.duration_s - 1.5).abs() < 0.02, "{}", au.duration_s);
        assert!(w.bins.iter().any(|[lo, hi]| hi - lo > 0.01));
        assert_eq!(p.duration_s(), au.duration_s);
        let audio_spans = p.spans.iter().filter(|s| s.audio && s.item == 1).count();
        assert_eq!(audio_spans, au.tokens.audio);
        assert!(p.spans.iter().all(|s| s.item == 1));
    }
}
