//! The bundled demo: a tiny random-weight Thinker in real checkpoint layout plus one prepared
//! audio-visual prompt, made by the fixture generator (`tools/make_fixtures.py`).

use std::path::{Path, PathBuf};

/// Relative to the crate root. The demo is the first test fixture (one copy in the repository): the tiny
/// random-weight model in the real checkpoint layout and its audio-visual prompt.
pub const MODEL_DIR: &str = "tests/fixtures/omni-tiny-a";
pub const INPUTS_FILE: &str = "tests/fixtures/goldens/av_a/inputs.safetensors";
/// The demo clip (4 s test pattern with a tone; made by tools/make_video_goldens.py) and its question:
/// what `avflow` with no arguments asks the demo model.
pub const CLIP_FILE: &str = "assets/demo/clip.mkv";
pub const DEMO_QUESTION: &str = "What is making the sound in this video?";
/// How to make the demo files when they are missing.
pub const MAKE_COMMAND: &str = "python3 tools/make_fixtures.py";

/// Where the demo lives: the crate root this binary was built from, else the current directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoPaths {
    pub model: PathBuf,
    pub inputs: PathBuf,
    /// The demo clip, when it is there.
    pub clip: Option<PathBuf>,
}

impl DemoPaths {
    pub fn locate() -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::choose(Path::new(env!("CARGO_MANIFEST_DIR")), &cwd)
    }

    /// Tests: the demo model on the demo prompt through the library (f32, CPU), the reference every
    /// number the app or the worker shows is compared with.
    #[cfg(test)]
    pub fn open_session(&self) -> crate::session::Session {
        crate::session::Session::open(
            &self.model.display().to_string(),
            &self.inputs,
            None,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .expect("open the demo")
    }

    /// The first root whose demo model folder exists; the build root when neither has one (so the
    /// message names the place the generator writes to).
    pub fn choose(build_root: &Path, cwd: &Path) -> Self {
        let root = [build_root, cwd]
            .into_iter()
            .find(|r| r.join(MODEL_DIR).is_dir())
            .unwrap_or(build_root);
        Self {
            model: root.join(MODEL_DIR),
            inputs: root.join(INPUTS_FILE),
            clip: Some(root.join(CLIP_FILE)).filter(|c| c.is_file()),
        }
    }

    /// `None` when both files are there, else what is missing and how to make it.
    pub fn missing_message(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.model.join("config.json").is_file() {
            missing.push(self.model.display().to_string());
        }
        if !self.inputs.is_file() {
            missing.push(self.inputs.display().to_string());
        }
        (!missing.is_empty()).then(|| {
            format!(
                "The bundled demo is missing ({}). Make it from the repository root with `{MAKE_COMMAND}`, \
                 or load your own model folder / hub id and inputs file above.",
                missing.join(", ")
            )
        })
    }

    /// Whether `dir` (a loaded model's folder) is the demo model.
    pub fn is_demo_model(&self, dir: &Path) -> bool {
        same_path(dir, &self.model)
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_build_root_then_the_current_dir() {
        let build = tempfile::tempdir().expect("tempdir");
        let cwd = tempfile::tempdir().expect("tempdir");
        // Neither has a demo: the build root is named.
        assert_eq!(
            DemoPaths::choose(build.path(), cwd.path()).model,
            build.path().join(MODEL_DIR)
        );
        std::fs::create_dir_all(cwd.path().join(MODEL_DIR)).expect("mkdir");
        assert_eq!(
            DemoPaths::choose(build.path(), cwd.path()).model,
            cwd.path().join(MODEL_DIR)
        );
        std::fs::create_dir_all(build.path().join(MODEL_DIR)).expect("mkdir");
        assert_eq!(
            DemoPaths::choose(build.path(), cwd.path()).model,
            build.path().join(MODEL_DIR)
        );
    }

    #[test]
    fn missing_message_names_files_and_the_command() {
        let root = tempfile::tempdir().expect("tempdir");
        let demo = DemoPaths::choose(root.path(), root.path());
        let msg = demo.missing_message().unwrap_or_default();
        assert!(msg.contains(MAKE_COMMAND), "{msg}");
        assert!(msg.contains("inputs.safetensors"), "{msg}");
        std::fs::create_dir_all(&demo.model).expect("mkdir");
        std::fs::write(demo.model.join("config.json"), "{}").expect("write");
        std::fs::create_dir_all(demo.inputs.parent().expect("parent")).expect("mkdir");
        std::fs::write(&demo.inputs, b"").expect("write");
        assert_eq!(demo.missing_message(), None);
        assert!(demo.is_demo_model(&demo.model.join("../omni-tiny-a")));
        assert!(!demo.is_demo_model(root.path()));
    }
}
