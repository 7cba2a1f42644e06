#!/usr/bin/env bash
# Install napari-amodal into .venv and run the main job on the bundled sample data:
# segment the synthetic embryo time-lapse with the bundled model, score it against
# its ground truth, and write predictions, occlusion maps, an overlay and a summary.
# Usage: bash scripts/demo.sh [OUTPUT_FOLDER]   (default: demo-output)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import ensurepip" >/dev/null 2>&1 && command -v apt-get >/dev/null; then  # Debian splits venv out
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/napari-amodal demo --out "${1:-demo-output}"
