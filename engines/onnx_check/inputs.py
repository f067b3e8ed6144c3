"""The graph inputs' shapes: a symbolic dimension needs an optimization profile (a warning), and is an error for
DLA, which also caps the batch and every other dimension (:mod:`engines.trt_ops`)."""

from __future__ import annotations

from engines import trt_ops

from .results import Problem


def check_inputs(model, target: str) -> list[Problem]:
    out = []
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        dynamic = [d.dim_param or f"dim {i}" for i, d in enumerate(dims)
                   if not (d.HasField("dim_value") and d.dim_value > 0)]
        if dynamic:
            if target == "dla":
                out.append(Problem("error", f"input '{inp.name}' has dynamic dims ({', '.join(dynamic)}): DLA "
                                            f"needs static shapes; re-export with a fixed input size"))
            else:
                out.append(Problem("warning", f"input '{inp.name}' has dynamic dims ({', '.join(dynamic)}): "
                                              f"TensorRT needs an optimization profile (cpnet build makes one from "
                                              f"the manifest's input size and --batch)"))
        elif target == "dla":
            out += _dla_limits(inp.name, [d.dim_value for d in dims])
    return out


def _dla_limits(name: str, dims: list[int]) -> list[Problem]:
    out = []
    if dims and dims[0] > trt_ops.DLA_MAX_BATCH:
        out.append(Problem("error", f"input '{name}' batch {dims[0]} exceeds DLA's {trt_ops.DLA_MAX_BATCH}"))
    big = [v for v in dims[1:] if v > trt_ops.DLA_MAX_DIM]
    if big:
        out.append(Problem("error", f"input '{name}' dims {big} exceed DLA's {trt_ops.DLA_MAX_DIM}"))
    return out
