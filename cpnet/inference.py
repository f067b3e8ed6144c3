"""Whole-image, sliding-window, multi-scale and flip inference around a fixed-input model, as mmseg does it.

A CPNet is tied to one input size (H, W) = 8 x the prior grid, so every test-time mode
is built from H x W windows:

- ``whole``: the base resolution is the model input: at scale 1 the whole image is
  resized to H x W (aspect not kept) and run once, exactly as a deployed model is
  fed (:mod:`cpnet.runtime.preprocess`), and the logits are resized back.
- ``slide``: the image rescaled with its aspect kept to the base scale (the dataset's,
  as mmseg's test ``Resize``): it is covered by overlapping H x W windows (padded at the
  bottom/right where smaller, the padding cropped off).

Test scales follow **mmseg 0.x** (``MultiScaleFlipAug(img_scale, img_ratios)`` then
``Resize(keep_ratio=True)``): at a ratio r, slide mode rescales the *original* image to the
bound ``(int(long * r), int(short * r))`` of the base scale (without one, of the image's own
``(w, h)``) through mmcv's ``rescale_size`` (one factor, each side ``int(x * f + 0.5)``) --
the size training's random resize gives the same ratio (:func:`random_resize_size`), and at
r = 1 the single-scale test size. (mmseg 1.x's shipped ``tta_pipeline`` instead applies
``Resize(scale_factor=r, keep_ratio=True)`` to the original image, ignoring the base scale,
so its scale 1 is not its single-scale test.) Whole mode's base is the model input, aspect
not kept, scaled as ``(int(H*r + 0.5), int(W*r + 0.5))``. Any size larger than the window
is covered by windows, so multi-scale works in both modes. How the pieces are combined is
mmseg's:

- windows of one image: **logits** are summed and divided by the number of windows
  covering each pixel (``EncoderDecoder.slide_inference``);
- each scale and flip: the logits are flipped back and **resized to the image's size
  before the softmax** (``postprocess_result``);
- scales and flips: the **softmax probabilities** are averaged (``SegTTAModel.merge_preds``,
  0.x ``aug_test``).

Images are resized as mmcv does (OpenCV bilinear on the uint8 pixels, then normalised)
by :func:`predict_image`; :func:`predict_probs` takes an already normalised float image
and resizes it with PyTorch's bilinear (the report's path, and the test reference).
Logits are resized with :func:`cpnet.runtime.preprocess.resize_logits`, the one the
deployed post-processing uses, so whole mode at one scale without flip gives the
deployed prediction bit for bit on the same backend.

``infer`` is any callable taking a float32 NCHW batch of H x W windows and returning
logits (N, C, H, W): a torch model, an ONNX Runtime session or a TensorRT engine, so
drift between backends is measured with the same code.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.transforms import random_resize_size, rescale_size, scaled_size  # noqa: F401  (mmcv's sizes)

InferFn = Callable[[torch.Tensor], torch.Tensor]
MODES = ("whole", "slide")


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """mmseg's grid: ceil((length - window) / stride) + 1 windows, the last one flush with the end."""
    if length <= window:
        return [0]
    n = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(n)]


def window_stride(window: Sequence[int], overlap: float) -> tuple[int, int]:
    """The slide stride for an overlap fraction (1/3 of a 512 window: 341, mmseg's usual (341, 341))."""
    wh, ww = window
    return max(1, int(round(wh * (1 - overlap)))), max(1, int(round(ww * (1 - overlap))))


def slide_logits(image: torch.Tensor, infer: InferFn, window, num_classes: int,
                 overlap: float = 1 / 3, max_batch: int = 4) -> torch.Tensor:
    """Logits (1, C, h, w) of ``image`` (1, 3, h, w): overlapping ``window`` (wh, ww) crops, their logits summed
    and divided by how many windows cover each pixel (mmseg's ``slide_inference``). An image smaller than the
    window is padded at the bottom/right with 0 (the mean colour after normalisation) and cropped back."""
    _, _, h, w = image.shape
    wh, ww = _hw(window)
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
        image = F.pad(image, (0, pw - w, 0, ph - h))
    sy, sx = window_stride((wh, ww), overlap)
    boxes = [(y, x) for y in _window_starts(ph, wh, sy) for x in _window_starts(pw, ww, sx)]
    logits = torch.zeros(1, num_classes, ph, pw)
    counts = torch.zeros(1, 1, ph, pw)
    for i in range(0, len(boxes), max_batch):
        chunk = boxes[i:i + max_batch]
        batch = torch.cat([image[:, :, y:y + wh, x:x + ww] for y, x in chunk])
        out = torch.as_tensor(infer(batch)).float().cpu()
        if out.shape[-2:] != (wh, ww):
            out = F.interpolate(out, size=(wh, ww), mode="bilinear", align_corners=False)
        for (y, x), o in zip(chunk, out):
            logits[:, :, y:y + wh, x:x + ww] += o
            counts[:, :, y:y + wh, x:x + ww] += 1
    return (logits / counts)[:, :, :h, :w]


def _resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(1, C, h, w) -> (1, C, H, W), bilinear with half-pixel centres, by the deployed post-processing's resize."""
    from .runtime.preprocess import resize_logits

    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return torch.from_numpy(resize_logits(np.ascontiguousarray(logits[0].numpy()), size))[None]


def test_size(mode: str, image_size: tuple[int, int], window: tuple[int, int], ratio: float,
              base_scale: Sequence[int] | None = None) -> tuple[int, int]:
    """The size an (h, w) image is resized to at test ratio ``ratio`` (see the module docstring): whole mode,
    the model input scaled; slide mode, mmseg 0.x's multi-scale test size (the base scale, else the image's own
    size, times the ratio, then mmcv's keep-ratio ``rescale_size``)."""
    if mode == "whole":
        return scaled_size(window, ratio)
    h, w = image_size
    return random_resize_size((h, w), tuple(base_scale) if base_scale else (w, h), ratio)


def _tta(scaled_image: Callable[[tuple[int, int]], torch.Tensor], out_size: tuple[int, int],
         size_at: Callable[[float], tuple[int, int]], infer: InferFn, window, num_classes: int,
         scales: Sequence[float], flip: bool, overlap: float, max_batch: int) -> torch.Tensor:
    total = torch.zeros(1, num_classes, *out_size)
    n = 0
    for s in scales:
        x = scaled_image(size_at(s))
        for flipped in ([False, True] if flip else [False]):
            logits = slide_logits(x.flip(-1) if flipped else x, infer, window, num_classes, overlap, max_batch)
            if flipped:
                logits = logits.flip(-1)
            total += _resize_logits(logits, out_size).softmax(1)
            n += 1
    return total / n


def _check(mode: str, scales: Sequence[float]) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if not scales:
        raise ValueError("give at least one scale")


def predict_probs(image: torch.Tensor, infer: InferFn, input_size, num_classes: int,
                  mode: str = "whole", scales: Sequence[float] = (1.0,), flip: bool = False,
                  overlap: float = 1 / 3, max_batch: int = 4, base_scale: Sequence[int] | None = None) -> torch.Tensor:
    """Averaged class probabilities (1, C, H, W) for a normalised float image (1, 3, H, W).

    ``input_size``: the model input (H, W) (an int is a square): the window, and whole mode's base.
    ``base_scale``: slide mode's (long, short) base scale (default: the image's own size); sizes per
    :func:`test_size`. Scaled images are made by bilinear interpolation of the float image (PyTorch,
    ``align_corners=False``).
    """
    _check(mode, scales)
    image = image.float().cpu()
    _, _, H, W = image.shape
    window = _hw(input_size)

    def scaled(size):
        if tuple(size) == (H, W):
            return image
        return F.interpolate(image, size=size, mode="bilinear", align_corners=False)

    return _tta(scaled, (H, W), lambda s: test_size(mode, (H, W), window, s, base_scale), infer, window,
                num_classes, scales, flip, overlap, max_batch)


def predict_image(image_rgb: np.ndarray, infer: InferFn, input_size, num_classes: int,
                  mean: Sequence[float], std: Sequence[float], mode: str = "whole",
                  scales: Sequence[float] = (1.0,), flip: bool = False, overlap: float = 1 / 3, max_batch: int = 4,
                  base_scale: Sequence[int] | None = None) -> torch.Tensor:
    """Averaged class probabilities (1, C, H0, W0) for an RGB uint8 image (H0, W0, 3).

    Each scaled image is made as a deployed model's input is (:func:`cpnet.runtime.preprocess.preprocess`:
    OpenCV bilinear on the uint8 pixels, then ``(x - mean) / std``), which is also mmcv's resize. ``base_scale``
    (long, short): slide mode's base is the image rescaled to it with its aspect kept (:func:`rescale_size`,
    mmseg's test ``Resize``); default the image's own size; scales per :func:`test_size`. Whole mode's base
    is always the model input.
    """
    from .runtime.preprocess import preprocess

    _check(mode, scales)
    image_rgb = np.asarray(image_rgb)
    H, W = image_rgb.shape[:2]
    window = _hw(input_size)
    norm = {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "channel_order": "RGB"}

    def scaled(size):
        return torch.from_numpy(preprocess(image_rgb, {**norm, "input_size": list(size)}))

    return _tta(scaled, (H, W), lambda s: test_size(mode, (H, W), window, s, base_scale), infer, window,
                num_classes, scales, flip, overlap, max_batch)


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
