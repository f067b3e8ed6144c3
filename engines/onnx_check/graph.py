"""The ONNX graph as the pre-flight check reads it: build-time constants, shapes, types, producers and readers.

This is the check's one reader of a model, for every rule in this package. It differs from
:mod:`engines.layers.onnx_graph`, which tabulates nodes and matches tensors of two files for
``cpnet inspect``/``cpnet compare``: this one reads a value the way TensorRT's ONNX parser does,
folding a node whose inputs are all constants (Identity, Cast, Reshape... of initializers) with
ONNX's reference evaluator, and walks If/Loop/Scan bodies, so a rule asks "is this a build-time
constant, and what is it" in one call.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DOMAINS = ("", "ai.onnx")
FOLD_DEPTH = 8  # how many producer levels build-time constant folding follows
NOT_FOLDABLE = frozenset("RandomNormal RandomNormalLike RandomUniform RandomUniformLike Multinomial Bernoulli "
                         "If Loop Scan".split())
#: the nodes a value passes through unchanged on its way to the layer that reads it
PASS_THROUGH = ("Identity", "Cast")


class Graph:
    """Constants, shapes, producers and consumers of one ONNX model (including nested subgraphs)."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        self.model = model
        self.opset = next((int(i.version) for i in model.opset_import if i.domain in DEFAULT_DOMAINS), 17)
        self.consts: dict[str, np.ndarray] = {}     # initializers and Constant outputs (what the parser calls weights)
        self._folded: dict[str, np.ndarray | None] = {}
        self.shapes: dict[str, list] = {}
        self.types: dict[str, int] = {}
        self.producer: dict[str, object] = {}
        self.consumers: dict[str, list[tuple[object, int]]] = {}
        self.nodes: list[tuple[str, object]] = []  # (label, node)
        self.outputs = {o.name for o in model.graph.output}

        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # shape inference is best effort: checks that need shapes degrade to warnings
            inferred = model
        graph = inferred.graph
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            self._add_value_info(vi)
        self._walk(graph, numpy_helper, prefix="")

    def _add_value_info(self, vi) -> None:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            return
        self.types[vi.name] = t.elem_type
        if t.HasField("shape"):
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in t.shape.dim]

    def _walk(self, graph, numpy_helper, prefix: str) -> None:
        for init in graph.initializer:
            try:
                arr = numpy_helper.to_array(init)
            except Exception:
                continue
            self.consts[init.name] = arr
            self.shapes[init.name] = list(arr.shape)
            self.types[init.name] = init.data_type
        for vi in graph.value_info:
            self._add_value_info(vi)
        for i, node in enumerate(graph.node):
            label = node.name or f"{prefix}#{i}"
            self.nodes.append((label, node))
            for out in node.output:
                self.producer[out] = node
            for j, inp in enumerate(node.input):
                if inp:
                    self.consumers.setdefault(inp, []).append((node, j))
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                for attr in node.attribute:
                    if attr.name == "value":
                        arr = numpy_helper.to_array(attr.t)
                        self.consts[node.output[0]] = arr
                        self.shapes[node.output[0]] = list(arr.shape)
                        self.types[node.output[0]] = attr.t.data_type
            for attr in node.attribute:  # If / Loop / Scan bodies
                if attr.type == self.onnx.AttributeProto.GRAPH:
                    self._walk(attr.g, numpy_helper, prefix=f"{label}/")
                elif attr.type == self.onnx.AttributeProto.GRAPHS:
                    for body in attr.graphs:
                        self._walk(body, numpy_helper, prefix=f"{label}/")

    def literal(self, name: str) -> np.ndarray | None:
        """An initializer or a Constant node's output (what the parser's tables call "an initializer")."""
        return self.consts.get(name) if name else None

    def const(self, name: str, depth: int = FOLD_DEPTH) -> np.ndarray | None:
        """A build-time constant: a literal, or a node whose inputs all are (Identity, Cast, Reshape...
        of constants), evaluated with ONNX's reference evaluator. None if it depends on a graph input."""
        if not name:
            return None
        if name in self.consts:
            return self.consts[name]
        if name in self._folded:
            return self._folded[name]
        self._folded[name] = None  # guards cycles
        node = self.producer.get(name)
        value = None
        if (node is not None and depth > 0 and node.domain in DEFAULT_DOMAINS and node.op_type not in NOT_FOLDABLE
                and not any(attr.type in (self.onnx.AttributeProto.GRAPH, self.onnx.AttributeProto.GRAPHS)
                            for attr in node.attribute)):
            inputs = [self.const(i, depth - 1) if i else None for i in node.input]
            if all(v is not None for v, i in zip(inputs, node.input) if i):
                value = self._evaluate(node, inputs, name)
        self._folded[name] = value
        return value

    def _evaluate(self, node, inputs, name) -> np.ndarray | None:
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        try:
            inits = [numpy_helper.from_array(np.asarray(v), n) for v, n in zip(inputs, node.input) if n]
            outs = [helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
            graph = helper.make_graph([node], "fold", [], outs, initializer=inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
            results = ReferenceEvaluator(model).run(None, {})
            values = dict(zip([o for o in node.output if o], results))
            return np.asarray(values[name]) if name in values else None
        except Exception:  # anything the reference evaluator cannot run is "not known at check time"
            return None

    def shape(self, name: str) -> list | None:
        return self.shapes.get(name) if name else None

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def is_weight(self, name: str) -> bool:
        """A constant, or a Q/DQ/Cast of a constant (the way weights reach a layer)."""
        seen = 0
        while name and seen < 4:
            if name in self.consts:
                return True
            node = self.producer.get(name)
            if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity"):
                return False
            name = node.input[0]
            seen += 1
        return False

    def source(self, name: str, through=PASS_THROUGH):
        """The node that computes ``name``, looking back through Identity and Cast (None for an input or constant)."""
        node = self.producer.get(name)
        while node is not None and node.op_type in through:
            node = self.producer.get(node.input[0])
        return node

    def readers(self, name: str, through=PASS_THROUGH) -> list[tuple[object, int]]:
        """(node, input index) of the layers that read ``name``, looking through Identity and Cast."""
        out, todo, seen = [], [name], set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            for node, j in self.consumers.get(n, []):
                if node.op_type in through and node.output:
                    todo.append(node.output[0])
                else:
                    out.append((node, j))
        return out


def attributes(node) -> dict:
    """A node's attributes by name, as Python values."""
    from onnx import helper

    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def as_text(value) -> str:
    """A string attribute (ONNX gives bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def input_name(node, index: int) -> str:
    """The name of a node's input ``index``; "" when the input is absent or left out (optional inputs)."""
    return node.input[index] if len(node.input) > index else ""
