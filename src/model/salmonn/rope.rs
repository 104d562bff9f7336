//! video-SALMONN 2+'s multimodal position ids, in both numberings its code has:
//!
//! - **inference** — what the released `inference.py` actually runs: it hands `generate()` the dataset's
//!   positions, but `prepare_inputs_for_generation` drops them and neither `audio_lengths` nor
//!   `second_per_grid_ts` reach the model, so the prefill recomputes them with the video/image branch of the
//!   model's `get_rope_index` at one second per grid step: the first `T·H'·W'` tokens of an audio-visual block
//!   (audio placeholders among them) get `(2t, y, x)`, everything after plain positions; an audio-only prompt
//!   gets plain 1-D positions.
//! - **training** — what the model was trained with (`qwenvl/data/rope2d.py`, repeated in the model's
//!   `get_rope_index` when `audio_lengths` is passed): video step `t` at merged cell `(y, x)` →
//!   `(int(t·s·2), y, x)`, audio token `j` → `(j, 0, j)` (audio-only: `(j, j, 0)`), all offset by the block's
//!   start; text after the block from the block's last time index + 1.
//!
//! Port of `video_SALMONN2_plus.get_rope_index` (`qwenvl/model/modeling_qwen2_5_vl.py`):
//! <https://github.com/bytedance/video-SALMONN-2/blob/main/video_SALMONN2_plus/qwenvl/model/modeling_qwen2_5_vl.py>

use crate::error::{Error, Result};
use crate::model::salmonn::config::TokenIds;
use crate::model::{PositionIds, Positions};

/// The grids and timing the numbering reads.
pub struct RopeInputs<'a> {
    pub video_grids: &'a [[usize; 3]],
    pub image_grids: &'a [[usize; 3]],
    pub second_per_grid: &'a [f64],
    pub audio_lengths: &'a [usize],
    pub merge: usize,
}

/// `(int(fp32(t)·fp32(s))·2)` as torch computes `arange(T) * s * 2` then `.long()`: an int64 tensor times a
/// Python float is float32.
fn time_index(t: usize, s: f64) -> i64 {
    ((t as f32) * (s as f32) * 2.0) as i64
}

fn text(out: &mut PositionIds, n: usize, start: i64) {
    out.extend((0..n as i64).map(|p| [start + p; 3]));
}

fn max_all(p: &[[i64; 3]]) -> i64 {
    p.iter().flat_map(|x| x.iter().copied()).max().unwrap_or(-1)
}

/// The position ids of `ids` and the offset generation continues from (`max + 1 − len`).
pub fn rope_index(
    ids: &[u32],
    tk: &TokenIds,
    r: &RopeInputs,
    numbering: Positions,
) -> Result<(PositionIds, i64)> {
    let pos = match numbering {
        Positions::Inference => {
            if r.video_grids.is_empty() && r.image_grids.is_empty() {
                (0..ids.len() as i64).map(|p| [p; 3]).collect()
            } else {
                visual(ids, tk, r, None)?
            }
        }
        Positions::Training => {
            let audio_block = |tok: u32| {
                ids.windows(2)
                    .filter(|w| w[0] == tk.vision_start && w[1] == tok)
                    .count()
            };
            if !r.audio_lengths.is_empty() && !r.video_grids.is_empty() {
                audio_visual(ids, tk, r)?
            } else if !r.video_grids.is_empty() || !r.image_grids.is_empty() {
                visual(ids, tk, r, Some(r.second_per_grid))?
            } else if !r.audio_lengths.is_empty() && audio_block(tk.audio) > 0 {
                audio_only(ids, tk, r)?
            } else {
                (0..ids.len() as i64).map(|p| [p; 3]).collect()
            }
        }
    };
    let delta = max_all(&pos) + 1 - ids.len() as i64;
    Ok((pos, delta))
}

fn bad(what: String) -> Error {
    Error::Prompt(format!("video-SALMONN 2+ positions: {what}"))
}

/// The video/image branch (Qwen2.5-VL's, with the authors' `* 2`): per media block, the text before it,
/// then its grid `(int(t·s·2), y, x)`; `seconds` `None` means one second per grid step (inference).
fn visual(
    ids: &[u32],
    tk: &TokenIds,
    r: &RopeInputs,
    seconds: Option<&[f64]>,
) -> Result<PositionIds> {
    let starts: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == tk.vision_start)
        .map(|(i, _)| i)
        .collect();
    let next = |i: usize| ids.get(i + 1).copied();
    let images = starts
        .iter()
        .filter(|&&i| next(i) == Some(tk.image))
        .count();
    let videos = starts
        .iter()
        .filter(|&&i| next(i) == Some(tk.video))
        .count();
    let (mut ii, mut vi) = (0usize, 0usize);
    let mut out: PositionIds = Vec::with_capacity(ids.len());
    let mut st = 0usize;
    let find = |tok: u32, from: usize| {
        ids[from.min(ids.len())..]
            .iter()
            .position(|&t| t == tok)
            .map(|p| p + from)
    };
    for _ in 0..images + videos {
        let ed_image = if ii < images {
            find(tk.image, st)
        } else {
            None
        }
        .unwrap_or(ids.len() + 1);
        let ed_video = if vi < videos {
            find(tk.video, st)
        } else {
            None
        }
        .unwrap_or(ids.len() + 1);
        let (grid, s, ed) = if ed_image < ed_video {
            let g = *r
                .image_grids
                .get(ii)
                .ok_or_else(|| bad(format!("image {ii} has no grid")))?;
            ii += 1;
            (g, 0.0, ed_image)
        } else {
            let g = *r
                .video_grids
                .get(vi)
                .ok_or_else(|| bad(format!("video {vi} has no grid")))?;
            let s = match seconds {
                Some(sec) => *sec
                    .get(vi)
                    .ok_or_else(|| bad(format!("video {vi} has no second_per_grid_ts")))?,
                None => 1.0,
            };
            vi += 1;
            (g, s, ed_video)
        };
        if ed > ids.len() {
            return Err(bad("fewer media placeholders than grids".into()));
        }
        let (t, h, w) = (grid[0], grid[1] / r.merge, grid[2] / r.merge);
        let st_idx = max_all(&out) + 1;
        text(&mut out, ed - st, st_idx);
        let base = st_idx + (ed - st) as i64;
        for ti in 0..t {
            let tt = time_index(ti, s);
            for y in 0..h {
                for x in 0..w {
                    out.push([base + tt, base + y as i64, base + x as i64]);
                }
            }
        }
        st = ed + t * h * w;
    }
    if st < ids.len() {
        let st_idx = max_all(&out) + 1;
        text(&mut out, ids.len() - st, st_idx);
    }
    if out.len() != ids.len() {
        return Err(bad(format!(
            "{} positions for {} tokens: the media blocks do not match their grids",
            out.len(),
            ids.len()
        )));
    }
    Ok(out)
}

/// The audio-visual branch of training: per video block, video tokens `(int(t·s·2), y, x)` and audio
/// tokens `(j, 0, j)` in the order they appear, offset by the block's start; text after it from the block's
/// last time index + 1.
fn audio_visual(ids: &[u32], tk: &TokenIds, r: &RopeInputs) -> Result<PositionIds> {
    let videos = ids
        .windows(2)
        .filter(|w| w[0] == tk.vision_start && w[1] == tk.video)
        .count();
    let mut out: PositionIds = Vec::with_capacity(ids.len());
    let mut st = 0usize;
    let mut last_time = None;
    for vi in 0..videos {
        let ed = ids[st..]
            .iter()
            .position(|&t| t == tk.video)
            .map(|p| p + st)
            .ok_or_else(|| bad(format!("video {vi} has no placeholder")))?;
        let g = *r
            .video_grids
            .get(vi)
            .ok_or_else(|| bad(format!("video {vi} has no grid")))?;
        let s = *r.second_per_grid.get(vi).unwrap_or(&1.0);
        let a = *r
            .audio_lengths
            .get(vi)
            .ok_or_else(|| bad(format!("video {vi} has no audio_lengths")))?;
        let (t, h, w) = (g[0], g[1] / r.merge, g[2] / r.merge);
        let st_idx = max_all(&out) + 1;
        text(&mut out, ed - st, st_idx);
        let base = st_idx + (ed - st) as i64;
        let mut video = Vec::with_capacity(t * h * w);
        for ti in 0..t {
            let tt = time_index(ti, s);
            for y in 0..h {
                for x in 0..w {
                    video.push([base + tt, base + y as i64, base + x as i64]);
                }
            }
        }
        let audio: Vec<[i64; 3]> = (0..a as i64).map(|j| [base + j, base, base + j]).collect();
        let end = ed + t * h * w + a;
        let block = ids
            .get(ed..end)
            .ok_or_else(|| bad(format!("video {vi}'s block runs past the prompt")))?;
        let (mut v, mut au) = (video.iter(), audio.iter());
        let mut time = i64::MIN;
        for &tok in block {
            // The authors' zero-initialised block: a token that is neither keeps (0, 0, 0).
            let p = if tok == tk.audio {
                au.next().copied().unwrap_or([0; 3])
            } else if tok == tk.video {
                v.next().copied().unwrap_or([0; 3])
            } else {
                [0; 3]
            };
            time = time.max(p[0]);
            out.push(p);
        }
        last_time = Some(time);
        st = end;
    }
    if st < ids.len() {
        let st_idx = last_time.map_or(0, |t| t + 1);
        text(&mut out, ids.len() - st, st_idx);
    }
    Ok(out)
}

/// The audio-only branch of training: audio token `j` → `(j, j, 0)` after the text before it; text after it
/// from the last time index + 1.
fn audio_only(ids: &[u32], tk: &TokenIds, r: &RopeInputs) -> Result<PositionIds> {
    let blocks = ids
        .windows(2)
        .filter(|w| w[0] == tk.vision_start && w[1] == tk.audio)
        .count();
    let mut out: PositionIds = Vec::with_capacity(ids.len());
    let mut st = 0usize;
    let mut last_time = None;
    for ai in 0..blocks {
        let ed = ids[st..]
            .iter()
            .position(|&t| t == tk.audio)
            .map(|p| p + st)
            .ok_or_else(|| bad(format!("audio {ai} has no placeholder")))?;
        let a = *r
            .audio_lengths
            .get(ai)
            .ok_or_else(|| bad(format!("audio {ai} has no audio_lengths")))?;
        let st_idx = max_all(&out) + 1;
        text(&mut out, ed - st, st_idx);
        let base = st_idx + (ed - st) as i64;
        out.extend((0..a as i64).map(|j| [base + j, base + j, base]));
        last_time = Some(base + a as i64 - 1);
        st = ed + a;
    }
    if st < ids.len() {
        let st_idx = last_time.map_or(0, |t| t + 1);
        text(&mut out, ids.len() - st, st_idx);
    }
    out.truncate(ids.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tk() -> TokenIds {
        TokenIds {
            image: 5,
            video: 6,
            audio: 7,
            vision_start: 3,
            vision_end: 4,
            bos: None,
            eos: None,
        }
    }

    /// The worked example of the two numberings: block start b = 2, T = 3 steps of 1×2 merged cells,
    /// s = 0.75 (step times 0, 1, 3), 6 audio tokens in counts [1, 2, 3].
    #[test]
    fn both_numberings_of_an_interleaved_block() {
        let (v, a) = (6u32, 7u32);
        let ids = [1, 3, v, v, a, v, v, a, a, v, v, a, a, a, 4, 9];
        let grids = [[3, 2, 4]];
        let r = RopeInputs {
            video_grids: &grids,
            image_grids: &[],
            second_per_grid: &[0.75],
            audio_lengths: &[6],
            merge: 2,
        };
        let b = 2;
        let (train, _) = rope_index(&ids, &tk(), &r, Positions::Training).expect("training");
        let t: Vec<i64> = train.iter().map(|p| p[0]).collect();
        let w: Vec<i64> = train.iter().map(|p| p[2]).collect();
        assert_eq!(
            &t[2..15],
            &[
                b,
                b,
                b,
                b + 1,
                b + 1,
                b + 1,
                b + 2,
                b + 3,
                b + 3,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ]
        );
        assert_eq!(
            &w[2..14],
            &[
                b,
                b + 1,
                b,
                b,
                b + 1,
                b + 1,
                b + 2,
                b,
                b + 1,
                b + 3,
                b + 4,
                b + 5
            ]
        );
        let (inf, delta) = rope_index(&ids, &tk(), &r, Positions::Inference).expect("inference");
        assert_eq!(
            &inf[2..8],
            &[
                [b, b, b],
                [b, b, b + 1],
                [b + 2, b, b],
                [b + 2, b, b + 1],
                [b + 4, b, b],
                [b + 4, b, b + 1]
            ]
        );
        assert_eq!(inf[8], [b + 5; 3]);
        assert_eq!(delta, inf.last().unwrap()[0] + 1 - ids.len() as i64);
    }
}
