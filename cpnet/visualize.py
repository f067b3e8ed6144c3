"""Turning training tensors into pictures (the deploy-side drawing is in cpnet.runtime.draw)."""

from __future__ import annotations

import numpy as np
import torch

from .runtime.draw import blend, colorize, heatmap  # noqa: F401  (the training logger draws with them)


def denormalize(image: torch.Tensor, mean, std) -> np.ndarray:
    """(3, H, W) normalised RGB tensor -> (H, W, 3) uint8 RGB."""
    x = image.detach().float().cpu().permute(1, 2, 0).numpy()
    x = x * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)
