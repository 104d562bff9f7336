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
use crate::kernels::simd::to_bf16_par;

/// See [`parallel::enabled`](crate::kernels::parallel::enabled): the products and the thread team share
/// one switch.
pub use crate::kernels::parallel::enabled;

#[cfg(avflow_onednn)]
extern "C" {
    fn avflow_onednn_bmm(
        b: i64,
        m: i64,
        n: i64,
        k: i64,
        bf16: i32,
        a: *const std::ffi::c_void,
        w: *const std::ffi::c_void,
        bias: *const f32,
        c: *mut f32,
    ) -> i32;
    fn avflow_onednn_version() -> *const std::ffi::c_char;
    fn avflow_onednn_prepare(b: i64, m: i64, n: i64, k: i64, bf16: i32, bias: i32) -> i32;
    fn avflow_onednn_cached(b: i64, m: i64, n: i64, k: i64, bf16: i32, bias: i32) -> i32;
}

/// Which backend the CPU linear layers use, with oneDNN's version (for benchmark reports).
pub fn backend_name() -> String {
    #[cfg(avflow_onednn)]
    if enabled() {
        // SAFETY: the shim returns a pointer to its own NUL-terminated static buffer.
        let v = unsafe { std::ffi::CStr::from_ptr(avflow_onednn_version()) };
        return format!("onednn {}", v.to_string_lossy());
    }
    "candle-gemm".to_string()
}

/// Runs `f` on the tensor's contiguous CPU slice (no copy).
fn with_slice<T: candle_core::WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let (a, b) = layout.contiguous_offsets()?;
    let all = cpu.as_slice::<T>().ok()?;
    Some(f(&all[a..b]))
}

/// `x · wᵀ (+ bias)` for `x` `[m, k]` (f32), `w` `[n, k]` (f32 or bf16) and an optional bias `[n]` on the
/// CPU; `None` when this path does not apply (other device or dtype, no oneDNN), so the caller uses
/// candle. The bias is added inside the product (no separate pass over the output).
pub fn linear_cpu(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !enabled()
        || !x.device().is_cpu()
        || x.dtype() != DType::F32
        || x.rank() != 2
        || w.rank() != 2
    {
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
    if w.dtype() == DType::BF16 {
        let Some(xb) = with_slice::<f32, _>(&x.contiguous()?, to_bf16_par) else {
            return Ok(None);
        };
        return linear_cpu_bf16_input(&xb, m, w, bias);
    }
    // oneDNN compiles (JITs) a kernel per shape. Small row counts vary constantly in batched knockouts
    // and decoding (1, 2, … 36 active runs), so they are padded to a few bucket sizes: the zero rows
    // cost nothing in these bandwidth-bound products and each shape is compiled once.
    let mb = bucket_rows(m);
    let x = if mb == m {
        x.contiguous()?
    } else {
        Tensor::cat(
            &[x, &Tensor::zeros((mb - m, k), DType::F32, x.device())?],
            0,
        )?
    };
    let w = w.contiguous()?;
    with_bias(bias, n, |bias| {
        Ok(run_vec(&x, &w, Dims::linear(mb, n, k, bias), false)?
            .map(|v| Tensor::from_vec(v, (mb, n), x.device())?.narrow(0, 0, m))
            .transpose()?)
    })
}

/// The product a linear layer with weight `w` (`[n, k]`) asks oneDNN for when given `m` rows: what
/// [`prepare`] compiles ahead. `None` where the oneDNN path does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    m: usize,
    n: usize,
    k: usize,
    bf16: bool,
    bias: bool,
}

impl LinearShape {
    /// Calls one of the shim's per-shape functions (`avflow_onednn_prepare`, `avflow_onednn_cached`).
    #[cfg(avflow_onednn)]
    fn call(&self, f: unsafe extern "C" fn(i64, i64, i64, i64, i32, i32) -> i32) -> i32 {
        // SAFETY: both functions only compile or look up a primitive for these dimensions.
        unsafe {
            f(
                1,
                self.m as i64,
                self.n as i64,
                self.k as i64,
                i32::from(self.bf16),
                i32::from(self.bias),
            )
        }
    }

    pub fn of(m: usize, w: &Tensor, bias: bool) -> Option<Self> {
        if !enabled() || !w.device().is_cpu() || m == 0 {
            return None;
        }
        let (n, k) = w.dims2().ok()?;
        let bf16 = match w.dtype() {
            DType::BF16 => true,
            DType::F32 => false,
            _ => return None,
        };
        Some(Self {
            m: bucket_rows(m),
            n,
            k,
            bf16,
            bias,
        })
    }
}

/// Compiles the kernels of `shapes` that are not cached yet, several at once on [`parallel`]'s threads,
/// so the products that follow find them ready. Compiling one takes 2–18 ms on one thread; a batched
/// knockout stacks a different number of rows at every layer call, so without this a 144-knockout sweep
/// spent ≈ 2 s compiling on one core while the other waited. (A primitive made inside the OpenMP region
/// runs its products on the whole team like any other: checked with a C program, 65 ms either way.)
/// Best effort: a shape that fails here is compiled (and its error reported) by its product.
///
/// [`parallel`]: crate::kernels::parallel::parallel
pub fn prepare(shapes: &[LinearShape]) {
    let mut todo: Vec<LinearShape> = Vec::with_capacity(shapes.len());
    for s in shapes {
        if !todo.contains(s) {
            todo.push(*s);
        }
    }
    #[cfg(avflow_onednn)]
    crate::kernels::parallel::parallel(todo.len(), &|i| {
        let _ = todo[i].call(avflow_onednn_prepare);
    });
    #[cfg(not(avflow_onednn))]
    let _ = todo;
}

/// Whether the kernel for `s` is compiled and cached (tests).
pub fn is_prepared(s: &LinearShape) -> bool {
    #[cfg(avflow_onednn)]
    {
        s.call(avflow_onednn_cached) != 0
    }
    #[cfg(not(avflow_onednn))]
    {
        let _ = s;
        false
    }
}

/// Row counts up to 256 round up to 8, 16, 32, 64, 128 or 256; larger ones stay exact (their compute
/// dwarfs one kernel compilation).
pub fn bucket_rows(m: usize) -> usize {
    if m > 256 {
        m
    } else {
        m.next_power_of_two().max(8)
    }
}

/// Batched `a[b] · w[b]ᵀ` for f32 `a` `[B, m, k]` and `w` `[B, n, k]` → `[B, m, n]`: oneDNN when
/// available, candle otherwise. Used for attention scores (`q · kᵀ`) and, with `w = vᵀ`, for `p · v`.
/// `bf16`: the operands are rounded to bf16 for the product (f32 accumulation and output), as a bf16
/// model's attention computes it; only where oneDNN runs the product (elsewhere the flag is ignored).
pub fn bmm_nt(a: &Tensor, w: &Tensor, bf16: bool) -> Result<Tensor> {
    if let Some(v) = onednn_bmm(a, w, bf16)? {
        let (b, m, _) = a.dims3()?;
        return Ok(Tensor::from_vec(v, (b, m, w.dim(1)?), a.device())?);
    }
    Ok(a.matmul(&w.transpose(1, 2)?)?)
}

/// [`bmm_nt`] for f32 CPU operands, as a plain row-major `[B·m·n]` buffer the caller may modify in
/// place (the fused attention softmax); `None` on other devices or dtypes.
pub fn bmm_nt_cpu_f32(a: &Tensor, w: &Tensor, bf16: bool) -> Result<Option<Vec<f32>>> {
    if !a.device().is_cpu() || a.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    if let Some(v) = onednn_bmm(a, w, bf16)? {
        return Ok(Some(v));
    }
    Ok(Some(
        a.matmul(&w.transpose(1, 2)?)?
            .flatten_all()?
            .to_vec1::<f32>()?,
    ))
}

/// The oneDNN product behind [`bmm_nt`] for f32 CPU operands of matching shapes; `None` where it does
/// not apply (no oneDNN, other device or dtype, empty) or oneDNN declined, so the caller uses candle.
fn onednn_bmm(a: &Tensor, w: &Tensor, bf16: bool) -> Result<Option<Vec<f32>>> {
    let (b, m, k) = a.dims3()?;
    let (b2, n, k2) = w.dims3()?;
    if !enabled()
        || !a.device().is_cpu()
        || a.dtype() != DType::F32
        || w.dtype() != DType::F32
        || b != b2
        || k != k2
        || m * n * b == 0
    {
        return Ok(None);
    }
    let d = Dims::batched(b, m, n, k);
    run_vec(&a.contiguous()?, &w.contiguous()?, d, bf16)
}

/// `x · wᵀ` for an activation already rounded to bf16 (`xb`, `[m, k]` row-major bits) and a bf16 `w`
/// `[n, k]`: the fused MLP hands its gated product over without an f32 round trip. `None` where this
/// path does not apply (no oneDNN, other weight dtype or device).
pub fn linear_cpu_bf16_input(
    xb: &[u16],
    m: usize,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !enabled() || !w.device().is_cpu() || w.dtype() != DType::BF16 || w.rank() != 2 || m == 0 {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    if xb.len() != m * k {
        return Ok(None);
    }
    // Padded to a bucket row count as in `linear_cpu`.
    let mb = bucket_rows(m);
    let padded;
    let xb = if mb == m {
        xb
    } else {
        padded = [xb, &vec![0u16; (mb - m) * k][..]].concat();
        &padded[..]
    };
    let w = w.contiguous()?;
    with_bias(bias, n, |bias| {
        Ok(match run_bf16_vec(xb, &w, Dims::linear(mb, n, k, bias))? {
            Some(mut v) => {
                v.truncate(m * n);
                Some(Tensor::from_vec(v, (m, n), w.device())?)
            }
            None => None,
        })
    })
}

/// Runs `f` on a contiguous f32 CPU tensor's values (no copy); `None` for other tensors.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() != DType::F32 {
        return None;
    }
    with_slice::<f32, R>(t, f)
}

/// A product's shape, `[b, m, k] · [b, n, k]ᵀ → [b, m, n]`, and its bias (`[n]`, f32; single products).
/// Without oneDNN only the candle fallback's fields are read.
#[derive(Clone, Copy)]
#[cfg_attr(not(avflow_onednn), allow(dead_code))]
struct Dims<'a> {
    b: usize,
    m: usize,
    n: usize,
    k: usize,
    bias: Option<&'a [f32]>,
}

impl<'a> Dims<'a> {
    fn linear(m: usize, n: usize, k: usize, bias: Option<&'a [f32]>) -> Self {
        Self {
            b: 1,
            m,
            n,
            k,
            bias,
        }
    }

    fn batched(b: usize, m: usize, n: usize, k: usize) -> Self {
        Self {
            b,
            m,
            n,
            k,
            bias: None,
        }
    }
}

/// Runs `f` with a linear layer's bias as its `n` f32 values, for the product to add: borrowed from the
/// tensor (every call of a layer; no copy where the bias is already f32, as loaded on the CPU).
fn with_bias<R>(
    bias: Option<&Tensor>,
    n: usize,
    f: impl FnOnce(Option<&[f32]>) -> Result<R>,
) -> Result<R> {
    let Some(b) = bias else {
        return f(None);
    };
    let b = b.to_dtype(DType::F32)?.contiguous()?;
    if b.elem_count() != n {
        return Err(crate::error::Error::Other(format!(
            "bias has {} values for {n} outputs",
            b.elem_count()
        )));
    }
    // The products run on the CPU, so the layer's bias lives there too.
    with_f32(&b, |v| f(Some(v))).unwrap_or_else(|| {
        Err(crate::error::Error::Other(
            "a CPU linear layer's bias is not on the CPU".into(),
        ))
    })
}

/// `a` `[b·m·k]` f32 times `w` `[b·n·k]` f32 (both contiguous) → `[b·m·n]` f32; with `bf16` both
/// operands are rounded to bf16 first (over the CPU threads) and the product runs on bf16 units.
fn run_vec(a: &Tensor, w: &Tensor, d: Dims, bf16: bool) -> Result<Option<Vec<f32>>> {
    let out = with_slice::<f32, _>(a, |xs| {
        with_slice::<f32, _>(w, |ws| {
            if bf16 {
                let (xb, wb) = (to_bf16_par(xs), to_bf16_par(ws));
                // SAFETY: xb holds b·m·k and wb b·n·k bf16 values (roundings of slices of those shapes).
                unsafe { call_shim(true, xb.as_ptr().cast(), wb.as_ptr().cast(), d) }
            } else {
                // SAFETY: xs holds b·m·k and ws b·n·k f32 values (contiguous slices of those shapes).
                unsafe { call_shim(false, xs.as_ptr().cast(), ws.as_ptr().cast(), d) }
            }
        })
    });
    Ok(out.flatten().transpose()?.flatten())
}

/// `ab` (bf16 bits, `[b·m·k]`) times bf16 `w` `[b·n·k]` → `[b·m·n]` f32.
fn run_bf16_vec(ab: &[u16], w: &Tensor, d: Dims) -> Result<Option<Vec<f32>>> {
    if ab.len() != d.b * d.m * d.k || w.dtype() != DType::BF16 {
        return Ok(None);
    }
    let out = with_slice::<half::bf16, _>(w, |ws| {
        // SAFETY: ab holds b·m·k and ws b·n·k bf16 values (checked above / contiguous of that shape).
        unsafe { call_shim(true, ab.as_ptr().cast(), ws.as_ptr().cast(), d) }
    });
    Ok(out.transpose()?.flatten())
}

/// Runs the shim's batched product into a new buffer; `None` when there is no oneDNN, or (with a
/// warning) when it reports an error, so the caller falls back to candle.
///
/// # Safety
/// `a` must point at b·m·k and `w` at b·n·k readable values of the dtype `bf16` names.
unsafe fn call_shim(
    bf16: bool,
    a: *const std::ffi::c_void,
    w: *const std::ffi::c_void,
    d: Dims,
) -> Result<Option<Vec<f32>>> {
    #[cfg(not(avflow_onednn))]
    {
        let _ = (bf16, a, w, d);
        Ok(None)
    }
    #[cfg(avflow_onednn)]
    {
        let Dims { b, m, n, k, bias } = d;
        if bias.is_some_and(|v| v.len() != n || b != 1) {
            return Ok(None);
        }
        let mut out: Vec<f32> = Vec::with_capacity(b * m * n);
        // SAFETY: the caller vouches for A and W; the bias holds n values (checked); out has room for
        // b·m·n f32; the shim only reads A/W/bias and writes C.
        let status = unsafe {
            avflow_onednn_bmm(
                b as i64,
                m as i64,
                n as i64,
                k as i64,
                i32::from(bf16),
                a,
                w,
                bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
                out.as_mut_ptr(),
            )
        };
        if status != 0 {
            tracing::warn!("oneDNN matmul failed with status {status}; using candle's gemm");
            return Ok(None);
        }
        // SAFETY: oneDNN wrote all b·m·n outputs (status 0) into the reserved capacity.
        unsafe { out.set_len(b * m * n) };
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes compiled ahead are cached (once, whatever the repeats) under the bucketed row count the
    /// products use, and a product of that shape then runs on the cached kernel.
    #[test]
    fn prepared_shapes_are_cached() {
        if !enabled() {
            return;
        }
        let dev = candle_core::Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (48, 40), &dev)
            .and_then(|w| w.to_dtype(DType::BF16))
            .unwrap();
        let s = LinearShape::of(13, &w, false).unwrap();
        assert_eq!(
            s,
            LinearShape::of(16, &w, false).unwrap(),
            "13 rows run as 16"
        );
        assert_ne!(
            s,
            LinearShape::of(13, &w, true).unwrap(),
            "bias is part of the shape"
        );
        assert!(!is_prepared(&s));
        prepare(&[s, s, s]);
        assert!(is_prepared(&s));
        assert!(!is_prepared(&LinearShape::of(13, &w, true).unwrap()));
        let x = Tensor::randn(0f32, 1.0, (13, 40), &dev).unwrap();
        let y = linear_cpu(&x, &w, None).unwrap().unwrap();
        let reference = x
            .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap();
        let diff = (y - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // bf16 rounding of x (8 bits of mantissa) over 40 products of unit-scale values.
        assert!(diff < 0.2, "max |Δ| {diff}");
    }
}
