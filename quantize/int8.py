"""INT8 post-training quantization of a cpnet ONNX model: explicit Q/DQ, calibrated on real images.

    cpnet int8 runs/q/model.onnx --calib-data data/synthetic/images/train
    cpnet int8 runs/q/model.onnx --calib-data quickstart --data-root data/synthetic \\
        --flavour cpu --method percentile --keep-float auto

Quantizing a model is: prepare the parent (:mod:`quantize.int8_parent`: checked,
pre-processed, activation statistics collected in one pass over the calibration
images, or reused from ``model.calib.npz``), choose ranges (``--method``), insert
Q/DQ in the ``--flavour``'s format (:mod:`quantize.qdq`: ``tensorrt`` symmetric
INT8 placed as TensorRT fuses it -> ``model.int8.onnx``, ``cpu`` U8S8 for ONNX
Runtime -> ``model.int8-cpu.onnx``), optionally keep nodes in float
(``--keep-float NAMES``, or ``auto``: :mod:`quantize.keep_float`), put the
tensorrt flavour's unquantized layers in FP16 (``--high-precision fp16``, its
default: :mod:`quantize.high_precision`, opset 19), measure the drift against FP32
(:mod:`quantize.logit_drift`) and write the file with its manifest.

Ranges (:mod:`quantize.calibrate`): ``minmax``; ``percentile`` (of |x| for the
symmetric flavour, two-sided otherwise); ``entropy``, TensorRT's KL-divergence
threshold search, with candidate thresholds that clip more than 0.1% of the
values skipped (see ``calibrate.ENTROPY_MAX_CLIP`` for why).

Drift: the argmax disagreement with FP32 (percent of pixels, a label-free
stand-in for mIoU drift) on the first ``--eval-images`` calibration images is
always measured and recorded in the manifest. With ``--max-disagreement`` it is
a gate: beyond it the file is still written (the closest result, its manifest
says so) and the command exits 1. ``--keep-float auto`` aims at that limit, or
at 0.5% when none is given (and then gates on it too).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from cpnet.runtime.manifest import derive_manifest
from cpnet.runtime import SCHEMA, atomic_path, sha256_file, versions, write_manifest
from cpnet.runtime.files import artifact_sha256
from cpnet.runtime.log import get_logger
from cpnet.runtime.options import CalibrationOptions, RuntimeOptions

from . import calibrate as cal
from . import keep_float, qdq
from .logit_drift import DriftLimitExceeded
from .parent import check_output, derived_path
from .int8_parent import DEFAULT_NUM_IMAGES, HIGH_PRECISIONS, Int8Options, Int8Parent, prepare

log = get_logger("int8")


def default_output(parent: "str | Path", flavour: str) -> Path:
    """model.onnx -> model.int8.onnx (tensorrt flavour) or model.int8-cpu.onnx (cpu flavour)."""
    return derived_path(parent, ".int8.onnx" if flavour == "tensorrt" else ".int8-cpu.onnx")


def _calibration_record(prep: Int8Parent, excluded: list[str], out: Path) -> dict:
    o, c = prep.options, prep.calibration
    return {
        "method": o.method,
        **({"percentile": o.percentile} if o.method == "percentile" else {}),
        **({"entropy_max_clip": cal.ENTROPY_MAX_CLIP} if o.method == "entropy" else {}),
        "images": prep.num_images,
        "source": prep.description,
        "calib_data": c.data,
        "data_root": c.data_root,
        "per_channel": True,
        "flavour": o.flavour,
        "symmetric_activations": o.flavour == "tensorrt",
        "excluded_nodes": prep.float_group(excluded),
        "ranges_file": os.path.relpath(prep.ranges_file, out.parent),
        "ranges_sha256": sha256_file(prep.ranges_file),
        "ranges_reused": prep.reused,
        "seed": c.seed,
    }


def quantize_int8(onnx_path: "str | Path", out_path: "str | Path | None" = None, options: Int8Options = Int8Options(),
                  calibration: CalibrationOptions = CalibrationOptions(num_images=DEFAULT_NUM_IMAGES),
                  runtime: RuntimeOptions = RuntimeOptions(), **overrides) -> tuple[Path, dict]:
    """Write an INT8 model and its manifest (see the module docstring); return (path, manifest).

    ``overrides`` replace fields of ``options``. Raises :class:`DriftLimitExceeded` (after writing) when a
    disagreement limit is in force (:attr:`Int8Options.limit`) and the result misses it.
    """
    import onnx

    o = replace(options, **overrides) if overrides else options
    o.check()
    parent = Path(onnx_path)
    out = Path(out_path) if out_path else default_output(parent, o.flavour)
    check_output(out, parent)
    limit = o.limit

    with prepare(parent, o, calibration, runtime, out.parent) as prep:
        excluded = list(dict.fromkeys(o.keep_float))
        candidate = prep.workdir / "candidate.onnx"
        prep.build(candidate, exclude=excluded)
        ref = prep.reference()
        result = ref.measure(candidate)
        auto_record = None
        if o.auto_keep_float:
            excluded, result, auto_record = keep_float.search(prep, ref, candidate, excluded, result, limit,
                                                              o.max_keep_float, progress=runtime.progress)

        model = onnx.load(str(candidate))
        problems = qdq.check_qdq(model, o.flavour)
        if problems:
            raise RuntimeError(f"internal error: the {o.flavour} INT8 model breaks its rules: " + "; ".join(problems[:5]))
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
        manifest = derive_manifest(parent, prep.manifest, "onnx", "int8", parent_sha256=prep.parent_sha256,
                                   relative_to=out.parent)
        calibration_record = _calibration_record(prep, excluded, out)
        if auto_record is not None:
            calibration_record["keep_float_auto"] = auto_record
        met = limit is None or result.disagreement_percent <= limit
        manifest.update({
            "flavour": o.flavour,
            "opset": qdq.opset(model),
            "calibration": calibration_record,
            "quantization": qdq.options_record(qdq.flavour_options(o.flavour)),
            "high_precision": prep.precision_record,
            "drift": {"reference": f"the FP32 parent on the first {len(ref.images)} calibration image(s)",
                      "measured_on": "onnxruntime CPUExecutionProvider", **result.metrics(),
                      "max_disagreement": limit, "met": met},
            "sha256": artifact_sha256(out),
            "versions": versions(),
        })
        write_manifest(out, manifest)
    n_q = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
    n_dq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear")
    kept = calibration_record["excluded_nodes"]
    log.info(f"wrote {out} ({o.flavour} flavour in an {o.float_precision.upper()} graph, {o.method} ranges, "
             f"{n_q} QuantizeLinear / {n_dq} DequantizeLinear"
             f"{', nodes kept in float: ' + ', '.join(kept) if kept else ''}) and {out.name}.json")
    log.info(f"drift against FP32 on {len(ref.images)} image(s): argmax disagreement "
             f"{result.disagreement_percent:.3f}% of pixels"
             f"{f' (limit {limit:g}%)' if limit is not None else ''}, mean |dlogit| {result.mean_abs:.4f}")
    manifest = {"schema": SCHEMA, **manifest}
    if not met:
        which = (f"--max-disagreement {limit:g}%" if o.max_disagreement is not None
                 else f"{limit:g}% (--keep-float auto's aim; --max-disagreement sets it)")
        if o.auto_keep_float:
            how = f"with {len(kept)} node(s) in float (--max-keep-float {o.max_keep_float}); try --method percentile"
        else:
            how = "try --keep-float auto, --method percentile"
        raise DriftLimitExceeded(
            f"INT8 drift limit missed: argmax disagreement with FP32 {result.disagreement_percent:.3f}% of pixels > "
            f"{which} on {len(ref.images)} image(s); {out} written for inspection; {how} or more calibration images",
            out, manifest)
    return out, manifest


DESCRIPTION = """Quantize an FP32 ONNX model to INT8 (explicit Q/DQ), calibrated on real images.

The tensorrt flavour (symmetric INT8, per-channel weights, Q/DQ placed as TensorRT fuses it,
the rest of the graph in FP16 unless --high-precision fp32) is what TensorRT's explicit
quantization takes; the cpu flavour (U8S8, FP32) is ONNX Runtime's fast path on x86. Activation
statistics are saved beside the output and reused across --method/--flavour. The drift
against FP32 is measured on calibration images and recorded; --max-disagreement makes it
a gate (exit 1), --keep-float auto keeps the most sensitive nodes in float until it holds."""

EXAMPLES = """cpnet int8 runs/quickstart/export/model.onnx --calib-data data/synthetic   # -> model.int8.onnx
cpnet int8 model.onnx --calib-data data/synthetic --flavour cpu --method percentile  # -> model.int8-cpu.onnx
cpnet int8 model.onnx --calib-data data/synthetic --keep-float auto --max-disagreement 0.5 --json int8.json"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    from .int8_parent import DEFAULT_AUTO_TARGET, add_int8_arguments

    add_int8_arguments(p)
    cli_args.add_output(p, "output file (default <stem>.int8.onnx, or <stem>.int8-cpu.onnx for --flavour cpu, "
                    "beside the input)")
    p.add_argument("--high-precision", choices=HIGH_PRECISIONS, default=None,
                   help="what the layers left unquantized run in: fp16 (default for the tensorrt flavour: INT8 Q/DQ "
                        "in an FP16 graph at opset 19, NVIDIA's recipe) or fp32 (the cpu flavour's only choice)")
    g = p.add_argument_group("float nodes and drift limits")
    cli_args.add_keep_float(g, "INT8", auto=True)
    # Not cli.args.add_max_disagreement: here the default is "no limit" (the share is measured and recorded).
    g.add_argument("--max-disagreement", type=cli_args.percent, default=None, metavar="PERCENT",
                   help="largest share of pixels whose class may differ from the FP32 model's on the --eval-images "
                        "images, in percent; exit 1 beyond it (no labels needed; default: no limit, the share is "
                        f"measured and recorded; --keep-float auto aims at {DEFAULT_AUTO_TARGET:g} then)")
    g.add_argument("--max-keep-float", type=cli_args.non_negative_int, default=Int8Options().max_keep_float, metavar="N",
                   help=f"--keep-float auto: at most this many nodes left in float "
                        f"(default {Int8Options().max_keep_float})")
    cli_args.add_json(p, "the manifest of the INT8 file")


def run(args) -> int:
    from cpnet.cli import args as cli_args

    from .logit_drift import make_and_report
    from .int8_parent import int8_options

    options = int8_options(args, **cli_args.keep_float_options(args, auto=True), max_disagreement=args.max_disagreement,
                           max_keep_float=args.max_keep_float, high_precision=args.high_precision)
    return make_and_report(quantize_int8, options, args)


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb(__spec__.name, argv)


if __name__ == "__main__":
    sys.exit(main())
