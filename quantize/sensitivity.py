"""Per-node INT8 sensitivity: how much quantizing each node ALONE moves the output.

    python -m quantize sensitivity runs/q/model.onnx --calib-data data/synthetic/images/train --top 10

For every quantizable node (Conv, ConvTranspose, MatMul, Gemm) a model is built
with only that node quantized (its inputs, weights and output get Q/DQ, with the
flavour's settings and the saved calibration ranges -- no new calibration pass
when ``python -m quantize int8`` already ran on the same images), run on the
first ``--eval-images`` calibration images, and compared with the FP32 model:

- ``mean |dlogit|``: mean absolute difference of the logits;
- ``disagree %``: pixels whose argmax class differs from FP32's.

Nodes are ranked by disagreement, then by mean |dlogit| (disagreement is what
mIoU sees; the logit difference breaks the many ties at 0 on small sets).
``python -m quantize int8 --keep-float auto`` uses the same ranking.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cpnet.runtime import UserError, atomic_write_json

from . import int8


def rank_nodes(prep, ref, method: str, flavour: str, percentile: float = 99.999, exclude: Sequence[str] = (),
               progress: bool = True, nodes: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Sensitivity of each quantizable node (see the module docstring), worst first."""
    import onnx

    if nodes is None:
        nodes = int8.quantizable_nodes(onnx.load(str(prep.pre_path)))
    nodes = [(n, t) for n, t in nodes if n not in set(exclude)]
    path = prep.workdir / "one-node.onnx"
    rows = []
    it = nodes
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(nodes, desc="sensitivity", unit="node", dynamic_ncols=True)
        it = bar
    try:
        for name, op_type in it:
            int8.build(prep, path, method, flavour, percentile, include=[name])
            mad, dis = ref.compare(path)
            rows.append({"node": name, "op_type": op_type, "mean_abs_diff": mad, "disagree_pct": dis})
    finally:
        if bar is not None:
            bar.close()
    rows.sort(key=lambda r: (r["disagree_pct"], r["mean_abs_diff"]), reverse=True)
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def format_table(rows: list[dict], top: int | None = None) -> str:
    shown = rows[:top] if top else rows
    width = max([len("node")] + [len(r["node"]) for r in shown])
    lines = [f"{'rank':>4}  {'node':<{width}}  {'op':<8} {'mean |dlogit|':>13} {'disagree %':>10}"]
    for r in shown:
        lines.append(f"{r['rank']:>4}  {r['node']:<{width}}  {r['op_type']:<8} {r['mean_abs_diff']:>13.5f} "
                     f"{r['disagree_pct']:>10.3f}")
    if top and len(rows) > top:
        lines.append(f"({len(rows) - top} more nodes; --top 0 shows all)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize sensitivity",
                                description="Rank nodes by how much quantizing each one alone moves the output.")
    int8.add_common_args(p)
    p.add_argument("--top", type=int, default=20, help="rows to print (default 20; 0 = all)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full ranking as JSON")
    args = p.parse_args(argv)
    try:
        with int8.prepare(args.onnx, args.calib_data, args.num_images, args.data_root, args.seed, args.ranges,
                          None, args.recalibrate, not args.no_progress, threads=args.threads) as prep:
            ref = int8.reference(prep, args.eval_images)
            rows = rank_nodes(prep, ref, args.method, args.flavour, args.percentile, progress=not args.no_progress)
            mad, dis = ref.compare(_full(prep, args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"sensitivity of {args.onnx} ({args.flavour} flavour, {args.method} ranges, "
          f"{len(ref.images)} images; each node quantized alone vs FP32):")
    print(format_table(rows, args.top or None))
    print(f"all nodes quantized: mean |dlogit| {mad:.5f}, disagree {dis:.3f}%")
    if args.json:
        atomic_write_json(args.json, {"model": str(args.onnx), "flavour": args.flavour, "method": args.method,
                                      "images": len(ref.images), "ranking": rows,
                                      "all_quantized": {"mean_abs_diff": mad, "disagree_pct": dis}})
        print(f"wrote {args.json}")
    return 0


def _full(prep, args):
    path = prep.workdir / "all-nodes.onnx"
    int8.build(prep, path, args.method, args.flavour, args.percentile)
    return path


if __name__ == "__main__":
    sys.exit(main())
