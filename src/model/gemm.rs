//! Fast CPU matrix products for the linear layers through oneDNN's matmul primitive (`csrc/`), built
//! where the oneDNN headers exist (see build.rs); candle's own gemm otherwise.
//!
//! Why: on the 2-core x86 machines this project targets, candle's gemm reaches ~80 GFLOP/s in f32;
//! oneDNN reaches ~300 in f32 and ~830 with bf16 operands (AMX), measured in one run each. With bf16
//! weights the activations are rounded to bf16 for the product (as a bf16 model computes it) while the
//! residual stream, norms, softmax and accumulation stay f32. f32 weights keep an f32 product (the
//! exactness tests run there). `AVFLOW_GEMM=candle` forces candle's path (for comparisons).

use candle_core::{DType, Tensor};

use crate::error::Result;

#[cfg(avflow_onednn)]
extern "C" {
    fn avflow_onednn_matmul(
        m: i64,
        n: i64,
        k: i64,
        bf16: i32,
        a: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        c: *mut f32,
        ldc: i64,
    ) -> i32;
}

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| cfg!(avflow_onednn) && std::env::var("AVFLOW_GEMM").map_or(true, |v| v != "candle"))
}

/// Which backend the CPU linear layers use (for benchmark reports).
pub fn backend_name() -> &'static str {
    if enabled() {
        "onednn"
    } else {
        "candle-gemm"
    }
}

/// Runs `f` on the tensor's contiguous CPU slice (no copy).
#[cfg_attr(not(avflow_onednn), allow(dead_code))]
fn with_slice<T: candle_core::WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { return None };
    let (a, b) = layout.contiguous_offsets()?;
    let all = cpu.as_slice::<T>().ok()?;
    Some(f(&all[a..b]))
}

/// `x · wᵀ` for `x` `[m, k]` (f32) and `w` `[n, k]` (f32 or bf16) on the CPU; `None` when this path does
/// not apply (other device or dtype, no oneDNN), so the caller uses candle.
pub fn linear_cpu(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !enabled() || !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() != 2 || w.rank() != 2 {
        return Ok(None);
    }
    if !matches!(w.dtype(), DType::F32 | DType::BF16) {
        return Ok(None);
    }
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 || m == 0 || n == 0 {
        return Ok(None);
    }
    run(x, w, m, n, k)
}

/// Round-to-nearest-even f32 → bf16 bits, as `half::bf16::from_f32` but branch-free so it vectorises
/// (NaN payloads are not preserved; activations are finite).
#[inline]
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    let round = ((u >> 16) & 1) + 0x7FFF;
    (u.wrapping_add(round) >> 16) as u16
}

#[cfg(avflow_onednn)]
fn run(x: &Tensor, w: &Tensor, m: usize, n: usize, k: usize) -> Result<Option<Tensor>> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let status = if w.dtype() == DType::BF16 {
        let xb: Option<Vec<u16>> = with_slice::<f32, _>(&x, |v| v.iter().map(|&f| f32_to_bf16_bits(f)).collect());
        let Some(xb) = xb else { return Ok(None) };
        with_slice::<half::bf16, _>(&w, |ws| {
            // SAFETY: xb is [m,k], ws is [n,k], out is [m,n]; the shim only reads A/W and writes C.
            unsafe {
                avflow_onednn_matmul(
                    m as i64,
                    n as i64,
                    k as i64,
                    1,
                    xb.as_ptr().cast(),
                    ws.as_ptr().cast(),
                    out.as_mut_ptr(),
                    n as i64,
                )
            }
        })
    } else {
        with_slice::<f32, _>(&x, |xs| {
            with_slice::<f32, _>(&w, |ws| {
                // SAFETY: as above, f32 operands.
                unsafe {
                    avflow_onednn_matmul(
                        m as i64,
                        n as i64,
                        k as i64,
                        0,
                        xs.as_ptr().cast(),
                        ws.as_ptr().cast(),
                        out.as_mut_ptr(),
                        n as i64,
                    )
                }
            })
        })
        .flatten()
    };
    match status {
        Some(0) => {
            // SAFETY: oneDNN wrote all m·n outputs (status 0) into the reserved capacity.
            unsafe { out.set_len(m * n) };
            Ok(Some(Tensor::from_vec(out, (m, n), x.device())?))
        }
        Some(code) => {
            tracing::warn!("oneDNN matmul failed with status {code}; using candle's gemm");
            Ok(None)
        }
        None => Ok(None),
    }
}

#[cfg(not(avflow_onednn))]
fn run(_x: &Tensor, _w: &Tensor, _m: usize, _n: usize, _k: usize) -> Result<Option<Tensor>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half() {
        for f in [0.0f32, -0.0, 1.0, -1.5, 3.14159, 1e-20, 65504.0, 1.0039062, 1.0117188, -7.777e7] {
            assert_eq!(f32_to_bf16_bits(f), half::bf16::from_f32(f).to_bits(), "{f}");
        }
    }
}
