"""The reference side of the video-SALMONN 2+ benchmark: the authors' own model class on the same checkpoint,
inputs and thread count as `avflow bench run`.

    SALMONN_REPO=/path/to/video-SALMONN-2 .venv-salmonn/bin/python tools/bench_salmonn_hf.py \
        --model DIR --inputs FILE.safetensors [--dtype bf16|f32] [--attn sdpa|eager] [--threads 2] \
        [--check-logits OUT.safetensors]

Loads DIR with ``video_SALMONN2_plus.from_pretrained`` (bytedance/video-SALMONN-2, folder video_SALMONN2_plus,
under the versions it pins: transformers 4.51.3, torch 2.7.1; the venv tools/make-salmonn-fixtures.sh makes) and
runs one forward over the prompt with logits at every position, timed with forward hooks on the authors'
submodules: ``audio`` (their audio branch: Whisper encoder, window Q-Former, ``audio_proj``), ``visual``,
``model`` (the decoder) and ``lm_head``. Prints one JSON line.

As their ``inference.py`` runs it, on CPU:

* The inputs are the keys ``prepare_inputs`` keeps from ``LazySupervisedDataset._get_item`` with ``run_test``
  (``input_ids``, ``attention_mask``, ``pixel_values_videos``, ``video_grid_thw``, ``audio_feature``, in the
  dtypes the dataset makes them: the model casts the media to the towers' dtype itself); ``audio_lengths`` and
  ``second_per_grid_ts`` are not passed (run_test drops the first, the dataset never returns the second), and the
  ``position_ids`` the dataset returns are discarded by their ``prepare_inputs_for_generation``: the prefill's
  positions are the model's own ``get_rope_index`` without them (the "inference" numbering, avflow's default).
  So ``model(**inputs)`` with ``rope_deltas`` reset, ``use_cache=False`` (avflow keeps no cache either).
* Attention: their inference asks ``flash_attention_2``, which does not exist on CPU: ``sdpa`` by default
  (what transformers picks when flash-attn is absent), ``--attn eager`` for the eager classes.
* Their inference patches Liger (Triton, GPU-only) RMSNorm / SwiGLU / M-RoPE kernels into the module; those are
  numerically the plain ones and are not used here. ``liger_kernel`` is stubbed (its loss class is imported at
  module level, used only in training), and so is ``torch.cuda.current_device`` (called around each embedding to
  gate a ``print``; it returns 0, so their "RANK 0 ..._embeds" lines are printed, to stderr here so that stdout
  stays one JSON line). Their dataset module (torchcodec, decord) is not imported: the inputs are tensors.
* The authors build the Q-Former and ``audio_proj`` in bf16 whatever the load dtype (the released models run in
  bf16 throughout): kept for ``--dtype bf16``; with ``--dtype f32`` those two (and ``q_tokens``) are cast to f32
  after loading, the only way their forward runs in f32 (as tools/make_salmonn_fixtures.py does).

load_s covers ``from_pretrained`` and reading every weight page in (see ``fault_in``; ``--lazy`` leaves the
weights mmap-backed as transformers returns them, so that the forward reads them). rss_after_load_gb is the RSS
then, peak_rss_gb the peak over the run (``getrusage``).

``--check-logits OUT`` also writes the last position's logits (``logits_last`` [vocab] f32) and the prefill's
``position_ids`` [3, seq], to compare with ``avflow forward``.
"""

import argparse
import contextlib
import importlib.machinery
import json
import os
import resource
import sys
import time
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# The keys inference.py's prepare_inputs keeps (tensors of _get_item with run_test), minus position_ids (which
# prepare_inputs_for_generation sets to None) and pixel_values/image_grid_thw (image prompts only).
INFERENCE_KEYS = ["input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
                  "video_grid_thw", "audio_feature"]


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
    if not (code / "qwenvl/model/modeling_qwen2_5_vl.py").is_file():
        sys.exit(f"SALMONN_REPO is not a video-SALMONN-2 checkout: {repo!s} (set SALMONN_REPO)")
    sys.path.insert(0, str(code))
    for name in ["liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.model"]:
        stub(name)
    stub("liger_kernel.transformers.model.loss_utils", LigerForCausalLMLoss=object)
    torch.cuda.current_device = lambda: 0
    from qwenvl.model.modeling_qwen2_5_vl import video_SALMONN2_plus

    return video_SALMONN2_plus


def attn_classes(model) -> dict:
    """Which attention classes the loaded model runs, per part (the implementation actually picked)."""
    def first(mod, suffix):
        for name, m in mod.named_modules():
            if name.endswith(suffix):
                return type(m).__name__
        return None

    return {
        "decoder": first(model.model, "layers.0.self_attn"),
        "vision": first(model.visual, "blocks.0.attn"),
        "whisper": first(model.audio, "layers.0.self_attn"),
        "qformer": first(model.audio.qformer, "layer.0.attention.self"),
    }


def fault_in(model):
    """Reads one byte of every 4-KiB page of every weight. transformers 4.51 leaves weights whose dtype matches
    the file as copy-on-write mmap views of the safetensors shards (RSS ~0.7 GB after loading a 4-GB checkpoint):
    their pages would otherwise be read from the page cache (or disk) on first use, inside the timed forward,
    and load_s would not include reading the weights (avflow's does)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.numel():
                bytes_ = t.detach().reshape(-1).view(torch.uint8)
                int(bytes_[::4096].sum())


def rss_now_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lazy", action="store_true",
                    help="leave the weights mmap-backed as from_pretrained returns them (read on first use, in the "
                         "forward) instead of reading them in during load_s")
    ap.add_argument("--check-logits", help="write the last row's logits and the positions here (safetensors)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(a.threads)
    dtype = torch.float32 if a.dtype == "f32" else torch.bfloat16
    Model = import_authors(Path(os.environ.get("SALMONN_REPO", "")))

    t0 = time.perf_counter()
    model, info = Model.from_pretrained(
        a.model, torch_dtype=dtype, attn_implementation=a.attn, output_loading_info=True
    )
    if dtype == torch.float32:
        model.audio.qformer.float()
        model.audio.audio_proj.float()
        model.audio.q_tokens.data = model.audio.q_tokens.data.float()
    model.eval()
    if not a.lazy:
        fault_in(model)
    load_s = time.perf_counter() - t0
    rss_after_load_gb = rss_now_gb()
    loading = {k: [str(x) for x in (sorted(v, key=str) if isinstance(v, (set, frozenset)) else v)]
               for k, v in info.items()}
    for k, v in loading.items():
        if v:
            print(f"loading_info {k}: {v}", file=sys.stderr)

    timings = {}

    def hook(name, mod):
        def pre(*_args, **_kw):
            timings.setdefault(name, 0.0)
            timings[name + "_t0"] = time.perf_counter()

        def post(*_args, **_kw):
            timings[name] += time.perf_counter() - timings.pop(name + "_t0")

        mod.register_forward_pre_hook(pre)
        mod.register_forward_hook(post)

    hook("audio_tower", model.audio)
    hook("vision_tower", model.visual)
    hook("decoder", model.model)
    hook("lm_head", model.lm_head)

    file_inputs = load_file(a.inputs)
    inputs = {k: file_inputs[k] for k in INFERENCE_KEYS if k in file_inputs}
    dropped = sorted(set(file_inputs) - set(inputs))
    model.rope_deltas = None
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        t1 = time.perf_counter()
        out = model(**inputs, use_cache=False)
        forward_s = time.perf_counter() - t1
    logits = out.logits[0]
    row = {
        "impl": "transformers",
        "family": "video_salmonn2_plus",
        "model_class": f"{Model.__module__}.{Model.__name__}",
        "dtype": a.dtype,
        "qformer_dtype": str(next(model.audio.qformer.parameters()).dtype).removeprefix("torch."),
        "device": "cpu",
        "attn": a.attn,
        "attn_classes": attn_classes(model),
        "threads": torch.get_num_threads(),
        "seq_len": int(inputs["input_ids"].shape[-1]),
        "inputs_not_passed": dropped,
        "parameters": sum(p.numel() for p in model.parameters()),
        "missing_keys": loading.get("missing_keys", []),
        "unexpected_keys": loading.get("unexpected_keys", []),
        "mismatched_keys": loading.get("mismatched_keys", []),
        "weights_read_at_load": not a.lazy,
        "load_s": load_s,
        "rss_after_load_gb": rss_after_load_gb,
        "audio_tower_s": timings.get("audio_tower", 0.0),
        "vision_tower_s": timings.get("vision_tower", 0.0),
        "decoder_s": timings.get("decoder", 0.0),
        "lm_head_all_positions_s": timings.get("lm_head", 0.0),
        "forward_s": forward_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "top1": int(logits[-1].argmax()),
    }
    if a.check_logits:
        ids = inputs["input_ids"]
        pos, _ = model.get_rope_index(ids, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), None, None,
                                      inputs.get("attention_mask"))
        save_file({"logits_last": logits[-1].float().contiguous(), "position_ids": pos[:, 0, :].contiguous()},
                  a.check_logits)
        row["check_logits"] = a.check_logits
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
