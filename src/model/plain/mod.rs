//! A test-only family: the Qwen2.5 decoder alone, on text prompts (no encoders, no media). It exists to
//! prove the model boundary: a family is this one folder plus its entry in [`crate::model::FAMILIES`], and
//! every analysis of the session (trace, knockout, sweep, drop, lens, attention, heatmaps, generation)
//! runs on it unchanged. Its checkpoints are random ones written by [`crate::model::random`]
//! (`model_type` [`FAMILY`]`.id`, keys `model.*` and `lm_head.weight` at the root).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::media::prepare::{Item, PrepareOptions, Prepared};
use crate::media::preview::MediaViews;
use crate::model::config::{Reader, TextConfig};
use crate::model::decoder::{decoder_tensors, Decoder};
use crate::model::loader::ResolvedModel;
use crate::model::{
    Architecture, AvModel, Embedded, EncodeTimings, FamilyEntry, LoadOptions, Prompt,
};
use crate::prompt::{SpecialTokens, TokenMap};

pub const FAMILY: FamilyEntry = FamilyEntry {
    id: "avflow_plain_test",
    name: "plain Qwen2.5 decoder (tests)",
    detect: |path, v| {
        if v.get("model_type").and_then(|t| t.as_str()) != Some(FAMILY.id) {
            return Ok(None);
        }
        let r = Reader {
            path,
            section: "config",
            v,
        };
        let text_v = v.get("text_config").ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            reason: "no `text_config`".into(),
        })?;
        Ok(Some(Arc::new(PlainArch {
            text: TextConfig::parse(path, "text_config", text_v)?,
            im_start: r.id(&["im_start_id"])?,
            im_end: r.id(&["im_end_id"])?,
            user: r.id(&["user_id"])?,
        }) as Arc<dyn Architecture>))
    },
    sizes: &["tiny"],
    reference: |size| {
        (size == "tiny").then(|| Arc::new(PlainArch::tiny()) as Arc<dyn Architecture>)
    },
};

/// What the test family's `config.json` says.
#[derive(Debug, Clone)]
pub struct PlainArch {
    text: TextConfig,
    im_start: Option<u32>,
    im_end: Option<u32>,
    user: Option<u32>,
}

impl PlainArch {
    /// Two layers, 32 wide, a vocabulary of 64, the head tied to the embedding; ids 1, 2, 3 are
    /// `<|im_start|>`, `<|im_end|>`, `user`.
    fn tiny() -> Self {
        PlainArch {
            text: TextConfig {
                vocab_size: 64,
                hidden_size: 32,
                intermediate_size: 48,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                head_dim: 8,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                mrope_section: vec![2, 1, 1],
                hidden_act: "silu".into(),
                tie_word_embeddings: true,
            },
            im_start: Some(1),
            im_end: Some(2),
            user: Some(3),
        }
    }
}

impl Architecture for PlainArch {
    fn family(&self) -> &'static str {
        FAMILY.id
    }

    fn text(&self) -> &TextConfig {
        &self.text
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            im_start: self.im_start,
            im_end: self.im_end,
            user: self.user,
            stop: self.im_end.into_iter().collect(),
            ..SpecialTokens::default()
        }
    }

    fn weight_prefix(&self) -> &'static str {
        ""
    }

    fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        decoder_tensors(&self.text)
    }

    fn checkpoint_hint(&self) -> String {
        "write one with model::random::write_random_checkpoint".into()
    }

    fn load(&self, model: &ResolvedModel, opts: &LoadOptions) -> Result<Box<dyn AvModel>> {
        Ok(Box::new(PlainModel {
            arch: Arc::new(self.clone()),
            decoder: Decoder::new(&self.text, model.var_builder(opts.dtype, &opts.device)?)?,
        }))
    }

    fn prompt_from_tensors(
        &self,
        source: &Path,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Prompt> {
        let ids = tensors.get("input_ids").ok_or_else(|| Error::Inputs {
            path: source.to_path_buf(),
            reason: "has no `input_ids`".into(),
        })?;
        let ids: Vec<u32> = ids
            .flatten_all()?
            .to_dtype(DType::I64)?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let map = TokenMap::classify(&ids, &self.special_tokens());
        Ok(Prompt::new(source.to_path_buf(), ids.clone(), map, ()))
    }

    fn prepare(
        &self,
        model_dir: &Path,
        _: &[Item],
        _: &str,
        _: &PrepareOptions,
        _: &Device,
    ) -> Result<Prepared> {
        Err(Error::Model {
            path: model_dir.to_path_buf(),
            reason: "the test family has no processor".into(),
            fix: "write input_ids yourself".into(),
        })
    }

    fn media_views(&self, _: &Prompt) -> Result<MediaViews> {
        Ok(MediaViews::default())
    }

    fn hub_config(&self) -> serde_json::Value {
        let t = &self.text;
        serde_json::json!({
            "model_type": FAMILY.id,
            "im_start_id": self.im_start, "im_end_id": self.im_end, "user_id": self.user,
            "text_config": {
                "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
                "head_dim": t.head_dim, "rms_norm_eps": t.rms_norm_eps, "rope_theta": t.rope_theta,
                "rope_scaling": {"mrope_section": t.mrope_section}, "hidden_act": t.hidden_act,
                "tie_word_embeddings": t.tie_word_embeddings,
            }
        })
    }

    fn with_layers(&self, layers: usize) -> Arc<dyn Architecture> {
        let mut a = self.clone();
        a.text.num_hidden_layers = layers;
        Arc::new(a)
    }

    fn bench_inputs(&self, _: u64, _: usize, _: f64) -> Result<HashMap<String, Tensor>> {
        Err(Error::Other("the test family has no bench prompt".into()))
    }
}

struct PlainModel {
    arch: Arc<dyn Architecture>,
    decoder: Decoder,
}

impl AvModel for PlainModel {
    fn architecture(&self) -> &Arc<dyn Architecture> {
        &self.arch
    }

    fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Token embeddings at 1-D positions (all three rotary coordinates equal: plain RoPE).
    fn embed(&self, prompt: &Prompt) -> Result<Embedded> {
        let ids = &prompt.input_ids;
        Ok(Embedded {
            input_ids: ids.clone(),
            embeds: self.decoder.embed(ids)?,
            position_ids: (0..ids.len() as i64).map(|p| [p; 3]).collect(),
            rope_delta: 0,
            use_audio_in_video: false,
            audio_embeds: None,
            video_embeds: None,
            image_embeds: None,
            timings: EncodeTimings::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{DropSpec, KnockoutSpec, Model, Session, SweepSpec, Watch};

    /// `<|im_start|> sys <|im_end|> <|im_start|> user q q q <|im_end|> <|im_start|> a`.
    const IDS: [i64; 12] = [1, 10, 2, 1, 3, 20, 21, 22, 2, 1, 30, 31];

    /// Every analysis of the session runs on a second family found through the registry, with no code
    /// outside this folder knowing it.
    #[test]
    fn the_session_runs_every_analysis_on_a_second_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        let arch = crate::model::family(FAMILY.id)
            .expect("registered")
            .released(None)
            .expect("tiny");
        crate::model::random::write_random_checkpoint(arch.as_ref(), dir.path(), 7)
            .expect("checkpoint");
        let inputs = dir.path().join("inputs.safetensors");
        let mut t = HashMap::new();
        t.insert(
            "input_ids".to_string(),
            Tensor::new(&IDS, &Device::Cpu).expect("ids"),
        );
        crate::tensor_io::save_atomic(&t, &inputs).expect("inputs");

        let model =
            Model::open(&dir.path().display().to_string(), DType::F32, &Device::Cpu).expect("open");
        assert_eq!(model.arch().family(), FAMILY.id);
        let prompt = model.read_prompt(&inputs).expect("prompt");
        let mut s = Session::new(Arc::new(model), prompt);
        let g = s.groups().clone();
        assert_eq!(g.spans["system"], vec![0, 1, 2]);
        assert_eq!(g.spans["question"], vec![5, 6, 7]);
        assert_eq!(g.spans["last"], vec![11]);
        assert!(g.spans["audio"].is_empty());

        let w = Watch::none();
        let ko = s
            .knockout(
                &KnockoutSpec::single(
                    "question".parse().expect("sel"),
                    "last".parse().expect("sel"),
                    0,
                    2,
                ),
                &w,
            )
            .expect("knockout");
        assert!(ko.result.prob != ko.result.base_prob);
        // The incremental knockout equals a full masked forward on this family too.
        let traced = s.traced().expect("traced");
        let full = crate::flow::Knockout {
            sources: vec![5, 6, 7],
            targets: vec![11],
            start: 0,
            end: 2,
            heads: None,
        }
        .run_full(
            s.decoder(),
            &traced.trace.residuals.layer(0).unwrap(),
            &traced.trace,
        )
        .expect("full");
        let p = crate::flow::trace::prob_of(&full, ko.result.token_id).expect("prob");
        assert!(
            (p - ko.result.prob).abs() < 1e-6,
            "{p} vs {}",
            ko.result.prob
        );

        let sweep = s
            .sweep(
                &SweepSpec::centred(crate::session::default_pairs(&g), 1),
                &w,
            )
            .expect("sweep")
            .first();
        assert_eq!(sweep.len(), 2, "question→last over 2 layers");
        let d = s
            .drop_positions(
                &DropSpec {
                    selector: "question".parse().expect("sel"),
                    from_layer: 1,
                    generate: 2,
                    curve: true,
                    token: None,
                },
                &w,
            )
            .expect("drop");
        assert_eq!((d.curve.len(), d.dropped), (2, 3));
        let lens = s
            .lens(&"last".parse().expect("sel"), None, 3)
            .expect("lens");
        assert_eq!(lens.layers.len(), 2);
        let att = s
            .attention(&"last".parse().expect("sel"))
            .expect("attention");
        assert_eq!((att.map.len(), att.map[0].len()), (2, IDS.len()));
        for metric in crate::flow::heatmap::HeatMetric::ALL {
            let (h, _) = s.heatmap(metric, &w).expect("heatmap");
            assert_eq!(h.layers, 2);
        }
        let top = s.forward(3, &w).expect("forward");
        assert_eq!(top[0].0, s.traced().expect("traced").trace.top1_id);
    }
}
