"""Each QuantizeLinear and DequantizeLinear node against TensorRT's Q/DQ rules (:mod:`cpnet.runtime.qdq_rules`,
the one rulebook ``cpnet int8`` places and self-checks by too), its scale and zero point read as the parser
reads them: any build-time constant.

Three phases, in order: the quantized type and zero point (INT8, zero point 0; FP8/INT4/FP4 are warnings and
end the check, their scales follow other rules), the scale (a positive, finite float constant; as many
values as the zero point), then per tensor or per channel (per channel only on weights, along the
output-channel axis of the layer that reads them).
"""

from __future__ import annotations

from cpnet.runtime import qdq_rules as rules

from .graph import DEFAULT_DOMAINS, Graph, attributes, input_name
from .results import Problem, node_problem


def check_qdq(label: str, node, graph: Graph, table=None) -> list[Problem]:
    """One Q/DQ node: its quantized type and zero point, its scale, its axis (see the module docstring)."""
    report = node_problem(label, node)
    out, qtype = _zero_point(node, graph, report)
    found = rules.qtype_problem(qtype)
    if found:
        out.append(report(*found))
        if found[0] == "warning":  # FP8/INT4/FP4: TensorRT's, not this project's; their scales follow other rules
            return out
    scale_name = input_name(node, 1)
    scale = graph.const(scale_name)
    if scale is None:
        out.append(report("error", f"scale '{scale_name}' depends on a graph input; TensorRT needs a build-time "
                                   f"constant scale"))
        return out
    out += _scale(node, graph, scale, report)
    if scale.size == 0:
        return out
    return out + _channels(node, graph, scale.size, report)


def _zero_point(node, graph: Graph, report) -> tuple[list[Problem], int | None]:
    """Problems with the zero point, and the quantized type it (or the output_dtype, or the input) gives."""
    out: list[Problem] = []
    x, zp_name = node.input[0], input_name(node, 2)
    if zp_name:
        zp = graph.const(zp_name)
        if zp is None:
            out.append(report("error", f"zero point '{zp_name}' depends on a graph input; TensorRT needs a "
                                       f"build-time constant 0"))
            return out, graph.types.get(zp_name)
        found = rules.zero_point_problem(zp)
        if found:
            out.append(report(*found))
        return out, _qtype_of(zp_name, graph)
    if node.op_type == "QuantizeLinear":
        qtype = int(attributes(node).get("output_dtype", 0)) or None
        if qtype is None:
            out.append(report("warning", "QuantizeLinear without a zero point: ONNX (and ONNX Runtime) quantize to "
                                         "UINT8 (negative values clamp to 0) but TensorRT's parser to INT8, so this "
                                         "file computes different things on the two runtimes; give it an INT8 zero "
                                         "point of 0"))
        return out, qtype
    if _no_zero_point_q(graph.producer.get(x)):
        return out, None  # reported once, at the QuantizeLinear that feeds it
    return out, _qtype_of(x, graph)


def _scale(node, graph: Graph, scale, report) -> list[Problem]:
    """The scale's type and values, and a zero point of the same length."""
    scale_name, zp_name = input_name(node, 1), input_name(node, 2)
    scale_type = graph.types.get(scale_name) or _qtype_of(scale_name, graph)
    out = [report(*found) for found in rules.scale_problems(scale, scale_type, graph.opset)]
    zp = graph.const(zp_name) if zp_name else None
    if scale.size and zp is not None and zp.size != scale.size:
        out.append(report("error", f"zero point has {zp.size} values but scale has {scale.size}"))
    return out


def _channels(node, graph: Graph, channels: int, report) -> list[Problem]:
    """Per tensor or per channel (``channels`` scale values): blocked scales, then the per-channel axis."""
    found = rules.block_size_problem(int(attributes(node).get("block_size", 0)))
    if found:
        return [report(*found)]
    if channels == 1:  # a one-element scale is per-tensor
        return []
    out: list[Problem] = []
    x = node.input[0]
    axis = int(attributes(node).get("axis", 1))
    rank, shape = graph.rank(x), graph.shape(x)
    if rank is None:
        out.append(report("warning", "per-channel scale on a tensor of unknown rank; axis could not be verified"))
    elif not -rank <= axis < rank:
        out.append(report("error", f"axis {axis} is out of range for a rank-{rank} tensor"))
    else:
        positive_axis = axis % rank
        dim = shape[positive_axis] if shape is not None else None
        if isinstance(dim, int) and dim > 0 and dim != channels:
            out.append(report("error", f"per-channel scale has {channels} values but axis {axis} of '{x}' has "
                                       f"{dim} channels"))
        if graph.is_weight(x) and node.op_type == "DequantizeLinear":
            for reader, j in graph.readers(node.output[0]):
                found = rules.weight_scale_problem(reader, j, rank, positive_axis, channels)
                if found:
                    out.append(report(*found))
    if not graph.is_weight(x):
        out.append(report("error", "per-channel quantization of an activation: TensorRT quantizes activations "
                                   "per tensor and only weights per channel"))
    return out


def _qtype_of(name: str, graph: Graph) -> int | None:
    """The ONNX element type of a constant's values (else what shape inference says of ``name``)."""
    value = graph.const(name)
    if value is not None:
        from onnx import helper

        try:
            return helper.np_dtype_to_tensor_dtype(value.dtype)
        except Exception:
            return graph.types.get(name)
    return graph.types.get(name)


def _no_zero_point_q(node) -> bool:
    """A QuantizeLinear whose output type ONNX and TensorRT read differently: no zero point, no output_dtype."""
    return (node is not None and node.op_type == "QuantizeLinear" and node.domain in DEFAULT_DOMAINS
            and not input_name(node, 2) and not int(attributes(node).get("output_dtype", 0)))
