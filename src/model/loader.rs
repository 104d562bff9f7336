//! Finding and checking a checkpoint: a local folder or a hub id resolved into the standard Hugging Face
//! cache (hf-hub; `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` honoured).
//!
//! Only the tensors the family reads are ever touched (its `Architecture::weight_prefix`: `thinker.*` for
//! Qwen2.5-Omni): for sharded hub checkpoints only the shards holding them are fetched, and the rest (a
//! talker, a vocoder) is never mapped into tensors. Every weight file's
//! safetensors header is checked up front so a truncated download or a wrong dtype is reported with the
//! file's name and the fix, instead of failing deep inside a layer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::Architecture;

/// Files beside the weights that the prompt side needs (all optional).
const AUX_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
];

/// Where a model comes from, as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

impl ModelSource {
    /// `DIR` (an existing folder) or `owner/name[@revision]`.
    pub fn parse(s: &str) -> Result<Self> {
        let p = Path::new(s);
        if p.is_dir() {
            return Ok(ModelSource::Local(p.to_path_buf()));
        }
        if p.exists() {
            return Err(Error::Model {
                path: p.to_path_buf(),
                reason: "is a file, not a model folder".into(),
                fix: "pass the folder that holds config.json and the *.safetensors files".into(),
            });
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some((r, _)) => (r, None),
            None => (s, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let looks_like_id = parts.len() == 2
            && parts.iter().all(|x| {
                !x.is_empty()
                    && x.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !looks_like_id || s.starts_with('.') || s.starts_with('/') {
            return Err(Error::Model {
                path: p.to_path_buf(),
                reason: "no such folder, and not a hub id".into(),
                fix: "give an existing model folder or a hub id such as Qwen/Qwen2.5-Omni-3B[@revision]".into(),
            });
        }
        Ok(ModelSource::Hub {
            repo: repo.to_string(),
            revision,
        })
    }

    pub fn display(&self) -> String {
        match self {
            ModelSource::Local(p) => p.display().to_string(),
            ModelSource::Hub { repo, revision } => match revision {
                Some(r) => format!("{repo}@{r}"),
                None => repo.clone(),
            },
        }
    }
}

/// A checkpoint whose files exist locally and whose headers were checked.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub source: ModelSource,
    /// Folder holding config.json (a hub snapshot folder for hub ids).
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// What config.json describes (the family's code).
    pub arch: std::sync::Arc<dyn Architecture>,
    /// Weight files that hold the model's tensors.
    pub weight_files: Vec<PathBuf>,
    /// Every tensor the model may read: name (with its prefix) → (file, dtype, shape).
    pub tensors: BTreeMap<String, TensorEntry>,
}

/// The size and modification time of each weight file: taken before a load and compared after it, so a
/// folder that changes while it is read (a download or a copy still running) is noticed instead of giving a
/// model mixed from two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStamp(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

impl FolderStamp {
    pub fn of(files: &[PathBuf]) -> Self {
        Self(
            files
                .iter()
                .map(|f| {
                    let m = std::fs::metadata(f).ok();
                    (
                        f.clone(),
                        m.as_ref().map_or(0, |m| m.len()),
                        m.and_then(|m| m.modified().ok()),
                    )
                })
                .collect(),
        )
    }

    /// The first file that differs from `self` now, with the error to give.
    pub fn check_unchanged(&self) -> Result<()> {
        let now = Self::of(&self.0.iter().map(|e| e.0.clone()).collect::<Vec<_>>());
        match self.0.iter().zip(&now.0).find(|(a, b)| a != b) {
            None => Ok(()),
            Some((before, _)) => Err(weights_err(
                &before.0,
                "changed while the model was loading (a download or copy still running?)",
                "wait until the files are complete, then load the model again",
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub file: PathBuf,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Absolute byte range of the tensor's data in `file`.
    pub start: u64,
    pub end: u64,
}

impl ResolvedModel {
    /// Number of parameters the model reads (from the headers, without loading anything).
    pub fn parameters(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }

    /// Checks that every expected tensor is present with its shape, naming the key and its file otherwise.
    pub fn check_expected(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, shape) in expected {
            match self.tensors.get(name) {
                None => {
                    return Err(weights_err(
                        &self.dir,
                        format!("tensor {name} is missing (config.json describes a model that needs it)"),
                        "config.json and the weights come from different checkpoints, or a shard is incomplete: re-download the checkpoint",
                    ))
                }
                Some(t) if &t.shape != shape => {
                    return Err(weights_err(
                        &t.file,
                        format!("tensor {name} has shape {:?}, config.json implies {shape:?}", t.shape),
                        "config.json and the weights come from different checkpoints: re-download the checkpoint",
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A VarBuilder rooted at the family's prefix (`thinker.` stripped for Qwen2.5-Omni) that reads each
    /// tensor with positioned reads. Unlike a memory map, the file pages never count towards the process's resident memory, so
    /// loading a 9.4 GB bf16 checkpoint peaks at the size of the tensors themselves.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        let mut backend = FileBackend {
            tensors: self.tensors.clone(),
            ready: Default::default(),
        };
        let names: Vec<String> = self
            .arch
            .expected_tensors()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| self.tensors.contains_key(n))
            .collect();
        backend.prefetch(&names, dtype)?;
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        Ok(match self.arch.weight_prefix().trim_end_matches('.') {
            "" => vb,
            root => vb.pp(root),
        })
    }
}

/// Asks the kernel to back the last, partial 2 MB of a weight buffer (`len` bytes at `ptr`; all of it
/// when it is smaller) with 4 KB pages. Why: the allocator marks its arenas for transparent huge pages,
/// so the first touch of a buffer's last bytes faulted in a whole 2 MB page; over the ~700 large tensors
/// of the 3B Thinker that was ~0.5 GB of resident memory holding nothing (measured with
/// `/proc/PID/smaps_rollup`). The interior keeps its huge pages (fewer faults and TLB misses while
/// loading and multiplying).
fn no_huge_tail(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const PAGE: usize = 4096;
        let (start, end) = (ptr as usize, ptr as usize + len);
        // Below 64 KB the allocator packs buffers together: nothing to gain.
        if len < 64 << 10 || end % HUGE == 0 {
            return;
        }
        let from = (end & !(HUGE - 1)).max(start.next_multiple_of(PAGE));
        if from < end {
            // SAFETY: [from, end) lies inside this process's own allocation; MADV_NOHUGEPAGE only changes
            // how future faults are backed, never the contents. Failure just leaves huge pages (ignored).
            unsafe {
                libc::madvise(from as *mut libc::c_void, end - from, libc::MADV_NOHUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Reads tensors straight from the safetensors files (pread), converting to the requested dtype.
struct FileBackend {
    tensors: BTreeMap<String, TensorEntry>,
    /// Tensors read ahead (on the CPU, in the builder's dtype), taken by the first `get` of each.
    ready: std::sync::Mutex<std::collections::HashMap<String, Tensor>>,
}

impl FileBackend {
    /// Reads `names` on every CPU thread at once, converted to `dtype`, before the model takes them one
    /// by one: copying 9.4 GB out of the page cache (and converting it) is the load's whole cost, and
    /// one thread leaves the others idle. Peak memory is unchanged: each tensor exists once, in its
    /// final dtype.
    fn prefetch(&mut self, names: &[String], dtype: DType) -> Result<()> {
        // `AVFLOW_LOAD_THREADS` overrides (1: one tensor after another, as the model asks for them).
        let threads = std::env::var("AVFLOW_LOAD_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<candle_core::Error>> = Default::default();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    match self.read(name, dtype, &Device::Cpu) {
                        Ok(t) => {
                            if let Ok(mut m) = self.ready.lock() {
                                m.insert(name.clone(), t);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            break;
                        }
                    }
                });
            }
        });
        match failed.into_inner().ok().flatten() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// A read-ahead tensor, else one read now.
    fn take(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let ready = self.ready.lock().ok().and_then(|mut m| m.remove(name));
        match ready {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => self.read(name, dtype, dev),
        }
    }

    fn read(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        use std::os::unix::fs::FileExt;
        let t = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        let src = match t.dtype.as_str() {
            "F32" => DType::F32,
            "BF16" => DType::BF16,
            "F16" => DType::F16,
            other => candle_core::bail!("tensor {name} has unsupported dtype {other}"),
        };
        let f = std::fs::File::open(&t.file)?;
        let numel: usize = t.shape.iter().product();
        let read = |bytes: &mut [u8]| {
            f.read_exact_at(bytes, t.start).map_err(|e| {
                candle_core::Error::Msg(format!("reading {name} from {}: {e}", t.file.display()))
            })
        };
        // Read straight into the tensor's (uninitialised) buffer: one copy from the page cache, no staging
        // buffer and no zeroing pass over gigabytes of weights.
        fn fill<T: candle_core::WithDType>(
            numel: usize,
            read: impl Fn(&mut [u8]) -> candle_core::Result<()>,
            shape: &[usize],
        ) -> candle_core::Result<Tensor> {
            let mut v: Vec<T> = Vec::with_capacity(numel);
            let bytes = numel * std::mem::size_of::<T>();
            no_huge_tail(v.as_mut_ptr().cast(), bytes);
            // SAFETY: the capacity holds `bytes` bytes; read() fills all of them or fails (then the Vec
            // is dropped with length 0, never exposing uninitialised memory). f32/bf16/f16 have no invalid
            // bit patterns.
            unsafe {
                read(std::slice::from_raw_parts_mut(
                    v.as_mut_ptr() as *mut u8,
                    bytes,
                ))?;
                v.set_len(numel);
            }
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        let cpu = match src {
            DType::F32 => fill::<f32>(numel, read, &t.shape)?,
            DType::BF16 => fill::<half::bf16>(numel, read, &t.shape)?,
            _ => fill::<half::f16>(numel, read, &t.shape)?,
        };
        cpu.to_dtype(dtype)?.to_device(dev)
    }
}

impl candle_nn::var_builder::SimpleBackend for FileBackend {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.take(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "shape mismatch for {name}: expected {s:?}, found {:?}",
                t.shape()
            )
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Resolves a model source to local files (downloading Thinker files from the hub when allowed) and checks
/// config and weight headers.
pub fn resolve(source: &ModelSource) -> Result<ResolvedModel> {
    match source {
        ModelSource::Local(dir) => resolve_dir(source.clone(), dir),
        ModelSource::Hub { repo, revision } => {
            let dir = fetch_from_hub(repo, revision.as_deref())?;
            resolve_dir(source.clone(), &dir)
        }
    }
}

fn model_err(dir: &Path, reason: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::Model {
        path: dir.to_path_buf(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

fn weights_err(file: &Path, reason: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::Weights {
        path: file.to_path_buf(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

/// Resolves a local folder in the standard layout.
pub fn resolve_dir(source: ModelSource, dir: &Path) -> Result<ResolvedModel> {
    if !dir.is_dir() {
        return Err(model_err(
            dir,
            "not a folder",
            "pass the folder that holds config.json",
        ));
    }
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(model_err(
            dir,
            "has no config.json",
            "pass a Hugging Face checkpoint folder (config.json + *.safetensors), e.g. a download of Qwen/Qwen2.5-Omni-3B",
        ));
    }
    let arch = crate::model::read_architecture(&config_path)?;
    let prefix = arch.weight_prefix();
    let expected: BTreeSet<String> = arch
        .expected_tensors()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let files = weight_files(dir, prefix)?;
    let mut tensors = BTreeMap::new();
    let mut used_files = Vec::new();
    for f in &files {
        let header = read_header(f)?;
        let mut any = false;
        for (name, entry) in header {
            if !name.starts_with(prefix) {
                continue;
            }
            if !matches!(entry.dtype.as_str(), "F32" | "BF16" | "F16") {
                // Integer buffers the model never reads (a BERT's `position_ids`) are left alone.
                if !expected.contains(&name) {
                    continue;
                }
                return Err(weights_err(
                    f,
                    format!(
                        "tensor {name} has dtype {} (expected F32, BF16 or F16)",
                        entry.dtype
                    ),
                    "this is not a checkpoint as released; re-export it with float weights",
                ));
            }
            any = true;
            tensors.insert(name, entry);
        }
        if any {
            used_files.push(f.clone());
        }
    }
    if tensors.is_empty() {
        return Err(model_err(
            dir,
            format!("its weights hold no `{prefix}*` tensors"),
            arch.checkpoint_hint(),
        ));
    }
    Ok(ResolvedModel {
        source,
        dir: dir.to_path_buf(),
        config_path,
        arch,
        weight_files: used_files,
        tensors,
    })
}

/// The safetensors files of a folder: the shards named by `model.safetensors.index.json`, else the single
/// `model.safetensors`, else every `*.safetensors`.
fn weight_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let shards = shards_from_index(&index, prefix)?;
        let mut out = Vec::new();
        for s in shards {
            let p = dir.join(&s);
            if !p.exists() {
                return Err(weights_err(
                    &p,
                    format!("shard listed in {} is missing", index.display()),
                    "the download is incomplete: fetch the missing shard again (or delete the folder and re-download)",
                ));
            }
            out.push(p);
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    all.sort();
    if all.is_empty() {
        return Err(model_err(
            dir,
            "has no *.safetensors weights",
            "download the weights too (model.safetensors or the shards with model.safetensors.index.json)",
        ));
    }
    Ok(all)
}

/// Shard names listed in an index, only those that hold tensors named `prefix*`, in a stable order.
pub fn shards_from_index(index: &Path, prefix: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| Error::io(format!("reading {}", index.display()), e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        weights_err(
            index,
            format!("not valid JSON: {e}"),
            "re-download the index file",
        )
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            weights_err(
                index,
                "has no `weight_map` object",
                "re-download the index file",
            )
        })?;
    let mut shards = BTreeSet::new();
    for (name, file) in map {
        if name.starts_with(prefix) {
            let f = file.as_str().ok_or_else(|| {
                weights_err(
                    index,
                    format!("weight_map[{name}] is not a file name"),
                    "re-download the index file",
                )
            })?;
            if f.contains('/') || f.contains("..") {
                return Err(weights_err(
                    index,
                    format!("unsafe shard name {f:?}"),
                    "re-download the index file",
                ));
            }
            shards.insert(f.to_string());
        }
    }
    Ok(shards.into_iter().collect())
}

/// Reads and checks one safetensors header: valid JSON, offsets inside the file, file not truncated.
pub fn read_header(file: &Path) -> Result<BTreeMap<String, TensorEntry>> {
    let fix_trunc = "the file is truncated or corrupt: delete it and download it again";
    let mut f = std::fs::File::open(file)
        .map_err(|e| Error::io(format!("opening {}", file.display()), e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?
        .len();
    let mut n = [0u8; 8];
    if len < 8 || f.read_exact(&mut n).is_err() {
        return Err(weights_err(
            file,
            format!("only {len} bytes, no safetensors header"),
            fix_trunc,
        ));
    }
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || 8 + n > len {
        return Err(weights_err(
            file,
            format!("header claims {n} bytes but the file has {len}"),
            fix_trunc,
        ));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    let v: Value = serde_json::from_slice(&buf)
        .map_err(|e| weights_err(file, format!("header is not valid JSON: {e}"), fix_trunc))?;
    let obj = v
        .as_object()
        .ok_or_else(|| weights_err(file, "header is not a JSON object", fix_trunc))?;
    let data_len = len - 8 - n;
    let mut out = BTreeMap::new();
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .unwrap_or("?")
            .to_string();
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|u| u as usize))
                    .collect()
            })
            .unwrap_or_default();
        let offs: Vec<u64> = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        if offs.len() != 2 || offs[0] > offs[1] {
            return Err(weights_err(
                file,
                format!("tensor {name} has bad data_offsets"),
                fix_trunc,
            ));
        }
        if offs[1] > data_len {
            return Err(weights_err(
                file,
                format!(
                    "tensor {name} ends at byte {} but only {data_len} bytes of data are present (file truncated)",
                    offs[1]
                ),
                fix_trunc,
            ));
        }
        let elem = match dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            _ => 1,
        };
        let numel: usize = shape.iter().product();
        if (offs[1] - offs[0]) as usize != numel * elem {
            return Err(weights_err(
                file,
                format!(
                    "tensor {name}: shape {shape:?} of {dtype} does not match its {} bytes",
                    offs[1] - offs[0]
                ),
                fix_trunc,
            ));
        }
        out.insert(
            name.clone(),
            TensorEntry {
                file: file.to_path_buf(),
                dtype,
                shape,
                start: 8 + n + offs[0],
                end: 8 + n + offs[1],
            },
        );
    }
    Ok(out)
}

fn hub_cache() -> hf_hub::Cache {
    match std::env::var("HF_HUB_CACHE") {
        Ok(p) if !p.is_empty() => hf_hub::Cache::new(PathBuf::from(p)),
        _ => hf_hub::Cache::from_env(),
    }
}

/// The snapshot folder of a cached repo: `models--org--name/snapshots/<commit>`, where the commit is the
/// revision itself (a 40-hex hash) or what `refs/<revision>` names.
fn cached_snapshot(cache: &Path, repo_id: &str, rev: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let commit = if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
        rev.to_string()
    } else {
        std::fs::read_to_string(repo.join("refs").join(rev))
            .ok()?
            .trim()
            .to_string()
    };
    let dir = repo.join("snapshots").join(commit);
    dir.join("config.json").exists().then_some(dir)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// Brings config, the shards holding the model's tensors and tokenizer files of a hub repo into the cache; returns the snapshot
/// folder. With `HF_HUB_OFFLINE=1` only the cache is consulted.
pub fn fetch_from_hub(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let rev = revision.unwrap_or("main").to_string();
    let repo =
        hf_hub::Repo::with_revision(repo_id.to_string(), hf_hub::RepoType::Model, rev.clone());
    let hub_err = |reason: String, fix: &str| Error::Hub {
        id: format!("{repo_id}@{rev}"),
        reason,
        fix: fix.to_string(),
    };
    let cache = hub_cache();
    if offline() {
        let dir = cached_snapshot(cache.path(), repo_id, &rev).ok_or_else(|| {
            hub_err(
                format!("HF_HUB_OFFLINE is set and the model is not in the cache at {}", cache.path().display()),
                "unset HF_HUB_OFFLINE to download, or point HF_HOME / HF_HUB_CACHE at a cache that has the model",
            )
        })?;
        let index = dir.join("model.safetensors.index.json");
        let prefix = crate::model::read_architecture(&dir.join("config.json"))?.weight_prefix();
        if index.exists() {
            for s in shards_from_index(&index, prefix)? {
                if !dir.join(&s).exists() {
                    return Err(hub_err(
                        format!("shard {s} is not in the cache and HF_HUB_OFFLINE is set"),
                        "unset HF_HUB_OFFLINE to download the missing shard",
                    ));
                }
            }
        }
        return Ok(dir);
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(true)
        .build()
        .map_err(|e| hub_err(e.to_string(), "check HF_HOME and HF_ENDPOINT"))?;
    let r = api.repo(repo);
    let net_fix = "check the id and your network (or set HF_HUB_OFFLINE=1 to use the cache only); gated models need HF_TOKEN or `huggingface-cli login`";
    let config = r
        .get("config.json")
        .map_err(|e| hub_err(e.to_string(), net_fix))?;
    let prefix = crate::model::read_architecture(&config)?.weight_prefix();
    match r.get("model.safetensors.index.json") {
        Ok(index) => {
            for s in shards_from_index(&index, prefix)? {
                r.get(&s)
                    .map_err(|e| hub_err(format!("shard {s}: {e}"), net_fix))?;
            }
        }
        Err(_) => {
            r.get("model.safetensors")
                .map_err(|e| hub_err(format!("model.safetensors: {e}"), net_fix))?;
        }
    }
    for f in AUX_FILES {
        let _ = r.get(f); // optional files: absent ones are fine
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight file that grows (a download still running) or is rewritten between the stamp and the check
    /// is named in the error; an untouched folder passes.
    #[test]
    fn a_folder_changing_under_a_load_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model-00001-of-00002.safetensors");
        std::fs::write(&f, b"0123").unwrap();
        let stamp = FolderStamp::of(std::slice::from_ref(&f));
        assert!(stamp.check_unchanged().is_ok());
        std::fs::write(&f, b"0123456789").unwrap();
        let e = stamp.check_unchanged().unwrap_err().to_string();
        assert!(
            e.contains("model-00001-of-00002.safetensors") && e.contains("changed"),
            "{e}"
        );
        std::fs::remove_file(&f).unwrap();
        assert!(stamp.check_unchanged().is_err());
    }

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("Qwen/Qwen2.5-Omni-3B@abc123").unwrap(),
            ModelSource::Hub {
                repo: "Qwen/Qwen2.5-Omni-3B".into(),
                revision: Some("abc123".into())
            }
        );
        assert!(ModelSource::parse("no/such/folder").is_err());
        assert!(ModelSource::parse("./nothing-here").is_err());
    }
}
