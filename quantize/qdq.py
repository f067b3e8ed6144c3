"""The Q/DQ core of INT8: flavours, ORT pre-processing, inserting Q/DQ from given ranges, checking the result.

    pre = preprocess_model(parent_path, workdir / "pre.onnx")      # constant folding, shapes, names, opset >= 13
    build(pre, out_path, ranges, "tensorrt", exclude=["/head/classifier/Conv"])
    check_qdq(onnx.load(out_path), "tensorrt")                     # [] when the file keeps its flavour's rules

:func:`build` runs ``onnxruntime.quantization.quantize_static`` in ``QuantFormat.QDQ``
with per-channel weights, on ranges decided beforehand (per activation tensor, from
:mod:`quantize.calibrate`), so no image goes through the model here. Two flavours
(see docs/architecture.md for where precision lives in the pipeline):

``tensorrt`` (default; ``model.int8.onnx``)
    What TensorRT's explicit-quantization path takes, placed as TensorRT fuses it.
    Format: symmetric INT8 everywhere (activations and weights ``int8`` with zero
    point 0, scale = amax/127), per-channel weight scales on the output-channel
    axis (0 for Conv and Gemm with transB, 1 for ConvTranspose and Gemm without,
    the last for a MatMul's constant 2-D B), positive float32 scales, opset >= 13, biases float (TensorRT's
    parser has no INT32 DequantizeLinear), one Q/DQ pair per consumer.
    The format and placement rules are TensorRT's, written once in
    :mod:`cpnet.runtime.qdq_rules` (with the sections of NVIDIA's guide they
    come from), which ``cpnet check`` lints every file against too; a MatMul
    weight of rank 3 or more is quantized per tensor (NVIDIA documents
    per-channel MatMul weights for 2-D matrices only).
    Placement (:func:`tensorrt_placement`), NVIDIA's "Q/DQ Layer-Placement
    Recommendations", with NVIDIA's reasons:

    1. Quantize every input of the weighted layers (Conv, ConvTranspose, Gemm,
       MatMul): activations per tensor, weights per output channel. A weighted
       layer with INT8 inputs runs INT8 kernels; its following ReLU and the
       quantization of its output for the next weighted layer fuse into it.
    2. Do not quantize the outputs of weighted layers (no pair between a Conv and
       its ReLU, Add or Resize): such a pair stands between the convolution and
       the ops TensorRT would fuse into it, so it runs as a separate
       quantize/dequantize and costs speed for no INT8 compute.
    3. Quantize the residual input of a skip connection: for an Add one of whose
       inputs comes straight from a quantized weighted layer (and feeds nothing
       else), the *other* input gets a pair, so TensorRT fuses
       Conv + Add (+ ReLU) into one INT8 convolution. When both inputs come from
       weighted layers (a downsampling block, the aggregation module's two
       branches), the one computed later is fused and the earlier one quantized.
    4. Nothing else: MaxPool, Concat, Reshape and the like pass INT8 through, since
       TensorRT moves a Q/DQ pair across them; AveragePool does not commute (TensorRT
       fuses DQ -> AveragePool -> Q instead), so a weighted layer after it gets its
       pair after it, like after any float op; Sigmoid, ReduceSum, Sub, Resize and
       the rest stay in the graph's float precision.

    :func:`build` inserts these pairs itself (ONNX Runtime's quantizer puts a pair
    on every input *and output* of each op type it is given, rule 2's opposite).
``cpu`` (``model.int8-cpu.onnx``)
    ONNX Runtime's fast path on x86: unsigned asymmetric activations
    (``QUInt8``) with signed symmetric per-channel weights (U8S8), which MLAS
    runs with VNNI; ``reduce_range`` only on x86 CPUs without VNNI (ORT's
    guidance: 7-bit weights avoid u8*s8 int16 saturation there). Every op ORT
    can quantize is, except the final Resize. See ``CPU_FORMAT`` for the
    QDQ-vs-QOperator measurement.

Nodes kept in float (``exclude``, :func:`float_group`): the node and a ReLU that is
its only consumer. In the tensorrt flavour they simply get no pairs (nor does an
Add's residual input when the layer it would fuse into is kept float). In the cpu
flavour they are fed the float tensors they read before quantization (the Q/DQ
their producer put on them, including the one before a producing ReLU, no longer
reach them; see :func:`_float_inputs`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from cpnet.runtime import UserError
from cpnet.runtime import qdq_rules as rules
from cpnet.runtime.files import scratch_dir

FLAVOURS = ("tensorrt", "cpu")

# Nodes ranked by sensitivity and eligible for --keep-float auto: the compute-heavy ones, the layers whose inputs
# the tensorrt flavour quantizes (rule 1 of the module docstring).
SENSITIVE_OP_TYPES = rules.WEIGHTED_OP_TYPES

# CPU flavour. Measured on the project's 2-core AMD EPYC (Zen 5, AVX512-VNNI), ORT 1.32, edge_r18_256
# (1x3x256x256, 2 threads, median of 30): QDQ 17.1 ms, QOperator 17.0 ms -- the same within noise,
# since ORT fuses QDQ into QLinearConv / QLinearMatMul / QLinearAdd at session creation. QDQ is kept:
# ORT recommends it for CPUs, it is standard ONNX and is what sensitivity / keep-float edit.
# Every op ORT quantizes except Resize: the final logit upsampling stays float (quantizing its
# output to uint8 bought no speed, 17.3 vs 17.1 ms, and cost output precision).
CPU_FORMAT = "QDQ"
CPU_EXCLUDED_OP_TYPES = ("Resize",)


def _cpu_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - set(CPU_EXCLUDED_OP_TYPES))


def has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (u8*s8 dot products without int16 saturation)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return True  # not Linux/x86: assume a modern CPU (ORT's ARM advice is also reduce_range=False)
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def flavour_options(flavour: str) -> dict:
    """quantize_static arguments for a flavour (see the module docstring)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    if flavour == "tensorrt":  # what build() does itself (tensorrt_placement), in quantize_static's terms
        return {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "reduce_range": False,
            "op_types_to_quantize": list(rules.WEIGHTED_OP_TYPES),
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "DedicatedQDQPair": True,
                "Placement": "TensorRT fusion rules: inputs of weighted layers, residual Add inputs, no outputs",
            },
        }
    if flavour == "cpu":
        return {
            "quant_format": QuantFormat.QDQ if CPU_FORMAT == "QDQ" else QuantFormat.QOperator,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "reduce_range": not has_vnni(),
            "op_types_to_quantize": _cpu_op_types(),
            "extra_options": {
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
            },
        }
    raise UserError(f"--flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")


def options_record(opts: dict) -> dict:
    """A flavour's quantize_static arguments as the manifest records them."""
    return {
        "format": str(opts["quant_format"]),
        "activation_type": str(opts["activation_type"]),
        "weight_type": str(opts["weight_type"]),
        "per_channel": bool(opts["per_channel"]),
        "reduce_range": bool(opts["reduce_range"]),
        "op_types": opts["op_types_to_quantize"],
        "extra_options": opts["extra_options"],
    }


# --- pre-processing the parent ------------------------------------------------------------------

@contextlib.contextmanager
def _ort_quantization(scratch: Path):
    """Run onnxruntime.quantization quietly (it prints and logs pre-processing advice per call), with its own
    temporary folders made inside ``scratch`` (so a killed process's are swept with it, see scratch_dir)."""
    logger = logging.getLogger()
    old_level, old_tempdir = logger.level, tempfile.tempdir
    logger.setLevel(logging.ERROR)
    tempfile.tempdir = str(scratch)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(old_level)
        tempfile.tempdir = old_tempdir


def preprocess_model(model_path: Path, out_path: Path) -> Path:
    """ORT's quantization pre-processing (constant folding, shape inference), with fallbacks.

    Symbolic shape inference fails on some exporter graphs (Reshape with computed shapes);
    the inputs are static, so ONNX shape inference suffices then.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for kwargs in ({"skip_symbolic_shape": False}, {"skip_symbolic_shape": True}):
        try:
            with scratch_dir("qdq") as tmp, _ort_quantization(tmp):
                quant_pre_process(str(model_path), str(out_path), **kwargs)
            break
        except Exception:
            continue
    else:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
        onnx.save(model, str(out_path))
    model = onnx.load(str(out_path))
    changed = False
    seen = set()
    for i, node in enumerate(model.graph.node):   # the quantizer addresses nodes by name
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
            changed = True
        seen.add(node.name)
    if opset(model) < 13:  # per-channel DequantizeLinear needs opset 13
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
        changed = True
    if changed:
        onnx.save(model, str(out_path))
    return out_path


def opset(model) -> int:
    """The model's default-domain opset version."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantizable_nodes(model, op_types: Sequence[str] = SENSITIVE_OP_TYPES) -> list[tuple[str, str]]:
    """(name, op_type) of nodes that sensitivity ranks and --keep-float may leave in float."""
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in op_types]


# --- inserting Q/DQ ------------------------------------------------------------------------------

def build(pre_path: "str | Path", out_path: "str | Path", ranges: "dict[str, tuple[float, float]]",
          flavour: str = "tensorrt", exclude: Sequence[str] = (), include: Sequence[str] | None = None) -> Path:
    """Quantize the pre-processed model at ``pre_path`` into ``out_path`` with the given (low, high) range of
    each activation tensor: every quantizable node, or only ``include``, less ``exclude`` (and its
    :func:`float_group`), which is left reading float values. A plain write; callers make it atomic."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    opts = flavour_options(flavour)
    pre = onnx.load(str(pre_path))
    exclude = float_group(pre, exclude)
    out_path = Path(out_path)
    if flavour == "tensorrt":
        model = insert_qdq(pre, tensorrt_placement(pre, exclude, include), ranges)
        _strip_unused_opsets(model)
        onnx.save(model, str(out_path))
        return out_path
    data = {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in ranges.items()}
    # The ranges are final; ORT takes them from its cache file, whose method label only has to match.
    method = CalibrationMethod.MinMax
    with scratch_dir("qdq") as tmp, _ort_quantization(tmp):
        cache = tmp / "ranges.json"
        save_tensors_data(TensorsData(method, data), cache)
        quantize_static(
            str(pre_path), str(out_path), calibration_data_reader=None,
            quant_format=opts["quant_format"], op_types_to_quantize=opts["op_types_to_quantize"],
            per_channel=opts["per_channel"], reduce_range=opts["reduce_range"],
            activation_type=opts["activation_type"], weight_type=opts["weight_type"],
            nodes_to_quantize=list(include) if include else None, nodes_to_exclude=list(exclude),
            calibrate_method=method, extra_options=dict(opts["extra_options"]), calibration_cache_path=str(cache),
        )
    model = onnx.load(str(out_path))
    if exclude:
        _float_inputs(model, pre, exclude)
    _strip_unused_opsets(model)
    onnx.save(model, str(out_path))
    return out_path



# --- the tensorrt flavour: placement and insertion ------------------------------------------------------

def _constants(model) -> set[str]:
    return {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}


def tensorrt_placement(model, exclude: Sequence[str] = (), include: Sequence[str] | None = None
                       ) -> list[tuple[str, int]]:
    """(consumer node name, input index) of every Q/DQ pair the tensorrt flavour puts in ``model``.

    Rules 1-4 of the module docstring. ``exclude`` nodes get none; with ``include``, only those nodes'
    inputs (and the residual input of an Add fused into one of them) are quantized.
    """
    consts = _constants(model)
    initializers = {i.name for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in model.graph.output}
    excluded = set(exclude)

    def quantized(node) -> bool:
        if node.op_type not in rules.WEIGHTED_OP_TYPES or node.name in excluded:
            return False
        if include is not None and node.name not in include:
            return False
        return rules.int8_kernel(node.op_type, len(node.input) > 1 and node.input[1] in initializers)

    pairs: list[tuple[str, int]] = []
    order = {n.name: k for k, n in enumerate(model.graph.node)}
    producer = {o: n for n in model.graph.node for o in n.output}

    def is_fusable(x: str) -> bool:
        return rules.fusable(x, producer.get, lambda t: len(consumers.get(t, [])), graph_outputs, quantized)

    for node in model.graph.node:
        if quantized(node):
            for k in (k for k in rules.QUANTIZED_INPUTS if k < len(node.input)):
                x = node.input[k]
                if x and (x not in consts or x in initializers):  # a Constant node's output is not quantized here
                    pairs.append((node.name, k))
        elif node.op_type == "Add" and node.name not in excluded and not any(x in consts for x in node.input):
            k = rules.residual_input(node, is_fusable, lambda x: order[producer[x].name])
            if k is not None:
                pairs.append((node.name, k))
    return pairs


def insert_qdq(model, pairs: Sequence[tuple[str, int]], ranges: "dict[str, tuple[float, float]]"):
    """``model``, edited in place and returned, with a symmetric INT8 Q/DQ pair before each (consumer, input index)
    in ``pairs`` (in place: :func:`build` hands it a model it has just read, and sensitivity builds once per node).

    Activations: one scale per tensor, max(|low|, |high|) / 127 from ``ranges``, a Q/DQ pair per consumer.
    Weights (initializers): per output channel (:func:`cpnet.runtime.qdq_rules.weight_axis`; per tensor where
    :func:`~cpnet.runtime.qdq_rules.per_channel_weights` says TensorRT has no per-channel form), stored as INT8 with a DequantizeLinear;
    a float weight no longer read is dropped. Zero points are INT8 0.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    wanted: dict[str, list[int]] = {}
    for name, k in pairs:
        wanted.setdefault(name, []).append(k)
    new_nodes, new_inits, done = [], [], set()

    def const(name, array):
        if name not in done:
            new_inits.append(numpy_helper.from_array(array, name))
            done.add(name)
        return name

    for node in g.node:
        for k in sorted(wanted.get(node.name, ())):
            x = node.input[k]
            tag = f"{node.name}/{'weight' if x in inits else 'input'}{k}"
            if x in inits:
                w = numpy_helper.to_array(inits[x]).astype(np.float32)
                if rules.per_channel_weights(node, w.ndim):  # one scale per output channel
                    axis = rules.weight_axis(node, k, w.ndim)
                    amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
                    shape = [1] * w.ndim
                    shape[axis] = -1
                else:  # a MatMul weight of rank 3 or more: one scale (see cpnet.runtime.qdq_rules)
                    axis, amax, shape = None, np.abs(w).max(keepdims=False), []
                scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
                q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
                qname = const(f"{x}_quantized", q)
                sname = const(f"{x}_scale", scale)
                zname = const(f"{x}_zero_point", np.zeros(scale.shape, np.int8))
                dq_out = f"{x}_dequantized"
                if dq_out not in done:
                    per_channel = {} if axis is None else {"axis": axis}
                    new_nodes.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [dq_out],
                                                      name=f"{x}/DequantizeLinear", **per_channel))
                    done.add(dq_out)
                node.input[k] = dq_out
                continue
            if x not in ranges:
                raise RuntimeError(f"internal error: no calibration range for '{x}' (input {k} of {node.name})")
            lo, hi = ranges[x]
            amax = float(max(abs(lo), abs(hi)))
            sname = const(f"{x}_scale", np.array(amax / 127.0 if amax > 0 else 1.0, np.float32))
            zname = const(f"{x}_zero_point", np.array(0, np.int8))
            q_out, dq_out = f"{tag}_quantized", f"{tag}_dequantized"
            new_nodes.append(helper.make_node("QuantizeLinear", [x, sname, zname], [q_out], name=f"{tag}/QuantizeLinear"))
            new_nodes.append(helper.make_node("DequantizeLinear", [q_out, sname, zname], [dq_out],
                                              name=f"{tag}/DequantizeLinear"))
            node.input[k] = dq_out
        new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    if opset(model) < 13:
        raise RuntimeError("internal error: per-channel DequantizeLinear needs opset 13 (preprocess_model raises it)")
    return model


def float_group(model, names: Sequence[str]) -> list[str]:
    """``names`` plus, for each, an activation that is its only consumer (Conv -> Relu computes as one layer).

    Leaving a Conv in float but quantizing the Relu after it would still put a
    Q/DQ pair on the Conv's output (the Relu's input), so the pair goes together.
    """
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = list(dict.fromkeys(names))
    for n in model.graph.node:
        if n.name in names and len(n.output) == 1:
            c = consumers.get(n.output[0], [])
            if len(c) == 1 and c[0].op_type in rules.FUSED_ACTIVATIONS and c[0].name not in out:
                out.append(c[0].name)
    return out


def _float_inputs(model, original, names: Sequence[str]) -> None:
    """Feed nodes kept in float the float tensors they read before quantization.

    ORT leaves an excluded node reading the DequantizeLinear output of a tensor
    that its producer or another consumer quantized, so it would still see
    INT8-rounded, range-clipped values. Each kept node is pointed back at the
    original tensor where it still exists in the quantized graph (a Q node's
    input). When that tensor comes from a ReLU-like activation, the activation
    is fed its float input too: ORT quantizes a ReLU's input with the ReLU's
    output range, so the clipping would otherwise happen just before it. Q/DQ
    nodes left without consumers are removed. (Where ORT removed the tensor,
    e.g. a ReLU folded into the zero point of an asymmetric Q, the input is left
    as it is.)
    """
    import onnx

    by_name = {n.name: n for n in original.graph.node}
    producer = {o: n for n in original.graph.node for o in n.output}
    feed = set(n for n in names if n in by_name)
    for name in list(feed):
        for t in by_name[name].input:
            p = producer.get(t)
            if p is not None and p.op_type in rules.FUSED_ACTIVATIONS:
                feed.add(p.name)
    sources = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    q_nodes = {n.name for n in model.graph.node}
    q_producer = {o: n for n in model.graph.node for o in n.output}
    inserted = 0
    for idx in range(len(model.graph.node)):
        n = model.graph.node[idx + inserted]
        if n.name not in feed:
            continue
        want = list(by_name[n.name].input)
        if len(want) != len(n.input):
            continue
        for k, (cur, orig) in enumerate(zip(list(n.input), want)):
            if cur == orig:
                continue
            op, qp = producer.get(orig), q_producer.get(orig)
            if orig in sources or (op is not None and qp is not None and qp.name == op.name):
                n.input[k] = orig            # the same tensor from the same node: read it directly
            elif (op is not None and op.op_type in rules.FUSED_ACTIVATIONS and op.name not in q_nodes
                  and qp is not None and qp.op_type not in ("QuantizeLinear", "DequantizeLinear")
                  and all(i in sources or not i for i in op.input[1:])):
                # ORT folded this activation into a Q's zero point (asymmetric flavour) and the
                # tensor now holds its input: apply the activation again, in float, for this node
                act = onnx.NodeProto()
                act.CopyFrom(op)
                act.name = f"{op.name}_float_for_{n.name}"
                del act.input[:]
                act.input.extend([orig, *op.input[1:]])
                del act.output[:]
                act.output.append(f"{orig}_float_for_{n.name}")
                model.graph.node.insert(idx + inserted, act)
                inserted += 1
                n.input[k] = act.output[0]
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def _strip_unused_opsets(model) -> None:
    """Drop opset imports of domains no node uses (ORT's pre-processing adds several)."""
    used = {n.domain or "" for n in model.graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)


# --- checking a quantized graph --------------------------------------------------------------------

def check_qdq(model, flavour: str) -> list[str]:
    """Problems with a quantized model's Q/DQ nodes for its flavour (empty when it is right).

    tensorrt: the rules of :mod:`cpnet.runtime.qdq_rules` that ``cpnet check`` lints by (INT8, zero point 0,
    positive finite float32 scales or float16 from opset 19, weights on their output-channel axis, no INT32 bias
    DequantizeLinear, opset >= 13), each a problem here whatever its level there, and what this flavour
    promises besides: every Q/DQ has an INT8 zero point, and every weight read by a weighted layer is per channel
    where TensorRT takes that (per tensor where it does not).
    cpu: activations QuantizeLinear to uint8; weights int8.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    problems = []
    version = opset(model)
    if version < rules.MIN_OPSET:
        problems.append(f"opset {version} < {rules.MIN_OPSET} (per-channel DequantizeLinear needs {rules.MIN_OPSET})")
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(n.input[1]) if len(n.input) > 1 else None
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scale is None:
            problems.append(f"{n.name}: scale is not an initializer")
            continue
        s = numpy_helper.to_array(scale)
        problems += [f"{n.name}: {m}" for _, m in rules.scale_problems(s, scale.data_type, version)]
        is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if flavour == "tensorrt":
            if zp is None:
                problems.append(f"{n.name}: no zero point")
            else:
                found = [rules.qtype_problem(zp.data_type), rules.zero_point_problem(numpy_helper.to_array(zp))]
                problems += [f"{n.name}: {m}" for _, m in filter(None, found)]
            if not is_weight:
                continue
            w = inits[n.input[0]]
            found = rules.qtype_problem(w.data_type)
            if found:
                problems.append(f"{n.name}: weight: {found[1]}")
                continue
            attrs = {a.name: a.i for a in n.attribute}
            axis = attrs.get("axis", 1) if s.size > 1 else None
            rank = len(w.dims)
            for c, idx in consumers.get(n.output[0], []):
                if rules.weight_axis(c, idx, rank) is None:
                    continue
                if not rules.per_channel_weights(c, rank):
                    if axis is not None:
                        problems.append(f"{n.name}: weight of {c.name} is per-channel; TensorRT takes a rank-{rank} "
                                        f"{c.op_type} weight per tensor")
                    continue
                found = rules.weight_scale_problem(c, idx, rank, axis, s.size)
                if axis is None and w.dims[rules.weight_axis(c, idx, rank)] > 1:
                    problems.append(f"{n.name}: weight of {c.name} is per-tensor, not per-channel")
                elif found:
                    problems.append(f"{n.name}: {found[1]}")
                elif axis is not None and s.size != w.dims[axis % rank]:
                    problems.append(f"{n.name}: {s.size} scales for {w.dims[axis % rank]} output channels")
        elif flavour == "cpu" and n.op_type == "QuantizeLinear" and zp is not None:
            if zp.data_type != rules.UINT8:
                problems.append(f"{n.name}: activation quantized to {rules.type_name(zp.data_type)}, not UINT8")
    return problems
