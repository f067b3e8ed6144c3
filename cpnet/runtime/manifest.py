"""Manifests: the JSON file beside every artifact, read and written in one place.

Every artifact (checkpoint, ONNX file, engine, report) has ``<file name>.json``
beside it, with the schema version :data:`SCHEMA`: what the artifact is
(``kind``), what it takes (``input_size``, ``mean``, ``std``,
``channel_order``), what it gives (``classes``, ``palette``, ``output``), how it
was made (``precision``, ``parent`` and its sha256, ``versions``) and its own
``sha256``. See docs/architecture.md for the fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .files import atomic_write_json

SCHEMA = 1
KINDS = ("checkpoint", "onnx", "engine", "report")


def manifest_path(artifact: "str | Path") -> Path:
    """The manifest sits beside its artifact, named after the whole file name: model.int8.onnx -> model.int8.onnx.json.

    model.int8.onnx and the engine built from it, model.int8.engine, share a
    stem; the full name keeps every manifest distinct.
    """
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def read_manifest(artifact: "str | Path", required: bool = True) -> dict | None:
    path = manifest_path(artifact)
    if not path.exists():
        if required:
            raise UserError(f"{path}: manifest not found beside {Path(artifact).name}; re-create the artifact with the cpnet tool that made it")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable manifest ({e}); re-create the artifact") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{path}: not a cpnet manifest of schema {SCHEMA}")
    return data


def write_manifest(artifact: "str | Path", manifest: dict) -> Path:
    manifest = {"schema": SCHEMA, **manifest}
    path = manifest_path(artifact)
    atomic_write_json(path, manifest)
    return path


def versions() -> dict:
    """Versions of the libraries that made an artifact (those that are importable)."""
    out = {}
    for name in ("torch", "onnx", "onnxruntime", "tensorrt", "numpy"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "unknown")
        except Exception:
            pass
    return out
