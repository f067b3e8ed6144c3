"""The builder config of one build, as Polygraphy's CreateConfig makes it (a thin call into TensorRT: the
``tensorrt`` module, or a stand-in, is an argument; nothing here imports it): the workspace, optimization level
and profiling verbosity, the precision flags and DLA device of the :class:`~engines.trt.plan.BuildPlan`,
portability, the optimization profile of a dynamic input, the shared timing cache and a progress monitor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cpnet.runtime import UserError
from cpnet.runtime.files import file_lock
from cpnet.runtime.log import get_logger

from .options import HARDWARE_LEVELS, BuildOptions
from .plan import BuildPlan, profile_shapes

log = get_logger("engines")


@dataclass
class Config:
    """An IBuilderConfig and what making it found: whether the timing cache file loaded, notes for the log."""

    config: object
    timing_cache_loaded: bool = False
    notes: list[str] = field(default_factory=list)


def create_config(trt, builder, network, opts: BuildOptions, plan: BuildPlan,
                  input_size: tuple[int, int] | None) -> Config:
    """The builder config for ``network``, phase by phase."""
    config = builder.create_builder_config()
    made = Config(config)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mib << 20)  # IBuilderConfig, bytes
    if opts.opt_level is not None:
        config.builder_optimization_level = int(opts.opt_level)  # 0..5, default 3 (IBuilderConfig docs)
    # DETAILED so the engine inspector reports per-layer types/formats (EngineInspector docs)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    set_precision(trt, config, opts, plan)
    set_device(trt, builder, config, opts, plan)
    set_portability(trt, config, opts)
    made.notes += add_profile(builder, config, network, opts, input_size)
    if opts.timing_cache:
        made.timing_cache_loaded, note = load_timing_cache(config, Path(opts.timing_cache))
        made.notes += [note] if note else []
    if opts.progress:
        monitor = make_progress_monitor(trt, log.info)
        if monitor is not None:
            config.progress_monitor = monitor  # IBuilderConfig.progress_monitor (TRT >= 10.0)
    return made


def set_precision(trt, config, opts: BuildOptions, plan: BuildPlan) -> None:
    """TF32 off unless asked; the plan's precision flags (TensorRT 10 only: options refuse them on 11)."""
    if not opts.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default for FP32 layers on Ampere+; Polygraphy CreateConfig clears it unless asked
        # (config.clear_flag(trt.BuilderFlag.TF32)), so an FP32 engine computes in FP32
        config.clear_flag(trt.BuilderFlag.TF32)
    for name in plan.precision_flags:  # FP16, then INT8 for a Q/DQ file on 10.x DLA (trtexec --int8 --fp16)
        config.set_flag(getattr(trt.BuilderFlag, name))


def set_device(trt, builder, config, opts: BuildOptions, plan: BuildPlan) -> None:
    """DLA as the default device, its core, and GPU fallback where asked and the DLA path has it."""
    if opts.dla_core is None:
        return
    n = int(getattr(builder, "num_DLA_cores", 0))
    if opts.dla_core >= n:
        raise UserError(f"--dla-core {opts.dla_core}: this device has {n} DLA core(s)")
    # Polygraphy CreateConfig(use_dla, allow_gpu_fallback) and "Working with DLA" docs
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(opts.dla_core)
    if opts.gpu_fallback and plan.gpu_fallback_possible:  # Windows on ARM has none ("Working with DLA", 11.4.1)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def set_portability(trt, config, opts: BuildOptions) -> None:
    """Version compatibility ("Version Compatibility": the plan embeds the lean runtime) and the hardware
    compatibility level (IBuilderConfig.hardware_compatibility_level, as Polygraphy's CreateConfig sets it)."""
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.hardware_compatibility != "none":
        config.hardware_compatibility_level = hardware_level_enum(trt, opts.hardware_compatibility)


def hardware_level_enum(trt, level: str):
    """trt.HardwareCompatibilityLevel member for a --hardware-compatibility value (UserError if this TensorRT lacks it)."""
    enum = getattr(trt, "HardwareCompatibilityLevel", None)
    member = getattr(enum, HARDWARE_LEVELS[level], None) if enum is not None else None
    if member is None:
        raise UserError(f"--hardware-compatibility {level}: TensorRT {trt.__version__} has no "
                        f"HardwareCompatibilityLevel.{HARDWARE_LEVELS[level]}")
    return member



def add_profile(builder, config, network, opts: BuildOptions, input_size: tuple[int, int] | None) -> list[str]:
    """One optimization profile for the network's dynamic inputs (:func:`engines.trt.plan.profile_shapes`), none
    for a static network; returns the notes saying what it holds."""
    profile, notes = None, []
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shapes = profile_shapes(inp.name, list(inp.shape), opts, input_size)
        if shapes is None:
            continue
        if profile is None:
            profile = builder.create_optimization_profile()
        lo, opt, hi = shapes
        profile.set_shape(inp.name, lo, opt, hi)
        notes.append(f"optimization profile for '{inp.name}': min {lo}, opt {opt}, max {hi}")
    if profile is not None:
        config.add_optimization_profile(profile)
    return notes


def load_timing_cache(config, path: Path) -> tuple[bool, str | None]:
    """Load the timing cache file into the config if it exists, as Polygraphy's CreateConfig does
    (``create_timing_cache(bytes)`` + ``set_timing_cache(cache, ignore_mismatch=False)``), else an empty cache;
    after the build :func:`engines.trt.build.save_timing_cache` merges it into whatever the file holds by then.
    Returns (loaded, a note where the file was refused)."""
    with file_lock(path, what="timing cache"):
        data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data) if data else None
    loaded, note = True, None
    if cache is None or not config.set_timing_cache(cache, False):
        loaded = False
        if data:
            note = f"timing cache {path} does not match this TensorRT/GPU (or is damaged); starting an empty one"
        config.set_timing_cache(config.create_timing_cache(b""), False)
    log.info(f"timing cache {path}: {'loaded ' + str(len(data)) + ' bytes' if loaded else 'new'}")
    return loaded, note


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
