#!/usr/bin/env python3
"""Tiny random-weight video-SALMONN 2+ checkpoints in the real layout, and goldens from the authors' own classes.

video-SALMONN 2+ (bytedance/video-SALMONN-2, folder ``video_SALMONN2_plus``) is Qwen2.5-VL plus an audio branch
(Whisper encoder, a window-level BERT Q-Former, a projection). This script imports the authors' model classes
unchanged, under the versions they pin (tools/requirements-salmonn.txt, transformers 4.51.3, in the virtualenv
tools/make-salmonn-fixtures.sh makes), on CPU:

* GPU-only imports are stubbed in this harness, nothing of theirs is edited: ``liger_kernel`` (its loss class is
  imported at module level, used only in training), ``torchcodec`` and ``decord`` (their video/audio readers,
  imported by the dataset module whose ``split_into_groups`` lays out the audio-visual block), and
  ``torch.cuda.current_device`` (called unconditionally around each embedding, only to gate a print).
* Attention runs eagerly (``attn_implementation="eager"``) in float32. The authors build the Q-Former and
  ``audio_proj`` in bf16 whatever the load dtype (the released models run in bf16 throughout); the f32 goldens
  cast those two to f32, the only way their forward runs in f32.

Writes, under tests/fixtures:

* ``salmonn-tiny-a/``: ``config.json`` as the authors' ``save_pretrained`` writes it (``model_type`` qwen2_5_vl with
  an ``audio_config`` holding a ``qformer_config``), ``model.safetensors``; the LM head tied to the embeddings as in
  the 3B model (so the checkpoint has no ``lm_head.weight``). Special tokens sit at small ids (the real ones minus
  151195: ``<|vision_start|>`` 457, ``<|image_pad|>`` 460, ``<|video_pad|>`` 461, ``<|audio_pad|>`` 470).
* ``goldens/salmonn_<case>/``: ``inputs.safetensors`` under the authors' dataset names (``input_ids``,
  ``attention_mask``, ``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``, ``audio_feature``
  ``[segments, 128, 3000]``, ``audio_lengths``), ``expected.safetensors`` (``position_ids_inference`` and
  ``position_ids_training`` ``[3, seq]``, ``audio_embeds``, ``video_embeds``, ``inputs_embeds``,
  ``logits_inference``, ``logits_training``), ``meta.json``; for the audio-visual case also ``knockouts.json``
  (knockouts with the inference positions, per-layer 4-D masks on the authors' decoder layers) and ``drop.json``
  (positions removed from a layer on).

Usage: ``SALMONN_REPO=/path/to/video-SALMONN-2 python tools/make_salmonn_fixtures.py`` (the repository checkout;
not committed). Deterministic: seeded weights and inputs.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL = "salmonn-tiny-a"

# Real Qwen2.5-VL / video-SALMONN 2+ ids minus this offset: a tiny vocabulary with the specials at its top.
OFFSET = 151195
ENDOFTEXT, IM_START, IM_END = 151643 - OFFSET, 151644 - OFFSET, 151645 - OFFSET
VISION_START, VISION_END, VISION_PAD = 151652 - OFFSET, 151653 - OFFSET, 151654 - OFFSET
IMAGE_PAD, VIDEO_PAD, AUDIO_PAD = 151655 - OFFSET, 151656 - OFFSET, 151665 - OFFSET
VOCAB = 480
NL, SYSTEM, USER, ASSISTANT = 10, 100, 101, 102


def stub(name: str, **attrs):
    """A module transformers' availability checks treat as absent (``find_spec`` needs a ``__spec__``)."""
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def import_authors(repo: Path):
    code = repo / "video_SALMONN2_plus"
    assert (code / "qwenvl/model/modeling_qwen2_5_vl.py").is_file(), f"not a video-SALMONN-2 checkout: {repo}"
    sys.path.insert(0, str(code))
    for name in ["liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.model"]:
        stub(name)
    stub("liger_kernel.transformers.model.loss_utils", LigerForCausalLMLoss=object)
    stub("torchcodec")
    stub("torchcodec.decoders", VideoDecoder=object, AudioDecoder=object)
    stub("decord", VideoReader=object, cpu=lambda *a, **k: None)
    torch.cuda.current_device = lambda: 0
    from qwenvl.model.configuration_qwen2_5_vl import Qwen2_5_VLConfig
    from qwenvl.model.modeling_qwen2_5_vl import video_SALMONN2_plus
    from qwenvl.data.dataset import split_into_groups

    return Qwen2_5_VLConfig, video_SALMONN2_plus, split_into_groups


def tiny_config() -> dict:
    return {
        "architectures": ["video_SALMONN2_plus"],
        "model_type": "qwen2_5_vl",
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 3,
        "attention_dropout": 0.0,
        "bos_token_id": ENDOFTEXT,
        "eos_token_id": IM_END,
        "image_token_id": IMAGE_PAD,
        "video_token_id": VIDEO_PAD,
        "vision_start_token_id": VISION_START,
        "vision_end_token_id": VISION_END,
        "vision_token_id": VISION_PAD,
        "audio_token_id": AUDIO_PAD,
        "vision_config": {
            "depth": 4,
            "hidden_size": 32,
            "hidden_act": "silu",
            "intermediate_size": 48,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 56,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1, 3],
        },
        "audio_config": {
            "num_mel_bins": 128,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 48,
            "d_model": 32,
            "activation_function": "gelu",
            "max_source_positions": 1500,
            "second_per_window": 0.5,
            "second_stride": 0.5,
            "qformer_config": {
                "hidden_size": 48,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-12,
                "encoder_width": 32,
                "add_cross_attention": True,
                "cross_attention_freq": 1,
                "query_length": 1,
            },
        },
    }


def randomize_(model: torch.nn.Module, seed: int):
    """Weights that make every part matter: N(0, 0.08) for matrices, norms near 1, small biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "LayerNorm" in name or "ln_q" in name or "layer_norm" in name):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def build_model(Config, Model, seed: int):
    from transformers.modeling_utils import no_init_weights

    cfg = Config(**tiny_config())
    # Built as from_pretrained builds it (no weight init: the Q-Former's init would tie a head it does not
    # have); every weight is then drawn below.
    with no_init_weights():
        model = Model._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    # The authors build these two in bf16 whatever the load dtype: f32 here, as the rest.
    model.audio.qformer.float()
    model.audio.audio_proj.float()
    model.audio.q_tokens.data = model.audio.q_tokens.data.float()
    randomize_(model, seed)
    model.tie_weights()
    model.eval()
    return model


def words(rng: np.random.Generator, n: int) -> list[int]:
    return [int(x) for x in rng.integers(20, 400, size=n)]


def prompt(block: list[int], rng: np.random.Generator) -> list[int]:
    """The authors' chat layout (`qwenvl/data/dataset.py`): system turn, the user turn with the media block
    then the question, and the assistant header the inference input ends with."""
    ids = [IM_START, SYSTEM, NL, *words(rng, 5), IM_END, NL, IM_START, USER, NL]
    ids += [VISION_START, *block, VISION_END, NL, *words(rng, 6), IM_END, NL, IM_START, ASSISTANT, NL]
    return ids


def make_inputs(case: str, split_into_groups, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    t: dict[str, torch.Tensor] = {}
    grid = torch.tensor([[4, 4, 6]], dtype=torch.long)  # 4 steps of 2×3 merged cells
    second = 0.5  # seconds per grid step (2 frames at 4 fps)
    per_step = int(grid[0, 1] * grid[0, 2] // 4)
    audio_len = 60  # one 30-s segment: 60 windows of 0.5 s
    if case == "av":
        counts = split_into_groups([audio_len], grid[:, 0], [second])[0]
        block = []
        for c in counts:
            block += [VIDEO_PAD] * per_step + [AUDIO_PAD] * c
    elif case == "video":
        block = [VIDEO_PAD] * (per_step * int(grid[0, 0]))
    elif case == "audio":
        block = [AUDIO_PAD] * audio_len
    else:
        raise ValueError(case)
    ids = prompt(block, rng)
    t["input_ids"] = torch.tensor([ids], dtype=torch.long)
    t["attention_mask"] = torch.ones_like(t["input_ids"])
    if case in ("av", "video"):
        n = int(grid.prod())
        t["pixel_values_videos"] = torch.randn((n, 3 * 2 * 14 * 14), generator=g)
        t["video_grid_thw"] = grid
        t["second_per_grid_ts"] = torch.tensor([second], dtype=torch.float32)
    if case in ("av", "audio"):
        t["audio_feature"] = torch.rand((1, 128, 3000), generator=g) * 2 - 1
        t["audio_lengths"] = torch.tensor([audio_len], dtype=torch.long)
    return t


def rope(model, t: dict, training: bool) -> torch.Tensor:
    grid = t.get("video_grid_thw")
    audio = [int(x) for x in t["audio_lengths"]] if (training and "audio_lengths" in t) else None
    spg = [float(x) for x in t["second_per_grid_ts"]] if (training and "second_per_grid_ts" in t) else None
    pos, _ = model.get_rope_index(t["input_ids"], None, grid, audio, spg, t["attention_mask"])
    return pos[:, 0, :]


def forward(model, t: dict, position_ids: torch.Tensor) -> torch.Tensor:
    model.rope_deltas = None
    with torch.no_grad():
        out = model(
            input_ids=t["input_ids"],
            attention_mask=t["attention_mask"],
            position_ids=position_ids[:, None, :],
            pixel_values_videos=t.get("pixel_values_videos"),
            video_grid_thw=t.get("video_grid_thw"),
            audio_feature=t.get("audio_feature"),
            use_cache=False,
        )
    return out.logits[0]


def embeddings(model, t: dict):
    with torch.no_grad():
        ids = t["input_ids"]
        e = model.model.embed_tokens(ids)
        video = audio = None
        if "pixel_values_videos" in t:
            e, video = model.get_video_embeds(t["pixel_values_videos"], t["video_grid_thw"], ids, e)
        if "audio_feature" in t:
            e, audio = model.get_audio_embeds(t["audio_feature"], ids, e)
    return e[0], video, audio


def layers_by_masks(model, inputs_embeds, position_ids, block, start: int, end: int, drop=None):
    """The authors' decoder layers one by one with a 4-D additive mask: in layers ``[start, end)`` the blocked
    (target, source) pairs are ``finfo.min``. With ``drop = (positions, layer)`` those rows are removed before
    that layer (the kept rows keep their position ids). Returns the last position's logits."""
    lm = model.model
    seq = inputs_embeds.shape[0]
    fmin = torch.finfo(torch.float32).min
    h = inputs_embeds[None]
    pos = position_ids[:, None, :]
    keep = torch.arange(seq)
    with torch.no_grad():
        for i, layer in enumerate(lm.layers):
            if drop is not None and i == drop[1]:
                dropped = set(drop[0])
                keep = torch.tensor([p for p in range(seq) if p not in dropped])
                h = h[:, keep]
                pos = pos[:, :, keep]
            n = h.shape[1]
            mask = torch.full((n, n), fmin).triu(1)
            if block is not None and start <= i < end:
                mask = mask.masked_fill(block[keep][:, keep], fmin)
            pe = lm.rotary_emb(h, pos)
            out = layer(h, attention_mask=mask[None, None], position_ids=pos, position_embeddings=pe)
            h = out[0] if isinstance(out, tuple) else out
        return model.lm_head(lm.norm(h))[0, -1]


def make_case(model, case: str, split_into_groups, seed: int):
    out = FIXTURES / "goldens" / f"salmonn_{case}"
    out.mkdir(parents=True, exist_ok=True)
    t = make_inputs(case, split_into_groups, seed)
    save_file({k: v.contiguous() for k, v in t.items()}, str(out / "inputs.safetensors"))
    pos_inf = rope(model, t, training=False)
    pos_train = rope(model, t, training=True)
    inputs_embeds, video, audio = embeddings(model, t)
    logits_inf = forward(model, t, pos_inf)
    logits_train = forward(model, t, pos_train)
    # The model computing its own (inference) positions gives the same logits as passing them.
    model.rope_deltas = None
    with torch.no_grad():
        own = model(
            input_ids=t["input_ids"],
            attention_mask=t["attention_mask"],
            pixel_values_videos=t.get("pixel_values_videos"),
            video_grid_thw=t.get("video_grid_thw"),
            audio_feature=t.get("audio_feature"),
            use_cache=False,
        ).logits[0]
    assert torch.equal(own, logits_inf), f"{case}: the prefill's own positions are not the inference ones"
    expected = {
        "position_ids_inference": pos_inf.contiguous(),
        "position_ids_training": pos_train.contiguous(),
        "inputs_embeds": inputs_embeds.contiguous(),
        "logits_inference": logits_inf.contiguous(),
        "logits_training": logits_train.contiguous(),
    }
    if video is not None:
        expected["video_embeds"] = video.contiguous()
    if audio is not None:
        expected["audio_embeds"] = audio.contiguous()
    save_file(expected, str(out / "expected.safetensors"))
    diff = float((logits_inf[-1] - logits_train[-1]).abs().max())
    meta = {
        "model": MODEL,
        "case": case,
        "seq_len": int(t["input_ids"].shape[1]),
        "last_logits_training_vs_inference_max_abs_diff": diff,
        "top1_inference": int(logits_inf[-1].argmax()),
        "top1_training": int(logits_train[-1].argmax()),
    }
    if case == "av":
        ids = t["input_ids"][0].tolist()
        seq = len(ids)
        n_layers = len(model.model.layers)
        base = layers_by_masks(model, inputs_embeds, pos_inf, None, 0, 0)
        assert float((base - logits_inf[-1]).abs().max()) < 1e-5, "per-layer run differs from the forward"
        token = int(logits_inf[-1].argmax())
        base_p = float(torch.softmax(logits_inf[-1].double(), -1)[token])
        groups = {
            "audio": [i for i, x in enumerate(ids) if x == AUDIO_PAD],
            "video": [i for i, x in enumerate(ids) if x == VIDEO_PAD],
            "last": [seq - 1],
        }
        vend = ids.index(VISION_END)
        question_end = ids.index(IM_END, vend)
        groups["question"] = list(range(vend + 1, question_end))
        results = []
        for name, src, tgt, a, b in [
            ("audio->last", "audio", "last", 0, 2),
            ("video->last", "video", "last", 1, 3),
            ("audio->question", "audio", "question", 0, 3),
        ]:
            block = torch.zeros(seq, seq, dtype=torch.bool)
            block[torch.tensor(groups[tgt])[:, None], torch.tensor(groups[src])[None, :]] = True
            block &= torch.ones(seq, seq, dtype=torch.bool).tril()
            logits = layers_by_masks(model, inputs_embeds, pos_inf, block, a, b)
            p = float(torch.softmax(logits.double(), -1)[token])
            results.append(dict(name=name, source=src, target=tgt, start=a, end=b, token_id=token,
                                base_prob=base_p, prob=p, last_logits=[float(x) for x in logits]))
        with open(out / "knockouts.json", "w", encoding="utf-8") as f:
            json.dump(results, f)
            f.write("\n")
        dropped = groups["audio"] + groups["video"]
        logits = layers_by_masks(model, inputs_embeds, pos_inf, None, 0, 0, drop=(dropped, 1))
        drop = dict(dropped="audio,video", from_layer=1, token_id=token, base_prob=base_p,
                    prob=float(torch.softmax(logits.double(), -1)[token]), last_logits=[float(x) for x in logits])
        with open(out / "drop.json", "w", encoding="utf-8") as f:
            json.dump(drop, f)
            f.write("\n")
        meta["knockouts"] = {r["name"]: r["prob"] for r in results}
        meta["drop_prob"] = drop["prob"]
    with open(out / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"[salmonn_{case}] seq {meta['seq_len']}, top-1 {meta['top1_inference']} (training positions: "
          f"{meta['top1_training']}, last logits differ by up to {diff:.3g})")


def main():
    repo = Path(os.environ.get("SALMONN_REPO", ""))
    Config, Model, split_into_groups = import_authors(repo)
    torch.manual_seed(0)
    model = build_model(Config, Model, seed=11)
    folder = FIXTURES / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    for case, seed in [("av", 1), ("video", 2), ("audio", 3)]:
        make_case(model, case, split_into_groups, seed)
    sizes = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{MODEL}: {sizes / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
