//! video-SALMONN 2+'s audio branch: Whisper-large-v3's encoder on 30-s segments, its frames cut into
//! non-overlapping 0.5-s windows (25 frames), one learned query per window read by a BERT Q-Former (self- and
//! cross-attention, post-LN layers), then a linear projection into the LLM: 60 tokens per segment, the windows
//! of the silent padding included.
//!
//! Port of `WhisperEncoder` (`qwenvl/model/modeling_whisper.py`) and the Q-Former path of its
//! `BertModel` (`qwenvl/model/modeling_bert.py`) in bytedance/video-SALMONN-2 (`video_SALMONN2_plus`):
//! <https://github.com/bytedance/video-SALMONN-2/tree/main/video_SALMONN2_plus/qwenvl/model>

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::model::nn::{compute_dtype, linear, Act, LayerNorm, Lin};
use crate::model::salmonn::config::{QFormerConfig, SalmonnConfig};
use crate::model::whisper::{ConvK3, EncoderLayer};

/// One BERT attention (`BertSelfAttention` + `BertSelfOutput`): `LN(dense(attn) + residual)`.
#[derive(Debug, Clone)]
struct Attention {
    query: Lin,
    key: Lin,
    value: Lin,
    dense: Lin,
    norm: LayerNorm,
    heads: usize,
}

impl Attention {
    fn new(cfg: &QFormerConfig, kv_width: usize, vb: VarBuilder) -> Result<Self> {
        let q = cfg.hidden_size;
        let s = vb.pp("self");
        let o = vb.pp("output");
        Ok(Self {
            query: linear(q, q, true, s.pp("query"))?,
            key: linear(kv_width, q, true, s.pp("key"))?,
            value: linear(kv_width, q, true, s.pp("value"))?,
            dense: linear(q, q, true, o.pp("dense"))?,
            norm: LayerNorm::new(q, cfg.layer_norm_eps, o.pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `x`: `[w, n, q]` queries of `w` windows; `kv`: `[w, m, kv_width]` what they attend to (no mask: the
    /// authors' masks are all ones). Returns `LN(dense(softmax(QKᵀ/√d)·V) + x)`, `[w, n, q]`.
    fn forward(&self, x: &Tensor, kv: &Tensor) -> Result<Tensor> {
        let (w, n, q) = x.dims3()?;
        let m = kv.dim(1)?;
        let hd = q / self.heads;
        let heads = |t: Tensor, len: usize| -> Result<Tensor> {
            Ok(t.reshape((w, len, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let flat = |t: &Tensor| -> Result<Tensor> {
            let (a, b, c) = t.dims3()?;
            Ok(t.reshape((a * b, c))?)
        };
        let qh = heads(self.query.forward(&flat(x)?)?, n)?;
        let kh = heads(self.key.forward(&flat(kv)?)?, m)?;
        let vh = heads(self.value.forward(&flat(kv)?)?, m)?;
        let scores = (qh.matmul(&kh.transpose(2, 3)?.contiguous()?)? / (hd as f64).sqrt())?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(vh.dtype())?;
        let ctx = probs
            .matmul(&vh)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((w * n, q))?;
        let out = (self.dense.forward(&ctx)? + flat(x)?)?;
        Ok(self.norm.forward(&out)?.reshape((w, n, q))?)
    }
}

/// One post-LN Q-Former layer on the queries: self-attention, cross-attention to the window's frames, then
/// the query feed-forward (`intermediate_query` / `output_query`).
#[derive(Debug, Clone)]
struct QFormerLayer {
    attention: Attention,
    cross: Option<Attention>,
    intermediate: Lin,
    output: Lin,
    output_norm: LayerNorm,
    act: Act,
}

impl QFormerLayer {
    fn new(cfg: &QFormerConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let q = cfg.hidden_size;
        let cross = (cfg.cross_attention_freq > 0 && index % cfg.cross_attention_freq == 0)
            .then(|| Attention::new(cfg, cfg.encoder_width, vb.pp("crossattention")))
            .transpose()?;
        Ok(Self {
            attention: Attention::new(cfg, q, vb.pp("attention"))?,
            cross,
            intermediate: linear(
                q,
                cfg.intermediate_size,
                true,
                vb.pp("intermediate_query.dense"),
            )?,
            output: linear(cfg.intermediate_size, q, true, vb.pp("output_query.dense"))?,
            output_norm: LayerNorm::new(q, cfg.layer_norm_eps, vb.pp("output_query.LayerNorm"))?,
            act: Act::from_name(&cfg.hidden_act)?,
        })
    }

    fn forward(&self, h: &Tensor, frames: &Tensor) -> Result<Tensor> {
        let a = self.attention.forward(h, h)?;
        let c = match &self.cross {
            Some(cross) => cross.forward(&a, frames)?,
            None => a,
        };
        let (w, n, q) = c.dims3()?;
        let flat = c.reshape((w * n, q))?;
        let ffn = self
            .act
            .then(&self.intermediate.forward(&flat)?, &self.output)?;
        Ok(self
            .output_norm
            .forward(&(ffn + flat)?)?
            .reshape((w, n, q))?)
    }
}

/// The audio branch (`audio.*` of the checkpoint).
#[derive(Debug, Clone)]
pub struct AudioBranch {
    conv1: ConvK3,
    conv2: ConvK3,
    /// `[max_source_positions, d_model]`, learned (Whisper's sinusoids in the released weights).
    embed_positions: Tensor,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
    embed_norm: LayerNorm,
    qformer: Vec<QFormerLayer>,
    /// `[query_length, q]`.
    q_tokens: Tensor,
    audio_proj: Lin,
    mel_bins: usize,
    positions: usize,
    window: usize,
}

impl AudioBranch {
    /// `vb` at `audio`.
    pub fn new(cfg: &SalmonnConfig, vb: VarBuilder) -> Result<Self> {
        let (w, q) = (&cfg.whisper, &cfg.qformer);
        let d = w.d_model;
        let dtype = compute_dtype(&vb);
        let bert = vb.pp("qformer.bert");
        Ok(Self {
            conv1: ConvK3::new(w.num_mel_bins, d, 1, vb.pp("conv1"))?,
            conv2: ConvK3::new(d, d, 2, vb.pp("conv2"))?,
            embed_positions: vb
                .get((w.max_source_positions, d), "embed_positions.weight")?
                .to_dtype(dtype)?,
            layers: (0..w.encoder_layers)
                .map(|i| {
                    EncoderLayer::new(
                        d,
                        w.encoder_attention_heads,
                        w.encoder_ffn_dim,
                        &w.activation_function,
                        vb.pp(format!("layers.{i}")),
                    )
                })
                .collect::<Result<_>>()?,
            layer_norm: LayerNorm::new(d, 1e-5, vb.pp("layer_norm"))?,
            embed_norm: LayerNorm::new(
                q.hidden_size,
                q.layer_norm_eps,
                bert.pp("embeddings.LayerNorm"),
            )?,
            qformer: (0..q.num_hidden_layers)
                .map(|i| QFormerLayer::new(q, i, bert.pp(format!("encoder.layer.{i}"))))
                .collect::<Result<_>>()?,
            q_tokens: vb
                .get((1, q.query_length, q.hidden_size), "q_tokens")?
                .squeeze(0)?
                .to_dtype(dtype)?,
            audio_proj: linear(
                q.hidden_size,
                cfg.text.hidden_size,
                true,
                vb.pp("audio_proj"),
            )?,
            mel_bins: w.num_mel_bins,
            positions: w.max_source_positions,
            window: cfg.window_frames(),
        })
    }

    /// `features`: `[segments, mel_bins, 2·max_source_positions]` (30-s segments, the authors'
    /// `audio_feature`). Returns `[segments · windows · queries, hidden]`, segment-major, window order.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let (s, bins, frames) = features.dims3()?;
        if bins != self.mel_bins || frames != 2 * self.positions {
            return Err(Error::Prompt(format!(
                "audio_feature has shape [{s}, {bins}, {frames}], the model reads 30-s segments of \
                 [{}, {}]",
                self.mel_bins,
                2 * self.positions
            )));
        }
        let dtype = self.embed_positions.dtype();
        let d = self.embed_positions.dim(1)?;
        // Time-major frames: the convolutions run as products over frames.
        let x = features.to_dtype(dtype)?.transpose(1, 2)?.contiguous()?;
        let h = self
            .conv1
            .forward(&x)?
            .gelu_erf()?
            .reshape((s, frames, d))?;
        let h = self.conv2.forward(&h)?.gelu_erf()?; // [s·positions, d]
        let h = h
            .reshape((s, self.positions, d))?
            .broadcast_add(&self.embed_positions.unsqueeze(0)?)?
            .reshape((s * self.positions, d))?;
        let bounds: Vec<usize> = (0..=s).map(|i| i * self.positions).collect();
        let mut h = h;
        for layer in &self.layers {
            h = layer.forward(&h, &bounds)?;
        }
        let h = self.layer_norm.forward(&h)?;
        // Non-overlapping windows of `window` frames, in order: row `seg·windows + k` is frames
        // `k·window .. (k+1)·window` of segment `seg`.
        let windows = s * self.positions / self.window;
        let frames_w = h.reshape((windows, self.window, d))?;
        let (n, q) = self.q_tokens.dims2()?;
        let queries = self
            .embed_norm
            .forward(&self.q_tokens)?
            .unsqueeze(0)?
            .broadcast_as((windows, n, q))?
            .contiguous()?;
        let mut out = queries;
        for layer in &self.qformer {
            out = layer.forward(&out, &frames_w)?;
        }
        self.audio_proj.forward(&out.reshape((windows * n, q))?)
    }
}
