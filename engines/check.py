"""Pre-flight check of an ONNX file against TensorRT's ONNX-parser rules; runs anywhere (onnx only, no TensorRT).

    cpnet check model.onnx model.fp16.onnx model.int8.onnx [--target trt10|trt10.15|trt11|dla] [--json FILE]
    python -m engines.check ...                                    (the same parser)

Checks, each reported as one line naming the node:

- opset of the default domain within what the target release documents;
- every operator against that release's ONNX operator table (``engines/trt_ops.py``: the 10.3,
  latest-10.x and 11.x tables and where each comes from), custom-domain operators (they would
  need a TensorRT plugin), and every restriction the table states that can be read off the
  graph (Resize modes, transforms, aspect-ratio policy and axes; pooling dilations; TopK
  ``sorted`` and K; Dropout ``training_mode``; ScatterND ``reduction``; constant axes of the
  Reduce ops, Squeeze and Unsqueeze; CumSum axis and OneHot depth; LayerNormalization's extra
  outputs; LSTM, GridSample, Hardmax, EyeLike, STFT and Constant attributes);
- Q/DQ, by TensorRT's rules as ``cpnet.runtime.qdq_rules`` writes them (the one rulebook, which
  ``cpnet int8`` places and self-checks by too): INT8 quantized type (FP8, INT4 and FP4, which
  TensorRT 10 parses but this project does not make, and blocked quantization are warnings),
  zero point 0 (TensorRT is symmetric-only), scales a build-time constant (an initializer, a
  Constant, or anything folded from them, as the parser takes it), positive, finite and float32
  (float16 from opset 19); per-channel only on weights and only along the output-channel axis of
  the layer that reads them; a QuantizeLinear without a zero point is a warning, because ONNX
  reads it as UINT8 and TensorRT's parser as INT8;
- Q/DQ placement (a warning per pair): a pair on an activation must fuse into an INT8 layer, i.e. feed
  a weighted layer whose inputs are all quantized, the residual input of an Add fused into such a layer,
  an AveragePool quantized again after it, or a layer TensorRT moves the pair across on the way to one
  (MaxPool, Concat, Reshape...); a pair on a Conv's output before its ReLU, before a Resize or a Sigmoid
  runs on its own and splits the fusion (NVIDIA's "Q/DQ Layer-Placement Recommendations");
- static input shapes: a symbolic dimension is an error for DLA and a warning
  otherwise (TensorRT needs an optimization profile for it);
- for ``--target dla``: DLA's layer restrictions; a node DLA cannot run "falls
  back to GPU" (warning; with ``--strict-dla`` an error). A node whose placement only
  TensorRT can decide (shuffles, slices...: ``trt_ops.DLA_LIMITED``; or parameters the graph does
  not show, such as resize scales computed at run time) "may fall back to GPU":
  a warning even with ``--strict-dla``, saying the check cannot know; the build's
  ``<engine>.layers.json`` (``engines.layers.placement``) says where it ran.

Targets: ``trt10`` is JetPack 6's TensorRT 10.3, the oldest release this project deploys to
(a file that passes runs on every 10.x); ``trt10.15`` the latest 10.x; ``trt11`` TensorRT 11.x;
``--trt-version X.Y`` checks against one exact release instead (``cpnet build`` passes the
running TensorRT's version). Exit status 1 when any file has an error (or cannot be read as
ONNX); warnings do not fail. Otherwise one "OK" line per file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

if __package__ in (None, ""):  # allow `python engines/check.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpnet.runtime import CheckFailed, UserError  # noqa: E402
from cpnet.runtime import qdq_rules as rules  # noqa: E402
from engines import trt_ops  # noqa: E402

TARGETS = trt_ops.TARGETS
_DEFAULT_DOMAINS = ("", "ai.onnx")
_FOLD_DEPTH = 8  # how many producer levels build-time constant folding follows
_NOT_FOLDABLE = frozenset("RandomNormal RandomNormalLike RandomUniform RandomUniformLike Multinomial Bernoulli "
                          "If Loop Scan".split())
FOLD_HINT = "fold constants first (polygraphy surgeon sanitize --fold-constants)"


class CheckError(UserError):
    """The file could not be read as ONNX (shown as one line)."""


@dataclass(frozen=True)
class CheckOptions:
    """What to check against: ``target`` (trt10 | trt10.3 | trt10.15 | trt11 | dla) or an exact
    ``trt_version`` ("10.7", overrides the target's table); ``strict_dla``: a node DLA cannot run is an
    error; ``assume_fp16``: the build sets TensorRT 10's FP16 flag (an FP32 file is then fine for DLA)."""

    target: str = "trt10"
    strict_dla: bool = False
    assume_fp16: bool = False
    trt_version: str | None = None


@dataclass
class Problem:
    level: str  # "error" | "warning"
    message: str
    node: str | None = None
    op: str | None = None

    def format(self, path: str | None = None) -> str:
        where = f"node '{self.node}' ({self.op}): " if self.node is not None else ""
        prefix = f"{path}: " if path else ""
        return f"{prefix}{self.level}: {where}{self.message}"

    def to_json(self) -> dict:
        return {"level": self.level, "node": self.node, "op": self.op, "message": self.message}


@dataclass
class CheckResult:
    path: str
    target: str
    opset: int | None
    num_nodes: int
    problems: list[Problem] = field(default_factory=list)
    table: str = ""
    unreadable: str | None = None  # why the file could not be read as ONNX

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors and self.unreadable is None

    def summary(self) -> str:
        if self.unreadable is not None:
            return f"FAILED: {self.unreadable}"
        table = f", {self.table} table" if self.table else ""
        tail = f"target {self.target}{table}, opset {self.opset}, {self.num_nodes} nodes"
        if self.ok:
            w = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
            return f"OK: {self.path} ({tail}{w})"
        return f"FAILED: {self.path}: {len(self.errors)} error(s), {len(self.warnings)} warning(s) ({tail})"

    def lines(self) -> list[str]:
        return [p.format(self.path) for p in self.problems] + [self.summary()]

    def to_json(self) -> dict:
        return {"path": self.path, "target": self.target, "table": self.table, "ok": self.ok, "opset": self.opset,
                "nodes": self.num_nodes, "unreadable": self.unreadable,
                "problems": [p.to_json() for p in self.problems]}


# ---------------------------------------------------------------------------------------------
# graph helpers


class _Graph:
    """Constants, shapes, producers and consumers of one ONNX model (including nested subgraphs)."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        self.model = model
        self.opset = next((int(i.version) for i in model.opset_import if i.domain in _DEFAULT_DOMAINS), 17)
        self.consts: dict[str, np.ndarray] = {}     # initializers and Constant outputs (what the parser calls weights)
        self._folded: dict[str, np.ndarray | None] = {}
        self.shapes: dict[str, list] = {}
        self.types: dict[str, int] = {}
        self.producer: dict[str, object] = {}
        self.consumers: dict[str, list[tuple[object, int]]] = {}
        self.nodes: list[tuple[str, object]] = []  # (label, node)

        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # shape inference is best effort: checks that need shapes degrade to warnings
            inferred = model
        graph = inferred.graph
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            self._add_value_info(vi)
        self._walk(graph, numpy_helper, prefix="")

    def _add_value_info(self, vi) -> None:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            return
        self.types[vi.name] = t.elem_type
        if t.HasField("shape"):
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in t.shape.dim]

    def _walk(self, graph, numpy_helper, prefix: str) -> None:
        for init in graph.initializer:
            try:
                arr = numpy_helper.to_array(init)
            except Exception:
                continue
            self.consts[init.name] = arr
            self.shapes[init.name] = list(arr.shape)
            self.types[init.name] = init.data_type
        for vi in graph.value_info:
            self._add_value_info(vi)
        for i, node in enumerate(graph.node):
            label = node.name or f"{prefix}#{i}"
            self.nodes.append((label, node))
            for out in node.output:
                self.producer[out] = node
            for j, inp in enumerate(node.input):
                if inp:
                    self.consumers.setdefault(inp, []).append((node, j))
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                for a in node.attribute:
                    if a.name == "value":
                        arr = numpy_helper.to_array(a.t)
                        self.consts[node.output[0]] = arr
                        self.shapes[node.output[0]] = list(arr.shape)
                        self.types[node.output[0]] = a.t.data_type
            for a in node.attribute:  # If / Loop / Scan bodies
                if a.type == self.onnx.AttributeProto.GRAPH:
                    self._walk(a.g, numpy_helper, prefix=f"{label}/")
                elif a.type == self.onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        self._walk(g, numpy_helper, prefix=f"{label}/")

    def literal(self, name: str) -> np.ndarray | None:
        """An initializer or a Constant node's output (what the parser's tables call "an initializer")."""
        return self.consts.get(name) if name else None

    def const(self, name: str, depth: int = _FOLD_DEPTH) -> np.ndarray | None:
        """A build-time constant: a literal, or a node whose inputs all are (Identity, Cast, Reshape...
        of constants), evaluated with ONNX's reference evaluator. None if it depends on a graph input."""
        if not name:
            return None
        if name in self.consts:
            return self.consts[name]
        if name in self._folded:
            return self._folded[name]
        self._folded[name] = None  # guards cycles
        node = self.producer.get(name)
        value = None
        if (node is not None and depth > 0 and node.domain in _DEFAULT_DOMAINS and node.op_type not in _NOT_FOLDABLE
                and not any(a.type in (self.onnx.AttributeProto.GRAPH, self.onnx.AttributeProto.GRAPHS)
                            for a in node.attribute)):
            inputs = [self.const(i, depth - 1) if i else None for i in node.input]
            if all(v is not None for v, i in zip(inputs, node.input) if i):
                value = self._evaluate(node, inputs, name)
        self._folded[name] = value
        return value

    def _evaluate(self, node, inputs, name) -> np.ndarray | None:
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        try:
            inits = [numpy_helper.from_array(np.asarray(v), n) for v, n in zip(inputs, node.input) if n]
            outs = [helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
            graph = helper.make_graph([node], "fold", [], outs, initializer=inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
            results = ReferenceEvaluator(model).run(None, {})
            values = dict(zip([o for o in node.output if o], results))
            return np.asarray(values[name]) if name in values else None
        except Exception:  # anything the reference evaluator cannot run is "not known at check time"
            return None

    def shape(self, name: str) -> list | None:
        return self.shapes.get(name) if name else None

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def is_weight(self, name: str) -> bool:
        """A constant, or a Q/DQ/Cast of a constant (the way weights reach a layer)."""
        seen = 0
        while name and seen < 4:
            if name in self.consts:
                return True
            node = self.producer.get(name)
            if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity"):
                return False
            name = node.input[0]
            seen += 1
        return False

    def readers(self, name: str, through=("Identity", "Cast")) -> list[tuple[object, int]]:
        """(node, input index) of the layers that read ``name``, looking through Identity and Cast."""
        out, todo, seen = [], [name], set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            for node, j in self.consumers.get(n, []):
                if node.op_type in through and node.output:
                    todo.append(node.output[0])
                else:
                    out.append((node, j))
        return out


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


# ---------------------------------------------------------------------------------------------
# individual checks


def _check_opset(model, table: trt_ops.OperatorTable) -> tuple[int | None, list[Problem]]:
    problems = []
    lo, documented, hard = table.opset_min, table.opset_documented, table.opset_hard
    opset = None
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
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


Rule = Callable[[str, object, "_Graph", trt_ops.OperatorTable], list[Problem]]
_RULES: dict[str, Rule] = {}


def _rule(*ops: str):
    def register(fn: Rule) -> Rule:
        for op in ops:
            _RULES[op] = fn
        return fn

    return register


def _check_op(label: str, node, g: _Graph, table: trt_ops.OperatorTable) -> list[Problem]:
    op, domain = node.op_type, node.domain
    if domain not in _DEFAULT_DOMAINS:
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
    rule = _RULES.get(op)
    return rule(label, node, g, table) if rule else []


def _P(label, node):
    return lambda level, msg: Problem(level, msg, label, node.op_type)  # noqa: E731


@_rule("Resize")
def _resize(label, node, g, table):
    P, a, out = _P(label, node), _attrs(node), []
    mode = _s(a.get("mode", "nearest"))
    ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
    policy = _s(a.get("keep_aspect_ratio_policy", "stretch"))
    if mode not in trt_ops.RESIZE_MODES:
        out.append(P("error", f"Resize mode '{mode}' is not supported (TensorRT: nearest, linear)"))
    if ctm not in trt_ops.RESIZE_TRANSFORMS:
        out.append(P("error", f"Resize coordinate_transformation_mode '{ctm}' is not supported"))
    if policy not in trt_ops.RESIZE_ASPECT_POLICIES:
        out.append(P("error", f"Resize keep_aspect_ratio_policy '{policy}' is not supported (TensorRT: stretch only)"))
    if int(a.get("antialias", 0)):
        out.append(P("error", "Resize antialias is not supported by TensorRT"))
    axes = a.get("axes")
    scales = _input(node, 2)
    if axes is not None and scales and g.const(scales) is None:
        rank = g.rank(node.input[0])
        axes = [int(v) for v in axes]
        if rank is None or axes != list(range(rank)):
            out.append(P("error", f"Resize axes {axes} with run-time scales: TensorRT needs axes to be "
                                  f"[0..rank-1] ({'rank unknown' if rank is None else list(range(rank))})"))
    return out


@_rule("MaxPool", "AveragePool", "LpPool")
def _pool(label, node, g, table):
    P, a, out, op = _P(label, node), _attrs(node), [], node.op_type
    dil = a.get("dilations")
    if dil and any(int(d) != 1 for d in dil):
        out.append(P("error", f"{op} dilations {list(dil)}: TensorRT needs them empty or all ones"))
    k = a.get("kernel_shape")
    if k is not None and len(k) not in (2, 3) and op != "LpPool":
        out.append(P("error", f"{op} over {len(k)} spatial dims: TensorRT pools in 2D or 3D only"))
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        out.append(P("error", "MaxPool Indices output is not supported by TensorRT"))
    return out


@_rule("Cast")
def _cast(label, node, g, table):
    if int(_attrs(node).get("to", 1)) == 11:  # DOUBLE
        return [_P(label, node)("warning", "cast to DOUBLE: TensorRT computes it in FLOAT (clamped to +-FLT_MAX)")]
    return []


@_rule("TopK")
def _topk(label, node, g, table):
    P, a, out = _P(label, node), _attrs(node), []
    if int(a.get("sorted", 1)) != 1:
        out.append(P("error", "TopK sorted=0: TensorRT's parser needs sorted=1"))
    k_name = _input(node, 1)
    k = g.const(k_name) if k_name else (np.asarray(a["k"]) if "k" in a else None)
    if k is None:
        out.append(P("warning", f"TopK K is computed at run time; TensorRT needs K < {trt_ops.TOPK_MAX_K}"))
    elif np.asarray(k).size and int(np.asarray(k).reshape(-1)[0]) >= trt_ops.TOPK_MAX_K:
        out.append(P("error", f"TopK K={int(np.asarray(k).reshape(-1)[0])}: TensorRT needs K < {trt_ops.TOPK_MAX_K}"))
    return out


@_rule("ScatterND")
def _scatternd(label, node, g, table):
    reduction = _s(_attrs(node).get("reduction", "none"))
    if reduction != "none":
        return [_P(label, node)("error", f"ScatterND reduction '{reduction}': TensorRT supports only 'none'")]
    return []


@_rule("Dropout")
def _dropout(label, node, g, table):
    P = _P(label, node)
    name = _input(node, 2)
    if not name:  # training_mode absent: inference
        return []
    value = g.literal(name)
    if value is None:
        folded = g.const(name)
        how = "is computed from constants" if folded is not None else "is a run-time tensor"
        return [P("error", f"Dropout training_mode '{name}' {how}: TensorRT needs an initializer that is False"
                           + (f" ({FOLD_HINT})" if folded is not None else ""))]
    if np.asarray(value).size and bool(np.asarray(value).reshape(-1)[0]):
        return [P("error", "Dropout training_mode=True: TensorRT parses inference graphs only (training_mode must "
                           "be False); export the model in eval mode")]
    return []


def _needs_constant(label, node, g, index: int, what: str, literal_only: bool = False) -> list[Problem]:
    name = _input(node, index)
    if not name:
        return []
    if g.literal(name) is not None:
        return []
    folded = g.const(name)
    if folded is not None and not literal_only:
        return []
    P = _P(label, node)
    if folded is not None:
        return [P("error", f"{what} '{name}' is computed from constants, but {node.op_type} needs an initializer "
                           f"({FOLD_HINT})")]
    return [P("error", f"{what} '{name}' depends on a graph input; TensorRT needs a build-time constant")]


@_rule("CumSum")
def _cumsum(label, node, g, table):
    return _needs_constant(label, node, g, 1, "CumSum axis")


@_rule("OneHot")
def _onehot(label, node, g, table):
    return _needs_constant(label, node, g, 1, "OneHot depth")


@_rule(*trt_ops.REDUCE_OPS)
def _reduce(label, node, g, table):
    return _needs_constant(label, node, g, 1, f"{node.op_type} axes", literal_only=True)


@_rule("Squeeze", "Unsqueeze")
def _squeeze(label, node, g, table):
    dynamic_ok = table.at_least(trt_ops.SQUEEZE_DYNAMIC_AXES_FROM)
    out = _needs_constant(label, node, g, 1, f"{node.op_type} axes", literal_only=not dynamic_ok)
    if (node.op_type == "Squeeze" and not _input(node, 1) and "axes" not in _attrs(node)
            and not table.at_least(trt_ops.SQUEEZE_WITHOUT_AXES_FROM)):
        out.append(_P(label, node)("error", f"Squeeze without axes (squeeze every size-1 dim): {table.label} needs "
                                            f"explicit axes (TensorRT 11.5 added this form)"))
    return out


@_rule("LayerNormalization")
def _layernorm(label, node, g, table):
    extra = [o for o in list(node.output)[1:] if o]
    if extra:
        return [_P(label, node)("error", f"LayerNormalization outputs {extra} (Mean/InvStdDev): TensorRT supports "
                                         f"only the first output Y")]
    return []


@_rule("Constant")
def _constant(label, node, g, table):
    bad = [a for a in _attrs(node) if a in ("sparse_value", "value_string", "value_strings")]
    if bad:
        return [_P(label, node)("error", f"Constant with {bad[0]}: TensorRT's parser does not support it")]
    return []


@_rule("LSTM")
def _lstm(label, node, g, table):
    a, out, P = _attrs(node), [], _P(label, node)
    if int(a.get("input_forget", 0)) != 0:
        out.append(P("error", "LSTM input_forget=1: TensorRT needs 0"))
    if int(a.get("layout", 0)) != 0:
        out.append(P("error", "LSTM layout=1 (batch first): TensorRT needs layout 0"))
    return out


@_rule("GridSample")
def _gridsample(label, node, g, table):
    rank = g.rank(node.input[0])
    ok = {4, 5} if table.at_least(trt_ops.GRIDSAMPLE_5D_FROM) else {4}
    if rank is not None and rank not in ok:
        return [_P(label, node)("error", f"GridSample on a rank-{rank} input: {table.label} supports "
                                         f"{' and '.join(f'{r}-D' for r in sorted(ok))} inputs")]
    return []


@_rule("Hardmax")
def _hardmax(label, node, g, table):
    shape = g.shape(node.input[0])
    if shape:
        axis = int(_attrs(node).get("axis", -1)) % len(shape)
        if not isinstance(shape[axis], int) or shape[axis] <= 0:
            return [_P(label, node)("error", f"Hardmax along a dynamic dimension ({shape[axis]}): TensorRT needs "
                                             f"that dimension known at build time")]
    return []


@_rule("EyeLike")
def _eyelike(label, node, g, table):
    shape = g.shape(node.input[0])
    if shape and not all(isinstance(d, int) and d > 0 for d in shape):
        return [_P(label, node)("error", f"EyeLike of a dynamically shaped input {shape}: TensorRT needs static "
                                         f"dimensions")]
    return []


@_rule("STFT")
def _stft(label, node, g, table):
    out = _needs_constant(label, node, g, 1, "STFT frame_step", literal_only=True)
    out += _needs_constant(label, node, g, 2, "STFT window", literal_only=True)
    shape = g.shape(node.input[0])
    if shape and shape[-1] == 2:
        out.append(_P(label, node)("error", "STFT of a complex signal: TensorRT supports real-valued input only"))
    return out


def _qtype_of(name: str, g: _Graph) -> int | None:
    c = g.const(name)
    if c is not None:
        from onnx import helper

        try:
            return helper.np_dtype_to_tensor_dtype(c.dtype)
        except Exception:
            return g.types.get(name)
    return g.types.get(name)


def _no_zero_point_q(node, g: _Graph) -> bool:
    """A QuantizeLinear whose output type ONNX and TensorRT read differently: no zero point, no output_dtype."""
    return (node is not None and node.op_type == "QuantizeLinear" and node.domain in _DEFAULT_DOMAINS
            and not _input(node, 2) and not int(_attrs(node).get("output_dtype", 0)))


@_rule("QuantizeLinear", "DequantizeLinear")
def _check_qdq(label: str, node, g: _Graph, table=None) -> list[Problem]:
    """One Q/DQ node against :mod:`cpnet.runtime.qdq_rules`, with its scale and zero point read as the parser
    reads them (any build-time constant)."""
    op = node.op_type
    P = _P(label, node)
    out: list[Problem] = []
    a = _attrs(node)
    x = node.input[0]
    scale_name = _input(node, 1)
    zp_name = _input(node, 2)

    # quantized type and zero point
    if zp_name:
        zp = g.const(zp_name)
        if zp is None:
            out.append(P("error", f"zero point '{zp_name}' depends on a graph input; TensorRT needs a build-time "
                                  f"constant 0"))
            qtype = g.types.get(zp_name)
        else:
            qtype = _qtype_of(zp_name, g)
            found = rules.zero_point_problem(zp)
            if found:
                out.append(P(*found))
    elif op == "QuantizeLinear":
        qtype = int(a.get("output_dtype", 0)) or None
        if qtype is None:
            out.append(P("warning", "QuantizeLinear without a zero point: ONNX (and ONNX Runtime) quantize to UINT8 "
                                    "(negative values clamp to 0) but TensorRT's parser to INT8, so this file computes "
                                    "different things on the two runtimes; give it an INT8 zero point of 0"))
    elif _no_zero_point_q(g.producer.get(x), g):
        qtype = None  # reported once, at the QuantizeLinear that feeds it
    else:
        qtype = _qtype_of(x, g)
    found = rules.qtype_problem(qtype)
    if found:
        out.append(P(*found))
        if found[0] == "warning":  # FP8/INT4/FP4: TensorRT's, not this project's; their scales follow other rules
            return out

    # scales: any build-time constant (initializer, Constant, or folded from them)
    scale = g.const(scale_name)
    if scale is None:
        out.append(P("error", f"scale '{scale_name}' depends on a graph input; TensorRT needs a build-time "
                              f"constant scale"))
        return out
    scale_type = g.types.get(scale_name) or _qtype_of(scale_name, g)
    out += [P(*f) for f in rules.scale_problems(scale, scale_type, g.opset)]
    s = scale.reshape(-1)
    if s.size == 0:
        return out
    zp = g.const(zp_name) if zp_name else None
    if zp is not None and zp.size != s.size:
        out.append(P("error", f"zero point has {zp.size} values but scale has {s.size}"))

    # per-tensor vs per-channel
    found = rules.block_size_problem(int(a.get("block_size", 0)))
    if found:
        out.append(P(*found))
    elif s.size > 1:  # per-channel (a one-element scale is per-tensor)
        axis = int(a.get("axis", 1))
        rank = g.rank(x)
        shape = g.shape(x)
        if rank is None:
            out.append(P("warning", "per-channel scale on a tensor of unknown rank; axis could not be verified"))
        elif not -rank <= axis < rank:
            out.append(P("error", f"axis {axis} is out of range for a rank-{rank} tensor"))
        else:
            ax = axis % rank
            dim = shape[ax] if shape is not None else None
            if isinstance(dim, int) and dim > 0 and dim != s.size:
                out.append(P("error", f"per-channel scale has {s.size} values but axis {axis} of '{x}' has "
                                      f"{dim} channels"))
            if g.is_weight(x) and op == "DequantizeLinear":
                for reader, j in g.readers(node.output[0]):
                    found = rules.weight_scale_problem(reader, j, rank, ax, s.size)
                    if found:
                        out.append(P(*found))
        if not g.is_weight(x):
            out.append(P("error", "per-channel quantization of an activation: TensorRT quantizes activations "
                                  "per tensor and only weights per channel"))
    return out


# Q/DQ placement lint: which pairs TensorRT can fuse, by the fusion rules of cpnet.runtime.qdq_rules (which
# quantize/qdq.py places pairs by)
_LINT_DEPTH = 8


def _producer(name: str, g: _Graph, through=("Identity", "Cast")):
    node = g.producer.get(name)
    while node is not None and node.op_type in through:
        node = g.producer.get(node.input[0])
    return node


def _dequantized(name: str, g: _Graph) -> bool:
    p = _producer(name, g)
    return p is not None and p.op_type == "DequantizeLinear"


def _int8_layer(node, g: _Graph, arriving: int | None = None) -> bool:
    """A weighted layer whose data inputs (activation and weight) are all dequantized: TensorRT runs it in INT8.
    ``arriving``: the input a DequantizeLinear reaches across commuting layers (dequantized once moved)."""
    return node.op_type in rules.WEIGHTED_OP_TYPES and len(node.input) >= 2 and all(
        k == arriving or _dequantized(node.input[k], g) for k in rules.QUANTIZED_INPUTS)


def _fusable(name: str, g: _Graph) -> bool:
    outputs = {o.name for o in g.model.graph.output}
    return rules.fusable(name, lambda t: _producer(t, g), lambda t: len(g.consumers.get(t, [])), outputs,
                         lambda p: _int8_layer(p, g))


def _fuses(reader, index: int, g: _Graph, depth: int = 0) -> bool:
    """Whether a DequantizeLinear read by ``reader`` at ``index`` fuses into an INT8 layer (see the lint)."""
    op = reader.op_type
    if op in rules.WEIGHTED_OP_TYPES:
        return _int8_layer(reader, g, index)
    if op == "QuantizeLinear":  # requantization to another scale
        return True
    if op == "Add":  # the residual input of Conv + Add (+ ReLU)
        return rules.fusable_residual(reader, index, lambda t: _fusable(t, g))
    outputs = {o.name for o in g.model.graph.output}
    readers = [r for o in reader.output if o for r in g.readers(o)]
    if not readers or any(o in outputs for o in reader.output):
        return False
    if rules.fused_with_q_after(op):  # DQ -> AveragePool -> Q is one INT8 pooling; without the Q it runs in float
        return all(r.op_type == "QuantizeLinear" for r, _ in readers)
    if rules.commutes(op) and depth < _LINT_DEPTH:
        if op == "Concat" and not all(_dequantized(i, g) for i in reader.input if i):
            return False
        return all(_fuses(r, k, g, depth + 1) for r, k in readers)
    return False


def _check_placement(g: _Graph) -> list[Problem]:
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
    outputs = {o.name for o in g.model.graph.output}
    for label, node in g.nodes:
        if node.op_type != "DequantizeLinear" or g.is_weight(node.input[0]):
            continue
        q = _producer(node.input[0], g)
        pair = f"'{q.name}' -> '{label}'" if q is not None and q.op_type == "QuantizeLinear" else f"'{label}'"
        tensor = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else node.input[0]
        bad = [f"'{r.name}' ({r.op_type})" for r, k in g.readers(node.output[0]) if not _fuses(r, k, g)]
        if node.output[0] in outputs:
            bad.append("the graph output")
        if bad:
            out.append(Problem("warning", f"Q/DQ pair {pair} on '{tensor}' feeds {', '.join(bad)}, which TensorRT "
                                          f"cannot fuse with it: it runs as a separate quantize/dequantize and splits "
                                          f"the layer fusion (quantize the inputs of weighted layers and the residual "
                                          f"input of an Add, not outputs: cpnet int8 places pairs so)",
                               node=label, op="DequantizeLinear"))
    return out


def _check_inputs(model, g: _Graph, target: str) -> list[Problem]:
    out = []
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        dynamic = []
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            dynamic.append(d.dim_param or f"dim {i}")
        if dynamic:
            if target == "dla":
                out.append(Problem("error", f"input '{inp.name}' has dynamic dims ({', '.join(dynamic)}): DLA "
                                            f"needs static shapes; re-export with a fixed input size"))
            else:
                out.append(Problem("warning", f"input '{inp.name}' has dynamic dims ({', '.join(dynamic)}): "
                                              f"TensorRT needs an optimization profile (cpnet build makes one from "
                                              f"the manifest's input size and --batch)"))
        elif target == "dla":
            vals = [d.dim_value for d in dims]
            if vals and vals[0] > trt_ops.DLA_MAX_BATCH:
                out.append(Problem("error", f"input '{inp.name}' batch {vals[0]} exceeds DLA's {trt_ops.DLA_MAX_BATCH}"))
            big = [v for v in vals[1:] if v > trt_ops.DLA_MAX_DIM]
            if big:
                out.append(Problem("error", f"input '{inp.name}' dims {big} exceed DLA's {trt_ops.DLA_MAX_DIM}"))
    return out


def _in(v, lo_hi) -> bool:
    return lo_hi[0] <= v <= lo_hi[1]


def _dla_reasons(node, g: _Graph) -> list[str]:
    """Why DLA cannot run this node (empty: it can, as far as the graph shows)."""
    op = node.op_type
    a = _attrs(node)
    r: list[str] = []
    if op in ("Conv", "ConvTranspose"):
        w = g.shape(node.input[1]) if len(node.input) > 1 else None
        k = list(a.get("kernel_shape") or (w[2:] if w else []))
        if len(k) != 2:
            r.append(f"{op} over {len(k)} spatial dims (DLA: 2D only)")
        elif not all(isinstance(v, int) and _in(v, trt_ops.DLA_CONV_KERNEL) for v in k):
            r.append(f"kernel {k} outside DLA's {list(trt_ops.DLA_CONV_KERNEL)}")
        strides = list(a.get("strides") or [1, 1])
        dil = list(a.get("dilations") or [1, 1])
        pads = list(a.get("pads") or [0, 0, 0, 0])
        if op == "Conv":
            if not all(_in(v, trt_ops.DLA_CONV_STRIDE) for v in strides):
                r.append(f"stride {strides} outside DLA's {list(trt_ops.DLA_CONV_STRIDE)}")
            if not all(_in(v, trt_ops.DLA_CONV_DILATION) for v in dil):
                r.append(f"dilation {dil} outside DLA's {list(trt_ops.DLA_CONV_DILATION)}")
            if not all(_in(v, trt_ops.DLA_CONV_PAD) for v in pads):
                r.append(f"padding {pads} outside DLA's {list(trt_ops.DLA_CONV_PAD)}")
            if w and isinstance(w[0], int) and not _in(w[0], trt_ops.DLA_CHANNELS):
                r.append(f"{w[0]} output channels outside DLA's {list(trt_ops.DLA_CHANNELS)}")
        else:
            if int(a.get("group", 1)) != 1:
                r.append("grouped deconvolution (DLA: not supported)")
            if any(v != 1 for v in dil):
                r.append("dilated deconvolution (DLA: not supported)")
            if any(v != 0 for v in pads):
                r.append("deconvolution padding must be 0 on DLA")
    elif op in ("MatMul", "Gemm"):
        if len(node.input) < 2 or not g.is_weight(node.input[1]):
            r.append(f"{op} of two activations (DLA runs only fully-connected layers with constant weights)")
    elif op == "Concat":
        rank = g.rank(node.output[0]) or g.rank(node.input[0])
        axis = int(a.get("axis", 0))
        if rank is None:
            r.append("concatenation axis could not be checked (unknown rank); DLA concatenates along channels only")
        elif rank < 3 or axis % rank != rank - 3:
            r.append(f"concatenation along axis {axis} (DLA: channel axis only)")
        if len(node.input) < 2:
            r.append("concatenation of a single input")
    elif op in ("MaxPool", "AveragePool"):
        k = list(a.get("kernel_shape") or [])
        if len(k) != 2:
            r.append(f"{op} over {len(k)} spatial dims (DLA: 2D only)")
        elif not all(_in(v, trt_ops.DLA_POOL_WINDOW) for v in k):
            r.append(f"window {k} outside DLA's {list(trt_ops.DLA_POOL_WINDOW)}")
        strides = list(a.get("strides") or [1, 1])
        if not all(_in(v, trt_ops.DLA_POOL_STRIDE) for v in strides):
            r.append(f"stride {strides} outside DLA's {list(trt_ops.DLA_POOL_STRIDE)}")
        pads = list(a.get("pads") or [0, 0, 0, 0])
        if not all(_in(v, trt_ops.DLA_POOL_PAD) for v in pads):
            r.append(f"padding {pads} outside DLA's {list(trt_ops.DLA_POOL_PAD)}")
    elif op in ("GlobalAveragePool", "GlobalMaxPool"):
        s = g.shape(node.input[0])
        hw = s[2:] if s else None
        if not hw or not all(isinstance(v, int) for v in hw):
            r.append("global pooling window (the whole H x W) unknown; DLA pools windows of at most 8")
        elif not all(_in(v, trt_ops.DLA_POOL_WINDOW) for v in hw):
            r.append(f"global pooling over {hw[0]}x{hw[1]} exceeds DLA's window of at most 8")
    elif op in ("Resize", "Upsample"):
        mode = _s(a.get("mode", "nearest"))
        ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
        if mode not in ("nearest", "linear"):
            r.append(f"resize mode '{mode}' (DLA: nearest or bilinear)")
        elif mode == "linear" and ctm not in ("half_pixel", "pytorch_half_pixel"):
            r.append(f"bilinear resize with '{ctm}' (DLA: half_pixel only)")
        scales = _resize_scales(node, g)
        if scales is None:
            r.append("resize scales unknown at check time (DLA: integer scales in [1, 32] on H and W)")
        elif len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
            r.append(f"resize scales {scales} (DLA: 4-D, batch and channel unchanged)")
        elif not all(float(v).is_integer() and _in(v, trt_ops.DLA_RESIZE_SCALE) for v in scales[2:]):
            r.append(f"resize scales {scales[2:]} on H/W (DLA: integers in [1, 32])")
    elif op == "Softmax":
        rank = g.rank(node.input[0])
        axis = int(a.get("axis", -1))
        if rank is not None and axis % rank == 0:
            r.append("softmax along the batch axis (DLA: non-batch axes only)")
    elif op in ("Equal", "Greater", "Less"):
        r.append("comparison layers run on DLA in INT8 only, with their output cast right after")
    elif op == "Clip":
        lo = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if lo is not None and float(np.asarray(lo).reshape(-1)[0]) != 0.0:
            r.append("clip with a nonzero lower bound (DLA: clipped ReLU only)")
    return r


def _resize_scales(node, g: _Graph) -> list[float] | None:
    ins = list(node.input)
    if node.op_type == "Upsample":
        sc = g.const(ins[1]) if len(ins) > 1 else None
        return None if sc is None else [float(v) for v in sc.reshape(-1)]
    if len(ins) > 2 and ins[2]:
        sc = g.const(ins[2])
        if sc is not None and sc.size:
            return [float(v) for v in sc.reshape(-1)]
    if len(ins) > 3 and ins[3]:
        sizes = g.const(ins[3])
        src = g.shape(ins[0])
        if sizes is not None and src and all(isinstance(v, int) and v > 0 for v in src) and sizes.size == len(src):
            return [float(o) / float(i) for o, i in zip(sizes.reshape(-1), src)]
    src, dst = g.shape(ins[0]), g.shape(node.output[0])
    if src and dst and len(src) == len(dst) and all(isinstance(v, int) and v > 0 for v in src + dst):
        return [float(o) / float(i) for o, i in zip(dst, src)]
    return None


def _check_dla_precision(model, g: _Graph, strict: bool, assume_fp16: bool = False) -> list[Problem]:
    import onnx

    if assume_fp16:  # TensorRT 10's BuilderFlag.FP16 lets the builder run FP32 layers in FP16
        return []
    has_fp16 = any(t in (onnx.TensorProto.FLOAT16,) for t in g.types.values())
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for _, n in g.nodes)
    if has_fp16 or has_qdq:
        return []
    return [Problem("error" if strict else "warning",
                    "DLA computes in FP16 and INT8 only: this FP32 file would run entirely on the GPU; build from "
                    "model.fp16.onnx or model.int8.onnx (or, on TensorRT 10, model.onnx with --fp16-flag)")]


#: what a DLA warning says where only TensorRT can decide; and the words of the reasons that are such
CANNOT_KNOW = "the check cannot know: TensorRT decides; the build's <engine>.layers.json says where it ran"
_UNKNOWABLE = ("unknown", "could not be checked")


def _dla_node(label: str, node, g: _Graph, strict: bool) -> list[Problem]:
    op = node.op_type
    if op in trt_ops.DLA_TRANSPARENT:
        return []
    if op in trt_ops.DLA_OPS:
        reasons = _dla_reasons(node, g)
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


# ---------------------------------------------------------------------------------------------
# driver


def load(path: "str | Path"):
    """The model, read and passed through ONNX's own checker first (a node reading an undefined tensor, a bad
    attribute...: TensorRT's rules come after); a file that fails either is a CheckError line."""
    from cpnet.runtime.graph import load_onnx

    return load_onnx(path, error=CheckError, hint="re-export it")


def _options(options: CheckOptions | None, **kw) -> CheckOptions:
    if options is None:
        options = CheckOptions(**{k: v for k, v in kw.items() if v is not None})
    if options.target not in TARGETS:
        raise UserError(f"target must be one of {', '.join(TARGETS)}, got {options.target!r}")
    return options


def table_for(options: CheckOptions) -> trt_ops.OperatorTable:
    try:
        return trt_ops.operator_table(options.trt_version or options.target)
    except ValueError as e:
        raise UserError(str(e)) from None


def check_model(model, target: str = "trt10", strict_dla: bool = False, path: str = "<model>",
                assume_fp16: bool = False, trt_version: str | None = None,
                options: CheckOptions | None = None) -> CheckResult:
    """Check a loaded onnx.ModelProto against one TensorRT release's rules (see :class:`CheckOptions`)."""
    o = _options(options, target=target, strict_dla=strict_dla, assume_fp16=assume_fp16, trt_version=trt_version)
    table = table_for(o)
    g = _Graph(model)
    opset, problems = _check_opset(model, table)
    problems += _check_inputs(model, g, o.target)
    if o.target == "dla":
        problems += _check_dla_precision(model, g, o.strict_dla, o.assume_fp16)
    problems += _check_placement(g)
    for label, node in g.nodes:
        problems += _check_op(label, node, g, table)
        if o.target == "dla" and node.domain in _DEFAULT_DOMAINS:
            problems += _dla_node(label, node, g, o.strict_dla)
    return CheckResult(path=path, target=o.target, opset=opset, num_nodes=len(g.nodes), problems=problems,
                       table=table.label)


def check_file(path: "str | Path", target: str = "trt10", strict_dla: bool = False,
               assume_fp16: bool = False, trt_version: str | None = None,
               options: CheckOptions | None = None) -> CheckResult:
    o = _options(options, target=target, strict_dla=strict_dla, assume_fp16=assume_fp16, trt_version=trt_version)
    return check_model(load(path), path=str(path), options=o)


def check_files(paths: Iterable["str | Path"], options: CheckOptions = CheckOptions()) -> list[CheckResult]:
    """Check every file; a file that is not readable ONNX becomes a failed result (a missing one is a UserError)."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"no such file: {', '.join(missing)}")
    results = []
    for p in paths:
        try:
            results.append(check_file(p, options=options))
        except CheckError as e:
            results.append(CheckResult(path=str(p), target=options.target, opset=None, num_nodes=0, unreadable=str(e)))
    return results


# ---------------------------------------------------------------------------------------------
# the `cpnet check` verb

DESCRIPTION = """Check ONNX files against TensorRT's ONNX-parser rules before building (no TensorRT needed).

Every operator against the target release's operator table (JetPack 6's 10.3, the latest 10.x,
or 11.x), the table's restrictions, Q/DQ rules and input shapes, each problem one line naming
the node; --target dla adds DLA's layer limits. Exit 1 when a file has an error."""

EXAMPLES = """cpnet check runs/quickstart/export/model.int8.onnx
cpnet check model.onnx model.fp16.onnx model.int8.onnx --target trt11 --json check.json
cpnet check model.fp16.onnx --target dla --strict-dla
cpnet check model.onnx --trt-version 10.7"""


def add_arguments(p) -> None:
    from cpnet.cli import args as a

    a.add_input(p, "ONNX", "ONNX file(s): model.onnx, model.fp16.onnx, model.int8.onnx", nargs="+")
    p.add_argument("--target", choices=TARGETS, default="trt10",
                   help="trt10 (= trt10.3, JetPack 6: passes here runs on every 10.x), trt10.15 (latest 10.x), "
                        "trt11, or dla (Jetson DLA with GPU fallback); default trt10")
    p.add_argument("--trt-version", metavar="X.Y", type=_release,
                   help="check against this exact TensorRT release's table instead of the target's (e.g. 10.7)")
    p.add_argument("--strict-dla", action="store_true",
                   help="with --target dla: a node DLA cannot run is an error instead of a GPU-fallback warning")
    p.add_argument("--fp16-flag", action="store_true",
                   help="the build will use TensorRT 10's FP16 flag (DLA: an FP32 file is then not a problem)")
    a.add_json(p, "every file's result and problems")


def _release(text: str) -> str:
    import argparse
    import re

    if not re.fullmatch(r"\d+\.\d+(\.\d+)*", text.strip()):
        raise argparse.ArgumentTypeError(f"expected a TensorRT release such as 10.3 or 11.0, got {text!r}")
    return text.strip()


def run(args) -> int:
    from cpnet.runtime import atomic_write_json

    options = CheckOptions(target=args.target, strict_dla=args.strict_dla, assume_fp16=args.fp16_flag,
                           trt_version=args.trt_version)
    table_for(options)  # a bad --trt-version is a user error before any file is read
    results = check_files(args.input, options)
    for res in results:
        for line in res.lines():
            print(line)
    if args.json:
        atomic_write_json(args.json, {"target": options.target, "trt_version": options.trt_version,
                                      "files": [r.to_json() for r in results]})
    unreadable = [r for r in results if r.unreadable is not None]
    if unreadable:  # not an ONNX model this check may read: the user's file to fix, not a verdict
        more = f" (and {len(unreadable) - 1} more unreadable file(s))" if len(unreadable) > 1 else ""
        raise UserError(f"{unreadable[0].unreadable}{more}")
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(Path(r.path).name for r in failed[:3]) + (" ..." if len(failed) > 3 else "")
        raise CheckFailed(f"{len(failed)} of {len(results)} file(s) failed the TensorRT pre-flight check "
                          f"({results[0].table or options.target}): {names}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from cpnet.cli import run_verb

    return run_verb("engines.check", argv)


if __name__ == "__main__":
    sys.exit(main())
