"""Where two ONNX files part: every matched intermediate tensor exposed as an output, run on the same images.

    result = layer_errors("model.int8.onnx", "model.onnx", images, threads=2)
    result.first_past(5.0)       # the first layer (reference graph order) whose error passes 5 %

The layers are the tensors :func:`engines.layers.onnx_graph.match_tensors` pairs. Both files are run with
those tensors added to their graph outputs (:func:`cpnet.runtime.graph.with_outputs`) and ONNX Runtime's
graph optimisation off (``make_session(..., optimization="none")``): a tensor that is also a graph output
changes what ONNX Runtime fuses (a QLinearConv fused from DQ -> Conv -> Q breaks when the Conv output is
observed), so the exposed run is the graph as written, node by node. How far that run's own outputs are
from the deployed file's (full optimisation, as ``engines.open`` runs it) is reported beside the layers by
the caller (:mod:`engines.compare`), from :attr:`LayerErrors.unfused_outputs`.

Each layer's error is :func:`cpnet.runtime.compare.compare` of the candidate's tensor against the
reference's over all images (tensors that are not (N, C, H, W) are compared flattened to (N, 1, size, 1)).
The figure a threshold applies to is its ``mean_rel``: the mean |difference| in percent of the mean
|reference value|. Not ``max_rel`` (the largest |difference| in percent of the largest |value|): INT8
calibration clips the rare largest values of a tensor on purpose (entropy, percentile), so nearly every
quantized tensor passes 10 % by that figure, at the first clipped one; the table shows both. ``added`` is a
layer's error minus the largest error of its matched inputs: the error the layer itself brought in.

Memory: the exposed tensors of one image are held for both files at once, in groups of at most
``budget_bytes`` (each group one more pair of runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cpnet.runtime.compare import Comparison
from cpnet.runtime.graph import load_onnx, with_outputs
from cpnet.runtime.ort import make_session

from .onnx_graph import Match, alias_roots, match_tensors

DEFAULT_BUDGET_BYTES = 1 << 30


def tensor_info(model) -> dict:
    """name -> (elem_type, shape) of every tensor ONNX shape inference can type (the FP16 stage's helper)."""
    from quantize.fp16 import tensor_info as infer

    return infer(model)


@dataclass
class LayerError:
    match: Match
    comparison: Comparison
    added: float = 0.0  # percent points of error this layer adds over its inputs'

    @property
    def percent(self) -> float:
        """The layer's error: mean |difference| in percent of the mean |reference value|."""
        return 100.0 * self.comparison.mean_rel

    def as_dict(self) -> dict:
        m = self.comparison.metrics()
        return {**self.match.as_dict(), "error_percent": self.percent, "added_percent": self.added,
                "max_rel_percent": 100.0 * m["max_rel"], "max_abs": m["max_abs"], "mean_abs": m["mean_abs"],
                "max_abs_reference": m["max_abs_logit"]}


@dataclass
class LayerErrors:
    layers: list[LayerError]
    unmatched: dict
    images: int
    #: per side ("candidate", "reference"), per image, the graph outputs of the exposed (unfused) run
    unfused_outputs: dict = field(default_factory=dict)

    def first_past(self, percent: float) -> LayerError | None:
        return next((e for e in self.layers if e.percent > percent), None)

    def largest_added(self) -> LayerError | None:
        return max(self.layers, key=lambda e: e.added, default=None)


def as_nchw(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        return x
    n = x.shape[0] if x.ndim >= 2 else 1
    return x.reshape(n, 1, -1, 1)


def _chunks(matches: Sequence[Match], info: dict, budget: int) -> list[list[Match]]:
    from cpnet.runtime.graph import tensor_bytes, within_budget

    # float32 in both files: 8 bytes per element
    return within_budget(matches, lambda m: tensor_bytes(info.get(m.reference, (None, []))[1] or [1], 8), budget)


def _added(reference, layers: list[LayerError]) -> None:
    """Each layer's error minus the largest error among the layers its producer reads (in the reference)."""
    roots = alias_roots(reference)
    error = {e.match.tensor: e.percent for e in layers}
    node_of = {n.name or (n.output[0] if n.output else ""): n for n in reference.graph.node}
    for e in layers:
        node = node_of.get(e.match.node)
        inputs = [roots.get(x, x) for x in (node.input if node is not None else ())]
        e.added = e.percent - max((error[x] for x in inputs if x in error), default=0.0)


def layer_errors(candidate: "str | Path", reference: "str | Path", images: Sequence[np.ndarray],
                 threads: int | None = None, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> LayerErrors:
    """Every matched layer of ``candidate`` (A) against ``reference`` (B) on ``images`` (preprocessed
    (1, 3, H, W) float32 arrays, the same for both), in B's graph order."""
    a = load_onnx(candidate)
    b = load_onnx(reference)
    a_info, b_info = tensor_info(a), tensor_info(b)
    matches, unmatched = match_tensors(a, a_info, b, b_info)
    a_in, b_in = a.graph.input[0].name, b.graph.input[0].name
    a_outs, b_outs = [o.name for o in a.graph.output], [o.name for o in b.graph.output]
    comparisons = {m.tensor: Comparison() for m in matches}
    unfused = {"candidate": [], "reference": []}
    for k, chunk in enumerate(_chunks(matches, b_info, budget_bytes) or [[]]):
        a_names = list(dict.fromkeys(a_outs + [m.candidate for m in chunk]))
        b_names = list(dict.fromkeys(b_outs + [m.reference for m in chunk]))
        sa = make_session(with_outputs(a, a_names, a_info), threads, optimization="none",
                          what=f"{candidate} (tensors exposed)")
        sb = make_session(with_outputs(b, b_names, b_info), threads, optimization="none",
                          what=f"{reference} (tensors exposed)")
        for x in images:
            ra = dict(zip(a_names, sa.run(a_names, {a_in: x})))
            rb = dict(zip(b_names, sb.run(b_names, {b_in: x})))
            for m in chunk:
                ta, tb = as_nchw(ra[m.candidate]), as_nchw(rb[m.reference])
                if ta.shape == tb.shape:
                    comparisons[m.tensor].update(ta, tb)
            if k == 0:
                unfused["candidate"].append({n: np.asarray(ra[n], np.float32) for n in a_outs})
                unfused["reference"].append({n: np.asarray(rb[n], np.float32) for n in b_outs})
        del sa, sb
    layers = [LayerError(m, comparisons[m.tensor]) for m in matches if comparisons[m.tensor].values]
    unmatched = {**unmatched, "shape_differs": len(matches) - len(layers)}
    _added(b, layers)
    return LayerErrors(layers, unmatched, len(images), unfused)
