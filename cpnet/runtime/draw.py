"""Label maps and heat maps as pictures: colourise, blend, heat map (numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np


def colorize(label: np.ndarray, palette, ignore_index: int = 255) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB; ignored and unknown pixels are black."""
    lut = np.zeros((256, 3), np.uint8)
    pal = np.asarray(palette, np.uint8).reshape(-1, 3)[:255]
    lut[: len(pal)] = pal
    lut[ignore_index] = 0
    return lut[np.clip(label, 0, 255).astype(np.uint8)]


def blend(image_rgb: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return cv2.addWeighted(image_rgb, 1 - alpha, color_mask, alpha, 0)


def heatmap(values: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """2-D array in [0, 1] -> (H, W, 3) uint8 RGB heat map (inferno), resized to ``size`` (H, W) if given."""
    v = np.clip(values, 0, 1)
    img = (v * 255).astype(np.uint8)
    if size is not None:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(img, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
