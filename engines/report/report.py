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
spread of repetitions overlaps the fastest's (interquartile ranges, :func:`within_noise`) count as
ties, settled by the smaller drift; the line says the repetitions and the spread, and
``report.json``'s ``recommendation.key`` names the row (the pipeline's demo runs it). The reference
qualifies too (drift 0). Every latency carries the machine line (:mod:`cpnet.runtime.machine`).

Outputs, each written atomically, in ``-o DIR`` (default: ``<run dir>/report``, or a
``report`` folder beside a reference file): ``report.html`` (self-contained, images
embedded), ``report.md``, ``report.json`` (everything; its ``kind`` is ``report``) and
the PNGs (:mod:`engines.report.pages`).
"""

from __future__ import annotations

import heapq
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpnet.runtime import CheckFailed, MissingDependency, UserError, atomic_write_json
from cpnet.runtime.errors import EXIT_CHECK_FAILED, EXIT_MISSING_DEPENDENCY, EXIT_USER_ERROR, first_line
from cpnet.runtime.log import get_logger

from .pages import pack_labels, unpack_labels

log = get_logger("report")

#: mIoU drop allowed by default, in points, by precision (the targets benchmarks/quantize_drift.py had).
DEFAULT_MIOU_DRIFT = {"fp32": 0.01, "fp16": 0.1, "bf16": 0.1, "int8": 0.5}
FALLBACK_MIOU_DRIFT = 0.5
ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")
PRECISION_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}


@dataclass(frozen=True)
class ReportOptions:
    """What the report measures and how it gates (the command's flags, minus output and runtime)."""

    data: str | None = None
    data_root: str | None = None
    split: str | None = None
    limit: int | None = None
    mode: str = "deploy"  # deploy | whole | slide
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    max_miou_drift: float | None = None  # None: DEFAULT_MIOU_DRIFT by precision
    max_class_drift: float | None = None
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    worst: int = 4
    warmup: int = 2
    backends: tuple[str, ...] | None = None  # None: every installed backend that runs each variant's file
    backend_options: str | None = None  # KEY=VALUE,...: these options only, instead of every set that applies here

    @property
    def eval_mode(self) -> str:
        """``deploy`` (manifest preprocessing, one call per image), or ``whole``/``slide`` through predict_probs."""
        if self.mode == "deploy" and tuple(self.scales) == (1.0,) and not self.flip:
            return "deploy"
        return "slide" if self.mode == "slide" else "whole"

    def miou_limit(self, precision: str) -> float:
        if self.max_miou_drift is not None:
            return float(self.max_miou_drift)
        return DEFAULT_MIOU_DRIFT.get(str(precision).lower(), FALLBACK_MIOU_DRIFT)


# --------------------------------------------------------------------------- inputs


def find_variants(run_dir: "str | Path") -> list[Path]:
    """The exported files of a run (``RUN/export/*.onnx``, engines), FP32 first, each with its manifest."""
    from cpnet.runtime import read_manifest

    export = Path(run_dir) / "export"
    found = []
    for p in sorted(export.glob("*")) if export.is_dir() else []:
        if p.suffix.lower() in ARTIFACT_SUFFIXES and p.is_file() and p.with_name(p.name + ".json").is_file():
            man = read_manifest(p, required=False) or {}
            found.append((p.suffix.lower() != ".onnx", PRECISION_ORDER.get(str(man.get("precision")), 9),
                          str(man.get("flavour") or ""), p.name, p))
    if not found:
        raise UserError(f"{export}: no exported files (ONNX files or engines with their manifests); run cpnet export "
                        f"{run_dir} (and cpnet fp16|int8) first, or name the variants after the reference")
    return [item[-1] for item in sorted(found)]


def open_dataset(options: ReportOptions, manifest: dict):
    """The labelled images: a folder-format dataset, a config's dataset, or the reference manifest's config's."""
    from cpnet.config import ConfigError, from_dict, load_config, named_configs
    from cpnet.data import FolderDataset, build_dataset

    source = options.data
    if source and Path(source).expanduser().is_dir():
        root = Path(source).expanduser()
        split = options.split or "val"
        if not (root / "images" / split).is_dir():
            raise UserError(f"{root}: not a labelled dataset folder (expected images/{split}/, masks/{split}/ and "
                            f"classes.yaml); the report needs ground truth, or pass a config name")
        return FolderDataset(root, split), f"{split} split of {root}"
    try:
        if source:
            if source not in named_configs() and Path(source).suffix.lower() not in (".yaml", ".yml"):
                raise UserError(f"--data {source}: no such folder, and not a named config or YAML file")
            cfg = load_config(source)
        else:
            config = manifest.get("config")
            if not config:
                raise UserError("the reference's manifest records no config; pass --data DIR (a dataset folder) "
                                "or a config name")
            cfg = from_dict(config)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if options.data_root:
        cfg.data.root = str(options.data_root)
    split = options.split or cfg.data.val_split
    ds = build_dataset(cfg.data, split, cfg.crop_size, train=False)
    return ds, f"{split} split of {cfg.data.dataset} at {cfg.data.root}"


def open_options(backend: str, runtime) -> dict:
    """engines.open options for a backend from the runtime flags."""
    if backend == "torch":
        return {"device": runtime.device, "threads": runtime.threads}
    if backend == "onnxruntime":
        return {"providers": list(runtime.providers) or None, "threads": runtime.threads}
    if backend == "tensorrt":
        return runtime.engine_options()
    if backend == "openvino":
        return {"threads": runtime.threads}
    return {}


def variant_rows(paths: list[Path], names: list[str], options: ReportOptions) -> list[tuple[Path, "RowKey"]]:
    """(path, row key) of every row to measure: each variant on each backend that runs it (``options.backends``,
    or every installed one), with each option set that applies on this machine (or ``options.backend_options``).
    A backend that cannot run a variant's kind of file gives no row; one that is asked for and not installed
    gives a row that is reported as not run."""
    from cpnet.runtime.options import parse_backend_options
    from engines.backends import backend_for, backends_for, can_run, row_options
    from engines.backends.row_key import RowKey

    fixed = parse_backend_options(options.backend_options) if options.backend_options else None
    out = []
    for path, name in zip(paths, names):
        own = backend_for(path)
        runs = backends_for(path)
        chosen = [b for b in options.backends if can_run(b, path)] if options.backends else runs
        for backend in chosen:
            if fixed is not None and backend != own:
                sets = [fixed]
            else:
                try:
                    sets = row_options(backend)
                except Exception:  # noqa: BLE001 - not installed (asked for by --backend): one not-run row says why
                    sets = [{}]
            out += [(path, RowKey(name, backend, o)) for o in sets]
    return out


def row_name(key, path: Path) -> str:
    """A row's short name: the file's (as before) on the backend its file calls for, else the whole key."""
    from engines.backends import backend_for

    return key.artifact if key.backend == backend_for(path) and not key.options else str(key)


def effective_precision(file_precision: str, runs_as: str | None) -> str:
    """What a row is gated as: the file's precision, or the backend's when that is lower (an FP32 file run with
    OpenVINO's bf16 hint is a bf16 row)."""
    lower = {"bf16": "bf16", "f16": "fp16"}.get(str(runs_as or ""))
    if lower and PRECISION_ORDER.get(lower, 0) > PRECISION_ORDER.get(file_precision, 9):
        return lower
    return file_precision


# --------------------------------------------------------------------------- one pass


def make_predictor(model, options: ReportOptions):
    """``predict(image_rgb) -> (label map, [ms of each model call])`` in the report's evaluation mode."""
    from cpnet.runtime.preprocess import postprocess, preprocess

    if options.eval_mode == "deploy":
        def predict(image):
            x = preprocess(image, model.manifest)
            t0 = time.perf_counter()
            logits = model.infer(x)
            ms = (time.perf_counter() - t0) * 1000
            return postprocess(logits, image.shape[:2]), [ms]

        return predict

    from cpnet.inference import predict_image

    h, w = model.input_size
    times: list[float] = []
    config = model.manifest.get("config") or {}
    overlap = float((config.get("eval") or {}).get("slide_overlap", 1 / 3))
    base_scale = None  # slide mode's base: the data's base scale, as cpnet evaluate (the image's own size without)
    if config.get("data"):
        from cpnet.config import from_dict
        from cpnet.data.transforms import base_scale_of

        try:
            base_scale = base_scale_of(from_dict({"data": config["data"]}).data, (h, w))
        except Exception:  # noqa: BLE001 - a hand-made manifest: fall back to the image's own size
            base_scale = None
    mean, std = model.manifest.get("mean", (0.0, 0.0, 0.0)), model.manifest.get("std", (1.0, 1.0, 1.0))

    def timed(batch):
        t0 = time.perf_counter()
        out = model(batch)
        times.append((time.perf_counter() - t0) * 1000)
        return out

    def predict(image):
        # as cpnet evaluate: each scale resized from the uint8 image and normalised as the manifest says
        probs = predict_image(image, timed, (h, w), model.num_classes, mean, std, mode=options.eval_mode,
                              scales=options.scales, flip=options.flip, overlap=overlap, base_scale=base_scale)
        label = probs.argmax(1)[0].numpy()
        out = list(times)
        times.clear()
        return label.astype(np.uint8 if model.num_classes <= 256 else np.int32), out

    return predict


@dataclass
class Pass:
    """What one artifact's pass over the images leaves: counts, agreement, latencies, worst images."""

    indices: list[int]  # the dataset's images this pass used, in order
    counts: np.ndarray  # (N, 3, C): true positives, ground-truth pixels, predicted pixels per class and image
    matrix: np.ndarray  # (C, C) confusion matrix, rows ground truth
    same: np.ndarray  # (N,) pixels equal to the reference's prediction
    pixels: np.ndarray  # (N,) pixels per image
    latencies_ms: list[float]  # per image: the model calls' wall time summed
    worst: list = field(default_factory=list)  # [(disagreement, index in indices, packed prediction)]
    seconds: float = 0.0


def run_pass(model, name: str, dataset, indices: list[int], options: ReportOptions, reference_preds: list | None,
             progress: bool, keep_predictions: bool = False, limit: int | None = None,
             skipped: list | None = None) -> tuple[Pass, list]:
    """One pass of ``model`` over ``indices``; with ``reference_preds`` also agreement and worst images.

    With ``skipped`` (a list; the reference's pass) a bad sample is logged, named
    in ``skipped`` and passed over, and the pass stops after ``limit`` usable
    images; ``Pass.indices`` says which were used, for the variants' passes.
    Returns the pass and, with ``keep_predictions``, every prediction packed.
    """
    from cpnet.data import BadSampleError
    from cpnet.runtime.metrics import ConfusionMatrix
    from cpnet.runtime.progress import progress as progress_bar

    C = len(dataset.classes)
    predict = make_predictor(model, options)
    total = ConfusionMatrix(C, dataset.ignore_index)
    used, counts, same, pixels, latencies, worst, kept = [], [], [], [], [], [], []
    t0 = time.perf_counter()
    expected = len(indices) if limit is None else min(limit, len(indices))
    bar = progress_bar(total=expected, desc=name, unit="img", disable=not progress, file=sys.stderr)
    for i in indices:
        if limit is not None and len(used) >= limit:
            break
        try:
            image, label = dataset.load(i)
        except BadSampleError as e:
            if skipped is None:
                raise
            log.warning("skipping bad sample: %s", e)
            skipped.append(str(e))
            continue
        need = C * label.size * 4 * 2  # the logits and the probabilities at the image's size, float32
        if need > MAX_IMAGE_BYTES:
            raise UserError(f"{dataset.sample_path(i)}: a {label.shape[1]}x{label.shape[0]} image needs about "
                            f"{need / 2**30:.1f} GiB for its {C}-class scores at full size (the report compares at "
                            f"the image's size; at most {MAX_IMAGE_BYTES / 2**30:.0f} GiB); resize such images first")
        k = len(used)
        if k == 0:
            for _ in range(options.warmup):
                predict(image)
        pred, ms = predict(image)
        latencies.append(sum(ms))  # one call per image in deploy mode; every window, scale and flip otherwise
        if pred.shape != label.shape:
            raise RuntimeError(f"prediction of {pred.shape[1]}x{pred.shape[0]} for a label of "
                               f"{label.shape[1]}x{label.shape[0]} ({dataset.sample_path(i)})")
        one = ConfusionMatrix(C, dataset.ignore_index)
        one.update(pred, label)
        total.mat += one.mat
        counts.append(one.counts())
        pixels.append(pred.size)
        used.append(i)
        if keep_predictions:
            kept.append(pack_labels(pred))
        if reference_preds is not None:
            differ = pred != unpack_labels(reference_preds[k])
            same.append(pred.size - int(differ.sum()))
            if options.worst > 0:
                item = (float(differ.mean()), -k, k, None)
                if len(worst) < options.worst or item > worst[0]:
                    item = item[:3] + (pack_labels(pred),)
                    (heapq.heappush if len(worst) < options.worst else heapq.heapreplace)(worst, item)
        else:
            same.append(pred.size)
        bar.update()
    bar.close()
    if not used:
        raise UserError(f"no usable labelled image ({len(skipped or [])} bad sample(s)); check --data / --split")
    if int(total.mat.sum()) == 0:
        raise UserError(f"no labelled pixel in {len(used)} image(s): every mask pixel is the ignore label "
                        f"({dataset.ignore_index}) or out of range, so mIoU is undefined; check the masks")
    result = Pass(indices=used, counts=np.asarray(counts, np.int64).reshape(len(used), 3, C),
                  matrix=total.mat.copy(), same=np.asarray(same, np.int64), pixels=np.asarray(pixels, np.int64),
                  latencies_ms=latencies, worst=[(d, k, p) for d, _, k, p in sorted(worst, reverse=True)],
                  seconds=time.perf_counter() - t0)
    return result, kept


# --------------------------------------------------------------------------- statistics


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) float64: how often each image is drawn in each bootstrap resample (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap_stats(counts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: (mIoU in points (B,), per-class IoU in points (B, C)) from per-image counts (N, 3, C).

    Sums of integer counts times integer weights are exact in float64, so the
    same counts give bit-identical statistics whatever the summation order.
    """
    from cpnet.runtime.metrics import iou_from_counts, miou_from_counts

    n, three, c = counts.shape
    summed = (weights @ counts.reshape(n, three * c).astype(np.float64)).reshape(-1, three, c)
    tp, gt, pred = summed[:, 0], summed[:, 1], summed[:, 2]
    return miou_from_counts(tp, gt, pred), iou_from_counts(tp, gt, pred) * 100


def interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    """The central ``confidence`` percentile interval of bootstrap samples (NaN ignored); None if all NaN."""
    samples = np.asarray(samples, np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]


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


#: Memory one image's class scores may take at its own size (an 8000x8000 image took 58 s and 4.9 GiB).
MAX_IMAGE_BYTES = 2 << 30

#: Bootstrap resamples: each is an (images,) weight row and a confusion matrix per variant; 1e8 exhausted 24 GB.
MAX_BOOTSTRAP = 100_000


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


def gate(rows: list[dict], options: ReportOptions) -> list[str]:
    """One line per offender (variant, class, figures); sets each measured row's ``status``."""
    lines = []
    eps = 1e-9
    for r in rows:
        if r["role"] != "variant":
            continue
        if r["status"] == "not run":
            lines.append(f"{r['name']}: not run ({r['reason']})")
            continue
        failed = []
        ci = r.get("miou_drift_ci")
        ci_text = f", 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        if -r["miou_drift"] > r["limit"] + eps:
            failed.append(f"{r['name']}: mIoU drift {r['miou_drift']:+.3f} points ({r['mIoU']:.3f} against "
                          f"{r['mIoU'] - r['miou_drift']:.3f}{ci_text}) is beyond the {r['precision']} limit of "
                          f"-{r['limit']:g}")
        if options.max_class_drift is not None:
            for c, d in r["class_drift"].items():
                if d is not None and -d > options.max_class_drift + eps:
                    cci = r["class_drift_ci"].get(c)
                    failed.append(f"{r['name']}: class {c}: IoU drift {d:+.3f} points ({r['per_class'][c]:.3f} "
                                  f"against {r['per_class'][c] - d:.3f}"
                                  f"{f', 95% CI [{cci[0]:+.3f}, {cci[1]:+.3f}]' if cci else ''}) is beyond "
                                  f"--max-class-drift {options.max_class_drift:g}")
        r["status"] = "fail" if failed else "pass"
        r["offences"] = failed
        if r.get("gated", True):
            lines += failed
        elif failed:
            log.info(f"{r['name']}: fails the drift limit on a runtime the report added (not gated, not "
                     f"recommended): {failed[0]}")
    return lines


def within_noise(row: dict, fastest: dict) -> bool:
    """Whether ``row`` is as fast as ``fastest`` within the measured spread of their repetitions: their
    interquartile ranges overlap (its 25th percentile is at most the fastest's 75th). A slow row that is also
    noisy does not tie with a fast, steady one (as "median within the larger IQR" would let it)."""
    lo = row.get("latency_p25_ms", row["latency_ms"])
    hi = fastest.get("latency_p75_ms", fastest["latency_ms"])
    return lo <= hi


def describe_row(row: dict) -> str:
    """'model.int8.onnx on OpenVINO, bf16': the file, the runtime and, where it matters, the precision it runs as."""
    runtime = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT",
               "torch": "PyTorch"}.get(row.get("backend"), row.get("backend") or "?")
    file = Path(row.get("path") or row["name"]).name
    hint = (row.get("backend_options") or {}).get("precision")
    return f"{file} on {runtime}" + (f", {hint}" if hint else "")


def recommend(rows: list[dict], machine: str) -> dict:
    """The fastest row within its limits on this machine; rows as fast within the measured spread of the
    repetitions (:func:`within_noise`) go to the smaller drift. Names the row key the demo runs."""
    ok = [r for r in rows if r["status"] in ("pass", "reference") and r.get("latency_ms") is not None]
    if not ok:
        return {"name": None, "key": None, "line": "No artifact could be measured; nothing to recommend."}
    fastest = min(ok, key=lambda r: r["latency_ms"])
    tied = [r for r in ok if within_noise(r, fastest)]
    best = min(tied, key=lambda r: (abs(r["miou_drift"]), r["latency_ms"]))
    ref = rows[0]
    speed = ref["latency_ms"] / best["latency_ms"] if best["latency_ms"] else float("nan")
    failing = [r["name"] for r in rows if r["status"] in ("fail", "not run")]
    if best["role"] == "reference":
        what = f"the reference itself, {best['name']}: no variant within its limits is faster on this machine"
    else:
        what = (f"{describe_row(best)} ({best['precision']}"
                f"{', ' + best['flavour'] + ' flavour' if best.get('flavour') else ''}): mIoU drift "
                f"{best['miou_drift']:+.3f} points (drop limit {best['limit']:g}), {speed:.2f}x the reference's speed")
    spread = fastest.get("latency_iqr_ms") or 0.0
    line = (f"Recommended on this machine: {what}; {best['latency_ms']:.2f} ms median per image over "
            f"{best.get('latency_images')} repetitions (interquartile range {best.get('latency_iqr_ms') or 0:.2f} ms"
            f"{'; ' + str(len(tied) - 1) + ' other row(s) as fast (interquartile ranges overlapping the fastest row, ' + format(spread, '.2f') + ' ms), the smaller drift chosen' if len(tied) > 1 else ''}"
            f") ({machine}).")
    if failing:
        line += f" Not eligible: {', '.join(failing)}."
    return {"name": best["name"], "key": best.get("key"), "path": best.get("path"), "backend": best.get("backend"),
            "backend_options": best.get("backend_options") or {}, "line": line, "speedup_vs_reference": speed,
            "ties": [r["name"] for r in tied if r is not best], "spread_ms": spread,
            "repetitions": best.get("latency_images")}


def exit_code(report: dict) -> int:
    if report["gate"]["offenders"] and any(r["status"] == "fail" and r.get("gated", True) for r in report["rows"]):
        return EXIT_CHECK_FAILED
    if report["gate"]["not_run"]:
        # a variant missing only because TensorRT/CUDA is absent is 3; one the user gave that is tampered or
        # unopenable is a user mistake, 2 (the front door's table)
        missing = all(r.get("missing_dependency") for r in report["rows"] if r["status"] == "not run")
        return EXIT_MISSING_DEPENDENCY if missing else EXIT_USER_ERROR
    return 0


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

        check_distinct([], [(name, out_dir / name) for name in ("report.md", "report.html")]
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
