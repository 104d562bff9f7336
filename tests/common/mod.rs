//! What the model tests share: where the fixtures are and which device the model runs on, so the same
//! test binaries also check a GPU build (`tools/gpu_check.sh`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use avflow::model::loader::{resolve_dir, ModelSource};
use avflow::model::{AvModel, Prompt};

#[allow(dead_code)]
pub mod pipeline;

/// `tests/fixtures`, or `AVFLOW_FIXTURES` when the test binary runs outside this checkout.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("AVFLOW_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// Runs the ffmpeg CLI quietly (overwriting), failing the test with its message (media made at test time).
#[allow(dead_code)]
pub fn ffmpeg(args: &[&str]) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg (the CLI; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The device the model runs on: `AVFLOW_TEST_DEVICE` (auto, cpu, cuda, cuda:N, metal), default cpu. The
/// first call says which device that is on stderr (`tools/gpu_check.sh` records the line).
#[allow(dead_code)]
pub fn device() -> Device {
    static SAID: std::sync::Once = std::sync::Once::new();
    let name = std::env::var("AVFLOW_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let chosen = avflow::device::resolve(name.parse().unwrap()).unwrap();
    SAID.call_once(|| {
        eprintln!(
            "test device: {} (AVFLOW_TEST_DEVICE={name}){}",
            chosen.name,
            chosen
                .note
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        )
    });
    chosen.device
}

/// A golden case (`tests/fixtures/goldens/CASE`): its `meta.json`, the tiny model it names
/// loaded in `dtype` on [`device`], its processor inputs and transformers' outputs (on the CPU).
// Each test binary compiles its own copy of this module and reads only the fields it needs.
#[allow(dead_code)]
pub struct Golden {
    pub meta: serde_json::Value,
    pub model: Box<dyn AvModel>,
    pub prompt: Prompt,
    pub expected: HashMap<String, Tensor>,
}

#[allow(dead_code)]
pub fn golden(case: &str, dtype: DType) -> Golden {
    let dir = fixtures().join("goldens").join(case);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let model_name = meta["model"]
        .as_str()
        .expect("meta.json names the model folder");
    let model_dir = fixtures().join(model_name);
    let resolved = resolve_dir(ModelSource::Local(model_dir.clone()), &model_dir).unwrap();
    let model = avflow::model::load(&resolved, dtype, &device()).unwrap();
    let prompt = resolved
        .arch
        .read_prompt(&dir.join("inputs.safetensors"))
        .unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    Golden {
        meta,
        model,
        prompt,
        expected,
    }
}
