//! The Qwen2.5-VL vision tower both families share (Qwen2.5-Omni's Thinker and video-SALMONN 2+): 3-D patch
//! embedding, 2-D rotary, window attention with a few full-attention blocks, and the 2×2 patch merger.
//!
//! Port of `Qwen2_5OmniVisionEncoder` / `Qwen2_5_VisionTransformerPretrainedModel` and transformers'
//! `vision_utils.get_vision_window_index` / `get_vision_position_ids` / `get_vision_cu_seqlens`:
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py>
//! The two checkpoints differ only in the attention's input projection: Qwen2.5-Omni stores `attn.q`,
//! `attn.k`, `attn.v`; Qwen2.5-VL one fused `attn.qkv` (`[3·d, d]`, q then k then v), split here at load.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::config::VisionConfig;
use crate::model::decoder::index_tensor;
use crate::model::nn::{
    apply_rotary_f32, compute_dtype, linear, qkv_heads, segment_attention, Act, GatedMlp, Lin,
    RmsNorm,
};

/// Window permutation over merged units and the cumulative window boundaries in patches.
///
/// Mirrors `get_vision_window_index`, including its always-applied padding (a grid that divides evenly
/// still gets an empty padded window, removed by the final `unique_consecutive`).
pub fn window_index(
    grids: &[[usize; 3]],
    merge: usize,
    window_size: usize,
    patch: usize,
) -> (Vec<usize>, Vec<usize>) {
    let vws = window_size / merge / patch;
    let unit = merge * merge;
    let mut index = Vec::new();
    let mut cu = vec![0usize];
    let mut base = 0;
    for &[t, h, w] in grids {
        let (lh, lw) = (h / merge, w / merge);
        let nwh = (lh + vws - lh % vws) / vws;
        let nww = (lw + vws - lw % vws) / vws;
        for ti in 0..t {
            for wh in 0..nwh {
                for ww in 0..nww {
                    let mut count = 0;
                    for r in wh * vws..((wh + 1) * vws).min(lh) {
                        for c in ww * vws..((ww + 1) * vws).min(lw) {
                            index.push(base + ti * lh * lw + r * lw + c);
                            count += 1;
                        }
                    }
                    let last = *cu.last().unwrap_or(&0);
                    cu.push(last + count * unit);
                }
            }
        }
        base += t * lh * lw;
    }
    cu.dedup();
    (index, cu)
}

/// (h, w) rotary coordinates of every patch in the processor's block-major order.
pub fn patch_positions(grids: &[[usize; 3]], merge: usize) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        let mut one = Vec::with_capacity(h * w);
        for hb in 0..h / merge {
            for wb in 0..w / merge {
                for i in 0..merge {
                    for j in 0..merge {
                        one.push([hb * merge + i, wb * merge + j]);
                    }
                }
            }
        }
        for _ in 0..t {
            out.extend_from_slice(&one);
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Block {
    norm1: RmsNorm,
    norm2: RmsNorm,
    q: Lin,
    k: Lin,
    v: Lin,
    proj: Lin,
    mlp: GatedMlp,
    heads: usize,
}

impl Block {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let a = vb.pp("attn");
        let [q, k, v] = if a.contains_tensor("qkv.weight") {
            let qkv = a.pp("qkv");
            let w = qkv.get((3 * d, d), "weight")?;
            let b = qkv.get(3 * d, "bias")?.to_dtype(compute_dtype(&a))?;
            let part = |i: usize| -> Result<Lin> {
                Ok(Lin::from_weight(
                    w.narrow(0, i * d, d)?.contiguous()?,
                    Some(b.narrow(0, i * d, d)?.contiguous()?),
                ))
            };
            [part(0)?, part(1)?, part(2)?]
        } else {
            [
                linear(d, d, true, a.pp("q"))?,
                linear(d, d, true, a.pp("k"))?,
                linear(d, d, true, a.pp("v"))?,
            ]
        };
        Ok(Self {
            norm1: RmsNorm::new(d, 1e-6, vb.pp("norm1"))?,
            norm2: RmsNorm::new(d, 1e-6, vb.pp("norm2"))?,
            q,
            k,
            v,
            proj: linear(d, d, true, a.pp("proj"))?,
            mlp: GatedMlp::new(
                d,
                cfg.intermediate_size,
                true,
                Act::from_name(&cfg.hidden_act)?,
                vb.pp("mlp"),
            )?,
            heads: cfg.num_heads,
        })
    }

    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, bounds: &[usize]) -> Result<Tensor> {
        let hd = x.dim(1)? / self.heads;
        let h = self.norm1.forward(x)?;
        let [q, k, v] = qkv_heads(&h, &self.q, &self.k, &self.v, self.heads)?;
        let q = apply_rotary_f32(&q, cos, sin)?;
        let k = apply_rotary_f32(&k, cos, sin)?;
        let bf16 = self.q.weight().dtype() == DType::BF16;
        let attn = segment_attention(&q, &k, &v, bounds, 1.0 / (hd as f64).sqrt(), bf16)?;
        let x = (x + self.proj.forward(&attn)?)?;
        let h = self.mlp.forward(&self.norm2.forward(&x)?)?;
        Ok((x + h)?)
    }
}

#[derive(Debug, Clone)]
pub struct VisionEncoder {
    cfg: VisionConfig,
    /// The Conv3d patch embedding as a linear layer `[hidden, C·Tp·P·P]` (no bias).
    patch_embed: Lin,
    /// Activations' dtype (f32 on the CPU, the weights' elsewhere).
    dtype: DType,
    blocks: Vec<Block>,
    ln_q: RmsNorm,
    mlp0: Lin,
    mlp2: Lin,
    inv_freq: Vec<f32>,
}

impl VisionEncoder {
    /// `vb` at `visual`.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let (c, tp, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        // Conv3d with kernel == stride over a pre-cut patch is a matmul with the flattened kernel.
        let w = vb.pp("patch_embed.proj").get((d, c, tp, p, p), "weight")?;
        let patch_embed = Lin::from_weight(w.reshape((d, c * tp * p * p))?, None);
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let merged = d * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let m = vb.pp("merger");
        let hd = d / cfg.num_heads;
        let spatial = hd / 2;
        let inv_freq = (0..spatial / 2)
            .map(|j| 1.0f32 / (cfg.rope_theta as f32).powf((2 * j) as f32 / spatial as f32))
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed,
            dtype: compute_dtype(&vb),
            blocks,
            ln_q: RmsNorm::new(d, 1e-6, m.pp("ln_q"))?,
            mlp0: linear(merged, merged, true, m.pp("mlp.0"))?,
            mlp2: linear(merged, cfg.out_hidden_size, true, m.pp("mlp.2"))?,
            inv_freq,
        })
    }

    /// Tokens per item after merging.
    pub fn tokens_for(&self, grid: [usize; 3]) -> usize {
        grid[0] * grid[1] * grid[2] / (self.cfg.spatial_merge_size * self.cfg.spatial_merge_size)
    }

    /// `pixels`: `[Σ t·h·w, C·Tp·P·P]` as the processor returns; `grids`: (t, h, w) per item in patches.
    /// Returns merged embeddings `[Σ tokens, out_hidden_size]` in the items' original order.
    ///
    /// Nothing in the tower crosses a temporal step (windows and full attention stay inside one frame
    /// pair), so a long video runs a group of steps at a time, at most [`VISION_PATCHES`] patches each:
    /// the tower's memory stays that of a short clip however long the video.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        self.forward_in_groups(pixels, grids, VISION_PATCHES)
    }

    /// [`Self::forward`] with at most `limit` patches a group (a step larger than that runs alone).
    fn forward_in_groups(
        &self,
        pixels: &Tensor,
        grids: &[[usize; 3]],
        limit: usize,
    ) -> Result<Tensor> {
        let total: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        if total <= limit || pixels.dim(0)? != total {
            return self.forward_all(pixels, grids);
        }
        // Split each grid into runs of whole temporal steps, packed into groups of at most `limit`.
        let mut groups: Vec<Vec<[usize; 3]>> = vec![Vec::new()];
        let mut size = 0;
        for &[t, h, w] in grids {
            let step = h * w;
            let mut left = t;
            while left > 0 {
                let room = limit.saturating_sub(size) / step.max(1);
                if room == 0 && size > 0 {
                    groups.push(Vec::new());
                    size = 0;
                    continue;
                }
                let take = room.max(1).min(left);
                if let Some(g) = groups.last_mut() {
                    g.push([take, h, w]);
                }
                size += take * step;
                left -= take;
            }
        }
        let mut outs = Vec::with_capacity(groups.len());
        let mut at = 0;
        for g in groups.iter().filter(|g| !g.is_empty()) {
            let rows: usize = g.iter().map(|g| g[0] * g[1] * g[2]).sum();
            outs.push(self.forward_all(&pixels.narrow(0, at, rows)?, g)?);
            at += rows;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// The tower over every patch at once.
    fn forward_all(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let merge = self.cfg.spatial_merge_size;
        let unit = merge * merge;
        let (n, pd) = pixels.dims2()?;
        let expect: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let want = self.patch_embed.weight().dim(1)?;
        if n != expect || pd != want {
            return Err(Error::Prompt(format!(
                "pixel values have shape [{n}, {pd}] but the grids {grids:?} need [{expect}, {want}]"
            )));
        }
        if grids.iter().any(|g| g[1] % merge != 0 || g[2] % merge != 0) {
            return Err(Error::Prompt(format!(
                "grid {grids:?} is not a multiple of the merge size {merge}"
            )));
        }
        let dev = pixels.device();
        let x = self.patch_embed.forward(&pixels.to_dtype(self.dtype)?)?;
        let (win, cu_win) = window_index(grids, merge, self.cfg.window_size, self.cfg.patch_size);
        // Patch order after the window permutation (units of `unit` consecutive patches move together).
        let perm: Vec<usize> = win
            .iter()
            .flat_map(|&u| (0..unit).map(move |k| u * unit + k))
            .collect();
        let perm_t = index_tensor(&perm, dev)?;
        let mut x = x.index_select(&perm_t, 0)?;
        // Rotary angles in the permuted order.
        let pos = patch_positions(grids, merge);
        let q = self.inv_freq.len();
        let mut angles = Vec::with_capacity(n * 4 * q);
        for &pi in &perm {
            let [h, w] = pos[pi];
            let row: Vec<f32> = self
                .inv_freq
                .iter()
                .map(|&f| h as f32 * f)
                .chain(self.inv_freq.iter().map(|&f| w as f32 * f))
                .collect();
            angles.extend_from_slice(&row);
            angles.extend_from_slice(&row);
        }
        let hd = 4 * q;
        let cos = Tensor::from_vec(
            angles.iter().map(|a| a.cos()).collect::<Vec<_>>(),
            (n, hd),
            dev,
        )?;
        let sin = Tensor::from_vec(
            angles.iter().map(|a| a.sin()).collect::<Vec<_>>(),
            (n, hd),
            dev,
        )?;
        // Full attention never crosses a temporal grid: one segment per frame pair.
        let mut cu_full = vec![0usize];
        for &[t, h, w] in grids {
            for _ in 0..t {
                let last = *cu_full.last().unwrap_or(&0);
                cu_full.push(last + h * w);
            }
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let bounds = if self.cfg.fullatt_block_indexes.contains(&i) {
                &cu_full
            } else {
                &cu_win
            };
            x = blk.forward(&x, &cos, &sin, bounds)?;
        }
        let d = self.cfg.hidden_size;
        let merged = self.ln_q.forward(&x)?.reshape((n / unit, d * unit))?;
        let merged = Act::Gelu.then(&self.mlp0.forward(&merged)?, &self.mlp2)?;
        // Undo the window permutation.
        let mut reverse = vec![0usize; win.len()];
        for (i, &u) in win.iter().enumerate() {
            reverse[u] = i;
        }
        Ok(merged.index_select(&index_tensor(&reverse, dev)?, 0)?)
    }
}

/// Most patches the vision tower takes at once (about 4 000 tokens of video: ~1 GB of activations at the
/// released widths).
const VISION_PATCHES: usize = 16_384;

/// `(name under visual., shape)` of every tensor of the tower, in checkpoint order; `fused_qkv`: one
/// `attn.qkv` (Qwen2.5-VL) instead of `attn.q`, `attn.k`, `attn.v` (Qwen2.5-Omni).
pub fn vision_tensors(vc: &VisionConfig, fused_qkv: bool) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| v.push((name, shape));
    let d = vc.hidden_size;
    let (c, tp, p) = (vc.in_channels, vc.temporal_patch_size, vc.patch_size);
    add("patch_embed.proj.weight".into(), vec![d, c, tp, p, p]);
    for i in 0..vc.depth {
        let b = format!("blocks.{i}");
        add(format!("{b}.norm1.weight"), vec![d]);
        add(format!("{b}.norm2.weight"), vec![d]);
        if fused_qkv {
            add(format!("{b}.attn.qkv.weight"), vec![3 * d, d]);
            add(format!("{b}.attn.qkv.bias"), vec![3 * d]);
            add(format!("{b}.attn.proj.weight"), vec![d, d]);
            add(format!("{b}.attn.proj.bias"), vec![d]);
        } else {
            for n in ["q", "k", "v", "proj"] {
                add(format!("{b}.attn.{n}.weight"), vec![d, d]);
                add(format!("{b}.attn.{n}.bias"), vec![d]);
            }
        }
        for n in ["gate_proj", "up_proj"] {
            add(format!("{b}.mlp.{n}.weight"), vec![vc.intermediate_size, d]);
            add(format!("{b}.mlp.{n}.bias"), vec![vc.intermediate_size]);
        }
        add(
            format!("{b}.mlp.down_proj.weight"),
            vec![d, vc.intermediate_size],
        );
        add(format!("{b}.mlp.down_proj.bias"), vec![d]);
    }
    let m = d * vc.spatial_merge_size * vc.spatial_merge_size;
    add("merger.ln_q.weight".into(), vec![d]);
    add("merger.mlp.0.weight".into(), vec![m, m]);
    add("merger.mlp.0.bias".into(), vec![m]);
    add("merger.mlp.2.weight".into(), vec![vc.out_hidden_size, m]);
    add("merger.mlp.2.bias".into(), vec![vc.out_hidden_size]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_index_pads_and_dedups() {
        // 1 frame, 8×8 patches → 4×4 merged; windows of 2×2 merged units (window 56 px, patch 14, merge 2).
        let (idx, cu) = window_index(&[[1, 8, 8]], 2, 56, 14);
        assert_eq!(idx.len(), 16);
        assert_eq!(&idx[..4], &[0, 1, 4, 5]);
        assert_eq!(cu, vec![0, 16, 32, 48, 64]);
        // 6×4 merged: windows 2×2 → a window row of 2 full + the padded one in w collapses.
        let (idx, cu) = window_index(&[[2, 12, 8]], 2, 56, 14);
        assert_eq!(idx.len(), 2 * 6 * 4);
        assert_eq!(*cu.last().unwrap(), 2 * 12 * 8);
    }

    /// A long video run a group of temporal steps at a time (grids split between steps, an image that
    /// does not fit beside them in a group of its own) gives the embeddings of one whole run.
    #[test]
    fn grouped_steps_equal_one_run() {
        let vc = VisionConfig {
            depth: 3,
            hidden_size: 32,
            intermediate_size: 48,
            num_heads: 4,
            in_channels: 3,
            patch_size: 2,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 8,
            out_hidden_size: 24,
            fullatt_block_indexes: vec![1],
            hidden_act: "silu".into(),
            rope_theta: 10000.0,
        };
        let dev = candle_core::Device::Cpu;
        let map: std::collections::HashMap<String, Tensor> = vision_tensors(&vc, true)
            .into_iter()
            .map(|(name, shape)| {
                let t = (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * 0.2).unwrap();
                (name, t)
            })
            .collect();
        let enc = VisionEncoder::new(
            &vc,
            candle_nn::VarBuilder::from_tensors(map, DType::F32, &dev),
        )
        .unwrap();
        // A 5-step video of 8×4 patches, a one-step 4×8 image, a 3-step 4×4 video.
        let grids = [[5, 8, 4], [1, 4, 8], [3, 4, 4]];
        let n: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let pixels = Tensor::randn(0f32, 1f32, (n, 3 * 2 * 2 * 2), &dev).unwrap();
        let whole = enc.forward_all(&pixels, &grids).unwrap();
        for limit in [32, 70, 100] {
            let parts = enc.forward_in_groups(&pixels, &grids, limit).unwrap();
            let d = crate::model::nn::max_abs_diff(&whole, &parts);
            assert!(d <= 1e-5, "limit {limit}: {d}");
        }
    }

    #[test]
    fn patch_positions_block_major() {
        let p = patch_positions(&[[1, 2, 4]], 2);
        assert_eq!(p[..4], [[0, 0], [0, 1], [1, 0], [1, 1]]);
        assert_eq!(p[4], [0, 2]);
    }
}
