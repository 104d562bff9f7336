//! The token map: for every prompt position its group, media item, time range, vision grid cell and
//! 2-second chunk — what the flow engine's time-range spans and the app's timeline are built on.

use serde::{Deserialize, Serialize};

use crate::flow::Groups;
use crate::model::config::ThinkerConfig;

/// One position of the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub position: usize,
    pub id: u32,
    /// system, video, image, audio, question, last, or template (special/markers/other text).
    pub group: String,
    /// Index of the media item (in prompt order) for media tokens and their markers.
    pub item: Option<usize>,
    /// Seconds `[start, end)` covered by a media token.
    pub time: Option<[f64; 2]>,
    /// Vision grid cell (t, h, w) in merged units.
    pub grid: Option<[usize; 3]>,
    /// `seconds_per_chunk` chunk of the token's start time.
    pub chunk: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMap {
    pub tokens: Vec<TokenInfo>,
    pub groups: Groups,
}

impl TokenMap {
    /// Builds the map from the ids and the media grids (videos and images in prompt order).
    pub fn build(
        ids: &[u32],
        cfg: &ThinkerConfig,
        video_grids: &[[usize; 3]],
        second_per_grid: &[f64],
        image_grids: &[[usize; 3]],
    ) -> Self {
        let groups = Groups::from_ids(ids, &cfg.tokens);
        let tk = &cfg.tokens;
        let merge = cfg.vision.spatial_merge_size;
        let spc = cfg.seconds_per_chunk;
        let mut group_of = vec!["template".to_string(); ids.len()];
        for (name, pos) in &groups.spans {
            for &p in pos {
                // `last` wins over `question`/template; media placeholders are exclusive anyway.
                if group_of[p] == "template" || name == "last" {
                    group_of[p] = name.clone();
                }
            }
        }
        let mut tokens = Vec::with_capacity(ids.len());
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
            let mut info = TokenInfo {
                position: p,
                id,
                group: group_of[p].clone(),
                item: in_item.then_some(item),
                time: None,
                grid: None,
                chunk: None,
            };
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
            let ends = id == tk.vision_end
                || (id == tk.audio_end && ids.get(p + 1) != Some(&tk.vision_end));
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
            tokens.push(info);
        }
        TokenMap { tokens, groups }
    }

    /// Media positions whose time range overlaps `[start, end)` seconds (both modalities), optionally of
    /// one item: the "time range" spans of knockouts.
    pub fn time_span(&self, start: f64, end: f64, item: Option<usize>) -> Vec<usize> {
        self.tokens
            .iter()
            .filter(|t| item.is_none() || t.item == item)
            .filter(|t| t.time.is_some_and(|[s, e]| s < end && e > start))
            .map(|t| t.position)
            .collect()
    }
}
