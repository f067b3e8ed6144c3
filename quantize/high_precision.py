"""INT8 Q/DQ inside an FP16 graph: what TensorRT's strongly typed networks need to run the rest in FP16.

    int8 = onnx.load("model.int8.onnx")                 # FP32 graph with INT8 Q/DQ (cpnet int8, any opset >= 13)
    fp16, record = to_fp16(int8, keep_float=["/head/cls/Conv"])
    onnx.save(fp16, "model.int8-fp16.onnx")             # record goes into the manifest

TensorRT builds a Q/DQ file as a strongly typed network: every layer that is not
quantized runs in the type of its tensors, so an FP32 Q/DQ graph runs its Resize,
Sigmoid, ReduceSum, softmax ... in FP32. NVIDIA's recipe (and Model Optimizer's
default ``high_precision_dtype="fp16"``) is INT8 Q/DQ inside an FP16 graph, which
:func:`to_fp16` makes from ``model.int8.onnx``:

Opset 19. QuantizeLinear with float16 input and scale, and DequantizeLinear with a
float16 output, exist from opset 19 (opset 13 allows float32 scales only).
:func:`raise_opset` runs ``onnx.version_converter`` first: it is ONNX's own tool and
rewrites the nodes whose meaning changed instead of trusting that none did (it
converts what cpnet's graphs hold: Q/DQ, Conv, Resize, Pad, ReduceSum/ReduceMean,
MatMul, Concat, Split; the Reduce ops' ``axes`` attribute becomes an input at 18,
Split gets ``num_outputs``; checked in tests/test_high_precision.py and on the
quickstart model, opset 17 -> 19). Where the
converter fails on a graph, the default-domain opset import is raised by hand
instead, which is only correct when no op in the graph changed meaning between its
opset and 19. Per the ONNX operator changelog (Changelog.md, and ``onnx.defs``,
which :func:`changed_ops` reads), the ops whose schema changed in 14..19 either
only gained types, optional inputs or attributes whose defaults keep the old
behaviour (``_SAME_MEANING``), or changed in a way an old node would break, which
is rewritten (``axes`` attribute -> input for Reduce* at 18; ``num_outputs`` for a
Split without a ``split`` input at 18). Any other changed op (RoiAlign's default
``coordinate_transformation_mode`` at 16, recurrent layouts, control flow ...) stops
the conversion with a ValueError: a bump would silently change the network.

Scales. Every Q/DQ scale takes a float16 value (stored as float16 in the FP16 graph):

- weight scales (a DequantizeLinear reading an INT8 initializer, per channel) are
  rounded UP to float16, at least 2**-24 (the smallest positive float16), so that
  ``|w| / s16 <= 127`` still holds and no scale becomes 0, and the INT8 weights are
  quantized again from their dequantized FP32 values: ``q16 = clip(round(q * s32 / s16),
  -127, 127)``, so ``q16 * s16`` is within half a step (``s16 / 2``) of ``q * s32``;
  Below float16's smallest normal (6.1e-5) the float16 grid is coarse (2**-24 steps), so
  rounding up there coarsens the step by up to tens of percent; such channels have
  |w| < 127 * 6.1e-5 = 7.7e-3 (on the quickstart model 502 of 3,208 channels, nearly
  dead ones in the blocks' second convolutions; largest step change 28%). The record
  counts them;
- activation scales are rounded to the nearest float16 (at least 2**-24); those below
  float16's smallest normal (6.1e-5, subnormal: fewer significant bits) are listed;
- zero points stay INT8 0.

FP16. ``onnxruntime.transformers.float16.convert_float_to_float16`` (as in
:mod:`quantize.fp16`) with ``keep_io_types=True`` and ``op_block_list=[]``:
QuantizeLinear/DequantizeLinear are not in its ``DEFAULT_OP_BLOCK_LIST``, so
they are converted like any op: their float scale initializers become float16
(exactly, the values are float16 already), a DequantizeLinear's output and a
QuantizeLinear's input become float16; graph inputs and outputs stay float32
with a Cast at the boundary. Resize's ``scales`` input stays float32 (the
converter's ``ALWAYS_FLOAT_INPUTS``; opset 19 requires it).

``keep_float`` nodes stay FP32 with Casts around them, and so do the Q/DQ nodes
that belong to them (a DequantizeLinear all of whose readers are kept, the
QuantizeLinear feeding only such DequantizeLinears, and a QuantizeLinear reading a
kept node's output), so a kept layer's Q/DQ pattern has no Cast inside it that
would stop TensorRT fusing it. Their scales keep the float16 values but are stored
as float32 (a scale a kept node shares with an FP16 one is duplicated). Cast round
trips between FP32 nodes are removed (:func:`quantize.fp16.clean_casts`).

ONNX Runtime's CPU provider runs the result (it has float16 Q/DQ kernels and inserts
Casts around the FP16 ops it lacks), which measures accuracy; the speed is TensorRT's.
Measure it with ``disabled_optimizers=ORT_DISABLED_OPTIMIZERS`` (as ``cpnet.runtime.ort.make_session``
does for every session): ORT's graph transformer
WeightBiasQuantization (level basic, ORT 1.32) turns a Conv's float bias into
``DequantizeLinear(Cast<int32>(Round(bias / (s_x * s_w))))`` and computes the quotient in the
bias's type; in float16 it overflows to inf wherever |bias| > 65504 * s_x * s_w (common: s_x * s_w
is ~1e-5), and the Conv gets a garbage bias. On cpnet's quickstart model that made 1.8% of pixels
disagree with the FP32 Q/DQ file instead of 0.1%. TensorRT does not run this transformer.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Iterable

import numpy as np

# cpnet.runtime.ort.make_session, every session's factory, runs without these (see the module docstring)
from cpnet.runtime.ort import ORT_DISABLED_OPTIMIZERS  # noqa: F401

TARGET_OPSET = 19
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)   # 2**-24, 5.96e-08
FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)           # 2**-14, 6.10e-05
FP16_MAX = float(np.finfo(np.float16).max)                   # 65504
QMAX = 127
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_NOT_COMPUTE = {*_QDQ, "Cast", "Constant", "Identity", "Shape", "Size"}

# Ops whose schema changed between opset 14 and 19 in ways that keep an older node's meaning:
# new types, or a new optional input/attribute whose default is the old behaviour (ONNX Changelog.md).
_SAME_MEANING = {
    "Add": "14: int8/uint8/int16/uint16 types", "Sub": "14: types", "Mul": "14: types", "Div": "14: types",
    "Relu": "14: int types", "Pow": "15: bfloat16", "LeakyRelu": "16: bfloat16", "PRelu": "16: bfloat16",
    "Where": "16: bfloat16", "GreaterOrEqual": "16: bfloat16", "LessOrEqual": "16: bfloat16",
    "BatchNormalization": "14: training_mode (default 0, inference), 15: types",
    "Reshape": "14: allowzero (default 0), 19: types", "Identity": "14/16/19: types",
    "Shape": "15: start/end (default whole shape), 19: types", "Size": "19: types",
    "CastLike": "15: new op, 19: saturate (float8 only)", "Cast": "19: float8 types, saturate (float8 only)",
    "Constant": "19: types", "Equal": "19: string type",
    "Pad": "18: optional axes input (default all), 19: wrap mode",
    "Resize": "18: antialias/axes/keep_aspect_ratio_policy (defaults: old behaviour), 19: half_pixel_symmetric",
    "AveragePool": "19: dilations (default 1)", "LpPool": "18: ceil_mode (default 0)",
    "ScatterElements": "16/18: reduction values (default none)", "ScatterND": "16/18: reduction values (default none)",
    "QuantizeLinear": "19: float16/bfloat16 scales, float8 types, saturate (float8 only)",
    "DequantizeLinear": "19: float16/bfloat16 scales, float8 types",
}
# Changed at 18 in a way an older node breaks: rewritten by _rewrite_for_18.
_AXES_TO_INPUT_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                     "ReduceMin", "ReduceProd", "ReduceSumSquare")
_REWRITTEN = {**{op: "18: axes attribute -> input" for op in _AXES_TO_INPUT_18},
              "Split": "18: num_outputs needed without a split input"}


# --------------------------------------------------------------------------- opset


def opset_of(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def changed_ops(model, target: int = TARGET_OPSET) -> dict[str, int]:
    """op_type -> the opset it last changed in, for default-domain ops of ``model`` whose schema changed
    between the model's opset and ``target`` (read from ``onnx.defs``)."""
    import onnx

    old = opset_of(model)
    out = {}
    for op in sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}):
        since = onnx.defs.get_schema(op, target, "").since_version
        if since > old:
            out[op] = since
    return out


def _rewrite_for_18(model) -> None:
    from onnx import helper, numpy_helper

    for i, n in enumerate(model.graph.node):
        if n.op_type in _AXES_TO_INPUT_18:
            axes = next((a for a in n.attribute if a.name == "axes"), None)
            if axes is not None:
                name = f"{n.name or n.op_type + str(i)}_axes"
                model.graph.initializer.append(numpy_helper.from_array(np.asarray(axes.ints, np.int64), name))
                n.attribute.remove(axes)
                del n.input[1:]
                n.input.append(name)
        elif n.op_type == "Split" and (len(n.input) < 2 or not n.input[1]):
            if not any(a.name == "num_outputs" for a in n.attribute):
                n.attribute.append(helper.make_attribute("num_outputs", len(n.output)))


def raise_opset(model, target: int = TARGET_OPSET) -> tuple[object, str]:
    """(``model`` at default-domain opset ``target``, how): onnx.version_converter, or where it fails,
    the opset import raised by hand when every changed op keeps its meaning (see the module docstring)."""
    import onnx
    from onnx import helper, version_converter

    old = opset_of(model)
    if old >= target:
        return model, f"unchanged (opset {old})"
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
        return converted, "onnx.version_converter"
    except Exception as e:  # noqa: BLE001 - any converter failure falls back to the checked bump
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    changed = changed_ops(model, target)
    bad = {op: v for op, v in changed.items() if op not in _SAME_MEANING and op not in _REWRITTEN}
    if bad:
        raise ValueError(f"onnx.version_converter failed ({reason}) and these ops changed meaning between opset "
                         f"{old} and {target}: {', '.join(f'{op} ({v})' for op, v in bad.items())}; cannot raise "
                         f"the opset safely")
    out = copy.deepcopy(model)
    if old < 18:
        _rewrite_for_18(out)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    out.ir_version = max(out.ir_version, helper.find_min_ir_version_for(list(out.opset_import)))
    onnx.checker.check_model(out)
    how = f"opset_import raised by hand (version_converter failed: {reason})"
    if changed:
        how += "; changed ops: " + ", ".join(f"{op} ({_SAME_MEANING.get(op) or _REWRITTEN[op]})" for op in changed)
    return out, how


# --------------------------------------------------------------------------- scales


def fp16_up(s: np.ndarray) -> np.ndarray:
    """The smallest float16 >= s (elementwise, s > 0), at least 2**-24; float32 array of float16 values."""
    s = np.asarray(s, np.float64)
    # ndmin=1: a per-tensor weight scale (a rank-3+ MatMul weight) is 0-d, and a 0-d result is a numpy scalar
    h = np.array(np.maximum(s.astype(np.float16), np.float16(FP16_TINY)), dtype=np.float16, ndmin=1)
    low = h.astype(np.float64) < s.reshape(h.shape)
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h.reshape(s.shape).astype(np.float32)


def fp16_nearest(s: np.ndarray) -> np.ndarray:
    """s rounded to the nearest float16, at least 2**-24; float32 array of float16 values."""
    return np.maximum(np.asarray(s, np.float32).astype(np.float16), np.float16(FP16_TINY)).astype(np.float32)


def requantize(q: np.ndarray, s32: np.ndarray, s16: np.ndarray, axis: int) -> np.ndarray:
    """INT8 weights re-quantized to scale ``s16`` from their dequantized values ``q * s32`` (per channel on
    ``axis``)."""
    shape = [1] * q.ndim
    if np.size(s32) > 1:
        shape[axis] = -1
    w = q.astype(np.float64) * np.asarray(s32, np.float64).reshape(shape)
    return np.clip(np.rint(w / np.asarray(s16, np.float64).reshape(shape)), -QMAX, QMAX).astype(np.int8)


def _round_scales(model) -> dict:
    """Give every Q/DQ scale a float16 value in place (weights up, re-quantized; activations nearest)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    weight_scales, act_scales = {}, {}
    for n in model.graph.node:
        if n.op_type not in _QDQ:
            continue
        if len(n.input) < 2 or n.input[1] not in inits:
            raise ValueError(f"{n.name or n.op_type}: scale {n.input[1] if len(n.input) > 1 else ''!r} is not an "
                             f"initializer")
        w = inits.get(n.input[0])
        if n.op_type == "DequantizeLinear" and w is not None and w.data_type == TensorProto.INT8:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            weight_scales.setdefault(n.input[1], []).append((w.name, axis % max(len(w.dims), 1)))
        else:
            act_scales.setdefault(n.input[1], n.name)

    def put(name, values):
        t = inits[name]
        t.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(t).dtype), name))

    w_change, a_change, changed_q, total_q, max_dq, subnormal_w = 0.0, 0.0, 0, 0, 0, 0
    clamped, rounding = 0, 0.0   # scales below 2**-25 raised to 2**-24; the largest change of the others
    requantized = set()
    for sname, users in weight_scales.items():
        s32 = numpy_helper.to_array(inits[sname]).astype(np.float32)
        if not (np.all(np.isfinite(s32)) and np.all(s32 > 0)):
            raise ValueError(f"weight scale {sname} is not positive and finite")
        if s32.max() > FP16_MAX:
            raise ValueError(f"weight scale {sname} ({s32.max():g}) is beyond float16's range")
        s16 = fp16_up(s32)
        for wname, axis in users:
            if wname in requantized:
                continue
            requantized.add(wname)
            q = numpy_helper.to_array(inits[wname])
            q16 = requantize(q, s32, s16, axis)
            changed_q += int(np.count_nonzero(q16 != q))
            total_q += q.size
            max_dq = max(max_dq, int(np.abs(q16.astype(np.int16) - q).max(initial=0)))
            put(wname, q16)
        rel = np.abs(s16.astype(np.float64) - s32) / s32
        w_change = max(w_change, float(rel.max()))
        clamped += int(np.count_nonzero(s32 < FP16_TINY / 2))
        rounding = max(rounding, float(rel[s32 >= FP16_TINY / 2].max(initial=0.0)))
        subnormal_w += int(np.count_nonzero(s16 < FP16_MIN_NORMAL))
        put(sname, s16)
    below = {}
    for sname in act_scales:
        if sname in weight_scales:
            continue
        s32 = numpy_helper.to_array(inits[sname]).astype(np.float32)
        if not (np.all(np.isfinite(s32)) and np.all(s32 > 0)):
            raise ValueError(f"scale {sname} is not positive and finite")
        if s32.max() * QMAX > FP16_MAX:
            raise ValueError(f"activation scale {sname} ({s32.max():g}): its range exceeds float16's")
        s16 = fp16_nearest(s32)
        rel = np.abs(s16.astype(np.float64) - s32) / s32
        a_change = max(a_change, float(rel.max()))
        clamped += int(np.count_nonzero(s32 < FP16_TINY / 2))
        rounding = max(rounding, float(rel[s32 >= FP16_TINY / 2].max(initial=0.0)))
        if np.any(s32 < FP16_MIN_NORMAL):
            below[sname] = float(s32.min())
        put(sname, s16)
    return {
        "max_rel_change": max(w_change, a_change),
        "max_rel_change_rounding": rounding,
        "clamped_to_fp16_smallest": clamped,
        "weight": {"scales": len(weight_scales), "rounding": "up", "max_rel_change": w_change,
                   "subnormal_fp16_values": subnormal_w,
                   "requantized": {"tensors": len(requantized), "values": total_q, "values_changed": changed_q,
                                   "max_abs_q_change": max_dq}},
        "activation": {"scales": len(act_scales) - len(set(act_scales) & set(weight_scales)),
                       "rounding": "nearest", "max_rel_change": a_change,
                       "below_fp16_min_normal": dict(sorted(below.items()))},
    }


# --------------------------------------------------------------------------- FP32 islands


def _fp32_nodes(model, keep_float: Iterable[str]) -> dict[str, str]:
    """name -> reason of every node left in FP32: ``keep_float`` and the Q/DQ that belong to them."""
    keep = list(dict.fromkeys(keep_float))
    by_name = {n.name: n for n in model.graph.node}
    unknown = [k for k in keep if k not in by_name]
    if unknown:
        raise ValueError(f"keep_float names no node of the graph: {', '.join(unknown)}")
    reasons = {k: "keep_float" for k in keep}
    readers: dict[str, list] = {}
    producer = {}
    for n in model.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
        for o in n.output:
            producer[o] = n
    graph_out = {o.name for o in model.graph.output}
    changed = True
    while changed:
        changed = False
        for n in model.graph.node:
            if n.name in reasons or n.op_type not in _QDQ:
                continue
            users = [r for o in n.output for r in readers.get(o, [])]
            owner = None
            if users and all(u.name in reasons for u in users) and not any(o in graph_out for o in n.output):
                owner = users[0].name
            elif n.op_type == "QuantizeLinear" and producer.get(n.input[0]) is not None \
                    and producer[n.input[0]].name in reasons and producer[n.input[0]].op_type not in _QDQ:
                owner = producer[n.input[0]].name
            if owner is not None:
                while reasons.get(owner, "keep_float") != "keep_float":   # name the kept layer, not a Q/DQ
                    owner = reasons[owner].rsplit(" ", 1)[-1]
                reasons[n.name] = f"{n.op_type} of kept node {owner}"
                changed = True
    return reasons


def _split_shared_initializers(model, fp32: set) -> None:
    """Give FP32 nodes their own copy of a float initializer that FP16 nodes read too."""
    from onnx import TensorProto

    floats = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    by = {}
    for n in model.graph.node:
        for x in n.input:
            if x in floats:
                by.setdefault(x, set()).add(n.name in fp32)
    for name, kinds in by.items():
        if kinds != {True, False}:
            continue
        copy_ = copy.deepcopy(floats[name])
        copy_.name = f"{name}_fp32"
        model.graph.initializer.append(copy_)
        for n in model.graph.node:
            if n.name in fp32:
                for i, x in enumerate(n.input):
                    if x == name:
                        n.input[i] = copy_.name


def _restore_names(model) -> None:
    """The converter renames an FP32 node's output X to X_cast_to_fp16 (and casts it back to X for FP16 readers);
    where no Cast to X is left (clean_casts removed it), the FP32 tensor gets its name X back."""
    suffix = "_cast_to_fp16"
    g = model.graph
    taken = {o for n in g.node for o in n.output} | {t.name for t in (*g.input, *g.output, *g.initializer)}
    rename = {o: o[:-len(suffix)] for n in g.node for o in n.output
              if o.endswith(suffix) and o[:-len(suffix)] not in taken}
    for n in g.node:
        for field in (n.input, n.output):
            for i, x in enumerate(field):
                field[i] = rename.get(x, x)
    for vi in g.value_info:
        vi.name = rename.get(vi.name, vi.name)


def _precisions(model) -> tuple[dict[str, int], list[str]]:
    """({"fp16": n, "fp32": n} over compute nodes, names of the FP32 ones), from inferred output types."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    counts, fp32 = {"fp16": 0, "fp32": 0}, []
    for n in model.graph.node:
        if n.op_type in _NOT_COMPUTE:
            continue
        t = types.get(n.output[0]) if n.output else None
        if t == TensorProto.FLOAT16:
            counts["fp16"] += 1
        elif t == TensorProto.FLOAT:
            counts["fp32"] += 1
            fp32.append(n.name)
    return counts, fp32


# --------------------------------------------------------------------------- the conversion


def to_fp16(model, keep_float: Iterable[str] = ()) -> tuple[object, dict]:
    """The FP32 Q/DQ ``model`` (default opset >= 13) as INT8 Q/DQ in an FP16 graph at opset 19, and a record.

    ``model`` is not modified. Graph inputs and outputs stay float32; the nodes named in ``keep_float``
    (and their Q/DQ) stay FP32. The record (JSON-able, for the manifest): ``opset`` (before, after, method),
    ``nodes`` (compute nodes in FP16 and FP32, Q/DQ and Cast counts), ``fp32_nodes`` (name -> reason),
    ``scales`` (weight/activation counts, largest relative change of any scale, re-quantized weights,
    activation scales below float16's min normal) and ``method``. Raises ValueError for an opset below 13,
    an unknown ``keep_float`` name, a non-constant or out-of-range scale, or an opset it cannot raise.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from cpnet.runtime.graph import name_nodes

    from .fp16 import clean_casts, topological_sort

    before = opset_of(model)
    if before < 13:
        raise ValueError(f"opset {before} < 13: per-channel DequantizeLinear needs 13 (cpnet int8 makes >= 13)")
    m = copy.deepcopy(model)
    name_nodes(m)
    m, how = raise_opset(m, TARGET_OPSET)
    name_nodes(m)          # the converter's Constant nodes have no names
    scales = _round_scales(m)
    reasons = _fp32_nodes(m, keep_float)
    _split_shared_initializers(m, set(reasons))
    with contextlib.redirect_stdout(io.StringIO()):
        out = convert_float_to_float16(m, keep_io_types=True, node_block_list=sorted(reasons), op_block_list=[],
                                       disable_shape_infer=False)
    removed = clean_casts(out)
    _restore_names(out)
    topological_sort(out.graph)
    onnx.checker.check_model(out)
    counts, fp32 = _precisions(out)
    for name in fp32:
        reasons.setdefault(name, "FP32 after conversion (not chosen; check the graph)")
    out.producer_name = "cpnet.quantize.high_precision"
    record = {
        "opset": {"before": before, "after": opset_of(out), "method": how},
        "nodes": {**counts, "qdq": sum(n.op_type in _QDQ for n in out.graph.node),
                  "casts": sum(n.op_type == "Cast" for n in out.graph.node), "cast_round_trips_removed": removed},
        "fp32_nodes": dict(sorted(reasons.items())),
        "scales": scales,
        "method": ("INT8 Q/DQ in FP16: scales to float16 (weights rounded up and re-quantized, activations "
                   "nearest), onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True, "
                   "op_block_list=[]) with keep_float and their Q/DQ in the node block list"),
    }
    return out, record
