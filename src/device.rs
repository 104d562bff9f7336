//! `--device cpu|cuda[:N]|metal` and `--dtype f32|bf16|f16`.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let unavailable = |what: &str, feature: &str, e: candle_core::Error| {
        Error::Other(format!(
            "{what} is not available ({e}). Fix: build avflow with `--features {feature}` on a machine with that GPU, or use --device cpu"
        ))
    };
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).map_err(|e| unavailable("metal", "metal", e)),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let n = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::Other(format!("bad device {s:?}: expected cuda or cuda:N"))
                })?,
                None => 0,
            };
            Device::new_cuda(n).map_err(|e| unavailable(&format!("cuda:{n}"), "cuda", e))
        }
        other => Err(Error::Other(format!(
            "unknown device {other:?}: use cpu, cuda, cuda:N or metal"
        ))),
    }
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

/// `cpu`, `cuda:N`, `metal:N`: a device as `--device` names it.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
