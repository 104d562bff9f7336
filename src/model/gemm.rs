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

// libgomp, the OpenMP runtime oneDNN runs on: `GOMP_parallel` is what `#pragma omp parallel` compiles to.
#[cfg(avflow_onednn)]
extern "C" {
    fn GOMP_parallel(
        f: extern "C" fn(*mut std::ffi::c_void),
        data: *mut std::ffi::c_void,
        num_threads: std::ffi::c_uint,
        flags: std::ffi::c_uint,
    );
    fn omp_get_thread_num() -> std::ffi::c_int;
    fn omp_get_num_threads() -> std::ffi::c_int;
    fn omp_get_max_threads() -> std::ffi::c_int;
}

/// Whether the CPU products go through oneDNN (built with it and not turned off by `AVFLOW_GEMM=candle`).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        cfg!(avflow_onednn) && std::env::var("AVFLOW_GEMM").map_or(true, |v| v != "candle")
    })
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
pub fn prepare(shapes: &[LinearShape]) {
    let mut todo: Vec<LinearShape> = Vec::with_capacity(shapes.len());
    for s in shapes {
        if !todo.contains(s) {
            todo.push(*s);
        }
    }
    #[cfg(avflow_onednn)]
    parallel(todo.len(), &|i| {
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

/// Round-to-nearest-even f32 → bf16 bits, as `half::bf16::from_f32` but branch-free so it vectorises
/// (NaN payloads are not preserved; activations are finite).
#[inline(always)]
pub fn f32_to_bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    let round = ((u >> 16) & 1) + 0x7FFF;
    (u.wrapping_add(round) >> 16) as u16
}

/// Below this many elements an element-wise pass stays on the calling thread (a thread costs more).
const PAR_MIN: usize = 1 << 15;

/// Threads for avflow's own CPU passes: the OpenMP team size where oneDNN is in use (`OMP_NUM_THREADS`,
/// else the CPUs), candle's thread count otherwise.
pub fn threads() -> usize {
    #[cfg(avflow_onednn)]
    if enabled() {
        // SAFETY: a plain query of the OpenMP runtime.
        return (unsafe { omp_get_max_threads() }).max(1) as usize;
    }
    candle_core::utils::get_num_threads().max(1)
}

/// Runs `task(i)` for every `i < n`, spread over [`threads`] threads, and returns when all are done;
/// a panic in a task is re-raised here.
///
/// Where oneDNN is in use the tasks run on its OpenMP team. Why: on the 2-vCPU machines this project
/// targets, oneDNN's products ran at about one core's speed when its OpenMP threads slept between calls
/// (passive waiting: a sleeping vCPU wakes late), e.g. 586×2048×11008 in bf16 took 52–55 ms passive,
/// 51 ms on one thread and 27 ms with spinning threads (one process each, same minutes). Spinning threads
/// in turn steal the cores from any other threads, so avflow's own passes run on the same team and
/// nothing competes. Elsewhere (no oneDNN, or a GPU build) scoped threads.
pub fn parallel(n: usize, task: &(dyn Fn(usize) + Sync)) {
    let threads = threads().min(n);
    if threads <= 1 {
        (0..n).for_each(task);
        return;
    }
    #[cfg(avflow_onednn)]
    if enabled() {
        struct Job<'a> {
            n: usize,
            task: &'a (dyn Fn(usize) + Sync),
            panic: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
        }
        extern "C" fn run(data: *mut std::ffi::c_void) {
            // SAFETY: `data` is the `Job` below, alive until GOMP_parallel returns; only shared access.
            let job = unsafe { &*(data as *const Job) };
            // SAFETY: plain queries of the OpenMP runtime from inside the region.
            let (tid, nthr) = unsafe { (omp_get_thread_num(), omp_get_num_threads()) };
            let (tid, nthr) = (tid.max(0) as usize, nthr.max(1) as usize);
            // A panic must not unwind into C: catch it and re-raise it on the calling thread.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (tid..job.n).step_by(nthr).for_each(job.task)
            }));
            if let Err(e) = r {
                if let Ok(mut slot) = job.panic.lock() {
                    slot.get_or_insert(e);
                }
            }
        }
        let job = Job {
            n,
            task,
            panic: std::sync::Mutex::new(None),
        };
        // SAFETY: `run` only reads `job`, which outlives the call; GOMP_parallel returns after every
        // thread of the region has finished.
        unsafe {
            GOMP_parallel(
                run,
                &job as *const Job as *mut std::ffi::c_void,
                threads as std::ffi::c_uint,
                0,
            )
        };
        if let Some(e) = job.panic.into_inner().ok().flatten() {
            std::panic::resume_unwind(e);
        }
        return;
    }
    std::thread::scope(|scope| {
        for t in 1..threads {
            scope.spawn(move || (t..n).step_by(threads).for_each(task));
        }
        (0..n).step_by(threads).for_each(task);
    });
}

/// Runs `f(first, chunk)` over `out` split into one contiguous chunk per thread ([`parallel`]); `first`
/// is the chunk's offset in `out`. The element-wise passes around the matrix products
/// (activation rounding, the fused MLP gate) are memory-bound: two cores halve them.
pub fn par_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    par_chunks_of(out, 1, f)
}

/// [`par_chunks`] with every chunk a whole number of `unit`-long rows (`first` a multiple of `unit`).
pub fn par_chunks_of<T: Send>(out: &mut [T], unit: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let unit = unit.max(1);
    let threads = threads().min(out.len() / PAR_MIN).max(1);
    if threads <= 1 {
        f(0, out);
        return;
    }
    let per = (out.len() / unit).div_ceil(threads).max(1) * unit;
    // One uncontended lock per chunk hands each task its own mutable slice.
    let chunks: Vec<std::sync::Mutex<&mut [T]>> =
        out.chunks_mut(per).map(std::sync::Mutex::new).collect();
    parallel(chunks.len(), &|i| {
        if let Ok(mut chunk) = chunks[i].lock() {
            f(i * per, &mut chunk)
        }
    });
}

/// f32 → bf16 bits ([`f32_to_bf16_bits`]) over the CPU threads.
pub fn to_bf16_par(src: &[f32]) -> Vec<u16> {
    to_bf16_par_with(src, crate::model::simd::round_bf16)
}

/// [`to_bf16_par`] with an element-wise pass on the way: `pass(dst, src)` writes `bf16(f(src))` for one
/// threaded chunk (e.g. an activation fused into the next product's input).
pub fn to_bf16_par_with(src: &[f32], pass: impl Fn(&mut [u16], &[f32]) + Sync) -> Vec<u16> {
    let mut out = vec![0u16; src.len()];
    par_chunks(&mut out, |first, dst| pass(dst, &src[first..]));
    out
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
#[derive(Clone, Copy)]
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

    /// Every task runs exactly once (on the OpenMP team where oneDNN is in use), chunks tile the
    /// output, and a panic in a task reaches the caller instead of unwinding into C.
    #[test]
    fn parallel_runs_each_task_once_and_reraises_panics() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        parallel(hits.len(), &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        let mut out = vec![0usize; 3 * PAR_MIN + 5];
        par_chunks_of(&mut out, 7, |first, chunk| {
            assert_eq!(first % 7, 0);
            for (k, v) in chunk.iter_mut().enumerate() {
                *v = first + k;
            }
        });
        assert!(out.iter().enumerate().all(|(i, &v)| v == i));
        let r = std::panic::catch_unwind(|| parallel(4, &|i| assert_ne!(i, 2, "task two fails")));
        assert!(r.is_err());
    }

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

    #[test]
    fn bf16_rounding_matches_half() {
        for f in [
            0.0f32, -0.0, 1.0, -1.5, 2.71, 1e-20, 65504.0, 1.0039062, 1.0117188, -7.777e7,
        ] {
            assert_eq!(
                f32_to_bf16_bits(f),
                half::bf16::from_f32(f).to_bits(),
                "{f}"
            );
        }
    }
}
