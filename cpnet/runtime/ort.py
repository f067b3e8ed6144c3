"""ONNX Runtime: the one session factory for every ONNX file cpnet makes or reads.

:func:`make_session` is the only place an ``onnxruntime.InferenceSession`` is
made (threads, providers, optimisation level, a one-line error for a bad file).
Calibration, the FP16 range search and label-free drift in ``quantize/`` use it
directly; the ``onnxruntime`` backend that runs an artifact behind the common
interface (:class:`engines.backends.onnxruntime_backend.OnnxModel`) is built on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError, first_line

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def provider_list(providers) -> list[str]:
    """'cuda,cpu', a list or None -> a list of names (aliases resolved by :func:`resolve_providers`)."""
    if not providers:
        return []
    if isinstance(providers, str):
        return [p.strip() for p in providers.split(",") if p.strip()]
    return list(providers)


def resolve_providers(providers: "Sequence[str] | str | None") -> list[str]:
    """Provider names (aliases cpu/cuda/tensorrt allowed) checked against this onnxruntime; CPU always last."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    out = []
    for p in provider_list(providers):
        name = PROVIDER_ALIASES.get(str(p).lower(), str(p))
        if name not in available:
            raise UserError(f"onnxruntime provider {p!r} is not available here (available: {', '.join(available)}); "
                            f"install onnxruntime-gpu for CUDA/TensorRT")
        if name not in out:
            out.append(name)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


#: ONNX Runtime graph transformers every session runs without. WeightBiasQuantization rewrites a float Conv
#: bias read beside Q/DQ inputs as round(bias / (s_x * s_w)) computed in the bias's type: in an FP16 graph
#: (the tensorrt flavour's INT8 in FP16, and Model Optimizer's) that overflows to inf wherever
#: |bias| > 65504 * s_x * s_w and the Conv gets a wrong bias (1.96% of the quickstart model's pixels
#: changed instead of 0.10%). TensorRT does no such thing; with it off, the CPU flavour and FP32 files
#: measured no slower (quickstart, 2 threads, median of 60: 1.39 against 1.47 ms, 3.96 against 4.01 ms; AMD EPYC
#: family 26 model 2, AVX-512 VNNI, FP32 GEMM about 190 GFLOP/s).
#: QDQS8ToU8Transformer turns signed INT8 activations (the tensorrt flavour) into U8 for MLAS's U8S8 kernels. On
#: CPUs without VNNI (AVX2 only) those kernels add products pairwise in saturating int16 (vpmaddubsw), so
#: full-range 8-bit weights overflow: the FP32-graph INT8 test model moved by up to 0.33 in logits against the
#: same Q/DQ computed in float, 0.015 with the transformer off (AMD EPYC, AVX2, no VNNI;
#: tests/test_high_precision.py fails there without it). ONNX Runtime then runs S8S8 kernels, which do not
#: saturate, so the tensorrt flavour's figures are TensorRT-like on every x86 CPU. The cpu flavour is U8 already
#: and is not touched (its drift is measured on the machine that runs it).
ORT_DISABLED_OPTIMIZERS = ("WeightBiasQuantization", "QDQS8ToU8Transformer")


def make_session(model, threads: int | None = None, providers=None, optimization: str = "all",
                 what: str | None = None, profile_prefix: str | None = None):
    """An onnxruntime.InferenceSession for a file, serialized bytes or an in-memory ``onnx.ModelProto``.

    An unloadable model is one UserError line.
    ``optimization``: ``"all"`` (ORT's default, for inference), ``"basic"`` or
    ``"none"`` (to observe the graph's own tensors, e.g. when exposing them for
    calibration). ``what`` names the model in errors when it is given as bytes. ``profile_prefix``: ORT's
    per-node profile is on and ``session.end_profiling()`` writes it to ``<prefix>_<date>.json`` (the
    benchmark's --profile).
    """
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    if not isinstance(model, (bytes, bytearray)):
        model = Path(model)
        if not model.is_file():
            raise UserError(f"{model}: ONNX file not found")
    name = what or (str(model) if isinstance(model, Path) else "the ONNX model")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    try:
        src = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        return ort.InferenceSession(src, sess_options=so, providers=resolve_providers(providers),
                                    disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS))
    except UserError:
        raise
    except Exception as e:  # ORT raises its own Fail / InvalidProtobuf / InvalidGraph types
        raise UserError(f"{name}: not a valid ONNX model ({first_line(e)}); re-export it "
                        f"(cpnet export, or cpnet fp16|int8 for reduced-precision files)") from None
