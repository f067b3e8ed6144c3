"""Build a TensorRT engine from one of the project's ONNX files, and write its manifest.

    python engines/build_engine.py --onnx model.fp16.onnx            # or: python -m engines.build_engine ...
        [-o model.fp16.engine] [--workspace MiB] [--timing-cache FILE | --no-timing-cache]
        [--opt-level 0-5] [--dla-core N] [--fp16-flag] [--version-compatible] [--batch B] [--strict-dla] [--tf32]

- Strongly typed builds from model.onnx (FP32), model.fp16.onnx and model.int8.onnx
  (the tensorrt flavour) on TensorRT 10 and 11: precision comes from the file.
- ``--fp16-flag`` (TensorRT 10 only): a weakly typed network over model.onnx with
  BuilderFlag.FP16; refused on TensorRT 11, which removed the flag.
- ``--dla-core N``: DLA with GPU fallback (Jetson, TensorRT 10; 11.4.1+ on AGX Orin).
- The ONNX file is checked first (``engines.check`` for trt10 / trt11 / dla); a
  problem stops the build. Parser errors are printed one per line with the node name.
- Workspace: ``--workspace`` MiB, default 1024 on Jetson (builds there run out of
  memory without a cap; CPU and GPU share it) and 4096 on desktop GPUs.
- Timing cache: default ``tensorrt.timing.cache`` beside the engine; loaded when it
  exists, saved (atomically) after the build, so later builds reuse measured tactics.
- Writes the engine atomically and its manifest (``<engine>.json``): TensorRT
  version, GPU name and compute capability (and which library reported them),
  precision, the parent ONNX path and sha256, the build options, per-layer precision
  counts from the engine inspector, and classes/palette/input size/mean/std copied
  from the ONNX manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python engines/build_engine.py`: import the package from the repo root
    _root = str(Path(__file__).resolve().parent.parent)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _root  # do not let engines/*.py shadow top-level modules
    else:
        sys.path.insert(0, _root)

from cpnet.runtime import UserError, atomic_write_bytes, read_manifest, sha256_file, versions, write_manifest  # noqa: E402
from engines import check as checker  # noqa: E402
from engines import trt as trtlayer  # noqa: E402

COPIED_KEYS = ("model", "config", "classes", "palette", "input_size", "mean", "std", "channel_order",
               "input", "output", "calibration")
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


def engine_manifest(onnx_path: Path, onnx_manifest: dict, engine_path: Path, trt_version: str, gpu: dict | None,
                    opts: trtlayer.BuildOptions, strongly_typed: bool, layer_summary: dict | None) -> dict:
    precision = "fp16" if opts.fp16_flag else onnx_manifest.get("precision", "fp32")
    m = {k: onnx_manifest[k] for k in COPIED_KEYS if k in onnx_manifest}
    m.update({
        "kind": "engine",
        "precision": precision,
        "precision_mode": "fp16-flag" if opts.fp16_flag else "strongly-typed",
        "tensorrt": {"version": trt_version, "major": trtlayer.major_of(trt_version),
                     "strongly_typed": strongly_typed, "version_compatible": bool(opts.version_compatible)},
        "gpu": gpu,
        "device": f"dla:{opts.dla_core}" if opts.dla_core is not None else "gpu",
        "build_options": opts.to_manifest(),
        "layer_precisions": layer_summary,
        "parent": {"path": str(onnx_path), "sha256": sha256_file(onnx_path)},
        "sha256": sha256_file(engine_path),
        "versions": versions(),
    })
    return m


def build(opts: trtlayer.BuildOptions, verbose: bool = False, emit=print) -> Path:
    onnx_path = Path(opts.onnx)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    onnx_manifest = read_manifest(onnx_path, required=True)
    if trtlayer.is_cpu_flavour(onnx_manifest):  # refuse before needing TensorRT
        raise UserError(trtlayer.cpu_flavour_message(str(onnx_path)))
    out = Path(opts.output) if opts.output else default_output(onnx_path, opts.fp16_flag, opts.dla_core)
    if opts.timing_cache is None:
        opts.timing_cache = str(out.with_name(DEFAULT_CACHE_NAME))
    elif opts.timing_cache == "":
        opts.timing_cache = None
    opts.output = str(out)

    trt = trtlayer.import_tensorrt()
    trt_version = trt.__version__
    target = trtlayer.validate_build_options(opts, trt_version, onnx_manifest)
    if opts.workspace_mib is None:
        opts.workspace_mib = trtlayer.default_workspace_mib()  # recorded in the manifest as used

    emit(f"[check] {onnx_path} for {target}")
    result = checker.check_file(onnx_path, target=target, strict_dla=opts.strict_dla, assume_fp16=opts.fp16_flag)
    for p in result.problems:
        emit(p.format(str(onnx_path)))
    if not result.ok:
        raise UserError(f"engines.check found {len(result.errors)} error(s) in {onnx_path} for {target}; "
                        f"fix them before building")

    gpu = trtlayer.gpu_info()
    if gpu is None:
        trtlayer.import_pycuda()  # gives the precise one-line reason (no PyCUDA / no device)
        gpu = trtlayer.gpu_info()
        if gpu is None:
            raise trtlayer.MissingDependency("no CUDA GPU visible to pycuda, cuda-python or torch.cuda")
    emit(f"[build] TensorRT {trt_version} on {gpu['name']} (sm {gpu['compute_capability']}, via {gpu['source']})")

    size = onnx_manifest.get("input_size")
    input_size = (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) and len(size) == 2 else None
    try:
        res = trtlayer.build_serialized_engine(trt, opts, input_size, emit=emit, verbose=verbose)
    except UserError:
        raise
    except Exception as e:  # pybind errors from TensorRT: keep them to one line
        raise UserError(f"TensorRT build failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    for n in res.notes:
        emit(f"[build] {n}")

    atomic_write_bytes(out, res.engine)
    if opts.timing_cache and res.timing_cache:
        atomic_write_bytes(opts.timing_cache, res.timing_cache)
        emit(f"[build] timing cache saved: {opts.timing_cache} ({len(res.timing_cache)} bytes)")

    summary = None
    try:
        _, engine = trtlayer.deserialize_engine(trt, res.engine, str(out))
        summary = trtlayer.summarize_layer_precisions(trtlayer.engine_info_json(trt, engine))
        del engine
    except UserError:
        raise
    except Exception as e:
        emit(f"[build] warning: engine inspector unavailable ({type(e).__name__}: {e}); no per-layer summary")

    manifest = engine_manifest(onnx_path, onnx_manifest, out, trt_version, gpu, opts, res.strongly_typed, summary)
    write_manifest(out, manifest)
    counts = ", ".join(f"{k} {v}" for k, v in (summary or {}).get("by_precision", {}).items()) or "n/a"
    emit(f"[build] wrote {out} ({out.stat().st_size / 2**20:.1f} MiB; layers by precision: {counts})")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python engines/build_engine.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True, help="model.onnx, model.fp16.onnx or model.int8.onnx (tensorrt flavour)")
    ap.add_argument("-o", "--output", help="engine path (default: beside the ONNX file, .onnx -> .engine)")
    ap.add_argument("--workspace", type=int, metavar="MiB",
                    help=f"builder workspace limit (default {trtlayer.DEFAULT_WORKSPACE_MIB_JETSON} on Jetson, "
                         f"{trtlayer.DEFAULT_WORKSPACE_MIB_DESKTOP} elsewhere)")
    ap.add_argument("--timing-cache", metavar="FILE", help=f"timing cache (default: {DEFAULT_CACHE_NAME} beside the engine)")
    ap.add_argument("--no-timing-cache", action="store_true", help="build without a timing cache")
    ap.add_argument("--opt-level", type=int, metavar="N", help="builder optimization level 0-5 (TensorRT default 3)")
    ap.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N with GPU fallback (Jetson)")
    ap.add_argument("--strict-dla", action="store_true", help="with --dla-core: no GPU fallback; check fails on "
                                                              "any layer DLA cannot run")
    ap.add_argument("--fp16-flag", action="store_true",
                    help="TensorRT 10 only: weakly typed build of model.onnx with BuilderFlag.FP16")
    ap.add_argument("--version-compatible", action="store_true",
                    help="BuilderFlag.VERSION_COMPATIBLE: the engine also runs on newer TensorRT of the same major")
    ap.add_argument("--tf32", action="store_true",
                    help="allow TF32 for FP32 layers (Ampere+; faster, about FP16-like mantissa); default off")
    ap.add_argument("--batch", type=int, default=1, help="max batch for a dynamic-batch ONNX file (default 1)")
    ap.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    opts = trtlayer.BuildOptions(
        onnx=args.onnx, output=args.output, workspace_mib=args.workspace,
        timing_cache="" if args.no_timing_cache else args.timing_cache, opt_level=args.opt_level,
        dla_core=args.dla_core, fp16_flag=args.fp16_flag, version_compatible=args.version_compatible,
        batch=args.batch, strict_dla=args.strict_dla, gpu_fallback=not args.strict_dla, tf32=args.tf32)
    try:
        build(opts, verbose=args.verbose)
    except (UserError, checker.CheckError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
