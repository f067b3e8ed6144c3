"""INT8 post-training quantization of a cpnet ONNX model: explicit Q/DQ, calibrated on real images.

    python -m quantize int8 runs/q/model.onnx --calib-data data/synthetic/images/train
    python -m quantize int8 runs/q/model.onnx --calib-data quickstart --data-root data/synthetic \\
        --flavour cpu --method percentile --keep-float auto

Two flavours (DESIGN.md §3), both ``QuantFormat.QDQ`` with per-channel weights:

``tensorrt`` (default; ``model.int8.onnx``)
    What TensorRT's explicit-quantization path takes: symmetric INT8 everywhere
    (activations and weights ``int8`` with zero point 0, scale = amax/127),
    per-channel weight scales on the output-channel axis (0 for Conv, 1 for a
    MatMul's constant B), positive float32 scales, opset >= 13. Biases stay
    float (``QuantizeBias=False``): TensorRT's parser has no INT32 DequantizeLinear
    (onnxruntime issue #17738). Q/DQ pairs are dedicated per consumer
    (``DedicatedQDQPair``) as ORT documents for TensorRT. Only ops TensorRT runs
    in INT8 or passes INT8 through are quantized (``TRT_OP_TYPES``); the rest
    (Sigmoid, ReduceSum, Sub, Resize, ...) keep float inputs. ``engines.check``
    passes these files for TensorRT 10 and 11.
``cpu`` (``model.int8-cpu.onnx``)
    ONNX Runtime's fast path on x86: unsigned asymmetric activations
    (``QUInt8``) with signed symmetric per-channel weights (U8S8), which MLAS
    runs with VNNI; ``reduce_range`` only on x86 CPUs without VNNI (ORT's
    guidance: 7-bit weights avoid u8*s8 int16 saturation there). Every op ORT
    can quantize is, except the final Resize. See ``CPU_FORMAT`` for the
    QDQ-vs-QOperator measurement.

Calibration runs real, preprocessed images (``quantize.calib_data``) through
the model once; the statistics are saved beside the output
(``<parent stem>.calib.npz``, e.g. ``model.calib.npz``) keyed by the parent's
sha256 and the image set (the files picked, their sizes and times, the seed,
the preprocessing), and reused by later runs with another ``--method`` or
``--flavour`` (see :mod:`quantize.calibrate`). Ranges: ``minmax``;
``percentile`` (of |x| for the symmetric flavour, two-sided otherwise);
``entropy``, TensorRT's KL-divergence threshold search, with candidate
thresholds that clip more than 0.1% of the values skipped (see
``calibrate.ENTROPY_MAX_CLIP`` for why).

``--keep-float NAMES`` leaves nodes in float: the node, a ReLU that is its only
consumer, and the float tensors it read before quantization (the Q/DQ its
producer put on them, including the one before a producing ReLU, no longer
reach it). ``--keep-float auto`` first quantizes everything and, if the argmax
disagreement with FP32 on the first ``--eval-images`` calibration images
exceeds ``--max-drift`` percent of pixels, ranks the Conv/MatMul/Gemm nodes by
sensitivity (:mod:`quantize.sensitivity`) and tries them worst first, keeping a
node in float only when that clearly lowers the disagreement (by 2%, or the
logit error by 5%), until the target holds,
``--max-keep-float`` nodes are kept or twice that many were tried.

Disagreement is a label-free stand-in for mIoU drift (calibration images have
no labels here). Measured on the trained quickstart model (synthetic val,
100 images): 0.33% disagreement went with 0.03 mIoU points of drift, 0.98%
with 0.38 and 1.64% with 0.93, so the default 0.5% keeps mIoU drift well
under 0.5 points there.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cpnet.runtime import UserError, atomic_path, read_manifest, sha256_file, versions, write_manifest
from cpnet.runtime.compare import compare
from cpnet.runtime.ort import make_session

from . import calibrate as cal

FLAVOURS = ("tensorrt", "cpu")
DEFAULT_NUM_IMAGES = 200
DEFAULT_EVAL_IMAGES = 16
DEFAULT_MAX_KEEP_FLOAT = 8

# Ops quantized in the tensorrt flavour: weighted layers, the residual Add (so TensorRT can fuse
# it into the convolution, as NVIDIA's Q/DQ placement guide recommends for ResNets), and ops
# TensorRT runs in INT8 or passes INT8 through (ReLU, pooling, Concat).
TRT_OP_TYPES = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Relu", "MaxPool", "AveragePool",
                "GlobalAveragePool", "Concat"]
# Nodes ranked by sensitivity and eligible for --keep-float auto: the compute-heavy ones.
SENSITIVE_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")

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

    if flavour == "tensorrt":
        return {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "reduce_range": False,
            "op_types_to_quantize": list(TRT_OP_TYPES),
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "DedicatedQDQPair": True,
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
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


def _options_record(opts: dict) -> dict:
    return {
        "format": str(opts["quant_format"]),
        "activation_type": str(opts["activation_type"]),
        "weight_type": str(opts["weight_type"]),
        "per_channel": bool(opts["per_channel"]),
        "reduce_range": bool(opts["reduce_range"]),
        "op_types": opts["op_types_to_quantize"],
        "extra_options": opts["extra_options"],
    }


# --- loading and preparing the parent ----------------------------------------------------------

def load_onnx(path: "str | Path"):
    """The ONNX model at ``path``; a missing or corrupt file is a one-line UserError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise UserError(f"{path}: not a valid ONNX model ({first[:200]}); "
                        f"re-export it with python -m cpnet.export") from None
    if len(model.graph.input) != 1:
        raise UserError(f"{path}: expected one image input, the model has {len(model.graph.input)}")
    return model


def _quiet():
    """Silence onnxruntime.quantization's prints and warnings (it logs pre-processing advice per call)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    logger = logging.getLogger()
    old = logger.level
    logger.setLevel(logging.ERROR)
    stack.callback(logger.setLevel, old)
    return stack


def preprocess_model(model_path: Path, out_path: Path) -> Path:
    """ORT's quantization pre-processing (constant folding, shape inference), with fallbacks.

    Symbolic shape inference fails on some exporter graphs (Reshape with computed shapes);
    the inputs are static, so ONNX shape inference suffices then.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for kwargs in ({"skip_symbolic_shape": False}, {"skip_symbolic_shape": True}):
        try:
            with _quiet():
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
    if _opset(model) < 13:  # per-channel DequantizeLinear needs opset 13
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
        changed = True
    if changed:
        onnx.save(model, str(out_path))
    return out_path


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantizable_nodes(model, op_types: Sequence[str] = SENSITIVE_OP_TYPES) -> list[tuple[str, str]]:
    """(name, op_type) of nodes that sensitivity ranks and --keep-float may leave in float."""
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in op_types]


# --- the calibration cache ---------------------------------------------------------------------

def _fingerprint_files(paths: Sequence[Path]) -> str:
    """A cheap fingerprint of a list of files: names, sizes and modification times (no reading)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def image_set_key(source: str | None, num_images: int, seed: int, data_root: str | None, manifest: dict) -> dict:
    """What identifies a calibration image set: the files picked (names, sizes, mtimes), count, seed, preprocessing.

    The source is resolved to its candidate files (a listing, no image is read), so a
    missing folder or dataset fails here, before any work.
    """
    from .calib_data import resolve_calibration_source, select_paths

    src = resolve_calibration_source(source, manifest, data_root)
    picked = select_paths(src.paths, int(num_images), seed)
    return {
        "source": src.description,
        "files": min(len(picked), int(num_images)),
        "files_fingerprint": _fingerprint_files(picked[:int(num_images)]),
        "num_images": int(num_images),
        "seed": int(seed),
        "preprocess": {k: manifest.get(k) for k in ("input_size", "mean", "std", "channel_order")},
    }


def calibration_images(source: str | None, manifest: dict, num_images: int, data_root: str | None, seed: int):
    """(iterator of preprocessed (1, 3, H, W) float32 images, expected count)."""
    from .calib_data import count_calibration_images, iter_calibration_images

    total = count_calibration_images(source, manifest, num_images, data_root=data_root)
    return iter_calibration_images(source, manifest, num_images, data_root=data_root, seed=seed), total


@dataclass
class Prepared:
    """A parent model ready to quantize: pre-processed copy, calibration statistics, what they came from."""

    parent: Path
    manifest: dict
    parent_sha256: str
    workdir: Path
    pre_path: Path
    stats: cal.RangeStats
    ranges_file: Path
    reused: bool
    source: str | None
    description: str
    num_images: int
    seed: int
    data_root: str | None
    threads: int | None = None
    requested: int | None = None     # --num-images as asked (num_images: how many the ranges came from)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def images(self, limit: int | None = None) -> Iterable[np.ndarray]:
        it, _ = calibration_images(self.source, self.manifest, self.requested or self.num_images, self.data_root,
                                   self.seed)
        for i, x in enumerate(it):
            if limit is not None and i >= limit:
                break
            yield x


def default_output(parent: Path, flavour: str) -> Path:
    stem = parent.name[:-5] if parent.name.endswith(".onnx") else parent.stem
    return parent.with_name(f"{stem}.int8.onnx" if flavour == "tensorrt" else f"{stem}.int8-cpu.onnx")


def default_ranges_file(parent: Path, out_dir: Path) -> Path:
    stem = parent.name[:-5] if parent.name.endswith(".onnx") else parent.stem
    return out_dir / f"{stem}.calib.npz"


def prepare(onnx_path: "str | Path", calib_data: str | None, num_images: int = DEFAULT_NUM_IMAGES,
            data_root: str | None = None, seed: int = 0, ranges_file: "str | Path | None" = None,
            out_dir: "str | Path | None" = None, recalibrate: bool = False, progress: bool = True,
            log=print, threads: int | None = None) -> Prepared:
    """Load and check the parent, pre-process it, and get calibration statistics (cached or collected)."""
    parent = Path(onnx_path)
    load_onnx(parent)
    manifest = read_manifest(parent, required=True)
    if manifest.get("kind", "onnx") != "onnx":
        raise UserError(f"{parent}: its manifest describes a {manifest.get('kind')!r}, not an ONNX model")
    precision = str(manifest.get("precision", "fp32"))
    if precision != "fp32":
        raise UserError(f"{parent}: is a {precision} model; quantize the FP32 export (model.onnx) instead")
    parent_sha = sha256_file(parent)
    if manifest.get("sha256") and manifest["sha256"] != parent_sha:
        raise UserError(f"{parent}: file does not match its manifest (sha256 differs; changed after export); "
                        f"re-export it")
    if num_images < 1:
        raise UserError(f"--num-images must be at least 1, got {num_images}")
    key = {"parent_sha256": parent_sha, **image_set_key(calib_data, num_images, seed, data_root, manifest)}

    tmp = tempfile.TemporaryDirectory(prefix="cpnet-int8-")
    try:
        workdir = Path(tmp.name)
        pre_path = preprocess_model(parent, workdir / "pre.onnx")
        import onnx

        wanted = {n for n, _ in cal.calibration_tensors(onnx.load(str(pre_path)))}
        out_dir = Path(out_dir) if out_dir is not None else parent.parent
        explicit = ranges_file is not None
        rfile = Path(ranges_file) if explicit else default_ranges_file(parent, out_dir)

        stats, reused = None, False
        cached = None
        if rfile.is_file() and not recalibrate:
            try:
                cached = cal.RangeStats.load(rfile)
            except UserError as e:
                if explicit:
                    raise
                log(f"calibration: ignoring {rfile} ({str(e).split(': ', 1)[-1]}); collecting new ranges")
        if cached is not None:
            ckey = cached.meta.get("key", {})
            missing = wanted - set(cached.names)
            if ckey.get("parent_sha256") != parent_sha:
                if explicit:
                    raise UserError(f"{rfile}: these ranges were collected on another model "
                                    f"(sha256 {str(ckey.get('parent_sha256'))[:12]}..., this one {parent_sha[:12]}...)")
                log(f"calibration: {rfile} is for another model; collecting new ranges")
            elif missing:
                log(f"calibration: {rfile} lacks {len(missing)} of this model's tensors; collecting new ranges")
            elif ckey != key and not explicit:
                diff = sorted(k for k in set(key) | set(ckey) if key.get(k) != ckey.get(k))
                log(f"calibration: {rfile} was collected on another image set ({', '.join(diff)} differ); "
                    f"collecting new ranges")
            else:
                stats, reused = cached, True
                note = "" if ckey == key else " (given with --ranges; its image set differs from these options)"
                log(f"calibration: reused saved ranges from {rfile} ({cached.meta.get('images')} images, "
                    f"no pass over the data){note}")
        if stats is None:
            images, total = calibration_images(calib_data, manifest, num_images, data_root, seed)
            log(f"calibration: running {total} images ({key['source']}) through the model "
                f"(one pass; ranges saved to {rfile})")
            stats = cal.collect(pre_path, images, total=total, progress=progress, threads=threads,
                                meta={"key": key, "parent": str(parent)})
            stats.save(rfile)
        return Prepared(parent=parent, manifest=manifest, parent_sha256=parent_sha, workdir=workdir,
                        pre_path=pre_path, stats=stats, ranges_file=rfile, reused=reused, source=calib_data,
                        description=key["source"], threads=threads, requested=num_images,
                        num_images=int(stats.meta.get("images", num_images)), seed=seed, data_root=data_root,
                        _tmp=tmp)
    except BaseException:
        tmp.cleanup()
        raise


# --- building a quantized model ----------------------------------------------------------------

def build(prep: Prepared, out_path: "str | Path", method: str = "entropy", flavour: str = "tensorrt",
          percentile: float = 99.999, exclude: Sequence[str] = (), include: Sequence[str] | None = None) -> Path:
    """Quantize ``prep``'s model into ``out_path`` (plain write; callers make it atomic)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    opts = flavour_options(flavour)
    symmetric = flavour == "tensorrt"
    pre = onnx.load(str(prep.pre_path))
    exclude = float_group(pre, exclude)
    ranges = prep.stats.ranges(method, symmetric=symmetric, percentile=percentile)
    enum = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "minmax": CalibrationMethod.MinMax}[method]
    data = {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in ranges.items()}
    cache = prep.workdir / f"ranges-{method}-{flavour}.json"
    save_tensors_data(TensorsData(enum, data), cache)
    out_path = Path(out_path)
    with _quiet():
        quantize_static(
            str(prep.pre_path), str(out_path), calibration_data_reader=None,
            quant_format=opts["quant_format"], op_types_to_quantize=opts["op_types_to_quantize"],
            per_channel=opts["per_channel"], reduce_range=opts["reduce_range"],
            activation_type=opts["activation_type"], weight_type=opts["weight_type"],
            nodes_to_quantize=list(include) if include else None, nodes_to_exclude=list(exclude),
            calibrate_method=enum, extra_options=dict(opts["extra_options"]), calibration_cache_path=str(cache),
        )
    model = onnx.load(str(out_path))
    if exclude:
        _float_inputs(model, pre, exclude)
    _strip_unused_opsets(model)
    onnx.save(model, str(out_path))
    return out_path


_FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")


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
            if len(c) == 1 and c[0].op_type in _FUSED_ACTIVATIONS and c[0].name not in out:
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
            if p is not None and p.op_type in _FUSED_ACTIVATIONS:
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
            elif (op is not None and op.op_type in _FUSED_ACTIVATIONS and op.name not in q_nodes
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


def check_qdq(model, flavour: str) -> list[str]:
    """Problems with a quantized model's Q/DQ nodes for its flavour (empty when it is right).

    tensorrt: every Q/DQ has an INT8 zero point equal to 0 and positive finite float32 scales;
    weight DequantizeLinear nodes are per-channel on the output-channel axis (0 for Conv,
    1 for ConvTranspose and a MatMul's constant B); no INT32 (bias) DequantizeLinear; opset >= 13.
    cpu: activations QuantizeLinear to uint8; weights int8.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    problems = []
    if _opset(model) < 13:
        problems.append(f"opset {_opset(model)} < 13 (per-channel DequantizeLinear needs 13)")
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(n.input[1]) if len(n.input) > 1 else None
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scale is None:
            problems.append(f"{n.name}: scale is not an initializer")
            continue
        s = numpy_helper.to_array(scale)
        if scale.data_type != TensorProto.FLOAT:
            problems.append(f"{n.name}: scale is not float32")
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            problems.append(f"{n.name}: scale not positive and finite")
        is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if flavour == "tensorrt":
            if zp is None:
                problems.append(f"{n.name}: no zero point")
            else:
                if zp.data_type != TensorProto.INT8:
                    problems.append(f"{n.name}: zero point type {TensorProto.DataType.Name(zp.data_type)}, not INT8")
                if np.any(numpy_helper.to_array(zp) != 0):
                    problems.append(f"{n.name}: zero point not 0")
            if is_weight:
                w = inits[n.input[0]]
                if w.data_type != TensorProto.INT8:
                    problems.append(f"{n.name}: weight {TensorProto.DataType.Name(w.data_type)} DequantizeLinear "
                                    f"(TensorRT takes INT8 only; biases must stay float)")
                    continue
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                for c, idx in consumers.get(n.output[0], []):
                    want = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1, "Gemm": None}.get(c.op_type)
                    if idx != 1 or c.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
                        continue
                    if s.size <= 1 and w.dims[want if want is not None else 0] > 1:
                        problems.append(f"{n.name}: weight of {c.name} is per-tensor, not per-channel")
                    elif want is not None and (axis % len(w.dims)) != want:
                        problems.append(f"{n.name}: weight of {c.name} quantized on axis {axis}, TensorRT needs {want}")
                    elif want is not None and s.size != w.dims[want]:
                        problems.append(f"{n.name}: {s.size} scales for {w.dims[want]} output channels")
        elif flavour == "cpu" and n.op_type == "QuantizeLinear" and zp is not None:
            if zp.data_type != TensorProto.UINT8:
                problems.append(f"{n.name}: activation quantized to "
                                f"{TensorProto.DataType.Name(zp.data_type)}, not UINT8")
    return problems


# --- measuring drift ----------------------------------------------------------------------------

def run_session(sess, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    name = sess.get_inputs()[0].name
    return [np.asarray(sess.run(None, {name: x})[0], dtype=np.float32) for x in images]


@dataclass
class Reference:
    """FP32 outputs on a few calibration images, to measure what quantization moves."""

    images: list[np.ndarray]
    logits: list[np.ndarray]

    threads: int | None = None

    def compare(self, model_path: "str | Path") -> tuple[float, float]:
        """(mean |logit - FP32 logit|, % of pixels whose argmax differs from FP32)."""
        sess = make_session(model_path, threads=self.threads)
        result = compare(run_session(sess, self.images), self.logits)
        return result.mean_abs, result.disagreement_percent


def reference(prep: Prepared, eval_images: int = DEFAULT_EVAL_IMAGES, budget_bytes: int = 1 << 30) -> Reference:
    """FP32 logits of the parent model on the first calibration images (bounded by ``budget_bytes``)."""
    sess = make_session(prep.parent, threads=prep.threads)
    images, logits, used = [], [], 0
    for x in prep.images(limit=max(1, eval_images)):
        out = run_session(sess, [x])[0]
        used += out.nbytes + x.nbytes
        images.append(x)
        logits.append(out)
        if used >= budget_bytes:
            break
    if not images:
        raise UserError(f"{prep.description}: no calibration image could be read for the drift check")
    return Reference(images, logits, prep.threads)


# --- the whole job ---------------------------------------------------------------------------------

def quantize_int8(onnx_path: "str | Path", calib_data: str | None = None, out_path: "str | Path | None" = None,
                  num_images: int = DEFAULT_NUM_IMAGES, method: str = "entropy", percentile: float = 99.999,
                  flavour: str = "tensorrt", keep_float: Sequence[str] = (), auto_keep_float: bool = False,
                  max_drift: float = 0.5, ranges_file: "str | Path | None" = None, data_root: str | None = None,
                  seed: int = 0, recalibrate: bool = False, eval_images: int = DEFAULT_EVAL_IMAGES,
                  max_keep_float: int = DEFAULT_MAX_KEEP_FLOAT, progress: bool = True, log=print,
                  threads: int | None = None) -> dict:
    """Write an INT8 model and its manifest; return the manifest."""
    import onnx

    if method not in cal.METHODS:
        raise UserError(f"--method must be one of {', '.join(cal.METHODS)}, got {method!r}")
    if flavour not in FLAVOURS:
        raise UserError(f"--flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    if not 0.0 < percentile <= 100.0:
        raise UserError(f"--percentile must be in (0, 100], got {percentile}")
    parent = Path(onnx_path)
    out = Path(out_path) if out_path else default_output(parent, flavour)
    if out.resolve() == parent.resolve():
        raise UserError(f"-o {out}: would overwrite the FP32 model it is made from")

    with prepare(parent, calib_data, num_images, data_root, seed, ranges_file, out.parent, recalibrate,
                 progress, log, threads) as prep:
        pre = onnx.load(str(prep.pre_path))
        names = {n.name for n in pre.graph.node}
        unknown = [k for k in keep_float if k not in names]
        if unknown:
            cands = [n for n, _ in quantizable_nodes(pre)]
            raise UserError(f"--keep-float: no node named {unknown[0]!r} in {parent.name}; quantizable nodes include "
                            f"{', '.join(cands[:5])}{', ...' if len(cands) > 5 else ''} "
                            f"(python -m quantize sensitivity lists them all)")
        excluded = list(dict.fromkeys(keep_float))
        candidate = prep.workdir / "candidate.onnx"
        build(prep, candidate, method, flavour, percentile, exclude=excluded)
        drift_record = None
        if auto_keep_float:
            ref = reference(prep, eval_images)
            mad, dis = ref.compare(candidate)
            steps = [{"tried": None, "kept": True, "mean_abs_diff": mad, "disagree_pct": dis}]
            log(f"keep-float auto: all quantized: argmax disagreement {dis:.3f}% of pixels "
                f"(target <= {max_drift}%), mean |dlogit| {mad:.4f} on {len(ref.images)} images")
            if dis > max_drift:
                from .sensitivity import rank_nodes

                ranking = rank_nodes(prep, ref, method, flavour, percentile, exclude=excluded,
                                     progress=progress)
                order = [r["node"] for r in ranking if r["node"] not in excluded]
                kept = 0
                for node in order[:max(0, 2 * max_keep_float)]:   # bounded: at most 2x the nodes tried
                    if kept >= max_keep_float:
                        break
                    build(prep, candidate, method, flavour, percentile, exclude=[*excluded, node])
                    t_mad, t_dis = ref.compare(candidate)
                    # a real gain, not noise: 2% less disagreement, or as little and 5% less logit error
                    better = t_dis < 0.98 * dis or (t_dis <= dis and t_mad < 0.95 * mad)
                    steps.append({"tried": node, "kept": better, "mean_abs_diff": t_mad, "disagree_pct": t_dis})
                    log(f"keep-float auto: {'+' if better else '-'} {node}: disagreement {t_dis:.3f}%, "
                        f"mean |dlogit| {t_mad:.4f}{'' if better else ' (no better: stays quantized)'}")
                    if better:
                        excluded.append(node)
                        kept += 1
                        mad, dis = t_mad, t_dis
                        if dis <= max_drift:
                            break
                build(prep, candidate, method, flavour, percentile, exclude=excluded)
                if dis > max_drift:
                    log(f"warning: keep-float auto: disagreement {dis:.3f}% still above {max_drift}% with "
                        f"{len(excluded)} node(s) in float (bounds: --max-keep-float {max_keep_float}, "
                        f"{2 * max_keep_float} tried); try --method percentile or more calibration images")
            drift_record = {"metric": "argmax disagreement vs FP32 on calibration images, % of pixels",
                            "target": max_drift, "images": len(ref.images), "final_disagree_pct": dis,
                            "final_mean_abs_diff": mad, "met": dis <= max_drift, "steps": steps}

        model = onnx.load(str(candidate))
        problems = check_qdq(model, flavour)
        if problems:
            raise RuntimeError(f"internal error: the {flavour} INT8 model breaks its rules: " + "; ".join(problems[:5]))
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
        sha = sha256_file(out)
        opts = flavour_options(flavour)
        manifest = dict(prep.manifest)
        manifest.pop("schema", None)
        calibration = {
            "method": method,
            **({"percentile": percentile} if method == "percentile" else {}),
            **({"entropy_max_clip": cal.ENTROPY_MAX_CLIP} if method == "entropy" else {}),
            "images": prep.num_images,
            "source": prep.description,
            "calib_data": prep.source,
            "data_root": data_root,
            "per_channel": True,
            "flavour": flavour,
            "symmetric_activations": flavour == "tensorrt",
            "excluded_nodes": float_group(pre, excluded),
            "ranges_file": os.path.relpath(prep.ranges_file, out.parent),
            "ranges_reused": prep.reused,
            "seed": seed,
        }
        if drift_record is not None:
            calibration["keep_float_auto"] = drift_record
        manifest.update({
            "kind": "onnx",
            "precision": "int8",
            "flavour": flavour,
            "opset": _opset(model),
            "calibration": calibration,
            "quantization": _options_record(opts),
            "parent": {"path": os.path.relpath(parent, out.parent), "sha256": prep.parent_sha256},
            "sha256": sha,
            "versions": versions(),
        })
        write_manifest(out, manifest)
        n_q = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
        n_dq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear")
        log(f"wrote {out} ({flavour} flavour, {method} ranges, {n_q} QuantizeLinear / {n_dq} DequantizeLinear"
            f"{', nodes kept in float: ' + ', '.join(excluded) if excluded else ''}) and {out.name}.json")
        return manifest


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", help="FP32 ONNX model made by python -m cpnet.export (its manifest beside it)")
    p.add_argument("--calib-data", default=None, metavar="DIR|CONFIG",
                   help="calibration images: a folder of images (a dataset root in cpnet's folder format: its "
                        "images/train), or a config name/YAML whose dataset's train split is used; default: the "
                        "dataset of the config in the model's manifest")
    p.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                   help=f"calibration images (default {DEFAULT_NUM_IMAGES})")
    p.add_argument("--method", choices=cal.METHODS, default="entropy",
                   help="range method: entropy (KL, TensorRT's), percentile, minmax (default entropy)")
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile (default 99.999)")
    p.add_argument("--flavour", choices=FLAVOURS, default="tensorrt",
                   help="tensorrt: symmetric INT8 for TensorRT; cpu: U8S8 for ONNX Runtime on x86 (default tensorrt)")
    p.add_argument("--ranges", metavar="FILE", default=None,
                   help="calibration ranges file to reuse (or to write, if missing); default <stem>.calib.npz beside "
                        "the output, reused automatically when model and image set match")
    p.add_argument("--recalibrate", action="store_true", help="collect ranges again even if a matching file exists")
    p.add_argument("--data-root", default=None, help="dataset root when --calib-data is a config")
    p.add_argument("--seed", type=int, default=0, help="seed for picking calibration images (default 0)")
    p.add_argument("--eval-images", type=int, default=DEFAULT_EVAL_IMAGES,
                   help=f"calibration images used to measure drift (default {DEFAULT_EVAL_IMAGES})")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize int8",
                                description="INT8 post-training quantization (explicit Q/DQ) with real-image "
                                            "calibration.")
    add_common_args(p)
    p.add_argument("-o", "--output", default=None,
                   help="output file (default <stem>.int8.onnx, or <stem>.int8-cpu.onnx for --flavour cpu)")
    p.add_argument("--keep-float", default="", metavar="NAMES|auto",
                   help="comma-separated node names to leave in float, or 'auto' (greedy, by sensitivity, "
                        "until --max-drift holds); both may be combined: auto,NAME")
    p.add_argument("--max-drift", type=float, default=0.5,
                   help="--keep-float auto target: argmax disagreement with FP32 on the calibration images, "
                        "in %% of pixels (a label-free stand-in for mIoU drift in points; default 0.5)")
    p.add_argument("--max-keep-float", type=int, default=DEFAULT_MAX_KEEP_FLOAT,
                   help=f"--keep-float auto: at most this many nodes left in float (default {DEFAULT_MAX_KEEP_FLOAT})")
    args = p.parse_args(argv)
    tokens = [t.strip() for t in args.keep_float.split(",") if t.strip()]
    auto = "auto" in tokens
    names = [t for t in tokens if t != "auto"]
    try:
        quantize_int8(args.onnx, args.calib_data, args.output, num_images=args.num_images, method=args.method,
                      percentile=args.percentile, flavour=args.flavour, keep_float=names, auto_keep_float=auto,
                      max_drift=args.max_drift, ranges_file=args.ranges, data_root=args.data_root, seed=args.seed,
                      recalibrate=args.recalibrate, eval_images=args.eval_images, max_keep_float=args.max_keep_float,
                      progress=not args.no_progress, threads=args.threads)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
