#!/usr/bin/env python3
"""Per-head knockout goldens from transformers (``goldens/<case>/head_knockouts.json``), for tests/flow.rs:

    .venv-fixtures/bin/python tools/make_head_goldens.py

For each case, the Thinker of its tiny checkpoint (transformers, float32, HF's *stock* eager attention) runs its
decoder layers one by one on the stored ``inputs_embeds`` and ``position_ids``; layers ``[start, end)`` get a 4-D
additive mask ``[1, heads, seq, seq]`` that is causal everywhere and ``finfo.min`` at the blocked (query, key)
pairs **only in the listed query heads** (eager attention adds the mask per head). Each experiment stores its
sources, targets, layers, heads and the last position's logits. A cross-check: blocking every head reproduces
``knockouts.json``'s all-head experiment of the same block.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

CASES = ("av_a", "image_audio_a")


def per_head_logits(lm, head, inputs_embeds, position_ids, block, heads, start, end):
    seq = inputs_embeds.shape[0]
    n_heads = lm.config.num_attention_heads
    fmin = torch.finfo(torch.float32).min
    causal = torch.full((seq, seq), fmin).triu(1)[None, None].expand(1, n_heads, seq, seq).clone()
    knocked = causal.clone()
    for h in heads:
        knocked[0, h] = knocked[0, h].masked_fill(block, fmin)
    x = inputs_embeds[None]
    pos = position_ids[:, None, :]
    position_embeddings = lm.rotary_emb(x, pos)
    assert lm.config._attn_implementation == "eager"
    for i, layer in enumerate(lm.layers):
        x = layer(x, attention_mask=knocked if start <= i < end else causal, position_embeddings=position_embeddings,
                  position_ids=None, past_key_values=None, use_cache=False)
        x = x[0] if isinstance(x, tuple) else x
    return head(lm.norm(x))[0]


def main():
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(0)
    for case in CASES:
        out_dir = mf.GOLDENS / case
        meta = json.loads((out_dir / "meta.json").read_text())
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            str(mf.ROOT / meta["model_path"]), dtype=torch.float32, attn_implementation="eager").eval()
        lm = mf.thinker_parts(model)[2]
        inputs = load_file(str(out_dir / "inputs.safetensors"))
        expected = load_file(str(out_dir / "expected.safetensors"))
        ids = inputs["input_ids"].reshape(-1).tolist()
        seq = len(ids)
        groups = mf.knockout_groups(ids, model.config)
        n_layers, n_heads = len(lm.layers), lm.config.num_attention_heads
        media = "audio" if groups["audio"] else ("video" if groups["video"] else "image")
        plan = [
            (media, "last", 0, n_layers, [0]),
            (media, "last", 0, n_layers, [n_heads - 1]),
            (media, "question", 0, min(2, n_layers), [0, n_heads - 1]),
            ("question", "last", n_layers - 1, n_layers, [1]),
            (media, "last", 0, n_layers, list(range(n_heads))),
        ]
        results = []
        with torch.no_grad():
            for src, tgt, start, end, heads in plan:
                block = mf.knockout_block(seq, groups[src], groups[tgt])
                logits = per_head_logits(lm, model.lm_head, expected["inputs_embeds"], expected["position_ids"],
                                         block, heads, start, end)
                if heads == list(range(n_heads)):  # every head: the all-head knockout of knockouts.json's kind
                    ref = mf.knockout_by_layer_masks(model, expected["inputs_embeds"], expected["position_ids"],
                                                     block, start, end)
                    assert float((ref - logits).abs().max()) < 1e-6
                results.append(dict(name=f"{src}->{tgt} L{start}..{end} heads {heads}", source=src, target=tgt,
                                    sources=groups[src], targets=groups[tgt], start=start, end=end, heads=heads,
                                    last_logits=mf.f32_list(logits[-1])))
        with open(out_dir / "head_knockouts.json", "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in results) + "\n]\n")
        print(case, [r["name"] for r in results])


if __name__ == "__main__":
    main()
