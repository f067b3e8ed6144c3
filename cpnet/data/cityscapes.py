"""Cityscapes: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` + ``gtFine/{split}/{city}/*_gtFine_labelIds.png``.

The masks hold Cityscapes label ids (0..33, -1 for the licence plate); they are
mapped to the 19 train ids with the table of ``cityscapesscripts.helpers.labels``
(train id 255 or -1 -> 255 = ignore). Ids that are not in the table are bad data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpnet.data.base import BadSampleError, SegmentationDataset, _fmt_values, require_dir
from cpnet.runtime import UserError


def _label_table():
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, -1, dtype=np.int16)  # -1: not a Cityscapes label id
    train = {}
    for lab in labels:
        if lab.id < 0:
            continue
        tid = lab.trainId
        lut[lab.id] = 255 if tid in (255, -1) else tid
        if tid not in (255, -1) and tid not in train:
            train[tid] = (lab.name, tuple(int(c) for c in lab.color))
    ids = sorted(train)
    assert ids == list(range(len(ids))), ids
    return lut, [train[i][0] for i in ids], [train[i][1] for i in ids]


LABEL_TO_TRAIN, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE = _label_table()


class CityscapesDataset(SegmentationDataset):
    name = "cityscapes"
    IMAGE_SUFFIX = "_leftImg8bit.png"
    MASK_SUFFIX = "_gtFine_labelIds.png"

    def __init__(self, root, split: str = "train", **kwargs):
        root = Path(root)
        img_dir = root / "leftImg8bit" / split
        require_dir(img_dir, f"Cityscapes split '{split}'",
                    "expected root/leftImg8bit/{split}/{city}/*_leftImg8bit.png and "
                    "root/gtFine/{split}/{city}/*_gtFine_labelIds.png (see cityscapes-dataset.com)")
        samples = []
        for img in sorted(img_dir.glob(f"*/*{self.IMAGE_SUFFIX}")):
            stem = img.name[: -len(self.IMAGE_SUFFIX)]
            mask = root / "gtFine" / split / img.parent.name / f"{stem}{self.MASK_SUFFIX}"
            samples.append((img, mask))
        if not samples:
            raise UserError(f"{img_dir}: no *{self.IMAGE_SUFFIX} images in its city folders; "
                            "check data.root points at the Cityscapes root (holding leftImg8bit/ and gtFine/)")
        super().__init__(samples, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, root=root, split=split, **kwargs)

    def map_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.dtype != np.uint8:
            if raw.size and int(raw.max()) > 255:
                raise BadSampleError(path, f"label ids {_fmt_values(np.unique(raw[raw > 255]))} are not "
                                           "Cityscapes label ids (0..33)")
            raw = raw.astype(np.uint8)
        mapped = LABEL_TO_TRAIN[raw]
        if (mapped < 0).any():
            bad = np.unique(raw[mapped < 0])
            raise BadSampleError(path, f"label ids {_fmt_values(bad)} are not Cityscapes label ids (0..33); "
                                       "is this a *_gtFine_labelIds.png file?")
        return mapped.astype(np.uint8)
