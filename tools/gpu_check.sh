#!/usr/bin/env bash
# The `cuda` feature on a GPU machine, from the repository root, with the bundle tools/cuda_bundle.sh made:
#   1. the golden tests (HF transformers' outputs) and the flow-engine exactness tests, with --device auto
#      (the default: cuda:0 in this build; the device line each prints is recorded), f32;
#   2. the forward benchmark on the random-weight model with the real 3B dimensions (bf16): avflow on cuda
#      against HF transformers on the same GPU (eager and sdpa attention);
#   3. the 4-pair × 36-window sweep on cuda against the naive method (HF, one full forward per
#      configuration, a few timed and extrapolated), and one X→last knockout.
#
#   bash tools/gpu_check.sh [OUTDIR]        (OUTDIR default $OUT or /tmp/gpu-check; JSON lines + logs)
#
# Needs python3 with torch + transformers for the reference side (the GPU machine's image has them).
set -u
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
b=/tmp/avflow-gpu
mkdir -p "$b" && tar -C "$b" -xJf .gpu/bundle.tar.xz
nv=$(python3 -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$b/stubs:${nv}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
log() { echo "== $* ($(date +%T))"; }
nvidia-smi -L
ldd "$b/avflow" | grep -i "not found" && echo "missing libraries (above)"

log "golden + flow tests with --device auto"
export AVFLOW_FIXTURES=$PWD/tests/fixtures
AVFLOW_TEST_DEVICE=auto "$b/golden" --nocapture --skip forward_cli > "$out/golden.log" 2>&1
echo "golden rc=$?"; grep -E "test device:|test result|max\|Δ\| = |panicked" "$out/golden.log" | sort | uniq | tail -40
AVFLOW_TEST_DEVICE=auto "$b/flow" --nocapture --skip command --skip time_range > "$out/flow.log" 2>&1
echo "flow rc=$?"; grep -E "test device:|test result|panicked|FAILED" "$out/flow.log" | sort | uniq | tail -20

m=/tmp/omni3b
in=/tmp/inputs.safetensors
log "make the random 3B checkpoint"
[ -f $m/config.json ] || "$b/avflow" bench make-model --out $m
[ -f $in ] || "$b/avflow" bench make-inputs --model $m --out $in
res=$out/results.jsonl
: > "$res"
log "device line of a plain command (no --device: auto)"
"$b/avflow" knockout --model $m --inputs $in --source audio --target last --layers 0..1 \
  | python3 -c 'import json, sys; r = json.load(sys.stdin); print("device:", r["device"], "dtype:", r["dtype"])' | tee -a "$out/device.txt"
log "forward: avflow cuda bf16"
"$b/avflow" --device cuda --dtype bf16 bench run --model $m --inputs $in --repeat 3 | tee -a "$res"
log "forward: avflow cuda f32"
"$b/avflow" --device cuda --dtype f32 bench run --model $m --inputs $in --repeat 3 | tee -a "$res"
for attn in eager sdpa; do
  log "forward: HF cuda bf16 $attn"
  python3 tools/bench_hf.py --model $m --inputs $in --dtype bf16 --device cuda --attn $attn | tee -a "$res"
done
log "sweep: avflow cuda bf16 (second run: JIT cache warm)"
for i in 1 2; do
  "$b/avflow" --device cuda --dtype bf16 sweep --model $m --inputs $in \
    --pairs audio:last,video:last,audio:question,video:question --window 9 --out /tmp/sweep.json | tee -a "$res"
done
log "one knockout audio→last 14..23"
"$b/avflow" --device cuda --dtype bf16 knockout --model $m --inputs $in --source audio --target last --layers 14..23 | tee -a "$res"
log "naive: HF cuda bf16, one forward per configuration"
python3 tools/bench_sweep_hf.py --model $m --inputs $in --dtype bf16 --device cuda --n 6 | tee -a "$res"
log "done"
