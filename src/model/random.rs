//! Random-weight checkpoints in the hub layout, for benchmarks at a released model's real dimensions
//! without downloading it: the architecture's own `config.json` and every tensor it reads, bf16, in shards of
//! at most 2 GB with their index.

use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::model::Architecture;

/// Writes a random-weight checkpoint (bf16, shards of ≤ 2 GB + index) in the hub layout.
pub fn write_random_checkpoint(arch: &dyn Architecture, dir: &Path, seed: u64) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    crate::tensor_io::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&arch.hub_config())?.as_bytes(),
    )?;
    let tensors = arch.expected_tensors();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let limit: usize = 2_000_000_000;
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![vec![]];
    let mut size = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        if size + bytes > limit && !shards.last().is_some_and(|s| s.is_empty()) {
            shards.push(vec![]);
            size = 0;
        }
        size += bytes;
        if let Some(s) = shards.last_mut() {
            s.push((name, shape));
        }
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let fname = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, shape) in shard {
            let numel: usize = shape.iter().product();
            let is_norm = name.ends_with("norm.weight")
                || name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight")
                || name.ends_with("ln_q.weight")
                || name.contains("layer_norm.weight")
                || name.ends_with("ln_post.weight");
            let mut bytes = Vec::with_capacity(numel * 2);
            for _ in 0..numel {
                let x: f32 = if is_norm {
                    1.0
                } else {
                    rng.random_range(-0.035f32..0.035)
                };
                bytes.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
            total += bytes.len();
            weight_map.insert(name.clone(), serde_json::Value::String(fname.clone()));
            data.push((name.clone(), shape.clone(), bytes));
        }
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(name, shape, bytes)| {
                Ok((
                    name.clone(),
                    TensorView::new(Dtype::BF16, shape.clone(), bytes)?,
                ))
            })
            .collect::<std::result::Result<_, safetensors::SafeTensorError>>()
            .map_err(|e| Error::Other(format!("random checkpoint: {e}")))?;
        let path = dir.join(&fname);
        safetensors::serialize_to_file(views, None, &path)
            .map_err(|e| Error::Other(format!("writing {}: {e}", path.display())))?;
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    crate::tensor_io::write_atomic(
        &dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?.as_bytes(),
    )?;
    Ok(())
}
