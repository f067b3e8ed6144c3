"""An ONNX file parsed into a TensorRT network, as Polygraphy's NetworkFromOnnxPath does (a thin call into
TensorRT: the ``tensorrt`` module, or a stand-in, is an argument; nothing here imports it).

Network creation: TensorRT 10 takes ``create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))``
for a strongly typed network (Python API "Builder" page, 10.x), or ``create_network(0)`` for a weakly typed one;
TensorRT 11's networks are all strongly typed, so it gets 0 (:mod:`engines.trt.plan` decides which).
"""

from __future__ import annotations

from pathlib import Path

from cpnet.runtime import UserError
from cpnet.runtime.log import get_logger

from .plan import BuildPlan

log = get_logger("engines")


def network_from_onnx(trt, logger, onnx: "str | Path", plan: BuildPlan):
    """(builder, network, parser) with the ONNX file parsed into the network; parser errors are one UserError
    with a line per error, naming the node."""
    log.info("parsing ONNX")
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed_flag else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if plan.native_instancenorm and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "NATIVE_INSTANCENORM"):
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)  # Polygraphy CreateConfig, version-compatible builds
    # parse_from_file keeps the file's location so external weights resolve (Polygraphy NetworkFromOnnxPath)
    ok = parser.parse_from_file(str(onnx))
    if not ok or parser.num_errors:
        lines = format_parser_errors(parser, _onnx_node_names(onnx))
        raise UserError("TensorRT could not parse " + str(onnx) + ":\n" + "\n".join(lines or ["(no details)"]))
    return builder, network, parser


def format_parser_errors(parser, node_names: list[str] | None = None) -> list[str]:
    """One line per ONNX-parser error with the node's name.

    ``parser.num_errors`` / ``parser.get_error(i)`` and ``ParserError.desc()`` / ``.node()`` are in
    every TensorRT Python API; ``nodeName()`` / ``nodeOperator()`` exist on IParserError from
    TensorRT 10 (C++ API reference, NvOnnxParser.h) and are called only if the binding has them.
    Otherwise the node index is mapped to the name through the ONNX graph.
    """
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        name = op = None
        for attr, slot in (("node_name", "name"), ("node_operator", "op")):
            fn = getattr(err, attr, None)
            if callable(fn):
                try:
                    val = fn()
                    if slot == "name":
                        name = val or None
                    else:
                        op = val or None
                except Exception:
                    pass
        if name is None:
            try:
                idx = int(err.node())
            except Exception:
                idx = -1
            if node_names is not None and 0 <= idx < len(node_names):
                name = node_names[idx]
            elif idx >= 0:
                name = f"#{idx}"
        try:
            desc = str(err.desc()).strip().replace("\n", " ")
        except Exception:
            desc = str(err).strip().replace("\n", " ")
        where = f"node '{name}'" + (f" ({op})" if op else "") + ": " if name else ""
        lines.append(f"parser error: {where}{desc}")
    return lines


def _onnx_node_names(path: "str | Path") -> list[str] | None:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return [n.name or f"#{i}" for i, n in enumerate(model.graph.node)]
    except Exception:
        return None
