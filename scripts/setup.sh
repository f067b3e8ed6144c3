#!/usr/bin/env bash
# Create .venv and install cpnet with its test tools. Idempotent: a second run only checks.
#   CPNET_TORCH  torch requirement to install first (default torch==2.13.0, the CPU build these
#                machines keep on disk); set CPNET_TORCH=skip where torch is already installed
#                (JetPack, or a CUDA build you chose).
#   CPNET_VENV   where the virtual environment lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CPNET_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "${CPNET_TORCH:-torch==2.13.0}" != "skip" ]; then
  # torch first, explicitly: a bare 'torch' requirement resolved by pip can pull a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q "${CPNET_TORCH:-torch==2.13.0}"
fi
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -c "import torch, onnxruntime, cv2; print(f'cpnet environment ready: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}')"
