"""Reading images and label masks: one reader for training, evaluation, calibration, the report and the demo.

Images are read as RGB uint8 with the pixels as stored: an EXIF orientation tag
is applied to neither images nor masks, so a label stays on the pixel it was
drawn for (OpenCV rotates a JPEG by its tag unless told not to, and never a
PNG mask). A file that cannot be used raises :class:`BadSampleError`, whose one
line names the file and what is wrong with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class BadSampleError(UserError):
    """One sample cannot be used; the message names the file and what is wrong with it."""

    def __init__(self, path: "str | os.PathLike", reason: str | None = None):
        if reason is None:
            # A DataLoader worker's exception is re-raised in the main process as exc_type(text), the text
            # being "Caught BadSampleError in DataLoader worker process N. Original Traceback ...": keep the
            # type (so the CLIs print one line, not a traceback) and recover "path: reason" from its last line.
            last = [line for line in str(path).strip().splitlines() if line.strip()][-1:] or [""]
            text = last[0].split("BadSampleError: ", 1)[-1]
            path, _, reason = text.partition(": ")
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------- reading files


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadSampleError(path, "file not found") from None
    except OSError as e:
        raise BadSampleError(path, f"cannot read file ({e.strerror or e})") from None


def _truncation_reason(data: bytes) -> str | None:
    """Spot files cut short: OpenCV often decodes those with a warning and grey fill."""
    if len(data) == 0:
        return "empty file"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-64:]:
            return "truncated PNG (no IEND chunk at the end of the file)"
    elif data[:2] == b"\xff\xd8":
        # The end-of-image marker, allowing for a little padding or trailing metadata.
        if b"\xff\xd9" not in data[-4096:]:
            return "truncated JPEG (no end-of-image marker)"
    return None


def read_image(path: "str | os.PathLike") -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3), pixels as stored (EXIF orientation not applied);
    BadSampleError if unreadable, corrupt or truncated."""
    path = Path(path)
    data = _read_bytes(path)
    reason = _truncation_reason(data)
    if reason:
        raise BadSampleError(path, f"unreadable image: {reason}")
    # The pixels as stored: an EXIF orientation tag is not applied, to images as to masks (OpenCV applies
    # it to images by default but never to single-channel PNG masks, which misaligned labels).
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.ndim != 3 or img.size == 0:
        raise BadSampleError(path, "unreadable image: not a valid image file (OpenCV could not decode it)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: "str | os.PathLike") -> np.ndarray:
    """Read a single-channel label image (H, W), uint8 or uint16 as stored.

    Palette PNGs (colour type 3) are read as their palette indices, which is how
    such masks store class ids. A 3-channel mask is refused: masks must hold ids.
    """
    path = Path(path)
    if not path.exists():
        raise BadSampleError(path, "mask not found")
    data = _read_bytes(path)
    reason = _truncation_reason(data)
    if reason:
        raise BadSampleError(path, f"unreadable mask: {reason}")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] == 3:
        try:
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                return np.array(im)
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
            raise BadSampleError(path, f"unreadable mask: palette PNG could not be decoded ({e})") from None
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.size == 0:
        raise BadSampleError(path, "unreadable mask: not a valid image file (OpenCV could not decode it)")
    if mask.ndim == 3:
        if mask.shape[2] >= 3 and not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise BadSampleError(
                path, f"mask has {mask.shape[2]} colour channels; masks must be single-channel PNGs of class ids"
            )
        mask = mask[..., 0]
    return mask
