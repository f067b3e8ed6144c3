"""Pre- and post-processing for deployed models: the one place, driven by a manifest.

Every backend (PyTorch checkpoint, ONNX Runtime, TensorRT) takes the same
input, made here from the artifact's manifest (docs/architecture.md), so a
deployed model sees exactly what the parity and drift checks fed it:

- ``input_size`` [H, W]: the model input; the whole image is resized to it
  (``cv2.INTER_LINEAR`` on the uint8 image, aspect ratio not kept), as the
  ``whole`` evaluation mode and the demo do;
- ``mean`` / ``std``: per channel, in 0-255 units, in ``channel_order``
  (``"RGB"`` for every cpnet artifact);
- ``classes`` / ``palette``: names and RGB colours for :func:`colorize`.

``preprocess`` returns a float32 (1, 3, H, W) NCHW batch; ``postprocess``
resizes the logits back to the image and takes the argmax.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from .draw import colorize  # noqa: F401  (re-exported: the one colouriser)

__all__ = ["colorize", "input_size_of", "postprocess", "preprocess", "preprocess_bgr"]


def input_size_of(manifest: Mapping) -> tuple[int, int]:
    """(H, W) of the model input named in a manifest."""
    size = manifest.get("input_size")
    if size is None:
        shape = (manifest.get("input") or {}).get("shape")
        if not shape or len(shape) != 4:
            raise ValueError("manifest has no input_size and no 4-D input shape")
        size = shape[2:]
    if isinstance(size, (int, float)):
        size = (size, size)
    h, w = (int(v) for v in size)
    return h, w


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    return image


def preprocess(image_rgb: np.ndarray, manifest: Mapping) -> np.ndarray:
    """RGB uint8 (H0, W0, 3) image -> float32 (1, 3, H, W) model input.

    The whole image is resized to the manifest's ``input_size`` with bilinear
    interpolation (``cv2.INTER_LINEAR``, on the uint8 pixels), then each
    channel is normalised as ``(x - mean) / std`` (0-255 units). Channels are
    fed in the manifest's ``channel_order`` (``"RGB"``, or ``"BGR"`` for a
    model trained on BGR input). A grey (H0, W0) image is repeated to three
    channels and an alpha channel is dropped.
    """
    image = _as_rgb_uint8(image_rgb)
    h, w = input_size_of(manifest)
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    order = str(manifest.get("channel_order", "RGB")).upper()
    if order == "BGR":
        image = image[:, :, ::-1]
    elif order != "RGB":
        raise ValueError(f"manifest channel_order must be RGB or BGR, got {order!r}")
    return normalize(image, manifest.get("mean", (0.0, 0.0, 0.0)), manifest.get("std", (1.0, 1.0, 1.0)))[None]


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W), (x - mean) / std per channel (0-255 units): the one
    normalisation, shared by deployment (:func:`preprocess`) and training (``cpnet.data.transforms``)."""
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    return (chw - mean) / std


def denormalize(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """:func:`normalize` undone: float (3, H, W) -> uint8 (H, W, 3), clipped to 0-255 (a picture of a model input)."""
    x = np.asarray(chw, dtype=np.float32).transpose(1, 2, 0)
    x = x * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def preprocess_bgr(image_bgr: np.ndarray, manifest: Mapping) -> np.ndarray:
    """As :func:`preprocess`, for a BGR frame as OpenCV reads it (``cv2.imread``, ``VideoCapture``)."""
    image = np.asarray(image_bgr)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return preprocess(image, manifest)


def postprocess(logits, out_size: Sequence[int]) -> np.ndarray:
    """Logits (1, C, h, w) (numpy or torch) -> label map (H, W) at ``out_size`` = (H, W).

    The logits are resized to ``out_size`` first (bilinear, ``align_corners=False``,
    the same resize as :func:`cpnet.inference.predict_probs`), then the argmax is
    taken over classes, so boundaries are placed at the image's own resolution
    rather than upsampled from the model's blocky grid. Resizing logits or
    probabilities gives the same argmax almost everywhere; logits skip a softmax.
    Returns uint8 for up to 256 classes, else int32. A batch (N, C, h, w) with
    N > 1 gives (N, H, W).
    """
    if hasattr(logits, "detach"):  # a torch tensor, without importing torch here
        logits = logits.detach().float().cpu().numpy()
    t = np.asarray(logits, dtype=np.float32)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(f"expected logits of shape (N, C, h, w), got {tuple(t.shape)}")
    h, w = (int(v) for v in out_size)
    labels = np.stack([resize_logits(x, (h, w)).argmax(0) for x in t])
    labels = labels.astype(np.uint8 if t.shape[1] <= 256 else np.int32)
    return labels[0] if labels.shape[0] == 1 else labels


def resize_logits(chw: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(C, h, w) float32 -> (C, H, W), bilinear with half-pixel centres (torch's ``align_corners=False``).

    OpenCV's INTER_LINEAR samples the same points as torch's bilinear resize
    without antialiasing; it takes at most 512 channels at once, so wider
    logits go in slices.
    """
    h, w = (int(v) for v in size)
    if chw.shape[1:] == (h, w):
        return chw
    out = np.empty((chw.shape[0], h, w), np.float32)
    for s in range(0, chw.shape[0], 512):
        part = np.ascontiguousarray(chw[s:s + 512].transpose(1, 2, 0))
        r = cv2.resize(part, (w, h), interpolation=cv2.INTER_LINEAR)
        out[s:s + 512] = r.reshape(h, w, -1).transpose(2, 0, 1)
    return out


#: A whole-image resize that stretches one side against the other by more than this is said aloud.
ASPECT_TOLERANCE = 0.02


def aspect_stretch(image_hw, input_hw) -> float:
    """How much the deployed resize (the whole image to the input, aspect not kept) stretches height against width:
    1.0 when the image has the input's aspect; a 2:1 Cityscapes frame into a 288x512 input gives 1.125."""
    (h, w), (ih, iw) = image_hw, input_hw
    return (ih / h) / (iw / w)


def aspect_note(image_hw, input_hw) -> str | None:
    """One line when an (h, w) image is stretched by the whole-image resize to ``input_hw``, else None."""
    stretch = aspect_stretch(image_hw, input_hw)
    if abs(stretch - 1.0) <= ASPECT_TOLERANCE:
        return None
    (h, w), (ih, iw) = image_hw, input_hw
    return (f"{w}x{h} images into a {iw}x{ih} input: the whole-image resize stretches height by {stretch:.3f} "
            f"against width (this model is for frames of aspect {iw / ih:.3g}:1, these are {w / h:.3g}:1), so "
            f"objects are not the shape training's aspect-kept resize showed; the figures are of stretched frames")
