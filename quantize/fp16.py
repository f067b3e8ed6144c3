"""FP16 ONNX: FP16 weights and compute, FP32 input and output, drifting nodes kept in FP32 by measurement.

    cpnet fp16 runs/q/export/model.onnx                    # -> model.fp16.onnx
    cpnet fp16 model.onnx --calib-data data/calib --num-images 16 --keep-float /head/MatMul

The conversion is onnxruntime.transformers.float16.convert_float_to_float16
(keep_io_types: the file still takes and returns float32), with a block list of
nodes that stay in FP32, chosen on calibration images preprocessed exactly as
at inference (quantize.calib_data):

1. Range: the FP32 model runs with every intermediate tensor exposed; a tensor
   whose magnitude exceeds --range-limit (default 60000, FP16's largest finite
   value is 65504) would overflow, so its producer and all its consumers stay
   in FP32 and the tensor itself never passes through FP16.
2. Drift: convert, run, and compare the logits with FP32's (quantize.logit_drift:
   the largest |difference| in percent of the largest FP32 |logit|, and the
   share of pixels whose argmax class differs). While that misses
   --max-logit-error or --max-disagreement, expose the FP16 model's tensors too,
   find the nodes that add the most relative error (their output's error minus
   their inputs', on the first two images), keep the worst --nodes-per-round of
   them in FP32 and try again, for at most --max-rounds rounds.

The round closest to the limits is written. When no round met them, the file is
still written (its manifest says so, for inspection) and the command exits 1
(:class:`quantize.logit_drift.DriftLimitExceeded`).

Cast pairs left between two FP32 nodes are removed (so an FP32 edge never
round-trips through FP16) and the graph is sorted topologically. The result is
written with a manifest copied from the parent's: precision "fp16", lineage,
the FP32 node list with the reason for each, the calibration record and the
drift measured. ONNX Runtime's CPU provider has few FP16 kernels and runs most
nodes in FP32 between FP16 tensors: the file measures FP16 accuracy anywhere,
its speed shows on GPUs (TensorRT, CUDA).
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cpnet.runtime.manifest import derive_manifest
from cpnet.runtime import SCHEMA, UserError, atomic_path, versions, write_manifest
from cpnet.runtime.files import artifact_sha256, scratch_dir
from cpnet.runtime.graph import with_outputs
from cpnet.runtime.log import get_logger
from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
from cpnet.runtime.ort import make_session

from .calib_data import count_calibration_images, iter_calibration_images, resolve_calibration_source
from .logit_drift import DriftLimitExceeded, reference
from .parent import check_keep_float, check_output, derived_path, load_parent

FP16_MAX = 65504.0
DEFAULT_NUM_IMAGES = 8
# ops that only move, select or reshape data: they add no rounding error of their own
_NO_ERROR_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
                 "Identity", "MaxPool", "Relu", "Shape", "Cast", "Pad", "Expand", "Tile"}
# Bytes of exposed intermediate tensors per ORT session: the memory bound for big models (a ResNet-50 CPNet
# at 480x480 has ~2.4 GB of activations, so its range pass runs in 3 groups).
_EXPOSE_BUDGET = 1 << 30
ATTRIBUTION_IMAGES = 2  # per-node error attribution ranks nodes; two images are enough and keep rounds short

log = get_logger("fp16")


@dataclass(frozen=True)
class Fp16Options:
    """How the FP32 block list is chosen (see the module docstring).

    ``keep_float``: node names kept in FP32 in any case; the limits the result must keep:
    ``max_disagreement`` (percent of pixels whose argmax class differs from FP32's) and
    ``max_logit_error`` (largest |logit difference|, in percent of the largest FP32 |logit|);
    ``max_rounds`` and ``nodes_per_round`` bound the greedy drift search; activations beyond
    ``range_limit`` stay FP32.
    """

    keep_float: tuple[str, ...] = ()
    max_disagreement: float = 0.1
    max_logit_error: float = 2.0
    max_rounds: int = 4
    nodes_per_round: int = 2
    range_limit: float = 60000.0

    def check(self) -> None:
        if not 0 < self.range_limit <= FP16_MAX:
            raise UserError(f"--range-limit must be in (0, {FP16_MAX:g}]")
        if self.max_rounds < 0 or self.nodes_per_round < 1:
            raise UserError("--max-rounds must be 0 or more and --nodes-per-round at least 1")

    def met(self, drift: dict) -> bool:
        """Whether a measurement (:meth:`Comparison.metrics`) keeps both limits."""
        return (drift["disagreement_percent"] <= self.max_disagreement
                and 100.0 * drift["max_rel"] <= self.max_logit_error)


# --------------------------------------------------------------------------- graph helpers


def topological_sort(graph) -> None:
    """Sort graph.node so every node comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = list(graph.node)
    waiting = {id(n): [x for x in n.input if x] for n in nodes}
    ordered, pending = [], nodes
    while pending:
        progressed, rest = False, []
        for n in pending:
            if all(x in available for x in waiting[id(n)]):
                ordered.append(n)
                available.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            missing = sorted({x for n in rest for x in waiting[id(n)] if x not in available})[:5]
            raise RuntimeError(f"graph has a cycle or undefined inputs: {missing}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _cast_to(node) -> int | None:
    for a in node.attribute:
        if a.name == "to":
            return a.i
    return None


def clean_casts(model) -> int:
    """Remove Cast round trips the FP16 converter leaves between FP32 nodes; return how many Casts went.

    Where Cast B (to type t) reads Cast A whose input X already has type t,
    B's consumers read X instead: X -> fp16 -> fp32 between two FP32 nodes
    becomes plain X, so that edge keeps its FP32 values (and range). Casts
    left without consumers are removed.
    """
    from onnx import TensorProto

    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type == "Cast":
            types[n.output[0]] = _cast_to(n)
    graph_outputs = {o.name for o in graph.output}
    rename = {}
    for b in graph.node:
        if b.op_type != "Cast":
            continue
        a = producer.get(b.input[0])
        if a is None or a.op_type != "Cast":
            continue
        src = a.input[0]
        if types.get(src) not in (None, TensorProto.UNDEFINED) and types.get(src) == _cast_to(b):
            if b.output[0] in graph_outputs:
                b.input[0] = src  # same-type Cast kept as the graph output's producer
            else:
                rename[b.output[0]] = src
    for n in graph.node:
        for i, x in enumerate(n.input):
            while x in rename:
                x = rename[x]
            n.input[i] = x
    before = len(graph.node)
    # drop nodes whose outputs nobody reads (iteratively)
    while True:
        used = {x for n in graph.node for x in n.input} | graph_outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    live = {x for n in graph.node for x in (*n.input, *n.output)}
    vis = [vi for vi in graph.value_info if vi.name in live]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    return before - len(graph.node)


def tensor_info(model) -> dict[str, tuple[int, list]]:
    """name -> (elem_type, shape) of every tensor ONNX shape inference can type (inputs, intermediates, outputs)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        out[vi.name] = (tt.elem_type, shape)
    return out


def _float_activations(model, info) -> list[str]:
    """Names of float/float16 tensors produced by nodes (not Constants), in graph order."""
    from onnx import TensorProto

    names = []
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o and info.get(o, (None,))[0] in (TensorProto.FLOAT, TensorProto.FLOAT16):
                names.append(o)
    return names


def _groups(names: Sequence[str], info, budget: int, copies: int = 1) -> list[list[str]]:
    from cpnet.runtime.graph import tensor_bytes, within_budget

    return within_budget(names, lambda name: tensor_bytes(info[name][1], 4 * copies), budget)


def _exposed(model, names: Sequence[str], info):
    """A copy of ``model`` whose graph outputs are its own followed by ``names``."""
    return with_outputs(model, names, info)


# --------------------------------------------------------------------------- measurements


def tensor_ranges(model, info, inputs, threads=None) -> dict[str, float]:
    """max |x| of every float activation of ``model`` over ``inputs`` (in memory-bounded groups)."""
    names = _float_activations(model, info)
    in_name = model.graph.input[0].name
    ranges: dict[str, float] = {}
    for group in _groups(names, info, _EXPOSE_BUDGET):
        sess = make_session(_exposed(model, group, info), threads, optimization="none")
        outs = [o.name for o in sess.get_outputs()]
        for x in inputs:
            for name, value in zip(outs, sess.run(outs, {in_name: x})):
                if name in group:
                    v = np.asarray(value, dtype=np.float32)
                    m = float(np.abs(v[np.isfinite(v)]).max()) if v.size and np.isfinite(v).any() else 0.0
                    if not np.isfinite(v).all():
                        m = float("inf")
                    ranges[name] = max(ranges.get(name, 0.0), m)
        del sess
    return ranges


def tensor_errors(fp32, fp32_info, fp16, fp16_info, inputs, threads=None) -> dict[str, float]:
    """Relative error max|fp16 - fp32| / max|fp32| of every activation the two models share, over ``inputs``."""
    names16 = set(_float_activations(fp16, fp16_info))
    names = [n for n in _float_activations(fp32, fp32_info) if n in names16]
    in_name = fp32.graph.input[0].name
    errors: dict[str, float] = {}
    for group in _groups(names, fp32_info, _EXPOSE_BUDGET, copies=2):
        s32 = make_session(_exposed(fp32, group, fp32_info), threads, optimization="none")
        s16 = make_session(_exposed(fp16, group, fp16_info), threads, optimization="none")
        for x in inputs:
            a = dict(zip([o.name for o in s32.get_outputs()], s32.run(None, {in_name: x})))
            b = dict(zip([o.name for o in s16.get_outputs()], s16.run(None, {in_name: x})))
            for name in group:
                ref = np.asarray(a[name], np.float32)
                got = np.asarray(b[name], np.float32)
                scale = float(np.abs(ref).max()) if ref.size else 0.0
                diff = np.abs(got - ref)
                err = float("inf") if not np.isfinite(diff).all() else float(diff.max()) / max(scale, 1e-12)
                errors[name] = max(errors.get(name, 0.0), err)
        del s32, s16
    return errors


def convert(model, block: Iterable[str]):
    """FP16 copy of ``model`` with the nodes named in ``block`` left in FP32, IO kept float32.

    ``op_block_list=[]``: the converter's default op-type list is added to the
    block list by name in :func:`convert_fp16`, so every FP32 node is recorded.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with contextlib.redirect_stdout(io.StringIO()):
        out = convert_float_to_float16(copy.deepcopy(model), keep_io_types=True, node_block_list=sorted(block),
                                       op_block_list=[], disable_shape_infer=False)
    clean_casts(out)
    topological_sort(out.graph)
    return out


# --------------------------------------------------------------------------- the conversion


def _introduced_error(model, errors: dict[str, float]) -> dict[str, float]:
    """Per node: the relative error of its output minus the largest of its (activation) inputs'."""
    out = {}
    for n in model.graph.node:
        if n.op_type in _NO_ERROR_OPS or not n.output or n.output[0] not in errors:
            continue
        e_in = max((errors.get(x, 0.0) for x in n.input if x in errors), default=0.0)
        out[n.name] = errors[n.output[0]] - e_in
    return out


def default_output(path: "str | Path") -> Path:
    """model.onnx -> model.fp16.onnx, beside it."""
    return derived_path(path, ".fp16.onnx")


def keep_for_range(model, info32, inputs, threads, range_limit: float, reasons: dict[str, str], n_user: int) -> None:
    """Phase 1, range: every node touching a tensor (activation on the calibration images, or weight) whose
    magnitude exceeds ``range_limit`` joins ``reasons`` (node -> why it stays FP32); ``n_user`` of them the user
    named."""
    import onnx

    ranges = tensor_ranges(model, info32, inputs, threads)
    over = {t: v for t, v in ranges.items() if v > range_limit}
    for n in model.graph.node:
        hit = [t for t in (*n.input, *n.output) if t in over]
        if hit:
            reasons.setdefault(n.name, f"range: |{hit[0]}| reaches {over[hit[0]]:.4g} > {range_limit:g}")
    for t in model.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            w = onnx.numpy_helper.to_array(t)
            if w.size and float(np.abs(w).max()) > range_limit:
                for n in model.graph.node:
                    if t.name in n.input:
                        reasons.setdefault(n.name, f"range: weight {t.name} reaches {float(np.abs(w).max()):.4g}")
    if over:
        log.info(f"range: {len(over)} tensor(s) exceed {range_limit:g}; {len(reasons) - n_user} node(s) kept "
                 f"in FP32")


def drift_rounds(model, info32, inputs, threads, reasons: dict[str, str], o: Fp16Options, what: str):
    """Phase 2, drift: convert with ``reasons`` kept FP32, measure the logits against FP32 and, round by round
    until the limits hold (or o.max_rounds), keep FP32 the nodes that add the most error. The round closest to
    the target: (rounds, its index, its model, its reasons, whether it met the limits)."""
    reasons = dict(reasons)
    rounds = []
    with scratch_dir("fp16") as tmp:
        ref = reference(model, inputs, threads, spill_dir=tmp, what=what)
        best = None  # (score, round, model, reasons): the round closest to the target
        for r in range(o.max_rounds + 1):
            fp16 = convert(model, reasons)
            drift = ref.measure(fp16).metrics()
            met = o.met(drift)
            rounds.append({"round": r, "fp32_nodes": len(reasons), **drift})
            log.info(f"round {r}: {len(reasons)} FP32 node(s); max |logit drift| {drift['max_abs']:.3g} "
                     f"({100 * drift['max_rel']:.2f}% of max |logit|), argmax disagreement "
                     f"{drift['disagreement_percent']:.3f}%")
            score = (met, -drift["disagreement_percent"], -drift["max_rel"], -len(reasons))
            if best is None or score > best[0]:
                best = (score, r, fp16, dict(reasons))
            if met or r == o.max_rounds:
                break
            errors = tensor_errors(model, info32, fp16, tensor_info(fp16), inputs[:ATTRIBUTION_IMAGES], threads)
            introduced = _introduced_error(model, errors)
            ranked = sorted(((e, n) for n, e in introduced.items() if n not in reasons and e > 0), reverse=True)
            if not ranked:
                log.info("no remaining node adds measurable error; stopping")
                break
            for e, n in ranked[:max(1, o.nodes_per_round)]:
                reasons[n] = f"drift: adds {e:.3g} relative error (round {r})"
    _, chosen, fp16, reasons = best
    return rounds, chosen, fp16, reasons, bool(best[0][0])


def convert_fp16(model_path: "str | Path", out_path: "str | Path | None" = None, options: Fp16Options = Fp16Options(),
                 calibration: CalibrationOptions = CalibrationOptions(num_images=DEFAULT_NUM_IMAGES),
                 runtime: RuntimeOptions = RuntimeOptions(), **overrides) -> tuple[Path, dict]:
    """Convert an FP32 cpnet ONNX file to FP16 (see the module docstring); return (path, manifest).

    ``overrides`` replace fields of ``options``. Raises :class:`DriftLimitExceeded` (after writing the
    closest round) when no round keeps the limits.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    from cpnet.runtime.graph import name_nodes

    o = replace(options, **overrides) if overrides else options
    o.check()
    threads = runtime.threads
    t0 = time.perf_counter()
    parent = load_parent(model_path)
    src, model = parent.path, parent.model
    out = Path(out_path) if out_path else default_output(src)
    check_output(out, src)
    name_nodes(model)
    keep = check_keep_float(model, o.keep_float, src)

    c = calibration
    calib = resolve_calibration_source(c.data, parent.manifest, c.data_root)
    inputs = list(iter_calibration_images(calib, parent.manifest, c.num_images, seed=c.seed))
    n_calib, n_tried = len(inputs), count_calibration_images(calib, parent.manifest, c.num_images)
    log.info(f"calibration: {n_calib} image(s) from {calib.description}"
             + (f" (of {n_tried} tried)" if n_calib < n_tried else ""))

    info32 = tensor_info(model)
    reasons: dict[str, str] = {k: "user (--keep-float)" for k in keep}
    for n in model.graph.node:  # op types the converter leaves in FP32 by default (none occur in a CPNet)
        if n.op_type in DEFAULT_OP_BLOCK_LIST:
            reasons.setdefault(n.name, f"op type {n.op_type} (onnxruntime float16 default block list)")
    # 1. range, 2. drift
    range_limit = o.range_limit
    keep_for_range(model, info32, inputs, threads, range_limit, reasons, n_user=len(keep))
    rounds, chosen, fp16, reasons, met = drift_rounds(model, info32, inputs, threads, reasons, o, calib.description)

    inits = [t for t in fp16.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    n16 = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in inits)
    fp16.producer_name = "cpnet.quantize.fp16"
    with atomic_path(out) as tmp_out:
        onnx.save_model(fp16, str(tmp_out))
        make_session(tmp_out, threads=threads)  # it must load before it replaces anything
    manifest = derive_manifest(src, parent.manifest, "onnx", "fp16", parent_sha256=parent.sha256)
    manifest.update({
        "sha256": artifact_sha256(out),
        "fp16": {
            "fp32_nodes": sorted(reasons),
            "fp32_node_reasons": dict(sorted(reasons.items())),
            "method": ("onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True) with a node "
                       "block list chosen by measurement: FP16 range, then greedy per-node drift"),
            "range_limit": float(range_limit),
            "weights": {"fp16": n16, "fp32": len(inits) - n16},
            "calibration": {"images": n_calib, "source": calib.description, "seed": c.seed},
            "drift": {**{k: v for k, v in rounds[chosen].items() if k not in ("round", "fp32_nodes")},
                      "target_met": met, "round": chosen, "max_disagreement": float(o.max_disagreement),
                      "max_logit_error": float(o.max_logit_error), "rounds": rounds,
                      "measured_on": "onnxruntime CPUExecutionProvider"},
        },
        "versions": versions(),
    })
    write_manifest(out, manifest)
    log.info(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB; {len(reasons)} node(s) in FP32"
             + (f": {', '.join(sorted(reasons)[:6])}{' ...' if len(reasons) > 6 else ''}" if reasons else "")
             + f") [{time.perf_counter() - t0:.1f} s]")
    manifest = {"schema": SCHEMA, **manifest}
    if not met:
        d = rounds[chosen]
        raise DriftLimitExceeded(
            f"FP16 drift limits missed in {len(rounds)} round(s): argmax disagreement {d['disagreement_percent']:.3f}% "
            f"(--max-disagreement {o.max_disagreement:g}%), max |logit error| {100 * d['max_rel']:.3g}% of the "
            f"largest logit (--max-logit-error {o.max_logit_error:g}%); the closest (round {chosen}) was written to "
            f"{out} for inspection; raise --max-rounds or keep nodes in FP32 with --keep-float", out, manifest)
    return out, manifest


DESCRIPTION = """Convert an FP32 ONNX model to FP16; nodes that overflow or drift stay FP32, by measurement.

Tensors that would overflow FP16 stay FP32; then, on calibration images, the nodes that add the
most error are moved to FP32 round by round until the logits keep --max-disagreement and
--max-logit-error against FP32. The closest round is written; exit 1 when none kept the limits."""

EXAMPLES = """cpnet fp16 runs/quickstart/export/model.onnx                 # -> model.fp16.onnx
cpnet fp16 model.onnx --calib-data data/calib --num-images 16 --keep-float /head/MatMul
cpnet fp16 model.onnx --max-disagreement 0.05 --max-logit-error 1 --json fp16.json"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    d = Fp16Options()
    cli_args.add_input(p, "MODEL.onnx", "the FP32 model made by cpnet export (its manifest beside it)")
    cli_args.add_output(p, "output file (default: <stem>.fp16.onnx beside the input)")
    cli_args.add_calibration(p, DEFAULT_NUM_IMAGES)
    g = p.add_argument_group("float nodes and drift limits")
    cli_args.add_keep_float(g, "FP16")
    cli_args.add_max_disagreement(g, d.max_disagreement)
    g.add_argument("--max-logit-error", type=cli_args.percent, default=d.max_logit_error, metavar="PERCENT",
                   help=f"largest |logit difference| from FP32, in percent of the largest FP32 |logit| "
                        f"(default {d.max_logit_error:g})")
    g.add_argument("--max-rounds", type=cli_args.non_negative_int, default=d.max_rounds, metavar="N",
                   help=f"drift rounds at most (default {d.max_rounds})")
    g.add_argument("--nodes-per-round", type=cli_args.positive_int, default=d.nodes_per_round, metavar="N",
                   help=f"nodes moved to FP32 per round (default {d.nodes_per_round})")
    g.add_argument("--range-limit", type=cli_args.non_negative_float, default=d.range_limit, metavar="VALUE",
                   help=f"activations beyond this magnitude stay FP32 (default {d.range_limit:g}; FP16's largest "
                        f"finite value is {FP16_MAX:g})")
    cli_args.add_json(p, "the manifest of the FP16 file")
    cli_args.add_runtime(p)


def run(args) -> int:
    from cpnet.cli import args as cli_args

    from .logit_drift import make_and_report

    options = Fp16Options(**cli_args.keep_float_options(args),
                          max_disagreement=args.max_disagreement, max_logit_error=args.max_logit_error,
                          max_rounds=args.max_rounds, nodes_per_round=args.nodes_per_round,
                          range_limit=args.range_limit)
    return make_and_report(convert_fp16, options, args)


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb(__spec__.name, argv)


if __name__ == "__main__":
    sys.exit(main())
