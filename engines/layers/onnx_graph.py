"""An ONNX file node by node: its table (op, precision, whether Q/DQ feeds it) and how its tensors match another's.

**The table** (:func:`node_table`), in the spirit of Polygraphy's ``inspect model``: one row per node in
graph order with its op, the precision it computes in and which of its inputs come through a
DequantizeLinear (``act``: an activation, ``weight``: an initializer or Constant, so a build-time
constant). A node that reads a dequantized input is counted as INT8 (the quantized type the DQ reads):
TensorRT fuses the DQ into it and runs it in INT8, as NVIDIA's Q/DQ rules describe; a QuantizeLinear is
its quantized type, a DequantizeLinear its float type; any other node the type of its first output.

**The matching rule** (:func:`alias_roots`, :func:`match_tensors`), for comparing two files made from one
model (FP32, FP16, INT8 of either flavour):

1. Within one file, a tensor *stands for* another when it is that tensor seen through the nodes that
   change its precision only: a DequantizeLinear that reads a QuantizeLinear stands for the float tensor
   that QuantizeLinear reads (``x -> Q -> DQ -> x'``: ``x'`` stands for ``x``), and a Cast's output
   stands for its input (FP16 files wrap FP32 islands, inputs and outputs in Casts). Chains follow
   through (a Cast of a DQ of a Q of ``x`` stands for ``x``). The tensor nothing else stands for is the
   group's *root*, the output of the node that computed it.
2. Two tensors of different files match when their groups share a name. Each group of the reference
   file (B) is one layer, named by its root and the node that produced it, in B's graph order.
3. In each file the tensor compared is the one the layers after it read: the group's first
   DequantizeLinear output where it has one (the value as quantized; this also covers quantizers that fold
   an activation into the quantization, as ONNX Runtime's folds Conv -> Relu into Conv -> uint8 Q, so the
   tensor keeps the Relu's name but holds the Conv's output until it is quantized), else the reference's
   name where this file's group has it, else the root. Groups whose root is a graph input, and weights (a
   DQ of an initializer), are not layers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

#: ONNX element type -> the precision name cpnet's manifests use
PRECISIONS = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64", 3: "int8", 2: "uint8", 6: "int32", 7: "int64",
              9: "bool", 17: "fp8", 18: "fp8", 19: "fp8", 20: "fp8"}
FLOAT_TYPES = (1, 10, 16, 11)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def precision_name(elem_type) -> str:
    return PRECISIONS.get(int(elem_type or 0), "?")


@dataclass
class NodeRow:
    index: int
    name: str
    op: str
    precision: str
    qdq: str  # which inputs come dequantized: "act", "weight", "act+weight" or ""
    output: str

    def as_dict(self) -> dict:
        return asdict(self)


def _constants(model) -> set[str]:
    """Names of tensors fixed at build time: initializers and Constant outputs."""
    names = {t.name for t in model.graph.initializer}
    names.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return names


def node_table(model, info: dict) -> list[NodeRow]:
    """One row per node, in graph order (``info``: name -> (elem_type, shape), from shape inference)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = _constants(model)
    types = {name: elem for name, (elem, _) in info.items()}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    rows = []
    for i, n in enumerate(model.graph.node):
        kinds = set()
        quantized_type = None
        for x in n.input:
            dq = producer.get(x)
            if dq is None or dq.op_type != "DequantizeLinear" or n.op_type in QDQ_OPS:
                continue
            kinds.add("weight" if dq.input[0] in constants else "act")
            quantized_type = quantized_type or types.get(dq.input[0])
        out = n.output[0] if n.output else ""
        if n.op_type == "QuantizeLinear":
            precision = precision_name(types.get(out) or (types.get(n.input[2]) if len(n.input) > 2 else 2))
        elif kinds:
            precision = precision_name(quantized_type or 3)
        else:
            precision = precision_name(types.get(out))
        qdq = "+".join(k for k in ("act", "weight") if k in kinds)
        rows.append(NodeRow(i, n.name or f"{n.op_type}_{i}", n.op_type, precision, qdq, out))
    return rows


def counts(rows: list[NodeRow]) -> dict:
    """Nodes per precision and per op (Q/DQ nodes counted apart), and how many nodes Q/DQ feeds."""
    compute = [r for r in rows if r.op not in QDQ_OPS]
    return {"nodes": len(rows), "precision": dict(Counter(r.precision for r in compute).most_common()),
            "op": dict(Counter(r.op for r in compute).most_common()),
            "quantize_linear": sum(r.op == "QuantizeLinear" for r in rows),
            "dequantize_linear": sum(r.op == "DequantizeLinear" for r in rows),
            "qdq_fed": sum(bool(r.qdq) for r in compute)}


# --------------------------------------------------------------------------- the matching rule


def alias_roots(model) -> dict[str, str]:
    """tensor -> the tensor it stands for (rule 1 of the module docstring), for every tensor that stands for
    another; a tensor absent from the map is its own root."""
    producer = {o: n for n in model.graph.node for o in n.output}
    root: dict[str, str] = {}

    def find(x: str) -> str:
        seen = set()
        while x in root and x not in seen:
            seen.add(x)
            x = root[x]
        return x

    for n in model.graph.node:
        if not n.input or not n.output:
            continue
        if n.op_type == "Cast":
            root[n.output[0]] = n.input[0]
        elif n.op_type == "DequantizeLinear":
            q = producer.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                root[n.output[0]] = q.input[0]
    return {name: find(name) for name in root}


def float_activations(model, info: dict) -> list[str]:
    """Float tensors computed by nodes (not Constants, not Q/DQ of build-time constants), in graph order."""
    constants = _constants(model)
    out = []
    for n in model.graph.node:
        if n.op_type == "Constant":
            continue
        if n.op_type == "DequantizeLinear" and n.input and n.input[0] in constants:
            continue  # a weight
        for o in n.output:
            if o and info.get(o, (None,))[0] in FLOAT_TYPES:
                out.append(o)
    return out


@dataclass
class Match:
    """One layer: the tensor group of the reference file B whose root is ``tensor``, computed by node ``node``
    (op ``op``); ``reference`` and ``candidate`` are the tensors compared in B and in A (rule 3)."""

    index: int
    node: str
    op: str
    tensor: str
    reference: str
    candidate: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Group:
    root: str
    members: list  # float activations standing for root, in graph order (the root first when it is one)
    dequantized: str | None  # the first member a DequantizeLinear produced

    @property
    def computed(self) -> bool:
        """Whether a node computes the root (it is not a graph input seen through a Cast)."""
        return bool(self.members) and self.members[0] == self.root

    def read_as(self, preferred: str | None = None) -> str:
        """The tensor compared (rule 3)."""
        if self.dequantized:
            return self.dequantized
        return preferred if preferred in self.members else self.members[0]


def _groups(model, info) -> tuple[dict[str, _Group], dict[str, str]]:
    """root -> its group, and name -> root for every member."""
    roots = alias_roots(model)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    groups: dict[str, _Group] = {}
    for name in float_activations(model, info):
        r = roots.get(name, name)
        g = groups.setdefault(r, _Group(r, [], None))
        g.members.append(name)
        if g.dequantized is None and producer.get(name) == "DequantizeLinear":
            g.dequantized = name
    for g in groups.values():
        if g.root in g.members:
            g.members.remove(g.root)
            g.members.insert(0, g.root)
    index = {name: r for r, g in groups.items() for name in (r, *g.members)}
    return groups, index


def match_tensors(candidate, candidate_info, reference, reference_info) -> tuple[list[Match], dict]:
    """The layers the two files share (rules 2 and 3), in the reference's graph order, and how many tensor
    groups of each found no partner (``{"candidate": n, "reference": m}``)."""
    a_groups, a_index = _groups(candidate, candidate_info)
    b_groups, _ = _groups(reference, reference_info)
    producer = {o: n for n in reference.graph.node for o in n.output}
    matches, used = [], set()
    for root, g in b_groups.items():
        node = producer.get(root)
        if node is None or not g.computed:
            continue  # the root is a graph input (or not computed here): not a layer
        a_root = next((a_index[name] for name in g.members if name in a_index), None)
        if a_root is None or a_root in used:
            continue
        used.add(a_root)
        matches.append(Match(len(matches), node.name or root, node.op_type, root, g.read_as(),
                             a_groups[a_root].read_as(root)))
    layers = {"candidate": sum(g.computed for g in a_groups.values()),
              "reference": sum(g.computed for g in b_groups.values())}
    return matches, {"candidate": layers["candidate"] - len(used & {r for r, g in a_groups.items() if g.computed}),
                     "reference": layers["reference"] - len(matches)}
