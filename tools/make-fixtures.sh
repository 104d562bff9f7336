#!/usr/bin/env bash
# Regenerate tests/fixtures (tiny Qwen2.5-Omni checkpoints + HF reference goldens).
# Creates/updates a virtualenv in .venv-fixtures at the repository root, installs the pinned
# requirements and runs tools/make_fixtures.py, then tools/make_pipeline_goldens.py. Extra arguments
# are passed to pip install (e.g. --index-url https://download.pytorch.org/whl/cpu for a CPU-only torch
# wheel).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-fixtures"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r tools/requirements-fixtures.txt "$@"
"$VENV/bin/python" tools/make_fixtures.py
# Whole path on the committed clips (qwen-omni-utils + the processor + the Thinker) and the unsupported-codec
# files; needs the ffmpeg and ffprobe CLIs (scripts/setup.sh installs them).
"$VENV/bin/python" tools/make_pipeline_goldens.py
# The real-world media matrix's files (made once with ffmpeg, bit-exact) and the reference pipeline on each.
"$VENV/bin/python" tools/make_matrix_goldens.py
# Per-head knockouts (HF's eager layers with a [1, heads, seq, seq] mask) on the goldens' stored inputs.
"$VENV/bin/python" tools/make_head_goldens.py
du -sh tests/fixtures
