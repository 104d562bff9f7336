//! Placeholder layout of media items in a Qwen2.5-Omni prompt, as `Qwen2_5OmniProcessor` expands it.
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/processing_qwen2_5_omni.py>

use crate::model::omni::config::ThinkerConfig;

/// The processor's `get_chunked_index` over (float) temporal ids.
fn chunked(ids: &[f64], per_chunk: f64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut current) = (0usize, 1.0f64);
    for (i, &t) in ids.iter().enumerate() {
        if t >= current * per_chunk {
            out.push((start, i));
            start = i;
            current += 1.0;
        }
    }
    out.push((start, ids.len()));
    out
}

/// Ids for a video with its own audio: `<|vision_bos|><|audio_bos|>` then, per `seconds_per_chunk`
/// chunk, that chunk's video tokens then its audio tokens, then `<|audio_eos|><|vision_eos|>`.
/// Temporal ids are computed in f64 without truncation, as the processor does (numpy).
pub fn video_with_audio_ids(
    cfg: &ThinkerConfig,
    grid: [usize; 3],
    second_per_grid: f64,
    audio_tokens: usize,
) -> Vec<u32> {
    let tk = &cfg.tokens;
    let merge = cfg.vision.spatial_merge_size;
    let per_frame = (grid[1] / merge) * (grid[2] / merge);
    let pps = cfg.position_id_per_seconds;
    let vt: Vec<f64> = (0..grid[0])
        .flat_map(|t| std::iter::repeat_n(t as f64 * second_per_grid * pps, per_frame))
        .collect();
    let at: Vec<f64> = (0..audio_tokens).map(|i| i as f64).collect();
    let per_chunk = (pps * cfg.seconds_per_chunk).trunc();
    let (vc, ac) = (chunked(&vt, per_chunk), chunked(&at, per_chunk));
    let mut ids = vec![tk.vision_start, tk.audio_start];
    for j in 0..vc.len().max(ac.len()) {
        if let Some(&(s, e)) = vc.get(j) {
            ids.extend(std::iter::repeat_n(tk.video, e - s));
        }
        if let Some(&(s, e)) = ac.get(j) {
            ids.extend(std::iter::repeat_n(tk.audio, e - s));
        }
    }
    ids.extend([tk.audio_end, tk.vision_end]);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_two_second_chunks() {
        let cfg = ThinkerConfig::qwen25_omni_3b();
        // 3 grids at 1 s each (t ids 0, 25, 50), 1 token per grid (2×2 patches), 60 audio tokens.
        let ids = video_with_audio_ids(&cfg, [3, 2, 2], 1.0, 60);
        let tk = &cfg.tokens;
        let runs: Vec<(u32, usize)> = ids[2..ids.len() - 2]
            .chunk_by(|a, b| a == b)
            .map(|r| (r[0], r.len()))
            .collect();
        assert_eq!(
            runs,
            vec![(tk.video, 2), (tk.audio, 50), (tk.video, 1), (tk.audio, 10)]
        );
    }
}
