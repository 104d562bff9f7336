//! The whole path on real files against the reference (goldens made by tools/make_pipeline_goldens.py and
//! tools/make_matrix_goldens.py): `avflow prepare` on the golden's files and question, then our forward.

use candle_core::{DType, Device, Tensor};

use avflow::model::loader::{resolve_dir, ModelSource};
use avflow::prompt::TokenMap;

use super::fixtures;

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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

/// One golden of the whole path on real files (tests/fixtures/media/pipeline, made by
/// tools/make_pipeline_goldens.py): qwen-omni-utils + `Qwen2_5OmniProcessor` + HF's Thinker on the same
/// files and question.
pub struct PipelineGolden {
    pub meta: serde_json::Value,
    pub t: std::collections::HashMap<String, Tensor>,
}

impl PipelineGolden {
    /// `case`'s golden in `tests/fixtures/media/<folder>`.
    pub fn load(folder: &str, case: &str) -> Self {
        let dir = fixtures().join("media").join(folder);
        let meta = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{case}.golden.json"))).unwrap(),
        )
        .unwrap();
        let t = candle_core::safetensors::load(
            dir.join(format!("{case}.golden.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        Self { meta, t }
    }

    pub fn i64s(&self, name: &str) -> Vec<i64> {
        self.t[name]
            .to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    }

    /// `avflow prepare` arguments with the media paths made absolute.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        media_args(&self.meta["args"])
    }
}

/// A golden's `args` (a JSON array of `avflow prepare` arguments, media paths relative to
/// `tests/fixtures/media`) with the media paths made absolute.
pub fn media_args(args: &serde_json::Value) -> Vec<std::ffi::OsString> {
    let media = fixtures().join("media");
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let is_path = i > 0 && matches!(args[i - 1], "--video" | "--audio" | "--image");
        out.push(if is_path {
            media.join(a).into_os_string()
        } else {
            a.into()
        });
    }
    out
}

/// What `check_pipeline` leaves for case-specific checks.
pub struct PipelineRun {
    pub golden: PipelineGolden,
    /// The tensors `avflow prepare` wrote.
    pub ours: std::collections::HashMap<String, Tensor>,
    pub map: TokenMap,
    pub stderr: String,
}

/// `avflow prepare` (the binary) on the golden's files and question, then our forward: ids, grids,
/// seconds per grid and position ids must be identical, last-position logits within 1e-3.
pub fn check_pipeline(case: &str) -> PipelineRun {
    check_pipeline_in("pipeline", case, 1e-3)
}

/// [`check_pipeline`] on a golden of `tests/fixtures/media/<folder>`, the last logits within `tolerance`.
pub fn check_pipeline_in(folder: &str, case: &str, tolerance: f32) -> PipelineRun {
    let golden = PipelineGolden::load(folder, case);
    let model = fixtures().join(golden.meta["model"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (out, spans) = (
        dir.path().join("inputs.safetensors"),
        dir.path().join("map.json"),
    );
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_avflow"))
        .args(["prepare", "--model"])
        .arg(&model)
        .args(golden.args())
        .arg("--out")
        .arg(&out)
        .arg("--spans")
        .arg(&spans)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{case}: {stderr}");

    let dev = Device::Cpu;
    let ours = avflow::tensor_io::load(&out, &dev).unwrap();
    let ints = |t: &Tensor| -> Vec<i64> {
        t.to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    };
    assert_eq!(
        ints(&ours["input_ids"]),
        golden.i64s("input_ids"),
        "{case}: input_ids"
    );
    for name in ["video_grid_thw", "image_grid_thw"] {
        assert_eq!(
            ours.get(name).map(ints),
            golden.t.get(name).map(|_| golden.i64s(name)),
            "{case}: {name}"
        );
    }
    let floats = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1::<f32>().unwrap() };
    assert_eq!(
        ours.get("video_second_per_grid").map(floats),
        golden.t.get("video_second_per_grid").map(floats),
        "{case}: video_second_per_grid"
    );

    let resolved = resolve_dir(ModelSource::Local(model.clone()), &model).unwrap();
    let net = avflow::model::load(&resolved, DType::F32, &dev).unwrap();
    let prompt = resolved.arch.read_prompt(&out).unwrap();
    let e = net.embed(&prompt).unwrap();
    let pos = golden.i64s("position_ids");
    let n = prompt.len();
    let want_pos: Vec<[i64; 3]> = (0..n)
        .map(|i| [pos[i], pos[n + i], pos[2 * n + i]])
        .collect();
    assert!(e.position_ids == want_pos, "{case}: position ids differ");
    let logits = net.logits(&e, Some(&[n - 1])).unwrap();
    let d = max_diff(&logits, &golden.t["logits_last"]);
    eprintln!("{case}: file → prepare → forward, last-position logits max|Δ| = {d:.2e}");
    assert!(
        d <= tolerance,
        "{case}: last logits differ from HF's by {d}"
    );

    let map = serde_json::from_str(&std::fs::read_to_string(&spans).unwrap()).unwrap();
    PipelineRun {
        golden,
        ours,
        map,
        stderr,
    }
}
