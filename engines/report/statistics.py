"""The paired bootstrap over images: resample weights, mIoU and IoU per resample, percentile intervals."""

from __future__ import annotations

import numpy as np


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) float64: how often each image is drawn in each bootstrap resample (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap_stats(counts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: (mIoU in points (B,), per-class IoU in points (B, C)) from per-image counts (N, 3, C).

    Sums of integer counts times integer weights are exact in float64, so the
    same counts give bit-identical statistics whatever the summation order.
    """
    from cpnet.runtime.metrics import iou_from_counts, miou_from_counts

    n, three, c = counts.shape
    summed = (weights @ counts.reshape(n, three * c).astype(np.float64)).reshape(-1, three, c)
    tp, gt, pred = summed[:, 0], summed[:, 1], summed[:, 2]
    return miou_from_counts(tp, gt, pred), iou_from_counts(tp, gt, pred) * 100


def interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    """The central ``confidence`` percentile interval of bootstrap samples (NaN ignored); None if all NaN."""
    samples = np.asarray(samples, np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]
