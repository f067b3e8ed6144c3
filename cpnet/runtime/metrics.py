"""Segmentation metrics from a confusion matrix: IoU per class, mIoU, pixel and mean accuracy.

The one mIoU implementation: evaluation, the drift report and the tests all use
it. NumPy only; torch tensors are accepted (and the matrix summed over
processes) without this module importing torch.
"""

from __future__ import annotations

import math

import numpy as np


class ConfusionMatrix:
    """Accumulates a (num_classes x num_classes) matrix, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        """Add predicted and ground-truth label maps of any (equal) shape; numpy or torch."""
        pred = _int64(pred).reshape(-1)
        target = _int64(target).reshape(-1)
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        idx = target[keep] * self.num_classes + pred[keep]
        self.mat += np.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def all_reduce(self) -> None:
        """Sum the matrix over processes (no-op outside torch.distributed)."""
        import sys

        torch = sys.modules.get("torch")  # only a training or evaluation process has torch.distributed running
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            mat = torch.from_numpy(self.mat)
            if torch.distributed.get_backend() == "nccl":
                mat = mat.cuda()
            torch.distributed.all_reduce(mat)
            self.mat = mat.cpu().numpy()

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(true positives, ground-truth pixels, predicted pixels) per class: what IoU is computed from."""
        return np.diag(self.mat), self.mat.sum(1), self.mat.sum(0)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """mIoU etc. Classes absent from both ground truth and prediction get IoU NaN and are left out of means."""
        tp, gt, pred = (c.astype(np.float64) for c in self.counts())
        iou = iou_from_counts(tp, gt, pred)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = gt.sum()
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": float(miou_from_counts(tp, gt, pred)),
            "aAcc": float(tp.sum() / total * 100) if total > 0 else float("nan"),
            "mAcc": float(np.nanmean(acc) * 100) if (~np.isnan(acc)).any() else float("nan"),
            "per_class": {
                names[i]: {"IoU": _pct(iou[i]), "Acc": _pct(acc[i]), "pixels": int(gt[i])}
                for i in range(self.num_classes)
            },
            "pixels": int(total),
        }


def iou_from_counts(tp, gt, pred) -> np.ndarray:
    """IoU (fractions) from true positives, ground-truth and predicted pixel counts per class, vectorised.

    The arrays broadcast and the last axis is the class: (..., C) in, (..., C)
    out, NaN where a class is absent from both ground truth and prediction --
    the same rule as :meth:`ConfusionMatrix.compute`, for many matrices at once
    (the drift report's bootstrap sums per-image counts over resampled images).
    """
    tp, gt, pred = (np.asarray(a, dtype=np.float64) for a in (tp, gt, pred))
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou_from_counts(tp, gt, pred) -> np.ndarray:
    """mIoU in points over the last (class) axis of :func:`iou_from_counts`'s arguments; NaN where no class is present.

    The mean is over the classes present (IoU not NaN), as :meth:`ConfusionMatrix.compute`
    reports it; (..., C) in, (...) out, so the report's bootstrap gets one mIoU per resample.
    """
    iou = iou_from_counts(tp, gt, pred)
    present = ~np.isnan(iou)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.any(-1), np.nansum(iou, -1) / present.sum(-1), np.nan) * 100


def _int64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False)


def _pct(x: float) -> float | None:
    return None if math.isnan(x) else float(x * 100)


def format_table(result: dict) -> str:
    """A per-class table followed by the summary line, for the terminal."""
    rows = [f"{'class':<20}{'IoU':>8}{'Acc':>8}{'pixels':>12}"]
    for name, r in result["per_class"].items():
        iou = "-" if r["IoU"] is None else f"{r['IoU']:.2f}"
        acc = "-" if r["Acc"] is None else f"{r['Acc']:.2f}"
        rows.append(f"{name:<20}{iou:>8}{acc:>8}{r['pixels']:>12}")
    rows.append(f"{'mIoU':<20}{result['mIoU']:>8.2f}   aAcc {result['aAcc']:.2f}   mAcc {result['mAcc']:.2f}")
    return "\n".join(rows)
