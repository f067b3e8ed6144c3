"""Drawing a segmented frame: overlay, side-by-side or mask; the legend; the HUD; the context-prior view.

Everything works on BGR uint8 images, as OpenCV captures and shows them; the palette in a
manifest is RGB and is turned into a BGR lookup table once. Colouring a label map is one
``cv2.LUT`` (the label map repeated to three channels), not a numpy gather.

The prior view (``--show-prior``, key ``p``) shows, for one pixel (under the mouse, or
``--prior-point X,Y``), its row of the context prior map P: P[i, j] is the model's belief
that prior-grid pixels i and j belong to the same class (Yu et al., CVPR 2020, the Affinity
Loss target). The whole frame is resized to the model input, so grid cell (gy, gx) of an
s x s grid covers frame rows gy*H/s ... (gy+1)*H/s and the matching columns; the row is drawn
as an inferno heat map with one block per grid cell (nearest resize), so what is highlighted
is exactly the row the model returned, at the grid's own resolution.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import cv2
import numpy as np

from cpnet.runtime.draw import heatmap

from .live_loop import MODES, View

FONT = cv2.FONT_HERSHEY_SIMPLEX


def bgr_lut(palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """(256, 1, 3) uint8 BGR lookup table for cv2.LUT from an RGB palette; unknown and ignored labels are black."""
    lut = np.zeros((256, 1, 3), np.uint8)
    pal = np.asarray(palette, np.uint8).reshape(-1, 3)[:255]
    lut[: len(pal), 0] = pal[:, ::-1]
    lut[ignore_index] = 0
    return lut


def colorize_bgr(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) BGR colours through a :func:`bgr_lut` table."""
    lab = labels if labels.dtype == np.uint8 else np.clip(labels, 0, 255).astype(np.uint8)
    return cv2.LUT(cv2.merge((lab, lab, lab)), lut)


# --------------------------------------------------------------------------- the prior


def prior_grid(num_cells: int, grid: Sequence[int] | None = None) -> tuple[int, int]:
    """(s_h, s_w) of the prior grid: the manifest's ``prior.grid`` where given, else a square of ``num_cells``."""
    if grid:
        gh, gw = (int(v) for v in grid)
        if gh * gw != num_cells:
            raise ValueError(f"prior grid {gh}x{gw} does not hold {num_cells} cells")
        return gh, gw
    s = int(round(math.sqrt(num_cells)))
    if s * s != num_cells:
        raise ValueError(f"a prior map with {num_cells} cells is not square; the manifest must give its grid")
    return s, s


def cell_of(point: Sequence[int], frame_size: Sequence[int], grid: Sequence[int]) -> tuple[int, int]:
    """(gy, gx): the prior-grid cell that frame pixel (x, y) falls in, for a frame of (H, W)."""
    x, y = (int(v) for v in point)
    h, w = (int(v) for v in frame_size)
    gh, gw = (int(v) for v in grid)
    gy = min(gh - 1, max(0, y * gh // max(1, h)))
    gx = min(gw - 1, max(0, x * gw // max(1, w)))
    return gy, gx


def prior_row(prior: np.ndarray, point: Sequence[int], frame_size: Sequence[int],
              grid: Sequence[int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(row of P for the cell under ``point`` as an (s_h, s_w) map, that cell (gy, gx)).

    ``prior``: (N, N) (or (1, N, N)) with row i = grid pixel i, row-major over the grid.
    """
    p = np.asarray(prior)
    p = p[0] if p.ndim == 3 else p
    gh, gw = prior_grid(p.shape[0], grid)
    gy, gx = cell_of(point, frame_size, (gh, gw))
    return p[gy * gw + gx].reshape(gh, gw), (gy, gx)


def draw_prior(frame: np.ndarray, row: np.ndarray, point: Sequence[int], alpha: float = 0.6) -> np.ndarray:
    """The frame with a row of P as a heat map over it (one block per grid cell) and a marker at ``point``."""
    h, w = frame.shape[:2]
    heat = heatmap(row, (h, w))[:, :, ::-1]  # RGB -> BGR
    out = cv2.addWeighted(frame, 1.0 - alpha, np.ascontiguousarray(heat), alpha, 0)
    draw_marker(out, point)
    return out


def draw_marker(image: np.ndarray, point: Sequence[int]) -> None:
    x, y = (int(v) for v in point)
    r = max(6, image.shape[1] // 80)
    cv2.circle(image, (x, y), r + 2, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.circle(image, (x, y), r, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.drawMarker(image, (x, y), (255, 255, 255), cv2.MARKER_CROSS, r, 1, cv2.LINE_AA)


# --------------------------------------------------------------------------- text


def _scale_for(width: int) -> float:
    return float(min(1.0, max(0.35, width / 1400.0)))


def shade(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, keep: float = 0.35) -> None:
    """Darken a rectangle in place (the background of text)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 > x0 and y1 > y0:
        roi = image[y0:y1, x0:x1]
        cv2.convertScaleAbs(roi, dst=roi, alpha=keep)


def draw_text_block(image: np.ndarray, lines: Sequence[str], origin: tuple[int, int] = (8, 8),
                    color=(255, 255, 255)) -> None:
    """Lines of text on a darkened box, top-left at ``origin``."""
    lines = [ln for ln in lines if ln]
    if not lines:
        return
    scale = _scale_for(image.shape[1])
    sizes = [cv2.getTextSize(ln, FONT, scale, 1)[0] for ln in lines]
    line_h = int(max(s[1] for s in sizes) * 1.8) + 2
    x0, y0 = origin
    shade(image, x0, y0, x0 + max(s[0] for s in sizes) + 12, y0 + line_h * len(lines) + 8)
    for i, ln in enumerate(lines):
        cv2.putText(image, ln, (x0 + 6, y0 + 4 + line_h * (i + 1) - line_h // 4), FONT, scale, color, 1, cv2.LINE_AA)


def classes_present(labels: np.ndarray, num_classes: int, min_share: float = 0.001) -> list[tuple[int, float]]:
    """[(class, share of pixels)] of the classes covering at least ``min_share`` of the frame, largest first."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)[:max(num_classes, 1)]
    total = max(1, labels.size)
    present = [(int(c), n / total) for c, n in enumerate(counts.tolist()) if n / total >= min_share]
    return sorted(present, key=lambda t: -t[1])


def draw_legend(image: np.ndarray, present: Sequence[tuple[int, float]], names: Sequence[str],
                lut: np.ndarray, max_items: int = 12) -> None:
    """A swatch, the name and the share of each class present, top-right of ``image`` (in place)."""
    if not present:
        return
    items = list(present)[:max_items]
    scale = _scale_for(image.shape[1])
    texts = [f"{names[c] if c < len(names) else c} {100 * share:.0f}%" for c, share in items]
    sizes = [cv2.getTextSize(t, FONT, scale, 1)[0] for t in texts]
    line_h = int(max(s[1] for s in sizes) * 1.8) + 2
    sw = line_h - 4
    box_w = sw + 14 + max(s[0] for s in sizes)
    x0 = image.shape[1] - box_w - 8
    y0 = 8
    shade(image, x0, y0, x0 + box_w + 4, y0 + line_h * len(items) + 8)
    for i, ((c, _), t) in enumerate(zip(items, texts)):
        y = y0 + 4 + line_h * i
        color = tuple(int(v) for v in lut[c, 0])
        cv2.rectangle(image, (x0 + 4, y + 2), (x0 + 4 + sw, y + 2 + sw), color, -1)
        cv2.rectangle(image, (x0 + 4, y + 2), (x0 + 4 + sw, y + 2 + sw), (255, 255, 255), 1)
        cv2.putText(image, t, (x0 + sw + 10, y + line_h - line_h // 3), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


# --------------------------------------------------------------------------- the whole picture


class Renderer:
    """``renderer(frame_bgr, labels, prior_rows, view) -> BGR image``: the drawing stage.

    ``classes``/``palette`` from the artifact's manifest; ``hud_lines()`` returns the status
    lines (FPS, stage times, board figures) the HUD starts with; ``prior_grid`` (s_h, s_w) where
    the manifest gives it.
    """

    def __init__(self, classes: Sequence[str], palette: Sequence[Sequence[int]],
                 hud_lines: Callable[[], list[str]] | None = None, prior_grid: Sequence[int] | None = None,
                 legend: bool = True):
        self.classes = list(classes)
        self.lut = bgr_lut(palette)
        self.hud_lines = hud_lines
        self.prior_grid = tuple(prior_grid) if prior_grid else None
        self.legend = legend

    def __call__(self, frame: np.ndarray, labels: np.ndarray, prior: np.ndarray | None, view: View) -> np.ndarray:
        return self.draw(frame, labels, prior, view)

    def draw(self, frame: np.ndarray, labels: np.ndarray, prior: np.ndarray | None, view: View) -> np.ndarray:
        """``labels``: the label map at the model's output size (or the frame's); coloured there, then enlarged."""
        h, w = frame.shape[:2]
        colour = colorize_bgr(labels, self.lut)
        if colour.shape[:2] != (h, w):
            colour = cv2.resize(colour, (w, h), interpolation=cv2.INTER_NEAREST)
        mode = view.mode if view.mode in MODES else MODES[0]
        alpha = float(view.alpha)
        note = ""
        main = None
        if view.show_prior and prior is not None:
            point = view.point or (w // 2, h // 2)
            row, (gy, gx) = prior_row(prior, point, (h, w), self.prior_grid)
            main = draw_prior(frame, row, point, alpha=max(0.25, min(0.85, alpha)) if mode != "mask" else 1.0)
            note = f"prior of ({point[0]}, {point[1]}): grid cell ({gy}, {gx}) of {row.shape[0]}x{row.shape[1]}"
        if mode == "overlay":
            image = main if main is not None else cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0)
            legend_on = image
        elif mode == "side-by-side":
            image = np.empty((h, 2 * w, 3), np.uint8)
            image[:, :w] = main if main is not None else frame
            image[:, w:] = colour
            legend_on = image[:, w:]
        else:  # mask
            image = main if main is not None else colour.copy()
            legend_on = image
        if self.legend and (main is None or mode == "side-by-side"):  # only where class colours are drawn
            draw_legend(legend_on, classes_present(labels, len(self.classes) or 256), self.classes, self.lut)
        if view.hud:
            lines = list(self.hud_lines() if self.hud_lines else [])
            state = f"{mode}  alpha {alpha:.2f}"
            if view.paused:
                state += "  PAUSED"
            lines.append(state)
            if note:
                lines.append(note)
            if view.notice and time.monotonic() < view.notice_until:
                lines.append(view.notice)
            draw_text_block(image, lines)
        return image
