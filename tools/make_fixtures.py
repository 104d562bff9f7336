#!/usr/bin/env python3
"""Reference-fixture generator for avflow (Qwen2.5-Omni Thinker re-implementation).

Regenerates, deterministically, everything under ``tests/fixtures/``:

* ``omni-tiny-a/``  tiny random-weight Qwen2.5-Omni checkpoint in the *hub* layout of
  ``Qwen/Qwen2.5-Omni-3B`` (older config key names: ``rope_theta`` + ``rope_scaling``,
  vision ``embed_dim``/``in_chans``/``spatial_patch_size``/...), one ``model.safetensors``.
* ``omni-tiny-b/``  different shapes, transformers-5 config key names (``rope_parameters``),
  weights sharded in two files + ``model.safetensors.index.json``.
* ``goldens/<case>/{inputs,expected,media}.safetensors`` + ``meta.json``: inputs produced by
  the real ``Qwen2_5OmniProcessor`` and reference activations / logits of
  ``Qwen2_5OmniThinkerForConditionalGeneration`` (float32, eager attention, CPU).
* ``goldens/<case>/knockouts.json`` (cases in ``KNOCKOUT_CASES``): attention-knockout experiments, i.e. last-position
  logits of the same HF model with a custom attention function (registered through ``AttentionInterface``, text
  decoder only) that sets the pre-softmax scores of chosen (query, key) pairs to ``finfo(float32).min`` in a range
  of decoder layers.

Usage (from the repository root)::

    python3 tools/make_fixtures.py            # or: tools/make-fixtures.sh (creates .venv-fixtures)

Pinned versions (see tools/requirements-fixtures.txt); the goldens were produced with:

    python 3.11.7, torch 2.15.0 (run on CPU), torchvision 0.29.2 (needed by the
    Qwen2VL video processor), transformers 5.23.0, tokenizers 0.23.3, safetensors 0.8.0,
    numpy 2.4.6, pillow 13.0.0, huggingface_hub 2.4.0, Jinja2 3.1.6

Nothing is downloaded: tokenizer (byte-level BPE trained here on an inline corpus), configs,
weights and media are all generated locally.  Everything is seeded, so re-running the script
reproduces the files bit-for-bit on the same platform/library versions.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import unicodedata
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import safetensors.torch as st  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from transformers import (  # noqa: E402
    Qwen2_5OmniConfig,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerForConditionalGeneration,
)
from transformers.vision_utils import get_vision_window_index  # noqa: E402
from transformers import AttentionInterface, AttentionMaskInterface  # noqa: E402
from transformers.masking_utils import eager_mask  # noqa: E402
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import repeat_kv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
GOLDENS = FIXTURES / "goldens"

EXPECTED_VERSIONS = {"torch": "2.15.0", "transformers": "5.23.0"}

SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)

# The chat template shipped with Qwen/Qwen2.5-Omni-3B and -7B (chat_template.json), verbatim.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Added tokens in the same relative order as the real Qwen2.5-Omni tokenizer (151643..151664).
SPECIAL_TOKENS = [
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|AUDIO|>",  # 151646
    "<|audio_bos|>",  # 151647
    "<|audio_eos|>",  # 151648
    "<|box_end|>",  # 151649
    "<|quad_start|>",  # 151650
    "<|quad_end|>",  # 151651
    "<|vision_bos|>",  # 151652
    "<|vision_eos|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|IMAGE|>",  # 151655
    "<|VIDEO|>",  # 151656
]
NON_SPECIAL_ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# Inline English corpus for the tiny byte-level BPE (chat-formatted so that role names merge).
CORPUS = "\n".join(
    [
        SYSTEM_PROMPT,
        "system\n" + SYSTEM_PROMPT,
        "user\nWhat is happening in this video? Describe what you see and what you hear.",
        "assistant\nThe video shows moving coloured gradients while a tone sweeps upwards.",
        "user\nWhat can you hear in the audio, and what is shown in the picture?",
        "assistant\nI hear a rising tone with a little noise, and the picture shows a gradient.",
        "user\nDescribe the colours and the motion in the video.",
        "user\nWhat is the capital of France? Answer in one word.",
        "assistant\nParis.",
        "user\nTranscribe the audio and tell me what the speaker is saying.",
        "The quick brown fox jumps over the lazy dog. A virtual human can see, hear and speak.",
        "Audio and video are processed together: every two seconds of video frames are followed by "
        "the matching two seconds of audio. The vision encoder uses windowed attention, and the "
        "audio encoder splits the spectrogram into small windows before the transformer layers.",
        "Qwen Team, Alibaba Group. Qwen can perceive auditory and visual inputs and generate text "
        "and speech. The thinker produces text; the talker produces speech codes.",
        "user user user system system assistant assistant you you the the and and what what is is in in",
    ]
    * 3
)

# ----------------------------------------------------------------------------------------------
# Model specifications
# ----------------------------------------------------------------------------------------------

MODELS = {
    "omni-tiny-a": dict(
        seed=1001,
        bpe_vocab=448,  # byte alphabet (256) + 192 merges; added tokens follow at 448..469
        style="hub",  # hub (transformers 4.5x) config key names, single model.safetensors
        text=dict(
            vocab_size=480,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            mrope_section=[2, 3, 3],  # head_dim 16 -> 8 rotary frequency pairs
        ),
        vision=dict(
            depth=4,
            hidden_size=32,
            num_heads=2,
            intermediate_size=64,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=56,  # 56 // 2 // 14 = 2 merged tokens per window side
            fullatt_block_indexes=[1, 3],
        ),
        audio=dict(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=4,
            encoder_ffn_dim=64,
            num_mel_bins=128,
            max_source_positions=1500,
            n_window=10,  # 20 mel frames per audio-encoder window
        ),
    ),
    "omni-tiny-b": dict(
        seed=2002,
        bpe_vocab=416,  # byte alphabet (256) + 160 merges; added tokens at 416..437
        style="v5",  # transformers-5 config key names, sharded weights
        text=dict(
            vocab_size=448,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=3,
            num_key_value_heads=1,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            mrope_section=[4, 2, 2],  # head_dim 16
        ),
        vision=dict(
            depth=3,
            hidden_size=32,
            num_heads=4,  # head_dim 8
            intermediate_size=48,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=84,  # 84 // 2 // 14 = 3 merged tokens per window side
            fullatt_block_indexes=[2],
        ),
        audio=dict(
            d_model=48,
            encoder_layers=2,
            encoder_attention_heads=3,  # head_dim 16
            encoder_ffn_dim=96,
            num_mel_bins=128,
            max_source_positions=1500,
            n_window=8,  # 16 mel frames per audio-encoder window
        ),
    ),
}

# Processor-level settings (written into preprocessor_config.json and passed explicitly at call time).
IMAGE_MIN_PIXELS = 3136  # real Qwen2.5-Omni preprocessor_config.json values
IMAGE_MAX_PIXELS = 12845056
# The processor class defaults videos to size={shortest_edge: 128*28*28, longest_edge: 768*28*28},
# which would up-scale our tiny frames; every video call passes this explicitly instead.
VIDEO_SIZE = {"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 64}
SAMPLE_RATE = 16000

# ----------------------------------------------------------------------------------------------
# Tokenizer: tiny deterministic byte-level BPE with Qwen2's pre-tokenizer
# ----------------------------------------------------------------------------------------------

PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode_chars() -> list[str]:
    """GPT-2/Qwen2 byte -> unicode mapping, in vocabulary order (id 0 == '!')."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def qwen2_pre_tokenizer():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


def train_bpe(text: str, vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Plain, fully deterministic BPE training (ties broken lexicographically)."""
    vocab = {c: i for i, c in enumerate(bytes_to_unicode_chars())}
    words = Counter(w for w, _ in qwen2_pre_tokenizer().pre_tokenize_str(unicodedata.normalize("NFC", text)))
    words = {tuple(w): n for w, n in sorted(words.items())}
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        pairs: Counter = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            raise RuntimeError("corpus too small for the requested BPE vocabulary")
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        new = best[0] + best[1]
        merges.append(best)
        if new not in vocab:
            vocab[new] = len(vocab)
        merged: dict[tuple, int] = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return vocab, merges


def build_tokenizer(bpe_vocab: int):
    vocab, merges = train_bpe(CORPUS, bpe_vocab)
    tk = tokenizers.Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = qwen2_pre_tokenizer()
    tk.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tk.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tk.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False) for t in SPECIAL_TOKENS]
    )
    tk.add_tokens(
        [AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False, single_word=False) for t in NON_SPECIAL_ADDED_TOKENS]
    )
    ids = {t: tk.token_to_id(t) for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED_TOKENS}
    assert ids["<|endoftext|>"] == len(vocab) and ids["<|file_sep|>"] == len(vocab) + 21, ids
    enc = tk.encode("user", add_special_tokens=False).ids
    assert len(enc) == 1, f"'user' must be a single token (user_token_id), got {enc}"
    ids["user"] = enc[0]
    return tk, vocab, merges, ids


def write_tokenizer_files(folder: Path, tk, vocab, merges, ids):
    """Hub-style tokenizer files, as shipped with Qwen/Qwen2.5-Omni-3B."""
    tk.save(str(folder / "tokenizer.json"))
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    added = {t: ids[t] for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED_TOKENS}
    with open(folder / "added_tokens.json", "w", encoding="utf-8") as f:
        json.dump(dict(sorted(added.items())), f, indent=2, ensure_ascii=False)
        f.write("\n")
    additional = [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"]
    special_map = {
        "additional_special_tokens": additional,
        "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    dump_json(folder / "special_tokens_map.json", special_map)
    added_decoder = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
        for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED_TOKENS
    }
    tok_cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_decoder,
        "additional_special_tokens": additional,
        "audio_bos_token": "<|audio_bos|>",
        "audio_eos_token": "<|audio_eos|>",
        "audio_token": "<|AUDIO|>",
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": {
            "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>",
            "audio_token": "<|AUDIO|>",
            "image_token": "<|IMAGE|>",
            "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>",
            "vision_eos_token": "<|vision_eos|>",
        },
        "image_token": "<|IMAGE|>",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "processor_class": "Qwen2_5OmniProcessor",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
        "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>",
        "vision_eos_token": "<|vision_eos|>",
    }
    dump_json(folder / "tokenizer_config.json", tok_cfg)
    dump_json(folder / "chat_template.json", {"chat_template": CHAT_TEMPLATE})


def write_preprocessor_config(folder: Path):
    """Hub-style preprocessor_config.json (WhisperFeatureExtractor + Qwen2VLImageProcessor keys)."""
    cfg = {
        "chunk_length": 300,
        "dither": 0.0,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": 128,
        "hop_length": 160,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "max_pixels": IMAGE_MAX_PIXELS,
        "merge_size": 2,
        "min_pixels": IMAGE_MIN_PIXELS,
        "n_fft": 400,
        "n_samples": 4800000,
        "nb_max_frames": 30000,
        "padding_side": "right",
        "padding_value": 0.0,
        "patch_size": 14,
        "processor_class": "Qwen2_5OmniProcessor",
        "return_attention_mask": True,
        "sampling_rate": SAMPLE_RATE,
        "temporal_patch_size": 2,
    }
    dump_json(folder / "preprocessor_config.json", cfg)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------


def token_id_fields(ids) -> dict:
    return dict(
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
        vision_token_id=ids["<|vision_pad|>"],
        user_token_id=ids["user"],
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        position_id_per_seconds=25,
        seconds_per_chunk=2,
    )


def hub_config(spec, ids) -> dict:
    """config.json with the key names of the hub's Qwen/Qwen2.5-Omni-3B (transformers 4.5x era)."""
    t, v, a = spec["text"], spec["vision"], spec["audio"]
    hidden = t["hidden_size"]
    text_config = {
        "hidden_act": "silu",
        "hidden_size": hidden,
        "init_std": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 32768,
        "max_window_layers": 70,
        "model_type": "qwen2_5_omni_text",
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "rms_norm_eps": t["rms_norm_eps"],
        "rope_scaling": {"mrope_section": list(t["mrope_section"]), "rope_type": "default", "type": "default"},
        "rope_theta": t["rope_theta"],
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": t["vocab_size"],
    }
    vision_config = {
        "depth": v["depth"],
        "embed_dim": v["hidden_size"],
        "fullatt_block_indexes": list(v["fullatt_block_indexes"]),
        "hidden_act": "silu",
        "hidden_size": v["hidden_size"],
        "in_channels": 3,
        "in_chans": 3,
        "init_std": 0.02,
        "intermediate_size": v["intermediate_size"],
        "model_type": "qwen2_5_omni_vision_encoder",
        "num_heads": v["num_heads"],
        "out_hidden_size": hidden,
        "patch_size": v["patch_size"],
        "spatial_merge_size": v["spatial_merge_size"],
        "spatial_patch_size": v["patch_size"],
        "temporal_patch_size": v["temporal_patch_size"],
        "tokens_per_second": 25,
        "torch_dtype": "float32",
        "window_size": v["window_size"],
    }
    audio_config = {
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "attention_dropout": 0.0,
        "d_model": a["d_model"],
        "dropout": 0.0,
        "encoder_attention_heads": a["encoder_attention_heads"],
        "encoder_ffn_dim": a["encoder_ffn_dim"],
        "encoder_layerdrop": 0.0,
        "encoder_layers": a["encoder_layers"],
        "init_std": 0.02,
        "max_source_positions": a["max_source_positions"],
        "model_type": "qwen2_5_omni_audio_encoder",
        "n_window": a["n_window"],
        "num_hidden_layers": a["encoder_layers"],
        "num_mel_bins": a["num_mel_bins"],
        "output_dim": hidden,
        "scale_embedding": False,
        "torch_dtype": "float32",
    }
    tid = token_id_fields(ids)
    thinker = {
        "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"],
        "audio_config": audio_config,
        "audio_end_token_id": tid["audio_end_token_id"],
        "audio_start_token_id": tid["audio_start_token_id"],
        "audio_token_index": tid["audio_token_index"],
        "bos_token_id": tid["bos_token_id"],
        "eos_token_id": tid["eos_token_id"],
        "ignore_index": -100,
        "image_token_index": tid["image_token_index"],
        "init_std": 0.02,
        "model_type": "qwen2_5_omni_thinker",
        "pad_token_id": tid["pad_token_id"],
        "position_id_per_seconds": 25,
        "seconds_per_chunk": 2,
        "text_config": text_config,
        "torch_dtype": "float32",
        "user_token_id": tid["user_token_id"],
        "video_token_index": tid["video_token_index"],
        "vision_config": vision_config,
        "vision_end_token_id": tid["vision_end_token_id"],
        "vision_start_token_id": tid["vision_start_token_id"],
        "vision_token_id": tid["vision_token_id"],
    }
    talker = {
        "architectures": ["Qwen2OmniTalkerForConditionalGeneration"],
        "attention_dropout": 0.0,
        "audio_end_token_id": tid["audio_end_token_id"],
        "audio_start_token_id": tid["audio_start_token_id"],
        "audio_token_index": tid["audio_token_index"],
        "embedding_size": hidden,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 32,
        "image_token_index": tid["image_token_index"],
        "init_std": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 32768,
        "max_window_layers": 28,
        "model_type": "qwen2_5_omni_talker",
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "num_key_value_heads": 1,
        "position_id_per_seconds": 25,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},
        "rope_theta": 1000000.0,
        "seconds_per_chunk": 2,
        "sliding_window": 32768,
        "spatial_merge_size": 2,
        "torch_dtype": "float32",
        "tts_codec_end_token_id": 62,
        "tts_codec_mask_token_id": 63,
        "tts_codec_pad_token_id": 60,
        "tts_codec_start_token_id": 61,
        "tts_text_end_token_id": 57,
        "tts_text_pad_token_id": 58,
        "tts_text_start_token_id": 56,
        "use_cache": True,
        "use_sliding_window": False,
        "video_token_index": tid["video_token_index"],
        "vision_end_token_id": tid["vision_end_token_id"],
        "vision_start_token_id": tid["vision_start_token_id"],
        "vocab_size": 64,
    }
    token2wav = {
        "bigvgan_config": {
            "mel_dim": 8,
            "model_type": "qwen2_5_omni_bigvgan",
            "resblock_dilation_sizes": [[1, 3, 5]],
            "resblock_kernel_sizes": [3],
            "upsample_initial_channel": 16,
            "upsample_kernel_sizes": [4],
            "upsample_rates": [2],
        },
        "dit_config": {
            "block_size": 24,
            "depth": 1,
            "dim": 32,
            "dropout": 0.1,
            "emb_dim": 16,
            "enc_attention_channels": 8,
            "enc_channels": [16, 16],
            "enc_dilations": [1, 1],
            "enc_dim": 8,
            "enc_emb_dim": 8,
            "enc_kernel_sizes": [3, 1],
            "enc_lin_neurons": 8,
            "enc_res2net_scale": 2,
            "enc_se_channels": 8,
            "ff_mult": 2,
            "head_dim": 16,
            "heads": 2,
            "hidden_size": 32,
            "look_ahead_layers": [0],
            "look_backward_layers": [0],
            "max_position_embeddings": 32768,
            "mel_dim": 8,
            "model_type": "qwen2_5_omni_dit",
            "num_attention_heads": 2,
            "num_embeds": 64,
            "num_hidden_layers": 1,
            "repeats": 2,
            "rope_theta": 10000.0,
        },
        "model_type": "qwen2_5_omni_token2wav",
    }
    return {
        "architectures": ["Qwen2_5OmniModel"],
        "enable_audio_output": True,
        "enable_talker": True,
        "model_type": "qwen2_5_omni",
        "talker_config": talker,
        "thinker_config": thinker,
        "token2wav_config": token2wav,
        "torch_dtype": "float32",
    }


def v5_config(spec, ids, folder: Path) -> dict:
    """config.json exactly as transformers 5 serialises a Qwen2_5OmniConfig (rope_parameters, ...)."""
    t, v, a = spec["text"], spec["vision"], spec["audio"]
    hidden = t["hidden_size"]
    tid = token_id_fields(ids)
    text_config = dict(
        vocab_size=t["vocab_size"],
        hidden_size=hidden,
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"],
        rms_norm_eps=t["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": t["rope_theta"], "mrope_section": list(t["mrope_section"])},
        tie_word_embeddings=False,
        bos_token_id=tid["bos_token_id"],
        eos_token_id=tid["eos_token_id"],
        pad_token_id=tid["pad_token_id"],
    )
    vision_config = dict(
        depth=v["depth"],
        hidden_size=v["hidden_size"],
        num_heads=v["num_heads"],
        intermediate_size=v["intermediate_size"],
        patch_size=v["patch_size"],
        temporal_patch_size=v["temporal_patch_size"],
        spatial_merge_size=v["spatial_merge_size"],
        window_size=v["window_size"],
        fullatt_block_indexes=list(v["fullatt_block_indexes"]),
        out_hidden_size=hidden,
    )
    audio_config = dict(
        d_model=a["d_model"],
        encoder_layers=a["encoder_layers"],
        encoder_attention_heads=a["encoder_attention_heads"],
        encoder_ffn_dim=a["encoder_ffn_dim"],
        num_mel_bins=a["num_mel_bins"],
        max_source_positions=a["max_source_positions"],
        n_window=a["n_window"],
        output_dim=hidden,
    )
    thinker = dict(
        text_config=text_config,
        vision_config=vision_config,
        audio_config=audio_config,
        tie_word_embeddings=False,
        **{k: tid[k] for k in tid if k not in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )
    talker = dict(
        vocab_size=64,
        hidden_size=32,
        embedding_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 2, 4]},
        audio_token_index=tid["audio_token_index"],
        image_token_index=tid["image_token_index"],
        video_token_index=tid["video_token_index"],
        audio_start_token_id=tid["audio_start_token_id"],
        audio_end_token_id=tid["audio_end_token_id"],
        vision_start_token_id=tid["vision_start_token_id"],
        vision_end_token_id=tid["vision_end_token_id"],
        tts_text_start_token_id=56,
        tts_text_end_token_id=57,
        tts_text_pad_token_id=58,
        tts_codec_pad_token_id=60,
        tts_codec_start_token_id=61,
        tts_codec_end_token_id=62,
        tts_codec_mask_token_id=63,
    )
    token2wav = dict(
        dit_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, emb_dim=16, mel_dim=8, num_embeds=64),
        bigvgan_config=dict(mel_dim=8, upsample_initial_channel=16, upsample_rates=[2], upsample_kernel_sizes=[4],
                            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav)
        cfg.architectures = ["Qwen2_5OmniModel"]
        cfg.dtype = torch.float32
        cfg.save_pretrained(folder)  # writes folder/config.json in transformers-5 format
    with open(folder / "config.json") as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def randomize_(model: torch.nn.Module, seed: int):
    """Replace HF's init (zero biases, unit norms, std 0.02) by O(1) random values everywhere, so
    that every tensor (biases, norm weights, ...) influences the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.ndim == 1:  # RMSNorm / LayerNorm weights
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            elif "embed_tokens" in name or "audio_bos_eos_token" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


HUB_PREFIXES = [
    ("model.language_model.", "thinker.model."),
    ("model.visual.", "thinker.visual."),
    ("model.audio_tower.", "thinker.audio_tower."),
    ("lm_head.", "thinker.lm_head."),
]


def to_hub_state_dict(model) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        for src, dst in HUB_PREFIXES:
            if k.startswith(src):
                out[dst + k[len(src):]] = v.detach().to(torch.float32).contiguous().clone()
                break
        else:
            raise KeyError(f"unmapped parameter {k}")
    return out


def stub_talker_token2wav(hidden: int, seed: int) -> dict[str, torch.Tensor]:
    """A few tensors under the real talker./token2wav. prefixes; a thinker loader must ignore them."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "talker.thinker_to_talker_proj.weight": (32, hidden),
        "talker.thinker_to_talker_proj.bias": (32,),
        "talker.model.embed_tokens.weight": (64, hidden),
        "talker.model.layers.0.self_attn.q_proj.weight": (32, 32),
        "talker.model.norm.weight": (32,),
        "talker.codec_head.weight": (64, 32),
        "token2wav.code2wav_dit_model.text_embed.codec_embed.weight": (65, 16),
        "token2wav.code2wav_bigvgan_model.conv_pre.weight": (16, 8, 7),
        "token2wav.code2wav_bigvgan_model.conv_pre.bias": (16,),
    }
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def write_weights(folder: Path, tensors: dict[str, torch.Tensor], sharded: bool):
    tensors = dict(sorted(tensors.items()))
    if not sharded:
        st.save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    # Split in sorted-key order into two shards of similar byte size (the layout of the real
    # Qwen/Qwen2.5-Omni-3B checkpoint is model-0000N-of-0000M.safetensors + index).
    nbytes = {k: v.numel() * v.element_size() for k, v in tensors.items()}
    total = sum(nbytes.values())
    shard1, acc = {}, 0
    keys = list(tensors)
    for k in keys:
        if acc >= total / 2:
            break
        shard1[k] = tensors[k]
        acc += nbytes[k]
    shard2 = {k: tensors[k] for k in keys if k not in shard1}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for name, shard in zip(names, [shard1, shard2]):
        st.save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    dump_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    return names


# ----------------------------------------------------------------------------------------------
# Synthetic media
# ----------------------------------------------------------------------------------------------


def make_frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Deterministic uint8 video, (T, H, W, 3): moving coloured gradients + a moving square."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        r = 127.5 + 127.5 * np.sin(2 * np.pi * (x / w) + 0.7 * t + phase[0])
        gch = 127.5 + 127.5 * np.sin(2 * np.pi * (y / h) - 0.5 * t + phase[1])
        b = 127.5 + 127.5 * np.sin(2 * np.pi * ((x + y) / (w + h)) + 0.3 * t + phase[2])
        img = np.stack([r, gch, b], axis=-1)
        sq = max(4, min(h, w) // 4)
        cy = int((h - sq) * (0.5 + 0.5 * np.sin(0.9 * t + phase[0])))
        cx = int((w - sq) * (t / max(1, n - 1)))
        img[cy : cy + sq, cx : cx + sq] = [250.0, 250.0, 20.0]
        img += rng.normal(0.0, 3.0, size=img.shape)
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


def make_wave(seconds: float, seed: int, f0: float = 220.0, f1: float = 1760.0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 16 kHz mono sweep + harmonics + noise, quantised to 16-bit PCM so that the
    float32 waveform given to the processor is exactly ``pcm16 / 32768``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    tt = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    k = (f1 / f0) ** (1.0 / max(seconds, 1e-6))
    phase = 2 * np.pi * f0 * (k**tt - 1) / np.log(k)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * tt)
    sig = 0.25 * env * np.sin(phase) + 0.08 * np.sin(3 * phase + 0.5) + 0.02 * rng.standard_normal(n)
    pcm = np.clip(np.rint(sig * 32768.0), -32768, 32767).astype(np.int16)
    return pcm, (pcm.astype(np.float32) / np.float32(32768.0))


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

CASES = [
    dict(
        name="av_a",
        model="omni-tiny-a",
        kind="video",
        use_audio_in_video=True,
        question="What is happening in this video? Describe what you see and what you hear.",
        video=dict(frames=8, height=56, width=84, fps=2.0, seed=11),  # 4.0 s of frames, 1 s per grid, 2x3 merged tokens (2 windows)
        audio_seconds=4.4,  # the clip's audio track (4.4 s -> 110 audio tokens, 3 chunks)
        audio_seed=12,
        squeeze_batch=False,
    ),
    dict(
        name="av_b_frac",
        model="omni-tiny-b",
        kind="video",
        use_audio_in_video=True,
        question="Describe the colours and the motion in the video.",
        video=dict(frames=12, height=28, width=56, fps=3.0, seed=21),  # 4.0 s of frames, 2/3 s per grid
        audio_seconds=4.3,  # 107 audio tokens -> chunks of 50, 50, 7 (last chunk audio only)
        audio_seed=22,
        squeeze_batch=False,
    ),
    dict(
        name="image_audio_a",
        model="omni-tiny-a",
        kind="image_audio",
        use_audio_in_video=False,
        question="What can you hear in the audio, and what is shown in the picture?",
        image=dict(height=56, width=84, seed=31),
        audio_seconds=2.5,
        audio_seed=32,
        squeeze_batch=True,
    ),
    dict(
        name="video_noaudio_b",
        model="omni-tiny-b",
        kind="video",
        use_audio_in_video=False,
        question="What is happening in this video?",
        video=dict(frames=4, height=56, width=112, fps=2.0, seed=41),
        audio_seconds=None,
        squeeze_batch=False,
    ),
    dict(
        name="text_a",
        model="omni-tiny-a",
        kind="text",
        use_audio_in_video=False,
        question="What is the capital of France? Answer in one word.",
        squeeze_batch=False,
    ),
    dict(
        name="audio_only_b",
        model="omni-tiny-b",
        kind="audio",
        use_audio_in_video=False,
        question="Transcribe the audio and tell me what the speaker is saying.",
        audio_seconds=3.77,
        audio_seed=62,
        squeeze_batch=False,
    ),
]


def build_conversation(case) -> list[dict]:
    content = []
    if case["kind"] == "video":
        content.append({"type": "video", "video": f"{case['name']}.mp4"})
    elif case["kind"] == "image_audio":
        content.append({"type": "image", "image": f"{case['name']}.png"})
        content.append({"type": "audio", "audio": f"{case['name']}.wav"})
    elif case["kind"] == "audio":
        content.append({"type": "audio", "audio": f"{case['name']}.wav"})
    content.append({"type": "text", "text": case["question"]})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": content},
    ]


@contextmanager
def hooks(handles):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def unpermute_vision(x: torch.Tensor, window_index: torch.Tensor, unit: int) -> torch.Tensor:
    """Vision block outputs live in window-permuted order; bring them back to pixel_values row order."""
    n = x.shape[0]
    y = x.reshape(n // unit, unit, -1)
    out = torch.empty_like(y)
    out[window_index] = y
    return out.reshape(n, -1)


def vision_debug(model, pixel_values, grid_thw, prefix: str) -> dict[str, torch.Tensor]:
    visual = model.model.visual
    vcfg = visual.config
    caps: dict[str, torch.Tensor] = {}
    handles = [visual.patch_embed.register_forward_hook(lambda m, a, o: caps.__setitem__("patch_embed", o.detach().clone()))]
    for i, blk in enumerate(visual.blocks):
        handles.append(blk.register_forward_hook(lambda m, a, o, i=i: caps.__setitem__(f"block.{i}", o.detach().clone())))
    with hooks(handles):
        if prefix == "video":
            embeds = torch.cat(model.get_video_features(pixel_values, grid_thw, return_dict=True).pooler_output)
        else:
            embeds = torch.cat(model.get_image_features(pixel_values, grid_thw, return_dict=True).pooler_output)
    window_index, cu_window_seqlens = get_vision_window_index(
        grid_thw, spatial_merge_size=vcfg.spatial_merge_size, window_size=vcfg.window_size, patch_size=vcfg.patch_size
    )
    unit = vcfg.spatial_merge_size**2
    out = {f"{prefix}.patch_embed": caps["patch_embed"]}
    for i in range(len(visual.blocks)):
        out[f"{prefix}.block.{i}"] = unpermute_vision(caps[f"block.{i}"], window_index, unit)
    out[f"{prefix}.window_index"] = window_index.to(torch.int64)
    out[f"{prefix}.cu_window_seqlens"] = cu_window_seqlens.to(torch.int64)
    return embeds, out


def audio_debug(model, input_features, feature_attention_mask) -> dict[str, torch.Tensor]:
    tower = model.model.audio_tower
    caps: dict[str, torch.Tensor] = {}
    handles = [tower.layers[0].register_forward_pre_hook(lambda m, a, k: caps.__setitem__("conv_out", (a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True)]
    for i, layer in enumerate(tower.layers):
        handles.append(layer.register_forward_hook(lambda m, a, o, i=i: caps.__setitem__(f"layer.{i}", o[0].detach().clone())))
    with hooks(handles):
        embeds = model.get_audio_features(input_features, feature_attention_mask, return_dict=True).last_hidden_state
    feature_lens = feature_attention_mask.sum(-1).to(torch.int64)
    n_window = tower.config.n_window
    chunk_num = torch.ceil(feature_lens / (n_window * 2)).long()
    chunk_lengths = []
    for L, c in zip(feature_lens.tolist(), chunk_num.tolist()):
        chunk_lengths += [n_window * 2] * (c - 1) + [L - (c - 1) * n_window * 2]
    chunk_lengths = torch.tensor(chunk_lengths, dtype=torch.int64)
    after_conv1 = (chunk_lengths - 1) // 2 + 1
    cu = torch.nn.functional.pad(after_conv1.cumsum(0), (1, 0), value=0)
    out = {"audio.conv_out": caps["conv_out"], "audio.cu_seqlens": cu.to(torch.int64)}
    for i in range(len(tower.layers)):
        out[f"audio.layer.{i}"] = caps[f"layer.{i}"]
    return embeds, out


def forward_capture(model, model_inputs: dict, use_audio_in_video: bool):
    lm = model.model.language_model
    caps: dict[str, torch.Tensor] = {}
    n_layers = len(lm.layers)

    def lm_pre(m, a, k):
        caps["inputs_embeds"] = k["inputs_embeds"].detach().clone()
        caps["position_ids"] = k["position_ids"].detach().clone()

    handles = [lm.register_forward_pre_hook(lm_pre, with_kwargs=True)]
    for i, layer in enumerate(lm.layers):
        handles.append(
            layer.register_forward_pre_hook(
                lambda m, a, k, i=i: caps.__setitem__(f"hidden_states.{i}", (a[0] if a else k["hidden_states"]).detach().clone()),
                with_kwargs=True,
            )
        )

    def norm_hook(m, a, o):
        caps[f"hidden_states.{n_layers}"] = a[0].detach().clone()
        caps["final_norm"] = o.detach().clone()

    handles.append(lm.norm.register_forward_hook(norm_hook))
    model.model.rope_deltas = None
    with hooks(handles):
        out = model(**model_inputs, use_audio_in_video=use_audio_in_video, use_cache=False)
    caps["logits"] = out.logits.detach().clone()
    caps["rope_deltas"] = model.model.rope_deltas
    return caps


def run_processor(processor, case, media):
    conversation = build_conversation(case)
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    if isinstance(text, list):
        text = text[0]
    call = dict(text=[text], return_tensors="pt", padding=True)
    call_doc = {"text": "[prompt]", "return_tensors": "pt", "padding": True}
    if case["kind"] == "video":
        vk = {"fps": case["video"]["fps"], "size": dict(VIDEO_SIZE), "do_sample_frames": False, "cap_pixels_per_frame": False}
        call["videos"] = [media["video_frames"]]
        call["videos_kwargs"] = vk
        call_doc["videos"] = "[video_frames (T,H,W,3) uint8 numpy]"
        call_doc["videos_kwargs"] = vk
        if case["use_audio_in_video"]:
            call["audio"] = [media["audio_waveform"]]
            call["audio_from_video_indices"] = [0]
            call["load_audio_from_video"] = True
            call_doc["audio"] = "[audio_waveform float32 16 kHz]"
            call_doc["audio_from_video_indices"] = [0]
            call_doc["load_audio_from_video"] = True
    elif case["kind"] == "image_audio":
        call["images"] = [media["image"]]
        call["audio"] = [media["audio_waveform"]]
        call_doc["images"] = "[image (H,W,3) uint8 numpy]"
        call_doc["audio"] = "[audio_waveform float32 16 kHz]"
    elif case["kind"] == "audio":
        call["audio"] = [media["audio_waveform"]]
        call_doc["audio"] = "[audio_waveform float32 16 kHz]"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = processor(**call)
    return text, dict(inputs), call_doc


def expected_interleave(case, inputs, ids) -> list[int] | None:
    """Independent re-derivation of the audio-in-video token layout (per 2-second chunk)."""
    if not case["use_audio_in_video"]:
        return None
    grid = inputs["video_grid_thw"][0].tolist()
    spg = float(inputs["video_second_per_grid"][0])
    per_grid = grid[1] * grid[2] // 4
    n_audio = int(((int(inputs["feature_attention_mask"].sum()) - 1) // 2 + 1 - 2) // 2 + 1)
    vt = [int(t * spg * 25) for t in range(grid[0])]
    chunks_v, chunks_a = {}, {}
    for t in vt:
        chunks_v.setdefault(t // 50, 0)
        chunks_v[t // 50] += per_grid
    for a in range(n_audio):
        chunks_a.setdefault(a // 50, 0)
        chunks_a[a // 50] += 1
    seq = [ids["<|vision_bos|>"], ids["<|audio_bos|>"]]
    for c in range(max(max(chunks_v) + 1, max(chunks_a) + 1)):
        seq += [ids["<|VIDEO|>"]] * chunks_v.get(c, 0)
        seq += [ids["<|AUDIO|>"]] * chunks_a.get(c, 0)
    seq += [ids["<|audio_eos|>"], ids["<|vision_eos|>"]]
    return seq


def make_case(case, models, processors, reloaded):
    name = case["name"]
    spec = MODELS[case["model"]]
    model = models[case["model"]]
    processor = processors[case["model"]]
    ids = spec["ids"]
    out_dir = GOLDENS / name
    out_dir.mkdir(parents=True, exist_ok=True)

    # --- media ---
    media: dict[str, np.ndarray] = {}
    meta_media: dict = {}
    if case.get("audio_seconds"):
        pcm, wave = make_wave(case["audio_seconds"], case["audio_seed"])
        media["audio_pcm16"] = pcm
        media["audio_waveform"] = wave
        meta_media["audio"] = {"seconds": case["audio_seconds"], "samples": int(len(pcm)), "sampling_rate": SAMPLE_RATE}
    if case["kind"] == "video":
        v = case["video"]
        media["video_frames"] = make_frames(v["frames"], v["height"], v["width"], v["seed"])
        meta_media["video"] = {
            "frames": v["frames"], "height": v["height"], "width": v["width"], "fps": v["fps"],
            "seconds": v["frames"] / v["fps"],
        }
    if case["kind"] == "image_audio":
        im = case["image"]
        media["image"] = make_frames(1, im["height"], im["width"], im["seed"])[0]
        meta_media["image"] = {"height": im["height"], "width": im["width"]}

    prompt, inputs, call_doc = run_processor(processor, case, media)
    input_ids = inputs["input_ids"]
    assert input_ids.shape[0] == 1

    # --- sanity checks of the processor output ---
    ii = input_ids[0].tolist()
    counts = {
        "audio_tokens": ii.count(ids["<|AUDIO|>"]),
        "image_tokens": ii.count(ids["<|IMAGE|>"]),
        "video_tokens": ii.count(ids["<|VIDEO|>"]),
    }
    if "video_grid_thw" in inputs:
        assert counts["video_tokens"] == int(inputs["video_grid_thw"].prod(-1).sum()) // 4
    if "image_grid_thw" in inputs:
        assert counts["image_tokens"] == int(inputs["image_grid_thw"].prod(-1).sum()) // 4
    n_valid = None
    if "feature_attention_mask" in inputs:
        fam = inputs["feature_attention_mask"]
        n_valid = int(fam.sum())
        assert fam.shape[-1] == 30000 and bool(fam[0, :n_valid].all()) and not bool(fam[0, n_valid:].any())
        assert counts["audio_tokens"] == ((n_valid - 1) // 2 + 1 - 2) // 2 + 1
    exp = expected_interleave(case, inputs, ids)
    if exp is not None:
        s = ii.index(ids["<|vision_bos|>"])
        assert ii[s : s + len(exp)] == exp, "audio-in-video interleaving differs from the independent derivation"
        assert ii[s - 1] != ids["<|vision_bos|>"]
    # The tokenizer.json alone (what a Rust `tokenizers` user loads) must give the same ids when the
    # expanded prompt is tokenised.
    expanded = processor.tokenizer.decode(ii, skip_special_tokens=False)
    raw_tk = tokenizers.Tokenizer.from_file(str(FIXTURES / case["model"] / "tokenizer.json"))
    assert raw_tk.encode(expanded, add_special_tokens=False).ids == ii
    assert raw_tk.encode(prompt, add_special_tokens=False).ids == processor.tokenizer(prompt)["input_ids"]

    # --- reference forward ---
    model_inputs = {k: v for k, v in inputs.items()}
    with torch.no_grad():
        caps = forward_capture(model, model_inputs, case["use_audio_in_video"])
        expected: dict[str, torch.Tensor] = {}
        seq = input_ids.shape[1]
        pos = caps["position_ids"]
        if pos.ndim == 3:
            assert pos.shape == (3, 1, seq), pos.shape
            pos = pos[:, 0]
        expected["position_ids"] = pos.to(torch.int64)
        # cross-check with a direct get_rope_index call (what compute_3d_position_ids does)
        fam = inputs.get("feature_attention_mask")
        ref_pos, ref_delta = model.model.get_rope_index(
            input_ids,
            inputs.get("image_grid_thw"),
            inputs.get("video_grid_thw"),
            inputs["attention_mask"],
            case["use_audio_in_video"],
            fam.sum(-1) if fam is not None else None,
            inputs.get("video_second_per_grid"),
        )
        assert torch.equal(ref_pos[:, 0], expected["position_ids"])
        expected["rope_deltas"] = caps["rope_deltas"].reshape(-1).to(torch.int64)

        debug: dict[str, torch.Tensor] = {}
        emb_tokens = model.model.get_input_embeddings()(input_ids)[0]
        merged = emb_tokens.clone()
        if "input_features" in inputs:
            audio_embeds, dbg = audio_debug(model, inputs["input_features"], inputs["feature_attention_mask"])
            expected["audio_embeds"] = audio_embeds
            debug.update(dbg)
            merged[input_ids[0] == ids["<|AUDIO|>"]] = audio_embeds
        if "pixel_values" in inputs:
            image_embeds, dbg = vision_debug(model, inputs["pixel_values"], inputs["image_grid_thw"], "image")
            expected["image_embeds"] = image_embeds
            debug.update(dbg)
            merged[input_ids[0] == ids["<|IMAGE|>"]] = image_embeds
        if "pixel_values_videos" in inputs:
            video_embeds, dbg = vision_debug(model, inputs["pixel_values_videos"], inputs["video_grid_thw"], "video")
            expected["video_embeds"] = video_embeds
            debug.update(dbg)
            merged[input_ids[0] == ids["<|VIDEO|>"]] = video_embeds
        expected["inputs_embeds"] = caps["inputs_embeds"][0]
        assert torch.equal(expected["inputs_embeds"], merged), "placeholder replacement mismatch"
        n_layers = len(model.model.language_model.layers)
        for i in range(n_layers + 1):
            expected[f"hidden_states.{i}"] = caps[f"hidden_states.{i}"][0]
        expected["final_norm"] = caps["final_norm"][0]
        expected["logits"] = caps["logits"][0]
        assert torch.equal(expected["hidden_states.0"], expected["inputs_embeds"])
        assert torch.allclose(model.lm_head(expected["final_norm"]), expected["logits"], atol=1e-5, rtol=1e-5)
        expected.update(debug)

        # --- cut the padded audio features to the valid frames; verify the model does not care ---
        stored_inputs = dict(inputs)
        if n_valid is not None:
            stored_inputs["input_features"] = inputs["input_features"][..., :n_valid].contiguous()
            stored_inputs["feature_attention_mask"] = inputs["feature_attention_mask"][..., :n_valid].contiguous()
            cut_logits = model(**stored_inputs, use_audio_in_video=case["use_audio_in_video"], use_cache=False).logits[0]
            assert torch.equal(cut_logits, expected["logits"]), "cut input_features change the logits"

        # --- the model re-loaded from the written folder must give identical results ---
        re_model = reloaded[case["model"]]
        re_model.model.rope_deltas = None
        re_logits = re_model(**stored_inputs, use_audio_in_video=case["use_audio_in_video"], use_cache=False).logits[0]
        reload_max_diff = float((re_logits - expected["logits"]).abs().max())
        assert torch.equal(re_logits, expected["logits"]), f"reloaded model differs: {reload_max_diff}"

    # --- store ---
    squeeze = case["squeeze_batch"]
    batch_keys = ("input_ids", "attention_mask", "input_features", "feature_attention_mask")
    to_store = {}
    for k, v in stored_inputs.items():
        if not isinstance(v, torch.Tensor):
            v = torch.tensor(v)
        if squeeze and k in batch_keys:
            assert v.shape[0] == 1
            v = v[0]
        to_store[k] = v.contiguous()
    st.save_file(to_store, str(out_dir / "inputs.safetensors"), metadata={"format": "pt"})
    for k, v in expected.items():
        if v.is_floating_point():
            expected[k] = v.to(torch.float32).contiguous()
        else:
            expected[k] = v.to(torch.int64).contiguous()
    st.save_file(expected, str(out_dir / "expected.safetensors"), metadata={"format": "pt"})
    media_store = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in media.items() if k != "audio_waveform"}
    if media_store:
        st.save_file(media_store, str(out_dir / "media.safetensors"), metadata={"format": "pt"})

    pos = expected["position_ids"]
    meta = {
        "case": name,
        "model": case["model"],
        "model_path": f"tests/fixtures/{case['model']}",
        "use_audio_in_video": case["use_audio_in_video"],
        "question": case["question"],
        "system_prompt": SYSTEM_PROMPT,
        "conversation": build_conversation(case),
        "prompt": prompt,
        "processor_call": call_doc,
        "media": meta_media,
        "token_ids": {k: ids[k] for k in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                                          "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "user")},
        "batch_dim_squeezed_in_inputs": squeeze,
        "seq_len": int(seq),
        "token_counts": counts,
        "n_valid_mel_frames": n_valid,
        "video_second_per_grid": [float(x) for x in inputs["video_second_per_grid"]] if "video_second_per_grid" in inputs else None,
        "video_grid_thw": inputs["video_grid_thw"].tolist() if "video_grid_thw" in inputs else None,
        "image_grid_thw": inputs["image_grid_thw"].tolist() if "image_grid_thw" in inputs else None,
        "rope_delta": int(expected["rope_deltas"][0]),
        "max_position_id": int(pos.max()),
        "max_abs_logit": float(expected["logits"].abs().max()),
        "reload_max_abs_logit_diff": reload_max_diff,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in to_store.items()},
        "expected": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in expected.items()},
        "media_tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in media_store.items()},
        "notes": case_notes(case),
    }
    dump_json(out_dir / "meta.json", meta)
    print(
        f"[{name:16s}] model={case['model']} seq={seq} audio={counts['audio_tokens']} image={counts['image_tokens']} "
        f"video={counts['video_tokens']} max|logit|={meta['max_abs_logit']:.4f} rope_delta={meta['rope_delta']} "
        f"reload_diff={reload_max_diff:g}"
    )
    return meta


def case_notes(case) -> list[str]:
    notes = [
        "Reference: transformers Qwen2_5OmniThinkerForConditionalGeneration, float32, attn_implementation=eager, CPU, no_grad, use_cache=False.",
        "input_features / feature_attention_mask are cut to the valid mel frames (the processor pads to 30000 frames); the model output is identical with the cut tensors (checked).",
        "hidden_states.L = input of decoder layer L (L = 0..n_layers-1); hidden_states.<n_layers> = output of the last layer before the final RMSNorm; final_norm = after the norm; logits = lm_head(final_norm).",
        "vision debug tensors (<image|video>.patch_embed/.block.K) are in pixel_values row order (HF's window permutation undone); window_index/cu_window_seqlens are HF's.",
        "audio debug tensors: audio.conv_out = input of audio layer 0 (after conv1/conv2, per-window positional embedding and padding removal), audio.layer.K = output of audio layer K, audio.cu_seqlens = per-window boundaries (after conv2's stride 2).",
    ]
    if case["use_audio_in_video"]:
        notes.append("Audio-in-video: processor called with load_audio_from_video=True and audio_from_video_indices=[0] (the decoded track is passed explicitly); the model is called with use_audio_in_video=True.")
    if case["kind"] == "video":
        notes.append("video frames are given already sampled and already at a 28-multiple size; videos_kwargs size/fps/do_sample_frames are passed explicitly so the processor neither re-samples nor resizes.")
    if case["name"] == "av_b_frac":
        notes.append("fps 3 -> video_second_per_grid = 2/3 (non-integer): temporal position ids are trunc(t * 2/3 * 25) = 0,16,33,50,66,...")
    if case["kind"] == "audio":
        notes.append("No image/video grid: HF's get_rope_index takes the text-only branch (position = cumsum(attention_mask)-1 on all 3 rows), which equals the sequential audio positions.")
    if case["squeeze_batch"]:
        notes.append("Batch dimension squeezed in inputs.safetensors for input_ids, attention_mask, input_features, feature_attention_mask (grid_thw tensors keep their [n_items, 3] shape).")
    return notes


# ----------------------------------------------------------------------------------------------
# Attention-knockout goldens (goldens/<case>/knockouts.json)
# ----------------------------------------------------------------------------------------------

KNOCKOUT_CASES = ("av_a", "av_b_frac", "image_audio_a")
KNOCKOUT_IMPL = "knockout"

# The experiment currently applied by knockout_attention_forward: None (plain eager) or
# {"start": int, "end": int, "block": bool [seq, seq] (query t, key s), "calls": [layer_idx, ...]}.
_KNOCKOUT_STATE: dict = {"spec": None}


def knockout_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """``eager_attention_forward`` of modeling_qwen2_5_omni (GQA via repeat_kv, additive causal mask, softmax in
    float32) plus the knockout: in decoder layers ``[start, end)`` the pre-softmax score of every blocked
    (query t, key s) pair is *set* (not added) to ``finfo(dtype).min`` on all heads."""
    assert attention_mask is not None, "the knockout implementation expects eager's additive causal mask"
    assert dropout == 0.0 and not module.training
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    attn_weights = attn_weights + attention_mask
    spec = _KNOCKOUT_STATE["spec"]
    if spec is not None:
        spec["calls"].append(module.layer_idx)
        if spec["start"] <= module.layer_idx < spec["end"]:
            block = spec["block"]
            assert block.shape == attn_weights.shape[-2:], (block.shape, attn_weights.shape)
            attn_weights.masked_fill_(block, torch.finfo(attn_weights.dtype).min)
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def thinker_parts(model):
    """(audio tower, vision tower, text decoder) of a Thinker, in transformers 5.23's layout (under
    ``model.model``, the decoder as ``language_model``) or in older 5.x's (towers on the Thinker itself,
    ``model.model`` the decoder), so the benchmarks also run where another 5.x is installed."""
    inner = model.model
    if hasattr(inner, "language_model"):
        return inner.audio_tower, inner.visual, inner.language_model
    return model.audio_tower, model.visual, inner


def register_knockout_attention():
    AttentionInterface.register(KNOCKOUT_IMPL, knockout_attention_forward)
    # create_causal_mask returns *no mask* for an implementation it does not know: give "knockout" the same
    # 4-D additive float mask as "eager".
    AttentionMaskInterface.register(KNOCKOUT_IMPL, eager_mask)


@contextmanager
def knockout_attention(model, spec: dict | None):
    """Switch only the text decoder (thinker.model.language_model, whose config *is* thinker_config.text_config)
    to the knockout attention. The thinker-level config is not touched: its ``_attn_implementation`` setter
    would propagate the value to the vision/audio sub-configs too."""
    lm = thinker_parts(model)[2]
    text_cfg = lm.config
    assert text_cfg is model.config.text_config and all(layer.self_attn.config is text_cfg for layer in lm.layers)
    text_cfg._attn_implementation = KNOCKOUT_IMPL
    if spec is not None:
        spec["calls"] = []
    _KNOCKOUT_STATE["spec"] = spec
    try:
        for sub in (model.config, model.config.vision_config, model.config.audio_config):
            assert sub._attn_implementation == "eager", (type(sub), sub._attn_implementation)
        yield
    finally:
        _KNOCKOUT_STATE["spec"] = None
        text_cfg._attn_implementation = "eager"
    if spec is not None:  # the custom function ran once per decoder layer (and nowhere else)
        assert spec["calls"] == list(range(len(lm.layers))), spec["calls"]


def knockout_groups(input_ids: list[int], cfg) -> dict[str, list[int]]:
    """Position groups, from input_ids and the thinker config's token ids only."""
    tc = cfg.text_config
    bos = getattr(cfg, "bos_token_id", None)
    bos = tc.bos_token_id if bos is None else bos  # <|im_start|> (thinker level in a, text_config in b)
    eos = getattr(cfg, "eos_token_id", None)
    eos = tc.eos_token_id if eos is None else eos  # <|im_end|>
    starts = [i for i in range(len(input_ids) - 1) if input_ids[i] == bos and input_ids[i + 1] == cfg.user_token_id]
    assert len(starts) == 1, starts
    user_start = starts[0]
    user_end = input_ids.index(eos, user_start)  # the user turn's <|im_end|>
    placeholders = {"video": cfg.video_token_id, "image": cfg.image_token_id, "audio": cfg.audio_token_id}
    markers = set(placeholders.values()) | {
        cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.audio_start_token_id, cfg.audio_end_token_id
    }
    media = [i for i in range(user_start, user_end) if input_ids[i] in markers]
    assert media, "knockout cases need media in the user turn"
    groups = {"system": list(range(user_start))}
    for name, tid in placeholders.items():
        groups[name] = [i for i, t in enumerate(input_ids) if t == tid]
    groups["question"] = list(range(media[-1] + 1, user_end))
    groups["last"] = [len(input_ids) - 1]
    return groups


def knockout_plan(groups: dict[str, list[int]], n_layers: int) -> list[dict]:
    vis = "video" if groups["video"] else "image"
    plan = [
        ("audio", "last", 0, 2),
        (vis, "last", 0, 2),
        ("audio", "last", 1, n_layers),
        (vis, "last", 1, n_layers),
        ("audio", "question", 0, n_layers),
        (vis, "question", 0, 1),
        ("question", "last", 1, n_layers),
        ("last", "last", 0, n_layers),  # blocks the diagonal of the last row too
    ]
    exps = []
    for src, tgt, start, end in plan:
        if groups[src] and groups[tgt] and start < end:
            exps.append(dict(name=f"{src}->{tgt} L{start}..{end}", source=src, target=tgt,
                             sources=groups[src], targets=groups[tgt], start=start, end=end))
    system = groups["system"]
    custom = sorted({system[0], system[1], system[len(system) // 2], system[-1]})
    exps.append(dict(name=f"system[{','.join(map(str, custom))}]->last L0..1", source="custom", target="last",
                     sources=custom, targets=groups["last"], start=0, end=1))
    return exps


def knockout_block(seq: int, sources: list[int], targets: list[int]) -> torch.Tensor:
    block = torch.zeros(seq, seq, dtype=torch.bool)
    block[torch.tensor(targets)[:, None], torch.tensor(sources)[None, :]] = True
    return block & torch.ones(seq, seq, dtype=torch.bool).tril()  # only s <= t


def f32_list(x: torch.Tensor) -> list[float]:
    """float32 values as the shortest decimal strings that round-trip to the same float32."""
    vals = [float(str(v)) for v in x.detach().to(torch.float32).numpy()]
    assert np.array_equal(np.array(vals, dtype=np.float32), x.numpy()), "float32 round-trip failed"
    return vals


def knockout_by_layer_masks(model, inputs_embeds, position_ids, block, start: int, end: int) -> torch.Tensor:
    """Independent cross-check with HF's *stock* eager attention: run the decoder layers one by one, giving
    layers [start, end) a 4-D additive mask in which the blocked pairs are finfo.min (instead of the causal 0)."""
    lm = model.model.language_model
    seq = inputs_embeds.shape[0]
    fmin = torch.finfo(torch.float32).min
    causal = torch.full((seq, seq), fmin).triu(1)[None, None]
    knocked = causal.masked_fill(block[None, None], fmin)
    h = inputs_embeds[None]
    pos = position_ids[:, None, :]
    position_embeddings = lm.rotary_emb(h, pos)
    assert lm.config._attn_implementation == "eager"
    for i, layer in enumerate(lm.layers):
        h = layer(h, attention_mask=knocked if start <= i < end else causal, position_embeddings=position_embeddings,
                  position_ids=None, past_key_values=None, use_cache=False)
        h = h[0] if isinstance(h, tuple) else h
    return model.lm_head(lm.norm(h))[0]


def make_knockouts(case, model) -> list[dict]:
    """Attention-knockout experiments on the stored inputs of a golden case (HF, float32, custom attention)."""
    register_knockout_attention()
    name = case["name"]
    out_dir = GOLDENS / name
    inputs = st.load_file(str(out_dir / "inputs.safetensors"))
    if case["squeeze_batch"]:
        for k in ("input_ids", "attention_mask", "input_features", "feature_attention_mask"):
            if k in inputs:
                inputs[k] = inputs[k][None]
    expected = st.load_file(str(out_dir / "expected.safetensors"))
    ref_logits = expected["logits"]
    input_ids = inputs["input_ids"][0].tolist()
    seq = len(input_ids)
    n_layers = len(model.model.language_model.layers)

    def run(spec):
        model.model.rope_deltas = None
        if spec is False:  # plain eager
            return model(**inputs, use_audio_in_video=case["use_audio_in_video"], use_cache=False).logits[0]
        with knockout_attention(model, spec):
            return model(**inputs, use_audio_in_video=case["use_audio_in_video"], use_cache=False).logits[0]

    base = run(False)
    assert torch.equal(base, ref_logits), "eager run on the stored inputs differs from expected.safetensors"
    empty = run(dict(start=0, end=n_layers, block=torch.zeros(seq, seq, dtype=torch.bool)))
    empty_diff = float((empty - base).abs().max())
    assert empty_diff == 0.0, f"knockout attention with nothing blocked differs from eager: {empty_diff}"

    base_probs = torch.softmax(base[-1].double(), -1)
    token_id = int(base[-1].argmax())
    groups = knockout_groups(input_ids, model.config)
    results = []
    max_check_diff = 0.0
    # the per-layer re-run reproduces the plain eager logits when nothing is blocked
    no_block = knockout_by_layer_masks(model, expected["inputs_embeds"], expected["position_ids"],
                                       torch.zeros(seq, seq, dtype=torch.bool), 0, n_layers)
    assert float((no_block - base).abs().max()) < 1e-5
    for exp in knockout_plan(groups, n_layers):
        block = knockout_block(seq, exp["sources"], exp["targets"])
        assert block.any(), exp["name"]
        logits = run(dict(start=exp["start"], end=exp["end"], block=block))
        first = min(exp["targets"])  # rows before the first target (causal) must be untouched
        assert torch.equal(logits[:first], base[:first]), exp["name"]
        check = knockout_by_layer_masks(model, expected["inputs_embeds"], expected["position_ids"], block, exp["start"], exp["end"])
        check_diff = float((check - logits).abs().max())
        assert check_diff < 1e-5, f"{exp['name']}: knockout differs from the per-layer 4-D mask run by {check_diff}"
        max_check_diff = max(max_check_diff, check_diff)
        prob = float(torch.softmax(logits[-1].double(), -1)[token_id])
        results.append(dict(exp, token_id=token_id, base_prob=float(base_probs[token_id]), prob=prob,
                            last_logits=f32_list(logits[-1])))
    with open(out_dir / "knockouts.json", "w", encoding="utf-8") as f:  # one experiment per line
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in results) + "\n]\n")
    # the model is back to plain eager attention
    assert torch.equal(run(False), base)
    print(f"[{name:16s}] knockouts: token_id={token_id} base_prob={results[0]['base_prob']:.6f} "
          f"(per-layer-mask cross-check max diff {max_check_diff:g}) | "
          + " | ".join(f"{r['name']}: {r['prob']:.6f} ({(r['prob'] - r['base_prob']) / r['base_prob']:+.2%})" for r in results))
    return results


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def dump_json(path: Path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def build_model_folder(name: str, spec: dict):
    folder = FIXTURES / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    tk, vocab, merges, ids = build_tokenizer(spec["bpe_vocab"])
    spec["ids"] = ids
    assert spec["text"]["vocab_size"] >= tk.get_vocab_size()
    write_tokenizer_files(folder, tk, vocab, merges, ids)
    write_preprocessor_config(folder)

    if spec["style"] == "hub":
        cfg = hub_config(spec, ids)
        dump_json(folder / "config.json", cfg)
    else:
        cfg = v5_config(spec, ids, folder)
    dump_json(folder / "generation_config.json", {"bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]})

    # In-memory model built from the config file we just wrote.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full_cfg = Qwen2_5OmniConfig.from_pretrained(folder)
    thinker_cfg = full_cfg.thinker_config
    torch.manual_seed(spec["seed"])
    model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(thinker_cfg, attn_implementation="eager", dtype=torch.float32)
    randomize_(model, spec["seed"])
    model.eval()
    check_config(model, spec, ids)

    tensors = to_hub_state_dict(model)
    tensors.update(stub_talker_token2wav(spec["text"]["hidden_size"], spec["seed"] + 1))
    files = write_weights(folder, tensors, sharded=spec["style"] != "hub")

    # Re-load with HF from the folder alone (no config object passed): transformers extracts
    # thinker_config from the full qwen2_5_omni config.json, strips the "thinker." prefix through its
    # checkpoint conversion mapping and ignores the talker./token2wav. tensors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            folder, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
        )
    reloaded.eval()
    assert reloaded.config.to_dict() == thinker_cfg.to_dict() or _same_thinker_cfg(reloaded.config, thinker_cfg)
    assert not info["missing_keys"], info["missing_keys"]
    assert not info.get("mismatched_keys"), info["mismatched_keys"]
    unexpected = sorted(info["unexpected_keys"])
    assert all(k.startswith(("talker.", "token2wav.")) for k in unexpected), unexpected
    sd_a, sd_b = model.state_dict(), reloaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), f"reloaded tensor differs: {k}"
    assert not torch.equal(sd_b["lm_head.weight"], sd_b["model.language_model.embed_tokens.weight"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = Qwen2_5OmniProcessor.from_pretrained(folder)
    tok = processor.tokenizer
    assert tok.audio_token_id == ids["<|AUDIO|>"] and tok.image_token_id == ids["<|IMAGE|>"] and tok.video_token_id == ids["<|VIDEO|>"]
    assert processor.feature_extractor.feature_size == 128 and processor.feature_extractor.nb_max_frames == 30000
    n_params = sum(v.numel() for k, v in tensors.items() if k.startswith("thinker."))
    print(f"[{name}] tokenizer size {tk.get_vocab_size()} | thinker params {n_params} | files {files} | ids: "
          + ", ".join(f"{k}={ids[k]}" for k in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>", "user")))
    return model, reloaded, processor


def _same_thinker_cfg(c1, c2) -> bool:
    d1, d2 = c1.to_dict(), c2.to_dict()
    for d in (d1, d2):
        for k in ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"):
            d.pop(k, None)
    diff = {k for k in set(d1) | set(d2) if d1.get(k) != d2.get(k)}
    assert not diff, f"reloaded thinker config differs in {sorted(diff)}"
    return True


def check_config(model, spec, ids):
    cfg = model.config
    t = spec["text"]
    tc = cfg.text_config
    assert tc.rope_parameters["mrope_section"] == t["mrope_section"]
    assert float(tc.rope_parameters["rope_theta"]) == t["rope_theta"]
    assert sum(t["mrope_section"]) * 2 == t["hidden_size"] // t["num_attention_heads"]
    assert cfg.vision_config.window_size == spec["vision"]["window_size"]
    assert cfg.audio_config.n_window == spec["audio"]["n_window"]
    assert cfg.audio_token_id == ids["<|AUDIO|>"] and cfg.video_token_id == ids["<|VIDEO|>"] and cfg.image_token_id == ids["<|IMAGE|>"]
    assert cfg.vision_start_token_id == ids["<|vision_bos|>"] and cfg.audio_start_token_id == ids["<|audio_bos|>"]
    for sub in (cfg, cfg.text_config, cfg.vision_config, cfg.audio_config):
        assert sub._attn_implementation == "eager", (type(sub), sub._attn_implementation)


def main():
    for k, v in EXPECTED_VERSIONS.items():
        have = {"torch": torch.__version__, "transformers": transformers.__version__}[k].split("+")[0]
        if have != v:
            print(f"WARNING: {k} {have} != pinned {v}; goldens may differ", file=sys.stderr)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    if GOLDENS.exists():
        shutil.rmtree(GOLDENS)
    GOLDENS.mkdir(parents=True)

    models, reloaded, processors = {}, {}, {}
    for name, spec in MODELS.items():
        models[name], reloaded[name], processors[name] = build_model_folder(name, spec)

    metas = [make_case(case, models, processors, reloaded) for case in CASES]
    # Attention-knockout goldens: computed after all other goldens are written, from the stored inputs, with
    # only the text decoder switched to the "knockout" attention for the duration of each forward.
    for case in CASES:
        if case["name"] in KNOCKOUT_CASES:
            make_knockouts(case, models[case["model"]])
    dump_json(GOLDENS / "index.json", {"cases": [{"case": m["case"], "model": m["model"], "seq_len": m["seq_len"]} for m in metas]})
    total = sum(f.stat().st_size for d in [GOLDENS] + [FIXTURES / n for n in MODELS] for f in d.rglob("*") if f.is_file())
    print(f"done: {FIXTURES} ({total / 1e6:.2f} MB written)")


if __name__ == "__main__":
    with torch.no_grad():
        main()
