"""Logits of a candidate model against a reference: one fixed set of metrics, used by every check.

Export parity (ONNX against PyTorch), FP16 and INT8 (against FP32) and the tests
all measure with :func:`compare`, so a figure means the same thing everywhere:

- ``max_abs``: the largest |candidate - reference| over every logit;
- ``max_rel``: ``max_abs`` divided by the largest |reference logit| (scale-free);
- ``mean_abs``: the mean |candidate - reference|;
- ``mean_rel``: ``mean_abs`` divided by the mean |reference| (scale-free, and unlike ``max_rel`` not moved by
  a few clipped outliers: the per-layer figure of ``cpnet compare --layers``);
- ``max_abs_logit``: the largest |reference logit|;
- ``agreement``: the fraction of pixels whose argmax class is the same;
- ``disagreement_percent``: ``100 * (1 - agreement)``, the unit of ``--max-disagreement``.

A non-finite candidate logit makes ``max_abs`` and ``mean_abs`` infinite, so no
gate passes a model that overflowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np


@dataclass
class Comparison:
    images: int = 0
    pixels: int = 0
    agreeing: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    values: int = 0
    max_abs_logit: float = 0.0
    sum_abs_reference: float = 0.0

    def update(self, candidate, reference) -> "Comparison":
        """Add one batch of logits, (N, C, H, W) each (numpy, or torch on the training side)."""
        cand = _numpy(candidate)
        ref = _numpy(reference)
        if cand.shape != ref.shape:
            raise ValueError(f"candidate logits {cand.shape} and reference logits {ref.shape} differ in shape")
        if ref.ndim == 3:
            cand, ref = cand[None], ref[None]
        diff = np.abs(cand - ref)
        finite = bool(np.isfinite(diff).all())
        self.max_abs = max(self.max_abs, float(diff.max()) if finite else float("inf"))
        self.sum_abs += float(diff.sum()) if finite else float("inf")
        self.values += diff.size
        self.max_abs_logit = max(self.max_abs_logit, float(np.abs(ref).max()))
        self.sum_abs_reference += float(np.abs(ref).sum())
        self.agreeing += int((cand.argmax(1) == ref.argmax(1)).sum())
        self.pixels += ref.shape[0] * ref.shape[2] * ref.shape[3]
        self.images += ref.shape[0]
        return self

    @property
    def max_rel(self) -> float:
        return self.max_abs / max(self.max_abs_logit, 1e-12)

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / max(self.values, 1)

    @property
    def mean_rel(self) -> float:
        return self.sum_abs / max(self.sum_abs_reference, 1e-12)

    @property
    def agreement(self) -> float:
        return self.agreeing / max(self.pixels, 1)

    @property
    def disagreement_percent(self) -> float:
        return 100.0 * (1.0 - self.agreement)

    def metrics(self) -> dict:
        """The fixed set of figures, for manifests, logs and JSON."""
        raw = asdict(self)
        return {"images": raw["images"], "max_abs": self.max_abs, "max_rel": self.max_rel,
                "mean_abs": self.mean_abs, "max_abs_logit": self.max_abs_logit,
                "agreement": self.agreement, "disagreement_percent": self.disagreement_percent}

    def summary(self) -> str:
        return (f"max |logit diff| {self.max_abs:.3g} ({100 * self.max_rel:.3g}% of the largest logit), "
                f"argmax agreement {100 * self.agreement:.3f}% on {self.images} image(s)")


def compare(candidate: Iterable, reference: Iterable) -> Comparison:
    """Compare paired sequences of logits (or one pair of arrays) and return the :class:`Comparison`."""
    if hasattr(candidate, "shape"):
        return Comparison().update(candidate, reference)
    c = Comparison()
    for a, b in zip(candidate, reference, strict=True):
        c.update(a, b)
    return c


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
