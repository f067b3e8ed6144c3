"""PASCAL-Context, 59 classes, in the common (mmseg) PNG layout.

Layout (``root`` = VOCdevkit/VOC2010): ``JPEGImages/*.jpg``,
``SegmentationClassContext/*.png`` (made by mmseg's converter from the Detail
API, 0 = background and 1..59 = the classes in alphabetical order) and
``ImageSets/SegmentationContext/{train,val}.txt`` (one image id a line).
In the 59-class setting the background is ignored: 0 -> 255, k -> k - 1
(``reduce_zero_label``), a stored 255 stays 255. Names and palette are mmseg's
PascalContextDataset59's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpnet.data.ade20k import reduce_zero_label
from cpnet.data.base import SegmentationDataset, require_dir
from cpnet.runtime import UserError

PASCAL_CONTEXT_CLASSES = (
    'aeroplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle',
    'bird', 'boat', 'book', 'bottle', 'building', 'bus', 'cabinet',
    'car', 'cat', 'ceiling', 'chair', 'cloth', 'computer', 'cow',
    'cup', 'curtain', 'dog', 'door', 'fence', 'floor', 'flower',
    'food', 'grass', 'ground', 'horse', 'keyboard', 'light',
    'motorbike', 'mountain', 'mouse', 'person', 'plate', 'platform',
    'pottedplant', 'road', 'rock', 'sheep', 'shelves', 'sidewalk',
    'sign', 'sky', 'snow', 'sofa', 'table', 'track', 'train',
    'tree', 'truck', 'tvmonitor', 'wall', 'water', 'window', 'wood',
)

PASCAL_CONTEXT_PALETTE = (
    (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230),
    (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61),
    (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140),
    (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92),
    (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6),
    (10, 255, 71), (255, 41, 10), (7, 255, 255), (224, 255, 8),
    (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8),
    (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0),
    (255, 224, 0), (153, 255, 0), (0, 0, 255), (255, 71, 0),
    (0, 235, 255), (0, 173, 255), (31, 0, 255),
)

assert len(PASCAL_CONTEXT_CLASSES) == 59 and len(PASCAL_CONTEXT_PALETTE) == 59


class PascalContextDataset(SegmentationDataset):
    name = "pascal_context"

    def __init__(self, root, split: str = "train", **kwargs):
        root = Path(root)
        hint = ("data.root must be VOCdevkit/VOC2010 holding JPEGImages/, SegmentationClassContext/ and "
                "ImageSets/SegmentationContext/ (made by mmseg's tools/dataset_converters/pascal_context.py)")
        require_dir(root / "JPEGImages", "PASCAL-Context JPEGImages folder", hint)
        split_file = root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        if not split_file.is_file():
            raise UserError(f"{split_file}: split list not found; {hint}")
        ids = [line.strip() for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not ids:
            raise UserError(f"{split_file}: the split list is empty; it should hold one image id a line")
        samples = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClassContext" / f"{i}.png") for i in ids]
        super().__init__(samples, PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_PALETTE, root=root, split=split, **kwargs)

    def map_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return reduce_zero_label(raw, 59, path, "PASCAL-Context 59")
