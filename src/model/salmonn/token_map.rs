//! video-SALMONN 2+'s token map: each `<|vision_start|> … <|vision_end|>` block is one media item; a video
//! placeholder of temporal step `t` covers `[t·s, (t+1)·s)` seconds (`s` = seconds per grid step), an audio
//! placeholder `j` the 0.5-s window `[j·0.5, (j+1)·0.5)` the Q-Former read (windows of the silent padding
//! of a last 30-s segment included); chunks are the video's grid steps (audio and video interleave per step).

use crate::model::salmonn::config::SalmonnConfig;
use crate::prompt::TokenMap;

pub fn build(
    ids: &[u32],
    cfg: &SalmonnConfig,
    video_grids: &[[usize; 3]],
    second_per_grid: &[f64],
    image_grids: &[[usize; 3]],
) -> TokenMap {
    let tk = &cfg.tokens;
    let mut map = TokenMap::classify(ids, &cfg.special_tokens());
    let merge = cfg.vision.spatial_merge_size;
    let window = cfg.whisper.second_stride;
    map.seconds_per_chunk = second_per_grid.first().copied().unwrap_or(0.0);
    let (mut item, mut in_item) = (0usize, false);
    let (mut vi, mut ii) = (0usize, 0usize);
    let (mut kv, mut ka, mut ki) = (0usize, 0usize, 0usize);
    for (p, &id) in ids.iter().enumerate() {
        if id == tk.vision_start {
            in_item = true;
            kv = 0;
            ka = 0;
            ki = 0;
        }
        let info = &mut map.tokens[p];
        info.item = in_item.then_some(item);
        let spg = second_per_grid.get(vi).copied().unwrap_or(1.0);
        if id == tk.video {
            if let Some(g) = video_grids.get(vi) {
                let (h, w) = (g[1] / merge, g[2] / merge);
                let per = (h * w).max(1);
                let t = kv / per;
                info.grid = Some([t, (kv % per) / w.max(1), kv % w.max(1)]);
                info.time = Some([t as f64 * spg, (t + 1) as f64 * spg]);
                info.chunk = Some(t);
            }
            kv += 1;
        } else if id == tk.audio {
            let t = [ka as f64 * window, (ka + 1) as f64 * window];
            info.time = Some(t);
            info.chunk = (spg > 0.0 && kv > 0).then(|| (t[0] / spg).floor() as usize);
            ka += 1;
        } else if id == tk.image {
            if let Some(g) = image_grids.get(ii) {
                let w = (g[2] / merge).max(1);
                info.grid = Some([0, ki / w, ki % w]);
            }
            ki += 1;
        }
        if id == tk.vision_end && in_item {
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
