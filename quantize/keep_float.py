"""``--keep-float auto``: leave the most sensitive nodes in float, one at a time, until the drift limit holds.

Starting from the model with every node quantized (less the nodes named with
``--keep-float``), the Conv/MatMul/Gemm nodes are ranked by sensitivity
(:func:`quantize.sensitivity.rank_nodes`) and tried worst first. A node is kept
in float only when that clearly lowers the drift -- 2% less argmax disagreement,
or as little and 5% less mean |logit difference| -- so noise does not fill the
list. The search stops when the disagreement is within the limit, when
``max_keep_float`` nodes are kept, or after ``2 * max_keep_float`` tries.

Disagreement is a label-free stand-in for mIoU drift (calibration images have
no labels). Measured on the trained quickstart model (synthetic val, 100
images): 0.33% disagreement went with 0.03 mIoU points of drift, 0.98% with 0.38
and 1.64% with 0.93, so the default aim of 0.5% keeps mIoU drift well under 0.5
points there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from cpnet.runtime.compare import Comparison
from cpnet.runtime.log import get_logger

from .logit_drift import Reference
from .int8_parent import Int8Parent
from .sensitivity import rank_nodes

log = get_logger("int8")


def clearly_better(tried: Comparison, current: Comparison) -> bool:
    """A real gain, not noise: 2% less disagreement, or as little and 5% less mean |logit difference|."""
    return (tried.disagreement_percent < 0.98 * current.disagreement_percent
            or (tried.disagreement_percent <= current.disagreement_percent
                and tried.mean_abs < 0.95 * current.mean_abs))


def _step(tried: str | None, kept: bool, result: Comparison) -> dict:
    return {"tried": tried, "kept": kept, "mean_abs": result.mean_abs,
            "disagreement_percent": result.disagreement_percent}


def search(prep: Int8Parent, ref: Reference, candidate: Path, excluded: Sequence[str], current: Comparison,
           target: float, max_keep_float: int, progress: bool = True) -> tuple[list[str], Comparison, dict]:
    """Greedy keep-float search from ``candidate`` (built with ``excluded`` in float, measuring ``current``).

    Returns (nodes in float, the final measurement, the record for the manifest); ``candidate`` is left
    holding the model built with the returned nodes in float.
    """
    excluded = list(excluded)
    steps = [_step(None, True, current)]
    log.info(f"keep-float auto: all quantized: argmax disagreement {current.disagreement_percent:.3f}% of pixels "
             f"(target <= {target}%), mean |dlogit| {current.mean_abs:.4f} on {len(ref.images)} images")
    if current.disagreement_percent > target:
        ranking = rank_nodes(prep, ref, exclude=excluded, progress=progress)
        order = [r["node"] for r in ranking if r["node"] not in excluded]
        trial = prep.workdir / "keep-float-trial.onnx"
        kept = 0
        for node in order[:max(0, 2 * max_keep_float)]:   # bounded: at most 2x the nodes tried
            if kept >= max_keep_float:
                break
            prep.build(trial, exclude=[*excluded, node])
            result = ref.measure(trial)
            better = clearly_better(result, current)
            steps.append(_step(node, better, result))
            log.info(f"keep-float auto: {'+' if better else '-'} {node}: disagreement "
                     f"{result.disagreement_percent:.3f}%, mean |dlogit| {result.mean_abs:.4f}"
                     f"{'' if better else ' (no better: stays quantized)'}")
            if better:
                os.replace(trial, candidate)
                excluded.append(node)
                kept += 1
                current = result
                if current.disagreement_percent <= target:
                    break
    record = {"target": target, "met": current.disagreement_percent <= target, "max_keep_float": max_keep_float,
              "steps": steps}
    return excluded, current, record
