//! From media files and a question to the tensors `Qwen2_5OmniProcessor` returns: the model folder's own
//! chat template (rendered with minijinja), placeholder expansion (a video with its audio interleaved per
//! `seconds_per_chunk`), tokenisation with the folder's `tokenizer.json`, and the media tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::media::audio::{self, AudioFeatures};
use crate::media::video::{self, ImageOptions, VideoInputs, VideoOptions};
use crate::model::config::ThinkerConfig;
use crate::model::omni::audio::output_lengths;
use crate::model::omni::prompt::video_with_audio_ids;

/// Qwen2.5-Omni's official system prompt.
pub const DEFAULT_SYSTEM: &str = "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and visual inputs, as well as generating text and speech.";

/// One media item of the user turn, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Video(PathBuf),
    Audio(PathBuf),
    Image(PathBuf),
}

/// Media already decoded and preprocessed, in prompt order (what the placeholders expand to).
#[derive(Debug, Clone)]
pub enum Media {
    /// A video, with its own audio track's features when it is used.
    Video(VideoInputs, Option<AudioFeatures>),
    Audio(AudioFeatures),
    Image(video::ImageInputs),
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub video: VideoOptions,
    pub image: ImageOptions,
    pub use_audio_in_video: bool,
    pub system: Option<String>,
    /// Refuse prompts whose estimated token count exceeds this (before any heavy work).
    pub token_budget: usize,
    /// Text the assistant's turn starts with (e.g. "Best option:(" so that the next token is the option
    /// letter, as in Kim et al.'s protocol); appended after the generation prompt.
    pub answer_prefix: Option<String>,
}

impl PrepareOptions {
    /// Video sampling rate and pixel bounds (videos and images), as the CLI, the app and manifests give
    /// them; `None` keeps qwen-omni-utils' defaults.
    pub fn with_sampling(
        mut self,
        fps: f64,
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
    ) -> Self {
        self.video.fps = fps;
        self.video.min_pixels = min_pixels.or(self.video.min_pixels);
        self.video.max_pixels = max_pixels.or(self.video.max_pixels);
        if let Some(m) = min_pixels {
            self.image.min_pixels = m;
        }
        if let Some(m) = max_pixels {
            self.image.max_pixels = m;
        }
        self
    }
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            video: VideoOptions::default(),
            image: ImageOptions::default(),
            use_audio_in_video: true,
            system: None,
            token_budget: 32_768,
            answer_prefix: None,
        }
    }
}

/// What `prepare` produced besides the tensors: notes for the user (e.g. "no audio track").
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub input_ids: Vec<u32>,
    pub tensors: HashMap<String, Tensor>,
    pub notes: Vec<String>,
}

/// Renders the model folder's chat template for one user turn (items, then the question).
pub fn render_template(
    model_dir: &Path,
    kinds: &[&str],
    question: &str,
    system: &str,
) -> Result<String> {
    let template = chat_template(model_dir)?;
    let mut content: Vec<serde_json::Value> = kinds
        .iter()
        .map(|k| serde_json::json!({"type": k, *k: "media"}))
        .collect();
    content.push(serde_json::json!({"type": "text", "text": question}));
    let messages = serde_json::json!([
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": content},
    ]);
    let mut env = minijinja::Environment::new();
    env.add_template("chat", &template)
        .map_err(|e| Error::Model {
            path: model_dir.to_path_buf(),
            reason: format!("its chat template does not parse: {e}"),
            fix: "use the chat_template of the released checkpoint".into(),
        })?;
    let t = env
        .get_template("chat")
        .map_err(|e| Error::Other(e.to_string()))?;
    t.render(minijinja::context! { messages => messages, add_generation_prompt => true })
        .map_err(|e| Error::Model {
            path: model_dir.to_path_buf(),
            reason: format!("rendering its chat template failed: {e}"),
            fix: "use the chat_template of the released checkpoint".into(),
        })
}

/// The chat template from `chat_template.json`, `chat_template.jinja` or `tokenizer_config.json`.
fn chat_template(dir: &Path) -> Result<String> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    if let Some(t) = read(&dir.join("chat_template.jinja")) {
        return Ok(t);
    }
    for f in ["chat_template.json", "tokenizer_config.json"] {
        if let Some(text) = read(&dir.join(f)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(t) = v.get("chat_template").and_then(|t| t.as_str()) {
                    return Ok(t.to_string());
                }
            }
        }
    }
    Err(Error::Model {
        path: dir.to_path_buf(),
        reason: "has no chat template (chat_template.json, chat_template.jinja or tokenizer_config.json)".into(),
        fix: "download the checkpoint's tokenizer and processor files too".into(),
    })
}

/// Tokenises the rendered prompt and expands each media placeholder into its tokens, as the processor
/// expands the text before tokenising (special tokens are atomic, so the result is the same).
pub fn build_ids(
    model_dir: &Path,
    cfg: &ThinkerConfig,
    prompt: &str,
    media: &[Media],
) -> Result<Vec<u32>> {
    let tk_path = model_dir.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tk_path).map_err(|e| Error::Model {
        path: tk_path.clone(),
        reason: format!("cannot read the tokenizer: {e}"),
        fix: "download tokenizer.json with the checkpoint".into(),
    })?;
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
    if !pv.is_empty() {
        let k = vg.len() / 3;
        m.insert("pixel_values_videos".into(), Tensor::cat(&pv, 0)?);
        m.insert(
            "video_grid_thw".into(),
            Tensor::from_vec(vg, (k, 3), device)?,
        );
        m.insert(
            "video_second_per_grid".into(),
            Tensor::from_vec(spg, k, device)?,
        );
    }
    if !pi.is_empty() {
        let k = ig.len() / 3;
        m.insert("pixel_values".into(), Tensor::cat(&pi, 0)?);
        m.insert(
            "image_grid_thw".into(),
            Tensor::from_vec(ig, (k, 3), device)?,
        );
    }
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
    // Cheap estimate before any decoding: refuse absurd prompts with the numbers.
    let mut estimate = 0usize;
    let (mut silent, mut with_sound) = (None, 0usize);
    for it in items {
        if let Item::Video(p) = it {
            let info = video::probe_video(p)?;
            estimate += video::estimate_tokens(&info, &opts.video)?;
            if opts.use_audio_in_video && info.has_audio {
                estimate += (info.duration_s * 25.0).ceil() as usize;
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
        return Err(Error::Prompt(format!(
            "the media would need about {estimate} tokens, over the budget of {} (raise --max-tokens, lower --fps or --max-pixels, or cut the clip)",
            opts.token_budget
        )));
    }
    let mut media = Vec::new();
    let mut kinds = Vec::new();
    for it in items {
        match it {
            Item::Video(p) => {
                let sampled = video::sample_video(p, &opts.video)?;
                let v = video::preprocess_video(&sampled)?;
                let a = if opts.use_audio_in_video {
                    match AudioFeatures::from_path(p, device) {
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
                media.push(Media::Audio(AudioFeatures::from_path(p, device)?));
                kinds.push("audio");
            }
            Item::Image(p) => {
                media.push(Media::Image(video::preprocess_image_file(p, &opts.image)?));
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
