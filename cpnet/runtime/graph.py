"""Small edits of ONNX graphs that several stages make (ONNX protobufs only, no PyTorch)."""

from __future__ import annotations


def name_nodes(model) -> None:
    """Give every node a unique name (node-level tools, e.g. FP16 block lists, refer to nodes by name)."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
