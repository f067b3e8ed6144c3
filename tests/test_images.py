"""The one image and mask reader: pixels as stored, bad files named in one line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cpnet.runtime.images import BadSampleError, read_image, read_mask


def test_exif_orientation_is_applied_to_neither_image_nor_mask(tmp_path):
    # a 40x20 (w x h) JPEG tagged "rotate 90 CW" (orientation 6): a viewer shows it 20 wide, 40 tall
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(jpeg, quality=95, exif=exif)
    assert Image.open(jpeg).getexif().get(0x0112) == 6
    mask = np.zeros((20, 40), np.uint8)
    mask[:, :20] = 1
    png = tmp_path / "photo.png"
    Image.fromarray(mask).save(png)

    image, label = read_image(jpeg), read_mask(png)
    assert image.shape[:2] == label.shape == (20, 40)  # both as stored: no rotation, so the sizes agree
    red = image[..., 0] > 128
    assert (red == (label == 1)).mean() > 0.95  # and the labels lie on the pixels they were drawn for


def test_bad_files_are_named(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(BadSampleError, match="junk.jpg"):
        read_image(junk)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(buf.getvalue()[:-20])
    with pytest.raises(BadSampleError, match="cut.png: unreadable mask: truncated PNG"):
        read_mask(cut)
    with pytest.raises(BadSampleError, match="mask not found"):
        read_mask(tmp_path / "absent.png")
