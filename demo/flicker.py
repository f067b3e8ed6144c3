"""Temporal stability of the live segmentation: how much it flickers, and an EMA that reduces it.

A segmentation that is right on every frame can still flicker: pixels whose class changes from one
frame to the next although the scene did not. :class:`FlickerMeter` measures the label-change rate
between consecutive frames (the share of the model-output pixels whose class changes), overall and
where the input itself barely changed (the grey-level difference of the frame, at the model's output
size, below ``still_threshold``): overall includes the changes motion causes, "still" isolates the ones
it cannot explain. A pair of frames whose mean grey-level difference exceeds ``cut_threshold`` is a
scene cut: it is not counted, and the smoothing starts over.

:class:`ProbabilitySmoother` (``cpnet demo --smooth A``) keeps an exponential moving average of the
class probabilities (softmax of the logits) over frames, ``p = A * p_new + (1 - A) * p``, reset on a
scene cut; the argmax of the average is drawn. :class:`Temporal` is the drawing thread's hook
(:class:`demo.live_loop.LiveLoop`'s ``temporal``): it turns each frame's logits into the label map to
draw and measures both the raw and, when smoothing, the smoothed change rates, and the extra ms.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from .live_loop import labels_from_logits

#: Grey levels (0-255) under which a pixel's input "barely changed" between two frames.
STILL_THRESHOLD = 6.0
#: Mean grey-level difference over which two consecutive frames are a scene cut.
CUT_THRESHOLD = 40.0


def grey_at(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame as float32 grey levels at (h, w), area-averaged (the pixels a model-output cell covers)."""
    h, w = size
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    if grey.shape[:2] != (h, w):
        grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32)


class FlickerMeter:
    """Label-change rates between consecutive frames: :meth:`update` per frame, :meth:`figures` for the totals.

    ``rate``: changed pixels / pixels, averaged over the frame pairs counted; ``still_rate``: changed
    still pixels / still pixels, summed over the pairs (a pair with few still pixels weighs little).
    ``recent`` and ``recent_still`` follow the last frames (an EMA over about ten), for the HUD.
    """

    def __init__(self, still_threshold: float = STILL_THRESHOLD, cut_threshold: float = CUT_THRESHOLD):
        self.still_threshold = float(still_threshold)
        self.cut_threshold = float(cut_threshold)
        self.pairs = 0
        self.cuts = 0
        self._rate_sum = 0.0
        self._still_changed = 0
        self._still_pixels = 0
        self._prev: np.ndarray | None = None
        self.recent: float | None = None
        self.recent_still: float | None = None

    def update(self, labels: np.ndarray, grey: np.ndarray, cut: bool = False) -> None:
        """Count one frame: its label map and its grey levels at the same size (:func:`grey_at`)."""
        prev, self._prev = self._prev, (labels.copy(), grey)
        if prev is None or cut:
            if cut:
                self.cuts += 1
            return
        changed = labels != prev[0]
        still = np.abs(grey - prev[1]) < self.still_threshold
        rate = float(changed.mean())
        n_still = int(still.sum())
        still_changed = int(np.count_nonzero(changed & still))
        self.pairs += 1
        self._rate_sum += rate
        self._still_changed += still_changed
        self._still_pixels += n_still
        self.recent = rate if self.recent is None else self.recent + 0.1 * (rate - self.recent)
        if n_still:
            r = still_changed / n_still
            self.recent_still = r if self.recent_still is None else self.recent_still + 0.1 * (r - self.recent_still)

    @property
    def rate(self) -> float | None:
        return self._rate_sum / self.pairs if self.pairs else None

    @property
    def still_rate(self) -> float | None:
        return self._still_changed / self._still_pixels if self._still_pixels else None

    def figures(self) -> dict:
        """Percentages (None before two frames), the pairs counted and the scene cuts skipped."""
        def pct(v):
            return None if v is None else round(100.0 * v, 3)

        return {"change_pct": pct(self.rate), "still_change_pct": pct(self.still_rate),
                "recent_change_pct": pct(self.recent), "recent_still_change_pct": pct(self.recent_still),
                "pairs": self.pairs, "scene_cuts": self.cuts}


def softmax(logits: np.ndarray) -> np.ndarray:
    """(1, C, h, w) or (C, h, w) logits -> (C, h, w) float32 probabilities over C."""
    x = np.asarray(logits, np.float32)
    x = x[0] if x.ndim == 4 else x
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


class ProbabilitySmoother:
    """An exponential moving average of the class probabilities over frames; ``alpha`` = the new frame's weight."""

    def __init__(self, alpha: float):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"the smoothing weight must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._mean: np.ndarray | None = None

    def reset(self) -> None:
        self._mean = None

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """The running mean (C, h, w) after this frame's logits."""
        p = softmax(logits)
        if self._mean is None or self._mean.shape != p.shape:
            self._mean = p
        else:
            self._mean *= 1.0 - self.alpha
            self._mean += self.alpha * p
        return self._mean


class Temporal:
    """The drawing thread's hook: ``temporal(frame_bgr, logits) -> labels`` (uint8, the model's output size).

    Measures the raw label maps' flicker always, and with ``smooth`` (the EMA weight) draws the
    smoothed labels and measures their flicker too, and the ms the smoothing adds per frame.
    Thread-safe :meth:`figures` for the HUD, ``/stats`` and the summary.
    """

    def __init__(self, smooth: float | None = None, still_threshold: float = STILL_THRESHOLD,
                 cut_threshold: float = CUT_THRESHOLD):
        self.raw = FlickerMeter(still_threshold, cut_threshold)
        self.smoothed = FlickerMeter(still_threshold, cut_threshold) if smooth else None
        self.smoother = ProbabilitySmoother(smooth) if smooth else None
        self.cut_threshold = float(cut_threshold)
        self._prev_grey: np.ndarray | None = None
        self._smooth_ms = 0.0
        self._frames = 0
        self._lock = threading.Lock()

    def __call__(self, frame_bgr: np.ndarray, logits: np.ndarray) -> np.ndarray:
        labels = labels_from_logits(logits)
        grey = grey_at(frame_bgr, labels.shape)
        cut = self._prev_grey is not None and float(np.abs(grey - self._prev_grey).mean()) > self.cut_threshold
        self._prev_grey = grey
        with self._lock:
            self.raw.update(labels, grey, cut)
        if self.smoother is None:
            return labels
        t0 = time.perf_counter()
        if cut:
            self.smoother.reset()
        labels = labels_from_logits(self.smoother(logits)[None])
        ms = (time.perf_counter() - t0) * 1000.0
        with self._lock:
            self.smoothed.update(labels, grey, cut)
            self._smooth_ms += ms
            self._frames += 1
        return labels

    def figures(self) -> dict:
        with self._lock:
            out = {"raw": self.raw.figures(), "still_threshold": self.raw.still_threshold,
                   "cut_threshold": self.cut_threshold}
            if self.smoother is not None:
                out["smooth"] = self.smoother.alpha
                out["smoothed"] = self.smoothed.figures()
                out["smooth_ms_per_frame"] = round(self._smooth_ms / self._frames, 3) if self._frames else None
            return out


def hud_line(figures: dict) -> str:
    """One HUD line: the recent change rates, raw and (when smoothing) smoothed."""
    def part(f):
        if f["recent_change_pct"] is None:
            return "--"
        still = f["recent_still_change_pct"]
        return f"{f['recent_change_pct']:.1f}%" + (f" (still {still:.1f}%)" if still is not None else "")

    line = f"flicker {part(figures['raw'])}"
    if "smoothed" in figures:
        line += f"  smoothed {part(figures['smoothed'])}"
    return line


def summary_lines(figures: dict) -> list[str]:
    """The summary's flicker lines: the whole run's change rates, raw and smoothed, and the smoothing's cost."""
    def part(f):
        if f["change_pct"] is None:
            return "fewer than two frames"
        still = f["still_change_pct"]
        return (f"{f['change_pct']:.2f}% of pixels change class per frame, {'-' if still is None else f'{still:.2f}%'} "
                f"where the input barely changed ({f['pairs']} frame pairs, {f['scene_cuts']} scene cuts skipped)")

    lines = [f"flicker: {part(figures['raw'])}"]
    if "smoothed" in figures:
        ms = figures.get("smooth_ms_per_frame")
        lines.append(f"flicker with --smooth {figures['smooth']:g}: {part(figures['smoothed'])}; "
                     f"+{ms if ms is not None else 0:.2f} ms per frame")
    return lines
