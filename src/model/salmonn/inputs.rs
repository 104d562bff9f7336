//! The tensors video-SALMONN 2+'s dataset code produces (`qwenvl/data/dataset.py`), under its names, read from
//! a safetensors file: `input_ids`, `attention_mask`, `pixel_values_videos` / `video_grid_thw` /
//! `second_per_grid_ts`, `pixel_values` / `image_grid_thw`, `audio_feature` `[segments, 128, 3000]` and
//! `audio_lengths` (audio tokens per item). A leading batch dimension of one is accepted.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::model::inputs::{err, grid_rows, ints, unbatch};

#[derive(Debug, Clone)]
pub struct SalmonnInputs {
    pub input_ids: Vec<u32>,
    pub pixel_values_videos: Option<Tensor>,
    pub video_grid_thw: Vec<[usize; 3]>,
    /// Seconds one temporal grid step covers, per video (2 / fps).
    pub second_per_grid_ts: Vec<f64>,
    pub pixel_values: Option<Tensor>,
    pub image_grid_thw: Vec<[usize; 3]>,
    /// `[segments, mel_bins, frames]`, f32.
    pub audio_feature: Option<Tensor>,
    /// Audio tokens per audio item (60 per 30-s segment).
    pub audio_lengths: Vec<usize>,
}

fn grids(path: &Path, name: &str, t: &Tensor) -> Result<Vec<[usize; 3]>> {
    let v = ints(t)?;
    if v.len() % 3 != 0 || v.is_empty() {
        return Err(err(
            path,
            format!("{name} must have shape [n, 3], got {:?}", t.dims()),
        ));
    }
    grid_rows(path, name, &v)
}

impl SalmonnInputs {
    pub fn from_map(path: &Path, map: &HashMap<String, Tensor>) -> Result<Self> {
        let ids_t = map.get("input_ids").ok_or_else(|| {
            err(
                path,
                "has no `input_ids` tensor (write the dataset code's tensors with their names)",
            )
        })?;
        let mut input_ids: Vec<u32> = ints(&unbatch(path, "input_ids", ids_t, 1)?)?
            .into_iter()
            .map(|x| {
                u32::try_from(x).map_err(|_| err(path, format!("input_ids has a negative id {x}")))
            })
            .collect::<Result<_>>()?;
        if let Some(m) = map.get("attention_mask") {
            let m = ints(&unbatch(path, "attention_mask", m, 1)?)?;
            if m.len() != input_ids.len() {
                return Err(err(path, "attention_mask and input_ids differ in length"));
            }
            input_ids = input_ids
                .into_iter()
                .zip(m)
                .filter(|(_, k)| *k != 0)
                .map(|(i, _)| i)
                .collect();
        }
        if input_ids.is_empty() {
            return Err(err(path, "input_ids is empty"));
        }
        let video_grid_thw = match map.get("video_grid_thw") {
            Some(t) => grids(path, "video_grid_thw", t)?,
            None => vec![],
        };
        let image_grid_thw = match map.get("image_grid_thw") {
            Some(t) => grids(path, "image_grid_thw", t)?,
            None => vec![],
        };
        let pixels = |name: &str| map.get(name).map(|t| unbatch(path, name, t, 2)).transpose();
        let pixel_values_videos = pixels("pixel_values_videos")?;
        let pixel_values = pixels("pixel_values")?;
        if pixel_values_videos.is_some() == video_grid_thw.is_empty() {
            return Err(err(
                path,
                "pixel_values_videos and video_grid_thw must come together",
            ));
        }
        if pixel_values.is_some() == image_grid_thw.is_empty() {
            return Err(err(
                path,
                "pixel_values and image_grid_thw must come together",
            ));
        }
        let second_per_grid_ts = match map.get("second_per_grid_ts") {
            Some(t) => t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
            // The authors' processing default: 2 frames per grid step at 2 fps.
            None => vec![1.0; video_grid_thw.len()],
        };
        if second_per_grid_ts.len() < video_grid_thw.len() {
            return Err(err(
                path,
                format!(
                    "second_per_grid_ts has {} entries for {} videos",
                    second_per_grid_ts.len(),
                    video_grid_thw.len()
                ),
            ));
        }
        let audio_feature = map
            .get("audio_feature")
            .map(|t| -> Result<Tensor> {
                let t = match t.rank() {
                    2 => t.unsqueeze(0)?,
                    3 => t.clone(),
                    _ => {
                        return Err(err(
                            path,
                            format!(
                                "audio_feature has shape {:?}, expected [segments, 128, 3000]",
                                t.dims()
                            ),
                        ))
                    }
                };
                Ok(t.to_dtype(DType::F32)?)
            })
            .transpose()?;
        let audio_lengths = match map.get("audio_lengths") {
            Some(t) => ints(t)?.into_iter().map(|x| x.max(0) as usize).collect(),
            None => vec![],
        };
        Ok(SalmonnInputs {
            input_ids,
            pixel_values_videos,
            video_grid_thw,
            second_per_grid_ts,
            pixel_values,
            image_grid_thw,
            audio_feature,
            audio_lengths,
        })
    }
}
