"""The Q/DQ placement lint: which Q/DQ pairs on activations TensorRT can fuse into an INT8 layer, by the fusion
rules of :mod:`cpnet.runtime.qdq_rules` (which ``quantize/qdq.py`` places pairs by), and a warning for each
pair it cannot (NVIDIA's "Q/DQ Layer-Placement Recommendations")."""

from __future__ import annotations

from cpnet.runtime import qdq_rules as rules

from .graph import Graph
from .results import Problem

LINT_DEPTH = 8  # how many commuting layers a pair may move across on its way to an INT8 layer


def check_placement(graph: Graph) -> list[Problem]:
    """A warning per Q/DQ pair on an activation that TensorRT cannot fuse into an INT8 layer.

    A pair fuses when its DequantizeLinear feeds a weighted layer whose inputs are all quantized (Conv,
    ConvTranspose, Gemm, MatMul), the residual input of an Add whose other input comes straight from such a
    layer (Conv + Add + ReLU fuse), another QuantizeLinear, an AveragePool whose output is quantized again
    (DQ -> AveragePool -> Q fuse), or a layer TensorRT moves the pair across (MaxPool, Concat of quantized
    inputs, Reshape, Transpose...) on the way to one of those. Anywhere else
    (the output of a Conv before its ReLU, a Resize, a Sigmoid, a graph output) the pair runs as a separate
    quantize and dequantize: it splits the fusion around it and costs time without INT8 compute.
    """
    out: list[Problem] = []
    for label, node in graph.nodes:
        if node.op_type != "DequantizeLinear" or graph.is_weight(node.input[0]):
            continue
        q = graph.source(node.input[0])
        paired = q is not None and q.op_type == "QuantizeLinear"
        pair = f"'{q.name}' -> '{label}'" if paired else f"'{label}'"
        tensor = q.input[0] if paired else node.input[0]
        bad = [f"'{r.name}' ({r.op_type})" for r, k in graph.readers(node.output[0]) if not fuses(r, k, graph)]
        if node.output[0] in graph.outputs:
            bad.append("the graph output")
        if bad:
            out.append(Problem("warning", f"Q/DQ pair {pair} on '{tensor}' feeds {', '.join(bad)}, which TensorRT "
                                          f"cannot fuse with it: it runs as a separate quantize/dequantize and splits "
                                          f"the layer fusion (quantize the inputs of weighted layers and the residual "
                                          f"input of an Add, not outputs: cpnet int8 places pairs so)",
                               node=label, op="DequantizeLinear"))
    return out


def fuses(reader, index: int, graph: Graph, depth: int = 0) -> bool:
    """Whether a DequantizeLinear read by ``reader`` at ``index`` fuses into an INT8 layer (see the lint)."""
    op = reader.op_type
    if op in rules.WEIGHTED_OP_TYPES:
        return _int8_layer(reader, graph, index)
    if op == "QuantizeLinear":  # requantization to another scale
        return True
    if op == "Add":  # the residual input of Conv + Add (+ ReLU)
        return rules.fusable_residual(reader, index, lambda t: _fusable(t, graph))
    readers = [r for o in reader.output if o for r in graph.readers(o)]
    if not readers or any(o in graph.outputs for o in reader.output):
        return False
    if rules.fused_with_q_after(op):  # DQ -> AveragePool -> Q is one INT8 pooling; without the Q it runs in float
        return all(r.op_type == "QuantizeLinear" for r, _ in readers)
    if rules.commutes(op) and depth < LINT_DEPTH:
        if op == "Concat" and not all(_dequantized(i, graph) for i in reader.input if i):
            return False
        return all(fuses(r, k, graph, depth + 1) for r, k in readers)
    return False


def _dequantized(name: str, graph: Graph) -> bool:
    source = graph.source(name)
    return source is not None and source.op_type == "DequantizeLinear"


def _int8_layer(node, graph: Graph, arriving: int | None = None) -> bool:
    """A weighted layer whose data inputs (activation and weight) are all dequantized: TensorRT runs it in INT8.
    ``arriving``: the input a DequantizeLinear reaches across commuting layers (dequantized once moved)."""
    return node.op_type in rules.WEIGHTED_OP_TYPES and len(node.input) >= 2 and all(
        k == arriving or _dequantized(node.input[k], graph) for k in rules.QUANTIZED_INPUTS)


def _fusable(name: str, graph: Graph) -> bool:
    return rules.fusable(name, graph.source, lambda t: len(graph.consumers.get(t, [])), graph.outputs,
                         lambda p: _int8_layer(p, graph))
