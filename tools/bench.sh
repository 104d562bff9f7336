#!/usr/bin/env bash
# Thinker forward benchmark: avflow vs HF transformers on the same random-weight checkpoint with the real
# Qwen2.5-Omni-3B dimensions, the same ~586-token audio-visual prompt and the same thread count, in one run.
#
#   bash tools/bench.sh [WORKDIR] [THREADS]
#
# Needs the fixture venv for the reference side (bash tools/make-fixtures.sh makes .venv-fixtures) or
# PYTHON=/path/to/python with torch + transformers. Writes WORKDIR/results.jsonl and prints ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/avflow-bench}
threads=${2:-2}
py=${PYTHON:-.venv-fixtures/bin/python}
mkdir -p "$work"
cargo build --quiet --bin avflow
bin=target/debug/avflow
[ -f "$work/omni3b/config.json" ] || "$bin" bench make-model --out "$work/omni3b"
[ -f "$work/inputs.safetensors" ] || "$bin" bench make-inputs --model "$work/omni3b" --out "$work/inputs.safetensors"
out="$work/results.jsonl"
: > "$out"
# Thread counts through OpenMP (oneDNN, torch); avflow keeps candle on one thread itself (main.rs).
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
"$bin" bench run --model "$work/omni3b" --inputs "$work/inputs.safetensors" --dtype bf16 | tee -a "$out"
for dt in bf16 f32; do
  "$py" tools/bench_hf.py --model "$work/omni3b" --inputs "$work/inputs.safetensors" --dtype $dt --threads "$threads" | tee -a "$out" || echo "{\"impl\":\"transformers\",\"dtype\":\"$dt\",\"failed\":true}" | tee -a "$out"
done
"$py" - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ours = next(r for r in rows if r["impl"] == "avflow")
refs = [r for r in rows if r["impl"] == "transformers" and not r.get("failed")]
best = min(refs, key=lambda r: r["forward_s"])
print(f"reference = transformers {best['dtype']} (its faster setting)")
for k in ["load_s", "audio_tower_s", "vision_tower_s", "decoder_s", "lm_head_all_positions_s", "forward_s", "peak_rss_gb"]:
    print(f"{k:26s} avflow {ours[k]:8.2f}   transformers {best[k]:8.2f}   ratio (HF/avflow) {best[k] / max(ours[k], 1e-9):5.2f}x")
EOF
