"""Training and evaluation transforms (numpy + OpenCV), following mmseg's pipeline.

Train: random resize -> random crop (cat_max_ratio) -> horizontal flip ->
photometric distortion -> normalise -> pad to the crop (H, W) -> tensors.
Eval: normalise only, at the image's own size (the evaluator resizes or slides);
``RawTransform`` hands the uint8 image to an evaluator that resizes it itself.

Inputs are an RGB ``uint8`` image (H, W, 3) and a train-id label (H, W) with
255 = ignore; outputs are a float32 (3, H, W) tensor and an int64 (H, W) tensor.
Images are resized bilinearly, labels with nearest neighbour.

Random resize (mmseg's ``RandomResize(scale, ratio_range, keep_ratio=True)``)
    A ratio ``r`` is drawn uniformly from ``scale_range`` (mmseg's ``ratio_range``);
    the target scale is the *base scale* times r, ``(int(a * r), int(b * r))``, and
    the image is resized to fit it with its aspect kept (mmcv's ``rescale_size``:
    the factor min(long / max(h, w), short / min(h, w)), sides rounded as
    ``int(x + 0.5)``). The base scale is ``data.base_scale`` or, left empty, the
    dataset's in mmseg's configs (:data:`BASE_SCALES`: ADE20K (2048, 512),
    PASCAL-Context (520, 520), Cityscapes (2048, 1024)); for folder and synthetic
    data it is the model input. So r = 1 is the base scale, which is also where
    slide evaluation looks at the image (mmseg's test ``Resize``), and an edge
    config whose base scale is its input trains centred on the scale it deploys at.

Crop and padding
    A crop window of the model input's (H, W) at a uniform random offset; up to 10 windows
    are drawn until no single class (ignore excluded) fills more than
    ``cat_max_ratio`` of the window and it holds at least two classes, as
    mmseg's RandomCrop (with cat_max_ratio >= 1 the first window is taken).
    When the scaled image is smaller than the crop, it is padded at the bottom
    and right (as mmseg): the label with 255, the image with 0 after
    normalisation, i.e. with the mean colour.

What decides the random stream
    Each call without an explicit ``rng`` draws one 63-bit seed from torch's
    default generator (``torch.randint``) and runs all its draws from
    ``np.random.default_rng(seed)``. Inside a DataLoader worker torch's
    generator is seeded by the DataLoader with ``base_seed + worker_id``, where
    ``base_seed`` is drawn from the DataLoader's ``generator`` (or torch's
    global generator) each time an iterator is created; in the main process
    (``num_workers=0``) it is torch's global generator. So the augmentations
    are fixed by that generator's state when the epoch's iterator starts, the
    number of workers, the batch size and the sampler's order. A trainer that
    wants the same stream after a resume should give the DataLoader (and
    sampler) a ``torch.Generator`` seeded from (train.seed, epoch) and skip the
    batches already done, or seed per-iteration; pass ``rng=`` to make a call
    fully explicit.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..runtime.preprocess import normalize  # the one normalisation, shared with deployment

IGNORE = 255


def sample_rng() -> np.random.Generator:
    """A numpy Generator seeded from torch's default generator (see the module docstring)."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64).item())
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- single steps


# mmseg's base scales (its configs' ``scale`` of RandomResize and of the test Resize), (long, short) bounds
BASE_SCALES = {"ade20k": (2048, 512), "pascal_context": (520, 520), "cityscapes": (2048, 1024)}


def scaled_size(size, scale: float) -> tuple[int, int]:
    """(h, w) x ``scale`` with mmcv's rounding, ``int(x * s + 0.5)`` (not Python's round-half-to-even)."""
    h, w = size
    return max(1, int(h * float(scale) + 0.5)), max(1, int(w * float(scale) + 0.5))


def rescale_size(size, bound) -> tuple[int, int]:
    """(h, w) resized with its aspect kept to fit ``bound`` = (long, short), in either order (mmcv's
    ``rescale_size``, the ``keep_ratio=True`` resize of mmseg's pipelines): the factor is
    min(max(bound) / max(h, w), min(bound) / min(h, w)), the sides rounded as :func:`scaled_size`."""
    h, w = size
    long_edge, short_edge = max(bound), min(bound)
    return scaled_size((h, w), min(long_edge / max(h, w), short_edge / min(h, w)))


def base_scale_of(data_cfg, input_size) -> tuple[int, int]:
    """The base scale (long, short) of a DataConfig: ``data.base_scale``, else the dataset's (:data:`BASE_SCALES`),
    else (folder, synthetic) the model input."""
    given = tuple(getattr(data_cfg, "base_scale", ()) or ())
    if given:
        return int(given[0]), int(given[1])
    if data_cfg.dataset in BASE_SCALES:
        return BASE_SCALES[data_cfg.dataset]
    h, w = _hw(input_size)
    return max(h, w), min(h, w)


def random_resize_size(size, base_scale, ratio: float) -> tuple[int, int]:
    """The size mmseg's ``RandomResize(base_scale, ratio_range, keep_ratio=True)`` gives an (h, w) image for ``ratio``."""
    a, b = base_scale
    return rescale_size(size, (int(a * ratio), int(b * ratio)))


def resize_to(image: np.ndarray, label: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear) and label (nearest, at pixel centres) resized to ``size`` = (h, w)."""
    nh, nw = size
    if (nh, nw) == label.shape[:2]:
        return image, label
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    # NEAREST_EXACT samples at pixel centres as INTER_LINEAR does; plain INTER_NEAREST floors and shifts the
    # labels by up to half a source pixel against the image (found by tests/test_properties.py)
    label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, label


def rescale(image: np.ndarray, label: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of the image's own size times ``ratio`` (mmcv's rounding)."""
    return resize_to(image, label, scaled_size(label.shape[:2], ratio))


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def random_crop(image: np.ndarray, label: np.ndarray, crop, rng: np.random.Generator,
                cat_max_ratio: float = 1.0, ignore_index: int = IGNORE, tries: int = 10):
    """A crop window of (ch, cw) = ``crop`` (an int is a square; smaller where the image is smaller; pad afterwards)."""
    h, w = label.shape[:2]
    ch, cw = _hw(crop)

    def bbox():
        y = int(rng.integers(0, max(h - ch, 0) + 1))
        x = int(rng.integers(0, max(w - cw, 0) + 1))
        return y, min(y + ch, h), x, min(x + cw, w)

    y0, y1, x0, x1 = bbox()
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            counts = np.bincount(label[y0:y1, x0:x1].ravel(), minlength=256)
            counts[ignore_index] = 0
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y0, y1, x0, x1 = bbox()
    return image[y0:y1, x0:x1], label[y0:y1, x0:x1]


def hflip(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return image[:, ::-1], label[:, ::-1]


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    out = img.astype(np.float32) * alpha + beta
    return np.clip(out, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta: int = 18):
    """mmseg's PhotoMetricDistortion on an RGB uint8 image; each step applies with p = 0.5.

    Brightness (+-32), then contrast (x0.5-1.5) either second or last, saturation
    (x0.5-1.5 on HSV S) and hue (+-18 on OpenCV's 0-180 H).
    """
    img = np.ascontiguousarray(image)
    if rng.integers(2):
        img = _convert(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = int(rng.integers(2))
    if mode == 1 and rng.integers(2):
        img = _convert(img, alpha=rng.uniform(*contrast_range))
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*saturation_range))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + int(rng.integers(-hue_delta, hue_delta))) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and rng.integers(2):
        img = _convert(img, alpha=rng.uniform(*contrast_range))
    return img


def pad_to(image_chw: np.ndarray, label: np.ndarray, size, ignore_index: int = IGNORE):
    """Pad bottom/right to ``size`` (H, W) (an int is a square): the normalised image with 0 (the mean colour),
    the label with ignore."""
    _, h, w = image_chw.shape
    sh, sw = _hw(size)
    if h >= sh and w >= sw:
        return image_chw, label
    img = np.zeros((3, max(h, sh), max(w, sw)), dtype=np.float32)
    img[:, :h, :w] = image_chw
    lab = np.full((max(h, sh), max(w, sw)), ignore_index, dtype=label.dtype)
    lab[:h, :w] = label
    return img, lab


def _to_tensors(image_chw: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(image_chw, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)))


# --------------------------------------------------------------------------- pipelines


class TrainTransform:
    """Random resize, crop (cat_max_ratio), flip, photometric distortion, normalise, pad to the crop.

    ``base_scale`` (long, short): the random resize's base (see the module docstring); None scales the
    image's own size by the ratio instead."""

    def __init__(self, crop_size, scale_range=(0.5, 2.0), flip: bool = True, photometric: bool = True,
                 cat_max_ratio: float = 0.75, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                 ignore_index: int = IGNORE, base_scale=None):
        self.crop_size = _hw(crop_size)  # (H, W)
        self.base_scale = None if base_scale is None else (int(base_scale[0]), int(base_scale[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip = bool(flip)
        self.photometric = bool(photometric)
        self.cat_max_ratio = float(cat_max_ratio)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.ignore_index = ignore_index

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None):
        if rng is None:
            rng = sample_rng()
        label = np.asarray(label, dtype=np.uint8)
        lo, hi = self.scale_range
        ratio = float(rng.uniform(lo, hi)) if hi > lo else lo
        if self.base_scale is None:
            image, label = rescale(image, label, ratio)
        else:
            image, label = resize_to(image, label, random_resize_size(label.shape[:2], self.base_scale, ratio))
        image, label = random_crop(image, label, self.crop_size, rng, self.cat_max_ratio, self.ignore_index)
        if self.flip and rng.random() < 0.5:
            image, label = hflip(image, label)
        if self.photometric:
            image = photometric_distortion(image, rng)
        chw = normalize(image, self.mean, self.std)
        chw, label = pad_to(chw, label, self.crop_size, self.ignore_index)
        return _to_tensors(chw, label)

    def __repr__(self) -> str:
        return (f"TrainTransform(crop={self.crop_size[0]}x{self.crop_size[1]}, base={self.base_scale}, "
                f"ratio={self.scale_range}, flip={self.flip}, "
                f"photometric={self.photometric}, cat_max_ratio={self.cat_max_ratio})")


class EvalTransform:
    """Normalise only; the image keeps its size (the evaluator resizes to the model input or slides)."""

    def __init__(self, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None):
        return _to_tensors(normalize(image, self.mean, self.std), np.asarray(label, dtype=np.uint8))

    def __repr__(self) -> str:
        return "EvalTransform()"


class RawTransform:
    """The image and label as loaded: uint8 (H, W, 3) RGB and int64 (H, W) tensors. The evaluator resizes and
    normalises each scale itself, as a deployed model's input is made (:func:`cpnet.inference.predict_image`)."""

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None):
        return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8)),
                torch.from_numpy(np.asarray(label, dtype=np.uint8).astype(np.int64)))

    def __repr__(self) -> str:
        return "RawTransform()"


def build_transform(data_cfg, crop_size, train: bool):
    """The train or eval pipeline for a DataConfig; ``crop_size`` is the model input (H, W)."""
    if train:
        return TrainTransform(crop_size, scale_range=data_cfg.scale_range, flip=data_cfg.flip,
                              photometric=data_cfg.photometric, cat_max_ratio=data_cfg.cat_max_ratio,
                              mean=data_cfg.mean, std=data_cfg.std, ignore_index=data_cfg.ignore_index,
                              base_scale=base_scale_of(data_cfg, crop_size))
    return EvalTransform(mean=data_cfg.mean, std=data_cfg.std)
