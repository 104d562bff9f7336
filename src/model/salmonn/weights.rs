//! Every tensor video-SALMONN 2+ reads, by checkpoint name and shape, from its config: checks before the
//! model is built (a missing or mis-shaped tensor is named with its file) and random checkpoints.

use crate::model::decoder::decoder_tensors;
use crate::model::salmonn::config::SalmonnConfig;
use crate::model::vision::vision_tensors;
use crate::model::whisper::layer_tensors;

/// `(name, shape)` of the LLM (`model.*`, `lm_head` unless tied), the vision tower (`visual.*`, fused
/// `qkv` as Qwen2.5-VL) and the audio branch (`audio.*`).
pub fn salmonn_tensors(cfg: &SalmonnConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = decoder_tensors(&cfg.text);
    v.extend(
        vision_tensors(&cfg.vision, true)
            .into_iter()
            .map(|(n, s)| (format!("visual.{n}"), s)),
    );
    let mut add = |name: String, shape: Vec<usize>| v.push((format!("audio.{name}"), shape));
    let w = &cfg.whisper;
    let d = w.d_model;
    add("conv1.weight".into(), vec![d, w.num_mel_bins, 3]);
    add("conv1.bias".into(), vec![d]);
    add("conv2.weight".into(), vec![d, d, 3]);
    add("conv2.bias".into(), vec![d]);
    add(
        "embed_positions.weight".into(),
        vec![w.max_source_positions, d],
    );
    for i in 0..w.encoder_layers {
        for (name, shape) in layer_tensors(d, w.encoder_ffn_dim) {
            add(format!("layers.{i}.{name}"), shape);
        }
    }
    add("layer_norm.weight".into(), vec![d]);
    add("layer_norm.bias".into(), vec![d]);
    let q = &cfg.qformer;
    let (h, e, i) = (q.hidden_size, q.encoder_width, q.intermediate_size);
    add("qformer.bert.embeddings.LayerNorm.weight".into(), vec![h]);
    add("qformer.bert.embeddings.LayerNorm.bias".into(), vec![h]);
    for l in 0..q.num_hidden_layers {
        let p = format!("qformer.bert.encoder.layer.{l}");
        let cross = q.cross_attention_freq > 0 && l % q.cross_attention_freq == 0;
        let blocks: &[(&str, usize)] = if cross {
            &[("attention", h), ("crossattention", e)]
        } else {
            &[("attention", h)]
        };
        for &(b, kv) in blocks {
            add(format!("{p}.{b}.self.query.weight"), vec![h, h]);
            add(format!("{p}.{b}.self.query.bias"), vec![h]);
            for n in ["key", "value"] {
                add(format!("{p}.{b}.self.{n}.weight"), vec![h, kv]);
                add(format!("{p}.{b}.self.{n}.bias"), vec![h]);
            }
            add(format!("{p}.{b}.output.dense.weight"), vec![h, h]);
            add(format!("{p}.{b}.output.dense.bias"), vec![h]);
            add(format!("{p}.{b}.output.LayerNorm.weight"), vec![h]);
            add(format!("{p}.{b}.output.LayerNorm.bias"), vec![h]);
        }
        add(format!("{p}.intermediate_query.dense.weight"), vec![i, h]);
        add(format!("{p}.intermediate_query.dense.bias"), vec![i]);
        add(format!("{p}.output_query.dense.weight"), vec![h, i]);
        add(format!("{p}.output_query.dense.bias"), vec![h]);
        add(format!("{p}.output_query.LayerNorm.weight"), vec![h]);
        add(format!("{p}.output_query.LayerNorm.bias"), vec![h]);
    }
    add("q_tokens".into(), vec![1, q.query_length, h]);
    add("audio_proj.weight".into(), vec![cfg.text.hidden_size, h]);
    add("audio_proj.bias".into(), vec![cfg.text.hidden_size]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The released models' sizes: Qwen2.5-VL-3B/7B + Whisper-large-v3's encoder + the Q-Former.
    #[test]
    fn reference_parameter_counts() {
        let count = |c: &SalmonnConfig| -> usize {
            salmonn_tensors(c)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        let (b3, b7) = (
            count(&SalmonnConfig::salmonn_3b()),
            count(&SalmonnConfig::salmonn_7b()),
        );
        assert!((4_400_000_000..4_700_000_000).contains(&b3), "{b3}");
        assert!((8_900_000_000..9_300_000_000).contains(&b7), "{b7}");
    }
}
