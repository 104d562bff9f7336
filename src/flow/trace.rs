//! A traced baseline run: per layer, the residual entering it and its post-rotary K/V, so that edits can
//! replay from any layer and recompute only the positions they can change.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::decoder::{top_k, AttnMask, Decoder, KvPair, PositionIds, Rotary};

/// Everything a knockout or a drop needs from the unedited run.
pub struct Trace {
    pub seq_len: usize,
    pub position_ids: PositionIds,
    pub rot: Rotary,
    /// Layer `l`'s entering residual `[seq, hidden]`; layer `L`'s leaves the last layer.
    pub residuals: Residuals,
    /// `kv[l]`: keys/values of layer `l` for every position.
    pub kv: Vec<KvPair>,
    /// Baseline next-token logits at the last position (f32 `[vocab]`).
    pub last_logits: Tensor,
    pub top1_id: u32,
}

impl Trace {
    /// Runs the decoder once over `embeds`, keeping what later edits reuse (residuals in memory).
    pub fn run(decoder: &Decoder, embeds: &Tensor, position_ids: &PositionIds) -> Result<Self> {
        Self::run_placed(decoder, embeds, position_ids, &Placement::Memory)
    }

    /// [`Self::run`] with the residuals kept where `placement` says.
    pub fn run_placed(
        decoder: &Decoder,
        embeds: &Tensor,
        position_ids: &PositionIds,
        placement: &Placement,
    ) -> Result<Self> {
        let seq_len = embeds.dim(0)?;
        if seq_len != position_ids.len() || seq_len == 0 {
            return Err(Error::Prompt(format!(
                "{} embeddings but {} position ids",
                seq_len,
                position_ids.len()
            )));
        }
        let rot = decoder.rotary(position_ids)?;
        decoder.prepare_products(seq_len, seq_len);
        let mut x = embeds.to_dtype(decoder.dtype())?;
        let mut residuals = ResidualWriter::new(placement, decoder.num_layers() + 1, &x)?;
        let mut kv = Vec::with_capacity(decoder.num_layers());
        for l in 0..decoder.num_layers() {
            residuals.push(&x)?;
            let out = decoder
                .layer(l)
                .forward(&x, &rot, None, &AttnMask::Causal, false)?;
            kv.push(out.kv);
            x = out.hidden;
        }
        residuals.push(&x)?;
        let residuals = residuals.finish()?;
        let last = decoder.final_norm(&x.narrow(0, seq_len - 1, 1)?)?;
        let last_logits = decoder.logits(&last)?.squeeze(0)?;
        let top1_id = top_k(&last_logits, 1)?[0].0;
        Ok(Trace {
            seq_len,
            position_ids: position_ids.clone(),
            rot,
            residuals,
            kv,
            last_logits,
            top1_id,
        })
    }

    /// Bytes of the trace (residuals wherever they are, and K/V).
    pub fn memory_bytes(&self) -> usize {
        self.residuals.bytes() + self.kv_bytes()
    }

    /// Bytes of the traced keys and values (always in memory: every knockout reads them).
    pub fn kv_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        self.kv.iter().map(|k| t(&k.k) + t(&k.v)).sum::<usize>()
    }

    /// Probability of `token` at the last position in the baseline run.
    pub fn base_prob(&self, token: u32) -> Result<f32> {
        prob_of(&self.last_logits, token)
    }
}

/// Softmax probability of `token` in a logits row.
pub fn prob_of(logits: &Tensor, token: u32) -> Result<f32> {
    let v = logits.dim(0)?;
    if token as usize >= v {
        return Err(Error::Prompt(format!(
            "token id {token} is outside the vocabulary ({v})"
        )));
    }
    let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    Ok(p.get(token as usize)?.to_scalar::<f32>()?)
}

/// Where a trace keeps its residual stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In memory (tensors on the decoder's device).
    Memory,
    /// In a file in this folder, mapped from the page cache: the kernel keeps what fits and reads the
    /// rest back from disk, where in memory the process would be killed. Knockouts read a few rows of
    /// one layer; the lens heatmap streams every layer once.
    File(PathBuf),
}

/// The residual stream a trace keeps: `layers + 1` matrices `[seq, hidden]` in the decoder's dtype.
pub struct Residuals {
    store: Store,
    count: usize,
    seq: usize,
    hidden: usize,
    dtype: DType,
    device: Device,
}

enum Store {
    Memory(Vec<Tensor>),
    /// Layer-major rows in a file; `path` for the record (on Unix it is unlinked once mapped, so no
    /// file outlives the process).
    Mapped {
        map: memmap2::Mmap,
        path: PathBuf,
    },
}

impl Residuals {
    /// How many residuals: the decoder's layers + 1.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Rows `start..start + len` of residual `l`.
    pub fn rows(&self, l: usize, start: usize, len: usize) -> Result<Tensor> {
        self.check(l, start + len)?;
        match &self.store {
            Store::Memory(v) => Ok(v[l].narrow(0, start, len)?),
            Store::Mapped { map, .. } => {
                let row = self.hidden * self.dtype.size_in_bytes();
                let at = (l * self.seq + start) * row;
                Ok(Tensor::from_raw_buffer(
                    &map[at..at + len * row],
                    self.dtype,
                    &[len, self.hidden],
                    &self.device,
                )?)
            }
        }
    }

    /// The whole residual `l` (`[seq, hidden]`); residual 0 is the embeddings in the decoder's dtype.
    pub fn layer(&self, l: usize) -> Result<Tensor> {
        self.rows(l, 0, self.seq)
    }

    /// The given rows of residual `l`, in that order.
    pub fn select(&self, l: usize, rows: &[usize]) -> Result<Tensor> {
        match &self.store {
            Store::Memory(v) => {
                self.check(l, 0)?;
                let idx = crate::model::decoder::index_tensor(rows, &self.device)?;
                Ok(v[l].index_select(&idx, 0)?)
            }
            Store::Mapped { .. } => {
                let parts = rows
                    .iter()
                    .map(|&r| self.rows(l, r, 1))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&parts, 0)?)
            }
        }
    }

    /// Bytes of the residuals, wherever they are.
    pub fn bytes(&self) -> usize {
        self.count * self.seq * self.hidden * self.dtype.size_in_bytes()
    }

    /// The file the residuals were spilled to (`None`: in memory).
    pub fn file(&self) -> Option<&Path> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Mapped { path, .. } => Some(path),
        }
    }

    fn check(&self, l: usize, end: usize) -> Result<()> {
        if l >= self.count || end > self.seq {
            return Err(Error::Other(format!(
                "residual {l} rows ..{end} asked of a trace with {} residuals of {} rows",
                self.count, self.seq
            )));
        }
        Ok(())
    }
}

/// Collects a trace's residuals as the layers produce them.
struct ResidualWriter {
    out: Residuals,
    memory: Vec<Tensor>,
    file: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    pushed: usize,
}

impl ResidualWriter {
    fn new(placement: &Placement, count: usize, first: &Tensor) -> Result<Self> {
        let (seq, hidden) = first.dims2()?;
        let file = match placement {
            Placement::Memory => None,
            Placement::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| spill_error(dir, &e))?;
                let path = dir.join(format!(
                    "trace-{}-{}.residuals",
                    std::process::id(),
                    SPILLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                // Read as well as written: the same handle is mapped once the trace is done.
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| spill_error(dir, &e))?;
                Some((std::io::BufWriter::with_capacity(1 << 22, f), path))
            }
        };
        Ok(Self {
            out: Residuals {
                store: Store::Memory(Vec::new()),
                count,
                seq,
                hidden,
                dtype: first.dtype(),
                device: first.device().clone(),
            },
            memory: Vec::with_capacity(count),
            file,
            pushed: 0,
        })
    }

    fn push(&mut self, x: &Tensor) -> Result<()> {
        self.pushed += 1;
        let Some((w, path)) = &mut self.file else {
            self.memory.push(x.clone());
            return Ok(());
        };
        let flat = x.flatten_all()?;
        let written = match flat.dtype() {
            DType::F32 => write_le(w, &flat.to_vec1::<f32>()?, f32::to_le_bytes),
            DType::BF16 => write_le(w, &flat.to_vec1::<half::bf16>()?, half::bf16::to_le_bytes),
            DType::F16 => write_le(w, &flat.to_vec1::<half::f16>()?, half::f16::to_le_bytes),
            other => {
                return Err(Error::Other(format!(
                    "residuals in {other:?} cannot be spilled to a file"
                )))
            }
        };
        written.map_err(|e| spill_error(path.parent().unwrap_or(Path::new(".")), &e))
    }

    fn finish(mut self) -> Result<Residuals> {
        if self.pushed != self.out.count {
            return Err(Error::Other(format!(
                "a trace kept {} residuals, expected {}",
                self.pushed, self.out.count
            )));
        }
        self.out.store = match self.file.take() {
            None => Store::Memory(std::mem::take(&mut self.memory)),
            Some((w, path)) => {
                let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                let f = w.into_inner().map_err(|e| spill_error(&dir, e.error()))?;
                f.sync_data().map_err(|e| spill_error(&dir, &e))?;
                // Safety: the file is this process's own, written above and never written again; it is
                // unlinked at once on Unix (the mapping keeps its pages), removed when dropped elsewhere.
                let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| spill_error(&dir, &e))?;
                #[cfg(unix)]
                let _ = std::fs::remove_file(&path);
                Store::Mapped { map, path }
            }
        };
        Ok(self.out)
    }
}

impl Drop for Residuals {
    fn drop(&mut self) {
        if let Store::Mapped { path, .. } = &self.store {
            // Already gone on Unix; elsewhere the mapping must close first, so this may fail quietly.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `values` little-endian, 64 K values at a time (the layout [`Residuals::rows`] reads back).
fn write_le<T: Copy, const N: usize>(
    w: &mut impl Write,
    values: &[T],
    bytes: fn(T) -> [u8; N],
) -> std::io::Result<()> {
    for chunk in values.chunks(1 << 16) {
        let buf: Vec<u8> = chunk.iter().flat_map(|&v| bytes(v)).collect();
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Numbers the spill files of one process.
static SPILLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn spill_error(dir: &Path, e: &std::io::Error) -> Error {
    Error::Request {
        reason: format!(
            "the trace's residuals could not be written to {}: {e}",
            dir.display()
        ),
        fix: "free disk space there, or set AVFLOW_SPILL_DIR to a folder on a disk with room \
              (the residuals take layers + 1 rows of the hidden size per position)"
            .into(),
    }
}
