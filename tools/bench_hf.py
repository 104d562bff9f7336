"""The reference side of `avflow bench`: HF transformers on the same checkpoint, inputs and thread count.

    python3 tools/bench_hf.py --model DIR --inputs FILE.safetensors [--dtype f32|bf16] [--threads 2] [--device cuda]

Prints one JSON line with load / audio tower / vision tower / decoder / lm_head seconds and peak RSS,
timed with forward hooks on the Thinker's submodules (eager attention, no_grad, one forward over the
whole prompt with logits at every position, as `avflow forward` computes them). On a GPU the forward
is timed after one warm-up forward (kernel loading, cuBLAS handles), with the device synchronised at
each hook.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import thinker_parts  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    dtype = torch.float32 if a.dtype == "f32" else torch.bfloat16

    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration

    t0 = time.perf_counter()
    cfg = Qwen2_5OmniConfig.from_pretrained(a.model).thinker_config
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        a.model, config=cfg, dtype=dtype, attn_implementation=a.attn
    ).eval().to(dev)
    sync()
    load_s = time.perf_counter() - t0

    timings = {}

    def hook(name, mod):
        def pre(*_args, **_kw):
            sync()
            timings.setdefault(name, 0.0)
            timings[name + "_t0"] = time.perf_counter()

        def post(*_args, **_kw):
            sync()
            timings[name] += time.perf_counter() - timings.pop(name + "_t0")

        mod.register_forward_pre_hook(pre)
        mod.register_forward_hook(post)

    audio, visual, lm = thinker_parts(model)
    hook("audio_tower", audio)
    hook("vision_tower", visual)
    hook("decoder", lm)
    hook("lm_head", model.lm_head)

    inputs = load_file(a.inputs)
    for k in ("pixel_values_videos", "pixel_values", "input_features"):
        if k in inputs:
            inputs[k] = inputs[k].to(dtype)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    with torch.no_grad():
        if dev.type != "cpu":
            model(**inputs, use_cache=False)
            timings.clear()
        sync()
        t1 = time.perf_counter()
        out = model(**inputs, use_cache=False)
        sync()
        forward_s = time.perf_counter() - t1
    print(
        json.dumps(
            {
                "impl": "transformers",
                "dtype": a.dtype,
                "device": a.device,
                "attn": a.attn,
                "threads": torch.get_num_threads(),
                "seq_len": int(inputs["input_ids"].shape[-1]),
                "load_s": load_s,
                "audio_tower_s": timings.get("audio_tower", 0.0),
                "vision_tower_s": timings.get("vision_tower", 0.0),
                "decoder_s": timings.get("decoder", 0.0),
                "lm_head_all_positions_s": timings.get("lm_head", 0.0),
                "forward_s": forward_s,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else None,
                "top1": int(out.logits[0, -1].argmax()),
            }
        )
    )


if __name__ == "__main__":
    main()
