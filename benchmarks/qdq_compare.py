"""Where INT8 ONNX files put their Q/DQ pairs, side by side (ours against NVIDIA Model Optimizer's).

    # 1. the calibration images cpnet int8 uses (same source, count, seed and preprocessing), as one array
    .venv/bin/python benchmarks/qdq_compare.py calib runs/quickstart/export/model.onnx \\
        --calib-data data/synthetic -o /tmp/calib.npy
    # 2. ModelOpt's PTQ in its own venv (benchmarks/modelopt_ptq.py), then a manifest so cpnet report opens it
    .venv/bin/python benchmarks/qdq_compare.py manifest runs/quickstart/export/model.onnx \\
        runs/quickstart/export/model.int8-modelopt.onnx --tool-version 0.47.0
    # 3. the comparison
    .venv/bin/python benchmarks/qdq_compare.py compare runs/quickstart/export/model.onnx \\
        runs/quickstart/export/model.int8.onnx runs/quickstart/export/model.int8-modelopt.onnx --json /tmp/qdq.json

``compare`` reads every file's graph (no inference) and reports, per file:

- the Q/DQ count, their scale and zero-point types, the opset;
- Q/DQ pairs by consumer op type: each (DequantizeLinear, consumer node, input) edge, with Casts in
  between looked through, split into weights (the DQ reads a constant, directly or through a Q of it)
  and activations;
- what the quantized activations are: the op that produces each QuantizeLinear's input (Conv, Relu,
  MaxPool, a graph input ...), so "are Conv outputs quantized" has an answer;
- per op type: nodes, nodes with a dequantized activation input, nodes whose output is quantized;
- Conv/ConvTranspose/MatMul/Gemm: activation input quantized / weight input quantized;
- Add nodes with two non-constant inputs: which inputs are dequantized (the residual question);
- nodes left in float: compute ops (Q/DQ, Cast, Constant and shape-only ops aside) none of whose inputs is
  dequantized, by op type;
- float precision: the element types of node outputs (after ONNX shape inference), of float initializers,
  of the graph inputs/outputs, and Cast nodes by target type and by (producer -> consumer) op types.

Then, for each file whose name contains ``modelopt`` (or given with ``--anchor``) against each other
file: the Conv/MatMul/Gemm inputs and Add inputs one quantizes and the other does not, by node name
(nodes are matched by name, else by weight initializer name, else by their order among linear nodes).

``manifest`` writes ``<file>.json`` for an INT8 file made outside cpnet (e.g. by ModelOpt), derived from
the FP32 parent's manifest (precision int8, flavour "modelopt", parent sha256, the file's sha256),
atomically, so ``cpnet report`` and the other cpnet commands can open it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

LINEAR = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Ops whose every node is listed with its inputs (q = dequantized, f = float) and whether its output is quantized.
DETAIL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "Resize", "Concat", "Sigmoid", "Softmax", "ReduceMean",
              "Mul", "Sub", "Reshape")
#: Not compute: left out of "nodes left in float" (they move or describe data, or are the Q/DQ machinery).
NON_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Cast", "Constant", "Identity", "Shape", "Reshape",
               "Squeeze", "Unsqueeze", "Flatten", "ConstantOfShape", "Range", "Size", "Gather", "Slice",
               "Transpose", "Expand", "Split"}


# --- calib: the calibration array ----------------------------------------------------------------

def cmd_calib(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cpnet.runtime import atomic_path
    from quantize.calib_data import iter_calibration_images, resolve_calibration_source, select_paths
    from quantize.parent import load_parent

    parent = load_parent(args.model)  # the checks cpnet int8 makes: manifest present, sha256 matches
    manifest = parent.manifest
    images = list(iter_calibration_images(args.calib_data, manifest, args.num_images, data_root=args.data_root,
                                          seed=args.seed))
    data = np.ascontiguousarray(np.concatenate(images, axis=0), dtype=np.float32)
    out = Path(args.output)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, data)
    src = resolve_calibration_source(args.calib_data, manifest, args.data_root)
    first = select_paths(src.paths, args.num_images, args.seed)[:3]
    print(f"wrote {out}: {data.shape[0]} x {data.shape[1]} x {data.shape[2]} x {data.shape[3]} float32 from "
          f"{src.description} (seed {args.seed}; first {', '.join(p.name for p in first)}), "
          f"preprocessed with {Path(args.model).name}'s manifest")
    return 0


# --- manifest: make a foreign INT8 file openable by cpnet --------------------------------------------

def cmd_manifest(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import onnx

    from cpnet.runtime import read_manifest, sha256_file, versions, write_manifest
    from cpnet.runtime.manifest import derive_manifest

    parent, artifact = Path(args.parent), Path(args.artifact)
    pman = read_manifest(parent, required=True)
    model = onnx.load(str(artifact))
    info = analyse(model)
    man = derive_manifest(parent, pman, "onnx", "int8", relative_to=artifact.parent)
    man.update({
        "flavour": args.flavour,
        "opset": info["opset"],
        "quantization": {"tool": args.tool, "tool_version": args.tool_version, "method": args.method,
                         "float_precision": info["precision"]["graph_float"],
                         "note": "made outside cpnet; manifest written by benchmarks/qdq_compare.py manifest"},
        "sha256": sha256_file(artifact),
        "versions": versions(),
    })
    path = write_manifest(artifact, man)
    print(f"wrote {path} (int8, flavour {args.flavour}, parent {parent.name} "
          f"sha256 {man['parent']['sha256'][:12]}...)")
    return 0


# --- compare: the graph analysis ---------------------------------------------------------------------

_DT = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 9: "bool"}


def _dt(t: int) -> str:
    return _DT.get(int(t), str(t))


class Graph:
    """Producers, consumers and constants of one ONNX graph, with Casts looked through."""

    def __init__(self, model):
        g = model.graph
        self.model = model
        self.nodes = list(g.node)
        self.inits = {i.name: i for i in g.initializer}
        self.inputs = {i.name for i in g.input} - set(self.inits)
        self.outputs = {o.name for o in g.output}
        self.producer = {}
        self.consumers = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for k, i in enumerate(n.input):
                if i:
                    self.consumers[i].append((n, k))
        self.const = set(self.inits) | {o for n in self.nodes if n.op_type == "Constant" for o in n.output}

    def up(self, tensor: str):
        """The node producing ``tensor``, Casts skipped (None for a graph input or constant)."""
        n = self.producer.get(tensor)
        while n is not None and n.op_type == "Cast":
            n = self.producer.get(n.input[0])
        return n

    def source(self, tensor: str) -> str:
        """The tensor ``tensor`` is, Casts skipped back to the first non-Cast."""
        n = self.producer.get(tensor)
        while n is not None and n.op_type == "Cast":
            tensor = n.input[0]
            n = self.producer.get(tensor)
        return tensor

    def down(self, tensor: str):
        """(node, input index, casts crossed) for every consumer of ``tensor``, Casts looked through."""
        out = []
        for n, k in self.consumers.get(tensor, []):
            if n.op_type == "Cast":
                out += [(m, j, c + 1) for m, j, c in self.down(n.output[0])]
            else:
                out.append((n, k, 0))
        return out

    def is_const(self, tensor: str) -> bool:
        return self.source(tensor) in self.const

    def dq_kind(self, dq) -> str:
        """'weight' when the DequantizeLinear reads a constant (directly or via a Q of one), else 'activation'."""
        x = dq.input[0]
        if self.is_const(x):
            return "weight"
        q = self.up(x)
        if q is not None and q.op_type == "QuantizeLinear" and self.is_const(q.input[0]):
            return "weight"
        return "activation"

    def dequantized(self, node, k: int) -> bool:
        """Is input ``k`` of ``node`` the output of a DequantizeLinear (Casts skipped)?"""
        if k >= len(node.input) or not node.input[k]:
            return False
        p = self.up(node.input[k])
        return p is not None and p.op_type == "DequantizeLinear"

    def output_quantized(self, node) -> bool:
        return any(m.op_type == "QuantizeLinear" for o in node.output for m, _, _ in self.down(o))

    def tensor_dtype(self, name: str) -> str | None:
        if name in self.inits:
            return _dt(self.inits[name].data_type)
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return _dt(a.t.data_type)
        return None


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def analyse(model) -> dict:
    import onnx

    g = Graph(model)
    q_nodes = [n for n in g.nodes if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in g.nodes if n.op_type == "DequantizeLinear"]

    scale_types = {"QuantizeLinear": Counter(), "DequantizeLinear": Counter()}
    zp_types = Counter()
    per_channel = 0
    for n in q_nodes + dq_nodes:
        scale_types[n.op_type][g.tensor_dtype(n.input[1]) or "?"] += 1
        if len(n.input) > 2 and n.input[2]:
            zp_types[g.tensor_dtype(n.input[2]) or "?"] += 1
        s = g.inits.get(n.input[1])
        if n.op_type == "DequantizeLinear" and s is not None and len(s.dims) and int(np.prod(s.dims)) > 1:
            per_channel += 1

    # Q/DQ pairs by consumer op type (edges), weights and activations apart
    by_consumer = {"weight": Counter(), "activation": Counter()}
    dq_via_cast = 0
    shared = []
    for dq in dq_nodes:
        kind = g.dq_kind(dq)
        down = g.down(dq.output[0])
        for m, _, casts in down:
            by_consumer[kind][m.op_type] += 1
            dq_via_cast += bool(casts)
        if len(down) > 1:
            shared.append(f"{g.source(g.up(dq.input[0]).input[0]) if kind == 'activation' else dq.input[0]} -> "
                          + ", ".join(f"{m.op_type} {m.name}" for m, _, _ in down))

    # what the quantized activations are: the producer of each activation Q's input
    q_producers = Counter()
    for q in q_nodes:
        if g.is_const(q.input[0]):
            continue
        p = g.up(q.input[0])
        q_producers[p.op_type if p is not None else "graph input"] += 1

    # per op type
    per_op = defaultdict(lambda: {"nodes": 0, "dq_input": 0, "output_q": 0})
    compute = [n for n in g.nodes if n.op_type not in NON_COMPUTE]
    float_nodes = defaultdict(list)
    for n in compute:
        row = per_op[n.op_type]
        row["nodes"] += 1
        ins = [k for k, i in enumerate(n.input) if i and not g.is_const(i)]
        deq = [k for k in ins if g.dequantized(n, k)]
        row["dq_input"] += bool(deq)
        row["output_q"] += g.output_quantized(n)
        if not any(g.dequantized(n, k) for k in range(len(n.input))):
            float_nodes[n.op_type].append(n.name)

    linear = {}
    for i, n in enumerate(x for x in g.nodes if x.op_type in LINEAR):
        w = g.source(n.input[1]) if len(n.input) > 1 else ""
        if w and g.producer.get(w) is not None and g.producer[w].op_type in ("DequantizeLinear", "QuantizeLinear"):
            # the weight behind its Q/DQ: the initializer the chain starts from
            t = w
            while g.producer.get(t) is not None and g.producer[t].op_type in ("DequantizeLinear", "QuantizeLinear",
                                                                             "Cast"):
                t = g.producer[t].input[0]
            w = t
        linear[n.name] = {"op": n.op_type, "order": i, "weight": w, "b_const": g.is_const(w) if w else False,
                          "act_q": g.dequantized(n, 0),
                          "weight_q": g.dequantized(n, 1), "output_q": g.output_quantized(n)}

    adds = {}
    for n in g.nodes:
        if n.op_type not in ("Add", "Sub", "Mul") or len(n.input) != 2:
            continue
        if any(g.is_const(i) for i in n.input):
            continue
        srcs = []
        for k in range(2):
            p = g.up(n.input[k])
            if p is not None and p.op_type == "DequantizeLinear":
                q = g.up(p.input[0])
                p = g.up(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            srcs.append(p.op_type if p is not None else "graph input")
        adds[n.name] = {"op": n.op_type, "quantized": [g.dequantized(n, 0), g.dequantized(n, 1)],
                        "producers": srcs}

    detail = {}
    for n in g.nodes:
        if n.op_type in DETAIL_OPS or n.op_type == "MatMul":
            ins = ["q" if g.dequantized(n, k) else "f" for k, i in enumerate(n.input) if i and not g.is_const(i)]
            detail[n.name] = {"op": n.op_type, "inputs": "".join(ins), "output_q": g.output_quantized(n)}
    conv_out_q = {n.name: sorted({f"{m.op_type} {m.name}" for o in n.output for q, _, _ in g.down(o)
                                  if q.op_type == "QuantizeLinear"
                                  for dq, _, _ in g.down(q.output[0]) for m, _, _ in g.down(dq.output[0])})
                  for n in g.nodes if n.op_type in LINEAR and g.output_quantized(n)}

    # float precision
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in
                 list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    except Exception:  # noqa: BLE001 - a graph shape inference cannot read: report what can be read
        types = {}
    out_types = Counter()
    op_out_types = defaultdict(Counter)
    for n in g.nodes:
        if n.op_type in ("QuantizeLinear", "Constant"):
            continue
        for o in n.output:
            if o in types:
                out_types[_dt(types[o])] += 1
                if n.op_type not in NON_COMPUTE or n.op_type == "DequantizeLinear":
                    op_out_types[n.op_type][_dt(types[o])] += 1
    init_types = Counter(_dt(i.data_type) for i in g.inits.values())
    casts = Counter()
    cast_edges = Counter()
    for n in g.nodes:
        if n.op_type != "Cast":
            continue
        to = next((a.i for a in n.attribute if a.name == "to"), 0)
        casts[_dt(to)] += 1
        p = g.producer.get(n.input[0])
        pname = p.op_type if p is not None else ("graph input" if n.input[0] in g.inputs else "initializer")
        cons = sorted({m.op_type for m, _ in g.consumers.get(n.output[0], [])}) or ["graph output"]
        cast_edges[f"{pname} -> Cast({_dt(to)}) -> {'/'.join(cons)}"] += 1
    compute_types = Counter()
    for op, c in op_out_types.items():
        if op not in ("DequantizeLinear",):
            compute_types.update(c)
    graph_float = ("fp16" if compute_types.get("fp16", 0) > compute_types.get("fp32", 0) else "fp32") \
        if compute_types else "?"

    def _io(vs):
        return {v.name: _dt(v.type.tensor_type.elem_type) for v in vs if v.name not in g.inits}

    return {
        "opset": _opset(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(g.nodes),
        "qdq": {"QuantizeLinear": len(q_nodes), "DequantizeLinear": len(dq_nodes),
                "scale_types": {k: dict(v) for k, v in scale_types.items()}, "zero_point_types": dict(zp_types),
                "per_channel_dq": per_channel, "dq_edges_through_cast": dq_via_cast,
                "shared_dq": shared},
        "dq_by_consumer": {k: dict(sorted(v.items())) for k, v in by_consumer.items()},
        "q_input_producers": dict(sorted(q_producers.items())),
        "per_op": {k: per_op[k] for k in sorted(per_op)},
        "linear": linear,
        "linear_summary": {
            "nodes": len(linear),
            "act_and_weight": sum(v["act_q"] and v["weight_q"] for v in linear.values()),
            "act_only": sum(v["act_q"] and not v["weight_q"] for v in linear.values()),
            "weight_only": sum(v["weight_q"] and not v["act_q"] for v in linear.values()),
            "neither": sum(not v["act_q"] and not v["weight_q"] for v in linear.values()),
            "output_quantized": sum(v["output_q"] for v in linear.values()),
        },
        "binary": adds,
        "detail": detail,
        "linear_output_quantized": conv_out_q,
        "float_nodes": {k: sorted(v) for k, v in sorted(float_nodes.items())},
        "precision": {"graph_float": graph_float, "node_outputs": dict(out_types),
                      "compute_outputs_by_op": {k: dict(v) for k, v in sorted(op_out_types.items())},
                      "initializers": dict(init_types), "inputs": _io(model.graph.input),
                      "outputs": _io(model.graph.output), "casts": dict(casts),
                      "cast_edges": dict(cast_edges.most_common())},
    }


def _match(a: dict, b: dict) -> dict:
    """Linear node names of ``a`` -> the name of the same node in ``b`` (by name, weight, then order)."""
    by_w = {v["weight"]: k for k, v in b.items() if v["weight"]}
    by_order = {(v["op"], v["order"]): k for k, v in b.items()}
    out = {}
    for k, v in a.items():
        if k in b:
            out[k] = k
        elif v["weight"] in by_w:
            out[k] = by_w[v["weight"]]
        elif len(a) == len(b) and (v["op"], v["order"]) in by_order:
            out[k] = by_order[(v["op"], v["order"])]
    return out


def diff(anchor: dict, other: dict) -> dict:
    la, lb = anchor["linear"], other["linear"]
    m = _match(la, lb)
    only_anchor, only_other = [], []
    for k, v in la.items():
        if k not in m:
            continue
        w = lb[m[k]]
        for slot, key in (("input 0", "act_q"), ("input 1 (weight)" if v["b_const"] else "input 1", "weight_q")):
            if v[key] and not w[key]:
                only_anchor.append(f"{k} ({v['op']} {slot})")
            elif w[key] and not v[key]:
                only_other.append(f"{k} ({v['op']} {slot})")
    ba, bb = anchor["binary"], other["binary"]
    add_a, add_b = [], []
    for k, v in ba.items():
        if k not in bb:
            continue
        for i in range(2):
            if v["quantized"][i] and not bb[k]["quantized"][i]:
                add_a.append(f"{k} ({v['op']} input {i}, from {v['producers'][i]})")
            elif bb[k]["quantized"][i] and not v["quantized"][i]:
                add_b.append(f"{k} ({v['op']} input {i}, from {bb[k]['producers'][i]})")
    return {"linear_matched": f"{len(m)} of {len(la)}", "linear_unmatched": sorted(set(la) - set(m)),
            "linear_inputs_only_anchor": only_anchor, "linear_inputs_only_other": only_other,
            "binary_inputs_only_anchor": add_a, "binary_inputs_only_other": add_b}


def _table(rows: list[tuple[str, list[str]]], names: list[str]) -> str:
    width = [max(len(r[0]) for r in rows + [("", [])])] + [
        max([len(n)] + [len(r[1][i]) for r in rows]) for i, n in enumerate(names)]
    line = lambda cells: "  ".join(c.ljust(width[i]) for i, c in enumerate(cells))  # noqa: E731
    return "\n".join([line([""] + names), line(["-" * w for w in width])] + [line([r[0]] + r[1]) for r in rows])


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) if d else "-"


def report_text(results: dict, diffs: dict) -> str:
    names = list(results)
    short = [Path(n).name for n in names]
    R = [results[n] for n in names]
    rows = [("opset", [str(r["opset"]) for r in R]),
            ("nodes", [str(r["nodes"]) for r in R]),
            ("QuantizeLinear / DequantizeLinear", [f"{r['qdq']['QuantizeLinear']} / {r['qdq']['DequantizeLinear']}"
                                                   for r in R]),
            ("Q scale types", [_fmt(r["qdq"]["scale_types"]["QuantizeLinear"]) for r in R]),
            ("DQ scale types", [_fmt(r["qdq"]["scale_types"]["DequantizeLinear"]) for r in R]),
            ("zero-point types", [_fmt(r["qdq"]["zero_point_types"]) for r in R]),
            ("per-channel DQ", [str(r["qdq"]["per_channel_dq"]) for r in R]),
            ("DQ edges through a Cast", [str(r["qdq"]["dq_edges_through_cast"]) for r in R]),
            ("float precision of the graph", [r["precision"]["graph_float"] for r in R]),
            ("node output types", [_fmt(r["precision"]["node_outputs"]) for r in R]),
            ("initializer types", [_fmt(r["precision"]["initializers"]) for r in R]),
            ("graph input / output types", [f"{_fmt(r['precision']['inputs'])} / {_fmt(r['precision']['outputs'])}"
                                            for r in R]),
            ("Cast nodes by target", [_fmt(r["precision"]["casts"]) for r in R])]
    out = [_table(rows, short)]

    ops = sorted({op for r in R for kind in ("weight", "activation") for op in r["dq_by_consumer"][kind]})
    rows = [(f"{op} ({kind})", [str(r["dq_by_consumer"][kind].get(op, 0)) for r in R])
            for kind in ("activation", "weight") for op in ops if any(r["dq_by_consumer"][kind].get(op) for r in R)]
    out += ["", "Q/DQ pairs by consumer op type (DequantizeLinear -> consumer edges, Casts looked through)",
            _table(rows, short)]

    prods = sorted({p for r in R for p in r["q_input_producers"]})
    rows = [(p, [str(r["q_input_producers"].get(p, 0)) for r in R]) for p in prods]
    out += ["", "Quantized activations: the op producing each activation QuantizeLinear's input", _table(rows, short)]

    ls = ["nodes", "act_and_weight", "act_only", "weight_only", "neither", "output_quantized"]
    rows = [(k, [str(r["linear_summary"][k]) for r in R]) for k in ls]
    out += ["", "Conv/ConvTranspose/MatMul/Gemm inputs quantized (act = input 0, weight = input 1, constant or not)",
            _table(rows, short)]
    names_d = list(dict.fromkeys(k for r in R for k in r["detail"]))  # the first file's (FP32) order
    rows = [(f"{k} ({next(r['detail'][k]['op'] for r in R if k in r['detail'])})",
             [(f"in {r['detail'][k]['inputs']}, out {'q' if r['detail'][k]['output_q'] else 'f'}"
               if k in r["detail"] else "-") for r in R]) for k in names_d]
    out += ["", "Other ops, node by node: non-constant inputs (q dequantized, f float), output (q quantized, f float)",
            _table(rows, short)]

    ops = sorted({op for r in R for op in r["per_op"]})
    rows = [(op, [f"{r['per_op'][op]['nodes']} / {r['per_op'][op]['dq_input']} / {r['per_op'][op]['output_q']}"
                  if op in r["per_op"] else "-" for r in R]) for op in ops]
    out += ["", "Per op type: nodes / with a dequantized input / with a quantized output", _table(rows, short)]

    rows = [(op, [str(len(r["float_nodes"].get(op, []))) for r in R])
            for op in sorted({op for r in R for op in r["float_nodes"]})]
    out += ["", "Nodes left in float (no dequantized input), by op type", _table(rows, short)]

    bins = sorted({f"{v['op']} quantized inputs {sum(v['quantized'])} of 2" for r in R for v in r["binary"].values()})
    rows = [(b, [str(sum(f"{v['op']} quantized inputs {sum(v['quantized'])} of 2" == b for v in r["binary"].values()))
                 for r in R]) for b in bins]
    out += ["", "Add/Sub/Mul with two non-constant inputs", _table(rows, short)]

    for n, r in zip(short, R):
        out += ["", f"{n}: Conv/MatMul/Gemm outputs quantized: "
                + ("; ".join(f"{k} -> {', '.join(v)}" for k, v in r["linear_output_quantized"].items()) or "none"),
                f"{n}: DequantizeLinear outputs shared by several consumers: "
                + ("; ".join(r["qdq"]["shared_dq"]) or "none"),
                f"{n}: float Conv/MatMul/Gemm: "
                + (", ".join(k for k, v in r["linear"].items() if not v["act_q"] and not v["weight_q"]) or "none"),
                f"{n}: Casts: " + _fmt(r["precision"]["cast_edges"])]
        for op in ("Conv", "MatMul", "Gemm", "Add", "Resize", "MaxPool", "Concat", "Sigmoid", "Softmax", "Mul"):
            if r["float_nodes"].get(op):
                out.append(f"{n}: float {op}: {', '.join(r['float_nodes'][op])}")
    for (a, b), d in diffs.items():
        a, b = Path(a).name, Path(b).name
        out += ["", f"{a} (anchor) against {b}: linear nodes matched {d['linear_matched']}"
                + (f"; unmatched: {', '.join(d['linear_unmatched'])}" if d["linear_unmatched"] else ""),
                f"  Conv/MatMul/Gemm inputs {a} quantizes and {b} does not: "
                + (", ".join(d["linear_inputs_only_anchor"]) or "none"),
                f"  Conv/MatMul/Gemm inputs {b} quantizes and {a} does not: "
                + (", ".join(d["linear_inputs_only_other"]) or "none"),
                f"  Add/Sub/Mul inputs {a} quantizes and {b} does not: "
                + (", ".join(d["binary_inputs_only_anchor"]) or "none"),
                f"  Add/Sub/Mul inputs {b} quantizes and {a} does not: "
                + (", ".join(d["binary_inputs_only_other"]) or "none")]
    return "\n".join(out)


def cmd_compare(args) -> int:
    import onnx

    files = [args.fp32, *args.int8]
    results = {f: analyse(onnx.load(f)) for f in files}
    anchors = args.anchor or [f for f in args.int8 if "modelopt" in Path(f).name]
    diffs = {(a, b): diff(results[a], results[b]) for a in anchors for b in args.int8 if b != a and b not in anchors}
    print(report_text(results, diffs))
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from cpnet.runtime import atomic_write_json

        atomic_write_json(Path(args.json), {"files": results,
                                            "diffs": {f"{Path(a).name} vs {Path(b).name}": d
                                                      for (a, b), d in diffs.items()}})
        print(f"\nwrote {args.json}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calib", help="the calibration images cpnet int8 uses, as one N x 3 x H x W float32 .npy")
    c.add_argument("model", help="the FP32 model (its manifest gives the preprocessing)")
    c.add_argument("--calib-data", metavar="DIR|CONFIG", help="as cpnet int8's (default: the manifest's dataset)")
    c.add_argument("--data-root", metavar="DIR")
    c.add_argument("--num-images", type=int, default=200, help="as cpnet int8's default (200)")
    c.add_argument("--seed", type=int, default=0, help="as cpnet int8's default (0)")
    c.add_argument("-o", "--output", required=True, help="the .npy to write")
    c.set_defaults(func=cmd_calib)
    m = sub.add_parser("manifest", help="write <file>.json for an INT8 ONNX file made outside cpnet")
    m.add_argument("parent", help="the FP32 model it was made from (with its manifest)")
    m.add_argument("artifact", help="the INT8 ONNX file")
    m.add_argument("--flavour", default="modelopt")
    m.add_argument("--tool", default="nvidia-modelopt")
    m.add_argument("--tool-version", default=None)
    m.add_argument("--method", default="entropy", help="its calibration method, recorded (default entropy)")
    m.set_defaults(func=cmd_manifest)
    q = sub.add_parser("compare", help="Q/DQ placement of INT8 files side by side")
    q.add_argument("fp32", help="the FP32 model")
    q.add_argument("int8", nargs="+", help="INT8 ONNX files")
    q.add_argument("--anchor", action="append", help="file(s) to diff the others against (default: names with "
                                                     "'modelopt')")
    q.add_argument("--json", metavar="FILE", help="write everything as JSON too")
    q.set_defaults(func=cmd_compare)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
