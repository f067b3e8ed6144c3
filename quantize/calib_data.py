"""Calibration images for FP16 and INT8: where they come from, and the same preprocessing as inference.

    for x in iter_calibration_images("data/calib", manifest, num_images=64):
        ...  # x: float32 (1, 3, H, W), exactly what the deployed model is fed

``source`` is one of

- a folder of images, searched recursively for .jpg/.jpeg/.png/.bmp/.webp/.tif
  files. A dataset root in cpnet's folder format is recognised: only its
  ``images/train`` (else ``images/``) folder is used, and folders named like
  label folders (``masks``, ``labels``, ``annotations``, ``gtFine``, ...) are
  skipped everywhere, so masks are never taken for images;
- a config name or YAML file: the training split of its dataset at
  ``data.root`` (or ``data_root``);
- ``None``: the dataset of the config recorded in the model's manifest (its
  training split, else its validation split), at ``data_root`` if given.

Images are read one at a time (the iterator holds one image), resized and
normalised by :func:`cpnet.runtime.preprocess.preprocess` from the manifest. When more
images exist than ``num_images``, a subset is drawn deterministically from
``seed``. Unreadable files are skipped with a warning; a source with no
readable image is a one-line :class:`~cpnet.runtime.errors.UserError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from cpnet.runtime import UserError
from cpnet.runtime.images import IMAGE_EXTENSIONS, BadSampleError, read_image
from cpnet.runtime.log import get_logger

log = get_logger("calibrate")

LABEL_DIR_NAMES = {"masks", "mask", "labels", "label", "annotations", "gtfine", "gtcoarse",
                   "segmentationclass", "segmentationclasscontext", "segmentationobject"}

__all__ = ["CalibrationSource", "count", "count_calibration_images", "iter_calibration_images", "resolve_calibration_source",
           "select_paths"]


@dataclass
class CalibrationSource:
    """The candidate image files and a description of where they came from (for manifests)."""

    paths: list[Path]
    description: str


def _folder_images(folder: Path) -> list[Path]:
    root = folder
    if (folder / "images").is_dir():
        root = folder / "images" / "train" if (folder / "images" / "train").is_dir() else folder / "images"
    found = []
    for p in root.rglob("*"):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        rel = p.relative_to(root).parts[:-1]
        if any(part.lower() in LABEL_DIR_NAMES for part in rel):
            continue
        found.append(p)
    return sorted(found)


def _dataset_images(cfg, data_root: "str | Path | None", splits) -> CalibrationSource:
    from cpnet.data import build_dataset

    if data_root:
        cfg.data.root = str(data_root)
    last_error = None
    for split in splits:
        try:
            ds = build_dataset(cfg.data, split, cfg.crop_size, train=False)
        except UserError as e:
            last_error = e
            continue
        if len(ds):
            return CalibrationSource([ds.sample_path(i) for i in range(len(ds))],
                                     f"{split} split of {cfg.data.dataset} at {cfg.data.root}")
    reason = f" ({last_error})" if last_error else ""
    raise UserError(f"no calibration images in the {'/'.join(splits)} split of {cfg.data.dataset} at "
                    f"{cfg.data.root or '(empty data.root)'}{reason}; pass --calib-data DIR or --data-root DIR")


def looks_like_label_map(path: Path) -> bool:
    """A single-channel image with a handful of small values: a segmentation mask, not a photo."""
    import cv2

    try:
        data = np.fromfile(str(path), np.uint8)
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        return False
    if pixels is None or pixels.ndim != 2:  # masks are stored single-channel; a grey or white photo is not
        return False
    values = np.unique(pixels)
    return len(values) <= 64 and int(values[values != 255].max(initial=0)) < 200


def _refuse_label_maps(folder: Path, files: list[Path], sample: int = 8) -> None:
    """Calibrating on masks gives an INT8 model tuned to label maps, silently: refuse a folder of them."""
    picked = files[:: max(1, len(files) // sample)][:sample]
    masks = sum(looks_like_label_map(f) for f in picked)
    if picked and masks * 2 > len(picked):
        raise UserError(f"{folder}: {masks} of {len(picked)} sampled files look like label maps (one channel, "
                        f"a few small class ids), not photos; pass the folder of images (e.g. images/train)")


def resolve_calibration_source(source: "str | Path | CalibrationSource | None", manifest: Mapping | None = None,
                               data_root: "str | Path | None" = None) -> CalibrationSource:
    """The candidate files of a calibration source (see the module docstring); UserError if there are none."""
    from cpnet.config import ConfigError, from_dict, load_config, named_configs

    if isinstance(source, CalibrationSource):
        return source
    if source is None or str(source) == "":
        config = (manifest or {}).get("config")
        if not config:
            raise UserError("no calibration data given and the model's manifest records no config; "
                            "pass --calib-data DIR (a folder of images) or a config name")
        try:
            cfg = from_dict(config)
        except ConfigError as e:
            raise UserError(f"the manifest's config is not usable ({e}); pass --calib-data DIR") from None
        return _dataset_images(cfg, data_root, (cfg.data.train_split, cfg.data.val_split))
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            raise UserError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder or below")
        _refuse_label_maps(path, files)
        return CalibrationSource(files, f"folder {path}")
    if text in named_configs() or path.suffix.lower() in (".yaml", ".yml"):
        try:
            cfg = load_config(text)
        except ConfigError as e:
            raise UserError(str(e)) from None
        return _dataset_images(cfg, data_root, (cfg.data.train_split,))
    if path.exists():
        raise UserError(f"{path}: calibration data must be a folder of images or a config, not a file")
    raise UserError(f"{text}: no such folder, and not a named config or YAML file (calibration data)")


def select_paths(paths, num_images: int, seed: int = 0) -> list[Path]:
    """All paths in a seed-determined order: the first ``num_images`` are the subset to use, the rest spares.

    With no more files than ``num_images``, the sorted order is kept.
    """
    paths = sorted(Path(p) for p in paths)
    if len(paths) <= num_images:
        return paths
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]


def count(source, manifest: Mapping | None, num_images: int, data_root: "str | Path | None" = None,
          seed: int = 0) -> int:
    """How many images :func:`iter_calibration_images` will yield: min(num_images, files found).

    Unreadable files are replaced by spares where there are any, so this is
    exact unless the source runs short of readable files (``seed`` does not
    change the count; it is accepted to mirror the iterator's signature).
    """
    return min(int(num_images), len(resolve_calibration_source(source, manifest, data_root).paths))


count_calibration_images = count


def iter_calibration_images(source, manifest: Mapping, num_images: int, data_root: "str | Path | None" = None,
                            seed: int = 0) -> Iterator[np.ndarray]:
    """Up to ``num_images`` preprocessed images, float32 (1, 3, H, W), read one at a time.

    The source is resolved now (a missing folder or dataset raises here); a
    source whose files are all unreadable raises UserError when iterated.
    """
    if num_images < 1:
        raise UserError(f"the number of calibration images must be at least 1, got {num_images}")
    src = resolve_calibration_source(source, manifest, data_root)
    ordered = select_paths(src.paths, int(num_images), seed)
    return _generate(src, ordered, manifest, int(num_images))


def _generate(src: CalibrationSource, ordered: list[Path], manifest: Mapping, num_images: int):
    from cpnet.runtime.preprocess import preprocess

    done = bad = 0
    held: list[str] = []  # why files were skipped, said once an image has been read (else the error says it)
    for path in ordered:
        if done >= num_images:
            break
        try:
            image = read_image(path)
        except BadSampleError as e:
            bad += 1
            if done:
                log.warning("skipping calibration image: %s", e)
            else:
                held.append(str(e))
            continue
        for reason in held:
            log.warning("skipping calibration image: %s", reason)
        held = []
        done += 1
        yield preprocess(image, manifest)
    if done == 0:
        first = f"; the first: {held[0]}" if held else ""
        raise UserError(f"{src.description}: no readable image ({bad} file(s) tried, all unreadable{first})")
    if bad:
        log.warning("%d unreadable calibration image(s) skipped in %s", bad, src.description)
