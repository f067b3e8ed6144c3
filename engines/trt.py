"""The thin TensorRT layer: imports, version and GPU checks, the builder, the runtime and CUDA graphs.

Everything here follows NVIDIA's documented Python API for TensorRT 10.x and 11.x (the Python API
reference, the developer guide's "Engine Compatibility", "Working with DLA" and "CUDA Graphs"
sections) and, where the documentation is silent, what NVIDIA's own tools do: Polygraphy
(``tools/Polygraphy/polygraphy/backend/trt``) and trtexec (``samples/common``). Each non-obvious
call names its source. The pure-Python parts (option validation, the deserialization settings a
manifest implies, manifest and sha256 checks, the CUDA-graph state machine)
take plain values or injected objects, so they are tested on machines without TensorRT. See
docs/architecture.md for the engine manifest's fields.

Differences between the versions that this module handles:

- Network creation. TensorRT 10: ``create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))``
  for a strongly typed network (Python API "Builder" page, 10.x), or ``create_network(0)`` for the
  weakly typed FP16-flag path. TensorRT 11: every network is strongly typed and the flag is
  "retained for API compatibility but is ignored" (Python API "Builder" page, 11.0.0), so we pass 0.
- Builder flags. ``BuilderFlag.FP16``/``INT8``, ``int8_calibrator`` and the quantization flags are
  removed in 11.x ("Removed Python APIs and Replacements", 10.x -> 11.x migration guide); the
  FP16-flag path is therefore TensorRT 10 only.
- DLA. Which versions have it and how each builds (10.0-10.7 weakly typed with the FP16/INT8 flags and
  GPU fallback; 11.4.1 on Jetson AGX Orin strongly typed; Windows on ARM from 11.4.0 without GPU
  fallback): one table, :mod:`engines.dla`, with its sources. The runtime must be told the core too
  (``IRuntime.DLA_core`` before deserializing, "Working with DLA"), or an engine built for core 1 runs
  on core 0.
- Version compatibility ("Engine Compatibility", 10.x and 11.x docs; 11.4 support matrix): a plan
  built with ``BuilderFlag.VERSION_COMPATIBLE`` runs on the same or a newer release of its major,
  and a TensorRT 10 version-compatible plan also runs on a TensorRT 11 runtime; no other
  cross-major combination. Such plans embed the lean runtime (host code), so the runtime must have
  ``engine_host_code_allowed = True`` to load them. That is native code run by this process, so it is
  allowed only on the user's word: ``--allow-host-code`` / ``allow_host_code=True`` where an engine file
  is opened, ``--version-compatible`` on the build command line for the build's own load check; never
  because a manifest says so (the manifest and its sha256 are an integrity check, not authentication).
- Hardware compatibility (``IBuilderConfig.hardware_compatibility_level``): ``AMPERE_PLUS`` plans
  run on any Ampere-or-newer GPU (sm 8.0+) and can only be built on one; ``SAME_COMPUTE_CAPABILITY``
  plans run on GPUs of the same compute capability. Neither is for DLA or JetPack.
- ``ICudaEngine.device_memory_size`` is removed in 11.x; ``device_memory_size_v2`` (10.1+) stays.
- Engine-inspector JSON: 10.x layers carry "Format/Datatype"; 11.x splits it into "Format" and
  "DataType" and replaces "Bindings" with "I/O Tensors" ("Migrating IEngineInspector Usage from
  TensorRT 10.x to 11.x").

An engine is native code that runs on the GPU (and, when version compatible, on the host): one
is opened only when its bytes match the sha256 in the manifest beside it, or when the user says
they trust it (``trust_engine=True`` / ``--trust-engine``); host code needs its own word
(``allow_host_code=True`` / ``--allow-host-code``). CUDA contexts and threads: :class:`PrimaryContext`.
"""

from __future__ import annotations

import hashlib
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from cpnet.runtime import CpnetError, MissingDependency, UserError, atomic_write_bytes
from cpnet.runtime.files import file_lock
from cpnet.runtime.log import get_logger
from engines import dla

log = get_logger("engines")

INSTALL_HINT = ("on a desktop GPU: pip install -e .[tensorrt-cu12] (CUDA-12 driver) or .[tensorrt-cu13] "
                "(CUDA-13 driver) with NVIDIA's package index; "
                "on a Jetson: JetPack's TensorRT in a venv made with --system-site-packages (see README)")

DEFAULT_WORKSPACE_MIB_JETSON = 1024
DEFAULT_WORKSPACE_MIB_DESKTOP = 4096

#: --hardware-compatibility values -> trt.HardwareCompatibilityLevel member names
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
AMPERE_CC = (8, 0)
TURING_CC = (7, 5)


# ---------------------------------------------------------------------------------------------
# imports


def import_tensorrt():
    """``import tensorrt`` or a one-line MissingDependency."""
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"TensorRT is not installed (import tensorrt: {e}); {INSTALL_HINT}") from None
    except OSError as e:  # the wheel is there but libnvinfer is not loadable
        raise MissingDependency(f"TensorRT's libraries could not be loaded ({e}); {INSTALL_HINT}") from None
    return trt


def import_pycuda():
    """``pycuda.driver``, initialised, or a one-line MissingDependency. No context is made current here:
    :class:`PrimaryContext` does that around each call, on the thread that makes it.

    Not ``pycuda.autoprimaryctx``: it pushes the primary context in the importing thread only (and pops it
    at exit), so a backend opened in the main thread and run from the demo's inference thread fails on its
    first copy with ``LogicError: ... invalid device context`` (NVIDIA/TensorRT issue 2357, inducer/pycuda
    issue 242). NVIDIA's own TensorRT 10.x Python samples do not use PyCUDA at all: their
    ``samples/python/common_runtime.py`` (which ``common.py`` imports) uses cuda-python
    (``from cuda import cuda, cudart``), whose runtime API binds the primary context by itself.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise MissingDependency(f"PyCUDA is not installed (import pycuda: {e}); pip install pycuda "
                                f"(needs the CUDA toolkit headers) or see README") from None
    try:
        cuda.init()
    except Exception as e:  # pycuda._driver.Error: no driver, no device
        raise MissingDependency(f"no usable CUDA GPU ({str(e).strip() or type(e).__name__})") from None
    return cuda


class PrimaryContext:
    """The device's primary CUDA context, made current around a block of CUDA work on whatever thread runs it.

    The project's one context policy (docs/architecture.md, "CUDA contexts and threads"): TensorRT works in
    the primary context (the one the CUDA runtime inside it uses), so PyCUDA's buffers, streams and events
    live there too: ``Device(n).retain_primary_context()`` once, then ``push()`` / ``Context.pop()`` around
    every call, so any thread may make it. Never ``make_context()`` (a new context per thread): TensorRT's
    objects belong to the primary one. Re-entrant: the driver keeps a context stack per thread.
    """

    def __init__(self, cuda, device: int = 0):
        self._cuda = cuda
        try:
            self._context = cuda.Device(device).retain_primary_context()
        except Exception as e:  # pycuda._driver.LogicError: no such device
            raise MissingDependency(f"no usable CUDA GPU {device} ({str(e).strip() or type(e).__name__})") from None

    def __enter__(self) -> "PrimaryContext":
        self._context.push()
        return self

    def __exit__(self, *exc) -> None:
        self._cuda.Context.pop()


def import_cudart():
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6),
    which CUDA-graph capture uses, as NVIDIA's TensorRT demos do; a one-line MissingDependency otherwise."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
    except ImportError as e:
        raise MissingDependency(f"CUDA graphs need cuda-python (import cuda: {e}); pip install cuda-python "
                                f"matching your CUDA, or run without --cuda-graph") from None
    return cudart


# ---------------------------------------------------------------------------------------------
# versions and the GPU


def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); non-numeric tails are dropped ('11.0.0b1' -> (11, 0, 0))."""
    parts = []
    for p in str(version).split("."):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def major_of(version: str) -> int:
    v = parse_version(version)
    return v[0] if v else 0


def same_version(a: str, b: str) -> bool:
    """Engines are tied to the exact TensorRT release: compare major.minor.patch (and build where both have it)."""
    va, vb = parse_version(a), parse_version(b)
    n = max(3, min(len(va), len(vb)))
    return (va + (0,) * 4)[:n] == (vb + (0,) * 4)[:n]


def version_compatible_runs(built: str, running: str) -> bool:
    """Whether a version-compatible plan built by ``built`` runs on ``running``, as NVIDIA documents it.

    "Engine Compatibility" (10.x, 11.x) and the 11.4 support matrix: the same or a newer release of the
    same major; across majors only TensorRT 10 -> 11 (and 8.6+ -> 10, outside this project's range).
    """
    vb, vr = parse_version(built), parse_version(running)
    if not vb or not vr:
        return False
    if vb[0] == vr[0]:
        return vr >= vb
    return (vb[0], vr[0]) == (10, 11) or (vb[0] == 8 and vb >= (8, 6) and vr[0] == 10)


def is_jetson() -> bool:
    from cpnet.runtime.jetson import is_jetson as l4t_present

    return l4t_present() or "tegra" in platform.release().lower()


def default_workspace_mib() -> int:
    """1 GiB on Jetson (its builds run out of shared memory without a cap), 4 GiB on desktop GPUs."""
    return DEFAULT_WORKSPACE_MIB_JETSON if is_jetson() else DEFAULT_WORKSPACE_MIB_DESKTOP


def _cc(gpu: dict | None) -> tuple[int, int] | None:
    try:
        major, minor = str((gpu or {})["compute_capability"]).split(".")
        return int(major), int(minor)
    except Exception:
        return None


def gpu_info(device: int = 0) -> dict | None:
    """Name and compute capability of a CUDA device, from pycuda, cuda-python or torch.cuda (first found).

    Returns {"name", "compute_capability": "8.7", "source"} or None when no source sees a GPU.
    """
    try:  # PyCUDA driver API: Device.name(), Device.compute_capability()
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > device:
            d = cuda.Device(device)
            major, minor = d.compute_capability()
            return {"name": d.name(), "compute_capability": f"{major}.{minor}", "source": "pycuda"}
    except Exception:
        pass
    try:  # cuda-python runtime bindings: cudaGetDeviceProperties -> (err, prop)
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, prop = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
            return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}", "source": "cuda-python"}
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > device:
            major, minor = torch.cuda.get_device_capability(device)
            return {"name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
                    "source": "torch.cuda"}
    except Exception:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# build options (pure Python)


@dataclass
class BuildOptions:
    """How to build: the ONNX file, the engine path (default: beside it), builder workspace (MiB), timing
    cache ("" = none), optimization level 0-5, DLA core (+ strict: no GPU fallback), TensorRT 10's FP16
    flag, version compatibility, hardware compatibility (none | ampere+ | same-cc), max batch of a
    dynamic-batch file and the batch its kernels are tuned for (``opt_batch``, default 1), TF32 for FP32
    layers, TensorRT's verbose log, progress lines."""

    onnx: str
    output: str | None = None
    workspace_mib: int | None = None
    timing_cache: str | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    fp16_flag: bool = False
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    batch: int = 1
    opt_batch: int | None = None
    strict_dla: bool = False
    gpu_fallback: bool = True
    tf32: bool = False
    verbose: bool = False
    progress: bool = True

    def to_manifest(self) -> dict:
        d = asdict(self)
        for k in ("onnx", "verbose", "progress"):
            d.pop(k)
        return d


def is_cpu_flavour(onnx_manifest: dict | None) -> bool:
    if not onnx_manifest or onnx_manifest.get("precision") != "int8":
        return False
    calib = onnx_manifest.get("calibration") or {}
    return str(calib.get("flavour", onnx_manifest.get("flavour", ""))).lower() == "cpu"


def cpu_flavour_message(onnx_path: str) -> str:
    return (f"{onnx_path} is the cpu flavour of INT8 (uint8 asymmetric activations), which TensorRT's parser "
            f"rejects; make the TensorRT flavour with `cpnet int8 model.onnx --calib-data ... "
            f"--flavour tensorrt` and build from the model.int8.onnx it writes")


def validate_build_options(opts: BuildOptions, trt_version: str, onnx_manifest: dict | None,
                           gpu: dict | None = None, jetson: bool | None = None) -> str:
    """Refuse option combinations this TensorRT (and GPU, where given) cannot build; return the check target."""
    major = major_of(trt_version)
    if major < 10:
        raise UserError(f"TensorRT {trt_version} is too old: this project builds with TensorRT 10 or 11")
    if is_cpu_flavour(onnx_manifest):
        raise UserError(cpu_flavour_message(opts.onnx))
    if opts.fp16_flag:
        if major >= 11:
            raise UserError(f"--fp16-flag needs TensorRT 10: TensorRT {trt_version} removed BuilderFlag.FP16 "
                            f"(networks are always strongly typed); build from model.fp16.onnx instead")
        prec = (onnx_manifest or {}).get("precision", "fp32")
        if prec != "fp32":
            raise UserError(f"--fp16-flag applies to the FP32 model.onnx; {opts.onnx} is already {prec} "
                            f"(typed in the file): build it without --fp16-flag")
    if opts.dla_core is not None:
        if opts.dla_core < 0:
            raise UserError(f"--dla-core must be >= 0, got {opts.dla_core}")
        dla.dla_path(trt_version)  # the support matrix: a one-line refusal naming the versions with DLA
    if opts.opt_level is not None and not 0 <= opts.opt_level <= 5:
        raise UserError(f"--opt-level must be in 0..5 (TensorRT's builder_optimization_level), got {opts.opt_level}")
    if opts.workspace_mib is not None and opts.workspace_mib <= 0:
        raise UserError(f"--workspace must be a positive number of MiB, got {opts.workspace_mib}")
    if opts.batch < 1:
        raise UserError(f"--batch must be >= 1, got {opts.batch}")
    if opts.opt_batch is not None and not 1 <= opts.opt_batch <= opts.batch:
        raise UserError(f"--opt-batch must be in 1..--batch ({opts.batch}), got {opts.opt_batch}")
    validate_hardware_compatibility(opts, gpu, jetson)
    if opts.dla_core is not None:
        return "dla"
    return "trt11" if major >= 11 else "trt10"


def validate_hardware_compatibility(opts: BuildOptions, gpu: dict | None = None, jetson: bool | None = None) -> None:
    """--hardware-compatibility as NVIDIA documents HardwareCompatibilityLevel: AMPERE_PLUS "is only supported for
    engines built on NVIDIA Ampere and later GPUs", SAME_COMPUTE_CAPABILITY on Turing and later; neither for DLA
    or JetPack ("Hardware Compatibility", developer guide)."""
    level = opts.hardware_compatibility
    if level not in HARDWARE_LEVELS:
        raise UserError(f"--hardware-compatibility must be one of {', '.join(HARDWARE_LEVELS)}, got {level!r}")
    if level == "none":
        return
    if opts.dla_core is not None:
        raise UserError(f"--hardware-compatibility {level} does not apply to DLA engines; drop one of the two")
    if jetson is None:
        jetson = is_jetson()
    if jetson:
        raise UserError(f"--hardware-compatibility {level} is for desktop and data-center GPUs; JetPack does not "
                        f"support it: build without it on each Jetson")
    cc = _cc(gpu)
    need = AMPERE_CC if level == "ampere+" else TURING_CC
    if cc is not None and cc < need:
        raise UserError(f"--hardware-compatibility {level} needs a build GPU of sm {need[0]}.{need[1]} or newer; "
                        f"this is {gpu.get('name')} (sm {cc[0]}.{cc[1]})")


# ---------------------------------------------------------------------------------------------
# what deserializing an engine needs (pure Python)


@dataclass(frozen=True)
class DeserializeOptions:
    """Runtime settings an engine needs before ``deserialize_cuda_engine``: ``engine_host_code_allowed``
    (version-compatible plans carry the lean runtime: host code) and ``dla_core`` (IRuntime.DLA_core)."""

    engine_host_code_allowed: bool = False
    dla_core: int | None = None

    @classmethod
    def from_build_options(cls, opts: "BuildOptions | dict | None") -> "DeserializeOptions":
        """For the build's load check of the bytes just built in this process: ``--version-compatible`` on
        the user's own build command line is their word that the plan may carry host code."""
        d = asdict(opts) if isinstance(opts, BuildOptions) else dict(opts or {})
        dla = d.get("dla_core")
        return cls(engine_host_code_allowed=bool(d.get("version_compatible")),
                   dla_core=int(dla) if dla is not None else None)

    @classmethod
    def from_manifest(cls, manifest: dict | None, allow_host_code: bool = False) -> "DeserializeOptions":
        """The DLA core from an engine manifest (its build options, else its ``device`` field); host code only
        when the caller allows it (``allow_host_code``: the user's ``--allow-host-code``), never because the
        manifest says so: the manifest is an unsigned file beside the engine, and its sha256 an integrity
        check, not an authentication, so a swapped engine with a matching manifest would pass it."""
        if manifest is None:
            return cls(engine_host_code_allowed=bool(allow_host_code))
        dla = (manifest.get("build_options") or {}).get("dla_core")
        if dla is None:
            m = re.fullmatch(r"dla:(\d+)", str(manifest.get("device") or ""))
            dla = int(m.group(1)) if m else None
        return cls(engine_host_code_allowed=bool(allow_host_code), dla_core=int(dla) if dla is not None else None)


def apply_deserialize_options(runtime, options: DeserializeOptions, engine_path: str) -> None:
    """Set what ``options`` asks on a trt.Runtime (or a stand-in) before deserializing."""
    if options.engine_host_code_allowed:
        if not hasattr(runtime, "engine_host_code_allowed"):
            raise UserError(f"{engine_path}: this TensorRT's runtime cannot load version-compatible engines "
                            f"(no IRuntime.engine_host_code_allowed); rebuild the engine here without "
                            f"--version-compatible")
        runtime.engine_host_code_allowed = True  # IRuntime.setEngineHostCodeAllowed ("Version Compatibility")
    if options.dla_core is not None:
        n = int(getattr(runtime, "num_DLA_cores", 0) or 0)
        if options.dla_core >= n:
            raise UserError(f"{engine_path}: built for DLA core {options.dla_core}, but this device has "
                            f"{n} DLA core(s)")
        runtime.DLA_core = int(options.dla_core)  # IRuntime.setDLACore ("Working with DLA")


# ---------------------------------------------------------------------------------------------
# engine manifest checks (pure Python)


#: build option -> its `cpnet build` flag, for the exact rebuild command (value None: a switch)
REBUILD_FLAGS = {"dla_core": "--dla-core", "strict_dla": None, "fp16_flag": None, "version_compatible": None,
                 "hardware_compatibility": "--hardware-compatibility", "batch": "--batch", "opt_batch": "--opt-batch",
                 "opt_level": "--opt-level", "tf32": None, "workspace_mib": "--workspace"}
REBUILD_DEFAULTS = {"hardware_compatibility": "none", "batch": 1}


def rebuild_hint(manifest: dict | None, engine_path: str) -> str:
    """The exact ``cpnet build`` command that makes this engine again: its parent ONNX file, ``-o`` the engine, and
    every build option of its manifest that is not the default (a workspace only where it is not this machine's)."""
    manifest = manifest or {}
    parent = (manifest.get("parent") or {}).get("path") or "<model.onnx>"
    words = ["cpnet", "build", parent, "-o", str(engine_path)]
    built = manifest.get("build_options") or {}
    for key, flag in REBUILD_FLAGS.items():
        value = built.get(key)
        if value in (None, False) or value == REBUILD_DEFAULTS.get(key):
            continue
        if key == "workspace_mib" and int(value) == default_workspace_mib():
            continue
        words += [f"--{key.replace('_', '-')}"] if flag is None else [flag, str(value)]
    return " ".join(words)


def _hardware_level(manifest: dict) -> str:
    return str((manifest.get("tensorrt") or {}).get("hardware_compatibility")
               or (manifest.get("build_options") or {}).get("hardware_compatibility") or "none")


def check_engine_manifest(manifest: dict | None, trt_version: str, gpu: dict | None,
                          engine_path: str, trust: bool = False, jetson: bool | None = None) -> list[str]:
    """Refuse an engine built for another TensorRT or GPU (UserError, one line); return warnings.

    TensorRT engines are specific to the TensorRT version and GPU they were built with; a
    mismatched plan deserializes to None with only a log line, so we compare the manifest first.
    Version-compatible engines run as :func:`version_compatible_runs` says. Hardware-compatible
    engines (``ampere+``) run on any GPU of sm 8.0 or newer, ``same-cc`` ones on any GPU of the same
    compute capability; otherwise a different compute capability is refused and a different GPU
    model of the same compute capability is a warning (it loads, with tactics tuned elsewhere).
    An engine without a manifest is refused unless ``trust``: it is native code we cannot vouch for.
    """
    if manifest is None:
        if not trust:
            raise UserError(f"{engine_path}: no manifest beside the engine, so neither its origin nor its sha256 "
                            f"can be checked, and an engine is native code; rebuild it with cpnet build "
                            f"<model.onnx>, or pass --trust-engine (trust_engine=True) if you made it yourself")
        return [f"{engine_path}: no manifest beside the engine; trusted as asked, TensorRT version and GPU not "
                f"checked"]
    warnings_: list[str] = []
    built = ((manifest.get("tensorrt") or {}).get("version")
             or (manifest.get("versions") or {}).get("tensorrt"))
    vc = bool((manifest.get("tensorrt") or {}).get("version_compatible")
              or (manifest.get("build_options") or {}).get("version_compatible"))
    hint = rebuild_hint(manifest, engine_path)
    built_gpu = manifest.get("gpu") or {}
    where_built = f"TensorRT {built}" + (f" on {built_gpu.get('name')} (sm {built_gpu.get('compute_capability')})"
                                         if built_gpu.get("name") else "")
    if built is None:
        warnings_.append(f"{engine_path}: manifest does not say which TensorRT built the engine")
    else:
        ok = version_compatible_runs(built, trt_version) if vc else same_version(built, trt_version)
        if not ok:
            why = ("a version-compatible engine runs on the same or a newer release of its major (and TensorRT "
                   "10 ones on 11)" if vc else "engines do not move between TensorRT versions")
            raise UserError(f"{engine_path}: built with {where_built}, but this is TensorRT {trt_version}; "
                            f"{why}: rebuild it here with {hint}")
    level = _hardware_level(manifest)
    if gpu is None:
        warnings_.append(f"{engine_path}: could not identify this GPU; GPU match not checked")
        return warnings_
    here = f"{gpu.get('name')} (sm {gpu.get('compute_capability')})"
    if level == "ampere+":
        if jetson is None:
            jetson = is_jetson()
        cc = _cc(gpu)
        if jetson:
            raise UserError(f"{engine_path}: a hardware-compatible (ampere+) engine does not run under JetPack; "
                            f"rebuild it on this Jetson with {hint}")
        if cc is not None and cc < AMPERE_CC:
            raise UserError(f"{engine_path}: built hardware-compatible for Ampere and newer GPUs (sm 8.0+), but "
                            f"this GPU is {here}; rebuild it here with {hint}")
        return warnings_
    if built_gpu.get("compute_capability"):
        if str(built_gpu["compute_capability"]) != str(gpu.get("compute_capability")):
            raise UserError(f"{engine_path}: built for {built_gpu.get('name')} (sm {built_gpu['compute_capability']}), "
                            f"but this GPU is {here}; rebuild it here with {hint}")
        if (level == "none" and built_gpu.get("name") and gpu.get("name")
                and built_gpu["name"] != gpu["name"]):
            warnings_.append(f"{engine_path}: built on {built_gpu['name']}, running on {gpu['name']} (same compute "
                             f"capability); it loads, but rebuild with {hint} for tactics tuned to this GPU")
    return warnings_


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_engine_bytes(data: bytes, manifest: dict | None, engine_path: str, trust: bool = False) -> None:
    """Refuse engine bytes whose sha256 is not the manifest's (a changed, truncated or swapped file).

    The bytes checked are the bytes then deserialized, so nothing can change in between. A manifest
    without a sha256 is refused unless ``trust``; no manifest is :func:`check_engine_manifest`'s case.
    """
    if manifest is None:
        return
    expected = manifest.get("sha256")
    if not expected:
        if trust:
            return
        raise UserError(f"{engine_path}: its manifest records no sha256, so the engine cannot be verified; rebuild "
                        f"it with {rebuild_hint(manifest, engine_path)} or pass --trust-engine")
    actual = sha256_bytes(data)
    if actual != expected:
        raise UserError(f"{engine_path}: file does not match its manifest (sha256 {actual[:12]}... != "
                        f"{str(expected)[:12]}...; changed, truncated or replaced after it was built); rebuild it "
                        f"with {rebuild_hint(manifest, engine_path)}")


# ---------------------------------------------------------------------------------------------
# the builder (needs TensorRT and a GPU)


def make_logger(trt, verbose: bool = False):
    """One trt.Logger per process: TensorRT warns when builders and runtimes get different loggers. Kept on the
    module object itself (an id() of a module gone could be reused by another)."""
    logger = getattr(trt, "_cpnet_logger", None)
    severity = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING
    if logger is None:
        logger = trt.Logger(severity)
        try:
            trt._cpnet_logger = logger
        except AttributeError:
            pass
    else:
        try:
            logger.min_severity = severity  # trt.Logger.min_severity (Python API, ILogger)
        except Exception:
            pass
    return logger


def init_plugins(trt, logger) -> bool:
    """Register TensorRT's standard plugins once per process, before parsing or deserializing.

    ``trt.init_libnvinfer_plugins(logger, "")`` (Python API, "Plugin" free functions); Polygraphy's
    loaders call it before every parse and deserialization (polygraphy/backend/trt/loader.py), so ONNX
    nodes the parser maps to plugins (e.g. RoiAlign, ScatterElements) and engines with plugin layers load.
    """
    if getattr(trt, "_cpnet_plugins_ready", False):  # marked on the module: an id() could be reused
        return True
    fn = getattr(trt, "init_libnvinfer_plugins", None)
    if fn is None:
        return False
    try:
        fn(logger, "")
    except Exception as e:  # a broken plugin library must not hide the real error later
        log.warning(f"TensorRT's standard plugins could not be registered ({type(e).__name__}: {e}); "
                    f"layers that need them will fail to load")
        return False
    try:
        trt._cpnet_plugins_ready = True
    except AttributeError:  # an object that takes no attributes: register again next time (harmless)
        pass
    return True


def make_progress_monitor(trt, emit: Callable[[str], None]):
    """An IProgressMonitor emitting one line when a phase starts and one when it ends (TRT >= 10.0).

    Follows NVIDIA's sample samples/python/simple_progress_monitor (phase_start, step_complete
    returning True to continue, phase_finish); set through ``config.progress_monitor``.
    Returns None where the class does not exist.
    """
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _LineMonitor(base):
        def __init__(self):
            base.__init__(self)
            self._t: dict[str, tuple[float, int]] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._depth[phase_name] = depth
            self._t[phase_name] = (time.perf_counter(), num_steps)
            if depth <= 1:
                emit(f"{'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            t0, _ = self._t.pop(phase_name, (time.perf_counter(), 0))
            depth = self._depth.pop(phase_name, 0)
            if depth <= 1:
                emit(f"{'  ' * depth}{phase_name} done in {time.perf_counter() - t0:.1f} s")

    return _LineMonitor()


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


@dataclass
class BuildResult:
    engine: bytes
    save_timing_cache: Callable[[], int] | None  # merge into the cache file and write it; bytes written
    strongly_typed: bool
    timing_cache_loaded: bool = False
    notes: list[str] = field(default_factory=list)


def hardware_level_enum(trt, level: str):
    """trt.HardwareCompatibilityLevel member for a --hardware-compatibility value (UserError if this TensorRT lacks it)."""
    enum = getattr(trt, "HardwareCompatibilityLevel", None)
    member = getattr(enum, HARDWARE_LEVELS[level], None) if enum is not None else None
    if member is None:
        raise UserError(f"--hardware-compatibility {level}: TensorRT {trt.__version__} has no "
                        f"HardwareCompatibilityLevel.{HARDWARE_LEVELS[level]}")
    return member


def build_serialized_engine(trt, opts: BuildOptions, input_size: tuple[int, int] | None,
                            precision: str | None = None) -> BuildResult:
    """Parse the ONNX file and build a serialized engine: strongly typed, except --fp16-flag on TRT 10 and
    DLA on TRT 10 (weakly typed with the FP16 flag, INT8 too where ``precision`` is "int8": the file's
    Q/DQ nodes give the scales), as :mod:`engines.dla` documents."""
    major = major_of(trt.__version__)
    dla_path = dla.dla_path(trt.__version__) if opts.dla_core is not None else None
    logger = make_logger(trt, opts.verbose)
    init_plugins(trt, logger)
    notes: list[str] = []

    log.info("parsing ONNX")
    builder = trt.Builder(logger)
    if major >= 11:
        flags = 0  # 11.0 Builder docs: STRONGLY_TYPED is deprecated and ignored; always strongly typed
        strongly_typed = True
    elif opts.fp16_flag or (dla_path is not None and not dla_path.strongly_typed):
        flags = 0  # weakly typed: BuilderFlag.FP16 (and INT8) let TensorRT pick kernels (TRT 10 only)
        strongly_typed = False
    else:
        # 10.x Builder docs: "to enable strongly typed mode, pass 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)"
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        strongly_typed = True
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if opts.version_compatible and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "NATIVE_INSTANCENORM"):
        # Polygraphy CreateConfig: version-compatible builds from ONNX want NATIVE_INSTANCENORM
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    # parse_from_file keeps the file's location so external weights resolve (Polygraphy NetworkFromOnnxPath)
    ok = parser.parse_from_file(str(opts.onnx))
    if not ok or parser.num_errors:
        lines = format_parser_errors(parser, _onnx_node_names(opts.onnx))
        raise UserError("TensorRT could not parse " + str(opts.onnx) + ":\n" + "\n".join(lines or ["(no details)"]))

    config = builder.create_builder_config()
    workspace = opts.workspace_mib or default_workspace_mib()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace) << 20)  # IBuilderConfig, bytes
    if opts.opt_level is not None:
        config.builder_optimization_level = int(opts.opt_level)  # 0..5, default 3 (IBuilderConfig docs)
    # DETAILED so the engine inspector reports per-layer types/formats (EngineInspector docs)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not opts.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default for FP32 layers on Ampere+; Polygraphy CreateConfig clears it unless asked
        # (config.clear_flag(trt.BuilderFlag.TF32)), so an FP32 engine computes in FP32
        config.clear_flag(trt.BuilderFlag.TF32)
    if opts.fp16_flag or (dla_path is not None and not dla_path.strongly_typed):
        config.set_flag(trt.BuilderFlag.FP16)  # exists in TRT 10 only; validate_build_options refuses it on 11
    if dla_path is not None and not dla_path.strongly_typed and precision == "int8":
        # an explicitly quantized file on 10.x DLA: INT8 + FP16 flags, as trtexec --int8 --fp16 ("Working with DLA")
        config.set_flag(trt.BuilderFlag.INT8)
    if opts.dla_core is not None:
        n = int(getattr(builder, "num_DLA_cores", 0))
        if opts.dla_core >= n:
            raise UserError(f"--dla-core {opts.dla_core}: this device has {n} DLA core(s)")
        # Polygraphy CreateConfig(use_dla, allow_gpu_fallback) and "Working with DLA" docs
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        if opts.gpu_fallback and dla_path.gpu_fallback:  # Windows on ARM has none ("Working with DLA", 11.4.1)
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)  # "Version Compatibility": the plan embeds the lean runtime
    if opts.hardware_compatibility != "none":
        # IBuilderConfig.hardware_compatibility_level, as Polygraphy's CreateConfig sets it
        config.hardware_compatibility_level = hardware_level_enum(trt, opts.hardware_compatibility)

    # dynamic inputs: one optimization profile, batch 1..opts.batch, H x W from the manifest
    profile = None
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        if any(d < 0 for d in shape):
            if profile is None:
                profile = builder.create_optimization_profile()
            lo, hi = list(shape), list(shape)
            for j, d in enumerate(shape):
                if d >= 0:
                    continue
                if j == 0:
                    lo[j], hi[j] = 1, int(opts.batch)
                elif input_size and j in (len(shape) - 2, len(shape) - 1):
                    lo[j] = hi[j] = int(input_size[j - (len(shape) - 2)])
                else:
                    raise UserError(f"input '{inp.name}' dim {j} is dynamic and not the batch or H/W; re-export "
                                    f"the ONNX file with static shapes")
            # kernels are tuned for opt: the batch most calls use (1 unless told), not the max (trtexec's
            # --optShapes, Polygraphy's Profile). DLA needs min = opt = max: its files are static (engines.check
            # refuses dynamic dims for DLA), so no profile is made for them
            opt = list(lo)
            if shape[0] < 0:
                opt[0] = int(opts.opt_batch or 1)
            profile.set_shape(inp.name, lo, opt, hi)
            notes.append(f"optimization profile for '{inp.name}': min {lo}, opt {opt}, max {hi}")
    if profile is not None:
        config.add_optimization_profile(profile)

    # timing cache: load if the file exists (Polygraphy CreateConfig: create_timing_cache(bytes) +
    # set_timing_cache(cache, ignore_mismatch=False)); after the build, BuildResult.save_timing_cache merges
    # it into whatever the file holds by then (Polygraphy EngineBytesFromNetwork)
    cache_loaded = False
    if opts.timing_cache:
        cache_path = Path(opts.timing_cache)
        with file_lock(cache_path, what="timing cache"):
            data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data) if data else None
        if cache is None or not config.set_timing_cache(cache, False):
            if data:
                notes.append(f"timing cache {cache_path} does not match this TensorRT/GPU (or is damaged); "
                             f"starting an empty one")
            config.set_timing_cache(config.create_timing_cache(b""), False)
        else:
            cache_loaded = True
        log.info(f"timing cache {cache_path}: {'loaded ' + str(len(data)) + ' bytes' if cache_loaded else 'new'}")

    if opts.progress:
        monitor = make_progress_monitor(trt, log.info)
        if monitor is not None:
            config.progress_monitor = monitor  # IBuilderConfig.progress_monitor (TRT >= 10.0)
    extras = [f"DLA core {opts.dla_core} ({dla_path.note})" if dla_path is not None else "",
              "FP16 flag" if opts.fp16_flag else "strongly typed" if strongly_typed else "",
              "version compatible" if opts.version_compatible else "",
              f"hardware compatible {opts.hardware_compatibility}" if opts.hardware_compatibility != "none" else ""]
    log.info(f"building engine (workspace {workspace} MiB, {', '.join(e for e in extras if e)}); this takes a while")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {opts.onnx}; see TensorRT's log lines above")
    log.info(f"engine built in {time.perf_counter() - t0:.1f} s")

    saver = None
    if opts.timing_cache:
        def saver(path=Path(opts.timing_cache), cache=config.get_timing_cache()) -> int:
            return save_timing_cache(config, cache, path)
    return BuildResult(engine=bytes(memoryview(serialized)), save_timing_cache=saver,
                       strongly_typed=strongly_typed, timing_cache_loaded=cache_loaded, notes=notes)


def save_timing_cache(config, cache, path: Path) -> int:
    """Merge this build's timing cache into the file and write it atomically, under the file's lock, as
    Polygraphy's EngineBytesFromNetwork does (``util.LockFile``; ``ITimingCache.combine(previous,
    ignore_mismatch=True)``), so builds running at once keep each other's timings. Returns the bytes written."""
    with file_lock(path, what="timing cache"):
        data = path.read_bytes() if path.is_file() else b""
        previous = config.create_timing_cache(data) if data else None
        if previous is not None and not cache.combine(previous, True):
            log.warning(f"timing cache {path}: its entries could not be merged (another TensorRT or GPU); "
                        f"replaced by this build's")
        out = bytes(memoryview(cache.serialize()))
        atomic_write_bytes(path, out)
    return len(out)


def _onnx_node_names(path: "str | Path") -> list[str] | None:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return [n.name or f"#{i}" for i, n in enumerate(model.graph.node)]
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# the runtime


def check_host_code(manifest: dict | None, allow_host_code: bool, engine_path: str) -> None:
    """A manifest that says version compatible means the plan carries host code: refuse it, before
    TensorRT sees a byte, unless the user allowed host code."""
    vc = bool(((manifest or {}).get("tensorrt") or {}).get("version_compatible")
              or ((manifest or {}).get("build_options") or {}).get("version_compatible"))
    if vc and not allow_host_code:
        raise UserError(f"{engine_path}: a version-compatible engine carries host code (native code this process "
                        f"would run); pass --allow-host-code (allow_host_code=True) if you built it or trust its "
                        f"source, or rebuild it here without --version-compatible")


def deserialize_engine(trt, engine_bytes: bytes, engine_path: str, manifest: dict | None = None,
                       verbose: bool = False, options: DeserializeOptions | None = None,
                       allow_host_code: bool = False):
    """(runtime, engine) from a plan; None from TensorRT becomes a one-line UserError.

    ``options`` (default: :meth:`DeserializeOptions.from_manifest` with ``allow_host_code``) are set on the
    runtime first: host code where allowed, the DLA core for DLA plans. TensorRT's standard plugins are
    registered before deserializing.
    """
    logger = make_logger(trt, verbose)
    init_plugins(trt, logger)
    runtime = trt.Runtime(logger)
    if options is None:
        options = DeserializeOptions.from_manifest(manifest, allow_host_code=allow_host_code)
    apply_deserialize_options(runtime, options, engine_path)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        host = "" if options.engine_host_code_allowed else (", or it is version compatible and needs "
                                                            "--allow-host-code")
        raise UserError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize this engine (built by "
                        f"another TensorRT version or for another GPU, or the file is damaged{host}); rebuild it "
                        f"with {rebuild_hint(manifest, engine_path)}")
    return runtime, engine


def set_input_shape(context, engine, name: str, shape, engine_path: str) -> None:
    """``IExecutionContext.set_input_shape`` with its result checked: False means the shape is outside the
    engine's optimization profile, and running anyway would compute garbage or fail later."""
    shape = tuple(int(d) for d in shape)
    if context.set_input_shape(name, shape):
        return
    bounds = ""
    try:  # ICudaEngine.get_tensor_profile_shape(name, profile) -> [min, opt, max]
        lo, _, hi = engine.get_tensor_profile_shape(name, 0)
        bounds = f"; the engine takes {tuple(int(d) for d in lo)} to {tuple(int(d) for d in hi)}"
    except Exception:
        pass
    raise UserError(f"{engine_path}: TensorRT refused input shape {shape} for '{name}'{bounds}; rebuild with a "
                    f"larger --batch or feed a shape the engine was built for")


class CudaGraphError(CpnetError):
    """A CUDA call of graph capture or replay failed (one line, like every cpnet error)."""


class CudaGraph:
    """Replays one execution context's ``execute_async_v3`` as a CUDA graph, as trtexec's --useCudaGraph does.

    trtexec (samples/common/sampleInference.cpp, sampleDevice.h): run the enqueue once and synchronize
    ("avoid capturing initialization calls"), capture the next enqueue on the (non-default) stream with
    ``cudaStreamCaptureModeThreadLocal``, instantiate the graph, then launch it instead of enqueueing;
    when the engine has operations graph capture does not permit (the enqueue returns False or the capture
    is invalidated), end the capture, clear the CUDA error and run without a graph. A graph fixes input
    shapes and buffer addresses: :meth:`reset` when either changes. The CUDA calls go through cuda-python's
    runtime bindings (``cudart``), which return ``(error, value...)`` tuples, as in NVIDIA's TensorRT demos.
    """

    def __init__(self, cudart, stream_handle: int, execute: Callable[[], bool], synchronize: Callable[[], None]):
        self.cudart = cudart
        self.stream = stream_handle
        self._execute = execute
        self._synchronize = synchronize
        self.exec = None
        self.failed: str | None = None

    @property
    def active(self) -> bool:
        return self.exec is not None

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise CudaGraphError(f"{what} failed ({err})")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def run(self) -> bool:
        """One inference on the stream: the graph if captured, else an enqueue (capturing after the first)."""
        if self.exec is not None:
            self._check(self.cudart.cudaGraphLaunch(self.exec, self.stream), "cudaGraphLaunch")
            return True
        if not self._execute():  # this call's inference, and the warm-up before capture
            return False
        if self.failed is None:
            self._synchronize()
            self._capture()
        return True

    def _capture(self) -> None:
        cudart = self.cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            self._check(cudart.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        except CudaGraphError as e:
            self._give_up(str(e))
            return
        try:
            enqueued = bool(self._execute())
        except Exception:  # the capture must be ended whatever happened inside it
            enqueued = False
        err, graph = cudart.cudaStreamEndCapture(self.stream)
        if not enqueued or int(err) != 0 or graph is None:
            if int(err) == 0 and graph is not None:
                cudart.cudaGraphDestroy(graph)
            cudart.cudaGetLastError()  # clear the capture error, as trtexec's endCaptureOnError does
            self._give_up("the engine has operations CUDA graph capture does not permit" if not enqueued
                          else f"cudaStreamEndCapture failed ({err})")
            return
        try:
            self.exec = self._check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaGraphError as e:
            self._give_up(str(e))
        finally:
            cudart.cudaGraphDestroy(graph)
        if self.exec is not None:
            log.debug("captured a CUDA graph of the engine's execution")

    def _give_up(self, why: str) -> None:
        self.failed = why
        log.warning(f"CUDA graph capture failed ({why}); running without a CUDA graph")

    def reset(self) -> None:
        """Forget the graph (new shapes or buffers); the next run captures again."""
        if self.exec is not None:
            try:
                self.cudart.cudaGraphExecDestroy(self.exec)
            finally:
                self.exec = None
        self.failed = None


def engine_info_json(trt, engine) -> str:
    """IEngineInspector JSON (ICudaEngine.create_engine_inspector + get_engine_information, Engine Inspector docs)."""
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def device_memory_size(engine) -> int:
    """Activation memory an execution context needs: device_memory_size_v2 (10.1+, kept in 11) else the 10.0 name."""
    for attr in ("device_memory_size_v2", "device_memory_size"):
        v = getattr(engine, attr, None)
        if v is not None:
            try:
                return int(v)
            except Exception:
                continue
    return 0


def io_tensors(trt, engine) -> list[dict]:
    """Name-based I/O (TensorRT 10+): num_io_tensors, get_tensor_name/mode/shape/dtype. ``dtype`` is the NumPy
    dtype (``trt.nptype``: HALF -> float16, ...), None where NumPy has none (BF16, FP8, INT4: ``trt_dtype``)."""
    import numpy as np

    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype))
        except TypeError:  # "Could not resolve TensorRT datatype to an equivalent numpy datatype."
            dtype = None
        out.append({
            "name": name,
            "is_input": mode == trt.TensorIOMode.INPUT,
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
            "dtype": dtype,
            "trt_dtype": str(getattr(trt_dtype, "name", trt_dtype)),
        })
    return out
