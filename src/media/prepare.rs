//! From media and a question to a model's processor tensors: what every family's processor shares — the
//! media items in prompt order, the sampling options, the model folder's own chat template (rendered with
//! minijinja) and its tokenizer. The family's processor (`model::Architecture::prepare`) expands the
//! placeholders and names the tensors as its reference processor does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{Error, Result};

/// One media item of the user turn, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Video(PathBuf),
    Audio(PathBuf),
    Image(PathBuf),
}

impl Item {
    pub fn path(&self) -> &Path {
        let (Item::Video(p) | Item::Audio(p) | Item::Image(p)) = self;
        p
    }

    /// `video`, `audio` or `image`: the chat template's content type.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Video(_) => "video",
            Item::Audio(_) => "audio",
            Item::Image(_) => "image",
        }
    }

    /// The file name (the whole path when it has none), for status lines.
    pub fn file_name(&self) -> String {
        let p = self.path();
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// Seconds `start..end` of every video and audio item, as qwen-omni-utils' `video_start`/`video_end` and
/// `audio_start`/`audio_end` message keys (the datasets' annotations give such ranges); images are not
/// timed. `end: None` runs to the end of each clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeRange {
    pub start: f64,
    pub end: Option<f64>,
}

impl TimeRange {
    /// `--start S --end E` (either may be absent): `None` when both are, an error naming the fix when the
    /// range is empty or not a number of seconds.
    pub fn new(start: Option<f64>, end: Option<f64>) -> Result<Option<Self>> {
        let bad = |what: String| {
            Error::Prompt(format!(
                "{what}. Fix: give seconds from the clip's start, e.g. --start 12.5 --end 20"
            ))
        };
        if start.is_none() && end.is_none() {
            return Ok(None);
        }
        let s = start.unwrap_or(0.0);
        if !(s.is_finite() && s >= 0.0) {
            return Err(bad(format!(
                "the range's start {s} is not a time in the clip"
            )));
        }
        if let Some(e) = end {
            if !(e.is_finite() && e > s) {
                return Err(bad(format!(
                    "the range {s}..{e} s is empty: its end must come after its start"
                )));
            }
        }
        Ok(Some(Self { start: s, end }))
    }

    /// Samples `[int(sr·start), int(sr·start) + int(sr·(end − start)))` of a clip at `sr` Hz, clamped to
    /// `len`: what `librosa.load(offset=start, duration=end − start)` reads (both its soundfile and its
    /// audioread paths truncate), before it resamples.
    pub fn samples(&self, sr: u32, len: usize) -> std::ops::Range<usize> {
        let sr = sr as f64;
        let a = ((sr * self.start) as usize).min(len);
        let b = match self.end {
            Some(e) => a.saturating_add((sr * (e - self.start)) as usize).min(len),
            None => len,
        };
        a..b
    }

    /// Seconds of a clip lasting `duration` s that the range keeps (for token estimates).
    pub fn kept(&self, duration: f64) -> f64 {
        (self.end.unwrap_or(duration).min(duration) - self.start).max(0.0)
    }

    /// `start..end` for notes and status lines.
    pub fn describe(&self) -> String {
        match self.end {
            Some(e) => format!("{}..{} s", self.start, e),
            None => format!("{} s to the end", self.start),
        }
    }
}

/// How a prompt is prepared. The sampling fields are the user's overrides (`None`: the model family's own
/// processor defaults, e.g. 2 fps for Qwen2.5-Omni, one frame per 0.1 s for video-SALMONN 2+).
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Video frames per second.
    pub fps: Option<f64>,
    /// Bounds on a frame's or an image's pixels after resizing.
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    pub use_audio_in_video: bool,
    /// Seconds of each video and audio item to use (`None`: all of it).
    pub range: Option<TimeRange>,
    pub system: Option<String>,
    /// Refuse prompts whose estimated token count exceeds this (before any heavy work).
    pub token_budget: usize,
    /// Text the assistant's turn starts with (e.g. "Best option:(" so that the next token is the option
    /// letter, as in Kim et al.'s protocol); appended after the generation prompt.
    pub answer_prefix: Option<String>,
}

impl PrepareOptions {
    /// Seconds of a clip lasting `duration` s that these options keep.
    pub fn timed_seconds(&self, duration: f64) -> f64 {
        self.range.map_or(duration, |r| r.kept(duration))
    }

    /// The note a processor adds when a time range applies to some of `items`.
    pub fn range_note(&self, items: &[Item]) -> Option<String> {
        let r = self.range?;
        items.iter().any(|i| !matches!(i, Item::Image(_))).then(|| {
            format!(
                "used {} of each video and audio item; the token map's seconds count from the range's start",
                r.describe()
            )
        })
    }

    /// Video sampling rate and pixel bounds (videos and images), as the CLI, the app and manifests give
    /// them; `None` keeps the family's defaults.
    pub fn with_sampling(
        mut self,
        fps: Option<f64>,
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
    ) -> Self {
        self.fps = fps.or(self.fps);
        self.min_pixels = min_pixels.or(self.min_pixels);
        self.max_pixels = max_pixels.or(self.max_pixels);
        self
    }
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            fps: None,
            min_pixels: None,
            max_pixels: None,
            use_audio_in_video: true,
            range: None,
            system: None,
            token_budget: 32_768,
            answer_prefix: None,
        }
    }
}

/// What a processor produced: the ids, the tensors under the reference processor's names, and notes: notes for the user (e.g. "no audio track").
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

pub use crate::media::tokenizer::load_tokenizer;
