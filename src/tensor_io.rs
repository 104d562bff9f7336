//! Reading and writing safetensors files of loose tensors (processor inputs, results), atomically.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// The largest file of loose tensors avflow reads whole. A prompt of the released models' longest context
/// (128 k positions, every one a video patch group: 4 × 1 176 f32) holds about 2.4 GB of media tensors, and
/// results are far smaller; anything beyond this is a mistake (a checkpoint shard, a wrong file) that would
/// otherwise be copied into memory before its shapes are checked.
pub const MAX_LOOSE_BYTES: u64 = 4 << 30;

/// Loads every tensor of a safetensors file onto `device`, with a clear error naming the file.
pub fn load(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(_) => {
            return Err(Error::Inputs {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            })
        }
    };
    if len > MAX_LOOSE_BYTES {
        return Err(Error::Inputs {
            path: path.to_path_buf(),
            reason: format!(
                "is {:.1} GB, more than any prompt's tensors (at most {} GB): not an inputs file. Fix: pass the \
                 file avflow prepare (or the model's processor) wrote",
                len as f64 / 1e9,
                MAX_LOOSE_BYTES >> 30
            ),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| Error::Inputs {
        path: path.to_path_buf(),
        reason: format!(
            "not a readable safetensors file ({e}); write it with safetensors' save_file"
        ),
    })
}

/// Writes tensors to `path` through a temporary file in the same folder and a rename, so an interrupted
/// write never leaves a half file where a result was.
pub fn save_atomic(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = temp_beside(path)?;
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| Error::Inputs {
        path: tmp.clone(),
        reason: format!("cannot write: {e}"),
    })?;
    persist(&tmp, path)
}

/// Writes bytes atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = temp_beside(path)?;
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    persist(&tmp, path)
}

/// A temporary path in the destination's folder (created if needed), so the final rename is atomic.
fn temp_beside(path: &Path) -> Result<std::path::PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("out"),
        std::process::id()
    )))
}

fn persist(tmp: &Path, path: &Path) -> Result<()> {
    if let Ok(f) = std::fs::File::open(tmp) {
        let _ = f.sync_all();
    }
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::io(format!("moving the result to {}", path.display()), e)
    })
}
