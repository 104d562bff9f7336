//! The tensors `Qwen2_5OmniProcessor` returns, under its names, read from a safetensors file.
//!
//! Accepted with or without the leading batch dimension (batch of one), any subset that makes a valid
//! prompt; `input_features` either padded (to 30000 frames, as the processor returns them) or already cut
//! to the valid frames. The audio of several clips arrives as rows of `input_features` with
//! `feature_attention_mask` marking each clip's valid frames.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::model::inputs::{err, grid_rows, ints, unbatch};

/// Processor output for one prompt, in model-ready form.
#[derive(Debug, Clone)]
pub struct OmniInputs {
    pub input_ids: Vec<u32>,
    /// `[Σ t·h·w, C·Tp·P·P]` patches of every video, in prompt order.
    pub pixel_values_videos: Option<Tensor>,
    pub video_grid_thw: Vec<[usize; 3]>,
    pub video_second_per_grid: Vec<f32>,
    /// `[mel_bins, Σ frames]`: the valid frames of every audio clip, concatenated in prompt order.
    pub audio_features: Option<Tensor>,
    /// Valid mel frames per audio clip.
    pub audio_lens: Vec<usize>,
    pub pixel_values: Option<Tensor>,
    pub image_grid_thw: Vec<[usize; 3]>,
}

fn grids(path: &Path, name: &str, t: &Tensor) -> Result<Vec<[usize; 3]>> {
    let t = if t.rank() == 3 {
        t.squeeze(0)?
    } else {
        t.clone()
    };
    let t = if t.rank() == 1 { t.unsqueeze(0)? } else { t };
    if t.rank() != 2 || t.dim(1)? != 3 {
        return Err(err(
            path,
            format!("{name} must have shape [n, 3], got {:?}", t.dims()),
        ));
    }
    let v = ints(&t)?;
    grid_rows(path, name, &v)
}

impl OmniInputs {
    /// Reads the processor's tensors. They stay on the CPU whatever device the model runs on: most are
    /// small integer metadata read back as numbers (and CUDA has no kernels for some of their dtypes),
    /// and the encoders move the features and pixels to the model's device themselves.
    pub fn from_file(path: &Path) -> Result<Self> {
        let map = crate::tensor_io::load(path, &Device::Cpu)?;
        Self::from_map(path, &map)
    }

    pub fn from_map(path: &Path, map: &HashMap<String, Tensor>) -> Result<Self> {
        let path: PathBuf = path.to_path_buf();
        let ids_t = map.get("input_ids").ok_or_else(|| {
            err(
                &path,
                "has no `input_ids` tensor (write the processor's output with its names)",
            )
        })?;
        let ids_t = unbatch(&path, "input_ids", ids_t, 1)?;
        let mut input_ids: Vec<u32> = ints(&ids_t)?
            .into_iter()
            .map(|x| {
                u32::try_from(x).map_err(|_| err(&path, format!("input_ids has a negative id {x}")))
            })
            .collect::<Result<_>>()?;
        if let Some(m) = map.get("attention_mask") {
            let m = ints(&unbatch(&path, "attention_mask", m, 1)?)?;
            if m.len() != input_ids.len() {
                return Err(err(&path, "attention_mask and input_ids differ in length"));
            }
            // Padding (zeros) is dropped: a single prompt needs none.
            input_ids = input_ids
                .into_iter()
                .zip(m)
                .filter(|(_, k)| *k != 0)
                .map(|(i, _)| i)
                .collect();
        }
        if input_ids.is_empty() {
            return Err(err(&path, "input_ids is empty"));
        }
        let video_grid_thw = match map.get("video_grid_thw") {
            Some(t) => grids(&path, "video_grid_thw", t)?,
            None => vec![],
        };
        let image_grid_thw = match map.get("image_grid_thw") {
            Some(t) => grids(&path, "image_grid_thw", t)?,
            None => vec![],
        };
        let pixel_values_videos = map
            .get("pixel_values_videos")
            .map(|t| unbatch(&path, "pixel_values_videos", t, 2))
            .transpose()?;
        let pixel_values = map
            .get("pixel_values")
            .map(|t| unbatch(&path, "pixel_values", t, 2))
            .transpose()?;
        if pixel_values_videos.is_some() == video_grid_thw.is_empty() {
            return Err(err(
                &path,
                "pixel_values_videos and video_grid_thw must come together",
            ));
        }
        if pixel_values.is_some() == image_grid_thw.is_empty() {
            return Err(err(
                &path,
                "pixel_values and image_grid_thw must come together",
            ));
        }
        let video_second_per_grid = match map.get("video_second_per_grid") {
            Some(t) => t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            // The processor's default when it was not given: temporal_patch_size / fps(2) = 1 s.
            None => vec![1.0; video_grid_thw.len()],
        };
        if video_second_per_grid.len() != video_grid_thw.len() {
            return Err(err(
                &path,
                format!(
                    "video_second_per_grid has {} entries for {} videos",
                    video_second_per_grid.len(),
                    video_grid_thw.len()
                ),
            ));
        }
        let (audio_features, audio_lens) = match map.get("input_features") {
            None => (None, vec![]),
            Some(f) => {
                let f = match f.rank() {
                    2 => f.unsqueeze(0)?,
                    3 => f.clone(),
                    _ => {
                        return Err(err(
                            &path,
                            format!(
                                "input_features has shape {:?}, expected [n, mel, frames]",
                                f.dims()
                            ),
                        ))
                    }
                };
                let (n, _bins, frames) = f.dims3()?;
                let lens: Vec<usize> = match map.get("feature_attention_mask") {
                    Some(m) => {
                        let m = if m.rank() == 1 {
                            m.unsqueeze(0)?
                        } else {
                            m.clone()
                        };
                        if m.dims() != [n, frames] {
                            return Err(err(
                                &path,
                                format!("feature_attention_mask has shape {:?}, expected [{n}, {frames}]", m.dims()),
                            ));
                        }
                        let v = ints(&m)?;
                        v.chunks(frames)
                            .map(|row| {
                                let l = row.iter().filter(|&&x| x != 0).count();
                                // The processor's mask is a prefix of ones; anything else is not its output.
                                if row[..l].contains(&0) {
                                    Err(err(
                                        &path,
                                        "feature_attention_mask is not a prefix of ones",
                                    ))
                                } else {
                                    Ok(l)
                                }
                            })
                            .collect::<Result<_>>()?
                    }
                    None => vec![frames; n],
                };
                let mut parts = Vec::new();
                for (i, &l) in lens.iter().enumerate() {
                    if l == 0 {
                        return Err(err(&path, format!("audio clip {i} has no valid frames")));
                    }
                    parts.push(f.get(i)?.narrow(1, 0, l)?);
                }
                (Some(Tensor::cat(&parts, 1)?.to_dtype(DType::F32)?), lens)
            }
        };
        Ok(OmniInputs {
            input_ids,
            pixel_values_videos,
            video_grid_thw,
            video_second_per_grid,
            audio_features,
            audio_lens,
            pixel_values,
            image_grid_thw,
        })
    }
}
