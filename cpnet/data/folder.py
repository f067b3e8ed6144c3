"""The folder format for users' own data (the synthetic dataset is written in it too).

Layout::

    root/
      classes.yaml                 # or classes.json
      images/{split}/<stem>.{jpg,jpeg,png,bmp,tif,tiff,webp}
      masks/{split}/<stem>.png     # single-channel class indices, 255 = ignore

``classes.yaml`` lists the classes in id order, either as a top-level list or
under a ``classes:`` key; each entry is ``{name: road, color: [128, 64, 128]}``
(``color`` optional, RGB) or just a name::

    - {name: sky, color: [70, 130, 180]}
    - {name: road, color: [128, 64, 128]}
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cpnet.data.base import IMAGE_EXTENSIONS, SegmentationDataset, default_palette
from cpnet.runtime import UserError

CLASSES_FILES = ("classes.yaml", "classes.yml", "classes.json")

CLASSES_HINT = ("write root/classes.yaml listing the classes in id order, e.g. "
                "'- {name: sky, color: [70, 130, 180]}' one per line")


def find_classes_file(root: "str | Path") -> Path:
    root = Path(root)
    for name in CLASSES_FILES:
        if (root / name).is_file():
            return root / name
    raise UserError(f"{root / 'classes.yaml'}: classes file not found (nor classes.json); {CLASSES_HINT}")


def read_classes(root: "str | Path") -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and RGB palette from root/classes.yaml (or .yml/.json)."""
    path = find_classes_file(root)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as e:
        raise UserError(f"{path}: cannot read classes file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}; saved in a "
                        f"legacy encoding such as cp1252?); save it as UTF-8") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                        f"({str(e).splitlines()[0]}); {CLASSES_HINT}") from None
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty list of classes; {CLASSES_HINT}")
    if len(data) > 255:
        raise UserError(f"{path}: {len(data)} classes; at most 255 are supported (255 is the ignore label)")
    names, colors = [], []
    fallback = default_palette(len(data))
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise UserError(f"{path}: class {i} must be a name or {{name: ..., color: [r, g, b]}}, got {entry!r}")
        color = entry.get("color", entry.get("colour"))
        if color is None:
            color = fallback[i]
        if (not isinstance(color, (list, tuple)) or len(color) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            raise UserError(f"{path}: class {i} ({entry['name']}): color must be three integers 0-255 (RGB), "
                            f"got {color!r}")
        names.append(entry["name"].strip())
        colors.append(tuple(color))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"{path}: duplicate class names {dup}")
    return names, colors


class FolderDataset(SegmentationDataset):
    name = "folder"

    def __init__(self, root, split: str = "train", **kwargs):
        root = Path(root)
        classes, palette = read_classes(root)
        img_dir = root / "images" / split
        if not img_dir.is_dir():
            raise UserError(f"{img_dir}: split folder not found; put the {split} images in root/images/{split}/ "
                            f"and their masks in root/masks/{split}/<same name>.png")
        images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise UserError(f"{img_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the '{split}' split; "
                            f"add images there, or set data.train_split/data.val_split to a split that has them")
        stems = {}
        for p in images:
            if p.stem in stems:
                raise UserError(f"{p}: two images share the name '{p.stem}' ({stems[p.stem].name}); "
                                "each image needs its own masks/<name>.png")
            stems[p.stem] = p
        samples = [(p, root / "masks" / split / f"{p.stem}.png") for p in images]
        super().__init__(samples, classes, palette, root=root, split=split, **kwargs)
