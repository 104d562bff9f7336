//! `--device auto|cpu|cuda[:N]|metal` and `--dtype auto|f32|bf16|f16`.
//!
//! `auto` (the default everywhere) takes the first GPU back-end this binary was built with (`--features
//! cuda`, then `metal`) whose device 0 opens, else the CPU — and says why in one line when a GPU is there but
//! not used. The decision ([`choose`]) is separate from opening devices, so tests fake both the build and the
//! hardware.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// A GPU back-end avflow can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cuda,
    Metal,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }
}

/// The GPU back-ends compiled into this binary, in the order `auto` tries them.
pub fn built_backends() -> Vec<Backend> {
    let mut b = Vec::new();
    if cfg!(feature = "cuda") {
        b.push(Backend::Cuda);
    }
    if cfg!(feature = "metal") {
        b.push(Backend::Metal);
    }
    b
}

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU this binary was built for and can open, else the CPU.
    Auto,
    Cpu,
    Gpu(Backend, usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let index = |n: &str| {
            n.parse::<usize>().map_err(|_| {
                Error::Other(format!(
                    "bad device {s:?}: write cuda, cuda:N, metal or metal:N (N: 0, 1, …)"
                ))
            })
        };
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Gpu(Backend::Cuda, 0)),
            "metal" => Ok(Self::Gpu(Backend::Metal, 0)),
            _ => {
                if let Some(n) = s.strip_prefix("cuda:") {
                    Ok(Self::Gpu(Backend::Cuda, index(n)?))
                } else if let Some(n) = s.strip_prefix("metal:") {
                    Ok(Self::Gpu(Backend::Metal, index(n)?))
                } else {
                    Err(Error::Other(format!(
                        "unknown device {s:?}: use auto, cpu, cuda, cuda:N or metal"
                    )))
                }
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Gpu(b, n) => write!(f, "{}:{n}", b.name()),
        }
    }
}

/// What [`choose`] settled on: the opened device, its name (`cpu`, `cuda:0`) and, when `auto` left a GPU
/// unused, the one line that says why and how to use it.
#[derive(Debug, Clone)]
pub struct Chosen<D> {
    pub device: D,
    pub name: String,
    pub note: Option<String>,
}

/// What this machine has, as far as choosing a device goes (faked in tests).
pub struct Hardware<'a, D> {
    /// The back-ends this binary was built with ([`built_backends`]).
    pub built: Vec<Backend>,
    /// An NVIDIA driver is installed (`/proc/driver/nvidia/version`), whatever the build.
    pub nvidia_driver: bool,
    /// Apple silicon (where Metal runs).
    pub apple_silicon: bool,
    /// Opens device `n` of a back-end, or says why it cannot.
    pub open: &'a mut dyn FnMut(Backend, usize) -> std::result::Result<D, String>,
    pub cpu: D,
}

/// The fix for a back-end that is not compiled in.
fn rebuild_fix(b: Backend) -> String {
    format!(
        "bash scripts/setup.sh app builds the {b} version where it finds the GPU (AVFLOW_FEATURES={b} forces \
         it; or cargo build --features {b}), or use --device cpu",
        b = b.name()
    )
}

/// Resolves a `--device` choice on `hw`: an explicit GPU must open (an error with the fix otherwise); `auto`
/// takes the first built back-end whose device 0 opens, else the CPU with a note when a GPU sits unused.
pub fn choose<D>(choice: DeviceChoice, hw: Hardware<'_, D>) -> Result<Chosen<D>> {
    let Hardware {
        built,
        nvidia_driver,
        apple_silicon,
        open,
        cpu,
    } = hw;
    let cpu_chosen = |cpu, note| Chosen {
        device: cpu,
        name: "cpu".to_string(),
        note,
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu_chosen(cpu, None)),
        DeviceChoice::Gpu(b, n) => {
            if !built.contains(&b) {
                return Err(Error::Other(format!(
                    "--device {choice}: this avflow was built without the {} back-end. Fix: {}",
                    b.name(),
                    rebuild_fix(b)
                )));
            }
            open(b, n)
                .map(|device| Chosen {
                    device,
                    name: choice.to_string(),
                    note: None,
                })
                .map_err(|e| {
                    Error::Other(format!(
                        "--device {choice} could not be opened ({e}). Fix: check the driver (nvidia-smi), \
                         pick another index, or use --device cpu"
                    ))
                })
        }
        DeviceChoice::Auto => {
            let mut failed = Vec::new();
            for &b in &built {
                match open(b, 0) {
                    Ok(device) => {
                        return Ok(Chosen {
                            device,
                            name: format!("{}:0", b.name()),
                            note: None,
                        })
                    }
                    Err(e) => failed.push(format!("{}:0 ({e})", b.name())),
                }
            }
            let note = if !failed.is_empty() {
                Some(format!(
                    "running on the CPU: {} could not be opened; --device cpu says so explicitly",
                    failed.join(", ")
                ))
            } else if nvidia_driver && !built.contains(&Backend::Cuda) {
                Some(format!(
                    "running on the CPU: this machine has an NVIDIA GPU but this avflow was built without cuda. \
                     Fix: {}",
                    rebuild_fix(Backend::Cuda)
                ))
            } else if apple_silicon && !built.contains(&Backend::Metal) {
                Some(format!(
                    "running on the CPU: this Mac's GPU (Metal) is not built in. Fix: {}",
                    rebuild_fix(Backend::Metal)
                ))
            } else {
                None
            };
            Ok(cpu_chosen(cpu, note))
        }
    }
}

/// Whether an NVIDIA kernel driver is loaded (Linux).
pub fn nvidia_driver_present() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
}

/// [`choose`] on this machine, with candle opening the devices.
pub fn resolve(choice: DeviceChoice) -> Result<Chosen<Device>> {
    let mut open = |b: Backend, n: usize| -> std::result::Result<Device, String> {
        match b {
            Backend::Cuda => Device::new_cuda(n),
            Backend::Metal => Device::new_metal(n),
        }
        .map_err(|e| e.to_string())
    };
    choose(
        choice,
        Hardware {
            built: built_backends(),
            nvidia_driver: nvidia_driver_present(),
            apple_silicon: cfg!(all(target_os = "macos", target_arch = "aarch64")),
            open: &mut open,
            cpu: Device::Cpu,
        },
    )
}

/// The fix to add to an error raised on a GPU at run time (out of memory, a driver error), or `None` for
/// errors that are not the GPU's. `device`: where it ran, when known (`None`: only errors that name the GPU
/// back-end count).
pub fn gpu_failure_fix(device: Option<&str>, message: &str) -> Option<String> {
    if device == Some("cpu") {
        return None;
    }
    let m = message.to_ascii_lowercase();
    let gpu_words = m.contains("cuda") || m.contains("cublas") || m.contains("metal");
    if device.is_none() && !gpu_words {
        return None;
    }
    let name = device.unwrap_or("the GPU");
    if m.contains("out of memory") || m.contains("out_of_memory") {
        Some(format!(
            "{name} ran out of memory: analyse a shorter clip or a time range (--start/--end), lower --fps or \
             --max-pixels, close other programs using the GPU, or use --device cpu"
        ))
    } else if gpu_words || m.contains("driver") {
        Some(format!(
            "{name} failed: check the driver (nvidia-smi), or use --device cpu"
        ))
    } else {
        None
    }
}

/// A device as `--device` names it ([`DeviceChoice`]'s forms); kept for callers that want the device only.
pub fn parse_device(s: &str) -> Result<Device> {
    Ok(resolve(s.parse()?)?.device)
}

/// `--dtype`: `auto` (the checkpoint's own, `f32` where it names none) or a dtype; `(dtype, auto)`.
pub fn parse_dtype_choice(s: &str) -> Result<(DType, bool)> {
    if s.trim().eq_ignore_ascii_case("auto") {
        Ok((DType::F32, true))
    } else {
        Ok((parse_dtype(s)?, false))
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "half" => Ok(DType::F16),
        other => Err(Error::Other(format!(
            "unknown dtype {other:?}: use auto, f32, bf16 or f16"
        ))),
    }
}

/// `f32`, `bf16`, `f16`: a dtype as `--dtype` names it.
pub fn dtype_name(d: DType) -> String {
    match d {
        DType::F32 => "f32".into(),
        DType::BF16 => "bf16".into(),
        DType::F16 => "f16".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// `cpu`, `cuda:N`, `metal:N`: a device as `--device` names it.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine described by what is built and which devices open (`Ok(name)`), with no real GPU.
    fn on(
        choice: &str,
        built: &[Backend],
        nvidia_driver: bool,
        apple_silicon: bool,
        opens: &[(Backend, usize)],
    ) -> Result<Chosen<String>> {
        let mut open = |b: Backend, n: usize| {
            if opens.contains(&(b, n)) {
                Ok(format!("{}:{n}", b.name()))
            } else {
                Err("CUDA_ERROR_NO_DEVICE".to_string())
            }
        };
        choose(
            choice.parse()?,
            Hardware {
                built: built.to_vec(),
                nvidia_driver,
                apple_silicon,
                open: &mut open,
                cpu: "cpu".to_string(),
            },
        )
    }

    #[test]
    fn auto_takes_the_gpu_the_binary_was_built_for() {
        use Backend::*;
        let c = on("auto", &[Cuda], true, false, &[(Cuda, 0)]).unwrap();
        assert_eq!(
            (c.device.as_str(), c.name.as_str(), c.note),
            ("cuda:0", "cuda:0", None)
        );
        let c = on("auto", &[Metal], false, true, &[(Metal, 0)]).unwrap();
        assert_eq!(c.name, "metal:0");
        // Built for cuda, but the device does not open: the CPU, with the reason.
        let c = on("auto", &[Cuda], true, false, &[]).unwrap();
        assert_eq!(c.name, "cpu");
        let note = c.note.unwrap();
        assert!(
            note.contains("cuda:0") && note.contains("CUDA_ERROR_NO_DEVICE"),
            "{note}"
        );
        // A CPU build on a machine with an NVIDIA driver: the CPU, and how to get the GPU build.
        let note = on("auto", &[], true, false, &[]).unwrap().note.unwrap();
        assert!(
            note.contains("NVIDIA") && note.contains("scripts/setup.sh"),
            "{note}"
        );
        let note = on("auto", &[], false, true, &[]).unwrap().note.unwrap();
        assert!(note.contains("Metal"), "{note}");
        // No GPU anywhere: the CPU, silently.
        let c = on("auto", &[], false, false, &[]).unwrap();
        assert_eq!((c.name.as_str(), c.note), ("cpu", None));
    }

    #[test]
    fn an_explicit_device_opens_or_says_why() {
        use Backend::*;
        assert_eq!(
            on("cpu", &[Cuda], true, false, &[(Cuda, 0)]).unwrap().name,
            "cpu"
        );
        assert_eq!(
            on("cuda:1", &[Cuda], true, false, &[(Cuda, 1)])
                .unwrap()
                .name,
            "cuda:1"
        );
        let e = on("cuda", &[], true, false, &[]).unwrap_err().to_string();
        assert!(
            e.contains("built without the cuda") && e.contains("Fix"),
            "{e}"
        );
        let e = on("cuda:3", &[Cuda], true, false, &[(Cuda, 0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cuda:3") && e.contains("--device cpu"), "{e}");
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(
            "CUDA:2".parse::<DeviceChoice>().unwrap().to_string(),
            "cuda:2"
        );
    }

    #[test]
    fn gpu_failures_get_a_fix() {
        let oom = "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")";
        let f = gpu_failure_fix(Some("cuda:0"), oom).unwrap();
        assert!(
            f.contains("cuda:0") && f.contains("--device cpu") && f.contains("shorter"),
            "{f}"
        );
        assert!(gpu_failure_fix(None, oom).unwrap().contains("the GPU"));
        assert!(gpu_failure_fix(Some("cuda:0"), "the file x.mp4 is truncated").is_none());
        assert!(gpu_failure_fix(None, "out of memory").is_none());
        assert!(gpu_failure_fix(Some("cpu"), "out of memory").is_none());
    }
}
