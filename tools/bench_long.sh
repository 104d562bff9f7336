#!/usr/bin/env bash
# Long prompts: each analysis at 2 k … 32 k tokens on one random-weight checkpoint at a released model's
# real dimensions, one process per prompt length (its own peak memory), time and peak RSS of every step.
#
#   bash tools/bench_long.sh MODEL_DIR [RUN_SIZES] [PLAN_SIZES] [THREADS]
#
#   MODEL_DIR   a checkpoint (`avflow bench make-model --out DIR [--family F --size 3b|7b]` makes one)
#   RUN_SIZES   prompt lengths to run (default "2048 8192 16384")
#   PLAN_SIZES  prompt lengths whose memory plan only is printed (default "32768"): where the trace
#               would go, or why the prompt is refused, without waiting for it
#
# Prints one JSON line per length (also appended to MODEL_DIR/../long-<name>.jsonl) and a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench_long.sh MODEL_DIR [RUN_SIZES] [PLAN_SIZES] [THREADS]}
run_sizes=${2:-2048 8192 16384}
plan_sizes=${3:-32768}
threads=${4:-2}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
cargo build --quiet --bin avflow
# A copy, so that rebuilding while a long run goes on does not change the binary under it.
bin=$(mktemp -d)/avflow
cp target/debug/avflow "$bin"
name=$(basename "$model")
work=$(dirname "$model")
out="$work/long-$name.jsonl"
inputs() {
  local f="$work/$name-in$1.safetensors"
  [ -f "$f" ] || "$bin" bench make-inputs --model "$model" --out "$f" --tokens "$1" >&2
  echo "$f"
}
for n in $plan_sizes; do
  "$bin" bench steps --model "$model" --inputs "$(inputs "$n")" --plan | tee -a "$out"
done
for n in $run_sizes; do
  # A step the OS kills leaves no JSON: record that instead.
  if ! "$bin" bench steps --model "$model" --inputs "$(inputs "$n")" | tee -a "$out"; then
    echo "{\"tokens\": $n, \"error\": \"the process died (exit $?)\"}" | tee -a "$out"
  fi
done
python3 - "$out" "$name" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print(f"\n{sys.argv[2]}: seconds (peak RSS GB) per step\n")
print("| tokens | load | trace (encoders + traced pass) | knockout | 144-config sweep | drop | heatmap | trace size |")
print("|---|---|---|---|---|---|---|---|")
def cell(r, k):
    v = r.get(k)
    if not isinstance(v, dict):
        return "—"
    if "error" in v:
        return "fails: " + v["error"][:80]
    return f"{v['s']:.1f} ({v['peak_rss_gb']:.1f})"
for r in rows:
    if "plan" in r:
        p = r["plan"]["placement"]
        b = r["plan"]["budget"]
        where = p if isinstance(p, str) else "refused: " + p["refused"][:120]
        print(f"| {r['seq_len']} | plan only | needs {(b['residuals']+b['kv']+b['working'])/1e9:.1f} GB "
              f"of {r['plan']['available_bytes']/1e9:.1f} GB: {where} | | | | | |")
        continue
    if "seq_len" not in r:
        print(f"| {r.get('tokens')} | {r.get('error')} | | | | | | |")
        continue
    t = r.get("trace", {}).get("trace") or {}
    size = f"{t.get('bytes', 0)/1e9:.1f} GB" + (" (residuals in a file)" if t.get("spilled_to") else "")
    print(f"| {r['seq_len']} | {cell(r,'load')} | {cell(r,'trace')} | {cell(r,'knockout')} | {cell(r,'sweep')} "
          f"| {cell(r,'drop')} | {cell(r,'heatmap')} | {size} |")
PY
