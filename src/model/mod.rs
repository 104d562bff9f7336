//! Models: the boundary the rest of avflow sees — [`Architecture`] (what a checkpoint's `config.json`
//! says: its decoder, special tokens, processor and token map) and [`AvModel`] (the loaded weights: prepared
//! inputs → embedded rows with their multimodal positions, then the shared [`Decoder`]) — plus checkpoint
//! loading and one folder per family.
//!
//! A family is a folder (`omni/`: config, processor, token map, encoders, weights) and one entry in
//! [`FAMILIES`]; nothing outside `model/<family>/` names its types. The flow engine only ever sees the
//! [`Decoder`], an [`Embedded`] prompt and a [`TokenMap`].

pub mod config;
pub mod decoder;
pub mod inputs;
pub mod loader;
pub mod nn;
pub mod omni;
#[cfg(test)]
pub mod plain;
pub mod random;
pub mod salmonn;
pub mod vision;
pub mod whisper;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::media::prepare::{Item, PrepareOptions, Prepared};
use crate::media::preview::MediaViews;
use crate::prompt::{SpecialTokens, TokenMap};

pub use config::{TextConfig, VisionConfig};
pub use decoder::{Decoder, PositionIds};
pub use loader::{resolve, ModelSource, ResolvedModel};

/// A prompt ready for the decoder.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub input_ids: Vec<u32>,
    /// `[seq, hidden]` in the model dtype, media placeholders replaced by encoder outputs.
    pub embeds: Tensor,
    pub position_ids: PositionIds,
    /// `max(position) + 1 − seq`: the offset generation continues from.
    pub rope_delta: i64,
    /// A video's own sound is interleaved with its pictures.
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

/// Position ids as an i64 tensor `[3, seq]` (transformers' layout without the batch dim).
pub fn position_ids_tensor(pos: &PositionIds, device: &Device) -> Result<Tensor> {
    let n = pos.len();
    let mut v = Vec::with_capacity(3 * n);
    for k in 0..3 {
        v.extend(pos.iter().map(|p| p[k]));
    }
    Ok(Tensor::from_vec(v, (3, n), device)?)
}

/// One prompt as its family's processor produced it: the ids, the token map built once from them, and the
/// family's parsed media tensors (opaque outside the family).
#[derive(Clone)]
pub struct Prompt {
    /// Where the tensors came from (a file, or a name for messages).
    pub source: PathBuf,
    pub input_ids: Vec<u32>,
    pub map: TokenMap,
    inputs: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Prompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompt")
            .field("source", &self.source)
            .field("positions", &self.input_ids.len())
            .finish_non_exhaustive()
    }
}

impl Prompt {
    /// Wraps a family's parsed inputs (`inputs`) with the ids and the token map built from them.
    pub fn new(
        source: PathBuf,
        input_ids: Vec<u32>,
        map: TokenMap,
        inputs: impl Any + Send + Sync,
    ) -> Self {
        Self {
            source,
            input_ids,
            map,
            inputs: Arc::new(inputs),
        }
    }

    /// The family's parsed inputs; `None` for another family's prompt.
    pub fn inputs<T: 'static>(&self) -> Option<&T> {
        self.inputs.downcast_ref()
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Which position numbering a family with more than one runs (video-SALMONN 2+: what the authors'
/// released inference computes, or what the model was trained with; Qwen2.5-Omni has one and ignores it).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// What the family's released inference code computes (the default).
    #[default]
    Inference,
    /// What the model was trained with.
    Training,
}

impl Positions {
    pub fn name(self) -> &'static str {
        match self {
            Positions::Inference => "inference",
            Positions::Training => "training",
        }
    }
}

/// How a model is loaded and run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Weights dtype (with `auto_dtype`, only when the checkpoint names none).
    pub dtype: DType,
    /// Load in the checkpoint's own dtype (`torch_dtype` of its `config.json`), as transformers does:
    /// `--dtype auto`.
    pub auto_dtype: bool,
    pub device: Device,
    pub positions: Positions,
}

impl LoadOptions {
    pub fn new(dtype: DType, device: &Device) -> Self {
        Self {
            dtype,
            auto_dtype: false,
            device: device.clone(),
            positions: Positions::default(),
        }
    }

    /// The dtype a checkpoint in `dir` loads in with these options.
    pub fn dtype_for(&self, dir: &Path) -> DType {
        if self.auto_dtype {
            checkpoint_dtype(dir).unwrap_or(self.dtype)
        } else {
            self.dtype
        }
    }
}

/// The dtype a checkpoint was saved in: `torch_dtype` of its `config.json` (top level, else the first
/// sub-config naming one); `None` when it names none or one avflow does not run.
pub fn checkpoint_dtype(dir: &Path) -> Option<DType> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = v.get("torch_dtype").and_then(|d| d.as_str()).or_else(|| {
        v.as_object()?
            .values()
            .find_map(|sub| sub.get("torch_dtype")?.as_str())
    })?;
    match name {
        "float32" | "float" => Some(DType::F32),
        "bfloat16" => Some(DType::BF16),
        "float16" | "half" => Some(DType::F16),
        _ => None,
    }
}

/// `repetition_penalty` of `generation_config.json` in `dir` (1 when the file or the key is absent): what
/// transformers' `generate` applies when the model it runs was loaded with that file.
pub fn generation_config_penalty(dir: &Path) -> f32 {
    std::fs::read_to_string(dir.join("generation_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("repetition_penalty")?.as_f64())
        .map_or(1.0, |p| p as f32)
}

/// What a checkpoint's `config.json` describes, before any weight is read: enough to prepare prompts, build
/// token maps and check or write the weights.
pub trait Architecture: Send + Sync + std::fmt::Debug {
    /// The family's `model_type`, e.g. `qwen2_5_omni`.
    fn family(&self) -> &'static str;
    /// The position numberings the family's code has (most have one: its inference's).
    fn position_numberings(&self) -> &'static [Positions] {
        &[Positions::Inference]
    }
    /// The repetition penalty the reference's greedy `generate()` applies for a checkpoint in `dir`: 1 (none)
    /// unless the family's generation reads it from the folder (see [`generation_config_penalty`]).
    fn repetition_penalty(&self, _dir: &Path) -> f32 {
        1.0
    }
    /// Video frames per second the family's processor samples when the user names no rate.
    fn default_fps(&self) -> f64 {
        crate::media::video::FPS
    }
    /// The decoder's settings (layers, width, vocabulary).
    fn text(&self) -> &TextConfig;
    /// The ids prompts are classified with.
    fn special_tokens(&self) -> SpecialTokens;
    /// Prefix of the tensors this model reads inside the checkpoint (`thinker.` for Qwen2.5-Omni); tensors
    /// without it (a talker, a vocoder) are never read.
    fn weight_prefix(&self) -> &'static str;
    /// Every tensor the model reads: checkpoint name (with the prefix) and shape.
    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)>;
    /// What a checkpoint without the expected tensors should be instead (for the error's fix).
    fn checkpoint_hint(&self) -> String;
    /// Loads the weights of `model` (already resolved and checked against this architecture).
    fn load(&self, model: &ResolvedModel, opts: &LoadOptions) -> Result<Box<dyn AvModel>>;
    /// Reads processor tensors (a file's, or a processor's output named `source`) into a [`Prompt`],
    /// checking them; tensors stay on the CPU (the encoders move what they need).
    fn prompt_from_tensors(
        &self,
        source: &Path,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Prompt>;
    /// The family's processor: media items and a question → its tensors and ids, with the model folder's
    /// chat template and tokenizer.
    fn prepare(
        &self,
        model_dir: &Path,
        items: &[Item],
        question: &str,
        opts: &PrepareOptions,
        device: &Device,
    ) -> Result<Prepared>;
    /// The media a prompt holds, as the app's timeline draws it.
    fn media_views(&self, prompt: &Prompt) -> Result<MediaViews>;
    /// `config.json` of a checkpoint with this architecture in the hub layout (random checkpoints).
    fn hub_config(&self) -> serde_json::Value;
    /// A copy with only the first `layers` decoder layers (quick benchmarks).
    fn with_layers(&self, layers: usize) -> Arc<dyn Architecture>;
    /// A prompt in this family's real layout with random media (benchmarks): `frames` video frames and
    /// `audio_seconds` of sound interleaved, as the processor would return them.
    fn bench_inputs(
        &self,
        seed: u64,
        frames: usize,
        audio_seconds: f64,
    ) -> Result<HashMap<String, Tensor>>;
}

impl dyn Architecture {
    /// Reads a processor's tensors from a safetensors file.
    pub fn read_prompt(&self, path: &Path) -> Result<Prompt> {
        let map = crate::tensor_io::load(path, &Device::Cpu)?;
        self.prompt_from_tensors(path, &map)
    }
}

/// A loaded model of some family: the encoders turn a [`Prompt`] into embedded rows with their multimodal
/// positions; the shared [`Decoder`] (with lm_head) does the rest.
pub trait AvModel: Send + Sync {
    fn architecture(&self) -> &Arc<dyn Architecture>;
    fn decoder(&self) -> &Decoder;
    /// Runs the encoders, replaces the placeholders and computes the position ids.
    fn embed(&self, prompt: &Prompt) -> Result<Embedded>;
}

impl dyn AvModel {
    pub fn device(&self) -> &Device {
        self.decoder().device()
    }

    pub fn dtype(&self) -> DType {
        self.decoder().dtype()
    }

    /// Full forward: logits (f32) at the requested positions (all when `rows` is `None`).
    pub fn logits(&self, e: &Embedded, rows: Option<&[usize]>) -> Result<Tensor> {
        let dec = self.decoder();
        let rot = dec.rotary(&e.position_ids)?;
        let normed = dec.forward(&e.embeds, &rot, &mut |_, _| Ok(()))?;
        let normed = match rows {
            Some(r) => normed.index_select(&decoder::index_tensor(r, dec.device())?, 0)?,
            None => normed,
        };
        dec.logits(&normed)
    }
}

/// Recognises a family's `config.json` (parsed, at `path`): its architecture, or `None` for another family.
pub type DetectFn =
    fn(path: &Path, config: &serde_json::Value) -> Result<Option<Arc<dyn Architecture>>>;

/// One model family: how to recognise its `config.json`, and its reference dimensions.
pub struct FamilyEntry {
    /// `model_type` of the full checkpoint.
    pub id: &'static str,
    /// For people: "Qwen2.5-Omni".
    pub name: &'static str,
    pub detect: DetectFn,
    /// The released models' sizes (`3b`, `7b`), the first the default.
    pub sizes: &'static [&'static str],
    /// A released model's real dimensions by size (benchmarks on random weights).
    pub reference: fn(size: &str) -> Option<Arc<dyn Architecture>>,
}

/// Every family avflow runs. Adding one is a folder under `model/` and a line here (the test-only
/// `plain` family shows it: `model/plain/` and its line below).
pub const FAMILIES: &[FamilyEntry] = &[
    omni::FAMILY,
    salmonn::FAMILY,
    #[cfg(test)]
    plain::FAMILY,
];

impl FamilyEntry {
    /// The released model of `size` (`None`: the family's first), with the sizes there are in the error.
    pub fn released(&self, size: Option<&str>) -> Result<Arc<dyn Architecture>> {
        let size = size.unwrap_or(self.sizes.first().copied().unwrap_or(""));
        (self.reference)(&size.to_ascii_lowercase()).ok_or_else(|| {
            Error::Other(format!(
                "{} has no released size {size:?}: use one of {}",
                self.name,
                self.sizes.join(", ")
            ))
        })
    }
}

/// The family entry of `id` (a `model_type`), with the known ones in the error.
pub fn family(id: &str) -> Result<&'static FamilyEntry> {
    FAMILIES.iter().find(|f| f.id == id).ok_or_else(|| {
        Error::Other(format!(
            "unknown model family {id:?}: use one of {}",
            FAMILIES.iter().map(|f| f.id).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Reads a checkpoint's `config.json` and finds its family.
pub fn read_architecture(config_path: &Path) -> Result<Arc<dyn Architecture>> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| Error::io(format!("reading {}", config_path.display()), e))?;
    architecture_from_json(config_path, &text)
}

/// [`read_architecture`] of a `config.json`'s text.
pub fn architecture_from_json(path: &Path, text: &str) -> Result<Arc<dyn Architecture>> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })?;
    for f in FAMILIES {
        if let Some(arch) = (f.detect)(path, &v)? {
            return Ok(arch);
        }
    }
    let model_type = v.get("model_type").and_then(|t| t.as_str());
    Err(Error::Config {
        path: path.to_path_buf(),
        reason: format!(
            "unknown model_type {:?}: avflow reads {} checkpoints (model_type {}, e.g. Qwen/Qwen2.5-Omni-3B); \
             video-SALMONN 2+ support is planned",
            model_type.unwrap_or("<missing>"),
            FAMILIES.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
            FAMILIES
                .iter()
                .map(|f| format!("\"{}\"", f.id))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    })
}

/// Loads a resolved checkpoint with its family's code in `dtype` on `device` (the default position
/// numbering).
pub fn load(model: &ResolvedModel, dtype: DType, device: &Device) -> Result<Box<dyn AvModel>> {
    load_with(model, &LoadOptions::new(dtype, device))
}

/// [`load`] with every option; a weight that does not match the config is reported with the folder and the
/// fix.
pub fn load_with(model: &ResolvedModel, opts: &LoadOptions) -> Result<Box<dyn AvModel>> {
    model.check_expected(&model.arch.expected_tensors())?;
    let opts = LoadOptions {
        dtype: opts.dtype_for(&model.dir),
        auto_dtype: false,
        ..opts.clone()
    };
    model
        .arch
        .load(model, &opts)
        .map_err(|e| match e {
            Error::Candle(c) => Error::Weights {
                path: model.dir.clone(),
                reason: format!("weights do not match {}: {c}", model.config_path.display()),
                fix: "config.json and the *.safetensors files must come from the same checkpoint; re-download it".into(),
            },
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_model_type() {
        let e = architecture_from_json(Path::new("x/config.json"), r#"{"model_type":"llama"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown model_type")
                && e.contains("llama")
                && e.contains("x/config.json")
                && e.contains("qwen2_5_omni"),
            "{e}"
        );
        assert_eq!(
            family("qwen2_5_omni").map(|f| f.name).ok(),
            Some("Qwen2.5-Omni")
        );
        assert!(family("llama")
            .err()
            .is_some_and(|e| e.to_string().contains("qwen2_5_omni")));
    }
}
