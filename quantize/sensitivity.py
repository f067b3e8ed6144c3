"""Per-node INT8 sensitivity: how much quantizing each node ALONE moves the output.

    cpnet sensitivity runs/q/model.onnx --calib-data data/synthetic/images/train --top 10

For every quantizable node (Conv, ConvTranspose, MatMul, Gemm) a model is built
with only that node quantized (its inputs, weights and output get Q/DQ, with the
flavour's settings and the saved calibration ranges -- no new calibration pass
when ``cpnet int8`` already ran on the same images), run on the first
``--eval-images`` calibration images, and compared with the FP32 model by
:mod:`quantize.logit_drift` (:func:`cpnet.runtime.compare.compare`'s figures):

- ``mean_abs``: mean absolute difference of the logits (``mean |dlogit|``);
- ``disagreement_percent``: pixels whose argmax class differs from FP32's (``disagree %``).

Nodes are ranked by disagreement, then by mean |dlogit| (disagreement is what
mIoU sees; the logit difference breaks the many ties at 0 on small sets).
``cpnet int8 --keep-float auto`` uses the same ranking (:mod:`quantize.keep_float`).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from cpnet.runtime.log import get_logger
from cpnet.runtime.options import CalibrationOptions, RuntimeOptions

from . import qdq
from .logit_drift import Reference
from .int8_parent import DEFAULT_NUM_IMAGES, Int8Options, Int8Parent, prepare

log = get_logger("sensitivity")


def rank_nodes(prep: Int8Parent, ref: Reference, exclude: Sequence[str] = (),
               nodes: Sequence[tuple[str, str]] | None = None, progress: bool = True) -> list[dict]:
    """Sensitivity of each quantizable node (see the module docstring), worst first."""
    import onnx

    if nodes is None:
        nodes = qdq.quantizable_nodes(onnx.load(str(prep.pre_path)))
    nodes = [(n, t) for n, t in nodes if n not in set(exclude)]
    path = prep.workdir / "one-node.onnx"
    rows = []
    bar = None
    if progress:
        from cpnet.runtime.progress import progress as progress_bar

        bar = progress_bar(total=len(nodes), desc="sensitivity", unit="node")
    try:
        for name, op_type in nodes:
            prep.build(path, include=[name])
            result = ref.measure(path)
            rows.append({"node": name, "op_type": op_type, "mean_abs": result.mean_abs,
                         "disagreement_percent": result.disagreement_percent})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    rows.sort(key=lambda r: (r["disagreement_percent"], r["mean_abs"]), reverse=True)
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def rank_sensitivity(onnx_path: "str | Path", options: Int8Options = Int8Options(),
                     calibration: CalibrationOptions = CalibrationOptions(num_images=DEFAULT_NUM_IMAGES),
                     runtime: RuntimeOptions = RuntimeOptions(), **overrides) -> dict:
    """Rank the nodes of an FP32 model by INT8 sensitivity; return the report (what ``--json`` writes):
    model, flavour, method, images, ``ranking`` (rows worst first) and ``all_quantized`` (every node
    quantized, against FP32, :meth:`Comparison.metrics`)."""
    o = replace(options, **overrides) if overrides else options
    with prepare(onnx_path, o, calibration, runtime, replace_named=False) as prep:
        ref = prep.reference()
        rows = rank_nodes(prep, ref, progress=runtime.progress)
        everything = prep.build(prep.workdir / "all-nodes.onnx")
        all_quantized = ref.measure(everything).metrics()
    return {"model": str(onnx_path), "flavour": o.flavour, "method": o.method, "images": len(ref.images),
            "ranking": rows, "all_quantized": all_quantized}


def format_table(rows: list[dict], top: int | None = None) -> str:
    shown = rows[:top] if top else rows
    width = max([len("node")] + [len(r["node"]) for r in shown])
    lines = [f"{'rank':>4}  {'node':<{width}}  {'op':<8} {'mean |dlogit|':>13} {'disagree %':>10}"]
    for r in shown:
        lines.append(f"{r['rank']:>4}  {r['node']:<{width}}  {r['op_type']:<8} {r['mean_abs']:>13.5f} "
                     f"{r['disagreement_percent']:>10.3f}")
    if top and len(rows) > top:
        lines.append(f"({len(rows) - top} more nodes; --top 0 shows all)")
    return "\n".join(lines)


DESCRIPTION = """Rank a model's nodes by INT8 sensitivity: each one quantized alone, against FP32.

Each Conv/ConvTranspose/MatMul/Gemm is quantized alone (the flavour's rules, the saved
calibration ranges of cpnet int8 when they fit) and compared with FP32 on the first
--eval-images calibration images: the share of pixels whose class changes, then the mean
|logit difference|. The worst nodes are the ones to keep in float (cpnet int8 --keep-float)."""

EXAMPLES = """cpnet sensitivity runs/quickstart/export/model.onnx --calib-data data/synthetic --top 10
cpnet sensitivity model.onnx --calib-data data/calib --flavour cpu --method percentile --json sensitivity.json"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    from .int8_parent import add_int8_arguments

    add_int8_arguments(p)
    p.add_argument("--top", type=cli_args.non_negative_int, default=20, metavar="N",
                   help="rows to print (default 20; 0 = all)")
    cli_args.add_json(p, "the full ranking")


def run(args) -> int:
    from cpnet.cli.args import calibration_options, runtime_options
    from cpnet.runtime import atomic_write_json
    from cpnet.runtime.files import check_output

    from .int8_parent import int8_options

    if args.json:
        check_output(args.json, what="--json file")  # before any work
    report = rank_sensitivity(args.input, int8_options(args), calibration_options(args), runtime_options(args))
    every = report["all_quantized"]
    print(f"sensitivity of {args.input} ({report['flavour']} flavour, {report['method']} ranges, "
          f"{report['images']} images; each node quantized alone vs FP32):")
    print(format_table(report["ranking"], args.top or None))
    print(f"all nodes quantized: mean |dlogit| {every['mean_abs']:.5f}, "
          f"disagree {every['disagreement_percent']:.3f}%")
    if args.json:
        atomic_write_json(args.json, report)
        log.info(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb(__spec__.name, argv)


if __name__ == "__main__":
    sys.exit(main())
