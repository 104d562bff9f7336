#!/usr/bin/env bash
# Sweep benchmark: avflow's traced, incremental, batched knockouts vs the naive method (HF transformers,
# one full forward per configuration), same checkpoint, prompt and thread count, in one run.
#
#   bash tools/bench_sweep.sh [WORKDIR] [THREADS] [LAYERS]      (WORKDIR as for tools/bench.sh)
#
# LAYERS: a checkpoint with the 3B widths and only this many decoder layers ($WORKDIR/omni3b-LLAYERS; e.g. 12,
# the mid-size case: 48 configurations), instead of the whole 3B shape ($WORKDIR/omni3b, 36 layers, 144).
# The page cache should hold the checkpoint (run it twice, or read it once: cat DIR/*.safetensors >/dev/null).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/avflow-bench}
threads=${2:-2}
layers=${3:-}
py=${PYTHON:-.venv-fixtures/bin/python}
cargo build --quiet --bin avflow
# A copy: a rebuild while this runs must not change the binary under it.
bin=$(mktemp -d)/avflow
cp target/debug/avflow "$bin"
model="$work/omni3b${layers:+-L$layers}"
[ -f "$model/config.json" ] || "$bin" bench make-model --out "$model" ${layers:+--layers "$layers"}
[ -f "$work/inputs.safetensors" ] || "$bin" bench make-inputs --model "$work/omni3b" --out "$work/inputs.safetensors"
cat "$model"/*.safetensors > /dev/null
# Thread counts through OpenMP (oneDNN, torch); avflow keeps candle on one thread itself (main.rs).
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
out="$work/sweep_results.jsonl"
: > "$out"
t0=$(date +%s.%N)
"$bin" sweep --model "$model" --inputs "$work/inputs.safetensors" \
  --pairs audio:last,video:last,audio:question,video:question --window 9 --out "$work/sweep.json" | tee -a "$out"
t1=$(date +%s.%N)
echo "{\"impl\":\"avflow-total\",\"wall_s\":$(echo "$t1 - $t0" | bc)}" | tee -a "$out"
"$py" tools/bench_sweep_hf.py --model "$model" --inputs "$work/inputs.safetensors" --dtype bf16 --threads "$threads" | tee -a "$out"
"$py" - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ours = next(r for r in rows if "sweep_s" in r)
wall = next(r for r in rows if r.get("impl") == "avflow-total")["wall_s"]
naive = next(r for r in rows if r.get("impl") == "transformers-naive")
print(f"naive (HF {naive['dtype']}, {naive['per_config_s']:.2f} s/config x {naive['configurations']}, extrapolated): {naive['extrapolated_sweep_s']:.0f} s")
print(f"avflow: trace {ours['trace_s']:.1f} s + sweep {ours['sweep_s']:.1f} s; wall incl. load {wall:.1f} s")
print(f"speedup of the whole process (avflow's wall, loading and process start included): "
      f"{naive['extrapolated_sweep_s'] / wall:.1f}x")
print(f"speedup end to end (trace + sweep): {naive['extrapolated_sweep_s'] / (ours['trace_s'] + ours['sweep_s']):.1f}x; "
      f"marginal (after the trace): {naive['extrapolated_sweep_s'] / ours['sweep_s']:.1f}x; "
      f"per knockout: {ours['sweep_s'] / ours['records']:.3f} s vs {naive['per_config_s']:.2f} s")
if "rows_in_decoder_passes" in ours:
    print(f"in units of this run's traced decoder pass ({ours['trace_decoder_s']:.1f} s): the sweep recomputed "
          f"{ours['rows_in_decoder_passes']:.2f} passes of rows and took {ours['time_in_decoder_passes']:.2f} passes of time")
PY
