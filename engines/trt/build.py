"""The build side's thin calls into TensorRT: ONNX file -> network -> builder config -> serialized engine bytes.

Shaped as Polygraphy's loaders (``polygraphy/backend/trt/loader.py``: NetworkFromOnnxPath, CreateConfig,
EngineBytesFromNetwork). Each function takes the ``tensorrt`` module (or a stand-in) as an argument; nothing
here imports it.

- Network creation. TensorRT 10: ``create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))``
  for a strongly typed network (Python API "Builder" page, 10.x), or ``create_network(0)`` for the weakly typed
  FP16-flag path. TensorRT 11: every network is strongly typed and the flag is "retained for API compatibility
  but is ignored" (Python API "Builder" page, 11.0.0), so we pass 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cpnet.runtime import UserError, atomic_write_bytes
from cpnet.runtime.files import file_lock
from cpnet.runtime.log import get_logger

from . import dla, hardware
from .logger import init_plugins, make_logger
from .options import HARDWARE_LEVELS, BuildOptions
from .versions import major_of

log = get_logger("engines")


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
    Q/DQ nodes give the scales), as :mod:`engines.trt.dla` documents."""
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
    workspace = opts.workspace_mib or hardware.default_workspace_mib()
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

