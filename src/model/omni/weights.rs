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

    let vc = &cfg.vision;
    let d = vc.hidden_size;
    add(
        "visual.patch_embed.proj.weight".into(),
        vec![
            d,
            vc.in_channels,
            vc.temporal_patch_size,
            vc.patch_size,
            vc.patch_size,
        ],
    );
    for i in 0..vc.depth {
        let p = format!("visual.blocks.{i}");
        add(format!("{p}.norm1.weight"), vec![d]);
        add(format!("{p}.norm2.weight"), vec![d]);
        for n in ["q", "k", "v", "proj"] {
            add(format!("{p}.attn.{n}.weight"), vec![d, d]);
            add(format!("{p}.attn.{n}.bias"), vec![d]);
        }
        for n in ["gate_proj", "up_proj"] {
            add(format!("{p}.mlp.{n}.weight"), vec![vc.intermediate_size, d]);
            add(format!("{p}.mlp.{n}.bias"), vec![vc.intermediate_size]);
        }
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![d, vc.intermediate_size],
        );
        add(format!("{p}.mlp.down_proj.bias"), vec![d]);
    }
    let m = d * vc.spatial_merge_size * vc.spatial_merge_size;
    add("visual.merger.ln_q.weight".into(), vec![d]);
    add("visual.merger.mlp.0.weight".into(), vec![m, m]);
    add("visual.merger.mlp.0.bias".into(), vec![m]);
    add(
        "visual.merger.mlp.2.weight".into(),
        vec![vc.out_hidden_size, m],
    );
    add("visual.merger.mlp.2.bias".into(), vec![vc.out_hidden_size]);

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
        let p = format!("audio_tower.layers.{i}");
        for n in ["q_proj", "v_proj", "out_proj"] {
            add(format!("{p}.self_attn.{n}.weight"), vec![ad, ad]);
            add(format!("{p}.self_attn.{n}.bias"), vec![ad]);
        }
        add(format!("{p}.self_attn.k_proj.weight"), vec![ad, ad]);
        for n in ["self_attn_layer_norm", "final_layer_norm"] {
            add(format!("{p}.{n}.weight"), vec![ad]);
            add(format!("{p}.{n}.bias"), vec![ad]);
        }
        add(format!("{p}.fc1.weight"), vec![a.encoder_ffn_dim, ad]);
        add(format!("{p}.fc1.bias"), vec![a.encoder_ffn_dim]);
        add(format!("{p}.fc2.weight"), vec![ad, a.encoder_ffn_dim]);
        add(format!("{p}.fc2.bias"), vec![ad]);
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
