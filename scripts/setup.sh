#!/usr/bin/env bash
# Create .venv and install cpnet with training and its test tools. Idempotent: a second run only checks.
#   CPNET_TORCH   torch requirement to install first (default torch==2.13.0, the CPU build these
#                 machines keep on disk); set CPNET_TORCH=skip where torch is already installed
#                 (JetPack, or a CUDA build you chose).
#   CPNET_OPENCV  desktop (default: the opencv-python wheel, with a window for cpnet demo) or headless
#                 (opencv-python-headless: no GUI libraries). On aarch64 (Jetson) neither installs a
#                 wheel: JetPack's OpenCV is used (make the venv with --system-site-packages).
#   CPNET_VENV    where the virtual environment lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CPNET_VENV:-.venv}
PY=${PYTHON:-python3}
OPENCV=${CPNET_OPENCV:-desktop}
case "$OPENCV" in
  desktop) WANT=opencv-python; OTHER=opencv-python-headless ;;
  headless) WANT=opencv-python-headless; OTHER=opencv-python ;;
  *) echo "setup.sh: CPNET_OPENCV must be desktop or headless, got '$OPENCV'" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
if [ "${CPNET_TORCH:-torch==2.13.0}" != "skip" ]; then
  # torch first, explicitly: a bare 'torch' requirement resolved by pip can pull a multi-GB CUDA build.
  "${PIP[@]}" install -q "${CPNET_TORCH:-torch==2.13.0}"
fi
# The two OpenCV wheels install the same cv2 package and overwrite each other (uninstalling one then
# removes files the other needs), so a venv that has the other one loses both before the install.
if "${PIP[@]}" show -q "$OTHER" >/dev/null 2>&1; then
  echo "setup.sh: replacing $OTHER with $WANT (they cannot share a venv)"
  "${PIP[@]}" uninstall -q -y "$OTHER" "$WANT"
fi
"${PIP[@]}" install -q -e ".[train,$OPENCV,dev]"
if [ "$OPENCV" = desktop ] && ! "$VENV/bin/python" -c "import cv2" >/dev/null 2>&1; then
  # opencv-python needs the system's libGL (Debian: libgl1); without it, keep a working headless cv2
  echo "setup.sh: warning: opencv-python does not import here (no libGL? Debian: apt-get install libgl1);" \
       "installing opencv-python-headless instead: cpnet demo will need --headless" >&2
  "${PIP[@]}" uninstall -q -y opencv-python
  "${PIP[@]}" install -q -e ".[train,headless,dev]"
fi
"$VENV/bin/python" -c "
import torch, onnxruntime, cv2
gui = next((l.split(':', 1)[1].strip() for l in cv2.getBuildInformation().splitlines() if l.strip().startswith('GUI:')), '?')
print(f'cpnet environment ready: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__} (GUI: {gui or \"?\"})')"
