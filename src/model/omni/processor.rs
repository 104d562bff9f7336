//! Qwen2.5-Omni's processor: media files and a question to the tensors `Qwen2_5OmniProcessor` returns
//! (with qwen-omni-utils' sampling), under its names — placeholder expansion (a video with its audio
//! interleaved per `seconds_per_chunk`), tokenisation with the folder's `tokenizer.json`, and the media
//! tensors.
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/processing_qwen2_5_omni.py>

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::media::audio::{self, AudioFeatures};
use crate::media::prepare::{load_tokenizer, render_template, Item, PrepareOptions, Prepared};
use crate::media::video::{self, VideoInputs};
use crate::model::inputs::{insert_patches, insert_videos};
use crate::model::omni::audio::output_lengths;
use crate::model::omni::config::ThinkerConfig;
use crate::model::omni::prompt::video_with_audio_ids;

/// Qwen2.5-Omni's official system prompt.
pub const DEFAULT_SYSTEM: &str = "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and visual inputs, as well as generating text and speech.";

/// Media already decoded and preprocessed, in prompt order (what the placeholders expand to).
#[derive(Debug, Clone)]
pub enum Media {
    /// A video, with its own audio track's features when it is used.
    Video(VideoInputs, Option<AudioFeatures>),
    Audio(AudioFeatures),
    Image(video::ImageInputs),
}

/// Tokenises the rendered prompt and expands each media placeholder into its tokens, as the processor
/// expands the text before tokenising (special tokens are atomic, so the result is the same).
pub fn build_ids(
    model_dir: &Path,
    cfg: &ThinkerConfig,
    prompt: &str,
    media: &[Media],
) -> Result<Vec<u32>> {
    let tok = load_tokenizer(model_dir)?;
    let enc = tok
        .encode(prompt, false)
        .map_err(|e| Error::Other(format!("tokenising the prompt: {e}")))?;
    let t = &cfg.tokens;
    let merge = cfg.vision.spatial_merge_size * cfg.vision.spatial_merge_size;
    let mut items = media.iter();
    let mut out = Vec::with_capacity(enc.get_ids().len());
    for &id in enc.get_ids() {
        if id != t.video && id != t.audio && id != t.image {
            out.push(id);
            continue;
        }
        let m = items.next().ok_or_else(|| {
            Error::Prompt("the chat template produced more media placeholders than items".into())
        })?;
        match (m, id) {
            (Media::Video(v, Some(a)), x) if x == t.video => {
                let g = v.video_grid_thw;
                let ids = video_with_audio_ids(
                    cfg,
                    g,
                    v.video_second_per_grid,
                    output_lengths(a.n_frames).1,
                );
                // Drop the outer <|vision_bos|> … <|vision_eos|>: the template wrote them.
                out.extend_from_slice(&ids[1..ids.len() - 1]);
            }
            (Media::Video(v, None), x) if x == t.video => {
                let g = v.video_grid_thw;
                out.extend(std::iter::repeat_n(t.video, g[0] * g[1] * g[2] / merge));
            }
            (Media::Audio(a), x) if x == t.audio => {
                out.extend(std::iter::repeat_n(t.audio, output_lengths(a.n_frames).1));
            }
            (Media::Image(im), x) if x == t.image => {
                let g = im.image_grid_thw;
                out.extend(std::iter::repeat_n(t.image, g[0] * g[1] * g[2] / merge));
            }
            _ => {
                return Err(Error::Prompt(
                    "media placeholders and items are out of order".into(),
                ))
            }
        }
    }
    if items.next().is_some() {
        return Err(Error::Prompt(
            "more media items than placeholders in the chat template".into(),
        ));
    }
    Ok(out)
}

/// The processor's tensors for already-preprocessed media and the ids.
pub fn tensors(ids: &[u32], media: &[Media], device: &Device) -> Result<HashMap<String, Tensor>> {
    let n = ids.len();
    let mut m = HashMap::new();
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    m.insert("input_ids".into(), Tensor::from_vec(ids64, (1, n), device)?);
    m.insert(
        "attention_mask".into(),
        Tensor::ones((1, n), DType::I64, device)?,
    );
    let (mut pv, mut vg, mut spg, mut pi, mut ig, mut feats) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for item in media {
        match item {
            Media::Video(v, a) => {
                pv.push(v.to_tensor(device)?);
                vg.extend(v.video_grid_thw.iter().map(|&x| x as i64));
                spg.push(v.video_second_per_grid as f32);
                if let Some(a) = a {
                    feats.push(a.clone());
                }
            }
            Media::Audio(a) => feats.push(a.clone()),
            Media::Image(im) => {
                pi.push(im.to_tensor(device)?);
                ig.extend(im.image_grid_thw.iter().map(|&x| x as i64));
            }
        }
    }
    insert_videos(&mut m, &pv, vg, ("video_second_per_grid", spg), device)?;
    insert_patches(&mut m, ("pixel_values", "image_grid_thw"), &pi, ig, device)?;
    if !feats.is_empty() {
        // One row per clip, padded to the longest, with the mask marking each clip's valid frames.
        let longest = feats.iter().map(|f| f.n_frames).max().unwrap_or(0);
        let mut rows = Vec::new();
        let mut mask = Vec::new();
        for f in &feats {
            let pad = longest - f.n_frames;
            let row = if pad > 0 {
                Tensor::cat(
                    &[
                        &f.features,
                        &Tensor::zeros((f.features.dim(0)?, pad), DType::F32, device)?,
                    ],
                    1,
                )?
            } else {
                f.features.clone()
            };
            rows.push(row.unsqueeze(0)?);
            mask.extend((0..longest).map(|i| i64::from(i < f.n_frames)));
        }
        m.insert("input_features".into(), Tensor::cat(&rows, 0)?);
        m.insert(
            "feature_attention_mask".into(),
            Tensor::from_vec(mask, (feats.len(), longest), device)?,
        );
    }
    Ok(m)
}

/// transformers' `get_rope_index` takes `use_audio_in_video` for the whole prompt: next to a video whose sound
/// is interleaved, a silent video's tokens get plain text positions (no time, height or width), and
/// qwen-omni-utils refuses such a prompt ("Video must has audio track"). We refuse it too, with the ways out.
fn silent_next_to_sound(silent: &Path) -> Error {
    Error::Inputs {
        path: silent.to_path_buf(),
        reason: "has no audio track, but the sound of the other videos is used: Qwen2.5-Omni's position ids \
                 cannot place a silent video next to one with its sound interleaved. Fix: pass \
                 --no-audio-in-video (pictures only, for every video), or give this clip a silent track, e.g. \
                 `ffmpeg -i IN -f lavfi -i anullsrc=r=16000:cl=mono -c:v copy -c:a flac -shortest OUT.mkv`"
            .into(),
    }
}

/// Decodes and preprocesses the items (estimating the token count first), renders the template,
/// builds the ids and the tensors.
pub fn prepare(
    model_dir: &Path,
    cfg: &ThinkerConfig,
    items: &[Item],
    question: &str,
    opts: &PrepareOptions,
    device: &Device,
) -> Result<Prepared> {
    if question.trim().is_empty() {
        return Err(Error::Prompt(
            "the question is empty: pass --question \"…\"".into(),
        ));
    }
    let mut notes = Vec::new();
    let video_opts = video::VideoOptions {
        fps: opts.fps.unwrap_or(video::FPS),
        min_pixels: opts.min_pixels,
        max_pixels: opts.max_pixels,
        total_pixels: None,
        range: opts.range,
    };
    let image_opts = video::ImageOptions {
        min_pixels: opts.min_pixels.unwrap_or(video::IMAGE_MIN_PIXELS),
        max_pixels: opts.max_pixels.unwrap_or(video::IMAGE_MAX_PIXELS),
    };
    // Cheap estimate before any decoding: refuse absurd prompts with the numbers.
    let mut estimate = 0usize;
    let (mut silent, mut with_sound) = (None, 0usize);
    for it in items {
        if let Item::Video(p) = it {
            let info = video::probe_video(p)?;
            estimate += video::estimate_tokens(&info, &video_opts).map_err(|e| Error::Inputs {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            if opts.use_audio_in_video && info.has_audio {
                estimate += (opts.timed_seconds(info.duration_s) * 25.0).ceil() as usize;
                with_sound += 1;
            } else if opts.use_audio_in_video {
                silent = silent.or(Some(p));
            }
        }
    }
    if let (Some(p), 1..) = (silent, with_sound) {
        return Err(silent_next_to_sound(p));
    }
    if estimate > opts.token_budget {
        return Err(Error::TooManyTokens {
            estimate,
            budget: opts.token_budget,
        });
    }
    notes.extend(opts.range_note(items));
    let mut media = Vec::new();
    let mut kinds = Vec::new();
    for it in items {
        match it {
            Item::Video(p) => {
                let sampled = video::sample_video(p, &video_opts)?;
                let v = video::preprocess_video(&sampled)?;
                let a = if opts.use_audio_in_video {
                    match AudioFeatures::from_path_range(p, opts.range.as_ref(), device) {
                        Ok(a) => Some(a),
                        Err(e) if audio::is_no_audio(&e) => {
                            notes.push(format!(
                                "{} has no audio track: using its video only",
                                p.display()
                            ));
                            None
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                media.push(Media::Video(v, a));
                kinds.push("video");
            }
            Item::Audio(p) => {
                media.push(Media::Audio(AudioFeatures::from_path_range(
                    p,
                    opts.range.as_ref(),
                    device,
                )?));
                kinds.push("audio");
            }
            Item::Image(p) => {
                media.push(Media::Image(video::preprocess_image_file(p, &image_opts)?));
                kinds.push("image");
            }
        }
    }
    let system = opts.system.as_deref().unwrap_or(DEFAULT_SYSTEM);
    let mut prompt = render_template(model_dir, &kinds, question, system)?;
    if let Some(prefix) = &opts.answer_prefix {
        prompt.push_str(prefix);
    }
    let input_ids = build_ids(model_dir, cfg, &prompt, &media)?;
    let tensors = tensors(&input_ids, &media, device)?;
    Ok(Prepared {
        input_ids,
        tensors,
        notes,
    })
}

#[cfg(test)]
mod tests {
    //! Against the real `Qwen2_5OmniProcessor`: the raw media of the golden cases
    //! (tests/fixtures/goldens/*/media.safetensors: the frames and PCM the processor got) go through this
    //! template, placeholder expansion, tokenizer, preprocessing and log-mel, then the Thinker; ids must be
    //! identical, features and logits within tolerance.

    use std::path::{Path, PathBuf};

    use candle_core::{DType, Device, Tensor};

    use super::{build_ids, tensors, Media};
    use crate::media::audio::AudioFeatures;
    use crate::media::prepare::render_template;
    use crate::media::video::{preprocess_frames, preprocess_image, ImageOptions, RgbFrame};
    use crate::model::loader::{resolve_dir, ModelSource};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn frame(t: &Tensor) -> RgbFrame {
        let (h, w, _) = t.dims3().unwrap();
        RgbFrame {
            width: w,
            height: h,
            data: t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
        }
    }

    fn pcm(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x / 32768.0)
            .collect()
    }

    fn check_case(case: &str) {
        let dir = fixtures().join("goldens").join(case);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let model_dir = fixtures().join(meta["model"].as_str().unwrap());
        let dev = Device::Cpu;
        let media_t = candle_core::safetensors::load(dir.join("media.safetensors"), &dev).unwrap();
        let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev).unwrap();
        let resolved = resolve_dir(ModelSource::Local(model_dir.clone()), &model_dir).unwrap();
        let arch = crate::model::read_architecture(&model_dir.join("config.json")).unwrap();
        let cfg = &crate::model::omni::ThinkerConfig::read(&model_dir.join("config.json")).unwrap();

        let kinds: Vec<String> = meta["conversation"][1]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap().to_string())
            .filter(|k| k != "text")
            .collect();
        let mut media = Vec::new();
        for k in &kinds {
            match k.as_str() {
                "video" => {
                    let fr = &media_t["video_frames"];
                    let frames: Vec<RgbFrame> = (0..fr.dim(0).unwrap())
                        .map(|i| frame(&fr.get(i).unwrap()))
                        .collect();
                    let fps = meta["media"]["video"]["fps"].as_f64().unwrap();
                    let v = preprocess_frames(&frames, 784.0, 50176.0, fps).unwrap();
                    let a = meta["use_audio_in_video"].as_bool().unwrap().then(|| {
                        AudioFeatures::from_samples_16k(&pcm(&media_t["audio_pcm16"]), &dev)
                            .unwrap()
                    });
                    media.push(Media::Video(v, a));
                }
                "audio" => media.push(Media::Audio(
                    AudioFeatures::from_samples_16k(&pcm(&media_t["audio_pcm16"]), &dev).unwrap(),
                )),
                "image" => {
                    let opts = ImageOptions {
                        min_pixels: 3136,
                        max_pixels: 12845056,
                    };
                    media.push(Media::Image(
                        preprocess_image(&frame(&media_t["image"]), &opts).unwrap(),
                    ));
                }
                other => panic!("unexpected item {other}"),
            }
        }
        let kind_refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
        let prompt = render_template(
            &model_dir,
            &kind_refs,
            meta["question"].as_str().unwrap(),
            meta["system_prompt"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(
            prompt,
            meta["prompt"].as_str().unwrap(),
            "{case}: chat template"
        );
        let ids = build_ids(&model_dir, cfg, &prompt, &media).unwrap();
        let want_ids: Vec<u32> = inputs["input_ids"]
            .flatten_all()
            .unwrap()
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(
            ids, want_ids,
            "{case}: input_ids differ from the processor's"
        );
        let ours = tensors(&ids, &media, &dev).unwrap();
        for (name, tol) in [
            ("pixel_values_videos", 1e-5f32),
            ("pixel_values", 1e-5),
            ("input_features", 1e-3),
        ] {
            match (ours.get(name), inputs.get(name)) {
                (Some(a), Some(b)) => {
                    let d = max_diff(a, b);
                    eprintln!("{case}: {name} max|Δ| = {d:.2e}");
                    assert!(d <= tol, "{case}: {name} differs by {d}");
                }
                (None, None) => {}
                (a, b) => panic!(
                    "{case}: {name} present ours={} theirs={}",
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
        for name in ["video_grid_thw", "image_grid_thw"] {
            if let Some(b) = inputs.get(name) {
                assert_eq!(max_diff(&ours[name], b), 0.0, "{case}: {name}");
            }
        }
        // Our prepare → our forward vs transformers' full pipeline.
        let model = crate::model::load(&resolved, DType::F32, &dev).unwrap();
        let prompt = arch
            .prompt_from_tensors(Path::new("prepared"), &ours)
            .unwrap();
        let e = model.embed(&prompt).unwrap();
        let logits = model.logits(&e, None).unwrap();
        let expected =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &dev).unwrap();
        let d = max_diff(&logits, &expected["logits"]);
        eprintln!("{case}: prepare→forward logits max|Δ| = {d:.2e}");
        assert!(
            d <= 1e-3,
            "{case}: logits of prepare→forward differ from HF's pipeline by {d}"
        );
    }

    #[test]
    fn audio_visual_clip_matches_the_processor() {
        check_case("av_a");
    }

    #[test]
    fn image_and_audio_prompt_matches_the_processor() {
        check_case("image_audio_a");
    }
}
