//! TMRoPE position ids: port of `Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_rope_index`
//! (single sequence, no padding), including `use_audio_in_video` interleaving per `seconds_per_chunk`.
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2_5_omni/modeling_qwen2_5_omni.py>
//!
//! Arithmetic follows the reference's dtypes: video temporal ids are `(t · second_per_grid · 25)` computed
//! in f32 and truncated, so non-integer seconds per grid land on the same ids.

use crate::error::{Error, Result};
use crate::model::decoder::PositionIds;
use crate::model::omni::audio::output_lengths;
use crate::model::omni::config::ThinkerConfig;

/// What `get_rope_index` needs besides the ids.
#[derive(Debug, Clone, Default)]
pub struct RopeInputs<'a> {
    pub image_grids: &'a [[usize; 3]],
    pub video_grids: &'a [[usize; 3]],
    pub second_per_grid: &'a [f32],
    /// Mel frames per audio clip (in prompt order).
    pub audio_lens: &'a [usize],
    pub use_audio_in_video: bool,
}

struct Builder {
    out: PositionIds,
    last_max: Option<i64>,
}

impl Builder {
    fn next_start(&self) -> i64 {
        self.last_max.map_or(0, |m| m + 1)
    }
    fn push_block(&mut self, block: &[[i64; 3]]) {
        if let Some(m) = block.iter().flat_map(|p| p.iter()).max() {
            self.last_max = Some(*m);
        }
        self.out.extend_from_slice(block);
    }
    fn push_text(&mut self, len: usize, start: i64) {
        let b: Vec<[i64; 3]> = (0..len as i64).map(|i| [start + i; 3]).collect();
        self.push_block(&b);
    }
}

fn vision_ids(start: i64, grid: [usize; 3], merge: usize, t_index: &[i64]) -> Vec<[i64; 3]> {
    let (lh, lw) = (grid[1] / merge, grid[2] / merge);
    let mut v = Vec::with_capacity(t_index.len() * lh * lw);
    for &t in t_index {
        for h in 0..lh {
            for w in 0..lw {
                v.push([t + start, h as i64 + start, w as i64 + start]);
            }
        }
    }
    v
}

/// A video's grid and the temporal ids of its grids: `(t · second_per_grid) · 25` in f32, truncated.
fn video_t_index(r: &RopeInputs, idx: usize, pps: f64) -> Result<([usize; 3], Vec<i64>)> {
    let bad = |m: String| Error::Prompt(format!("position ids: {m}"));
    let grid = *r
        .video_grids
        .get(idx)
        .ok_or_else(|| bad(format!("video {idx} has no video_grid_thw row")))?;
    let spg = *r
        .second_per_grid
        .get(idx)
        .ok_or_else(|| bad(format!("video {idx} has no video_second_per_grid")))?;
    Ok((
        grid,
        (0..grid[0])
            .map(|t| ((t as f32 * spg) * pps as f32) as i64)
            .collect(),
    ))
}

/// `get_chunked_index`: splits a monotone list of temporal ids into chunks of `per_chunk` ids.
fn chunked_index(ids: &[i64], per_chunk: i64, remove: i64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut current) = (0usize, 1i64);
    for (i, &t) in ids.iter().enumerate() {
        if t - remove >= current * per_chunk {
            out.push((start, i));
            start = i;
            current += 1;
        }
    }
    out.push((start, ids.len()));
    out
}

fn find(ids: &[u32], tok: u32, from: usize) -> Option<usize> {
    ids.iter()
        .skip(from)
        .position(|&x| x == tok)
        .map(|p| p + from)
}

/// Position ids `[seq][t, h, w]` and the rope delta (`max + 1 − seq`) used when generating.
pub fn rope_index(ids: &[u32], cfg: &ThinkerConfig, r: &RopeInputs) -> Result<(PositionIds, i64)> {
    let n = ids.len();
    if r.image_grids.is_empty() && r.video_grids.is_empty() {
        let pos: PositionIds = (0..n as i64).map(|i| [i; 3]).collect();
        return Ok((pos, 0));
    }
    let tk = &cfg.tokens;
    let merge = cfg.vision.spatial_merge_size;
    let pps = cfg.position_id_per_seconds;
    let bad = |m: String| Error::Prompt(format!("position ids: {m}"));

    let vision_tokens: Vec<u32> = ids
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == tk.vision_start)
        .filter_map(|(i, _)| ids.get(i + 1).copied())
        .collect();
    let audio_nums = ids.iter().filter(|&&t| t == tk.audio_start).count();
    let image_nums = vision_tokens.iter().filter(|&&t| t == tk.image).count();
    let video_nums = if r.use_audio_in_video {
        vision_tokens
            .iter()
            .filter(|&&t| t == tk.audio_start)
            .count()
    } else {
        vision_tokens.iter().filter(|&&t| t == tk.video).count()
    };
    let mm_nums = if r.use_audio_in_video {
        image_nums + audio_nums
    } else {
        image_nums + video_nums + audio_nums
    };
    let (mut remain_images, mut remain_videos, mut remain_audios) =
        (image_nums, video_nums, audio_nums);
    let (mut image_idx, mut video_idx, mut audio_idx) = (0usize, 0usize, 0usize);
    let mut b = Builder {
        out: Vec::with_capacity(n),
        last_max: None,
    };
    let mut st = 0usize;
    let none = n + 1;
    for _ in 0..mm_nums {
        let ed_image = if remain_images > 0 {
            find(ids, tk.image, st)
        } else {
            None
        };
        let ed_video = if remain_videos > 0 {
            find(ids, tk.video, st)
        } else {
            None
        };
        let ed_audio = if remain_audios > 0 {
            find(ids, tk.audio, st)
        } else {
            None
        };
        if (remain_images > 0 && ed_image.is_none())
            || (remain_videos > 0 && ed_video.is_none())
            || (remain_audios > 0 && ed_audio.is_none())
        {
            return Err(bad(
                "a media item has a start token but no placeholder tokens".into(),
            ));
        }
        let (ed_image, ed_video, ed_audio) = (
            ed_image.unwrap_or(none),
            ed_video.unwrap_or(none),
            ed_audio.unwrap_or(none),
        );
        let min_ed = ed_image.min(ed_video).min(ed_audio);
        if min_ed == none {
            return Err(bad("fewer placeholder runs than media start tokens".into()));
        }
        let audio_len = |idx: usize| -> Result<usize> {
            let l = *r
                .audio_lens
                .get(idx)
                .ok_or_else(|| bad(format!("audio item {idx} has no feature length")))?;
            Ok(output_lengths(l).1)
        };
        if min_ed == ed_audio {
            let text_len = min_ed
                .checked_sub(st + 1)
                .ok_or_else(|| bad("audio placeholders without <|audio_bos|>".into()))?;
            if text_len != 0 {
                b.push_text(text_len, b.next_start());
            }
            b.push_text(1, b.next_start());
            let alen = audio_len(audio_idx)?;
            b.push_text(alen, b.next_start());
            b.push_text(1, b.next_start());
            st += text_len + 1 + alen + 1;
            audio_idx += 1;
            remain_audios -= 1;
        } else if min_ed == ed_image {
            let text_len = min_ed
                .checked_sub(st + 1)
                .ok_or_else(|| bad("image placeholders without <|vision_bos|>".into()))?;
            if text_len != 0 {
                b.push_text(text_len, b.next_start());
            }
            b.push_text(1, b.next_start());
            let grid = *r
                .image_grids
                .get(image_idx)
                .ok_or_else(|| bad(format!("image {image_idx} has no image_grid_thw row")))?;
            let t_index: Vec<i64> = (0..grid[0])
                .map(|t| (t as f32 * 1.0 * pps as f32) as i64)
                .collect();
            let start = b.next_start();
            b.push_block(&vision_ids(start, grid, merge, &t_index));
            let ilen = grid[0] * grid[1] * grid[2] / (merge * merge);
            b.push_text(1, b.next_start());
            st += text_len + 1 + ilen + 1;
            image_idx += 1;
            remain_images -= 1;
        } else if !r.use_audio_in_video {
            let text_len = min_ed
                .checked_sub(st + 1)
                .ok_or_else(|| bad("video placeholders without <|vision_bos|>".into()))?;
            if text_len != 0 {
                b.push_text(text_len, b.next_start());
            }
            b.push_text(1, b.next_start());
            let (grid, t_index) = video_t_index(r, video_idx, pps)?;
            let start = b.next_start();
            b.push_block(&vision_ids(start, grid, merge, &t_index));
            let vlen = grid[0] * grid[1] * grid[2] / (merge * merge);
            b.push_text(1, b.next_start());
            st += text_len + 1 + vlen + 1;
            video_idx += 1;
            remain_videos -= 1;
        } else {
            // Video with its own audio: <|vision_bos|><|audio_bos|> [chunk: video grids, audio] … <|audio_eos|><|vision_eos|>
            let text_len = min_ed.checked_sub(st + 2).ok_or_else(|| {
                bad("video-with-audio placeholders without <|vision_bos|><|audio_bos|>".into())
            })?;
            if text_len != 0 {
                b.push_text(text_len, b.next_start());
            }
            let bos = b.next_start();
            b.push_text(1, bos);
            b.push_text(1, bos);
            let start = b.next_start();
            let alen = audio_len(audio_idx)?;
            let audio_ids: Vec<[i64; 3]> = (0..alen as i64).map(|i| [start + i; 3]).collect();
            let (grid, t_index) = video_t_index(r, video_idx, pps)?;
            let video_ids = vision_ids(start, grid, merge, &t_index);
            let per_chunk = (pps * cfg.seconds_per_chunk) as i64;
            let vt: Vec<i64> = video_ids.iter().map(|p| p[0]).collect();
            let at: Vec<i64> = audio_ids.iter().map(|p| p[0]).collect();
            let vc = chunked_index(&vt, per_chunk, start);
            let ac = chunked_index(&at, per_chunk, start);
            for j in 0..vc.len().max(ac.len()) {
                if let Some(&(s, e)) = vc.get(j) {
                    b.push_block(&video_ids[s..e]);
                }
                if let Some(&(s, e)) = ac.get(j) {
                    b.push_block(&audio_ids[s..e]);
                }
            }
            let vlen = grid[0] * grid[1] * grid[2] / (merge * merge);
            let eos = b.next_start();
            b.push_text(1, eos);
            b.push_text(1, eos);
            st += text_len + 2 + alen + vlen + 2;
            audio_idx += 1;
            video_idx += 1;
            remain_videos -= 1;
            remain_audios -= 1;
        }
    }
    if st < n {
        b.push_text(n - st, b.next_start());
    }
    if b.out.len() != n {
        return Err(bad(format!(
            "computed {} positions for {n} tokens: the placeholder counts do not match the grids / audio lengths",
            b.out.len()
        )));
    }
    let max = b
        .out
        .iter()
        .flat_map(|p| p.iter())
        .copied()
        .max()
        .unwrap_or(0);
    Ok((b.out, max + 1 - n as i64))
}

/// Whether the prompt interleaves a video with its own audio (`<|vision_bos|><|audio_bos|>`).
pub fn detects_audio_in_video(ids: &[u32], cfg: &ThinkerConfig) -> bool {
    ids.windows(2)
        .any(|w| w[0] == cfg.tokens.vision_start && w[1] == cfg.tokens.audio_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_matches_reference_loop() {
        assert_eq!(
            chunked_index(&[0, 0, 25, 25, 50, 50, 75], 50, 0),
            vec![(0, 4), (4, 7)]
        );
        assert_eq!(chunked_index(&[0, 1, 2], 50, 0), vec![(0, 3)]);
    }
}
