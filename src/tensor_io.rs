//! Reading and writing safetensors files of loose tensors (processor inputs, results), atomically.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Loads every tensor of a safetensors file onto `device`, with a clear error naming the file.
pub fn load(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::Inputs {
            path: path.to_path_buf(),
            reason: "no such file".into(),
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
