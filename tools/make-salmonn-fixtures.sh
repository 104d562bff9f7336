#!/usr/bin/env bash
# Regenerate the video-SALMONN 2+ fixtures (tests/fixtures/salmonn-tiny-a, goldens/salmonn_*) with the authors'
# own classes under the versions they pin. Needs a checkout of bytedance/video-SALMONN-2 (not committed):
#
#   SALMONN_REPO=/path/to/video-SALMONN-2 bash tools/make-salmonn-fixtures.sh
#
# Creates/updates the virtualenv .venv-salmonn (transformers 4.51.3, torch 2.7.1, torchcodec 0.4.0:
# tools/requirements-salmonn.txt), separate from .venv-fixtures (Qwen2.5-Omni's goldens use transformers 5).
# torchcodec needs FFmpeg's shared libraries (4 to 7; the committed goldens were made with FFmpeg 5.1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
: "${SALMONN_REPO:?set SALMONN_REPO to a checkout of bytedance/video-SALMONN-2 (git clone https://github.com/bytedance/video-SALMONN-2)}"
[ -f "$SALMONN_REPO/video_SALMONN2_plus/qwenvl/model/modeling_qwen2_5_vl.py" ] \
  || { echo "error: $SALMONN_REPO is not a video-SALMONN-2 checkout (no video_SALMONN2_plus/qwenvl)" >&2; exit 1; }
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-salmonn"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r tools/requirements-salmonn.txt "$@"
SALMONN_REPO="$SALMONN_REPO" "$VENV/bin/python" tools/make_salmonn_fixtures.py
du -sh tests/fixtures/salmonn-tiny-a tests/fixtures/goldens/salmonn_*
