//! A processor's tensors, for every family: reading them from an inputs file (errors that name the file,
//! integer tensors as numbers, `[n, 3]` grids of positive entries, an optional leading batch of one) and
//! laying out the patch rows of several pictures with their grids.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// An inputs file that does not hold what the family's processor writes.
pub fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Inputs {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every value of an integer (or float) tensor as `i64`.
pub fn ints(t: &Tensor) -> Result<Vec<i64>> {
    Ok(t.to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|x| x as i64)
        .collect())
}

/// `[t, h, w]` rows of a grid tensor's values (`name` for the error), each entry positive.
pub fn grid_rows(path: &Path, name: &str, v: &[i64]) -> Result<Vec<[usize; 3]>> {
    v.chunks(3)
        .map(|c| {
            if c.len() != 3 || c.iter().any(|&x| x <= 0) {
                Err(err(path, format!("{name} has a non-positive entry {c:?}")))
            } else {
                Ok([c[0] as usize, c[1] as usize, c[2] as usize])
            }
        })
        .collect()
}

/// Drops leading batch dimensions of size one until the tensor has `rank` dims.
pub fn unbatch(path: &Path, name: &str, t: &Tensor, rank: usize) -> Result<Tensor> {
    let mut t = t.clone();
    while t.rank() > rank {
        if t.dim(0)? != 1 {
            return Err(err(
                path,
                format!(
                    "{name} has shape {:?}: only a batch of one prompt is supported",
                    t.dims()
                ),
            ));
        }
        t = t.squeeze(0)?;
    }
    if t.rank() != rank {
        return Err(err(
            path,
            format!("{name} has shape {:?}, expected {rank} dims", t.dims()),
        ));
    }
    Ok(t)
}

/// Inserts the videos' patch rows and grids under the processors' shared names
/// (`pixel_values_videos`, `video_grid_thw`) and each video's seconds per temporal grid step under
/// `seconds_name` (the families name it, and type it, differently); nothing when there are none.
pub fn insert_videos<T: candle_core::WithDType>(
    m: &mut HashMap<String, Tensor>,
    parts: &[Tensor],
    grids: Vec<i64>,
    (seconds_name, seconds): (&str, Vec<T>),
    device: &Device,
) -> Result<()> {
    let k = insert_patches(
        m,
        ("pixel_values_videos", "video_grid_thw"),
        parts,
        grids,
        device,
    )?;
    if k > 0 {
        m.insert(seconds_name.into(), Tensor::from_vec(seconds, k, device)?);
    }
    Ok(())
}

/// Inserts the patch rows of several videos or images (concatenated, in prompt order) under `pixels` and
/// their `[t, h, w]` grids (`[k, 3]`, i64) under `grid`; nothing when there are none. Returns `k`.
pub fn insert_patches(
    m: &mut HashMap<String, Tensor>,
    (pixels, grid): (&str, &str),
    parts: &[Tensor],
    grids: Vec<i64>,
    device: &Device,
) -> Result<usize> {
    if parts.is_empty() {
        return Ok(0);
    }
    let k = grids.len() / 3;
    m.insert(pixels.into(), Tensor::cat(parts, 0)?);
    m.insert(grid.into(), Tensor::from_vec(grids, (k, 3), device)?);
    Ok(k)
}
