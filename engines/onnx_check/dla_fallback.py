"""``--target dla``: which nodes DLA cannot run and so fall back to the GPU, by DLA's layer restrictions
(:mod:`engines.trt_ops`: the op lists, kernel/stride/padding/window/scale ranges).

A node DLA cannot run "falls back to GPU" (a warning; with ``--strict-dla`` an error). A node whose
placement only TensorRT can decide (shuffles, slices...: ``trt_ops.DLA_LIMITED``), or whose only reasons
are what the graph does not show (resize scales computed at run time, an unknown rank), "may fall back to
GPU": a warning even with ``--strict-dla``, saying the check cannot know (:data:`CANNOT_KNOW`); the build's
``<engine>.layers.json`` (:mod:`engines.layers.placement`) says where it ran. A file in FP32 without Q/DQ
runs entirely on the GPU unless the build sets TensorRT 10's FP16 flag.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engines import trt_ops

from .graph import Graph, as_text, attributes
from .results import Problem

#: what a DLA warning says where only TensorRT can decide; and the words of the reasons that are such
CANNOT_KNOW = "the check cannot know: TensorRT decides; the build's <engine>.layers.json says where it ran"
_UNKNOWABLE = ("unknown", "could not be checked")


def check_dla_precision(graph: Graph, strict: bool, assume_fp16: bool = False) -> list[Problem]:
    """An FP32 file without Q/DQ: DLA computes in FP16 and INT8 only, so every layer would run on the GPU."""
    import onnx

    if assume_fp16:  # TensorRT 10's BuilderFlag.FP16 lets the builder run FP32 layers in FP16
        return []
    has_fp16 = any(t in (onnx.TensorProto.FLOAT16,) for t in graph.types.values())
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for _, n in graph.nodes)
    if has_fp16 or has_qdq:
        return []
    return [Problem("error" if strict else "warning",
                    "DLA computes in FP16 and INT8 only: this FP32 file would run entirely on the GPU; build from "
                    "model.fp16.onnx or model.int8.onnx (or, on TensorRT 10, model.onnx with --fp16-flag)")]


def dla_node(label: str, node, graph: Graph, strict: bool) -> list[Problem]:
    """Whether one node runs on DLA: nothing, a fallback (warning, or error when ``strict``) or "may fall back"."""
    op = node.op_type
    if op in trt_ops.DLA_TRANSPARENT:
        return []
    if op in trt_ops.DLA_OPS:
        reasons = dla_reasons(node, graph)
        known = [r for r in reasons if not any(w in r for w in _UNKNOWABLE)]
        if reasons and not known:  # only what the graph does not show (scales, rank): TensorRT decides
            return [Problem("warning", f"may fall back to GPU: {'; '.join(reasons)} ({CANNOT_KNOW})", label, op)]
        reasons = known
    elif op in trt_ops.DLA_LIMITED:
        # the graph cannot say: TensorRT decides at build time. A warning even with --strict-dla, so the build
        # runs and its inspector decides (cpnet build --strict-dla then fails naming the layers that fell back)
        return [Problem("warning", f"may fall back to GPU: {trt_ops.DLA_LIMITED[op]} ({CANNOT_KNOW})", label, op)]
    else:
        reasons = [f"DLA has no layer for {op}"]
    if not reasons:
        return []
    level = "error" if strict else "warning"
    verb = "not DLA-able" if strict else "falls back to GPU"
    return [Problem(level, f"{verb}: {'; '.join(reasons)}", label, op)]


def dla_reasons(node, graph: Graph) -> list[str]:
    """Why DLA cannot run this node (empty: it can, as far as the graph shows)."""
    reasons = _REASONS.get(node.op_type)
    return reasons(node, graph, attributes(node)) if reasons else []


def within(value, bounds) -> bool:
    """``bounds[0] <= value <= bounds[1]`` (DLA's ranges are inclusive)."""
    return bounds[0] <= value <= bounds[1]


# ---------------------------------------------------------------------------------------------
# DLA's restrictions, one function per layer kind: node, graph, attributes -> reasons


def _convolution(node, graph, attrs) -> list[str]:
    op, reasons = node.op_type, []
    w = graph.shape(node.input[1]) if len(node.input) > 1 else None
    kernel = list(attrs.get("kernel_shape") or (w[2:] if w else []))
    if len(kernel) != 2:
        reasons.append(f"{op} over {len(kernel)} spatial dims (DLA: 2D only)")
    elif not all(isinstance(v, int) and within(v, trt_ops.DLA_CONV_KERNEL) for v in kernel):
        reasons.append(f"kernel {kernel} outside DLA's {list(trt_ops.DLA_CONV_KERNEL)}")
    strides = list(attrs.get("strides") or [1, 1])
    dilations = list(attrs.get("dilations") or [1, 1])
    pads = list(attrs.get("pads") or [0, 0, 0, 0])
    if op == "Conv":
        if not all(within(v, trt_ops.DLA_CONV_STRIDE) for v in strides):
            reasons.append(f"stride {strides} outside DLA's {list(trt_ops.DLA_CONV_STRIDE)}")
        if not all(within(v, trt_ops.DLA_CONV_DILATION) for v in dilations):
            reasons.append(f"dilation {dilations} outside DLA's {list(trt_ops.DLA_CONV_DILATION)}")
        if not all(within(v, trt_ops.DLA_CONV_PAD) for v in pads):
            reasons.append(f"padding {pads} outside DLA's {list(trt_ops.DLA_CONV_PAD)}")
        if w and isinstance(w[0], int) and not within(w[0], trt_ops.DLA_CHANNELS):
            reasons.append(f"{w[0]} output channels outside DLA's {list(trt_ops.DLA_CHANNELS)}")
    else:
        if int(attrs.get("group", 1)) != 1:
            reasons.append("grouped deconvolution (DLA: not supported)")
        if any(v != 1 for v in dilations):
            reasons.append("dilated deconvolution (DLA: not supported)")
        if any(v != 0 for v in pads):
            reasons.append("deconvolution padding must be 0 on DLA")
    return reasons


def _fully_connected(node, graph, attrs) -> list[str]:
    if len(node.input) < 2 or not graph.is_weight(node.input[1]):
        return [f"{node.op_type} of two activations (DLA runs only fully-connected layers with constant weights)"]
    return []


def _concat(node, graph, attrs) -> list[str]:
    reasons = []
    rank = graph.rank(node.output[0]) or graph.rank(node.input[0])
    axis = int(attrs.get("axis", 0))
    if rank is None:
        reasons.append("concatenation axis could not be checked (unknown rank); DLA concatenates along channels only")
    elif rank < 3 or axis % rank != rank - 3:
        reasons.append(f"concatenation along axis {axis} (DLA: channel axis only)")
    if len(node.input) < 2:
        reasons.append("concatenation of a single input")
    return reasons


def _pool(node, graph, attrs) -> list[str]:
    reasons = []
    kernel = list(attrs.get("kernel_shape") or [])
    if len(kernel) != 2:
        reasons.append(f"{node.op_type} over {len(kernel)} spatial dims (DLA: 2D only)")
    elif not all(within(v, trt_ops.DLA_POOL_WINDOW) for v in kernel):
        reasons.append(f"window {kernel} outside DLA's {list(trt_ops.DLA_POOL_WINDOW)}")
    strides = list(attrs.get("strides") or [1, 1])
    if not all(within(v, trt_ops.DLA_POOL_STRIDE) for v in strides):
        reasons.append(f"stride {strides} outside DLA's {list(trt_ops.DLA_POOL_STRIDE)}")
    pads = list(attrs.get("pads") or [0, 0, 0, 0])
    if not all(within(v, trt_ops.DLA_POOL_PAD) for v in pads):
        reasons.append(f"padding {pads} outside DLA's {list(trt_ops.DLA_POOL_PAD)}")
    return reasons


def _global_pool(node, graph, attrs) -> list[str]:
    shape = graph.shape(node.input[0])
    hw = shape[2:] if shape else None
    if not hw or not all(isinstance(v, int) for v in hw):
        return ["global pooling window (the whole H x W) unknown; DLA pools windows of at most 8"]
    if not all(within(v, trt_ops.DLA_POOL_WINDOW) for v in hw):
        return [f"global pooling over {hw[0]}x{hw[1]} exceeds DLA's window of at most 8"]
    return []


def _resize(node, graph, attrs) -> list[str]:
    reasons = []
    mode = as_text(attrs.get("mode", "nearest"))
    ctm = as_text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    if mode not in ("nearest", "linear"):
        reasons.append(f"resize mode '{mode}' (DLA: nearest or bilinear)")
    elif mode == "linear" and ctm not in ("half_pixel", "pytorch_half_pixel"):
        reasons.append(f"bilinear resize with '{ctm}' (DLA: half_pixel only)")
    scales = resize_scales(node, graph)
    if scales is None:
        reasons.append("resize scales unknown at check time (DLA: integer scales in [1, 32] on H and W)")
    elif len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
        reasons.append(f"resize scales {scales} (DLA: 4-D, batch and channel unchanged)")
    elif not all(float(v).is_integer() and within(v, trt_ops.DLA_RESIZE_SCALE) for v in scales[2:]):
        reasons.append(f"resize scales {scales[2:]} on H/W (DLA: integers in [1, 32])")
    return reasons


def _softmax(node, graph, attrs) -> list[str]:
    rank = graph.rank(node.input[0])
    axis = int(attrs.get("axis", -1))
    if rank is not None and axis % rank == 0:
        return ["softmax along the batch axis (DLA: non-batch axes only)"]
    return []


def _comparison(node, graph, attrs) -> list[str]:
    return ["comparison layers run on DLA in INT8 only, with their output cast right after"]


def _clip(node, graph, attrs) -> list[str]:
    lo = graph.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if lo is not None and float(np.asarray(lo).reshape(-1)[0]) != 0.0:
        return ["clip with a nonzero lower bound (DLA: clipped ReLU only)"]
    return []


_REASONS: dict[str, Callable[[object, Graph, dict], list[str]]] = {
    "Conv": _convolution, "ConvTranspose": _convolution, "MatMul": _fully_connected, "Gemm": _fully_connected,
    "Concat": _concat, "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool, "Resize": _resize, "Upsample": _resize, "Softmax": _softmax,
    "Equal": _comparison, "Greater": _comparison, "Less": _comparison, "Clip": _clip,
}


def resize_scales(node, graph: Graph) -> list[float] | None:
    """A Resize's (or Upsample's) scale per axis, from its scales or sizes input or from the shapes around it;
    None when the graph does not show them (computed at run time)."""
    ins = list(node.input)
    if node.op_type == "Upsample":
        scales = graph.const(ins[1]) if len(ins) > 1 else None
        return None if scales is None else [float(v) for v in scales.reshape(-1)]
    if len(ins) > 2 and ins[2]:
        scales = graph.const(ins[2])
        if scales is not None and scales.size:
            return [float(v) for v in scales.reshape(-1)]
    if len(ins) > 3 and ins[3]:
        sizes = graph.const(ins[3])
        src = graph.shape(ins[0])
        if sizes is not None and src and all(isinstance(v, int) and v > 0 for v in src) and sizes.size == len(src):
            return [float(o) / float(i) for o, i in zip(sizes.reshape(-1), src)]
    src, dst = graph.shape(ins[0]), graph.shape(node.output[0])
    if src and dst and len(src) == len(dst) and all(isinstance(v, int) and v > 0 for v in src + dst):
        return [float(o) / float(i) for o, i in zip(dst, src)]
    return None
