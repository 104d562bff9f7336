#!/usr/bin/env python3
"""Tiny random-weight video-SALMONN 2+ checkpoints in the real layout, and goldens from the authors' own classes.

video-SALMONN 2+ (bytedance/video-SALMONN-2, folder ``video_SALMONN2_plus``) is Qwen2.5-VL plus an audio branch
(Whisper encoder, a window-level BERT Q-Former, a projection). This script imports the authors' model and dataset
classes unchanged, under the versions they pin (tools/requirements-salmonn.txt: transformers 4.51.3, torch 2.7.1,
torchcodec 0.4.0 on the system's FFmpeg, in the virtualenv tools/make-salmonn-fixtures.sh makes), on CPU:

* GPU-only imports are stubbed in this harness, nothing of theirs is edited: ``liger_kernel`` (its loss class is
  imported at module level, used only in training), ``decord`` (their fallback video reader, imported by the dataset
  module; the stub raises, so a fallback would fail loudly) and ``torch.cuda.current_device`` (called
  unconditionally around each embedding, only to gate a print). torchcodec is the real one.
* Attention runs eagerly (``attn_implementation="eager"``) in float32. The authors build the Q-Former and
  ``audio_proj`` in bf16 whatever the load dtype (the released models run in bf16 throughout); the f32 goldens
  cast those two to f32, the only way their forward runs in f32.

Writes, under tests/fixtures:

* ``salmonn-tiny-a/``: ``config.json`` as the authors' ``save_pretrained`` writes it (``model_type`` qwen2_5_vl with
  an ``audio_config`` holding a ``qformer_config``), ``model.safetensors``; the LM head tied to the embeddings as in
  the 3B model (so the checkpoint has no ``lm_head.weight``). Special tokens sit at small ids (the real ones minus
  151195: ``<|vision_start|>`` 457, ``<|image_pad|>`` 460, ``<|video_pad|>`` 461, ``<|audio_pad|>`` 470). The
  tokenizer/processor files as the released checkpoint has them (``scripts/gen_audio_model.py``: a slow
  ``Qwen2Tokenizer`` saved after ``add_tokens(["<|audio_pad|>"])``, so vocab.json, merges.txt,
  tokenizer_config.json, added_tokens.json, special_tokens_map.json and no tokenizer.json; Qwen2.5-VL's
  chat_template.json and preprocessor_config.json), around the byte-level BPE of omni-tiny-a (ids 0..447).
* ``goldens/salmonn_<case>/`` (av, video, audio; synthetic inputs): ``inputs.safetensors`` under the authors'
  dataset names (``input_ids``, ``attention_mask``, ``pixel_values_videos``, ``video_grid_thw``,
  ``second_per_grid_ts``, ``audio_feature`` ``[segments, 128, 3000]``, ``audio_lengths``), ``expected.safetensors``
  (``position_ids_inference`` and ``position_ids_training`` ``[3, seq]``, ``audio_embeds``, ``video_embeds``,
  ``inputs_embeds``, ``logits_inference``, ``logits_training``), ``meta.json``; for the audio-visual case also
  ``knockouts.json`` (knockouts with the inference positions, per-layer 4-D masks on the authors' decoder layers)
  and ``drop.json`` (positions removed from a layer on), ``generate.json`` (greedy answers through their
  ``generate()``, with repetition penalties 1, 1.05 and 1.5).
* ``goldens/salmonn_prep_<case>/`` (av, video_silent, video, audio, audio_stereo, image_audio, av_range, audio_range; PREP_CASES; the
  ranges are a clip of the range's own frames and 16 kHz samples, see ``instrument``): the
  authors' preprocessing on the files of tests/fixtures/media, driven as ``inference.py`` drives it
  (``prepare_dataset``'s DataArguments, the slow tokenizer, ``LazySupervisedDataset._get_item(input_dict)``),
  decoding with torchcodec: ``inputs.safetensors`` (the tensors ``_get_item`` returns, ``position_ids_training``
  ``[3, seq]`` = its ``position_ids``, plus ``second_per_grid_ts`` f64 and ``audio_lengths`` recorded from
  ``process_video``/``process_audio`` before ``run_test`` drops them), ``media.safetensors`` (what torchcodec
  decoded: ``frame_idx``, ``frames`` uint8 ``[N, H, W, 3]``, ``video_length_s``, ``avg_fps``, ``num_frames``,
  ``wave`` f32 16 kHz mono; ``image`` uint8 ``[H, W, 3]`` as PIL decoded it), ``expected.safetensors``
  (``position_ids_inference``, ``logits_inference``, ``logits_training`` from the tiny model) and ``meta.json``.

Usage: ``SALMONN_REPO=/path/to/video-SALMONN-2 python tools/make_salmonn_fixtures.py`` (the repository checkout;
not committed). Deterministic: seeded weights and inputs; re-running reproduces every file byte for byte.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import math
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

# The tokenizer files: Qwen2.5-VL's added tokens at 448..469 (the real ids minus OFFSET) with the flags of the
# real Qwen2.5-VL tokenizer_config.json (special for 448..461; <tool_call> .. <|file_sep|> not special), then
# <|audio_pad|> 470 added by the authors' scripts/gen_audio_model.py (``tokenizer.add_tokens``: not special).
QWEN25VL_ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
# The chat template shipped with Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct (chat_template.json and
# tokenizer_config.json), verbatim.
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
# Qwen2.5-VL's preprocessor_config.json (the hub file, key order kept): the processor's other settings
# (do_resize/do_rescale/do_normalize true, rescale_factor 1/255, resample 3 = bicubic, do_convert_rgb true) are
# class defaults the file does not spell out.
QWEN25VL_PREPROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def stub(name: str, **attrs):
    """A module transformers' availability checks treat as absent (``find_spec`` needs a ``__spec__``)."""
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def _decord_reached(*args, **kwargs):
    raise RuntimeError("decord is stubbed: their torchcodec reader failed and fell back to decord")


def import_authors(repo: Path):
    code = repo / "video_SALMONN2_plus"
    assert (code / "qwenvl/model/modeling_qwen2_5_vl.py").is_file(), f"not a video-SALMONN-2 checkout: {repo}"
    sys.path.insert(0, str(code))
    for name in ["liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.model"]:
        stub(name)
    stub("liger_kernel.transformers.model.loss_utils", LigerForCausalLMLoss=object)
    # torchcodec is the real one (0.4.0, on the system's FFmpeg): the processor goldens decode with it. decord is
    # only their fallback when torchcodec fails; stubbed so that reaching it fails (and the harness asserts that
    # the torchcodec path ran).
    stub("decord", VideoReader=_decord_reached, cpu=lambda *a, **k: None)
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


def dump_json(path: Path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_tokenizer_files(folder: Path):
    """The released checkpoint's tokenizer/processor files, made the way ``scripts/gen_audio_model.py`` makes them:
    a slow ``Qwen2Tokenizer`` of Qwen2.5-VL loaded with ``use_fast=False``, ``add_tokens(["<|audio_pad|>"])``,
    ``save_pretrained`` (vocab.json, merges.txt, tokenizer_config.json, added_tokens.json, special_tokens_map.json;
    no tokenizer.json), then Qwen2.5-VL's chat_template.json and preprocessor_config.json copied over. The
    "Qwen2.5-VL" here is the tiny byte-level BPE of omni-tiny-a (ids 0..447, tools/make_fixtures.py) with
    Qwen2.5-VL's tokenizer_config.json around it."""
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    omni = FIXTURES / "omni-tiny-a"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        shutil.copy(omni / "vocab.json", base / "vocab.json")
        shutil.copy(omni / "merges.txt", base / "merges.txt")
        decoder = {
            str(ENDOFTEXT + i): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": special}
            for i, (name, special) in enumerate(QWEN25VL_ADDED_TOKENS)
        }
        dump_json(base / "tokenizer_config.json", {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": decoder,
            "additional_special_tokens": [n for n, special in QWEN25VL_ADDED_TOKENS[1:] if special],
            "bos_token": None,
            "chat_template": QWEN25VL_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        })
        # scripts/gen_audio_model.py, verbatim but for the paths.
        tokenizer = AutoTokenizer.from_pretrained(
            str(base), model_max_length=131072, padding_side="right", use_fast=False)
        tokenizer.add_tokens(["<|audio_pad|>"])
        tokenizer.save_pretrained(str(folder))
    dump_json(folder / "chat_template.json", {"chat_template": QWEN25VL_CHAT_TEMPLATE})
    dump_json(folder / "preprocessor_config.json", QWEN25VL_PREPROCESSOR)
    assert not (folder / "tokenizer.json").exists()

    # Loads offline as inference.py loads it; the specials sit at their ids.
    tok = AutoTokenizer.from_pretrained(str(folder), model_max_length=131072, padding_side="right", use_fast=False)
    assert type(tok).__name__ == "Qwen2Tokenizer", type(tok)
    assert len(tok) == AUDIO_PAD + 1 and tok.eos_token_id == IM_END and tok.pad_token_id == ENDOFTEXT
    text = "<|im_start|>user\n<|vision_start|><|audio_pad|><|audio_pad|><|vision_end|>\nWhat is it?<|im_end|>"
    ids = tok(text)["input_ids"]
    user, nl = tok.convert_tokens_to_ids(["user", "\u010a"])  # byte-level BPE: "\n" is "Ċ"
    assert ids[:8] == [IM_START, user, nl, VISION_START, AUDIO_PAD, AUDIO_PAD, VISION_END, nl], ids
    assert ids[-1] == IM_END and tok.decode(ids) == text, ids
    for i, (name, special) in enumerate(QWEN25VL_ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(name) == ENDOFTEXT + i, name
        assert tok.added_tokens_decoder[ENDOFTEXT + i].special == special, name
    assert tok.added_tokens_decoder[AUDIO_PAD].content == "<|audio_pad|>"
    assert not tok.added_tokens_decoder[AUDIO_PAD].special  # as add_tokens leaves it
    return tok


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
    pos, _ = model.get_rope_index(t["input_ids"], t.get("image_grid_thw"), grid, audio, spg, t["attention_mask"])
    return pos[:, 0, :]


def forward(model, t: dict, position_ids: torch.Tensor) -> torch.Tensor:
    model.rope_deltas = None
    with torch.no_grad():
        out = model(
            input_ids=t["input_ids"],
            attention_mask=t["attention_mask"],
            position_ids=position_ids[:, None, :],
            pixel_values=t.get("pixel_values"),
            image_grid_thw=t.get("image_grid_thw"),
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
        # Greedy generation as inference.py runs it (generate() computes the inference positions), with the
        # checkpoint's repetition_penalty (the released models inherit 1.05 from Qwen2.5-VL) and without.
        runs = []
        for penalty in (1.0, 1.05, 1.5):
            model.rope_deltas = None
            with torch.no_grad():
                out_ids = model.generate(
                    input_ids=t["input_ids"],
                    attention_mask=t["attention_mask"],
                    pixel_values_videos=t.get("pixel_values_videos"),
                    video_grid_thw=t.get("video_grid_thw"),
                    audio_feature=t.get("audio_feature"),
                    max_new_tokens=12,
                    do_sample=False,
                    repetition_penalty=penalty,
                    eos_token_id=IM_END,
                    pad_token_id=ENDOFTEXT,
                )
            runs.append(dict(repetition_penalty=penalty,
                             tokens=[int(x) for x in out_ids[0, t["input_ids"].shape[1]:]]))
        with open(out / "generate.json", "w", encoding="utf-8") as f:
            json.dump(dict(max_new_tokens=12, eos_token_id=IM_END, runs=runs), f)
            f.write("\n")
    with open(out / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"[salmonn_{case}] seq {meta['seq_len']}, top-1 {meta['top1_inference']} (training positions: "
          f"{meta['top1_training']}, last logits differ by up to {diff:.3g})")


# --------------------------------------------------------------------------------------------------------------
# Processor goldens: the authors' dataset code (LazySupervisedDataset._get_item, as inference.py drives it) on the
# media under tests/fixtures/media, decoding with the real torchcodec.

MEDIA = FIXTURES / "media"
QUESTION = "What is happening in the clip?"
# (case, media fields of the input dict (paths relative to tests/fixtures/media), media tags of the question)
PREP_CASES = [
    ("av", {"video": "video/basic.mkv", "use_audio": True}, "<video>\n"),
    ("video_silent", {"video": "video/noaudio.mkv", "use_audio": True}, "<video>\n"),
    ("video", {"video": "video/basic.mkv", "use_audio": False}, "<video>\n"),
    ("audio", {"audio": "audio/mono16k.wav"}, "<audio>\n"),
    ("audio_stereo", {"audio": "audio/stereo44k.wav"}, "<audio>\n"),
    ("image_audio", {"image": "video/still.png", "audio": "audio/mono16k.wav"}, "<image>\n<audio>\n"),
    # Time ranges (avflow's --start/--end; their code has none): seconds 2.3..6.1 of the 8-s clip that
    # tools/make_pipeline_goldens.py writes, and a recording from 0.3 s on. See `instrument`.
    ("av_range", {"video": "pipeline/long_av.mkv", "use_audio": True, "range": [2.3, 6.1]}, "<video>\n"),
    ("audio_range", {"audio": "audio/stereo44k.wav", "range": [0.3, None]}, "<audio>\n"),
]


def frame_range(start: float, end, total: int, fps: float) -> tuple[int, int]:
    """The first and last frame of seconds start..end: qwen-omni-utils 0.0.9's ``calculate_video_frame_range`` (the
    rule its decord and torchcodec readers apply to ``video_start``/``video_end``)."""
    duration = total / fps
    first = math.ceil(max(0.0, min(start, duration)) * fps)
    last = total - 1 if end is None else min(math.floor(max(0.0, min(end, duration)) * fps), total - 1)
    assert first < last, (start, end, total, fps)
    return first, last


def sample_range(start: float, end, n: int) -> tuple[int, int]:
    """Samples of seconds start..end at 16 kHz, as ``librosa.load(offset=start, duration=end - start)`` cuts."""
    a = min(int(16000 * start), n)
    return a, (n if end is None else min(a + int(16000 * (end - start)), n))


def prepare_dataset(folder: Path):
    """``inference.py``'s ``prepare_dataset``, ``AutoTokenizer`` and ``make_supervised_data_module`` on the tiny
    checkpoint (``dataset_use`` stays "": no annotation file is read). Returns the dataset, the tokenizer and the
    dataset module."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor
    from qwenvl.data import dataset as dataset_module
    from qwenvl.data.dataset import make_supervised_data_module
    from qwenvl.data.image_processing_qwen2_vl_fast import Qwen2VLImageProcessorFast
    from qwenvl.train.argument import DataArguments

    data_args = DataArguments()
    data_args.video_max_frames = 768
    data_args.video_min_frames = 16
    data_args.base_interval = 0.1
    data_args.max_pixels = 61250
    data_args.video_max_frame_pixels = 61250
    data_args.run_test = True
    data_args.image_processor = Qwen2VLImageProcessorFast.from_pretrained(str(folder))
    data_args.audio_processor = WhisperFeatureExtractor(
        feature_size=data_args.feature_size,
        sampling_rate=data_args.sampling_rate,
        hop_length=data_args.hop_length,
        chunk_length=data_args.chunk_length,
    )
    data_args.model_type = "qwen2.5vl"
    tokenizer = AutoTokenizer.from_pretrained(
        str(folder), model_max_length=131072, padding_side="right", use_fast=False)
    dataset = make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)["train_dataset"]
    assert len(dataset) == 0
    return dataset, tokenizer, dataset_module


def instrument(dataset, dataset_module):
    """Records what their code decodes and returns, without changing it: the instance's ``process_*`` methods
    are wrapped, and the dataset module's ``VideoDecoder``/``AudioDecoder`` are the real torchcodec classes
    subclassed only to record. Their ``get_rope_index_25`` hard-codes the real Qwen2.5-VL ids (151652,
    151655, 151656, 151665): it is called on the ids shifted back to the real ones (+151195 for the added tokens),
    which changes nothing but the ids it compares."""
    from torchcodec.decoders import AudioDecoder, VideoDecoder

    rec: dict = {}

    class RecordingVideoDecoder(VideoDecoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rec.setdefault("video_decoders", []).append(self)
            self.first = 0
            if rec.get("range") is not None:
                # A time range is a clip of its own frames at the stream's rate: their code sees its frame
                # count, and the indices it asks for are shifted to the range's first frame.
                md = self.metadata
                self.whole_metadata = md
                self.first, last = frame_range(*rec["range"], md.num_frames, md.average_fps)
                self.metadata = types.SimpleNamespace(num_frames=last - self.first + 1, average_fps=md.average_fps)

        def get_frames_at(self, indices):
            return super().get_frames_at(indices=[self.first + i for i in indices])

    class RecordingAudioDecoder(AudioDecoder):
        def __init__(self, *args, **kwargs):
            rec.setdefault("audio_decoder_args", []).append((args, kwargs))
            try:
                super().__init__(*args, **kwargs)
            except Exception as e:  # their process_audio swallows it; keep it for meta.json
                rec.setdefault("audio_errors", []).append(f"{type(e).__name__}: {e}")
                raise

        def get_all_samples(self):
            samples = super().get_all_samples()
            if rec.get("range") is not None:
                a, b = sample_range(*rec["range"], samples.data.shape[1])
                samples = dataclasses.replace(samples, data=samples.data[:, a:b])
            rec.setdefault("audio_samples", []).append(samples)
            return samples

    dataset_module.VideoDecoder = RecordingVideoDecoder
    dataset_module.AudioDecoder = RecordingAudioDecoder

    def wrap(name):
        original = getattr(dataset, name)

        def wrapper(*args):
            out = original(*args)
            rec.setdefault(name, []).append((args, out))
            return out

        setattr(dataset, name, wrapper)

    for name in ["process_video", "video_torchcodec", "process_video_frames", "process_audio",
                 "process_image_unified"]:
        wrap(name)

    rope25 = dataset.get_rope_index

    def rope_on_real_ids(merge_size, input_ids, **kwargs):
        real = input_ids.clone()
        real[real >= ENDOFTEXT] += OFFSET
        return rope25(merge_size, real, **kwargs)

    dataset.get_rope_index = rope_on_real_ids
    return rec


def make_prep_case(model, dataset, tokenizer, rec: dict, case: str, fields: dict, tags: str):
    out = FIXTURES / "goldens" / f"salmonn_prep_{case}"
    out.mkdir(parents=True, exist_ok=True)
    rec.clear()
    rec["range"] = fields.get("range")
    # inference.py's input dict, with absolute paths.
    input_dict = {k: (str(MEDIA / v) if k in ("video", "audio", "image") else v) for k, v in fields.items()
                  if k != "range"}
    input_dict["conversations"] = [{"from": "human", "value": tags + QUESTION}, {"from": "gpt", "value": ""}]
    sample = dataset._get_item(input_dict)

    t: dict[str, torch.Tensor] = {}
    t["input_ids"] = sample["input_ids"]
    t["attention_mask"] = sample["attention_mask"]
    seq = int(t["input_ids"].shape[1])
    media: dict[str, torch.Tensor] = {}
    meta: dict = {"model": MODEL, "case": f"prep_{case}"}
    meta["media"] = {k: v for k, v in fields.items() if k in ("video", "audio", "image")}
    meta["use_audio"] = fields.get("use_audio")
    meta["range"] = fields.get("range")
    meta["question"] = QUESTION
    meta["human_value"] = tags + QUESTION
    notes = []

    video_s = None
    if "video" in fields:
        # Their torchcodec reader ran (decord, the fallback, is stubbed to fail) and returned.
        assert len(rec.get("video_torchcodec", [])) == 1 and len(rec.get("process_video", [])) == 1, rec.keys()
        (_, (pixel_values_videos, grid_thw, spg)) = rec["process_video"][0]
        (_, vt_out) = rec["video_torchcodec"][0]
        assert vt_out is rec["process_video"][0][1]
        ((frames, frame_idx, video_length), _) = rec["process_video_frames"][0]
        decoder = rec["video_decoders"][0]
        md = decoder.metadata
        assert video_length == md.num_frames / md.average_fps
        md = getattr(decoder, "whole_metadata", md)  # the file's own, for the record
        n = len(frame_idx)
        per_frame_max = dataset.data_args.video_max_frame_pixels
        if n < dataset.data_args.video_max_frames:  # process_video_frames, same float operations
            per_frame_max = 0.95 * dataset.data_args.video_max_frames / n * per_frame_max
        assert torch.equal(sample["pixel_values_videos"], pixel_values_videos)
        assert torch.equal(sample["video_grid_thw"], grid_thw[None])
        assert spg == [spg[0]] * 3, spg
        video_s = spg[0]
        t["pixel_values_videos"] = sample["pixel_values_videos"]
        t["video_grid_thw"] = sample["video_grid_thw"]
        # A python float (f64) in their code; torch rounds it to f32 where it multiplies a tensor.
        t["second_per_grid_ts"] = torch.tensor([video_s], dtype=torch.float64)
        media["frame_idx"] = torch.as_tensor(np.asarray(frame_idx), dtype=torch.int64) + decoder.first
        media["frames"] = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 2, 3, 1)))
        media["video_length_s"] = torch.tensor([video_length], dtype=torch.float64)
        media["avg_fps"] = torch.tensor([md.average_fps], dtype=torch.float64)
        media["num_frames"] = torch.tensor([md.num_frames], dtype=torch.int64)
        assert media["frames"].dtype == torch.uint8
        meta["video"] = {
            "decoder": "torchcodec 0.4.0 VideoDecoder (seek_mode exact: the file is scanned)",
            "decord_fallback": False,
            "num_frames": md.num_frames,
            "num_frames_from_header": md.num_frames_from_header,
            "num_frames_from_content": md.num_frames_from_content,
            "average_fps": md.average_fps,
            "average_fps_from_header": md.average_fps_from_header,
            "begin_stream_seconds_from_content": md.begin_stream_seconds_from_content,
            "end_stream_seconds_from_content": md.end_stream_seconds_from_content,
            "video_length_s": video_length,
            "frame_idx": [int(x) for x in frame_idx],
            "range_first_frame": decoder.first,
            "frame_count": n,
            "frame_size_hw": [int(frames.shape[2]), int(frames.shape[3])],
            "per_frame_max_pixels": per_frame_max,
            "per_frame_min_pixels": dataset.data_args.video_min_frame_pixels,
            "resized_hw": [int(grid_thw[1]) * 14, int(grid_thw[2]) * 14],
            "video_grid_thw": [int(x) for x in grid_thw],
            "second_per_grid_ts": video_s,
            "second_per_grid_ts_as_returned": spg,
        }
    if "image" in fields:
        assert len(rec.get("process_image_unified", [])) == 1
        (_, (pixel_values, grid_thw)) = rec["process_image_unified"][0]
        assert torch.equal(sample["pixel_values"], pixel_values)
        t["pixel_values"] = sample["pixel_values"]
        t["image_grid_thw"] = sample["image_grid_thw"]
        from PIL import Image

        image = np.asarray(Image.open(MEDIA / fields["image"]).convert("RGB"))
        media["image"] = torch.from_numpy(image.copy())
        ip = dataset.data_args.image_processor
        meta["image"] = {
            "decoder": "PIL Image.open(...).convert('RGB') (process_image_unified; not torchcodec)",
            "size_hw": [int(image.shape[0]), int(image.shape[1])],
            "max_pixels": ip.max_pixels,
            "min_pixels": ip.min_pixels,
            "resized_hw": [int(grid_thw[1]) * 14, int(grid_thw[2]) * 14],
            "image_grid_thw": [int(x) for x in grid_thw],
        }

    audio_file = fields.get("audio") or (fields.get("video") if fields.get("use_audio") else None)
    audio_lengths = None
    if audio_file is not None:
        assert len(rec.get("process_audio", [])) == 1
        (_, (features, audio_lengths)) = rec["process_audio"][0]
        if features is None:
            assert audio_lengths is None and sample["audio_feature"] is None
            assert len(rec.get("audio_errors", [])) == 1, rec.get("audio_errors")
            meta["audio"] = {
                "file": audio_file,
                "process_audio_returned": "(None, None)",
                "swallowed_exception": rec["audio_errors"][0],
            }
            notes.append("use_audio is true but the file has no audio stream: torchcodec's AudioDecoder raises, "
                         "their process_audio catches every exception and returns (None, None), and the sample "
                         "silently becomes video-only (no <|audio_pad|>, no audio_feature).")
        else:
            (samples,) = rec["audio_samples"]
            ((args, kwargs),) = rec["audio_decoder_args"]
            assert kwargs == {"sample_rate": 16000, "num_channels": 1}, kwargs
            wave = samples.data.numpy().squeeze(0)
            assert samples.sample_rate == 16000 and wave.dtype == np.float32
            media["wave"] = torch.from_numpy(wave.copy())
            t["audio_feature"] = sample["audio_feature"]
            assert torch.equal(t["audio_feature"], features[0])
            t["audio_lengths"] = torch.tensor(audio_lengths, dtype=torch.int64)
            assert audio_lengths == [math.ceil(max(len(wave), 16000) / 480000) * 60], audio_lengths
            meta["audio"] = {
                "file": audio_file,
                "decoder": "torchcodec 0.4.0 AudioDecoder(sample_rate=16000, num_channels=1).get_all_samples()",
                "samples": int(len(wave)),
                "samples_after_padding_to_1s": int(max(len(wave), 16000)),
                "pts_seconds": samples.pts_seconds,
                "source_sample_rate": decoder_rate(args[0]),
                "audio_lengths": audio_lengths,
                "segments": int(t["audio_feature"].shape[0]),
            }
    else:
        assert sample["audio_feature"] is None

    pos_train = sample["position_ids"][:, 0, :]
    t["position_ids_training"] = pos_train.contiguous()
    assert sample["position_ids"].shape == (3, 1, seq) and pos_train.dtype == torch.int64
    assert torch.equal(t["attention_mask"], torch.ones_like(t["input_ids"]))
    save_file({k: v.contiguous() for k, v in t.items()}, str(out / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in media.items()}, str(out / "media.safetensors"))

    # Their dataset numbering equals the model's get_rope_index with audio_lengths and second_per_grid_ts (the
    # existing goldens' "training" numbering).
    assert torch.equal(rope(model, t, training=True), pos_train), f"{case}: dataset vs model training positions"
    pos_inf = rope(model, t, training=False)
    logits_inf = forward(model, t, pos_inf)
    logits_train = forward(model, t, pos_train)
    model.rope_deltas = None
    with torch.no_grad():
        own = model(
            input_ids=t["input_ids"],
            attention_mask=t["attention_mask"],
            pixel_values=t.get("pixel_values"),
            image_grid_thw=t.get("image_grid_thw"),
            pixel_values_videos=t.get("pixel_values_videos"),
            video_grid_thw=t.get("video_grid_thw"),
            audio_feature=t.get("audio_feature"),
            use_cache=False,
        ).logits[0]
    assert torch.equal(own, logits_inf), f"{case}: the prefill's own positions are not the inference ones"
    save_file({
        "position_ids_inference": pos_inf.contiguous(),
        "logits_inference": logits_inf.contiguous(),
        "logits_training": logits_train.contiguous(),
    }, str(out / "expected.safetensors"))

    ids = t["input_ids"][0].tolist()
    prompt_text = tokenizer.decode(ids, skip_special_tokens=False)
    assert tokenizer(prompt_text)["input_ids"] == ids, f"{case}: the prompt does not re-tokenise to its ids"
    counts = {name: ids.count(tid) for name, tid in
              [("video_pad", VIDEO_PAD), ("audio_pad", AUDIO_PAD), ("image_pad", IMAGE_PAD)]}
    meta.update({
        "seq_len": seq,
        "prompt_text": prompt_text,
        "placeholder_counts": counts,
        "second_per_grid_ts_dtype": "float64 (a python float in their code)" if video_s is not None else None,
        "positions_equal": bool(torch.equal(pos_inf, pos_train)),
        "last_logits_training_vs_inference_max_abs_diff": float((logits_inf[-1] - logits_train[-1]).abs().max()),
        "top1_inference": int(logits_inf[-1].argmax()),
        "top1_training": int(logits_train[-1].argmax()),
        "notes": notes,
    })
    if video_s is not None and audio_lengths is not None:
        counts_av = audio_counts(ids, t["video_grid_thw"])
        meta["interleave_audio_counts"] = counts_av
        notes.append(
            f"Interleaved block: per grid step {int(t['video_grid_thw'][0, 1] * t['video_grid_thw'][0, 2] // 4)} "
            f"video pads then the step's audio pads from split_into_groups (counts above; the last step takes the "
            f"remainder {counts_av[-1]}). audio_lengths is ceil(samples/480000)*60 = {audio_lengths[0]}: one "
            f"30-s Whisper segment is always 60 tokens, whatever the clip's length.")
    if "video" in fields and fields.get("use_audio") is False:
        notes.append("use_audio false: process_audio is not called; video pads only, between <|vision_start|> and "
                     "<|vision_end|>.")
    if video_s is not None:
        notes.append("second_per_grid_ts: process_video_frames returns [temporal_patch_size / fps] * "
                     "len(grid_thw), i.e. three copies (len of a [t, h, w] row); only the first is read. fps = "
                     "len(frame_idx) / video_length.")
    if "image" in fields and "audio" in fields:
        notes.append("The image block comes first: generate_id_target replaces <image> before <audio> and keeps "
                     "the question's order; each block has its own <|vision_start|> ... <|vision_end|>. "
                     "get_rope_index_25 takes the image/video branch (an image grid and no video grid) which "
                     "ignores audio_lengths: the audio pads are numbered like text, so the training and the "
                     "inference numberings coincide.")
    elif "audio" in fields:
        notes.append("Audio only: the training numbering is their audio branch (audio pad j at (j, j, 0) + offset; "
                     "the text after it from the block's max temporal index + 1); inference (no audio_lengths "
                     "passed) is the plain 1-D numbering.")
    dump_json(out / "meta.json", meta)
    size = sum(f.stat().st_size for f in out.iterdir())
    parts = [f"seq {seq}"]
    if "video" in meta:
        v = meta["video"]
        parts.append(f"{v['frame_count']} frames of {v['num_frames']} (idx {v['frame_idx'][0]}..{v['frame_idx'][-1]})"
                     f", video grid {v['video_grid_thw']}, s {video_s:.6g}, per-frame max_pixels "
                     f"{v['per_frame_max_pixels']:.6g}")
    if "image" in meta:
        parts.append(f"image grid {meta['image']['image_grid_thw']}")
    if audio_lengths is not None:
        parts.append(f"audio {meta['audio']['samples']} samples, audio_lengths {audio_lengths}")
    elif audio_file is not None:
        parts.append("no audio (process_audio swallowed: " + meta["audio"]["swallowed_exception"] + ")")
    parts.append(f"{counts['video_pad']}V/{counts['audio_pad']}A/{counts['image_pad']}I pads, {size / 1e6:.2f} MB")
    print(f"[salmonn_prep_{case}] " + ", ".join(parts))
    return meta


def decoder_rate(path: str):
    from torchcodec.decoders import AudioDecoder

    return AudioDecoder(path).metadata.sample_rate


def audio_counts(ids: list[int], grid: torch.Tensor) -> list[int]:
    """The audio pads after each grid step's video pads in the interleaved block."""
    per_step = int(grid[0, 1] * grid[0, 2] // 4)
    start = ids.index(VISION_START) + 1
    end = ids.index(VISION_END, start)
    block = ids[start:end]
    counts, i = [], 0
    while i < len(block):
        assert block[i:i + per_step] == [VIDEO_PAD] * per_step
        i += per_step
        c = 0
        while i < len(block) and block[i] == AUDIO_PAD:
            c, i = c + 1, i + 1
        counts.append(c)
    assert len(counts) == int(grid[0, 0])
    return counts


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local
    repo = Path(os.environ.get("SALMONN_REPO", ""))
    Config, Model, split_into_groups = import_authors(repo)
    torch.manual_seed(0)
    model = build_model(Config, Model, seed=11)
    folder = FIXTURES / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tok = write_tokenizer_files(folder)
    for case, seed in [("av", 1), ("video", 2), ("audio", 3)]:
        make_case(model, case, split_into_groups, seed)
    sizes = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{MODEL}: {sizes / 1e6:.2f} MB ({len(tok)} tokens, slow Qwen2Tokenizer files, no tokenizer.json)")
    dataset, tokenizer, dataset_module = prepare_dataset(folder)
    rec = instrument(dataset, dataset_module)
    for case, fields, tags in PREP_CASES:
        make_prep_case(model, dataset, tokenizer, rec, case, fields, tags)


if __name__ == "__main__":
    main()
