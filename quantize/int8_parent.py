"""The FP32 parent made ready for INT8 (:class:`Int8Parent`): checked, pre-processed, calibrated (statistics
cached), ready to build INT8 candidates from.

    with prepare("runs/q/export/model.onnx", Int8Options(method="percentile"),
                 CalibrationOptions(data="data/synthetic", num_images=200)) as prep:
        prep.build(prep.workdir / "candidate.onnx", exclude=["/head/classifier/Conv"])
        ref = prep.reference()                     # FP32 logits on the first --eval-images images
        ref.measure(prep.workdir / "candidate.onnx").disagreement_percent

:func:`prepare` is what ``cpnet int8`` and ``cpnet sensitivity`` share: it checks the
parent (:mod:`quantize.parent`), runs ORT's quantization pre-processing on a copy
(:func:`quantize.qdq.preprocess_model`), checks ``--keep-float`` names against it
(before any image is read) and gets activation statistics (:mod:`quantize.calibrate`).

The statistics are saved beside the output (``<parent stem>.calib.npz``, e.g.
``model.calib.npz``) keyed by the parent's sha256 and the image set (the files
picked, their sizes and times, the seed, the preprocessing), and reused by later
runs with another ``--method`` or ``--flavour``, and by ``cpnet sensitivity``: no
second pass over the images. A ranges file given with ``--ranges`` is used even
when its image set differs (a file for another model is refused).

:class:`Int8Options` is how an INT8 model is made; :func:`add_int8_arguments` adds
the flags both commands take and :func:`int8_options` reads them back.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cpnet.runtime import UserError
from cpnet.runtime.files import check_output, scratch_dir
from cpnet.runtime.log import get_logger
from cpnet.runtime.options import CalibrationOptions, RuntimeOptions

from . import calibrate as cal
from . import high_precision, qdq
from .calib_data import count_calibration_images, iter_calibration_images, resolve_calibration_source, select_paths
from .logit_drift import Reference, reference
from .parent import check_keep_float, derived_path, load_parent

DEFAULT_NUM_IMAGES = 200
DEFAULT_EVAL_IMAGES = 16
DEFAULT_MAX_KEEP_FLOAT = 8
HIGH_PRECISIONS = ("fp16", "fp32")
DEFAULT_AUTO_TARGET = 0.5   # % of pixels: --keep-float auto's aim when no --max-disagreement is given
REFERENCE_BUDGET = 1 << 30  # bytes of FP32 logits and images kept for the drift measurement

log = get_logger("calibrate")


@dataclass(frozen=True)
class Int8Options:
    """How an INT8 model is made.

    ``flavour`` (tensorrt|cpu, see :mod:`quantize.qdq`); ``method`` (entropy|percentile|minmax) and
    ``percentile`` choose the ranges; ``keep_float`` node names stay float, ``auto_keep_float`` adds the
    most sensitive nodes until ``max_disagreement`` holds (at most ``max_keep_float`` of them);
    ``max_disagreement`` (percent of pixels whose class differs from FP32's on the first ``eval_images``
    calibration images) is the limit the result must keep: None = measured and recorded, no limit
    (``auto_keep_float`` then aims at ``DEFAULT_AUTO_TARGET``); ``ranges_file`` / ``recalibrate``:
    which statistics file to use, and whether to collect them again anyway.
    """

    flavour: str = "tensorrt"
    method: str = "entropy"
    percentile: float = 99.999
    keep_float: tuple[str, ...] = ()
    auto_keep_float: bool = False
    max_disagreement: float | None = None
    max_keep_float: int = DEFAULT_MAX_KEEP_FLOAT
    eval_images: int = DEFAULT_EVAL_IMAGES
    ranges_file: str | None = None
    recalibrate: bool = False
    high_precision: str | None = None

    @property
    def float_precision(self) -> str:
        """What the layers left unquantized run in: ``high_precision``, else fp16 for the tensorrt flavour (NVIDIA's
        INT8-in-FP16 recipe) and fp32 for the cpu flavour (ONNX Runtime's INT8 kernels take and give FP32)."""
        return self.high_precision or ("fp16" if self.flavour == "tensorrt" else "fp32")

    def check(self) -> None:
        """One UserError line for an option out of range (the command line's types catch most earlier)."""
        if self.method not in cal.METHODS:
            raise UserError(f"--method must be one of {', '.join(cal.METHODS)}, got {self.method!r}")
        if self.flavour not in qdq.FLAVOURS:
            raise UserError(f"--flavour must be one of {', '.join(qdq.FLAVOURS)}, got {self.flavour!r}")
        if not 0.0 < self.percentile <= 100.0:
            raise UserError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.max_disagreement is not None and not 0.0 <= self.max_disagreement <= 100.0:
            raise UserError(f"--max-disagreement is a percentage, 0 to 100, got {self.max_disagreement}")
        if self.eval_images < 1:
            raise UserError(f"--eval-images must be at least 1, got {self.eval_images}")
        if self.high_precision not in (None, *HIGH_PRECISIONS):
            raise UserError(f"--high-precision must be one of {', '.join(HIGH_PRECISIONS)}, got {self.high_precision!r}")
        if self.flavour == "cpu" and self.high_precision == "fp16":
            raise UserError("--high-precision fp16 is for the tensorrt flavour: ONNX Runtime's INT8 kernels "
                            "(the cpu flavour) take and give FP32; drop the flag or use --flavour tensorrt")

    @property
    def limit(self) -> float | None:
        """The disagreement limit in force: the one given, else auto keep-float's aim, else none."""
        if self.max_disagreement is not None:
            return float(self.max_disagreement)
        return DEFAULT_AUTO_TARGET if self.auto_keep_float else None


# --- the calibration cache ---------------------------------------------------------------------

def _fingerprint_files(paths: Sequence[Path]) -> str:
    """A cheap fingerprint of a list of files: names, sizes and modification times (no reading)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def image_set_key(calibration: CalibrationOptions, manifest: dict) -> dict:
    """What identifies a calibration image set: the files picked (names, sizes, mtimes), count, seed, preprocessing.

    The source is resolved to its candidate files (a listing, no image is read), so a
    missing folder or dataset fails here, before any work.
    """
    n = int(calibration.num_images)
    src = resolve_calibration_source(calibration.data, manifest, calibration.data_root)
    picked = select_paths(src.paths, n, calibration.seed)
    return {
        "source": src.description,
        "files": min(len(picked), n),
        "files_fingerprint": _fingerprint_files(picked[:n]),
        "num_images": n,
        "seed": int(calibration.seed),
        "preprocess": {k: manifest.get(k) for k in ("input_size", "mean", "std", "channel_order")},
    }


def default_ranges_file(parent: Path, out_dir: Path) -> Path:
    return derived_path(parent, ".calib.npz", out_dir)


def _is_ranges_file(path: Path) -> bool:
    """Whether ``path`` is a ranges file cpnet wrote (one it may replace), not someone else's file of that name."""
    try:
        cal.RangeStats.load(path)
    except UserError:
        return False
    return True


def _cached_stats(rfile: Path, explicit: bool, key: dict, wanted: set[str]) -> "cal.RangeStats | None":
    """The statistics saved in ``rfile`` when they fit this model and image set, else None (with why, logged).

    An explicit ``--ranges`` file that is unreadable or made on another model is an error; one made on
    another image set is used (with a note).
    """
    try:
        cached = cal.RangeStats.load(rfile)
    except UserError as e:
        if explicit:
            raise
        log.warning(f"ignoring {rfile} ({str(e).split(': ', 1)[-1]}); collecting new ranges")
        return None
    ckey = cached.meta.get("key", {})
    missing = wanted - set(cached.names)
    if ckey.get("parent_sha256") != key["parent_sha256"]:
        if explicit:
            raise UserError(f"{rfile}: these ranges were collected on another model "
                            f"(sha256 {str(ckey.get('parent_sha256'))[:12]}..., "
                            f"this one {key['parent_sha256'][:12]}...)")
        log.info(f"{rfile} is for another model; collecting new ranges")
    elif missing:
        log.info(f"{rfile} lacks {len(missing)} of this model's tensors; collecting new ranges")
    elif ckey != key and not explicit:
        diff = sorted(k for k in set(key) | set(ckey) if key.get(k) != ckey.get(k))
        log.info(f"{rfile} was collected on another image set ({', '.join(diff)} differ); collecting new ranges")
    else:
        note = "" if ckey == key else " (given with --ranges; its image set differs from these options)"
        log.info(f"reused saved ranges from {rfile} ({cached.meta.get('images')} images, no pass over the data)"
                 f"{note}")
        return cached
    return None


def manifests_naming(rfile: Path) -> list[Path]:
    """The INT8 artifacts beside ``rfile`` whose manifest's calibration record names it as their ranges file."""
    import json

    found = []
    for m in sorted(rfile.parent.glob("*.json")):
        try:
            record = json.loads(m.read_text(encoding="utf-8")).get("calibration") or {}
            named = record.get("ranges_file")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(named, str) and (m.parent / named).resolve() == rfile.resolve():
            found.append(m.with_suffix(""))
    return found


# --- the prepared parent ---------------------------------------------------------------------

@dataclass
class Int8Parent:
    """A parent model ready to quantize: pre-processed copy, calibration statistics, what they came from."""

    parent: Path
    manifest: dict
    parent_sha256: str
    workdir: Path
    pre_path: Path
    stats: cal.RangeStats
    ranges_file: Path
    reused: bool
    description: str
    num_images: int                  # how many images the ranges came from
    options: Int8Options
    calibration: CalibrationOptions  # as asked
    threads: int | None = None
    _scratch: contextlib.ExitStack | None = field(default=None, repr=False)  # removes ``workdir``
    precision_record: dict | None = None  # what the last build's float part runs in (the manifest's high_precision)

    def cleanup(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    def __enter__(self) -> "Int8Parent":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def images(self, limit: int | None = None) -> Iterable[np.ndarray]:
        """The calibration images again (preprocessed, one at a time), the first ``limit`` of them."""
        c = self.calibration
        it = iter_calibration_images(c.data, self.manifest, c.num_images, data_root=c.data_root, seed=c.seed)
        for i, x in enumerate(it):
            if limit is not None and i >= limit:
                break
            yield x

    def ranges(self) -> dict[str, tuple[float, float]]:
        o = self.options
        return self.stats.ranges(o.method, symmetric=o.flavour == "tensorrt", percentile=o.percentile)

    def build(self, out_path: "str | Path", exclude: Sequence[str] = (), include: Sequence[str] | None = None) -> Path:
        """Quantize the parent into ``out_path`` with these options' flavour and ranges (see :func:`qdq.build`),
        in an FP16 graph when the options say so (:mod:`quantize.high_precision`), so what is measured (drift,
        sensitivity, the keep-float search) is the file that is written; its record is ``precision_record``."""
        import onnx

        path = qdq.build(self.pre_path, out_path, self.ranges(), self.options.flavour, exclude, include)
        if self.options.float_precision != "fp16":
            self.precision_record = {"dtype": "fp32"}
            return path
        model = onnx.load(str(path))
        model, record = high_precision.to_fp16(model, keep_float=self._fp16_overflow_nodes(model))
        onnx.save(model, str(path))
        self.precision_record = {"dtype": "fp16", **record}
        return path

    def _fp16_overflow_nodes(self, model) -> list[str]:
        """Nodes that stay FP32 in the FP16 graph: producers and readers of a tensor whose calibrated range
        passes FP16's (quantize.fp16's --range-limit), so no such value ever passes through FP16."""
        from .fp16 import Fp16Options

        limit = Fp16Options().range_limit
        big = {n for n, (lo, hi) in self.stats.ranges("minmax", symmetric=True).items() if max(abs(lo), abs(hi)) > limit}
        return [n.name for n in model.graph.node if big & (set(n.input) | set(n.output))]

    def float_group(self, names: Sequence[str]) -> list[str]:
        """The nodes that stay float when ``names`` do (see :func:`qdq.float_group`)."""
        import onnx

        return qdq.float_group(onnx.load(str(self.pre_path)), names)

    def reference(self, eval_images: int | None = None) -> Reference:
        """FP32 logits of the parent on the first ``eval_images`` (default: the options') calibration images."""
        n = max(1, eval_images or self.options.eval_images)
        return reference(self.parent, self.images(limit=n), self.threads, budget_bytes=REFERENCE_BUDGET,
                         what=self.description)


def prepare(onnx_path: "str | Path", options: Int8Options = Int8Options(),
            calibration: CalibrationOptions = CalibrationOptions(num_images=DEFAULT_NUM_IMAGES),
            runtime: RuntimeOptions = RuntimeOptions(), out_dir: "str | Path | None" = None,
            replace_named: bool = True) -> Int8Parent:
    """Check the parent, pre-process it, check ``options.keep_float`` names, and get calibration statistics
    (cached or collected); ``out_dir`` is where the statistics file goes by default (default: beside the parent).
    ``replace_named=False`` (cpnet sensitivity): a ranges file that an INT8 model's manifest names is never
    replaced; new statistics then stay in the work folder."""
    import onnx

    options.check()
    parent = load_parent(onnx_path)
    path, manifest = parent.path, parent.manifest
    parent.model = None  # the pre-processed copy is what is quantized
    if calibration.num_images < 1:
        raise UserError(f"--num-images must be at least 1, got {calibration.num_images}")
    key = {"parent_sha256": parent.sha256, **image_set_key(calibration, manifest)}

    scratch = contextlib.ExitStack()  # the work folder: pid-tagged, swept by a later run if this one is killed
    try:
        workdir = scratch.enter_context(scratch_dir("int8"))
        pre_path = qdq.preprocess_model(path, workdir / "pre.onnx")
        pre = onnx.load(str(pre_path))
        check_keep_float(pre, options.keep_float, path, listed=[n for n, _ in qdq.quantizable_nodes(pre)])
        wanted = {n for n, _ in cal.calibration_tensors(pre)}
        del pre
        explicit = options.ranges_file is not None
        rfile = Path(options.ranges_file) if explicit else default_ranges_file(
            path, Path(out_dir) if out_dir is not None else path.parent)
        if not rfile.is_file():
            check_output(rfile, what="calibration ranges file")  # it is written after the pass: check the place now

        stats = None
        if rfile.is_file() and not options.recalibrate:
            stats = _cached_stats(rfile, explicit, key, wanted)
        reused = stats is not None
        if stats is None:
            c = calibration
            total = count_calibration_images(c.data, manifest, c.num_images, data_root=c.data_root)
            images = iter_calibration_images(c.data, manifest, c.num_images, data_root=c.data_root, seed=c.seed)
            log.info(f"running {total} images ({key['source']}) through the model (one pass; ranges saved to {rfile})")
            stats = cal.collect(pre_path, images, total=total, progress=runtime.progress, threads=runtime.threads,
                                meta={"key": key, "parent": str(path)})
            named = [] if replace_named or not rfile.is_file() else manifests_naming(rfile)
            if named:
                log.warning(f"{rfile} is the ranges file of {named[0]}: left as it is (these ranges are not saved)")
                rfile = workdir / rfile.name
            elif rfile.is_file() and not _is_ranges_file(rfile):
                log.warning(f"{rfile} is not a ranges file cpnet made: left as it is (these ranges are not saved; "
                            f"give --ranges FILE to keep them)")
                rfile = workdir / rfile.name
            stats.save(rfile)
        return Int8Parent(parent=path, manifest=manifest, parent_sha256=parent.sha256, workdir=workdir,
                        pre_path=pre_path, stats=stats, ranges_file=rfile, reused=reused, description=key["source"],
                        num_images=int(stats.meta.get("images", calibration.num_images)), options=options,
                        calibration=calibration, threads=runtime.threads, _scratch=scratch)
    except BaseException:
        scratch.close()
        raise


# --- the flags cpnet int8 and cpnet sensitivity share -------------------------------------------

def add_int8_arguments(p) -> None:
    """The input, calibration, range and flavour flags, the drift images and the runtime flags."""
    from cpnet.cli import args as cli_args

    d = Int8Options()
    cli_args.add_input(p, "MODEL.onnx", "the FP32 model made by cpnet export (its manifest beside it)")
    cli_args.add_calibration(p, DEFAULT_NUM_IMAGES)
    g = p.add_argument_group("quantization")
    g.add_argument("--flavour", choices=qdq.FLAVOURS, default=d.flavour,
                   help="tensorrt: symmetric INT8 for TensorRT; cpu: U8S8 for ONNX Runtime on x86 (default tensorrt)")
    g.add_argument("--method", choices=cal.METHODS, default=d.method,
                   help="range method: entropy (KL, TensorRT's), percentile, minmax (default entropy)")
    g.add_argument("--percentile", type=cli_args.percent, default=d.percentile, metavar="PERCENT",
                   help=f"for --method percentile (default {d.percentile})")
    g.add_argument("--ranges", metavar="FILE", default=None,
                   help="calibration ranges file to reuse (or to write, if missing); default <stem>.calib.npz beside "
                        "the output, reused automatically when model and image set match")
    g.add_argument("--recalibrate", action="store_true", help="collect ranges again even if a matching file exists")
    g.add_argument("--eval-images", type=cli_args.positive_int, default=d.eval_images, metavar="N",
                   help=f"calibration images the drift against FP32 is measured on (default {d.eval_images})")
    cli_args.add_runtime(p)


def int8_options(args, **more) -> Int8Options:
    """The :class:`Int8Options` of parsed :func:`add_int8_arguments` flags (and ``more`` fields)."""
    return Int8Options(flavour=args.flavour, method=args.method, percentile=args.percentile,
                       eval_images=args.eval_images, ranges_file=args.ranges, recalibrate=args.recalibrate, **more)
