"""TensorRT's rules for explicit (Q/DQ) quantization, written once: ``cpnet int8`` places and self-checks its
tensorrt flavour by them (``quantize/qdq.py``) and ``cpnet check`` lints any file against them (``engines/check.py``:
each Q/DQ node in ``engines/onnx_check/qdq_nodes.py``, the placement in ``engines/onnx_check/qdq_placement.py``).

Where each rule comes from, by section of NVIDIA's TensorRT developer guide ("Working with INT8" in 8.x, "Working
with Quantized Types" in 10.x and 11.x):

- "Per-Tensor and Per-Channel Quantization" (8.x, under "Introduction to Quantization"): activations are quantized
  per tensor, weights per tensor or per *output channel* (the axis must be the output-channel axis, KCRS's K for a
  convolution); per-channel weights exist for convolution, deconvolution, fully connected layers, and MatMul "where
  the second input is constant and both input matrices are 2D". Hence :func:`weight_axis` (by op and rank) and
  :func:`per_channel_weights` (a MatMul weight of rank 3 or more is quantized per tensor).
- "Working with Quantized Types" (10.x): the scheme is symmetric (zero point 0); the quantized types are INT8,
  FP8 (E4M3), INT4 (weight-only, blocked) and FP4 (E2M1). This project's path is INT8; the others TensorRT 10
  parses, so :func:`qtype_problem` warns about them instead of refusing the file, and so does
  :func:`block_size_problem` for blocked quantization.
- "Explicit Quantization" > "ONNX Support": ``QuantizeLinear``/``DequantizeLinear`` import as IQuantize/IDequantize
  layers; the axis attribute (per-channel) needs opset 13 (:data:`MIN_OPSET`); Gemm weights are quantized on
  axis 0 with ``transB`` (PyTorch's ``nn.Linear``) and axis 1 without; no INT32 (bias) DequantizeLinear.
- "Explicit Quantization" > "TensorRT Processing of Q/DQ Networks": TensorRT moves a DQ forward and a Q backward
  across layers that *commute* with quantization (Max Pooling is the guide's example; :data:`COMMUTING_OP_TYPES`),
  while a *quantizable* layer such as AveragePool does not commute: it is fused with the DQ before it and the Q
  after it into one INT8 layer (:data:`QUANTIZABLE_OP_TYPES`), so a DQ -> AveragePool -> Conv leaves the Conv
  reading a float tensor.
- "Explicit Quantization" > "Q/DQ Layer-Placement Recommendations": quantize all inputs of weighted operations
  (:data:`WEIGHTED_OP_TYPES`); do not quantize their outputs by default; BatchNorm and ReLU fuse into the layer
  (:data:`FUSED_ACTIVATIONS`); quantize the residual input of a skip connection so the element-wise addition fuses
  into the weighted layer that computes its other input (:func:`fusable_residual`, :func:`residual_input`).

Everything here is plain data and small predicates over ONNX node protos (no graph walking, no onnx import at
module level): each user keeps its own view of the graph and asks these questions of it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# --- which layers are quantized, and their weights ----------------------------------------------------------------

#: layers whose inputs (activation and weight) are quantized and that TensorRT runs with INT8 kernels
WEIGHTED_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: the inputs of a weighted layer that get a Q/DQ pair: 0 (activation) and 1 (weight); a bias (2) stays float
QUANTIZED_INPUTS = (0, 1)
WEIGHT_INPUT = 1


def int8_kernel(op_type: str, weight_is_constant: bool) -> bool:
    """Whether TensorRT has an INT8 kernel for this weighted layer: a MatMul also of two activations; Conv,
    ConvTranspose and Gemm only with a constant weight."""
    return op_type == "MatMul" or (op_type in WEIGHTED_OP_TYPES and weight_is_constant)


def _trans_b(node) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "transB"), 0)


def weight_axis(node, index: int, rank: int) -> int | None:
    """The output-channel axis of the weight that ``node`` reads at input ``index`` (a tensor of ``rank``), or
    None when that input is not a weight: Conv KCRS -> 0, ConvTranspose CKRS -> 1, Gemm 0 with transB else 1,
    MatMul [..., K, N] -> rank - 1 (the last axis, whatever the rank)."""
    op = node.op_type
    if op not in WEIGHTED_OP_TYPES or index != WEIGHT_INPUT:
        return None
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        return 0 if _trans_b(node) else 1
    return rank - 1  # MatMul


def per_channel_weights(node, rank: int) -> bool:
    """Whether TensorRT takes per-output-channel scales on this layer's weight (of ``rank``): every weighted layer,
    but a MatMul only with a 2-D weight (NVIDIA documents per-channel MatMul weights for 2-D matrices alone)."""
    return node.op_type in WEIGHTED_OP_TYPES and (node.op_type != "MatMul" or rank == 2)


# --- types, scales, zero points --------------------------------------------------------------------------------------
# ONNX TensorProto.DataType values (fixed by onnx.proto), so this module needs no onnx import
FLOAT, UINT8, INT8, INT32, FLOAT16, BFLOAT16 = 1, 2, 3, 6, 10, 16
FLOAT8E4M3FN, UINT4, INT4, FLOAT4E2M1 = 17, 21, 22, 23

#: the quantized type this project's TensorRT path makes and measures
QTYPE = INT8
#: quantized types TensorRT 10 parses that this project does not make: a warning, not an error
OTHER_TENSORRT_QTYPES = {FLOAT8E4M3FN: "FP8 (E4M3)", INT4: "INT4 (weight-only, blocked)", FLOAT4E2M1: "FP4 (E2M1)"}
#: per-channel DequantizeLinear (the axis attribute) needs this opset
MIN_OPSET = 13
#: float16 and bfloat16 scales (an INT8 graph in FP16) need this opset; float32 is always right
HALF_SCALE_OPSET = 19
_TYPE_NAMES = {FLOAT: "FLOAT", UINT8: "UINT8", INT8: "INT8", INT32: "INT32", FLOAT16: "FLOAT16", BFLOAT16: "BFLOAT16",
               FLOAT8E4M3FN: "FLOAT8E4M3FN", UINT4: "UINT4", INT4: "INT4", FLOAT4E2M1: "FLOAT4E2M1"}
FIX = "make the TensorRT flavour: cpnet int8 ... --flavour tensorrt"

Finding = tuple[str, str]  # (level "error" | "warning", message)


def type_name(elem_type: int | None) -> str:
    if elem_type is None:
        return "unknown"
    return _TYPE_NAMES.get(int(elem_type), str(elem_type))


def qtype_problem(qtype: int | None) -> Finding | None:
    """What TensorRT makes of a Q/DQ's quantized type (None: nothing to say)."""
    if qtype is None or qtype == QTYPE:
        return None
    if qtype == INT32:
        return ("error", "INT32 DequantizeLinear (a quantized bias): TensorRT's parser has none; keep biases in float "
                         f"(QuantizeBias=False); {FIX}")
    if qtype == UINT8:
        return ("error", "quantized type UINT8, not INT8 (the cpu flavour's unsigned activations): TensorRT needs "
                         f"INT8 with zero point 0; {FIX}")
    if qtype in OTHER_TENSORRT_QTYPES:
        return ("warning", f"quantized type {OTHER_TENSORRT_QTYPES[qtype]}: TensorRT 10 parses it, but this project's "
                           f"TensorRT path makes and measures INT8 only (FP8 and FP4 need a GPU that has them); "
                           f"its other Q/DQ rules are not checked here")
    return ("error", f"quantized type {type_name(qtype)}, not INT8: TensorRT quantizes to INT8, FP8, INT4 or FP4 only")


def zero_point_problem(zero_point: np.ndarray) -> Finding | None:
    """TensorRT is symmetric-only: every zero point 0."""
    z = np.asarray(zero_point).reshape(-1).astype(np.int64)
    if z.size and np.any(z != 0):
        return ("error", f"zero point {int(z[np.flatnonzero(z)[0]])} (asymmetric): TensorRT's parser accepts only "
                         f"symmetric Q/DQ (zero point 0); {FIX}")
    return None


def scale_problems(scale: np.ndarray, scale_type: int | None, opset: int) -> list[Finding]:
    """Scales: positive and finite; float32, or float16/bfloat16 from opset 19."""
    out: list[Finding] = []
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return [("error", "empty scale tensor")]
    if not np.all(np.isfinite(s)):
        out.append(("error", f"scale has non-finite values ({int(np.sum(~np.isfinite(s)))} of {s.size})"))
    elif np.any(s <= 0):
        out.append(("error", f"scale has values <= 0 (min {s.min():.3g}); scales must be positive"))
    half = scale_type in (FLOAT16, BFLOAT16)
    if scale_type is not None and scale_type != FLOAT and not (half and opset >= HALF_SCALE_OPSET):
        out.append(("error", f"scale is {type_name(scale_type)}, not FLOAT"
                             + (f" (FLOAT16/BFLOAT16 scales need opset {HALF_SCALE_OPSET})" if half else "")))
    return out


def block_size_problem(block_size: int) -> Finding | None:
    if block_size:
        return ("warning", f"blocked quantization (block_size={block_size}): TensorRT 10 takes it for INT4 "
                           f"weight-only and FP4/FP8 block scales, which this project's INT8 path does not make; its "
                           f"scales are not checked here")
    return None


def weight_scale_problem(reader, index: int, rank: int, axis: int | None, n_scales: int) -> Finding | None:
    """A weight's scales as the layer ``reader`` (reading it at ``index``) needs them: per-channel scales on its
    output-channel axis (``axis`` None: per tensor, always accepted)."""
    want = weight_axis(reader, index, rank)
    if want is None or axis is None or n_scales <= 1:
        return None
    name = f"'{reader.name}' ({reader.op_type})"
    if axis % rank != want:
        return ("error", f"per-channel weight scales on axis {axis}, but {name} has its output channels on axis "
                         f"{want}: TensorRT quantizes weights per output channel")
    if not per_channel_weights(reader, rank):
        return ("warning", f"per-channel scales on a rank-{rank} MatMul weight read by {name}: NVIDIA documents "
                           f"per-channel MatMul weights for 2-D matrices only; quantize it per tensor")
    return None


# --- fusion -----------------------------------------------------------------------------------------------------------

#: activations TensorRT fuses into the weighted layer before them (Conv -> ReLU is one layer)
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")
#: layers a DQ moves forward (and a Q backward) across: they commute with quantization and run in INT8
COMMUTING_OP_TYPES = ("MaxPool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
                      "Concat")
#: layers that do not commute but run in INT8 when fused with the DQ before and the Q after them
QUANTIZABLE_OP_TYPES = ("AveragePool", "GlobalAveragePool")


def commutes(op_type: str) -> bool:
    return op_type in COMMUTING_OP_TYPES


def fused_with_q_after(op_type: str) -> bool:
    """DQ -> op -> Q fuses into one INT8 op; without the Q after it the op runs in float and the DQ stays."""
    return op_type in QUANTIZABLE_OP_TYPES


def fusable(tensor: str, producer: Callable[[str], object], readers: Callable[[str], int], outputs: set,
            int8_layer: Callable[[object], bool]) -> bool:
    """Whether ``tensor`` comes straight from an INT8 weighted layer that feeds nothing else (and is not a graph
    output): an Add that reads it fuses into that layer. ``producer(name)`` is the node that makes a tensor,
    ``readers(name)`` how many nodes read it, ``int8_layer(node)`` whether a weighted layer runs in INT8."""
    p = producer(tensor)
    return (p is not None and int8_layer(p) and readers(p.output[0]) == 1 and p.output[0] not in outputs
            and tensor not in outputs)


def fusable_residual(add, index: int, is_fusable: Callable[[str], bool]) -> bool:
    """Whether a Q/DQ pair on input ``index`` of ``add`` is its residual input: the other input fuses (Conv + Add
    (+ ReLU) into one INT8 convolution)."""
    return add.op_type == "Add" and len(add.input) == 2 and is_fusable(add.input[1 - index])


def residual_input(add, is_fusable: Callable[[str], bool], order: Callable[[str], int]) -> int | None:
    """The input of ``add`` that gets the Q/DQ pair (None: neither): the one that does not fuse; when both could,
    the layer computed later (``order``) fuses and the earlier one is quantized."""
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    candidates = [k for k in (0, 1) if is_fusable(add.input[k])]
    if not candidates:
        return None
    return 1 - max(candidates, key=lambda k: order(add.input[k]))
