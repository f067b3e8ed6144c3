"""Build a TensorRT engine from one of the project's ONNX files, and write its manifest.

    cpnet build model.fp16.onnx                 # or: python engines/build_engine.py ..., python -m engines.build_engine ...
        [-o model.fp16.engine] [--workspace MiB] [--timing-cache FILE | --no-timing-cache] [--opt-level 0-5]
        [--dla-core N [--strict-dla]] [--fp16-flag] [--version-compatible] [--hardware-compatibility ampere+]
        [--batch B [--opt-batch B]] [--tf32]

- Strongly typed builds from model.onnx (FP32), model.fp16.onnx and model.int8.onnx
  (the tensorrt flavour) on TensorRT 10 and 11: precision comes from the file.
- ``--fp16-flag`` (TensorRT 10 only): a weakly typed network over model.onnx with
  BuilderFlag.FP16; refused on TensorRT 11, which removed the flag.
- ``--dla-core N``: DLA as NVIDIA documents it per version (``engines.trt.dla``): TensorRT 10.0-10.7 (JetPack 6)
  weakly typed with the FP16 flag (+ INT8 for model.int8.onnx) and GPU fallback; 11.4.1 on Jetson AGX Orin
  (JetPack 7.2.2+) strongly typed with GPU fallback; Windows on ARM (11.4.0+) strongly typed without
  fallback; other versions are refused in one line. ``--strict-dla``: the build fails when any layer
  runs on the GPU, naming them (the inspector says), and writes nothing.
- Where every layer runs: the engine inspector's JSON is written beside the engine as
  ``<engine>.layers.json``; its counts per device and precision, the GPU layers of a DLA build and the
  reformatting layers go into the manifest (``layer_placement``) and the build's last line.
- ``--version-compatible``: the engine also runs on newer TensorRT of its major (and a
  TensorRT 10 one on 11); ``--hardware-compatibility ampere+``: on any Ampere-or-newer GPU.
- The ONNX file is checked first (``engines.check`` against the running TensorRT's own
  operator table, or DLA's rules); a problem stops the build. Parser errors are reported
  one per line with the node name.
- Workspace: ``--workspace`` MiB, default 1024 on Jetson (builds there run out of
  memory without a cap; CPU and GPU share it) and 4096 on desktop GPUs.
- Timing cache: default ``tensorrt.timing.cache`` beside the engine; loaded when it
  exists, and after the build merged into what the file holds by then and saved
  atomically, under ``<cache>.lock`` (``cpnet.runtime.files.file_lock``), so builds
  running at once keep each other's timings and later builds reuse measured tactics.
- A dynamic-batch file gets one optimization profile: batch 1 to ``--batch``, kernels
  tuned for ``--opt-batch`` (default 1: the batch almost every call uses). DLA needs
  min = opt = max: its files are static (the check refuses dynamic dims for DLA).
- The new engine is deserialized in memory with the runtime settings its build options
  imply (host code for version-compatible plans, the DLA core) before anything is
  written: an engine that does not load is never written, and an old manifest is never
  left beside a new engine. Then the engine is written atomically, and its manifest
  (``<engine>.json``): its sha256 (checked whenever it is opened), TensorRT version, GPU
  name and compute capability (and which library reported them), precision, the parent
  ONNX path and sha256, the build options, per-layer precision counts from the engine
  inspector, and classes/palette/input size/mean/std copied from the ONNX manifest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python engines/build_engine.py`: import the package from the repo root
    _root = str(Path(__file__).resolve().parent.parent)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _root  # do not let engines/*.py shadow top-level modules
    else:
        sys.path.insert(0, _root)

from cpnet.runtime import (CheckFailed, MissingDependency, UserError, atomic_write_bytes,  # noqa: E402
                           manifest_path, read_manifest, write_manifest)
from cpnet.runtime.files import check_output  # noqa: E402
from cpnet.runtime.log import get_logger  # noqa: E402
from cpnet.runtime.manifest import verify_sha256  # noqa: E402
from engines import check as checker  # noqa: E402
from engines.layers import placement as engine_layers  # noqa: E402
from engines.trt import dla  # noqa: E402
from engines.trt.build import build_serialized_engine  # noqa: E402
from engines.trt.engine import deserialize_engine, engine_info_json  # noqa: E402
from engines.trt.hardware import (DEFAULT_WORKSPACE_MIB_DESKTOP, DEFAULT_WORKSPACE_MIB_JETSON,  # noqa: E402
                                  default_workspace_mib, gpu_info)
from engines.trt.imports import import_pycuda, import_tensorrt  # noqa: E402
from engines.trt.manifest import DeserializeOptions, engine_manifest, sha256_bytes  # noqa: E402
from engines.trt.options import (HARDWARE_LEVELS, BuildOptions, cpu_flavour_message, is_cpu_flavour,  # noqa: E402
                                 validate_build_options, validate_hardware_compatibility)

log = get_logger("engines")

DEFAULT_CACHE_NAME = "tensorrt.timing.cache"


def default_output(onnx: Path, fp16_flag: bool = False, dla_core: int | None = None) -> Path:
    """model.onnx -> model.engine, model.fp16.onnx -> model.fp16.engine; --fp16-flag -> model.fp16flag.engine;
    DLA -> model.<...>.dla0.engine."""
    stem = onnx.name[:-5] if onnx.name.lower().endswith(".onnx") else onnx.stem
    parts = [stem]
    if fp16_flag:
        parts.append("fp16flag")
    if dla_core is not None:
        parts.append(f"dla{dla_core}")
    return onnx.with_name(".".join(parts) + ".engine")


def prepare(opts: BuildOptions) -> tuple[Path, dict]:
    """Check what can be checked without TensorRT; fill in the output and timing-cache paths. (onnx path, manifest)."""
    onnx_path = Path(opts.onnx)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    onnx_manifest = read_manifest(onnx_path, required=True)
    verify_sha256(onnx_path, onnx_manifest, "the ONNX file")  # before TensorRT's parser reads a byte of it
    if is_cpu_flavour(onnx_manifest):  # refuse before needing TensorRT
        raise UserError(cpu_flavour_message(str(onnx_path)))
    validate_hardware_compatibility(opts, gpu=None, jetson=False)  # DLA + hardware compatibility, etc.
    out = Path(opts.output) if opts.output else default_output(onnx_path, opts.fp16_flag, opts.dla_core)
    if out.suffix.lower() not in (".engine", ".plan", ".trt"):
        raise UserError(f"{out}: an engine file ends in .engine, .plan or .trt")
    check_output(out, what="engine")
    if opts.timing_cache is None:
        opts.timing_cache = str(out.with_name(DEFAULT_CACHE_NAME))
    elif opts.timing_cache == "":
        opts.timing_cache = None
    opts.output = str(out)
    return onnx_path, onnx_manifest


def load_check(trt, engine_bytes: bytes, opts: BuildOptions, out: Path) -> str | None:
    """Deserialize the new engine the way it will be opened (host code for version-compatible plans, the DLA
    core) and return the engine inspector's JSON (None where the inspector fails); a plan that does not load
    is a UserError and nothing is written."""
    options = DeserializeOptions.from_build_options(opts)
    try:
        _, engine = deserialize_engine(trt, engine_bytes, str(out), options=options, verbose=opts.verbose)
    except UserError as e:
        raise UserError(f"the engine TensorRT just built does not load ({e}); nothing written") from None
    try:
        info = engine_info_json(trt, engine)
        json.loads(info)  # a non-JSON answer is no layer information
        return info
    except Exception as e:
        log.warning(f"engine inspector unavailable ({type(e).__name__}: {e}); no per-layer summary")
        return None
    finally:
        del engine


def write_engine(out: Path, engine_bytes: bytes, manifest: dict, layers_json: str | None = None) -> None:
    """The engine, its layer file (``<engine>.layers.json``) and then its manifest, each atomically; a stale
    manifest and layer file are removed first, so a crash in between leaves an engine without a manifest
    (refused when opened), never a new engine beside an old one's files."""
    stale = manifest_path(out)
    for old in (stale, engine_layers.layers_path(out)):
        if old.exists():
            old.unlink()
    atomic_write_bytes(out, engine_bytes)
    if layers_json is not None:
        engine_layers.write_layers(out, layers_json)
    write_manifest(out, manifest)


def fallback_check(placement: dict | None, opts: BuildOptions, trt_version: str) -> None:
    """--strict-dla: a DLA engine with any layer on the GPU is refused, naming the layers; nothing is written."""
    if opts.dla_core is None or not opts.strict_dla:
        return
    if placement is None:
        raise CheckFailed("--strict-dla: the engine inspector gave no layer information, so where the layers run "
                          "is unknown; nothing written")
    names = placement["gpu_layers"]
    if names:
        raise CheckFailed(f"--strict-dla: {len(names)} layer(s) fell back to the GPU on TensorRT {trt_version}: "
                          f"{', '.join(names)}; nothing written (drop --strict-dla to keep GPU fallback)")


def build(opts: BuildOptions) -> Path:
    onnx_path, onnx_manifest = prepare(opts)
    out = Path(opts.output)

    trt = import_tensorrt()
    trt_version = trt.__version__
    gpu = gpu_info()
    if gpu is None:
        import_pycuda()  # gives the precise one-line reason (no PyCUDA / no device)
        gpu = gpu_info()
        if gpu is None:
            raise MissingDependency("no CUDA GPU visible to pycuda, cuda-python or torch.cuda")
    target = validate_build_options(opts, trt_version, onnx_manifest, gpu=gpu)
    if opts.workspace_mib is None:
        opts.workspace_mib = default_workspace_mib()  # recorded in the manifest as used

    # the running TensorRT's own table (DLA: the DLA rules on top of it)
    log.info(f"checking {onnx_path} for {target} (TensorRT {trt_version})")
    # 10.x DLA builds set the FP16 flag themselves (engines.trt.dla), so an FP32 file is fine there
    dla_flags = opts.dla_core is not None and not dla.dla_path(trt_version).strongly_typed
    check_options = checker.CheckOptions(target=target, strict_dla=opts.strict_dla,
                                         assume_fp16=opts.fp16_flag or dla_flags, trt_version=trt_version)
    result = checker.check_file(onnx_path, options=check_options)
    for p in result.problems:
        (log.warning if p.level == "warning" else log.error)(p.format(str(onnx_path)))
    if not result.ok:
        raise CheckFailed(f"engines.check found {len(result.errors)} error(s) in {onnx_path} for {target}; "
                          f"fix them before building")
    log.info(f"TensorRT {trt_version} on {gpu['name']} (sm {gpu['compute_capability']}, via {gpu['source']})")

    size = onnx_manifest.get("input_size")
    input_size = (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) and len(size) == 2 else None
    try:
        res = build_serialized_engine(trt, opts, input_size, precision=onnx_manifest.get("precision"))
    except UserError:
        raise
    except Exception as e:  # pybind errors from TensorRT: keep them to one line
        raise UserError(f"TensorRT build failed: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    for n in res.notes:
        log.info(n)

    info = load_check(trt, res.engine, opts, out)
    summary = engine_layers.summarize_layer_precisions(info) if info is not None else None
    placement = engine_layers.placement(info, dla=opts.dla_core is not None) if info is not None else None
    fallback_check(placement, opts, trt_version)
    manifest = engine_manifest(onnx_path, onnx_manifest, trt_version, gpu, opts, res.strongly_typed, summary,
                               sha256_bytes(res.engine), placement,
                               engine_layers.layers_path(out).name if info is not None else None)
    write_engine(out, res.engine, manifest, info)
    if res.save_timing_cache is not None:
        n = res.save_timing_cache()
        log.info(f"timing cache saved: {opts.timing_cache} ({n} bytes, merged with what other builds wrote)")
    counts = ", ".join(f"{k} {v}" for k, v in (summary or {}).get("by_precision", {}).items()) or "n/a"
    log.info(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; layers by precision: {counts})")
    if placement is not None:
        log.info(f"where the layers run: {engine_layers.summary_line(placement, opts.dla_core is not None)} "
                 f"({engine_layers.layers_path(out).name})")
    return out


# ---------------------------------------------------------------------------------------------
# the `cpnet build` verb

DESCRIPTION = """Build a TensorRT engine from model.onnx, model.fp16.onnx or model.int8.onnx (needs TensorRT and a GPU).

The file is checked against the running TensorRT's operator table first; the engine is
written only after it deserializes, with a manifest holding its sha256, the TensorRT
version, the GPU and the build options. Exit 3 where TensorRT or a GPU is missing."""

EXAMPLES = """cpnet build runs/quickstart/export/model.fp16.onnx
cpnet build model.int8.onnx --timing-cache tensorrt.timing.cache
cpnet build model.onnx --fp16-flag
cpnet build model.fp16.onnx --dla-core 0
cpnet build model.fp16.onnx --version-compatible --hardware-compatibility ampere+"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_input(p, "ONNX",
                       "model.onnx, model.fp16.onnx or model.int8.onnx (tensorrt flavour), with its manifest")
    cli_args.add_output(p, "engine path (default: beside the ONNX file, .onnx -> .engine)")
    p.add_argument("--workspace", type=cli_args.positive_int, metavar="MiB",
                   help=f"builder workspace limit in MiB (default {DEFAULT_WORKSPACE_MIB_JETSON} on Jetson, "
                        f"{DEFAULT_WORKSPACE_MIB_DESKTOP} elsewhere)")
    p.add_argument("--timing-cache", metavar="FILE", help=f"timing cache (default: {DEFAULT_CACHE_NAME} beside the engine)")
    p.add_argument("--no-timing-cache", action="store_true", help="build without a timing cache")
    p.add_argument("--opt-level", type=int, metavar="N", help="builder optimization level 0-5 (TensorRT default 3)")
    p.add_argument("--batch", type=cli_args.positive_int, default=1,
                   help="max batch for a dynamic-batch ONNX file (default 1)")
    p.add_argument("--opt-batch", type=cli_args.positive_int, metavar="B",
                   help="the batch kernels are tuned for, 1..--batch (default 1: what most calls use)")
    g = p.add_argument_group("precision and portability")
    g.add_argument("--fp16-flag", action="store_true",
                   help="TensorRT 10 only: weakly typed build of model.onnx with BuilderFlag.FP16")
    g.add_argument("--tf32", action="store_true",
                   help="allow TF32 for FP32 layers (Ampere+; faster, about FP16-like mantissa); default off")
    g.add_argument("--version-compatible", action="store_true",
                   help="BuilderFlag.VERSION_COMPATIBLE: the engine also runs on newer TensorRT of the same major "
                        "(and a TensorRT 10 engine on 11); it embeds the lean runtime")
    g.add_argument("--hardware-compatibility", choices=tuple(HARDWARE_LEVELS), default="none",
                   help="ampere+: the engine runs on any Ampere-or-newer GPU (sm 8.0+, built on one); same-cc: on "
                        "any GPU of this compute capability; default none (this GPU model); not for DLA or Jetson")
    g = p.add_argument_group("DLA (Jetson)")
    g.add_argument("--dla-core", type=int, metavar="N",
                   help="build for DLA core N (TensorRT 10.0-10.7, 11.4.1 on Jetson AGX Orin, Windows on ARM 11.4+)")
    g.add_argument("--strict-dla", action="store_true",
                   help="with --dla-core: fail (writing nothing) when any layer runs on the GPU, naming them; "
                        "the check fails on any node DLA cannot run")
    g = p.add_argument_group("runtime")
    g.add_argument("--no-progress", action="store_true", help="no per-phase build progress lines")


def options_from(args) -> BuildOptions:
    return BuildOptions(
        onnx=args.input, output=args.output, workspace_mib=args.workspace,
        timing_cache="" if args.no_timing_cache else args.timing_cache, opt_level=args.opt_level,
        dla_core=args.dla_core, fp16_flag=args.fp16_flag, version_compatible=args.version_compatible,
        hardware_compatibility=args.hardware_compatibility, batch=args.batch, opt_batch=args.opt_batch, strict_dla=args.strict_dla,
        gpu_fallback=True, tf32=args.tf32, verbose=args.verbose, progress=not args.no_progress)


def run(args) -> int:
    if args.no_timing_cache and args.timing_cache:
        raise UserError("--timing-cache and --no-timing-cache contradict each other; pass one")
    print(build(options_from(args)))
    return 0


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    prog = "python engines/build_engine.py" if __name__ == "__main__" and __package__ in (None, "") else None
    return run_verb("engines.build_engine", argv, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
