"""``cpnet compare A B [--layers]``: two artifacts on the same preprocessed images, and where they part.

    cpnet compare runs/quickstart/export/model.int8.onnx runs/quickstart/export/model.onnx --layers
    cpnet compare model.int8.engine model.onnx                     # engine against ONNX (outputs)
    python -m engines.compare ...                                  (the same parser)

A is the candidate, B the reference. Both are opened with ``engines.open`` (the backend each file calls
for, or ``--backend-a``/``--backend-b``) and run on the same images, preprocessed once with B's manifest
(the two must agree on input size and normalisation): ``--calib-data DIR`` (a folder of images, or a
config), else the dataset of the config in B's manifest, ``--num-images`` of them (default 4). Every
output the two share by name (the logits first) is compared with :func:`cpnet.runtime.compare.compare`:
max |difference|, that in percent of the largest reference value, mean |difference|, argmax agreement.

``--layers`` (two ONNX files): every intermediate tensor the two share, matched by name through Q/DQ and
Cast nodes (the rule is in :mod:`engines.layers.onnx_graph`), exposed as outputs of both and run without
graph optimisation (:mod:`engines.layers.tensors`), each compared in the same way, in B's graph order.
The table gives each layer's error (mean |difference| in percent of the mean |reference value|; the
largest |difference| in percent of the largest |value| beside it) and what it adds over its inputs'; the first layer past ``--max-layer-error`` (default 5 %) and the layer that
adds the most are named. Because exposing tensors and turning fusion off change what runs, the gap
between each file's exposed run and its own deployed output (full optimisation) is reported too: a large
gap means the deployed file parts from its own graph (a fused kernel), not at a layer.

Exit status 0 whatever the figures (a diagnosis, not a gate); 2 for a user mistake (a missing file,
``--layers`` with an engine, artifacts of different models).
"""

from __future__ import annotations

from pathlib import Path

from cpnet.runtime import UserError, atomic_write_json
from cpnet.runtime.compare import Comparison
from cpnet.runtime.files import check_output
from cpnet.runtime.log import get_logger

from .backends import BACKENDS, ONNX_SUFFIXES
from .layers.tensors import as_nchw

log = get_logger("compare")

DESCRIPTION = """Two artifacts on the same preprocessed images; with --layers, the first layer where they part.

A is the candidate, B the reference (engine against ONNX, INT8 against FP32, one backend against
another with --backend-a/--backend-b). Both run on the same images, preprocessed with B's manifest,
and every output they share is compared with cpnet's one comparison (max |difference|, in percent of
the largest reference value, mean |difference|, argmax agreement). --layers (two ONNX files): every
intermediate tensor both have, matched by name through Q/DQ and Cast nodes, exposed as outputs and run
without graph optimisation; each layer's error in B's graph order, the first past --max-layer-error,
the layer that adds the most, and the gap between each exposed run and the file's own deployed output.
Exit 0 whatever the figures; 2 for a user mistake."""
EXAMPLES = """
cpnet compare runs/quickstart/export/model.int8.onnx runs/quickstart/export/model.onnx --layers
cpnet compare model.int8.onnx model.onnx --layers --calib-data data/synthetic --num-images 8 --json layers.json
cpnet compare model.int8.engine model.onnx
"""

DEFAULT_NUM_IMAGES = 4
DEFAULT_MAX_LAYER_ERROR = 5.0
_PREPROCESSING = ("input_size", "mean", "std", "channel_order")


def _open(path: str, backend: str | None, threads: int | None):
    import engines

    name = backend or engines.backend_for(path)
    options = {"threads": threads} if threads and name in ("onnxruntime", "torch") else {}
    return engines.open(path, backend=name, **options)


def _same_preprocessing(a, b) -> None:
    differ = [k for k in _PREPROCESSING if a.manifest.get(k) is not None and b.manifest.get(k) is not None
              and a.manifest.get(k) != b.manifest.get(k)]
    if differ:
        k = differ[0]
        raise UserError(f"{a.path} and {b.path} are fed differently ({k} {a.manifest.get(k)} against "
                        f"{b.manifest.get(k)}); compare artifacts made from one model")


def _outputs(a, b, images) -> tuple[dict[str, Comparison], list[dict], list[dict]]:
    """Comparison per shared output name (the logits first), and each side's outputs per image."""
    out_a, out_b = [], []
    for x in images:
        out_a.append(a.infer_all(x))
        out_b.append(b.infer_all(x))
    names = [n for n in out_b[0] if n in out_a[0]]
    if not names:  # differently named outputs: the first of each is the logits
        first_a, first_b = next(iter(out_a[0])), next(iter(out_b[0]))
        out_a = [{first_b: o[first_a]} for o in out_a]
        names = [first_b]
    comparisons = {n: Comparison() for n in names}
    for oa, ob in zip(out_a, out_b):
        for n in names:
            comparisons[n].update(as_nchw(oa[n]), as_nchw(ob[n]))
    return comparisons, out_a, out_b


def _gap(unfused: list[dict], deployed: list[dict]) -> dict[str, Comparison]:
    """The exposed (unfused) run's outputs against the deployed file's own, per output name."""
    names = [n for n in (deployed[0] if deployed else {}) if unfused and n in unfused[0]]
    gap = {n: Comparison() for n in names}
    for u, d in zip(unfused, deployed):
        for n in names:
            gap[n].update(as_nchw(u[n]), as_nchw(d[n]))
    return gap


def _line(c: Comparison) -> str:
    return (f"max |diff| {c.max_abs:.4g} ({100 * c.max_rel:.3g}% of the largest reference value), "
            f"mean |diff| {c.mean_abs:.3g}, argmax agreement {100 * c.agreement:.3f}%")


def _layer_lines(result, threshold: float) -> list[str]:
    width = min(56, max((len(e.match.node) for e in result.layers), default=5))
    lines = [f"  {'#':>4}  {'layer (node in B)':<{width}}  {'op':<14} {'error %':>9} {'added':>8} {'max %':>8}"
             f"  tensor compared in A"]
    first = result.first_past(threshold)
    for e in result.layers:
        name = e.match.node if len(e.match.node) <= width else "..." + e.match.node[-(width - 3):]
        mark = "  <- first past" if e is first else ""
        renamed = e.match.candidate if e.match.candidate != e.match.tensor else "same name"
        if e.match.reference != e.match.tensor:
            renamed += f" (B: {e.match.reference})"
        lines.append(f"  {e.match.index:>4}  {name:<{width}}  {e.match.op:<14} {e.percent:>9.3g} {e.added:>+8.3g} "
                     f"{100 * e.comparison.max_rel:>8.3g}  {renamed}{mark}")
    return lines


def compare_artifacts(a_path: str, b_path: str, images_from=None, data_root=None, num_images: int = DEFAULT_NUM_IMAGES,
                      seed: int = 0, layers: bool = False, max_layer_error: float = DEFAULT_MAX_LAYER_ERROR,
                      backend_a: str | None = None, backend_b: str | None = None,
                      threads: int | None = None) -> tuple[list[str], dict]:
    """The printed lines and the JSON record of ``cpnet compare`` (see the module docstring)."""
    from quantize.calib_data import iter_calibration_images, resolve_calibration_source

    if layers:
        for p in (a_path, b_path):
            if Path(p).suffix.lower() not in ONNX_SUFFIXES:
                raise UserError(f"{p}: --layers compares two ONNX files (their intermediate tensors are exposed "
                                f"with ONNX Runtime); for an engine, compare the ONNX file it was built from, and "
                                f"the engine's outputs without --layers")
    with _open(a_path, backend_a, threads) as a, _open(b_path, backend_b, threads) as b:
        _same_preprocessing(a, b)
        source = resolve_calibration_source(images_from, b.manifest, data_root)
        images = list(iter_calibration_images(source, b.manifest, num_images, seed=seed))
        outputs, out_a, out_b = _outputs(a, b, images)
        lines = [f"A {a_path} ({a.name}, {a.precision}) against B {b_path} ({b.name}, {b.precision}) "
                 f"on {len(images)} image(s) from {source.description}"]
        lines += [f"  {n}: {_line(c)}" for n, c in outputs.items()]
        record = {"candidate": {"path": str(a_path), "backend": a.name, "precision": a.precision},
                  "reference": {"path": str(b_path), "backend": b.name, "precision": b.precision},
                  "images": len(images), "source": source.description,
                  "outputs": {n: c.metrics() for n, c in outputs.items()}}
    if not layers:
        return lines, record
    from .layers.tensors import layer_errors

    result = layer_errors(a_path, b_path, images, threads=threads)
    um = result.unmatched
    lines.append(f"layers: {len(result.layers)} matched through Q/DQ and Cast (unmatched tensor groups: "
                 f"{um['candidate']} in A, {um['reference']} in B, {um['shape_differs']} of different shape); error = "
                 f"mean |diff| in % of the mean |value| in B, added = over the layer's inputs', max = largest "
                 f"|diff| in % of the largest |value|")
    lines += _layer_lines(result, max_layer_error)
    first, most = result.first_past(max_layer_error), result.largest_added()
    if first is not None:
        lines.append(f"first layer past {max_layer_error:g}%: {first.match.node} ({first.match.op}), "
                     f"{first.percent:.3g}% (layer {first.match.index} of {len(result.layers)}, tensor {first.match.tensor})")
    else:
        lines.append(f"no layer past {max_layer_error:g}% (largest {max((e.percent for e in result.layers), default=0):.3g}%)")
    if most is not None:
        lines.append(f"adds the most: {most.match.node} ({most.match.op}), {most.added:+.3g} points over its inputs")
    gaps = {"candidate": _gap(result.unfused_outputs["candidate"], out_a),
            "reference": _gap(result.unfused_outputs["reference"], out_b)}
    for side, label in (("candidate", "A"), ("reference", "B")):
        for n, c in gaps[side].items():
            lines.append(f"exposed (unfused) run of {label} against its deployed output, {n}: {_line(c)}")
    record["layers"] = {"max_layer_error_percent": max_layer_error, "matched": len(result.layers),
                        "unmatched": um, "table": [e.as_dict() for e in result.layers],
                        "first_past": first.as_dict() if first is not None else None,
                        "largest_added": most.as_dict() if most is not None else None,
                        "unfused_gap": {side: {n: c.metrics() for n, c in g.items()} for side, g in gaps.items()}}
    return lines, record


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    p.add_argument("input", metavar="A", help="the candidate: an ONNX file, an engine, a run dir or checkpoint")
    p.add_argument("reference", metavar="B", help="the reference it is compared against (e.g. model.onnx)")
    p.add_argument("--layers", action="store_true",
                   help="also every intermediate tensor both ONNX files have, and the first layer where they part")
    p.add_argument("--max-layer-error", type=cli_args.non_negative_float, default=DEFAULT_MAX_LAYER_ERROR, metavar="PERCENT",
                   help="a layer parts when its mean |difference| passes this share of the mean |value| in B, "
                        f"in percent (default {DEFAULT_MAX_LAYER_ERROR:g})")
    p.add_argument("--backend-a", choices=list(BACKENDS), help="run A with this backend (default: by its file)")
    p.add_argument("--backend-b", choices=list(BACKENDS), help="run B with this backend (default: by its file)")
    cli_args.add_calibration(p, DEFAULT_NUM_IMAGES, what="comparison")
    cli_args.add_runtime(p)
    cli_args.add_json(p, "the figures (and the layer table)")


def run(args) -> int:
    if args.json:
        check_output(args.json)
    for p in (args.input, args.reference):
        if not Path(p).exists():
            raise UserError(f"{p}: no such file or directory")
    lines, record = compare_artifacts(args.input, args.reference, images_from=args.calib_data,
                                      data_root=args.data_root, num_images=args.num_images, seed=args.seed,
                                      layers=args.layers, max_layer_error=args.max_layer_error,
                                      backend_a=args.backend_a, backend_b=args.backend_b, threads=args.threads)
    print("\n".join(lines))
    if args.json:
        atomic_write_json(args.json, record)
    return 0


def main(argv: list[str] | None = None) -> int:
    from cpnet.cli import run_verb

    return run_verb("engines.compare", argv)


if __name__ == "__main__":
    raise SystemExit(main())
