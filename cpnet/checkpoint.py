"""Checkpoints: atomic save, safe load (weights_only=True), finding the right file in a run directory.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` and nothing in it can run code:
``model`` (state dict), ``config`` (the full config as a dict), ``iter``,
``classes`` and ``palette``, and for resuming ``optimizer``, ``scheduler``,
``scaler``, ``rng`` and ``best_miou``. A manifest (docs/architecture.md) sits beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .config import Config, from_dict
from .runtime import UserError, atomic_torch_save, read_manifest, sha256_file, versions, write_manifest
from .runtime.torch_files import safe_torch_load

CKPT_DIR = "checkpoints"
_ITER_RE = re.compile(r"iter_(\d+)\.pt$")


def iter_checkpoints(work_dir: "str | Path") -> list[tuple[int, Path]]:
    """(iteration, path) of every iteration checkpoint in a run directory, oldest first."""
    d = Path(work_dir) / CKPT_DIR
    found = []
    if d.is_dir():
        for p in d.glob("iter_*.pt"):
            m = _ITER_RE.search(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(work_dir: "str | Path") -> Path | None:
    ckpts = iter_checkpoints(work_dir)
    return ckpts[-1][1] if ckpts else None


def resolve_checkpoint(path: "str | Path") -> Path:
    """A checkpoint file, or a run directory (its best.pt, else its newest iteration checkpoint)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "best.pt", path / CKPT_DIR / "best.pt"):
            if candidate.is_file():
                return candidate
        latest = latest_checkpoint(path)
        if latest is None:
            raise UserError(f"{path}: no checkpoint in this run directory (looked for best.pt and {CKPT_DIR}/iter_*.pt)")
        return latest
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint or run directory")
    return path


def load_checkpoint(path: "str | Path", map_location="cpu") -> dict:
    """Load a checkpoint safely; a file that is not a cpnet checkpoint gives a one-line UserError.

    The one tamper check of every command that reads a checkpoint (evaluate, export, --resume, report,
    benchmark, demo): a manifest beside it whose sha256 names other bytes is refused before the file is
    parsed. ``ckpt["sha256"]`` is the digest, for manifests that name this checkpoint as their parent.
    """
    path = resolve_checkpoint(path)
    sha = verify_checkpoint(path)
    ckpt = safe_torch_load(path, map_location, hint="is the file complete and made by cpnet train?")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(f"{path}: not a cpnet checkpoint (expected keys 'model' and 'config')")
    if not isinstance(ckpt["config"], dict):
        raise UserError(f"{path}: its 'config' entry is a {type(ckpt['config']).__name__}, not a config mapping; "
                        f"the file was not made by cpnet train")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise UserError(f"{path}: its 'model' entry is not a state dict of tensors; the file was not made by cpnet train")
    ckpt["path"] = str(path)
    ckpt["sha256"] = sha
    return ckpt


def verify_checkpoint(path: Path) -> str:
    """The checkpoint's sha256, checked against its manifest when one is beside it (a one-line UserError)."""
    beside = read_manifest(path, required=False)
    sha = sha256_file(path)
    if beside is not None and beside.get("sha256") not in (None, sha):
        raise UserError(f"{path}: does not match its manifest {path.name}.json (sha256 differs: the file changed "
                        f"after it was written); use the run's own checkpoint or remove the stale manifest")
    return sha


def config_of(ckpt: dict) -> Config:
    """The Config a checkpoint was made with.

    A checkpoint whose config predates ``model.agg_bias`` was made by a model without aggregation
    biases, so that is what it gets (its weights then load as they are, the same function).
    """
    cfg = from_dict(ckpt["config"])
    model = (ckpt.get("config") or {}).get("model")
    if isinstance(model, dict) and "agg_bias" not in model:
        cfg.model.agg_bias = False
    return cfg


def load_model(path: "str | Path", device="cpu"):
    """(model, cfg, ckpt): the eval-mode CPNet of a checkpoint or run directory, its config and the checkpoint.

    The one way every stage turns a checkpoint into a model; weights that do not
    fit the checkpoint's own config are a one-line UserError.
    """
    from .models import CPNet

    ckpt = load_checkpoint(path)
    cfg = config_of(ckpt)
    classes = ckpt.get("classes")
    if classes is not None and len(classes) != cfg.model.num_classes:
        raise UserError(f"{ckpt['path']}: names {len(classes)} classes but its config has model.num_classes="
                        f"{cfg.model.num_classes}; the checkpoint was altered")
    model = CPNet(cfg.model)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"{ckpt['path']}: weights do not fit the model of its own config "
                        f"({str(e).strip().splitlines()[0][:200]})") from None
    return model.to(device).eval(), cfg, ckpt


def save_checkpoint(path: "str | Path", state: dict, cfg: Config, classes, palette) -> None:
    """Write a checkpoint and its manifest, each atomically."""
    path = Path(path)
    atomic_torch_save(state, path)
    write_manifest(path, checkpoint_manifest(path, cfg, classes, palette, state.get("iter")))


def checkpoint_manifest(path: Path, cfg: Config, classes, palette, iteration=None, sha256: str | None = None) -> dict:
    """The manifest of a checkpoint, built from the checkpoint's own config (``sha256``: when already known)."""
    return {
        "kind": "checkpoint",
        "model": cfg.name,
        "config": cfg.to_dict(),
        "classes": list(classes),
        "palette": [list(map(int, c)) for c in palette],
        "input_size": list(cfg.crop_size),
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "channel_order": "RGB",
        "output": {"name": "logits", "layout": "NCHW", "classes": cfg.model.num_classes},
        "precision": "fp32",
        "iter": iteration,
        "sha256": sha256 or sha256_file(path),
        "versions": versions(),
    }
