"""The naive side of the sweep benchmark: HF transformers re-running the whole Thinker once per knockout
configuration (as the research code does), with the knockout attention of tools/make_fixtures.py.

    python3 tools/bench_sweep_hf.py --model DIR --inputs FILE.safetensors [--dtype bf16|f32] [--threads 2] [--n 3] [--device cuda]

Times N configurations of the 4-pair × all-windows sweep (window 9, centred) and prints one JSON line with
the mean seconds per configuration and the extrapolation to the whole sweep.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--window", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    dtype = torch.float32 if a.dtype == "f32" else torch.bfloat16
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration

    cfg = Qwen2_5OmniConfig.from_pretrained(a.model).thinker_config
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        a.model, config=cfg, dtype=dtype, attn_implementation="eager"
    ).eval().to(dev)
    mf.register_knockout_attention()
    inputs = load_file(a.inputs)
    for k in ("pixel_values_videos", "pixel_values", "input_features"):
        if k in inputs:
            inputs[k] = inputs[k].to(dtype)
    ids = inputs["input_ids"].reshape(-1).tolist()
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    groups = mf.knockout_groups(ids, model.config)
    L = model.config.text_config.num_hidden_layers
    k = a.window
    pairs = [("audio", "last"), ("video", "last"), ("audio", "question"), ("video", "question")]
    configs = [(s, t, max(0, l - k // 2), min(L, l - (-k // 2))) for s, t in pairs for l in range(L)]
    picks = [configs[i * (len(configs) - 1) // max(1, a.n - 1)] for i in range(a.n)]
    seq = len(ids)
    times = []
    if dev.type != "cpu":
        with torch.no_grad():
            model(**inputs, use_cache=False)  # warm-up: kernel loading, cuBLAS handles
    for s, t, start, end in picks:
        spec = {"start": start, "end": end, "block": mf.knockout_block(seq, groups[s], groups[t]).to(dev)}
        with torch.no_grad(), mf.knockout_attention(model, spec):
            sync()
            t0 = time.perf_counter()
            model(**inputs, use_cache=False)
            sync()
            times.append(time.perf_counter() - t0)
    per = sum(times) / len(times)
    print(json.dumps({"impl": "transformers-naive", "dtype": a.dtype, "device": a.device, "threads": torch.get_num_threads(),
                      "configs_timed": [f"{s}->{t} {b}..{e}" for s, t, b, e in picks], "seconds": times,
                      "per_config_s": per, "configurations": len(configs),
                      "extrapolated_sweep_s": per * len(configs)}))


if __name__ == "__main__":
    main()
