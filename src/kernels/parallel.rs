//! The thread team avflow's own CPU passes run on: oneDNN's OpenMP team (through libgomp) where oneDNN
//! does the products, scoped threads otherwise. Its own module, depending on nothing else in `kernels`,
//! because both the element-wise passes ([`simd`](super::simd)) and the products ([`gemm`](super::gemm),
//! compiling kernels ahead) run on it.

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
/// Defined here, not in [`gemm`](super::gemm) (which re-exports it), because it also decides whether
/// the passes run on oneDNN's OpenMP team, and this module depends on nothing else in `kernels`.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        cfg!(avflow_onednn) && std::env::var("AVFLOW_GEMM").map_or(true, |v| v != "candle")
    })
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
}
