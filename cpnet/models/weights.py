"""Load ImageNet backbone weights from a local file (nothing is downloaded).

Accepted: torchvision ResNet state dicts (into a ``stem=v1b`` backbone) and
mmcv/mmseg ResNetV1c ones (into ``stem=v1c``), plain or wrapped under
``state_dict`` / ``model`` / ``backbone``, with ``module.`` / ``backbone.``
prefixes. The classifier (``fc.*``) is dropped. Anything else that does not
fit is refused with one message saying what is wrong and what to change.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cpnet.runtime import UserError
from cpnet.runtime.torch_files import safe_torch_load

_PREFIXES = ("module.", "backbone.")
_WRAPPERS = ("state_dict", "model", "backbone")
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")
_DEPTH_OF_BLOCKS = {(2, 2, 2, 2): "18", (3, 4, 6, 3): "34/50", (3, 4, 23, 3): "101", (3, 8, 36, 3): "152"}


def _read(path: Path) -> Any:
    if not path.exists():
        raise UserError(f"{path}: backbone weights file not found")
    return safe_torch_load(path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # {"state_dict": {...}} (mmcv), {"model": {...}}, {"backbone": {...}}, possibly nested
    for _ in range(4):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise UserError(f"{path}: no tensors found (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    return sd


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _blocks(keys) -> tuple[int, ...] | None:
    counts = [0, 0, 0, 0]
    for k in keys:
        m = _BLOCK_KEY.match(k)
        if m:
            i, j = int(m.group(1)) - 1, int(m.group(2))
            counts[i] = max(counts[i], j + 1)
    return tuple(counts) if any(counts) else None


def first_items(items: list[str], n: int = 4) -> str:
    """The first ``n`` items for a one-line message, and how many more there are."""
    more = f", ... (+{len(items) - n})" if len(items) > n else ""
    return ", ".join(items[:n]) + more



def state_dict_fit(own: dict, given: dict, name=lambda k: k) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mismatched) of a state dict ``given`` against a model's ``own``: keys the model needs
    and the file lacks (``num_batches_tracked`` is optional: old files lack it), keys the model does not have, and
    "key file-shape vs model-shape" lines; ``name`` maps a key to how the file calls it, for the messages."""
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in given and k not in optional]
    unexpected = [name(k) for k in given if k not in own]
    mismatched = [f"{name(k)} {tuple(given[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in given and given[k].shape != own[k].shape]
    return missing, unexpected, mismatched


def _hint(backbone: nn.Module, ckpt: dict[str, torch.Tensor], mismatched: list[str]) -> str:
    stem = getattr(backbone, "stem_type", None)
    if stem == "v1c" and "conv1.weight" in ckpt and "stem.0.weight" not in ckpt:
        return "a torchvision checkpoint has a 7x7 stem (conv1.weight): use model.stem=v1b"
    if stem == "v1b" and "stem.0.weight" in ckpt and "conv1.weight" not in ckpt:
        return "an mmcv ResNetV1c checkpoint has a deep 3x3 stem (stem.0.weight): use model.stem=v1c"
    theirs, ours = _blocks(ckpt), _blocks(backbone.state_dict())
    if theirs and ours and theirs != ours:
        depth = _DEPTH_OF_BLOCKS.get(theirs, "?")
        if depth == "34/50":  # bottleneck blocks have a conv3
            depth = "50" if any(".conv3." in k for k in ckpt) else "34"
        return (f"the checkpoint has {theirs} blocks per stage (ResNet-{depth}), the model has {ours} "
                f"(ResNet-{getattr(backbone, 'depth', '?')}): set model.depth to match")
    if mismatched:
        return ("channel widths differ: check model.depth (basic vs bottleneck blocks) and model.base_width "
                "(ImageNet checkpoints have base_width=64)")
    return "is this a ResNet backbone checkpoint in torchvision or mmcv naming?"


def load_backbone_weights(model_or_backbone: nn.Module, path: "str | Path") -> dict:
    """Load a ResNet checkpoint into ``model.backbone`` (or a bare backbone).

    Returns ``{"loaded": n, "missing": [...], "unexpected": [...]}``. Raises
    :class:`~cpnet.runtime.errors.UserError` before changing any weight if a backbone
    tensor is missing from the file, a shape differs, or the file holds
    blocks the backbone does not have (a deeper ResNet). Other unexpected keys
    are ignored with a warning.
    """
    path = Path(path)
    backbone = getattr(model_or_backbone, "backbone", model_or_backbone)
    ckpt: dict[str, torch.Tensor] = {}
    for k, v in _unwrap(_read(path), path).items():
        k = _strip(k)
        if k.startswith("fc."):
            continue
        ckpt.setdefault(k, v)

    own = backbone.state_dict()
    missing, unexpected, mismatched = state_dict_fit(own, ckpt)
    extra_blocks = [k for k in unexpected if _BLOCK_KEY.match(k)]

    if missing or mismatched or extra_blocks:
        parts = []
        if missing:
            parts.append(f"{len(missing)} backbone keys missing ({first_items(missing)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({first_items(mismatched, 3)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({first_items(unexpected)})")
        raise UserError(f"{path}: does not fit the ResNet-{getattr(backbone, 'depth', '?')} "
                        f"stem={getattr(backbone, 'stem_type', '?')} backbone: {'; '.join(parts)}. "
                        f"Hint: {_hint(backbone, ckpt, mismatched)}")

    to_load = {k: v for k, v in ckpt.items() if k in own}
    result = backbone.load_state_dict(to_load, strict=False)
    still_missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]  # optional, as in state_dict_fit
    if still_missing:  # cannot happen after the checks above; keep the contract anyway
        raise UserError(f"{path}: {len(still_missing)} backbone keys missing ({first_items(still_missing)})")
    if unexpected:
        msg = (f"{path}: ignored {len(unexpected)} keys that are not part of the backbone "
               f"({first_items(unexpected)})")
        warnings.warn(msg, stacklevel=2)
    loaded = sum(1 for k in to_load if not k.endswith("num_batches_tracked"))
    return {"loaded": loaded, "missing": [], "unexpected": unexpected}
