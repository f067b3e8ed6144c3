"""Whole-image, sliding-window, multi-scale and flip inference around a fixed-input model.

A CPNet is tied to one input size S = 8 x prior grid, so every test-time mode is
built from S x S windows:

- ``whole``: the base resolution is the model input: at scale 1 the image is
  resized to S x S, run once, and the logits resized back.
- ``slide``: the base resolution is the image's own: at scale 1 the image is
  covered by overlapping S x S windows (padded up to S where smaller).

At a scale s the base-resolution image is resized by s first; any size larger
than S is covered by windows, so multi-scale works in both modes. Probabilities
(softmax) are averaged over windows, scales and flips.

``infer`` is any callable taking a float32 NCHW batch of S x S windows and
returning logits (N, C, S, S): a torch model, an ONNX Runtime session or a
TensorRT engine, so drift between backends is measured with the same code.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

InferFn = Callable[[torch.Tensor], torch.Tensor]


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    n = math.ceil((length - window) / stride) + 1
    starts = [min(i * stride, length - window) for i in range(n)]
    return sorted(set(starts))


def _hw(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def slide_probs(image: torch.Tensor, infer: InferFn, window, num_classes: int,
                overlap: float = 1 / 3, max_batch: int = 4) -> torch.Tensor:
    """Softmax probabilities (1, C, h, w) of ``image`` (1, 3, h, w) from overlapping ``window`` (wh, ww) crops."""
    _, _, h, w = image.shape
    wh, ww = _hw(window)
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
        # Zero is the mean colour after normalisation; the padded area is cropped off below.
        image = F.pad(image, (0, pw - w, 0, ph - h))
    sy, sx = max(1, int(round(wh * (1 - overlap)))), max(1, int(round(ww * (1 - overlap))))
    boxes = [(y, x) for y in _window_starts(ph, wh, sy) for x in _window_starts(pw, ww, sx)]
    probs = torch.zeros(1, num_classes, ph, pw)
    counts = torch.zeros(1, 1, ph, pw)
    for i in range(0, len(boxes), max_batch):
        chunk = boxes[i:i + max_batch]
        batch = torch.cat([image[:, :, y:y + wh, x:x + ww] for y, x in chunk])
        out = infer(batch).float().cpu()
        if out.shape[-2:] != (wh, ww):
            out = F.interpolate(out, size=(wh, ww), mode="bilinear", align_corners=False)
        out = out.softmax(1)
        for (y, x), p in zip(chunk, out):
            probs[:, :, y:y + wh, x:x + ww] += p
            counts[:, :, y:y + wh, x:x + ww] += 1
    return (probs / counts)[:, :, :h, :w]


def predict_probs(image: torch.Tensor, infer: InferFn, input_size, num_classes: int,
                  mode: str = "whole", scales: Sequence[float] = (1.0,), flip: bool = False,
                  overlap: float = 1 / 3, max_batch: int = 4) -> torch.Tensor:
    """Averaged class probabilities (1, C, H, W) for a normalised image (1, 3, H, W)."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    _, _, H, W = image.shape
    base_h, base_w = _hw(input_size) if mode == "whole" else (H, W)
    total = torch.zeros(1, num_classes, H, W)
    n = 0
    for s in scales:
        size = (max(1, int(round(base_h * s))), max(1, int(round(base_w * s))))
        scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=False) if size != (H, W) else image
        for flipped in ([False, True] if flip else [False]):
            x = scaled.flip(-1) if flipped else scaled
            p = slide_probs(x, infer, input_size, num_classes, overlap, max_batch)
            if flipped:
                p = p.flip(-1)
            if p.shape[-2:] != (H, W):
                p = F.interpolate(p, size=(H, W), mode="bilinear", align_corners=False)
            total += p
            n += 1
    return total / n


def torch_infer_fn(model: torch.nn.Module, device: torch.device | str = "cpu",
                   autocast_dtype: torch.dtype | None = None) -> InferFn:
    """Wrap an eval-mode torch model as an InferFn."""
    device = torch.device(device)

    @torch.no_grad()
    def infer(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                return model(batch).float()
        return model(batch)

    return infer
