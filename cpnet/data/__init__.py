"""Datasets, transforms and the synthetic data generator.

``build_dataset(data_cfg, split, crop_size, train)`` is the public constructor;
``classes_of(data_cfg)`` gives class names and palette without listing samples.
Every dataset returns ``(image float32 (3, H, W) normalised, label int64 (H, W))``
per item, or ``None`` for a bad sample in ``on_bad_data="skip"`` mode; use
``collate_skip`` as the DataLoader's ``collate_fn`` to drop and count those.
"""

from __future__ import annotations

from pathlib import Path

from cpnet.runtime import UserError

from .ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ADE20KDataset
from .base import BadSampleError, SegmentationDataset, collate_skip, read_image, read_mask
from .cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CityscapesDataset
from .folder import FolderDataset, read_classes
from .pascal_context import PASCAL_CONTEXT_CLASSES, PASCAL_CONTEXT_PALETTE, PascalContextDataset
from .transforms import EvalTransform, TrainTransform, build_transform

__all__ = [
    "ADE20KDataset", "BadSampleError", "CityscapesDataset", "EvalTransform", "FolderDataset", "LOOKALIKE_PAIRS",
    "PascalContextDataset", "SYNTHETIC_CLASSES", "SegmentationDataset", "TrainTransform", "build_dataset",
    "build_transform", "classes_of", "collate_skip", "read_image", "read_mask",
]

DATASETS = {
    "cityscapes": CityscapesDataset,
    "ade20k": ADE20KDataset,
    "pascal_context": PascalContextDataset,
    "folder": FolderDataset,
    "synthetic": FolderDataset,  # generated into the folder format
}

_ROOT_HINTS = {
    "cityscapes": "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com, "
                  "unpack both there, or set data.root=PATH",
    "ade20k": "unpack ADEChallengeData2016.zip (from the MIT Scene Parsing benchmark) and point data.root at "
              "its ADEChallengeData2016 folder",
    "pascal_context": "prepare VOC2010 + the Context labels with mmseg's tools/dataset_converters/pascal_context.py "
                      "and point data.root at VOCdevkit/VOC2010",
    "folder": "set data.root to a folder holding images/<split>/, masks/<split>/ and classes.yaml",
}


_SYNTHETIC_NAMES = ("LOOKALIKE_PAIRS", "SYNTHETIC_CLASSES", "SYNTHETIC_NAMES", "SYNTHETIC_PALETTE")


def __getattr__(name):
    # Imported lazily so that ``python -m cpnet.data.synthetic`` does not import the module twice.
    if name in _SYNTHETIC_NAMES:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_root(data_cfg) -> Path:
    if not data_cfg.root:
        raise UserError(f"data.root is empty; set data.root=PATH for dataset '{data_cfg.dataset}'")
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        if data_cfg.dataset == "synthetic":
            hint = f"run cpnet data -o {data_cfg.root} to generate it"
        else:
            hint = _ROOT_HINTS.get(data_cfg.dataset, "set data.root=PATH")
        raise UserError(f"data root {data_cfg.root} not found; {hint}")
    if data_cfg.dataset == "synthetic" and not any((root / n).is_file() for n in ("classes.yaml", "classes.json")):
        raise UserError(f"{root / 'classes.yaml'} not found, so {root} holds no complete synthetic dataset; "
                        f"run cpnet data -o {data_cfg.root}")
    return root


def classes_of(data_cfg) -> tuple[list[str], list[tuple[int, int, int]]]:
    """(class names, RGB palette) of the configured dataset, for manifests; reads only the classes file."""
    kind = data_cfg.dataset
    if kind == "cityscapes":
        return list(CITYSCAPES_CLASSES), list(CITYSCAPES_PALETTE)
    if kind == "ade20k":
        return list(ADE20K_CLASSES), list(ADE20K_PALETTE)
    if kind == "pascal_context":
        return list(PASCAL_CONTEXT_CLASSES), list(PASCAL_CONTEXT_PALETTE)
    if kind in ("folder", "synthetic"):
        return read_classes(_check_root(data_cfg))
    raise UserError(f"data.dataset={kind!r} is not one of {', '.join(DATASETS)}")


def build_dataset(data_cfg, split: str, crop_size: int, train: bool,
                  num_classes: int | None = None) -> SegmentationDataset:
    """The dataset of ``data_cfg.dataset`` at ``data_cfg.root`` for ``split``, with train or eval transforms.

    ``num_classes`` (the model's) is checked against the dataset's class count.
    """
    kind = data_cfg.dataset
    if kind not in DATASETS:
        raise UserError(f"data.dataset={kind!r} is not one of {', '.join(DATASETS)}")
    root = _check_root(data_cfg)
    ds = DATASETS[kind](root, split, transform=build_transform(data_cfg, crop_size, train),
                        on_bad_data=data_cfg.on_bad_data, ignore_index=data_cfg.ignore_index)
    if num_classes is not None and num_classes != ds.num_classes:
        raise UserError(f"model.num_classes={num_classes} but the {kind} dataset at {root} has "
                        f"{ds.num_classes} classes; set model.num_classes={ds.num_classes}")
    return ds
