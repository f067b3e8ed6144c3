"""Reading ONNX files and small edits of ONNX graphs that several stages make (ONNX protobufs only, no PyTorch)."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError, first_line


def load_onnx(path: "str | Path", error: type = UserError, hint: str = "re-export it with cpnet export"):
    """The ONNX model at ``path``, read and passed through ONNX's own checker (by path, so files with external
    data work); a missing, unreadable or invalid file is one ``error`` line naming the file and ``hint``."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf errors are long; one line is enough
        raise error(f"{path}: not a valid ONNX model ({first_line(e, 200)}); {hint}") from None
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise error(f"{path}: not a valid ONNX model (onnx.checker: {first_line(e, 200)}); {hint}") from None
    return model


def name_nodes(model) -> None:
    """Give every node a unique name (node-level tools, e.g. FP16 block lists, refer to nodes by name)."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def with_outputs(model, names, types: dict):
    """A copy of ``model`` whose graph outputs are its own followed by ``names`` (intermediate tensors made
    observable; ``types`` maps each name to ``(elem_type, shape)``, a shape of ``[]`` or None left open).
    Run it with ``make_session(..., optimization="none")``: a tensor that is also a graph output changes what
    ONNX Runtime may fuse."""
    import copy

    from onnx import helper

    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            elem, shape = types[name]
            m.graph.output.append(helper.make_tensor_value_info(name, elem, shape if shape else None))
            have.add(name)
    return m


def tensor_bytes(shape, itemsize: int = 4) -> int:
    """Bytes of a tensor of ``shape`` (symbolic or unknown dimensions counted as 1)."""
    import numpy as np

    return itemsize * int(np.prod([max(int(d), 1) if isinstance(d, (int, np.integer)) else 1 for d in (shape or [1])]))


def within_budget(items, nbytes, budget: int) -> list[list]:
    """``items`` in order, cut into consecutive groups whose ``nbytes(item)`` sum stays within ``budget`` (a single
    item over it is a group of its own): how many exposed tensors one run may hold in memory."""
    groups, cur, size = [], [], 0
    for item in items:
        n = nbytes(item)
        if cur and size + n > budget:
            groups.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += n
    if cur:
        groups.append(cur)
    return groups
