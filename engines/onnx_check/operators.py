"""Every node against one TensorRT release's ONNX operator table (:mod:`engines.trt_ops`), and the opset.

A node of a custom domain, or one the table does not support or does not list, is an error. A supported
op whose table entry states a restriction that can be read off the graph has a rule here (``RULES``, one
function per op or op family, registered with :func:`rule`): Resize modes, transforms, aspect-ratio policy
and axes; pooling dilations; TopK ``sorted`` and K; Dropout ``training_mode``; ScatterND ``reduction``;
constant axes of the Reduce ops, Squeeze and Unsqueeze; CumSum axis and OneHot depth;
LayerNormalization's extra outputs; LSTM, GridSample, Hardmax, EyeLike, STFT and Constant attributes; and
QuantizeLinear/DequantizeLinear by :mod:`.qdq_nodes`. ``tests/test_check.py`` holds that every restriction
the table quotes has its rule.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engines import trt_ops

from .graph import DEFAULT_DOMAINS, Graph, as_text, attributes, input_name
from .qdq_nodes import check_qdq
from .results import Problem, node_problem

FOLD_HINT = "fold constants first (polygraphy surgeon sanitize --fold-constants)"

Rule = Callable[[str, object, Graph, trt_ops.OperatorTable], list[Problem]]
RULES: dict[str, Rule] = {}


def rule(*ops: str):
    """Register the decorated function as the rule for ``ops``."""
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn

    return register


rule("QuantizeLinear", "DequantizeLinear")(check_qdq)


def check_opset(model, table: trt_ops.OperatorTable) -> tuple[int | None, list[Problem]]:
    """The default domain's opset, and whether the table's release parses it."""
    problems = []
    lo, documented, hard = table.opset_min, table.opset_documented, table.opset_hard
    opset = None
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            opset = int(imp.version)
    if opset is None:
        problems.append(Problem("error", "no default-domain opset import; not a valid ONNX model for TensorRT"))
    elif opset < lo:
        problems.append(Problem("error", f"opset {opset} is below {lo}, the oldest TensorRT's parser supports; "
                                         f"re-export with opset_version=17"))
    elif opset > hard:
        problems.append(Problem("error", f"opset {opset} is above {hard}, the newest any TensorRT "
                                         f"{table.version[0]}.x parser documents; re-export with opset_version=17"))
    elif opset > documented:
        problems.append(Problem("warning", f"opset {opset} is above {documented}, the newest {table.label} "
                                           f"documents (newer releases parse up to {hard}); opset 17 is the safe "
                                           f"choice"))
    return opset, problems


def check_op(label: str, node, graph: Graph, table: trt_ops.OperatorTable) -> list[Problem]:
    """One node against the table, then its op's rule."""
    op, domain = node.op_type, node.domain
    if domain not in DEFAULT_DOMAINS:
        return [Problem("error", f"custom-domain operator '{domain}::{op}': TensorRT's ONNX parser has no importer "
                                 f"for it (it would need a TensorRT plugin); export with standard ONNX operators",
                        label, op)]
    support = table.support(op)
    if support == "N":
        return [Problem("error", f"not supported by {table.label}'s ONNX parser (onnx-tensorrt operators.md)",
                        label, op)]
    if support == "?":
        return [Problem("error", f"not in {table.label}'s ONNX operator table (onnx-tensorrt operators.md); "
                                 f"the parser will reject it", label, op)]
    check = RULES.get(op)
    return check(label, node, graph, table) if check else []


# ---------------------------------------------------------------------------------------------
# the rules, one per op (or family)


@rule("Resize")
def _resize(label, node, graph, table):
    report, attrs, out = node_problem(label, node), attributes(node), []
    mode = as_text(attrs.get("mode", "nearest"))
    ctm = as_text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    policy = as_text(attrs.get("keep_aspect_ratio_policy", "stretch"))
    if mode not in trt_ops.RESIZE_MODES:
        out.append(report("error", f"Resize mode '{mode}' is not supported (TensorRT: nearest, linear)"))
    if ctm not in trt_ops.RESIZE_TRANSFORMS:
        out.append(report("error", f"Resize coordinate_transformation_mode '{ctm}' is not supported"))
    if policy not in trt_ops.RESIZE_ASPECT_POLICIES:
        out.append(report("error", f"Resize keep_aspect_ratio_policy '{policy}' is not supported "
                                   f"(TensorRT: stretch only)"))
    if int(attrs.get("antialias", 0)):
        out.append(report("error", "Resize antialias is not supported by TensorRT"))
    axes = attrs.get("axes")
    scales = input_name(node, 2)
    if axes is not None and scales and graph.const(scales) is None:
        rank = graph.rank(node.input[0])
        axes = [int(v) for v in axes]
        if rank is None or axes != list(range(rank)):
            out.append(report("error", f"Resize axes {axes} with run-time scales: TensorRT needs axes to be "
                                       f"[0..rank-1] ({'rank unknown' if rank is None else list(range(rank))})"))
    return out


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(label, node, graph, table):
    report, attrs, out, op = node_problem(label, node), attributes(node), [], node.op_type
    dilations = attrs.get("dilations")
    if dilations and any(int(d) != 1 for d in dilations):
        out.append(report("error", f"{op} dilations {list(dilations)}: TensorRT needs them empty or all ones"))
    kernel = attrs.get("kernel_shape")
    if kernel is not None and len(kernel) not in (2, 3) and op != "LpPool":
        out.append(report("error", f"{op} over {len(kernel)} spatial dims: TensorRT pools in 2D or 3D only"))
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out.append(report("error", "MaxPool Indices output is not supported by TensorRT"))
    return out


@rule("Cast")
def _cast(label, node, graph, table):
    if int(attributes(node).get("to", 1)) == 11:  # DOUBLE
        return [node_problem(label, node)("warning", "cast to DOUBLE: TensorRT computes it in FLOAT "
                                                     "(clamped to +-FLT_MAX)")]
    return []


@rule("TopK")
def _topk(label, node, graph, table):
    report, attrs, out = node_problem(label, node), attributes(node), []
    if int(attrs.get("sorted", 1)) != 1:
        out.append(report("error", "TopK sorted=0: TensorRT's parser needs sorted=1"))
    k_name = input_name(node, 1)
    k = graph.const(k_name) if k_name else (np.asarray(attrs["k"]) if "k" in attrs else None)
    if k is None:
        out.append(report("warning", f"TopK K is computed at run time; TensorRT needs K < {trt_ops.TOPK_MAX_K}"))
    elif np.asarray(k).size and int(np.asarray(k).reshape(-1)[0]) >= trt_ops.TOPK_MAX_K:
        out.append(report("error", f"TopK K={int(np.asarray(k).reshape(-1)[0])}: TensorRT needs "
                                   f"K < {trt_ops.TOPK_MAX_K}"))
    return out


@rule("ScatterND")
def _scatternd(label, node, graph, table):
    reduction = as_text(attributes(node).get("reduction", "none"))
    if reduction != "none":
        return [node_problem(label, node)("error", f"ScatterND reduction '{reduction}': TensorRT supports only "
                                                   f"'none'")]
    return []


@rule("Dropout")
def _dropout(label, node, graph, table):
    report = node_problem(label, node)
    name = input_name(node, 2)
    if not name:  # training_mode absent: inference
        return []
    value = graph.literal(name)
    if value is None:
        folded = graph.const(name)
        how = "is computed from constants" if folded is not None else "is a run-time tensor"
        return [report("error", f"Dropout training_mode '{name}' {how}: TensorRT needs an initializer that is False"
                                + (f" ({FOLD_HINT})" if folded is not None else ""))]
    if np.asarray(value).size and bool(np.asarray(value).reshape(-1)[0]):
        return [report("error", "Dropout training_mode=True: TensorRT parses inference graphs only (training_mode "
                                "must be False); export the model in eval mode")]
    return []


def _needs_constant(label, node, graph, index: int, what: str, literal_only: bool = False) -> list[Problem]:
    """Input ``index`` must be a build-time constant (``literal_only``: an initializer or Constant itself)."""
    name = input_name(node, index)
    if not name:
        return []
    if graph.literal(name) is not None:
        return []
    folded = graph.const(name)
    if folded is not None and not literal_only:
        return []
    report = node_problem(label, node)
    if folded is not None:
        return [report("error", f"{what} '{name}' is computed from constants, but {node.op_type} needs an "
                                f"initializer ({FOLD_HINT})")]
    return [report("error", f"{what} '{name}' depends on a graph input; TensorRT needs a build-time constant")]


@rule("CumSum")
def _cumsum(label, node, graph, table):
    return _needs_constant(label, node, graph, 1, "CumSum axis")


@rule("OneHot")
def _onehot(label, node, graph, table):
    return _needs_constant(label, node, graph, 1, "OneHot depth")


@rule(*trt_ops.REDUCE_OPS)
def _reduce(label, node, graph, table):
    return _needs_constant(label, node, graph, 1, f"{node.op_type} axes", literal_only=True)


@rule("Squeeze", "Unsqueeze")
def _squeeze(label, node, graph, table):
    dynamic_ok = table.at_least(trt_ops.SQUEEZE_DYNAMIC_AXES_FROM)
    out = _needs_constant(label, node, graph, 1, f"{node.op_type} axes", literal_only=not dynamic_ok)
    if (node.op_type == "Squeeze" and not input_name(node, 1) and "axes" not in attributes(node)
            and not table.at_least(trt_ops.SQUEEZE_WITHOUT_AXES_FROM)):
        out.append(node_problem(label, node)("error", f"Squeeze without axes (squeeze every size-1 dim): "
                                                      f"{table.label} needs explicit axes (TensorRT 11.5 added "
                                                      f"this form)"))
    return out


@rule("LayerNormalization")
def _layernorm(label, node, graph, table):
    extra = [o for o in list(node.output)[1:] if o]
    if extra:
        return [node_problem(label, node)("error", f"LayerNormalization outputs {extra} (Mean/InvStdDev): "
                                                   f"TensorRT supports only the first output Y")]
    return []


@rule("Constant")
def _constant(label, node, graph, table):
    bad = [name for name in attributes(node) if name in ("sparse_value", "value_string", "value_strings")]
    if bad:
        return [node_problem(label, node)("error", f"Constant with {bad[0]}: TensorRT's parser does not support "
                                                   f"it")]
    return []


@rule("LSTM")
def _lstm(label, node, graph, table):
    attrs, out, report = attributes(node), [], node_problem(label, node)
    if int(attrs.get("input_forget", 0)) != 0:
        out.append(report("error", "LSTM input_forget=1: TensorRT needs 0"))
    if int(attrs.get("layout", 0)) != 0:
        out.append(report("error", "LSTM layout=1 (batch first): TensorRT needs layout 0"))
    return out


@rule("GridSample")
def _gridsample(label, node, graph, table):
    rank = graph.rank(node.input[0])
    ok = {4, 5} if table.at_least(trt_ops.GRIDSAMPLE_5D_FROM) else {4}
    if rank is not None and rank not in ok:
        return [node_problem(label, node)("error", f"GridSample on a rank-{rank} input: {table.label} supports "
                                                   f"{' and '.join(f'{r}-D' for r in sorted(ok))} inputs")]
    return []


@rule("Hardmax")
def _hardmax(label, node, graph, table):
    shape = graph.shape(node.input[0])
    if shape:
        axis = int(attributes(node).get("axis", -1)) % len(shape)
        if not isinstance(shape[axis], int) or shape[axis] <= 0:
            return [node_problem(label, node)("error", f"Hardmax along a dynamic dimension ({shape[axis]}): "
                                                       f"TensorRT needs that dimension known at build time")]
    return []


@rule("EyeLike")
def _eyelike(label, node, graph, table):
    shape = graph.shape(node.input[0])
    if shape and not all(isinstance(d, int) and d > 0 for d in shape):
        return [node_problem(label, node)("error", f"EyeLike of a dynamically shaped input {shape}: TensorRT "
                                                   f"needs static dimensions")]
    return []


@rule("STFT")
def _stft(label, node, graph, table):
    out = _needs_constant(label, node, graph, 1, "STFT frame_step", literal_only=True)
    out += _needs_constant(label, node, graph, 2, "STFT window", literal_only=True)
    shape = graph.shape(node.input[0])
    if shape and shape[-1] == 2:
        out.append(node_problem(label, node)("error", "STFT of a complex signal: TensorRT supports real-valued "
                                                      "input only"))
    return out
