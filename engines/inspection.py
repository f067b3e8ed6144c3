"""``cpnet inspect ARTIFACT``: layer by layer, what an ONNX file or a TensorRT engine runs in.

    cpnet inspect runs/quickstart/export/model.int8.onnx          # one row per node, counts per precision/op
    cpnet inspect model.int8.engine [--json layers.json]          # from the layer table recorded at build
    python -m engines.inspection ...                                 (the same parser)

In the spirit of Polygraphy's ``inspect model``. An ONNX file: one row per node in graph order, its op,
the precision it computes in and which inputs Q/DQ feeds (see :mod:`engines.layers.onnx_graph`), then the
counts per precision and per op; QuantizeLinear and DequantizeLinear rows are counted, and shown with
``--all-nodes``. An engine (``.engine``, ``.plan``, ``.trt``): one row per layer from the engine
inspector's JSON that ``cpnet build`` records beside it (``<engine file name>.layers.json``; see
:mod:`engines.layers.engine_json`): name, type, input and output precision, device, whether it is a
reformatting layer, tactic; then the counts per precision and per device and the number of reformatting
layers. Nothing is run: an engine is read without TensorRT.

(The module is not named ``inspect.py``: in engines/ that would shadow the standard library's ``inspect``
for the script forms, ``python engines/check.py``, which put this folder first on the path.)
"""

from __future__ import annotations

from pathlib import Path

from cpnet.runtime import UserError, atomic_write_json
from cpnet.runtime.files import check_output

from .backends import ENGINE_SUFFIXES

DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "").strip() + """

An ONNX file: one row per node (op, precision, whether Q/DQ feeds it) and the counts per precision
and op. An engine: one row per layer (type, precision, device, reformatting layers, tactic) from the
engine inspector's JSON that cpnet build records beside it (ENGINE.layers.json), and the counts per
precision and device. Nothing is run; engines are read without TensorRT."""
EXAMPLES = """
cpnet inspect runs/quickstart/export/model.int8.onnx
cpnet inspect runs/quickstart/engines/model.int8.engine --json layers.json
"""



def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _counts_line(title: str, counts: dict) -> str:
    return f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def inspect_onnx(path: Path, all_nodes: bool = False) -> tuple[list[str], dict]:
    from cpnet.runtime.graph import load_onnx

    from .layers.onnx_graph import QDQ_OPS, counts, node_table
    from .layers.tensors import tensor_info

    model = load_onnx(path)
    rows = node_table(model, tensor_info(model))
    shown = [r for r in rows if all_nodes or r.op not in QDQ_OPS]
    width = min(60, max((len(r.name) for r in shown), default=4))
    lines = [f"{path}: ONNX, opset {max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), default=0)}, "
             f"{len(rows)} nodes", f"  {'#':>4}  {'node':<{width}}  {'op':<20} {'precision':<9}  Q/DQ in"]
    lines += [f"  {r.index:>4}  {_fit(r.name, width):<{width}}  {r.op:<20} {r.precision:<9}  {r.qdq or '-'}" for r in shown]
    c = counts(rows)
    lines += [_counts_line("precision (nodes other than Q/DQ)", c["precision"]), _counts_line("op", c["op"]),
              f"Q/DQ: {c['quantize_linear']} QuantizeLinear, {c['dequantize_linear']} DequantizeLinear; "
              f"{c['qdq_fed']} node(s) read a dequantized input"
              + ("" if all_nodes or not (c['quantize_linear'] or c['dequantize_linear']) else " (--all-nodes lists them)")]
    return lines, {"artifact": str(path), "kind": "onnx", "counts": c, "nodes": [r.as_dict() for r in rows]}


def inspect_engine(path: Path) -> tuple[list[str], dict]:
    from .layers.engine_json import counts, detailed, layer_rows, read_layers

    if not path.is_file():
        raise UserError(f"{path}: engine file not found")
    source, document = read_layers(path)
    rows = layer_rows(document, str(source))
    width = min(72, max((len(r.name) for r in rows), default=4))
    lines = [f"{path}: TensorRT engine, {len(rows)} layers (recorded in {source.name})"]
    if not detailed(rows):
        lines.append("  (built without detailed profiling verbosity: names only; rebuild with cpnet build for "
                     "types and precisions)")
    lines.append(f"  {'#':>4}  {'layer':<{width}}  {'type':<36} {'in':<6} {'out':<6} {'device':<7}  tactic")
    lines += [f"  {r.index:>4}  {_fit(r.name, width):<{width}}  {_fit(r.type, 36):<36} {r.precision:<6} "
              f"{r.output_precision:<6} {r.device:<7}  {'(reformat) ' if r.reformat else ''}{_fit(r.tactic, 40)}"
              for r in rows]
    c = counts(rows)
    lines += [_counts_line("precision (layers other than reformatting)", c["precision"]),
              _counts_line("device", c["device"]), f"reformatting layers: {c['reformat']}"]
    bindings = document.get("Bindings") if isinstance(document, dict) else None
    if bindings:
        lines.append("bindings: " + ", ".join(map(str, bindings)))
    return lines, {"artifact": str(path), "kind": "engine", "layers_json": str(source), "counts": c,
                   "layers": [r.as_dict() for r in rows]}


def inspect_artifact(path: "str | Path", all_nodes: bool = False) -> tuple[list[str], dict]:
    """The printed lines and the JSON record of one artifact."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return inspect_onnx(path, all_nodes)
    if suffix in ENGINE_SUFFIXES:
        return inspect_engine(path)
    raise UserError(f"{path}: cpnet inspect reads ONNX files (.onnx) and TensorRT engines "
                    f"({', '.join(ENGINE_SUFFIXES)})")


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_input(p, "ARTIFACT", "an ONNX file or a TensorRT engine (.engine/.plan/.trt) with its recorded layer table")
    p.add_argument("--all-nodes", action="store_true", help="ONNX: list QuantizeLinear/DequantizeLinear nodes too")
    cli_args.add_json(p, "the table and the counts")


def run(args) -> int:
    if args.json:
        check_output(args.json)
    lines, record = inspect_artifact(args.input, all_nodes=args.all_nodes)
    print("\n".join(lines))
    if args.json:
        atomic_write_json(args.json, record)
    return 0


def main(argv: list[str] | None = None) -> int:
    from cpnet.cli import run_verb

    return run_verb("engines.inspection", argv)


if __name__ == "__main__":
    raise SystemExit(main())
