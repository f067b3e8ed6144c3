"""NVIDIA Model Optimizer's INT8 post-training quantization of an FP32 ONNX model, calibrated on the CPU.

Runs with the python of a separate virtual environment that has ``nvidia-modelopt[onnx]`` (it pins onnx,
onnxruntime-gpu and cupy, which would replace the project's ONNX Runtime); it does not import cpnet:

    python3 -m venv .venv-modelopt
    .venv-modelopt/bin/pip install torch==2.13.0                     # the CPU wheel; ModelOpt requires torch
    .venv-modelopt/bin/pip install "nvidia-modelopt[onnx]==0.47.0"
    .venv/bin/python benchmarks/qdq_compare.py calib runs/quickstart/export/model.onnx \\
        --calib-data data/synthetic -o /tmp/calib.npy                 # the images cpnet int8 calibrates on
    .venv-modelopt/bin/python benchmarks/modelopt_ptq.py runs/quickstart/export/model.onnx /tmp/calib.npy \\
        runs/quickstart/export/model.int8-modelopt.onnx [--high-precision fp16|fp32] [--method entropy|max]

``modelopt.onnx.quantization.quantize(quantize_mode="int8")`` with ModelOpt's default Q/DQ placement (no
node or op-type lists), ``calibration_eps=["cpu"]`` (ONNX Runtime's CPUExecutionProvider only; the default
list also tries CUDA and TensorRT) and the calibration array as ``calibration_data`` (N x 3 x H x W float32,
already preprocessed; a model with a dynamic batch is fed one image per step). ``--method entropy`` (ModelOpt's
default for INT8: ORT's KL-divergence histogram calibrator, symmetric) or ``max`` (ORT MinMax, symmetric =
max |x|). ``--high-precision``: what the float part of the graph is converted to afterwards (ModelOpt's
default fp16; fp32 keeps it float32). cupy is only used by ModelOpt's INT4 path and falls back to numpy when
CUDA is absent, so nothing needs working around for INT8 on a machine without a GPU. ModelOpt has no
option for ONNX Runtime's thread count; run it under ``taskset -c 0`` to keep it to one core.

The output is written through a temporary file beside it and renamed, so a killed run leaves no half file;
ModelOpt's own intermediate files are removed. Exit 0 and one line naming the file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="the FP32 ONNX model")
    p.add_argument("calib", help="calibration array .npy, N x 3 x H x W float32, preprocessed")
    p.add_argument("output", help="the quantized ONNX file to write")
    p.add_argument("--method", choices=("entropy", "max"), default="entropy",
                   help="calibration method (default entropy, ModelOpt's default for INT8)")
    p.add_argument("--high-precision", choices=("fp16", "fp32"), default="fp16",
                   help="precision of the part of the graph left in float (default fp16, ModelOpt's default)")
    p.add_argument("--log-level", default="WARNING", help="ModelOpt's log level (default WARNING)")
    args = p.parse_args(argv)

    import numpy as np
    import onnx

    from modelopt import __version__ as modelopt_version
    from modelopt.onnx.quantization import quantize

    data = np.load(args.calib)
    if data.ndim != 4 or data.shape[1] != 3 or data.dtype != np.float32:
        print(f"{args.calib}: expected N x 3 x H x W float32, got {data.shape} {data.dtype}", file=sys.stderr)
        return 2
    out = Path(args.output).resolve()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", prefix=f".{out.stem}.", dir=out.parent)
    os.close(fd)
    t0 = time.perf_counter()
    try:
        quantize(
            onnx_path=str(Path(args.model).resolve()),
            quantize_mode="int8",
            calibration_data=data,
            calibration_method=args.method,
            calibration_eps=["cpu"],
            high_precision_dtype=args.high_precision,
            output_path=tmp,
            keep_intermediate_files=False,
            log_level=args.log_level,
        )
        onnx.checker.check_model(onnx.load(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give it a plain open()'s mode
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {out} (nvidia-modelopt {modelopt_version}, int8, {args.method} calibration on {len(data)} "
          f"images, CPUExecutionProvider, high_precision_dtype {args.high_precision}, "
          f"{time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
