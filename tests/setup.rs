//! `scripts/setup.sh detect`: which build a machine gets, with the accelerator faked (a stand-in
//! `nvidia-smi` and `nvcc`), so the choice is tested where no GPU is.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Runs `setup.sh detect` with these environment overrides: `(features, the line saying why)`.
fn detect(env: &[(&str, &str)]) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root.join("scripts/setup.sh")).arg("detect");
    for v in ["AVFLOW_FEATURES", "AVFLOW_NVIDIA_SMI", "AVFLOW_NVCC"] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let features = stdout
        .lines()
        .find_map(|l| l.strip_prefix("features="))
        .expect("a features= line")
        .to_string();
    (features, String::from_utf8_lossy(&out.stderr).to_string())
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "the NVIDIA detection is Linux's")]
fn setup_builds_for_the_gpu_it_finds() {
    let dir = tempfile::tempdir().unwrap();
    let smi = script(
        dir.path(),
        "nvidia-smi",
        "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)'",
    );
    let nvcc = script(
        dir.path(),
        "nvcc",
        "echo 'Cuda compilation tools, release 12.4, V12.4.131'",
    );
    let none = dir.path().join("absent").display().to_string();

    // No GPU: the CPU build, with one line saying why.
    let (f, why) = detect(&[("AVFLOW_NVIDIA_SMI", &none), ("AVFLOW_NVCC", &none)]);
    assert_eq!(f, "");
    assert!(
        why.contains("CPU only") && why.contains("no NVIDIA GPU"),
        "{why}"
    );
    // A GPU and a toolkit: the cuda build, naming both.
    let (f, why) = detect(&[("AVFLOW_NVIDIA_SMI", &smi), ("AVFLOW_NVCC", &nvcc)]);
    assert_eq!(f, "cuda");
    assert!(why.contains("H100") && why.contains("CUDA 12.4"), "{why}");
    // A GPU without a toolkit: the CPU build, and exactly what to install.
    let (f, why) = detect(&[("AVFLOW_NVIDIA_SMI", &smi), ("AVFLOW_NVCC", &none)]);
    assert_eq!(f, "");
    for n in [
        "H100",
        "no CUDA toolkit",
        "nvidia-cuda-toolkit",
        "cuda_bundle.sh",
    ] {
        assert!(why.contains(n), "lacks {n:?}: {why}");
    }
    // AVFLOW_FEATURES overrides the choice either way.
    let (f, _) = detect(&[("AVFLOW_FEATURES", "cuda"), ("AVFLOW_NVIDIA_SMI", &none)]);
    assert_eq!(f, "cuda");
    let (f, why) = detect(&[
        ("AVFLOW_FEATURES", ""),
        ("AVFLOW_NVIDIA_SMI", &smi),
        ("AVFLOW_NVCC", &nvcc),
    ]);
    assert_eq!(f, "");
    assert!(why.contains("CPU only"), "{why}");
}
