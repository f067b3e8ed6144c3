"""The base segmentation dataset: (image, mask) pairs, label mapping, bad-data checks, skip-collate.

Every dataset in :mod:`cpnet.data` is a :class:`SegmentationDataset` holding a
list of ``(image_path, mask_path)`` pairs. ``load(i)`` reads one pair and
returns the image as RGB ``uint8`` (H, W, 3) and the label as train ids
``uint8`` (H, W) with 255 = ignore; each subclass maps its on-disk encoding in
:meth:`SegmentationDataset.map_label`.

Bad data (unreadable or truncated image, missing mask, mask of another size,
label values outside the class set) raises :class:`BadSampleError`, whose
message names the file. ``on_bad_data="stop"`` lets it propagate from
``__getitem__``; ``"skip"`` logs it and returns ``None``, and
:func:`collate_skip` drops the ``None`` entries and counts them, so the trainer
can report how many samples it skipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cpnet.runtime.errors import UserError
from cpnet.runtime.images import IMAGE_EXTENSIONS, BadSampleError, read_image, read_mask  # noqa: F401  (the data package's names)

log = logging.getLogger("cpnet.data")

# Keep OpenCV from spawning its own thread pool inside every DataLoader worker.
cv2.setNumThreads(0)


# --------------------------------------------------------------------------- the dataset


class SegmentationDataset(Dataset):
    """A list of (image, mask) pairs with a label mapping and a transform.

    ``transform(image_rgb_uint8_hwc, label_uint8_hw)`` returns ``(image_tensor,
    label_tensor)``: float32 (3, H, W) normalised and int64 (H, W). Without a
    transform ``__getitem__`` returns plain tensors of the loaded arrays.
    """

    name = "segmentation"

    def __init__(
        self,
        samples: Sequence[tuple["str | os.PathLike", "str | os.PathLike"]],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        transform: Callable | None = None,
        on_bad_data: str = "stop",
        ignore_index: int = 255,
        root: "str | os.PathLike | None" = None,
        split: str | None = None,
    ):
        if on_bad_data not in ("stop", "skip"):
            raise ValueError(f"on_bad_data must be 'stop' or 'skip', got {on_bad_data!r}")
        if len(palette) != len(classes):
            raise ValueError(f"{len(classes)} classes but {len(palette)} palette colours")
        if ignore_index != 255:
            raise ValueError("labels are stored as uint8 with 255 = ignore; ignore_index must be 255")
        self.samples = [(Path(i), Path(m)) for i, m in samples]
        self.classes = [str(c) for c in classes]
        self.palette = [tuple(int(v) for v in c) for c in palette]
        self.transform = transform
        self.on_bad_data = on_bad_data
        self.ignore_index = ignore_index
        self.root = Path(root) if root is not None else None
        self.split = split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_path(self, i: int) -> Path:
        """The image file of sample ``i`` (its mask is ``self.samples[i][1]``)."""
        return self.samples[i][0]

    def mask_path(self, i: int) -> Path:
        return self.samples[i][1]

    # -- label mapping; subclasses override
    def map_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """On-disk ids -> train ids (uint8, 255 = ignore). The base class stores train ids directly."""
        if raw.dtype != np.uint8:
            if raw.size and int(raw.max()) > 255:
                bad = np.unique(raw[raw > 255])
                raise BadSampleError(path, f"label values {_fmt_values(bad)} are outside the class set "
                                           f"(0..{self.num_classes - 1} and {self.ignore_index} = ignore)")
            raw = raw.astype(np.uint8)
        return raw

    def _check_label(self, label: np.ndarray, path: Path) -> None:
        valid = np.zeros(256, dtype=bool)
        valid[: self.num_classes] = True
        valid[self.ignore_index] = True
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        bad = present[~valid[present]]
        if bad.size:
            raise BadSampleError(path, f"label values {_fmt_values(bad)} are outside the class set "
                                       f"({self.num_classes} classes: 0..{self.num_classes - 1}, "
                                       f"{self.ignore_index} = ignore, after mapping the dataset's encoding)")

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Read sample ``i``: (RGB uint8 (H, W, 3), train ids uint8 (H, W), 255 = ignore)."""
        img_path, mask_path = self.samples[i]
        image = read_image(img_path)
        if not mask_path.exists():
            raise BadSampleError(mask_path, f"mask not found (expected for image {img_path})")
        raw = read_mask(mask_path)
        if raw.shape[:2] != image.shape[:2]:
            raise BadSampleError(
                mask_path,
                f"mask is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image {img_path} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        label = self.map_label(raw, mask_path)
        self._check_label(label, mask_path)
        return image, label

    def __getitem__(self, i: int):
        try:
            image, label = self.load(i)
        except BadSampleError as e:
            if self.on_bad_data == "stop":
                raise
            log.warning("skipping bad sample: %s", e)
            return None
        if self.transform is not None:
            return self.transform(image, label)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
                torch.from_numpy(label.astype(np.int64)))

    def check_all(self) -> list[BadSampleError]:
        """Load every sample once and return the errors found (for a pre-flight data check)."""
        errors = []
        for i in range(len(self)):
            try:
                self.load(i)
            except BadSampleError as e:
                errors.append(e)
        return errors

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"samples={len(self)}, classes={self.num_classes})")


def _fmt_values(values: np.ndarray, limit: int = 8) -> str:
    vals = [int(v) for v in values[:limit]]
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return "{" + ", ".join(map(str, vals)) + more + "}"


def collate_skip(batch):
    """Drop ``None`` (skipped) samples, stack the rest: ``(images, labels, n_skipped)``.

    Returns ``(None, None, n)`` when every sample of the batch was bad. Samples of
    different sizes (evaluation at original size) cannot be stacked: use batch 1 there.
    """
    kept = [b for b in batch if b is not None]
    n_skipped = len(batch) - len(kept)
    if not kept:
        return None, None, n_skipped
    images = torch.stack([b[0] for b in kept])
    labels = torch.stack([b[1] for b in kept])
    return images, labels, n_skipped


def require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise UserError(f"{path}: {what} not found; {hint}")


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC bit-interleaved palette, for classes files that give no colours."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out
