//! What the model tests share: where the fixtures are and which device the model runs on, so the same
//! test binaries also check a GPU build (`tools/gpu_check.sh`).

use std::path::{Path, PathBuf};

use candle_core::Device;

/// `tests/fixtures`, or `AVFLOW_FIXTURES` when the test binary runs outside this checkout.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("AVFLOW_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// The device the model runs on: `AVFLOW_TEST_DEVICE` (cpu, cuda, cuda:N, metal), default cpu.
pub fn device() -> Device {
    let name = std::env::var("AVFLOW_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    avflow::device::parse_device(&name).unwrap()
}
