"""The thin TensorRT layer: imports, version and GPU checks, the builder and the runtime.

Everything here follows NVIDIA's documented Python API for TensorRT 10.x and
11.x; each non-obvious call names the page or sample it follows. The pure-Python
parts (option validation, manifest checks, inspector-JSON parsing) take plain
values so they are tested on machines without TensorRT.

Differences between the versions that this module handles:

- Network creation. TensorRT 10: ``create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))``
  for a strongly typed network (Python API "Builder" page, 10.x), or ``create_network(0)`` for the
  weakly typed FP16-flag path. TensorRT 11: every network is strongly typed and the flag is
  "retained for API compatibility but is ignored" (Python API "Builder" page, 11.0.0), so we pass 0.
- Builder flags. ``BuilderFlag.FP16``/``INT8``, ``int8_calibrator`` and the quantization flags are
  removed in 11.x ("Removed Python APIs and Replacements", 10.x -> 11.x migration guide); the
  FP16-flag path is therefore TensorRT 10 only.
- DLA. Supported on JetPack 6 (TensorRT 10.3). TensorRT 11.0-11.3 have no DLA; 11.4.1 brings it
  back on Jetson AGX Orin with JetPack 7.2.2+ ("Strongly Typed Networks for DLA", 11.3/11.4 docs).
- ``ICudaEngine.device_memory_size`` is removed in 11.x; ``device_memory_size_v2`` (10.1+) stays.
- Engine-inspector JSON: 10.x layers carry "Format/Datatype"; 11.x splits it into "Format" and
  "DataType" and replaces "Bindings" with "I/O Tensors" ("Migrating IEngineInspector Usage from
  TensorRT 10.x to 11.x").
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from cpnet.runtime import UserError

INSTALL_HINT = ("on a desktop GPU: pip install -e .[tensorrt] with NVIDIA's package index; "
                "on a Jetson: JetPack's TensorRT in a venv made with --system-site-packages (see README)")

DEFAULT_WORKSPACE_MIB_JETSON = 1024
DEFAULT_WORKSPACE_MIB_DESKTOP = 4096


class MissingDependency(UserError):
    """TensorRT, PyCUDA or a CUDA GPU is missing (one line, no traceback)."""


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
    """``pycuda.driver`` with a current CUDA context, or a one-line MissingDependency.

    Follows NVIDIA's TensorRT Python samples (samples/python/common.py, 8.x-10.x):
    ``import pycuda.autoprimaryctx`` (retains the device's primary context, the one the
    CUDA runtime inside TensorRT uses), falling back to ``pycuda.autoinit`` on old PyCUDA.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise MissingDependency(f"PyCUDA is not installed (import pycuda: {e}); pip install pycuda "
                                f"(needs the CUDA toolkit headers) or see README") from None
    try:
        try:
            import pycuda.autoprimaryctx  # noqa: F401
        except ModuleNotFoundError:
            import pycuda.autoinit  # noqa: F401
    except Exception as e:  # pycuda._driver.Error / RuntimeError: no driver, no device
        raise MissingDependency(f"no usable CUDA GPU ({str(e).strip() or type(e).__name__})") from None
    return cuda


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


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists() or "tegra" in platform.release().lower()


def default_workspace_mib() -> int:
    """1 GiB on Jetson (its builds run out of shared memory without a cap), 4 GiB on desktop GPUs."""
    return DEFAULT_WORKSPACE_MIB_JETSON if is_jetson() else DEFAULT_WORKSPACE_MIB_DESKTOP


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
    onnx: str
    output: str | None = None
    workspace_mib: int | None = None
    timing_cache: str | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    fp16_flag: bool = False
    version_compatible: bool = False
    batch: int = 1
    strict_dla: bool = False
    gpu_fallback: bool = True
    tf32: bool = False

    def to_manifest(self) -> dict:
        d = asdict(self)
        d.pop("onnx")
        return d


def is_cpu_flavour(onnx_manifest: dict | None) -> bool:
    if not onnx_manifest or onnx_manifest.get("precision") != "int8":
        return False
    calib = onnx_manifest.get("calibration") or {}
    return str(calib.get("flavour", onnx_manifest.get("flavour", ""))).lower() == "cpu"


def cpu_flavour_message(onnx_path: str) -> str:
    return (f"{onnx_path} is the cpu flavour of INT8 (uint8 asymmetric activations), which TensorRT's parser "
            f"rejects; make the TensorRT flavour with `python -m quantize int8 model.onnx --calib-data ... "
            f"--flavour tensorrt` and build from the model.int8.onnx it writes")


def validate_build_options(opts: BuildOptions, trt_version: str, onnx_manifest: dict | None) -> str:
    """Refuse option combinations this TensorRT cannot build; return the engines.check target."""
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
        if major >= 11 and parse_version(trt_version) < (11, 4, 1):
            raise UserError(f"TensorRT {trt_version} has no DLA support (11.0-11.3 dropped it); use JetPack 6's "
                            f"TensorRT 10, or TensorRT 11.4.1+ on Jetson AGX Orin with JetPack 7.2.2+")
    if opts.opt_level is not None and not 0 <= opts.opt_level <= 5:
        raise UserError(f"--opt-level must be in 0..5 (TensorRT's builder_optimization_level), got {opts.opt_level}")
    if opts.workspace_mib is not None and opts.workspace_mib <= 0:
        raise UserError(f"--workspace must be a positive number of MiB, got {opts.workspace_mib}")
    if opts.batch < 1:
        raise UserError(f"--batch must be >= 1, got {opts.batch}")
    if opts.dla_core is not None:
        return "dla"
    return "trt11" if major >= 11 else "trt10"


# ---------------------------------------------------------------------------------------------
# engine manifest checks (pure Python)


def rebuild_hint(manifest: dict | None, engine_path: str) -> str:
    parent = ((manifest or {}).get("parent") or {}).get("path") or "<model.onnx>"
    return f"python engines/build_engine.py --onnx {parent}"


def check_engine_manifest(manifest: dict | None, trt_version: str, gpu: dict | None,
                          engine_path: str) -> list[str]:
    """Refuse an engine built for another TensorRT or GPU (UserError, one line); return warnings.

    TensorRT engines are specific to the TensorRT version and GPU they were built with; a
    mismatched plan deserializes to None with only a log line, so we compare the manifest first.
    Version-compatible engines (BuilderFlag.VERSION_COMPATIBLE) run on the same or a newer release
    of the same major version. A different GPU model with the same compute capability may load
    but is not what the engine was tuned for: a warning.
    """
    if manifest is None:
        return [f"{engine_path}: no manifest beside the engine; TensorRT version and GPU not checked "
                f"(rebuild with python engines/build_engine.py --onnx <model.onnx> to get one)"]
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
        if vc:
            ok = (major_of(built) == major_of(trt_version)
                  and parse_version(trt_version) >= parse_version(built))
        else:
            ok = same_version(built, trt_version)
        if not ok:
            raise UserError(f"{engine_path}: built with {where_built}, but this is TensorRT {trt_version}; "
                            f"engines do not move between TensorRT versions: rebuild it here with {hint}")
    if gpu is None:
        warnings_.append(f"{engine_path}: could not identify this GPU; GPU match not checked")
    elif built_gpu.get("compute_capability"):
        if str(built_gpu["compute_capability"]) != str(gpu.get("compute_capability")):
            raise UserError(f"{engine_path}: built for {built_gpu.get('name')} (sm {built_gpu['compute_capability']}), "
                            f"but this GPU is {gpu.get('name')} (sm {gpu.get('compute_capability')}); "
                            f"rebuild it here with {hint}")
        if built_gpu.get("name") and gpu.get("name") and built_gpu["name"] != gpu["name"]:
            warnings_.append(f"{engine_path}: built on {built_gpu['name']}, running on {gpu['name']} (same compute "
                             f"capability); it loads, but rebuild with {hint} for tactics tuned to this GPU")
    return warnings_


# ---------------------------------------------------------------------------------------------
# engine-inspector JSON (pure Python)

_PRECISION_ORDER = ("int8", "fp8", "fp4", "int4", "fp16", "bf16", "fp32")


def _tensor_precision(t) -> str | None:
    """Precision of one tensor entry of inspector JSON: TRT 11 'DataType' or TRT 10 'Format/Datatype'."""
    if isinstance(t, str):
        s = t
    elif isinstance(t, dict):
        s = t.get("DataType") or t.get("Format/Datatype") or t.get("Format") or ""
    else:
        return None
    s = str(s).lower()
    if not s:
        return None
    for key, names in (("fp8", ("fp8", "e4m3")), ("fp4", ("fp4", "e2m1")), ("bf16", ("bf16", "bfloat")),
                       ("fp16", ("fp16", "half")), ("int8", ("int8",)), ("int4", ("int4",)),
                       ("int32", ("int32",)), ("int64", ("int64",)), ("bool", ("bool",)),
                       ("fp32", ("fp32", "float"))):
        if any(n in s for n in names):
            return key
    return "other"


def layer_precision(layer) -> str:
    """A layer's precision: the lowest floating/quantized precision among its inputs, else its outputs.

    A Q/DQ-fused INT8 convolution reads INT8 and counts as int8; a layer with only integer or
    boolean tensors (shape arithmetic) counts as that type; a name-only entry (built without
    ProfilingVerbosity.DETAILED) counts as "unknown".
    """
    if not isinstance(layer, dict):
        return "unknown"
    for key in ("Inputs", "Outputs"):
        precs = [p for p in (_tensor_precision(t) for t in layer.get(key) or []) if p]
        ranked = [p for p in precs if p in _PRECISION_ORDER]
        if ranked:
            return min(ranked, key=_PRECISION_ORDER.index)
        if precs:
            return precs[0]
    return "unknown"


def summarize_layer_precisions(engine_info_json: str) -> dict:
    """Count an engine's layers by precision from IEngineInspector.get_engine_information(JSON).

    Returns {"layers": N, "by_precision": {"fp16": n, ...}, "by_type": {...}}.
    """
    try:
        info = json.loads(engine_info_json)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"engine inspector output is not JSON ({e})") from None
    layers = info.get("Layers", []) if isinstance(info, dict) else info
    by_prec: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for layer in layers or []:
        p = layer_precision(layer)
        by_prec[p] = by_prec.get(p, 0) + 1
        t = layer.get("LayerType", "unknown") if isinstance(layer, dict) else "unknown"
        by_type[t] = by_type.get(t, 0) + 1
    return {"layers": sum(by_prec.values()), "by_precision": dict(sorted(by_prec.items())),
            "by_type": dict(sorted(by_type.items()))}


# ---------------------------------------------------------------------------------------------
# the builder (needs TensorRT and a GPU)


_LOGGERS: dict = {}


def make_logger(trt, verbose: bool = False):
    """One trt.Logger per process: TensorRT warns when builders and runtimes get different loggers."""
    logger = _LOGGERS.get(id(trt))
    severity = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING
    if logger is None:
        logger = _LOGGERS[id(trt)] = trt.Logger(severity)
    else:
        try:
            logger.min_severity = severity  # trt.Logger.min_severity (Python API, ILogger)
        except Exception:
            pass
    return logger


def make_progress_monitor(trt, emit: Callable[[str], None]):
    """An IProgressMonitor printing one line when a phase starts and one when it ends (TRT >= 10.0).

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
                emit(f"[build] {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            t0, _ = self._t.pop(phase_name, (time.perf_counter(), 0))
            depth = self._depth.pop(phase_name, 0)
            if depth <= 1:
                emit(f"[build] {'  ' * depth}{phase_name} done in {time.perf_counter() - t0:.1f} s")

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
    timing_cache: bytes | None
    strongly_typed: bool
    timing_cache_loaded: bool = False
    notes: list[str] = field(default_factory=list)


def build_serialized_engine(trt, opts: BuildOptions, input_size: tuple[int, int] | None,
                            emit: Callable[[str], None] = print, verbose: bool = False) -> BuildResult:
    """Parse the ONNX file and build a serialized engine (strongly typed unless --fp16-flag on TRT 10)."""
    major = major_of(trt.__version__)
    logger = make_logger(trt, verbose)
    notes: list[str] = []

    emit("[build] parsing ONNX")
    builder = trt.Builder(logger)
    if major >= 11:
        flags = 0  # 11.0 Builder docs: STRONGLY_TYPED is deprecated and ignored; always strongly typed
        strongly_typed = True
    elif opts.fp16_flag:
        flags = 0  # weakly typed: BuilderFlag.FP16 lets TensorRT pick FP16 kernels (TRT 10 only)
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
    if opts.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)  # exists in TRT 10 only; validate_build_options refuses it on 11
    if opts.dla_core is not None:
        n = int(getattr(builder, "num_DLA_cores", 0))
        if opts.dla_core >= n:
            raise UserError(f"--dla-core {opts.dla_core}: this device has {n} DLA core(s)")
        # Polygraphy CreateConfig(use_dla, allow_gpu_fallback) and "Working with DLA" docs
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        if opts.gpu_fallback and hasattr(trt.BuilderFlag, "GPU_FALLBACK"):
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)

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
            opt = list(hi)
            profile.set_shape(inp.name, lo, opt, hi)
            notes.append(f"optimization profile for '{inp.name}': min {lo}, opt {opt}, max {hi}")
    if profile is not None:
        config.add_optimization_profile(profile)

    # timing cache: load if the file exists (Polygraphy CreateConfig: create_timing_cache(bytes) +
    # set_timing_cache(cache, ignore_mismatch=False)); save config.get_timing_cache().serialize()
    # after the build (NVIDIA trt-samples-for-hackathon-cn cookbook, TimingCache example)
    cache_loaded = False
    if opts.timing_cache:
        cache_path = Path(opts.timing_cache)
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            notes.append(f"timing cache {cache_path} does not match this TensorRT/GPU; starting an empty one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        else:
            cache_loaded = bool(data)
        emit(f"[build] timing cache {cache_path}: {'loaded ' + str(len(data)) + ' bytes' if cache_loaded else 'new'}")

    monitor = make_progress_monitor(trt, emit)
    if monitor is not None:
        config.progress_monitor = monitor  # IBuilderConfig.progress_monitor (TRT >= 10.0)
    emit(f"[build] building engine (workspace {workspace} MiB"
         f"{', DLA core ' + str(opts.dla_core) if opts.dla_core is not None else ''}"
         f"{', FP16 flag' if opts.fp16_flag else ', strongly typed'}); this takes a while")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {opts.onnx}; see TensorRT's log lines above")
    emit(f"[build] engine built in {time.perf_counter() - t0:.1f} s")

    cache_bytes = None
    if opts.timing_cache:
        cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
    return BuildResult(engine=bytes(memoryview(serialized)), timing_cache=cache_bytes,
                       strongly_typed=strongly_typed, timing_cache_loaded=cache_loaded, notes=notes)


def _onnx_node_names(path: "str | Path") -> list[str] | None:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return [n.name or f"#{i}" for i, n in enumerate(model.graph.node)]
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# the runtime


def deserialize_engine(trt, engine_bytes: bytes, engine_path: str, manifest: dict | None = None,
                       verbose: bool = False):
    """(runtime, engine) from a plan; None from TensorRT becomes a one-line UserError."""
    logger = make_logger(trt, verbose)
    runtime = trt.Runtime(logger)
    vc = bool(((manifest or {}).get("tensorrt") or {}).get("version_compatible"))
    if vc and hasattr(runtime, "engine_host_code_allowed"):
        # version-compatible plans embed the lean runtime; the runtime must allow host code to load them
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise UserError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize this engine (built by "
                        f"another TensorRT version or for another GPU, or the file is damaged); rebuild it with "
                        f"{rebuild_hint(manifest, engine_path)}")
    return runtime, engine


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
    """Name-based I/O (TensorRT 10+): num_io_tensors, get_tensor_name/mode/shape/dtype."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        out.append({
            "name": name,
            "is_input": mode == trt.TensorIOMode.INPUT,
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
            "dtype": trt.nptype(engine.get_tensor_dtype(name)),
        })
    return out


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
