//! Qwen2.5-Omni's token map: which media item each position belongs to and the seconds, grid cell and
//! 2-s chunk it covers, as `Qwen2_5OmniProcessor` lays media out (25 audio tokens per second; a video's
//! temporal grid step `t` covers `t·second_per_grid` seconds).

use crate::model::omni::config::ThinkerConfig;
use crate::prompt::TokenMap;

/// Builds the map from the ids and the media grids (videos and images in prompt order).
pub fn build(
    ids: &[u32],
    cfg: &ThinkerConfig,
    video_grids: &[[usize; 3]],
    second_per_grid: &[f64],
    image_grids: &[[usize; 3]],
) -> TokenMap {
    let tk = &cfg.tokens;
    let mut map = TokenMap::classify(ids, &cfg.special_tokens());
    map.seconds_per_chunk = cfg.seconds_per_chunk;
    let merge = cfg.vision.spatial_merge_size;
    let spc = cfg.seconds_per_chunk;
    let (mut item, mut in_item) = (0usize, false);
    let (mut vi, mut ii) = (0usize, 0usize);
    let (mut kv, mut ka, mut ki) = (0usize, 0usize, 0usize);
    for (p, &id) in ids.iter().enumerate() {
        let starts = id == tk.vision_start || (id == tk.audio_start && !in_item);
        if starts {
            in_item = true;
            kv = 0;
            ka = 0;
            ki = 0;
        }
        let info = &mut map.tokens[p];
        info.item = in_item.then_some(item);
        if id == tk.video {
            if let Some(g) = video_grids.get(vi) {
                let (h, w) = (g[1] / merge, g[2] / merge);
                let per = (h * w).max(1);
                let t = kv / per;
                let spg = second_per_grid.get(vi).copied().unwrap_or(1.0);
                info.grid = Some([t, (kv % per) / w.max(1), kv % w.max(1)]);
                info.time = Some([t as f64 * spg, (t + 1) as f64 * spg]);
            }
            kv += 1;
        } else if id == tk.audio {
            // 25 audio tokens per second (40 ms each).
            info.time = Some([ka as f64 * 0.04, (ka + 1) as f64 * 0.04]);
            ka += 1;
        } else if id == tk.image {
            if let Some(g) = image_grids.get(ii) {
                let w = (g[2] / merge).max(1);
                info.grid = Some([0, ki / w, ki % w]);
            }
            ki += 1;
        }
        info.chunk = info.time.map(|[s, _]| (s / spc).floor() as usize);
        let ends =
            id == tk.vision_end || (id == tk.audio_end && ids.get(p + 1) != Some(&tk.vision_end));
        if ends && in_item {
            if kv > 0 {
                vi += 1;
            }
            if ki > 0 {
                ii += 1;
            }
            in_item = false;
            item += 1;
        }
    }
    map
}
