#!/usr/bin/env bash
# video-SALMONN 2+ 3B forward benchmark: avflow vs the authors' own model class (video_SALMONN2_plus from
# bytedance/video-SALMONN-2, under transformers 4.51.3) in bf16, on the same random-weight checkpoint with the
# real 3B dimensions, the same audio-visual prompt and the same thread count, in one run.
#
#   SALMONN_REPO=/path/to/video-SALMONN-2 bash tools/bench_salmonn.sh [WORKDIR] [THREADS]
#
# The prompt: FRAMES video frames at 2 fps (default 12: 6 grid steps of 84 tokens = 504) interleaved with
# AUDIO_SECONDS of sound (default 6; one 30-s Whisper segment = 60 tokens whatever its length), in the authors'
# dataset layout: ~605 tokens, comparable to tools/bench.sh's 586-token Qwen2.5-Omni prompt. Both sides use the
# positions of the authors' released inference (avflow's default --positions inference).
#
# Needs the authors' checkout (SALMONN_REPO) and the venv with their pinned versions (PYTHON, default
# .venv-salmonn/bin/python; bash tools/make-salmonn-fixtures.sh makes it). AVFLOW_BIN=path skips the cargo build
# (default: cargo build, then target/debug/avflow). ATTN=eager for the reference's eager attention (default sdpa:
# their inference asks flash_attention_2, which does not exist on CPU). Writes WORKDIR/results.jsonl and prints
# the ratios (reference / avflow).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/avflow-bench-salmonn}
threads=${2:-2}
py=${PYTHON:-.venv-salmonn/bin/python}
frames=${FRAMES:-12}
audio_s=${AUDIO_SECONDS:-6}
attn=${ATTN:-sdpa}
: "${SALMONN_REPO:?set SALMONN_REPO to the video-SALMONN-2 checkout}"
export SALMONN_REPO
mkdir -p "$work"
if [ -n "${AVFLOW_BIN:-}" ]; then
  bin=$AVFLOW_BIN
else
  cargo build --quiet --bin avflow
  bin=target/debug/avflow
fi
model="$work/salmonn3b"
inputs="$work/salmonn-inputs.safetensors"
[ -f "$model/config.json" ] || "$bin" bench make-model --family video_salmonn2_plus --size 3b --out "$model"
[ -f "$inputs" ] || "$bin" bench make-inputs --model "$model" --out "$inputs" --frames "$frames" --audio-seconds "$audio_s"
out="$work/results.jsonl"
: > "$out"
# Thread counts through OpenMP (oneDNN, torch); avflow keeps candle on one thread itself (main.rs).
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
"$bin" bench run --model "$model" --inputs "$inputs" --dtype bf16 | tee -a "$out"
"$py" tools/bench_salmonn_hf.py --model "$model" --inputs "$inputs" --dtype bf16 --attn "$attn" --threads "$threads" | tee -a "$out" \
  || echo "{\"impl\":\"transformers\",\"family\":\"video_salmonn2_plus\",\"dtype\":\"bf16\",\"failed\":true}" | tee -a "$out"
"$py" - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ours = next(r for r in rows if r["impl"] == "avflow")
ref = next(r for r in rows if r["impl"] == "transformers")
if ref.get("failed"):
    sys.exit("the reference run failed (see above)")
print(f"video-SALMONN 2+: {ours['seq_len']} tokens, {ref['threads']} threads; reference = the authors' "
      f"video_SALMONN2_plus, transformers {ref['dtype']} ({ref['attn']} attention, Q-Former {ref['qformer_dtype']})")
for k in ["load_s", "audio_tower_s", "vision_tower_s", "decoder_s", "lm_head_all_positions_s", "forward_s", "peak_rss_gb"]:
    print(f"{k:26s} avflow {ours[k]:8.2f}   reference {ref[k]:8.2f}   ratio (reference/avflow) {ref[k] / max(ours[k], 1e-9):5.2f}x")
EOF
