"""Pre-flight check of an ONNX file against TensorRT's ONNX-parser rules; runs anywhere (onnx only, no TensorRT).

    cpnet check model.onnx model.fp16.onnx model.int8.onnx [--target trt10|trt10.15|trt11|dla] [--json FILE]
    python -m engines.check ...                                    (the same parser)

Checks, each reported as one line naming the node:

- opset of the default domain within what the target release documents;
- every operator against that release's ONNX operator table (``engines/trt_ops.py``: the 10.3,
  latest-10.x and 11.x tables and where each comes from), custom-domain operators (they would
  need a TensorRT plugin), and every restriction the table states that can be read off the
  graph (Resize modes, transforms, aspect-ratio policy and axes; pooling dilations; TopK
  ``sorted`` and K; Dropout ``training_mode``; ScatterND ``reduction``; constant axes of the
  Reduce ops, Squeeze and Unsqueeze; CumSum axis and OneHot depth; LayerNormalization's extra
  outputs; LSTM, GridSample, Hardmax, EyeLike, STFT and Constant attributes);
- Q/DQ, by TensorRT's rules as ``cpnet.runtime.qdq_rules`` writes them (the one rulebook, which
  ``cpnet int8`` places and self-checks by too): INT8 quantized type (FP8, INT4 and FP4, which
  TensorRT 10 parses but this project does not make, and blocked quantization are warnings),
  zero point 0 (TensorRT is symmetric-only), scales a build-time constant (an initializer, a
  Constant, or anything folded from them, as the parser takes it), positive, finite and float32
  (float16 from opset 19); per-channel only on weights and only along the output-channel axis of
  the layer that reads them; a QuantizeLinear without a zero point is a warning, because ONNX
  reads it as UINT8 and TensorRT's parser as INT8;
- Q/DQ placement (a warning per pair): a pair on an activation must fuse into an INT8 layer, i.e. feed
  a weighted layer whose inputs are all quantized, the residual input of an Add fused into such a layer,
  an AveragePool quantized again after it, or a layer TensorRT moves the pair across on the way to one
  (MaxPool, Concat, Reshape...); a pair on a Conv's output before its ReLU, before a Resize or a Sigmoid
  runs on its own and splits the fusion (NVIDIA's "Q/DQ Layer-Placement Recommendations");
- static input shapes: a symbolic dimension is an error for DLA and a warning
  otherwise (TensorRT needs an optimization profile for it);
- for ``--target dla``: DLA's layer restrictions; a node DLA cannot run "falls
  back to GPU" (warning; with ``--strict-dla`` an error). A node whose placement only
  TensorRT can decide (shuffles, slices...: ``trt_ops.DLA_LIMITED``; or parameters the graph does
  not show, such as resize scales computed at run time) "may fall back to GPU":
  a warning even with ``--strict-dla``, saying the check cannot know; the build's
  ``<engine>.layers.json`` (``engines.layers.placement``) says where it ran.

Targets: ``trt10`` is JetPack 6's TensorRT 10.3, the oldest release this project deploys to
(a file that passes runs on every 10.x); ``trt10.15`` the latest 10.x; ``trt11`` TensorRT 11.x;
``--trt-version X.Y`` checks against one exact release instead (``cpnet build`` passes the
running TensorRT's version). Exit status 1 when any file has an error (or cannot be read as
ONNX); warnings do not fail. Otherwise one "OK" line per file.

This module is the front door: the library's calls (:func:`check_model`, :func:`check_file`,
:func:`check_files`) and the ``cpnet check`` verb. The checks themselves are the modules of
:mod:`engines.onnx_check`, one per kind: graph reading, operators, Q/DQ nodes, Q/DQ placement,
inputs, DLA.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

if __package__ in (None, ""):  # allow `python engines/check.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpnet.runtime import CheckFailed, UserError  # noqa: E402
from engines import trt_ops  # noqa: E402
from engines.onnx_check.dla_fallback import CANNOT_KNOW, check_dla_precision, dla_node  # noqa: E402
from engines.onnx_check.graph import DEFAULT_DOMAINS, Graph  # noqa: E402
from engines.onnx_check.inputs import check_inputs  # noqa: E402
from engines.onnx_check.operators import FOLD_HINT, check_op, check_opset  # noqa: E402
from engines.onnx_check.qdq_placement import check_placement  # noqa: E402
from engines.onnx_check.results import CheckError, CheckOptions, CheckResult, Problem  # noqa: E402

TARGETS = trt_ops.TARGETS
__all__ = ["TARGETS", "CANNOT_KNOW", "FOLD_HINT", "CheckError", "CheckOptions", "CheckResult", "Problem", "load",
           "table_for", "check_model", "check_file", "check_files", "add_arguments", "run", "main"]


# ---------------------------------------------------------------------------------------------
# driver


def load(path: "str | Path"):
    """The model, read and passed through ONNX's own checker first (a node reading an undefined tensor, a bad
    attribute...: TensorRT's rules come after); a file that fails either is a CheckError line."""
    from cpnet.runtime.graph import load_onnx

    return load_onnx(path, error=CheckError, hint="re-export it")


def _options(options: CheckOptions | None, **kw) -> CheckOptions:
    if options is None:
        options = CheckOptions(**{k: v for k, v in kw.items() if v is not None})
    if options.target not in TARGETS:
        raise UserError(f"target must be one of {', '.join(TARGETS)}, got {options.target!r}")
    return options


def table_for(options: CheckOptions) -> trt_ops.OperatorTable:
    try:
        return trt_ops.operator_table(options.trt_version or options.target)
    except ValueError as e:
        raise UserError(str(e)) from None


def check_model(model, target: str = "trt10", strict_dla: bool = False, path: str = "<model>",
                assume_fp16: bool = False, trt_version: str | None = None,
                options: CheckOptions | None = None) -> CheckResult:
    """Check a loaded onnx.ModelProto against one TensorRT release's rules (see :class:`CheckOptions`)."""
    options = _options(options, target=target, strict_dla=strict_dla, assume_fp16=assume_fp16,
                       trt_version=trt_version)
    table = table_for(options)
    graph = Graph(model)
    dla = options.target == "dla"
    opset, problems = check_opset(model, table)
    problems += check_inputs(model, options.target)
    if dla:
        problems += check_dla_precision(graph, options.strict_dla, options.assume_fp16)
    problems += check_placement(graph)
    for label, node in graph.nodes:
        problems += check_op(label, node, graph, table)
        if dla and node.domain in DEFAULT_DOMAINS:
            problems += dla_node(label, node, graph, options.strict_dla)
    return CheckResult(path=path, target=options.target, opset=opset, num_nodes=len(graph.nodes),
                       problems=problems, table=table.label)


def check_file(path: "str | Path", target: str = "trt10", strict_dla: bool = False,
               assume_fp16: bool = False, trt_version: str | None = None,
               options: CheckOptions | None = None) -> CheckResult:
    options = _options(options, target=target, strict_dla=strict_dla, assume_fp16=assume_fp16,
                       trt_version=trt_version)
    return check_model(load(path), path=str(path), options=options)


def check_files(paths: Iterable["str | Path"], options: CheckOptions = CheckOptions()) -> list[CheckResult]:
    """Check every file; a file that is not readable ONNX becomes a failed result (a missing one is a UserError)."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"no such file: {', '.join(missing)}")
    results = []
    for p in paths:
        try:
            results.append(check_file(p, options=options))
        except CheckError as e:
            results.append(CheckResult(path=str(p), target=options.target, opset=None, num_nodes=0, unreadable=str(e)))
    return results


# ---------------------------------------------------------------------------------------------
# the `cpnet check` verb

DESCRIPTION = """Check ONNX files against TensorRT's ONNX-parser rules before building (no TensorRT needed).

Every operator against the target release's operator table (JetPack 6's 10.3, the latest 10.x,
or 11.x), the table's restrictions, Q/DQ rules and input shapes, each problem one line naming
the node; --target dla adds DLA's layer limits. Exit 1 when a file has an error."""

EXAMPLES = """cpnet check runs/quickstart/export/model.int8.onnx
cpnet check model.onnx model.fp16.onnx model.int8.onnx --target trt11 --json check.json
cpnet check model.fp16.onnx --target dla --strict-dla
cpnet check model.onnx --trt-version 10.7"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_input(p, "ONNX", "ONNX file(s): model.onnx, model.fp16.onnx, model.int8.onnx", nargs="+")
    p.add_argument("--target", choices=TARGETS, default="trt10",
                   help="trt10 (= trt10.3, JetPack 6: passes here runs on every 10.x), trt10.15 (latest 10.x), "
                        "trt11, or dla (Jetson DLA with GPU fallback); default trt10")
    p.add_argument("--trt-version", metavar="X.Y", type=_release,
                   help="check against this exact TensorRT release's table instead of the target's (e.g. 10.7)")
    p.add_argument("--strict-dla", action="store_true",
                   help="with --target dla: a node DLA cannot run is an error instead of a GPU-fallback warning")
    p.add_argument("--fp16-flag", action="store_true",
                   help="the build will use TensorRT 10's FP16 flag (DLA: an FP32 file is then not a problem)")
    cli_args.add_json(p, "every file's result and problems")


def _release(text: str) -> str:
    import argparse
    import re

    if not re.fullmatch(r"\d+\.\d+(\.\d+)*", text.strip()):
        raise argparse.ArgumentTypeError(f"expected a TensorRT release such as 10.3 or 11.0, got {text!r}")
    return text.strip()


def run(args) -> int:
    from cpnet.runtime import atomic_write_json

    options = CheckOptions(target=args.target, strict_dla=args.strict_dla, assume_fp16=args.fp16_flag,
                           trt_version=args.trt_version)
    table_for(options)  # a bad --trt-version is a user error before any file is read
    results = check_files(args.input, options)
    for res in results:
        for line in res.lines():
            print(line)
    if args.json:
        atomic_write_json(args.json, {"target": options.target, "trt_version": options.trt_version,
                                      "files": [r.to_json() for r in results]})
    unreadable = [r for r in results if r.unreadable is not None]
    if unreadable:  # not an ONNX model this check may read: the user's file to fix, not a verdict
        more = f" (and {len(unreadable) - 1} more unreadable file(s))" if len(unreadable) > 1 else ""
        raise UserError(f"{unreadable[0].unreadable}{more}")
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(Path(r.path).name for r in failed[:3]) + (" ..." if len(failed) > 3 else "")
        raise CheckFailed(f"{len(failed)} of {len(results)} file(s) failed the TensorRT pre-flight check "
                          f"({results[0].table or options.target}): {names}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from cpnet.cli import run_verb

    return run_verb("engines.check", argv)


if __name__ == "__main__":
    sys.exit(main())
