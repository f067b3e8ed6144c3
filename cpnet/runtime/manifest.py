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
import math
import os
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: unreadable manifest ({str(e)[:120]}); re-create the artifact") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{path}: not a cpnet manifest of schema {SCHEMA}")
    problem = manifest_problem(data)
    if problem:
        raise UserError(f"{path}: invalid manifest: {problem}; re-create the artifact with the cpnet tool that made it")
    return data


def verify_sha256(artifact: "str | Path", manifest: dict, what: str = "file") -> str:
    """The artifact's sha256, checked against its manifest before anything parses the file: a file changed
    or cut short after it was made is a one-line UserError. Returns the digest."""
    from .files import artifact_sha256

    digest = artifact_sha256(artifact)
    expected = manifest.get("sha256")
    if expected and digest != expected:
        raise UserError(f"{artifact}: {what} does not match its manifest (sha256 differs; changed or truncated "
                        f"after it was made); re-create it with the cpnet command that made it")
    return digest


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:60] + "..."


def manifest_problem(m: dict) -> str | None:
    """What is wrong with a manifest's fields (types, ranges), or None: checked on every read."""
    if "kind" in m and m["kind"] not in KINDS:
        return f"kind {_short(m['kind'])} is not one of {', '.join(KINDS)}"
    if "input_size" in m:
        size = m["input_size"]
        size = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                    and 1 <= v <= 65536 for v in size)):
            return f"input_size {_short(m['input_size'])} must be [H, W], two whole numbers from 1 to 65536"
    for key, positive in (("mean", False), ("std", True)):
        if key in m:
            v = m[key]
            if not (isinstance(v, list) and len(v) == 3 and all(_number(x) and (x > 0 or not positive) for x in v)):
                return f"{key} {_short(v)} must be three finite numbers" + (" above 0" if positive else "")
    if "channel_order" in m and str(m["channel_order"]).upper() not in ("RGB", "BGR"):
        return f"channel_order {_short(m['channel_order'])} must be RGB or BGR"
    classes = m.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return "classes must be a list of names"
    palette = m.get("palette")
    if palette is not None:
        if not (isinstance(palette, list) and all(isinstance(c, list) and len(c) == 3 and all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in c) for c in palette)):
            return "palette must be a list of [R, G, B] whole numbers from 0 to 255"
        if classes is not None and len(palette) < len(classes):
            return f"palette has {len(palette)} colours for {len(classes)} classes"
    if "precision" in m and m["precision"] not in ("fp32", "fp16", "int8", "bf16"):
        return f"precision {_short(m['precision'])} is not one of fp32, fp16, int8"
    sha = m.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return "sha256 must be 64 hexadecimal digits"
    return None


def class_key(name: str) -> str:
    """A class name as comparisons see it: mmseg's own lists carry stray spaces (ADE20K's class 7 is ``'bed '``
    in its ``ade.py``), so case and surrounding or repeated whitespace do not count."""
    return " ".join(str(name).split()).casefold()


def class_names_differ(ours, theirs) -> str | None:
    """None when two class lists name the same classes (by :func:`class_key`), else the first difference."""
    ours, theirs = list(ours), list(theirs)
    if len(ours) != len(theirs):
        return f"{len(ours)} classes against {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if class_key(a) != class_key(b):
            return f"class {i} is {a!r} against {b!r}"
    return None


#: What an artifact made from another keeps of its parent's manifest: what it takes and what it gives.
INTERFACE_KEYS = ("model", "config", "classes", "palette", "input_size", "mean", "std", "channel_order",
                  "input", "output", "prior", "opset")


def derive_manifest(parent: "str | Path", parent_manifest: dict, kind: str, precision: str,
                    parent_sha256: str | None = None, relative_to: "str | Path | None" = None, **fields) -> dict:
    """The manifest of an artifact made from ``parent`` (FP16 or INT8 from an ONNX file, an engine from one):
    the parent's interface (:data:`INTERFACE_KEYS`), its lineage and the new fields. The artifact's own
    ``sha256`` and ``versions`` are added by the caller when the file exists."""
    from .files import artifact_sha256

    parent = Path(parent)
    where = str(parent) if relative_to is None else os.path.relpath(parent, Path(relative_to))
    manifest = {k: parent_manifest[k] for k in INTERFACE_KEYS if k in parent_manifest}
    manifest.update(kind=kind, precision=precision,
                    parent={"path": where, "sha256": parent_sha256 or artifact_sha256(parent)})
    manifest.update(fields)
    return manifest


def write_manifest(artifact: "str | Path", manifest: dict) -> Path:
    manifest = {"schema": SCHEMA, **manifest}
    path = manifest_path(artifact)
    atomic_write_json(path, manifest)
    return path


def versions() -> dict:
    """Versions of the libraries that made an artifact (those installed; read without importing them)."""
    from importlib import metadata

    out = {}
    for name, dist in (("torch", "torch"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                       ("tensorrt", "tensorrt"), ("numpy", "numpy")):
        for candidate in (dist, f"{dist}-gpu", f"{dist}-cu12", f"{dist}-cu13"):
            try:
                out[name] = metadata.version(candidate)
                break
            except metadata.PackageNotFoundError:
                continue
    return out
