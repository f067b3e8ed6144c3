"""Pre-flight check of an ONNX file against TensorRT's rules; runs anywhere (onnx only, no TensorRT).

    python -m engines.check model.onnx model.fp16.onnx model.int8.onnx [--target trt10|trt11|dla] [--strict-dla]

Checks, each reported as one line naming the node:

- opset of the default domain within what the target's ONNX parser documents;
- every operator against TensorRT's ONNX operator table (``engines/trt_ops.py``),
  custom-domain operators (they would need a TensorRT plugin), and the table's
  restrictions that can be read off the graph (Resize modes, pooling dilations);
- Q/DQ: INT8 quantized type, zero point 0 (TensorRT is symmetric-only), scales
  constant, positive and finite, per-channel axis valid for the tensor's shape and
  per-channel only on weights;
- static input shapes: a symbolic dimension is an error for DLA and a warning
  otherwise (TensorRT needs an optimization profile for it);
- for ``--target dla``: DLA's layer restrictions; a node DLA cannot run "falls
  back to GPU" (warning; with ``--strict-dla`` an error).

Exit status 1 when any file has an error; warnings do not fail. Otherwise one "OK" line per file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

if __package__ in (None, ""):  # allow `python engines/check.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines import trt_ops  # noqa: E402

TARGETS = ("trt10", "trt11", "dla")
_DEFAULT_DOMAINS = ("", "ai.onnx")


class CheckError(Exception):
    """The file could not be read as ONNX (shown as one line)."""


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


@dataclass
class CheckResult:
    path: str
    target: str
    opset: int | None
    num_nodes: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        tail = f"target {self.target}, opset {self.opset}, {self.num_nodes} nodes"
        if self.ok:
            w = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
            return f"OK: {self.path} ({tail}{w})"
        return f"FAILED: {self.path}: {len(self.errors)} error(s), {len(self.warnings)} warning(s) ({tail})"

    def lines(self) -> list[str]:
        return [p.format(self.path) for p in self.problems] + [self.summary()]


# ---------------------------------------------------------------------------------------------
# graph helpers


class _Graph:
    """Constants, shapes and producers of one ONNX model (including nested subgraphs)."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        self.model = model
        self.consts: dict[str, np.ndarray] = {}
        self.shapes: dict[str, list] = {}
        self.types: dict[str, int] = {}
        self.producer: dict[str, object] = {}
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

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

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


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _dtype_name(elem_type: int | None) -> str:
    if elem_type is None:
        return "unknown"
    try:
        import onnx

        return onnx.TensorProto.DataType.Name(elem_type)
    except Exception:
        return str(elem_type)


# ---------------------------------------------------------------------------------------------
# individual checks


def _check_opset(model, target: str) -> tuple[int | None, list[Problem]]:
    problems = []
    lo, documented, hard = trt_ops.OPSET_BOUNDS[target]
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
        problems.append(Problem("error", f"opset {opset} is above {hard}, the newest the {target} parser "
                                         f"documents; re-export with opset_version=17"))
    elif opset > documented:
        problems.append(Problem("warning", f"opset {opset} is above {documented}: newer TensorRT 10 releases "
                                           f"parse it (10.15 documents <= 24) but JetPack 6's TensorRT 10.3 may not; "
                                           f"opset 17 is the safe choice"))
    return opset, problems


def _check_op(label: str, node, g: _Graph) -> list[Problem]:
    op, domain = node.op_type, node.domain
    P = lambda level, msg: Problem(level, msg, label, op)  # noqa: E731
    if domain not in _DEFAULT_DOMAINS:
        return [P("error", f"custom-domain operator '{domain}::{op}': TensorRT's ONNX parser has no importer "
                           f"for it (it would need a TensorRT plugin); export with standard ONNX operators")]
    support = trt_ops.parser_support(op)
    if support == "N":
        return [P("error", "not supported by TensorRT's ONNX parser (onnx-tensorrt operators.md)")]
    if support == "?":
        return [P("error", "not in TensorRT's ONNX operator table (onnx-tensorrt operators.md); "
                           "the parser will reject it")]
    a = _attrs(node)
    out = []
    if op == "Resize":
        mode = _s(a.get("mode", "nearest"))
        ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
        if mode not in trt_ops.RESIZE_MODES:
            out.append(P("error", f"Resize mode '{mode}' is not supported (TensorRT: nearest, linear)"))
        if ctm not in trt_ops.RESIZE_TRANSFORMS:
            out.append(P("error", f"Resize coordinate_transformation_mode '{ctm}' is not supported"))
        if int(a.get("antialias", 0)):
            out.append(P("error", "Resize antialias is not supported by TensorRT"))
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        dil = a.get("dilations")
        if dil and any(int(d) != 1 for d in dil):
            out.append(P("error", f"{op} dilations {list(dil)}: TensorRT needs them empty or all ones"))
        k = a.get("kernel_shape")
        if k is not None and len(k) not in (2, 3) and op != "LpPool":
            out.append(P("error", f"{op} over {len(k)} spatial dims: TensorRT pools in 2D or 3D only"))
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            out.append(P("error", "MaxPool Indices output is not supported by TensorRT"))
    elif op == "Cast" and int(a.get("to", 1)) == 11:  # DOUBLE
        out.append(P("warning", "cast to DOUBLE: TensorRT computes it in FLOAT (clamped to +-FLT_MAX)"))
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


def _check_qdq(label: str, node, g: _Graph) -> list[Problem]:
    import onnx

    op = node.op_type
    P = lambda level, msg: Problem(level, msg, label, op)  # noqa: E731
    out: list[Problem] = []
    a = _attrs(node)
    x = node.input[0]
    scale_name = node.input[1] if len(node.input) > 1 else ""
    zp_name = node.input[2] if len(node.input) > 2 else ""
    fix = "make the TensorRT flavour: python -m quantize int8 ... --flavour tensorrt"

    # quantized type and zero point
    if zp_name:
        zp = g.const(zp_name)
        if zp is None:
            out.append(P("error", f"zero point '{zp_name}' is computed at run time; TensorRT needs a constant 0"))
            qtype = g.types.get(zp_name)
        else:
            qtype = _qtype_of(zp_name, g)
            if zp.size and np.any(zp.astype(np.int64) != 0):
                nz = zp.reshape(-1)[np.flatnonzero(zp.reshape(-1).astype(np.int64) != 0)[0]]
                out.append(P("error", f"zero point {int(nz)} (asymmetric): TensorRT's parser accepts only "
                                      f"symmetric Q/DQ (zero point 0); {fix}"))
    elif op == "QuantizeLinear":
        qtype = int(a.get("output_dtype", 0)) or onnx.TensorProto.UINT8  # ONNX default without a zero point
    else:
        qtype = _qtype_of(x, g)
    if qtype is not None and qtype != onnx.TensorProto.INT8:
        if qtype == onnx.TensorProto.INT32:
            out.append(P("error", "INT32 DequantizeLinear (a quantized bias): TensorRT's parser has none; keep "
                                  f"biases in float (QuantizeBias=False); {fix}"))
        elif qtype == onnx.TensorProto.UINT8:
            out.append(P("error", f"quantized type UINT8 (the cpu flavour's unsigned activations): TensorRT "
                                  f"needs INT8 with zero point 0; {fix}"))
        else:
            out.append(P("error", f"quantized type {_dtype_name(qtype)}: this project's TensorRT path expects INT8 "
                                  f"(FP8/INT4/FP4 need other TensorRT support)"))

    # scales
    scale = g.const(scale_name)
    if scale is None:
        out.append(P("error", f"scale '{scale_name}' is computed at run time; TensorRT needs constant scales"))
        return out
    s = scale.astype(np.float64).reshape(-1)
    if s.size == 0:
        out.append(P("error", "empty scale tensor"))
        return out
    if not np.all(np.isfinite(s)):
        out.append(P("error", f"scale has non-finite values ({int(np.sum(~np.isfinite(s)))} of {s.size})"))
    elif np.any(s <= 0):
        out.append(P("error", f"scale has values <= 0 (min {s.min():.3g}); scales must be positive"))
    if zp_name and g.const(zp_name) is not None and g.const(zp_name).size not in (s.size,):
        out.append(P("error", f"zero point has {g.const(zp_name).size} values but scale has {s.size}"))

    # per-tensor vs per-channel
    if int(a.get("block_size", 0)):
        out.append(P("error", "blocked quantization (block_size): TensorRT supports it for INT4 weights only"))
    elif s.size > 1:  # per-channel (a one-element scale is per-tensor)
        axis = int(a.get("axis", 1))
        rank = g.rank(x)
        shape = g.shape(x)
        if rank is None:
            out.append(P("warning", "per-channel scale on a tensor of unknown rank; axis could not be verified"))
        else:
            if not -rank <= axis < rank:
                out.append(P("error", f"axis {axis} is out of range for a rank-{rank} tensor"))
            else:
                ax = axis % rank
                dim = shape[ax] if shape is not None else None
                if isinstance(dim, int) and dim > 0 and dim != s.size:
                    out.append(P("error", f"per-channel scale has {s.size} values but axis {axis} of '{x}' has "
                                          f"{dim} channels"))
        if not g.is_weight(x):
            out.append(P("error", "per-channel quantization of an activation: TensorRT quantizes activations "
                                  "per tensor and only weights per channel"))
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
                                              f"TensorRT needs an optimization profile (build_engine makes one from "
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


# ---------------------------------------------------------------------------------------------
# driver


def load(path: "str | Path"):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CheckError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckError(f"{path}: not a readable ONNX file ({first[:160]})") from None


def check_model(model, target: str = "trt10", strict_dla: bool = False, path: str = "<model>",
                assume_fp16: bool = False) -> CheckResult:
    """Check a loaded onnx.ModelProto for ``target`` (trt10 | trt11 | dla).

    ``assume_fp16``: the build will set TensorRT 10's FP16 flag (``--fp16-flag``), so an FP32
    graph is not a DLA precision problem.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    g = _Graph(model)
    opset, problems = _check_opset(model, target)
    problems += _check_inputs(model, g, target)
    if target == "dla":
        problems += _check_dla_precision(model, g, strict_dla, assume_fp16)
    for label, node in g.nodes:
        problems += _check_op(label, node, g)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in _DEFAULT_DOMAINS:
            problems += _check_qdq(label, node, g)
        if target == "dla" and node.domain in _DEFAULT_DOMAINS:
            problems += _dla_node(label, node, g, strict_dla)
    return CheckResult(path=path, target=target, opset=opset, num_nodes=len(g.nodes), problems=problems)


def _dla_node(label: str, node, g: _Graph, strict: bool) -> list[Problem]:
    op = node.op_type
    if op in trt_ops.DLA_TRANSPARENT:
        return []
    if op in trt_ops.DLA_OPS:
        reasons = _dla_reasons(node, g)
    elif op in trt_ops.DLA_LIMITED:
        reasons = [trt_ops.DLA_LIMITED[op] + " (may run on DLA; check the build log)"]
    else:
        reasons = [f"DLA has no layer for {op}"]
    if not reasons:
        return []
    level = "error" if strict else "warning"
    verb = "not DLA-able" if strict else "falls back to GPU"
    return [Problem(level, f"{verb}: {'; '.join(reasons)}", label, op)]


def check_file(path: "str | Path", target: str = "trt10", strict_dla: bool = False,
               assume_fp16: bool = False) -> CheckResult:
    return check_model(load(path), target=target, strict_dla=strict_dla, path=str(path), assume_fp16=assume_fp16)


def run(paths: Iterable["str | Path"], target: str = "trt10", strict_dla: bool = False,
        out=None, assume_fp16: bool = False) -> int:
    """Check files, print one line per problem and a summary per file; return the exit status."""
    out = out or sys.stdout
    status = 0
    for p in paths:
        try:
            res = check_file(p, target=target, strict_dla=strict_dla, assume_fp16=assume_fp16)
        except CheckError as e:
            print(f"error: {e}", file=out)
            status = 1
            continue
        for line in res.lines():
            print(line, file=out)
        if not res.ok:
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.check", description=__doc__.split("\n\n")[0],
                                 epilog="trt11: " + trt_ops.TARGET_NOTES["trt11"] + " dla: TensorRT 11.0-11.3 have no "
                                        "DLA; use JetPack 6's TensorRT 10 (or 11.4.1+ on AGX Orin).")
    ap.add_argument("onnx", nargs="+", help="ONNX file(s): model.onnx, model.fp16.onnx, model.int8.onnx")
    ap.add_argument("--target", choices=TARGETS, default="trt10",
                    help="trt10 (desktop or JetPack 6), trt11, or dla (Jetson DLA with GPU fallback); default trt10")
    ap.add_argument("--strict-dla", action="store_true",
                    help="with --target dla: a node DLA cannot run is an error instead of a GPU-fallback warning")
    ap.add_argument("--fp16-flag", action="store_true",
                    help="the build will use TensorRT 10's FP16 flag (DLA: an FP32 file is then not a problem)")
    args = ap.parse_args(argv)
    return run(args.onnx, target=args.target, strict_dla=args.strict_dla, assume_fp16=args.fp16_flag)


if __name__ == "__main__":
    sys.exit(main())
