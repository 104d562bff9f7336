//! Memory budgets: before the encoders and the traced pass run, what a prompt will need against what the
//! machine has, so a prompt that cannot fit is refused with the numbers and the fix instead of the
//! operating system killing the process after the user waited. The same numbers decide whether the
//! trace's residuals stay in memory or go to a mapped file (see [`crate::flow::trace::Placement`]).

use std::path::PathBuf;

use candle_core::{DType, Device};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::flow::trace::Placement;
use crate::model::config::TextConfig;

/// What tracing a prompt of `seq` positions takes, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TraceBudget {
    pub seq: usize,
    /// Residuals entering every layer and leaving the last: `(layers + 1) · seq · hidden`.
    pub residuals: u64,
    /// Every layer's keys and values.
    pub kv: u64,
    /// The largest transient of one layer call (its input and output rows, projections, one chunk of
    /// attention scores, one chunk of MLP rows) plus the encoders' activations.
    pub working: u64,
    /// K/V and transient bytes per position, and the working set's part that does not grow.
    #[serde(skip)]
    per_position: u64,
    #[serde(skip)]
    fixed: u64,
}

/// Bytes the decoder keeps per traced position: residuals and K/V (the issue-level "KB per token").
pub fn trace_budget(cfg: &TextConfig, seq: usize, activation: DType) -> TraceBudget {
    let b = activation.size_in_bytes() as u64;
    let (l, h) = (cfg.num_hidden_layers as u64, cfg.hidden_size as u64);
    let n = seq as u64;
    let kv_width = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let mlp_rows = n.min(crate::model::decoder::MLP_ROWS as u64);
    let scores = crate::model::decoder::MAX_SCORES as u64 * 4;
    let fixed = mlp_rows * 3 * cfg.intermediate_size as u64 * b + 2 * scores;
    TraceBudget {
        seq,
        residuals: (l + 1) * n * h * b,
        kv: l * 2 * n * kv_width * b,
        // The encoders run before the trace exists, so their activations and the traced pass's
        // transient never add up: the larger of the two counts.
        working: (n * TRANSIENT_ROWS * h * b + fixed).max(ENCODER_HEADROOM),
        per_position: l * 2 * kv_width * b + TRANSIENT_ROWS * h * b,
        fixed,
    }
}

impl TraceBudget {
    /// Positions whose K/V and working set fit in `room`: both grow linearly with the positions over a
    /// fixed part (one chunk of MLP rows, the score chunks).
    fn fits_in(&self, room: u64) -> usize {
        (room.saturating_sub(self.fixed) / self.per_position.max(1)) as usize
    }
}

/// Rows of the hidden width a position holds, beyond the trace, while the prompt is encoded and traced:
/// the embeddings, the normed input a layer's keys and values come from, the row chunks' outputs and
/// their concatenation, and what the allocator keeps between them. Measured, not derived: the 7B-shape
/// trace of 8 141 tokens (layer calls in row chunks, cf31d96) peaked 3.96 GB over its weights, of which
/// 0.93 GB of K/V and 1.2 GB of fixed chunks: about 15 rows of 3 584 floats a position. (Before the layer
/// calls were chunked, the 3B pass over 16 316 tokens held about 4 GB besides its trace.)
const TRANSIENT_ROWS: u64 = 16;

/// Room kept for the encoders' activations (they run a bounded group of frames at a time) and the rest
/// of the process (1 GiB).
const ENCODER_HEADROOM: u64 = 1 << 30;

/// Share of the available memory a plan may fill (the rest stays for the page cache and the desktop).
const FILL: f64 = 0.85;

/// The memory the device can still give this process: `MemAvailable` on Linux for the CPU, the GPU's free
/// memory for cuda; `None` where unknown (Metal, other systems).
pub fn available_memory(device: &Device) -> Option<u64> {
    if !device.is_cpu() {
        return gpu_free_memory(device);
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(feature = "cuda")]
fn gpu_free_memory(device: &Device) -> Option<u64> {
    let d = device.as_cuda_device().ok()?;
    let (free, _total) = d.cuda_stream().context().mem_get_info().ok()?;
    Some(free as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_free_memory(_: &Device) -> Option<u64> {
    None
}

/// Refuses weights of `bytes` that the device's free memory cannot hold, before loading them (GPUs only:
/// the host's memory is the budget's business once the weights are in).
pub fn check_weights_fit(bytes: u64, dtype: DType, device: &Device) -> Result<()> {
    if device.is_cpu() {
        return Ok(());
    }
    let Some(free) = available_memory(device) else {
        return Ok(());
    };
    if bytes as f64 <= free as f64 * FILL {
        return Ok(());
    }
    let name = crate::device::device_name(device);
    Err(Error::Request {
        reason: format!(
            "the model's weights need {} as {} on {name}, but {} of its memory is free (and the trace needs \
             room beside them)",
            gb(bytes),
            crate::device::dtype_name(dtype),
            gb(free)
        ),
        fix: format!(
            "free {name} (nvidia-smi lists what uses it), load a smaller model or in bf16 (--dtype bf16), or \
             use --device cpu"
        ),
    })
}

/// Where the residuals go, from `AVFLOW_TRACE` (`memory`, `file`, else `auto`).
fn forced() -> Option<bool> {
    match std::env::var("AVFLOW_TRACE").ok()?.trim() {
        "memory" => Some(false),
        "file" => Some(true),
        _ => None,
    }
}

/// The folder spilled residuals go to: `AVFLOW_SPILL_DIR`, else `avflow/spill` in the user's cache
/// folder (a disk, where the temp folder may live in memory), else the temp folder.
pub fn spill_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AVFLOW_SPILL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(c) => c.join("avflow").join("spill"),
        None => std::env::temp_dir().join("avflow-spill"),
    }
}

/// Decides where a trace of `budget` goes given `available` bytes (`None`: unknown, so in memory as
/// before), or refuses with the numbers and the fix.
pub fn plan_trace(
    budget: &TraceBudget,
    available: Option<u64>,
    device: &Device,
) -> Result<Placement> {
    if !device.is_cpu() {
        return plan_gpu_trace(budget, available, &crate::device::device_name(device));
    }
    plan_trace_with(budget, available, forced())
}

/// A trace on a GPU lives in its memory whole (knockouts read it there): it fits, or is refused with the
/// numbers and the ways out.
fn plan_gpu_trace(budget: &TraceBudget, available: Option<u64>, name: &str) -> Result<Placement> {
    let all = budget.residuals + budget.kv + budget.working;
    match available {
        Some(avail) if all as f64 > avail as f64 * FILL => Err(Error::Request {
            reason: format!(
                "a prompt of {} positions needs {} on {name} to trace (residuals {}, keys and values {}, \
                 working set {}), but {} of its memory is free",
                budget.seq,
                gb(all),
                gb(budget.residuals),
                gb(budget.kv),
                gb(budget.working),
                gb(avail)
            ),
            fix: "analyse a shorter clip or a time range (--start/--end), lower --fps or --max-pixels, or use \
                  --device cpu (the host's memory, with the residuals in a file where needed)"
                .into(),
        }),
        _ => Ok(Placement::Memory),
    }
}

/// [`plan_trace`] with `AVFLOW_TRACE`'s choice given (`Some(true)`: to a file).
fn plan_trace_with(
    budget: &TraceBudget,
    available: Option<u64>,
    forced: Option<bool>,
) -> Result<Placement> {
    let spill = || Placement::File(spill_dir());
    if let Some(file) = forced {
        return Ok(if file { spill() } else { Placement::Memory });
    }
    let Some(avail) = available else {
        return Ok(Placement::Memory);
    };
    let room = (avail as f64 * FILL) as u64;
    let all = budget.residuals + budget.kv + budget.working;
    if all <= room {
        return Ok(Placement::Memory);
    }
    if budget.kv + budget.working <= room {
        return Ok(spill());
    }
    Err(Error::Request {
        reason: format!(
            "a prompt of {} positions needs {} in memory to trace (keys and values {}, working set {}; \
             the residuals, {}, would go to a file), but {} is available",
            budget.seq,
            gb(budget.kv + budget.working),
            gb(budget.kv),
            gb(budget.working),
            gb(budget.residuals),
            gb(avail),
        ),
        fix: format!(
            "analyse a shorter clip or a part of this one (ffmpeg -ss S -to E -i IN -c copy OUT), lower \
             --fps or --max-pixels, close other programs, or use a machine with more memory; about {} \
             positions fit here",
            budget.fits_in(room)
        ),
    })
}

/// The most positions this machine can trace for `cfg` now, and the memory available: what
/// [`plan_trace`] would accept with the residuals in a file, after `pending` more bytes (weights not yet
/// loaded; 0 once they are). `None` where the available memory is unknown.
pub fn positions_limit(
    cfg: &TextConfig,
    activation: DType,
    pending: u64,
    device: &Device,
) -> Option<(usize, u64)> {
    let avail = available_memory(device)?.saturating_sub(pending);
    let room = (avail as f64 * FILL) as u64;
    Some((positions_that_fit(cfg, activation, room), avail))
}

/// The largest prompt whose K/V and working set fit in `room` bytes (its residuals may go to a file).
fn positions_that_fit(cfg: &TextConfig, activation: DType, room: u64) -> usize {
    trace_budget(cfg, crate::model::decoder::MLP_ROWS, activation).fits_in(room)
}

/// `12.3 GB`.
pub fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// A size for people: `12.3 GB`, `221 MB`, `48 KB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => gb(b),
        b if b >= 1_000_000 => format!("{:.0} MB", b as f64 / 1e6),
        b => format!("{:.0} KB", (b as f64 / 1e3).ceil()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_3b() -> TextConfig {
        TextConfig {
            vocab_size: 151_936,
            hidden_size: 2048,
            intermediate_size: 11_008,
            num_hidden_layers: 36,
            num_attention_heads: 16,
            num_key_value_heads: 2,
            head_dim: 128,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            mrope_section: vec![16, 24, 24],
            hidden_act: "silu".into(),
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(12_345_678_901), "12.3 GB");
        assert_eq!(size(221_000_000), "221 MB");
        assert_eq!(size(47_100), "48 KB");
    }

    /// The 3B decoder's trace in f32: 37 residuals of 2048 floats and 36 layers of 2 × 256 floats per
    /// position, about 377 KB a position.
    #[test]
    fn the_3b_trace_takes_377_kb_a_position() {
        let b = trace_budget(&cfg_3b(), 1000, DType::F32);
        assert_eq!(b.residuals, 37 * 1000 * 2048 * 4);
        assert_eq!(b.kv, 36 * 2 * 1000 * 256 * 4);
        assert_eq!((b.residuals + b.kv) / 1000, 376_832);
    }

    /// In memory while it fits; residuals to a file when only they do not; refused with the numbers when
    /// even the rest does not.
    #[test]
    fn plans_memory_then_file_then_refuses() {
        let b = trace_budget(&cfg_3b(), 16_384, DType::F32);
        let gib = 1u64 << 30;
        let plan = |avail| plan_trace_with(&b, avail, None);
        assert_eq!(plan(Some(40 * gib)).unwrap(), Placement::Memory);
        assert!(matches!(plan(Some(8 * gib)).unwrap(), Placement::File(_)));
        let err = plan(Some(2 * gib)).unwrap_err().to_string();
        assert!(err.contains("16384 positions"), "{err}");
        assert!(err.contains("--fps"), "{err}");
        assert_eq!(plan(None).unwrap(), Placement::Memory);
        // The limit the refusal quotes is what the plan accepts.
        let room = 6 * gib;
        let fit = positions_that_fit(&cfg_3b(), DType::F32, (room as f64 * FILL) as u64);
        assert!(fit > 8192, "{fit}");
        assert!(err.contains("positions fit here"), "{err}");
        let at = |n| plan_trace_with(&trace_budget(&cfg_3b(), n, DType::F32), Some(room), None);
        assert!(at(fit).is_ok());
        assert!(at(fit + fit / 100 + 1).is_err());
        assert_eq!(b.fits_in((room as f64 * FILL) as u64), fit);
        // Forced either way.
        assert!(matches!(
            plan_trace_with(&b, Some(40 * gib), Some(true)).unwrap(),
            Placement::File(_)
        ));
        assert_eq!(
            plan_trace_with(&b, Some(gib), Some(false)).unwrap(),
            Placement::Memory
        );
    }

    /// On a GPU the whole trace stays in its memory: it fits, or is refused with the CPU as a way out (where
    /// residuals may go to a file); the weights are checked before they load.
    #[test]
    fn a_gpu_trace_fits_or_is_refused() {
        let b = trace_budget(&cfg_3b(), 16_384, DType::BF16);
        let gib = 1u64 << 30;
        assert_eq!(
            plan_gpu_trace(&b, Some(80 * gib), "cuda:0").unwrap(),
            Placement::Memory
        );
        let err = plan_gpu_trace(&b, Some(4 * gib), "cuda:0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cuda:0") && err.contains("--device cpu"),
            "{err}"
        );
        assert_eq!(
            plan_gpu_trace(&b, None, "metal:0").unwrap(),
            Placement::Memory
        );
        // The CPU's plan is untouched by the GPU path, and the weights' check is the GPU's only.
        assert!(check_weights_fit(u64::MAX, DType::BF16, &Device::Cpu).is_ok());
    }
}
