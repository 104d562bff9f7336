//! The Thinker's tensors by checkpoint name and shape, derived from the config. Used to check a checkpoint
//! before building the model (a missing or mis-shaped tensor is named with its file) and to write
//! random-weight checkpoints in the real layout for benchmarks.

use crate::model::omni::config::ThinkerConfig;

/// `(name with the "thinker." prefix, shape)` for every Thinker tensor the real checkpoint holds.
pub fn thinker_tensors(cfg: &ThinkerConfig) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| v.push((format!("thinker.{name}"), shape));
    for (name, shape) in crate::model::decoder::decoder_tensors(&cfg.text) {
        add(name, shape);
    }

    for (name, shape) in crate::model::vision::vision_tensors(&cfg.vision, false) {
        add(format!("visual.{name}"), shape);
    }

    let a = &cfg.audio;
    let ad = a.d_model;
    add(
        "audio_tower.conv1.weight".into(),
        vec![ad, a.num_mel_bins, 3],
    );
    add("audio_tower.conv1.bias".into(), vec![ad]);
    add("audio_tower.conv2.weight".into(), vec![ad, ad, 3]);
    add("audio_tower.conv2.bias".into(), vec![ad]);
    for i in 0..a.encoder_layers {
        for (name, shape) in crate::model::whisper::layer_tensors(ad, a.encoder_ffn_dim) {
            add(format!("audio_tower.layers.{i}.{name}"), shape);
        }
    }
    add("audio_tower.ln_post.weight".into(), vec![ad]);
    add("audio_tower.ln_post.bias".into(), vec![ad]);
    add("audio_tower.proj.weight".into(), vec![a.output_dim, ad]);
    add("audio_tower.proj.bias".into(), vec![a.output_dim]);
    add(
        "audio_tower.audio_bos_eos_token.weight".into(),
        vec![2, a.output_dim],
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_3b_has_4_7_billion_parameters() {
        let n: usize = thinker_tensors(&ThinkerConfig::qwen25_omni_3b())
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // The brief: the real 3B Thinker has 4.70 B parameters.
        assert!((4.65e9..4.75e9).contains(&(n as f64)), "{n}");
    }
}
