"""The accuracy-drift report: every variant against the float model, per class, with intervals, pictures and a gate.

    cpnet report runs/quickstart                       # its checkpoint against every file in runs/quickstart/export
    cpnet report model.onnx model.fp16.onnx model.int8.onnx --data data/synthetic -o drift/

What it measures (one pass per artifact over the same images, reference first):

- every image goes through the artifact's own manifest: the deploy preprocessing
  (:func:`cpnet.runtime.preprocess.preprocess`, the whole frame resized to the model
  input, one scale, no flip) and :func:`~cpnet.runtime.preprocess.postprocess` back to
  the label's size; ``--mode slide``, ``--scales`` or ``--flip`` switch to
  :func:`cpnet.inference.predict_image` instead (as ``cpnet evaluate``);
- per artifact: a confusion matrix (:class:`cpnet.runtime.metrics.ConfusionMatrix`,
  the one mIoU implementation) and, per image, its true-positive, ground-truth and
  predicted pixel counts per class; pixel agreement with the reference's prediction;
  the model's wall time per image, summed over its calls (median over images reported, after warm-up);
- drift = variant minus reference, in mIoU (or IoU) points. Its 95% interval is a
  paired bootstrap over images: the same resampled image sets for the reference and
  every variant (``--bootstrap`` resamples, ``--seed``), mIoU recomputed from the
  summed counts of each resample (:func:`cpnet.runtime.metrics.miou_from_counts`), the
  2.5th and 97.5th percentiles of the differences. A variant that predicts exactly
  what the reference predicts has the interval [0, 0];
- worst images: the ``--worst`` images where the variant disagrees most with the reference.

The gate is on point estimates: a variant fails when its mIoU *drop* is larger than
its limit (``--max-miou-drift``; by default 0.01 points for FP32, 0.1 for FP16/BF16,
0.5 for INT8) or, with ``--max-class-drift``, when a class's IoU drops more than that.
Gains do not fail the gate. Intervals are reported, not gated. A variant that cannot
be opened or run is a "not run" row with the reason. Exit codes: 1 when a variant
fails the gate, else 3 when a variant was not run (2 when one the user gave cannot be
opened), else 0; the report is written in every case. The gate is on each file on the
backend it calls for, and on every row when ``--backend`` names the backends; the rows
the report adds on its own (another installed runtime, e.g. OpenVINO beside ONNX
Runtime) are measured, shown with their status, and never recommended when they fail,
but do not fail the command: a runtime nobody chose is not the file's fault.

Rows: one per variant x backend x option set that applies on this machine, keyed by all three
(:class:`engines.backends.row_key.RowKey`, e.g. ``model.int8.onnx@openvino[precision=bf16]``): every
ONNX file runs on ONNX Runtime and, where OpenVINO is installed, on OpenVINO once per precision hint
the CPU runs (f32; bf16 with AVX512_BF16 or AMX, which needs no calibration; f16 with AVX512_FP16).
``--backend`` picks the backends, ``--backend-options`` one option set. Each row says what it runs as
(the precision read back from the backend) and is gated at the lower of its file's and that precision.

The recommendation is the fastest row on this machine (median latency) within its limits; rows whose
spread of repetitions overlaps the fastest's (interquartile ranges, :func:`engines.report.verdict.within_noise`) count as
ties, settled by the smaller drift; the line says the repetitions and the spread, and
``report.json``'s ``recommendation.key`` names the row (the pipeline's demo runs it). The reference
qualifies too (drift 0). Every latency carries the machine line (:mod:`cpnet.runtime.machine`).

Outputs, each written atomically, in ``-o DIR`` (default: ``<run dir>/report``, or a
``report`` folder beside a reference file): ``report.html`` (self-contained, images
embedded), ``report.md``, ``report.json`` (everything; its ``kind`` is ``report``) and
the PNGs (:mod:`engines.report.pages`).

The parts: :mod:`~engines.report.options` (options, limits, bounds), :mod:`~engines.report.rows`
(variants, images, rows), :mod:`~engines.report.measure` (one pass), :mod:`~engines.report.statistics`
(the bootstrap), :mod:`~engines.report.verdict` (gate, recommendation, exit code), :mod:`~engines.report.pages`
(HTML, Markdown, plots); this module puts them together and is the ``cpnet report`` verb.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cpnet.runtime import CheckFailed, MissingDependency, UserError, atomic_write_json
from cpnet.runtime.errors import EXIT_CHECK_FAILED, EXIT_MISSING_DEPENDENCY, EXIT_USER_ERROR, first_line
from cpnet.runtime.log import get_logger

from .measure import Pass, run_pass
from .options import DEFAULT_MIOU_DRIFT, MAX_BOOTSTRAP, ReportOptions
from .rows import effective_precision, find_variants, open_dataset, open_options, row_name, variant_rows
from .statistics import bootstrap_stats, interval, resample_weights
from .verdict import exit_code, gate, recommend

if TYPE_CHECKING:
    from engines.backends.row_key import RowKey

log = get_logger("report")

# --------------------------------------------------------------------------- the report


def describe_artifact(model, path: Path) -> dict:
    """Path, backend, precision, flavour, calibration record, sha256 and parent sha256, file size."""
    man = model.manifest
    files = [Path(model.path)]
    side = Path(model.path).with_name(Path(model.path).name + ".data")
    if side.exists():
        files.append(side)
    calibration = man.get("calibration") or (man.get("fp16") or {}).get("calibration")
    return {
        "path": str(path),
        "file": str(model.path),
        "backend": model.name,
        "runs_as": model.describe(),
        "precision": effective_precision(str(model.precision), getattr(model, "runs_as", None)),
        "file_precision": str(model.precision),
        "flavour": man.get("flavour"),
        "calibration": calibration,
        "sha256": man.get("sha256"),
        "parent_sha256": (man.get("parent") or {}).get("sha256"),
        "parent": (man.get("parent") or {}).get("path"),
        "size_bytes": sum(f.stat().st_size for f in files if f.exists()),
        "input_size": list(model.input_size),
    }


def _names(paths: list[Path]) -> list[str]:
    """Short row names: file names, with the parent folder where two would be equal, then a counter."""
    names = [p.name for p in paths]
    for i, p in enumerate(paths):
        if names.count(p.name) > 1:
            names[i] = f"{p.parent.name}/{p.name}"
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if names.count(n) > 1:
            names[i] = f"{n} #{seen[n]}"
    return names


def default_output(reference: "str | Path") -> Path:
    ref = Path(reference)
    return ref / "report" if ref.is_dir() else ref.parent / "report"


@dataclass
class Reference:
    """The reference's pass and what every variant's pass is measured against (the images it used, its row)."""

    name: str
    row: dict
    pass_: Pass
    predictions: list  # packed, one per image in pass_.indices
    dataset: object
    data_desc: str
    classes: list[str]
    skipped: list[str]  # the bad samples passed over

    @property
    def indices(self) -> list[int]:
        return self.pass_.indices


def build_report(reference: "str | Path", variants: list["str | Path"], options: ReportOptions,
                 runtime=None) -> dict:
    """Measure the reference and every variant; return the report as a dict (see :func:`write_report`)."""
    from cpnet.runtime.options import RuntimeOptions

    runtime = runtime or RuntimeOptions()
    t_start = time.perf_counter()
    reference, variants, ref_name, var_names = resolve_inputs(reference, variants)
    ref, measured = measure_reference(reference, ref_name, variants, var_names, options, runtime)
    weights = resample_weights(len(ref.indices), options.bootstrap, options.seed) if options.bootstrap > 0 else None
    ref_boot = bootstrap_stats(ref.pass_.counts, weights) if weights is not None else None
    rows = [ref.row]
    passes = {ref.name: ref.pass_}
    for path, key in measured:
        row, p = measure_variant(path, key, ref, weights, ref_boot, options, runtime)
        if p is not None:
            passes[row["name"]] = p
        rows.append(row)
    report = assemble_report(ref, rows, options, runtime)
    report["seconds_measuring"] = time.perf_counter() - t_start
    report["_passes"] = passes  # for the pictures; not written to JSON
    report["_dataset"] = ref.dataset
    report["_indices"] = ref.indices
    report["_reference_predictions"] = ref.predictions
    return report


def resolve_inputs(reference: "str | Path", variants: list["str | Path"]) -> tuple[Path, list[Path], str, list[str]]:
    """The reference and variant paths (a run directory's exported files when none are named) and their row names."""
    reference = Path(reference)
    if not reference.exists():
        raise UserError(f"{reference}: no such file or directory (the reference: a checkpoint, run directory or "
                        f"ONNX file)")
    if not variants:
        if not reference.is_dir():
            raise UserError(f"{reference}: name the variants to compare after the reference (only a run "
                            f"directory finds its exported files itself)")
        variants = find_variants(reference)
    variants = [Path(v) for v in variants]
    names = _names([reference, *variants])
    ref_name, var_names = names[0], names[1:]
    if reference.is_dir():  # a run directory: name it by the checkpoint that stands for it
        from cpnet.checkpoint import resolve_checkpoint

        ref_name = f"{reference.name}/{resolve_checkpoint(reference).name}"
    return reference, variants, ref_name, var_names


def measure_reference(reference: Path, ref_name: str, variants: list[Path], var_names: list[str],
                      options: ReportOptions, runtime) -> tuple[Reference, list[tuple[Path, "RowKey"]]]:
    """Open the reference and its dataset, check they agree, run its pass; also the variant rows to measure."""
    from engines.backends import backend_for, open_artifact
    from engines.backends.row_key import RowKey

    with open_artifact(reference, **open_options(backend_for(reference), runtime)) as ref:
        dataset, data_desc = open_dataset(options, ref.manifest)
        classes = list(dataset.classes)
        check_classes(reference, ref, classes, data_desc)
        n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
        measured = variant_rows(variants, var_names, options)
        log.info(f"{n} image(s) from the {data_desc}; {ref_name} is the reference ({ref.describe()}), "
                 f"{len(variants)} variant(s) in {len(measured)} row(s) (artifact x backend x options)")
        bad: list[str] = []
        ref_pass, ref_preds = run_pass(ref, ref_name, dataset, list(range(len(dataset))), options, None,
                                       runtime.progress, keep_predictions=True, limit=options.limit, skipped=bad)
        ref_info = describe_artifact(ref, reference)

    ref_metrics = _metrics(ref_pass, classes)
    row = {"name": ref_name, "key": str(RowKey(ref_name, backend_for(reference))), "backend_options": {},
           "role": "reference", "status": "reference", **ref_info, **ref_metrics,
           "miou_drift": 0.0, "miou_drift_ci": [0.0, 0.0] if options.bootstrap > 0 else None,
           "agreement": 100.0, "limit": None, "class_drift": {c: 0.0 if ref_metrics["per_class"][c] is not None
                                                               else None for c in classes},
           "class_drift_ci": {}, "worst": []}
    return Reference(ref_name, row, ref_pass, ref_preds, dataset, data_desc, classes, bad), measured


def check_classes(reference: Path, model, classes: list[str], data_desc: str) -> None:
    """UserError unless the reference model was trained for the dataset's classes (their number, then names)."""
    from cpnet.runtime.manifest import class_names_differ  # tolerant of mmseg's 'bed ' and of case

    if model.num_classes and model.num_classes != len(classes):
        raise UserError(f"{reference}: the model has {model.num_classes} classes, the dataset ({data_desc}) "
                        f"{len(classes)}; pass the dataset the model was trained for")
    differ = model.manifest.get("classes") and class_names_differ(model.manifest["classes"], classes)
    if differ:
        raise UserError(f"{reference}: the model's classes are not the dataset's ({data_desc}: {differ}); pass "
                        f"the dataset the model was trained for")


def measure_variant(path: Path, key: "RowKey", ref: Reference, weights, ref_boot, options: ReportOptions,
                    runtime) -> tuple[dict, Pass | None]:
    """One row: ``path`` on ``key`'s backend and options against the reference; "not run" (no pass) if it fails."""
    from engines.backends import backend_for, open_artifact

    name = row_name(key, path)
    # gated: the file on the backend it calls for, or on one the user asked for (--backend); a row the report
    # adds on its own (another installed runtime) is measured and shown, never recommended when it fails, and
    # does not change the exit code: the file is not at fault for a runtime nobody chose
    row = {"name": name, "key": str(key), "backend": key.backend, "backend_options": key.open_options(),
           "role": "variant", "path": str(path),
           "gated": bool(options.backends) or key.backend == backend_for(path)}
    try:
        model = open_artifact(path, backend=key.backend, **{**open_options(key.backend, runtime),
                                                             **key.open_options()})
    except Exception as e:  # noqa: BLE001 - a variant that cannot be opened is a row, not a crash
        return _not_run(row, e, "cannot be opened"), None
    try:
        with model:
            if model.num_classes and model.num_classes != len(ref.classes):
                raise UserError(f"it has {model.num_classes} classes, the reference {len(ref.classes)}")
            row.update(describe_artifact(model, path))
            p, _ = run_pass(model, name, ref.dataset, ref.indices, options, ref.predictions, runtime.progress)
    except Exception as e:  # noqa: BLE001 - nor one that fails while running
        return _not_run(row, e, "failed while running"), None
    row.update(_metrics(p, ref.classes))
    row.update(_drift(row, ref.row, p, ref.pass_, ref.classes, weights, ref_boot, options))
    for w in row["worst"]:
        w["file"] = str(ref.dataset.sample_path(ref.indices[w["index"]]))
    log.info(f"{name}: mIoU {row['mIoU']:.3f} (drift {row['miou_drift']:+.3f} points), agreement "
             f"{row['agreement']:.3f}%, {row['latency_ms']:.2f} ms median ({row['runs_as']})")
    return row, p


def assemble_report(ref: Reference, rows: list[dict], options: ReportOptions, runtime) -> dict:
    """The report's record: the rows gated, the data, how it was measured, the machine and the recommendation."""
    from cpnet.runtime.machine import machine_info, machine_line
    from cpnet.runtime.manifest import SCHEMA, versions

    offenders = gate(rows, options)
    info = machine_info(gemm=True, threads=getattr(runtime, "threads", None))
    report = {
        "schema": SCHEMA,
        "kind": "report",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reference": ref.name,
        "rows": rows,
        "classes": ref.classes,
        "palette": [list(map(int, c)) for c in ref.dataset.palette],
        "data": {"description": ref.data_desc, "images": len(ref.indices), "skipped": ref.skipped,
                 "files": [str(ref.dataset.sample_path(i)) for i in ref.indices]},
        "evaluation": {"mode": options.eval_mode, "scales": list(options.scales), "flip": options.flip,
                       "latency": f"median over images of the model's wall time per image (infer: one call in "
                                  f"deploy mode, every window, scale and flip otherwise), after {options.warmup} "
                                  f"warm-up image(s), pre/post-processing excluded"},
        "bootstrap": {"resamples": options.bootstrap, "confidence": options.confidence, "seed": options.seed,
                      "over": "images, paired (the same resamples for every artifact)"},
        "gate": {"max_miou_drift": options.max_miou_drift,
                 "default_max_miou_drift": DEFAULT_MIOU_DRIFT if options.max_miou_drift is None else None,
                 "max_class_drift": options.max_class_drift, "on": "drops of the point estimates",
                 "offenders": offenders,
                 "not_run": [r["name"] for r in rows if r["status"] == "not run"],
                 "passed": not offenders and all(r["status"] != "not run" for r in rows),
                 "not_gated": [r["name"] for r in rows if r.get("gated") is False]},
        "machine": info,
        "machine_line": machine_line(info),
        "runtime": {"threads": runtime.threads, "device": runtime.device, "providers": list(runtime.providers)},
        "versions": versions(),
    }
    report["recommendation"] = recommend(rows, report["machine_line"])
    return report


def _not_run(row: dict, e: Exception, what: str) -> dict:
    reason = first_line(e, 300)
    log.warning(f"{row['name']}: not run: {what}: {reason}")
    row.update({"status": "not run", "reason": f"{what}: {reason}",
                "missing_dependency": isinstance(e, MissingDependency) or type(e).__name__ == "MissingDependency"})
    return row


def _metrics(p: Pass, classes: list[str]) -> dict:
    from cpnet.runtime.metrics import ConfusionMatrix

    cm = ConfusionMatrix(len(classes))
    cm.mat = p.matrix
    res = cm.compute(classes)
    lat = np.asarray(p.latencies_ms, np.float64)
    return {
        "mIoU": res["mIoU"],
        "aAcc": res["aAcc"],
        "per_class": {c: res["per_class"][c]["IoU"] for c in classes},
        "class_pixels": {c: res["per_class"][c]["pixels"] for c in classes},
        "latency_ms": float(np.median(lat)) if lat.size else None,
        "latency_p90_ms": float(np.percentile(lat, 90)) if lat.size else None,
        # the spread of the repetitions (one per image): what "as fast" means for the recommendation
        "latency_iqr_ms": float(np.percentile(lat, 75) - np.percentile(lat, 25)) if lat.size else None,
        "latency_p25_ms": float(np.percentile(lat, 25)) if lat.size else None,
        "latency_p75_ms": float(np.percentile(lat, 75)) if lat.size else None,
        "latency_images": int(lat.size),
        "confusion_matrix": p.matrix.tolist(),
        "pass_seconds": p.seconds,
    }


def _drift(row: dict, ref_row: dict, p: Pass, ref: Pass, classes, weights, ref_boot, options) -> dict:
    class_drift = {}
    for c in classes:
        a, b = row["per_class"][c], ref_row["per_class"][c]
        class_drift[c] = None if a is None or b is None else a - b
    out = {
        "status": "pass",
        "miou_drift": row["mIoU"] - ref_row["mIoU"],
        "agreement": float(p.same.sum() / max(1, p.pixels.sum()) * 100),
        "class_drift": class_drift,
        "miou_drift_ci": None,
        "class_drift_ci": {},
        "limit": options.miou_limit(row["precision"]),
        "worst": [{"index": int(k), "file": None, "disagreement": d * 100} for d, k, _ in p.worst],
    }
    if weights is not None:
        miou_b, iou_b = bootstrap_stats(p.counts, weights)
        out["miou_drift_ci"] = interval(miou_b - ref_boot[0], options.confidence)
        diff = iou_b - ref_boot[1]
        out["class_drift_ci"] = {c: interval(diff[:, j], options.confidence) for j, c in enumerate(classes)}
    return out


def write_report(report: dict, out_dir: "str | Path", command: str | None = None) -> dict[str, Path]:
    """Write the PNGs, report.md, report.html and report.json (last) into ``out_dir``, each atomically."""
    from . import pages as report_pages  # the page builders

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; -o takes the report's folder")
    report["command"] = command
    images = report_pages.render_images(report)  # name -> PNG bytes
    paths = {}
    from cpnet.runtime import atomic_write_bytes, atomic_write_text

    for name, data in images.items():
        atomic_write_bytes(out_dir / name, data)
        paths[name] = out_dir / name
    report["images"] = {k: v for k, v in report_pages.image_index(report, images).items()}
    report["seconds_writing"] = time.perf_counter() - t0
    md = report_pages.markdown(report)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", report_pages.html(report, images))
    atomic_write_json(out_dir / "report.json", public(report))
    paths.update({"report.md": out_dir / "report.md", "report.html": out_dir / "report.html",
                  "report.json": out_dir / "report.json"})
    return paths


def public(report: dict) -> dict:
    """The report without the in-memory parts (passes, dataset, predictions)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- the command

DESCRIPTION = """Accuracy-drift report: every variant against the reference, per class, with intervals, pictures and a gate.

The reference (a checkpoint, run dir or ONNX file) and every variant (any artifact engines.open
takes: ONNX files, engines, checkpoints) run the same labelled images through their manifest's
deploy preprocessing, one pass each. Per variant: mIoU, per-class IoU, drift in points with a 95%
bootstrap interval over images, pixel agreement with the reference, median latency on this machine
(with the machine line), size, precision and calibration record; the worst images; plots. Writes
report.html (one file, opens offline), report.md, report.json and the PNGs, and says in one line
which artifact to deploy on this machine. Exit 1 when a variant's mIoU drop (or a class's, with
--max-class-drift) is beyond its limit, 3 when a variant could not be run (the report is still written)."""

EXAMPLES = """cpnet report runs/quickstart --data data/synthetic
cpnet report runs/quickstart runs/quickstart/export/model.int8-cpu.onnx --limit 50 --max-class-drift 2
cpnet report model.onnx model.fp16.onnx model.int8.onnx --data cityscapes --data-root data/cityscapes -o drift/"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    d = ReportOptions()
    cli_args.add_input(p, "REFERENCE", "the float model: a checkpoint (.pt), a run directory (its best.pt) or an ONNX file")
    p.add_argument("variants", metavar="VARIANT", nargs="*",
                   help="artifacts to compare (ONNX files, engines, checkpoints); default with a run directory: "
                        "every file in RUN/export with a manifest")
    cli_args.add_output(p, "report folder (default: RUN_DIR/report, or a report folder beside a reference file)")
    g = p.add_argument_group("images (labelled)")
    g.add_argument("--data", metavar="DIR|CONFIG",
                   help="a dataset folder (images/SPLIT, masks/SPLIT, classes.yaml) or a config name/YAML "
                        "(default: the config in the reference's manifest)")
    cli_args.add_data_root(g)
    g.add_argument("--split", help="split to use (default: the config's val split, or val for a folder)")
    g.add_argument("--limit", type=cli_args.positive_int, metavar="N", help="the first N images only (default: all)")
    g = p.add_argument_group("evaluation (default: the manifest's deploy preprocessing, one call per image)")
    g.add_argument("--mode", choices=["deploy", "whole", "slide"], default=d.mode,
                   help="deploy (the whole frame resized to the model input, as deployed; default), whole or slide "
                        "(cpnet evaluate's test-time modes)")
    g.add_argument("--scales", metavar="LIST", help="comma-separated test scales, e.g. 0.75,1,1.25 (default 1)")
    g.add_argument("--flip", action="store_true", help="also average horizontally flipped inputs")
    g = p.add_argument_group("gate (on point estimates; gains never fail)")
    cli_args.add_max_miou_drift(g, None, "by precision: 0.01 FP32, 0.1 FP16/BF16, 0.5 INT8")
    g.add_argument("--max-class-drift", type=cli_args.non_negative_float, metavar="POINTS",
                   help="largest IoU drop of any class against the reference, in IoU points (default: off)")
    g = p.add_argument_group("statistics and pictures")
    g.add_argument("--bootstrap", type=cli_args.int_in(0, MAX_BOOTSTRAP), default=d.bootstrap, metavar="N",
                   help=f"bootstrap resamples over images for the 95%% intervals (default {d.bootstrap}; 0: none)")
    g.add_argument("--seed", type=cli_args.non_negative_int, default=d.seed, metavar="N",
                   help=f"seed of the bootstrap resamples (default {d.seed})")
    g.add_argument("--worst", type=cli_args.non_negative_int, default=d.worst, metavar="K",
                   help=f"worst images shown per variant, by disagreement with the reference (default {d.worst})")
    g.add_argument("--warmup", type=cli_args.non_negative_int, default=d.warmup, metavar="N",
                   help=f"untimed model calls before each pass (default {d.warmup})")
    cli_args.add_json(p, "the report (as report.json)")
    cli_args.add_engine_trust(p)
    cli_args.add_runtime(p, device=True, providers=True)
    from engines.backends import BACKENDS

    cli_args.add_backend(p, tuple(BACKENDS), multiple=True,
                  options_help="openvino: precision=f32|bf16|f16,performance=latency|throughput; default: one row "
                               "per precision this CPU runs")


def options_from_args(args) -> ReportOptions:
    from cpnet.evaluate import parse_scales

    scales = parse_scales(args.scales) if args.scales else (1.0,)
    return ReportOptions(data=args.data, data_root=args.data_root, split=args.split, limit=args.limit, mode=args.mode,
                         scales=scales, flip=args.flip, max_miou_drift=args.max_miou_drift,
                         max_class_drift=args.max_class_drift, bootstrap=args.bootstrap, seed=args.seed,
                         worst=args.worst, warmup=args.warmup, backends=args.backend,
                         backend_options=args.backend_options)


def command_line(args) -> str:
    """The ``cpnet report`` command that reproduces these figures (flags left at their defaults omitted)."""
    parts = ["cpnet", "report", args.input, *args.variants]
    d = ReportOptions()
    for flag, value, default in (("--data", args.data, None), ("--data-root", args.data_root, None),
                                 ("--split", args.split, None), ("--limit", args.limit, None),
                                 ("--mode", args.mode, d.mode), ("--scales", args.scales, None),
                                 ("--max-miou-drift", args.max_miou_drift, None),
                                 ("--max-class-drift", args.max_class_drift, None),
                                 ("--bootstrap", args.bootstrap, d.bootstrap), ("--seed", args.seed, d.seed),
                                 ("--worst", args.worst, d.worst), ("--threads", args.threads, None),
                                 ("--device", args.device, "auto"), ("--providers", args.providers, None),
                                 ("--backend", ",".join(args.backend or ()) or None, None),
                                 ("--backend-options", args.backend_options, None), ("-o", args.output, None)):
        if value is not None and value != default:
            parts += [flag, str(value)]
    if args.flip:
        parts.append("--flip")
    return shlex.join(str(p) for p in parts)


def run(args) -> int:
    from cpnet.cli.args import runtime_options
    from cpnet.runtime.files import check_output

    from . import pages as report_pages  # the page builders

    options = options_from_args(args)
    out_dir = Path(args.output) if args.output else default_output(args.input)
    check_output(out_dir, "dir", "report folder")  # before any work: minutes of passes, then nowhere to write
    if args.json:
        check_output(args.json, "file", "--json file")
        from cpnet.runtime.files import check_distinct  # --json over a page of the report itself: refused

        check_distinct([], [(name, out_dir / name) for name in ("report.md", "report.html", "report.json")]
                       + [("--json file", args.json)])
    report = build_report(args.input, list(args.variants), options, runtime_options(args))
    paths = write_report(report, out_dir, command_line(args))
    if args.json:
        atomic_write_json(args.json, public(report))
    print(report["recommendation"]["line"])
    print()
    print(report_pages.headline_table(report))
    print()
    print(f"report: {paths['report.html']} (also report.md, report.json and {len(paths) - 3} PNG(s) in {out_dir})")
    for line in report["gate"]["offenders"]:
        sys.stderr.write(f"gate: {line}\n")
    code = exit_code(report)
    if code == EXIT_CHECK_FAILED:
        n = sum(r["status"] == "fail" for r in report["rows"])
        raise CheckFailed(f"drift gate failed: {n} variant(s) beyond the limits (lines above); report in {out_dir}")
    if code in (EXIT_MISSING_DEPENDENCY, EXIT_USER_ERROR):
        names = ", ".join(report["gate"]["not_run"])
        error = MissingDependency if code == EXIT_MISSING_DEPENDENCY else UserError
        raise error(f"not run: {names} (reasons above and in the report); the gate cannot pass without "
                    f"them; report in {out_dir}")
    return 0


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb("engines.report.report", argv)  # by name: under python -m this module is __main__


if __name__ == "__main__":
    sys.exit(main())
