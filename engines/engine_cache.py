"""TensorRT engines built on first use and reused after: ``engines.open(model.int8.onnx, backend="tensorrt")``.

The cache is ``cpnet build``'s own output: an engine and its manifest, written by
:func:`engines.build_engine.build`, so an engine made by hand with ``cpnet build model.int8.onnx`` is the one
the cache finds, and the other way round. Where:

- beside the ONNX file, at ``cpnet build``'s default name (``model.int8.onnx`` -> ``model.int8.engine``,
  ``model.int8.dla0.engine`` for DLA core 0, ``model.fp16flag.engine`` for TensorRT 10's FP16 flag);
- or in ``cache_dir`` (``--engine-cache DIR``), the same name with the first 12 hex digits of the ONNX file's
  sha256 in it (``model.int8.3f2a9c01b7de.engine``): every run's export folder holds a ``model.int8.onnx``,
  and one cache folder serves them all.

The key is what makes an engine another engine (jetson-inference's ``tensorNet`` keys its cache by model
checksum, TensorRT version, device, precision and batch; torch-tensorrt hashes graph and settings): the ONNX
file's sha256 (its precision is in the file), the TensorRT version, the GPU (name and compute capability) and
every build option that changes the plan (:data:`ENGINE_OPTIONS`: the FP16-flag precision path, DLA core and
fallback, batch and profile, version and hardware compatibility, workspace, optimization level, TF32). The
manifest beside the cached engine records all of them, so a lookup compares the key wanted with the manifest;
a changed key rebuilds, with one log line naming what changed. What the key leaves out (log verbosity,
progress lines, the timing cache's path) does not change the plan.

A fresh engine is only read (no lock, nothing written: a read-only export folder serves). Two processes asking
for a missing or stale engine build it once: the lookup and the build run under
``<engine>.lock`` (:func:`cpnet.runtime.files.file_lock`), and the second process finds the first one's
engine fresh. Builds are atomic (:func:`engines.build_engine.write_engine`). The cache never vouches for the
bytes: the backend opens a cached engine as any engine, checking its sha256 against its manifest first, so a
cached engine changed after it was built is refused (with the command that rebuilds it), not run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cpnet.runtime import MissingDependency, UserError, read_manifest
from cpnet.runtime.files import check_output, file_lock, sha256_file
from cpnet.runtime.log import get_logger

from .trt.hardware import default_workspace_mib, gpu_info
from .trt.imports import import_pycuda, import_tensorrt
from .trt.options import BuildOptions, cpu_flavour_message, is_cpu_flavour

log = get_logger("engines")

#: the build options that change the engine TensorRT makes (BuildOptions fields)
ENGINE_OPTIONS = ("fp16_flag", "dla_core", "strict_dla", "gpu_fallback", "batch", "opt_batch", "version_compatible",
                  "hardware_compatibility", "workspace_mib", "opt_level", "tf32")
#: BuildOptions fields engines.open takes for an ONNX file on the tensorrt backend (the rest are the cache's)
OPEN_OPTIONS = ENGINE_OPTIONS + ("timing_cache", "verbose")


def build_options(onnx: "str | Path", options: dict | None = None) -> BuildOptions:
    """BuildOptions from the keyword options given for an ONNX file (unknown ones are one line)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPEN_OPTIONS))
    if unknown:
        raise UserError(f"unknown TensorRT build option(s) {', '.join(unknown)}; choose from {', '.join(OPEN_OPTIONS)}")
    # strict_dla keeps GPU fallback on, as cpnet build does: the build's fallback check then names the layers that
    # left the DLA (a TensorRT 10 DLA build without fallback fails inside TensorRT instead)
    return BuildOptions(onnx=str(onnx), progress=False, **options)


def cache_path(onnx: "str | Path", opts: BuildOptions, cache_dir: "str | Path | None" = None,
               onnx_sha256: str | None = None) -> Path:
    """Where the engine for ``onnx`` built with ``opts`` lives (see the module docstring)."""
    from .build_engine import default_output

    onnx = Path(onnx)
    beside = default_output(onnx, opts.fp16_flag, opts.dla_core)
    if cache_dir is None:
        return beside
    digest = (onnx_sha256 or sha256_file(onnx))[:12]
    return Path(cache_dir) / f"{beside.name[:-len('.engine')]}.{digest}.engine"


def wanted_key(onnx_sha256: str, trt_version: str, gpu: dict | None, opts: BuildOptions) -> dict:
    """The cache key: what an engine must have been built from, by and for, to be reused."""
    return {"onnx sha256": onnx_sha256, "TensorRT version": str(trt_version),
            "GPU": _gpu_text(gpu), **{f"build option {k}": getattr(opts, k) for k in ENGINE_OPTIONS}}


def key_of(manifest: dict) -> dict:
    """The key an engine manifest records (the same names as :func:`wanted_key`)."""
    built = manifest.get("build_options") or {}
    return {"onnx sha256": (manifest.get("parent") or {}).get("sha256"),
            "TensorRT version": str((manifest.get("tensorrt") or {}).get("version")),
            "GPU": _gpu_text(manifest.get("gpu")), **{f"build option {k}": built.get(k) for k in ENGINE_OPTIONS}}


def _gpu_text(gpu: dict | None) -> str | None:
    return f"{gpu.get('name')} (sm {gpu.get('compute_capability')})" if gpu else None


def stale_reason(engine: Path, want: dict) -> str | None:
    """None when the engine at ``engine`` was built for ``want``; else why it must be (re)built, in one phrase."""
    if not engine.is_file():
        return "no cached engine yet"
    manifest = read_manifest(engine, required=False)
    if manifest is None:
        return "the cached engine has no manifest"
    have = key_of(manifest)
    changed = [f"{k} {_short(have[k])} -> {_short(v)}" for k, v in want.items() if have.get(k) != v]
    return ("changed: " + "; ".join(changed)) if changed else None


def _short(value) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def _here(onnx: Path) -> tuple[str, dict, str]:
    """(TensorRT version, GPU, ONNX sha256), or the one-line reason this machine cannot build."""
    from cpnet.runtime.manifest import verify_sha256

    onnx_manifest = read_manifest(onnx, required=True)
    digest = verify_sha256(onnx, onnx_manifest, "the ONNX file")
    if is_cpu_flavour(onnx_manifest):
        raise UserError(cpu_flavour_message(str(onnx)))
    trt = import_tensorrt()
    gpu = gpu_info()
    if gpu is None:
        import_pycuda()  # the precise reason (no PyCUDA / no device)
        raise MissingDependency("no CUDA GPU visible to pycuda, cuda-python or torch.cuda")
    return trt.__version__, gpu, digest


def _resolved(opts: BuildOptions) -> BuildOptions:
    """The options as the build will use them: the workspace default of this machine filled in."""
    if opts.workspace_mib is None:
        return replace(opts, workspace_mib=default_workspace_mib())
    return opts


def lookup(onnx: "str | Path", options: dict | None = None, cache_dir: "str | Path | None" = None) -> tuple[Path, str | None]:
    """(engine path, why it would be built or None when the cached one is fresh), building nothing (cpnet doctor)."""
    onnx = Path(onnx)
    trt_version, gpu, digest = _here(onnx)
    opts = _resolved(build_options(onnx, options))
    engine = cache_path(onnx, opts, cache_dir, digest)
    return engine, stale_reason(engine, wanted_key(digest, trt_version, gpu, opts))


def ensure_engine(onnx: "str | Path", options: dict | None = None, cache_dir: "str | Path | None" = None) -> Path:
    """The engine for ``onnx`` with build ``options`` (BuildOptions fields), built here if the cache has none
    for this key, else the cached one. Two processes asking at once build it once."""
    from . import build_engine

    onnx = Path(onnx)
    if not onnx.is_file():
        raise UserError(f"{onnx}: no such ONNX file")
    trt_version, gpu, digest = _here(onnx)
    opts = _resolved(build_options(onnx, options))
    engine = cache_path(onnx, opts, cache_dir, digest)
    want = wanted_key(digest, trt_version, gpu, opts)
    reuse = f"engine cache: reusing {engine} (built for this ONNX file, TensorRT {trt_version} and {want['GPU']})"
    if stale_reason(engine, want) is None:  # a fresh engine needs no lock: it is only read (a read-only folder too)
        log.info(reuse)
        return engine
    check_output(engine, what="engine cache")
    with file_lock(engine, what="engine cache"):
        why = stale_reason(engine, want)  # again, under the lock: another process may have built it meanwhile
        if why is None:
            log.info(reuse)
            return engine
        if engine.is_file() and read_manifest(engine, required=False) is None:  # not cpnet's: never replaced
            raise UserError(f"{engine}: an engine cpnet did not build (no manifest) is where the engine cache would "
                            f"write; move it, or give the cache another folder (engine_cache=DIR, --engine-cache DIR)")
        log.info(f"engine cache: building {engine} ({why}); this takes a while, once")
        build_engine.build(replace(opts, output=str(engine)))
    return engine
