"""The FP32 model a reduced-precision file is made from: loaded, checked against its manifest, named after.

``cpnet fp16`` and ``cpnet int8`` (and ``cpnet sensitivity``) all start from the FP32
export of ``cpnet export`` and its manifest ``model.onnx.json``. :func:`load_parent`
refuses, with one line each and in this order, a missing file, a missing
manifest, a manifest of another kind, a model that is already FP16 or INT8, a
file changed since its manifest was written (sha256: checked before its bytes are
parsed, so a tampered file is never read as a model) and a file that is not a
valid ONNX model. :func:`derived_path` names the
files made from it, beside it: ``model.onnx`` -> ``model.fp16.onnx``,
``model.int8.onnx``, ``model.calib.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cpnet.runtime import UserError, files, read_manifest
from cpnet.runtime.manifest import verify_sha256
from cpnet.runtime.graph import load_onnx as read_onnx


@dataclass
class Parent:
    """The FP32 parent: its path, the loaded ONNX model, its manifest and its sha256."""

    path: Path
    model: object  # onnx.ModelProto
    manifest: dict
    sha256: str


def load_onnx(path: "str | Path"):
    """The ONNX model at ``path`` (checked, one image input); a missing or corrupt file is a one-line UserError."""
    model = read_onnx(path)
    if len(model.graph.input) != 1:
        raise UserError(f"{path}: expected one image input, the model has {len(model.graph.input)}")
    return model


def load_parent(path: "str | Path") -> Parent:
    """Load the FP32 export at ``path`` and check it against its manifest (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    manifest = read_manifest(path, required=False)  # an unreadable one is a UserError of its own
    if manifest is None:
        raise UserError(f"{path}: its manifest {path.name}.json is missing; make the FP32 file with cpnet export, "
                        f"which writes it")
    if manifest.get("kind", "onnx") != "onnx":
        raise UserError(f"{path}: its manifest describes a {manifest.get('kind')!r}, not an ONNX model")
    precision = str(manifest.get("precision", "fp32"))
    if precision != "fp32":
        raise UserError(f"{path}: is a {precision} model; convert the FP32 export (model.onnx) instead")
    sha = verify_sha256(path, manifest)  # before the bytes are parsed
    model = load_onnx(path)
    disagreement = manifest_against_graph(model, manifest)
    if disagreement:
        raise UserError(f"{path}: its manifest disagrees with the graph ({disagreement}); re-export it")
    return Parent(path=path, model=model, manifest=manifest, sha256=sha)


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def manifest_against_graph(model, manifest: dict) -> str | None:
    """What a manifest says that the graph contradicts (input size, class count), or None: a manifest edited or
    carried over from another model would otherwise steer preprocessing and class names silently."""
    inp = _dims(model.graph.input[0])
    size = manifest.get("input_size")
    if isinstance(size, int):
        size = [size, size]
    if size and len(inp) == 4 and None not in inp[2:] and list(inp[2:]) != list(size):
        return f"input_size {list(size)} against the graph's input {inp[2]}x{inp[3]} (H x W)"
    classes = manifest.get("classes")
    out = _dims(model.graph.output[0]) if model.graph.output else []
    if classes and len(out) == 4 and out[1] and out[1] != len(classes):
        return f"{len(classes)} classes against the graph's {out[1]} output channels"
    return None


def derived_path(parent: "str | Path", suffix: str, folder: "str | Path | None" = None) -> Path:
    """``<parent stem><suffix>`` in ``folder`` (default: beside the parent): model.onnx -> model.fp16.onnx."""
    parent = Path(parent)
    stem = parent.name[:-5] if parent.name.endswith(".onnx") else parent.stem
    return Path(folder if folder is not None else parent.parent) / f"{stem}{suffix}"


def check_output(out: "str | Path", parent: "str | Path") -> Path:
    """Refuse, before any work, an output that is the parent itself or a place that cannot be written."""
    if Path(out).resolve() == Path(parent).resolve():
        raise UserError(f"-o {out}: would overwrite the FP32 model it is made from")
    return files.check_output(out)


def check_keep_float(model, names: Sequence[str], src: "str | Path", listed: Sequence[str] | None = None) -> list[str]:
    """``--keep-float``'s node names, each once, in order, if every one is a node of ``model``; else a UserError
    naming the first unknown one, the closest node name and, with ``listed``, the first nodes that may be named."""
    import difflib

    node_names = [n.name for n in model.graph.node]
    known = set(node_names)
    keep = list(dict.fromkeys(names))
    unknown = [k for k in keep if k not in known]
    if not unknown:
        return keep
    hint = difflib.get_close_matches(unknown[0], node_names, n=1)
    message = f"--keep-float: no node named {unknown[0]!r} in {Path(src).name}"
    if hint:
        message += f" (did you mean {hint[0]!r}?)"
    if listed is not None:
        message += (f"; quantizable nodes include {', '.join(listed[:5])}{', ...' if len(listed) > 5 else ''} "
                    f"(cpnet sensitivity lists them all)")
    raise UserError(message)
