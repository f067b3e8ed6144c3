"""Serialized engine bytes from an ONNX file: the composition of the build's steps, as Polygraphy's
EngineBytesFromNetwork(NetworkFromOnnxPath, CreateConfig) is; and the shared timing cache, merged back after.

:func:`build_serialized_engine` plans (:mod:`engines.trt.plan`, pure), parses (:mod:`engines.trt.network`),
configures (:mod:`engines.trt.config`) and builds; each step is a thin call into TensorRT (the ``tensorrt``
module, or a stand-in, is an argument; nothing here imports it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from cpnet.runtime import UserError, atomic_write_bytes
from cpnet.runtime.files import file_lock
from cpnet.runtime.log import get_logger

from .config import create_config
from .logger import init_plugins, make_logger
from .network import network_from_onnx
from .options import BuildOptions
from .plan import build_plan, describe

log = get_logger("engines")


@dataclass
class BuildResult:
    engine: bytes
    save_timing_cache: Callable[[], int] | None  # merge into the cache file and write it; bytes written
    strongly_typed: bool
    timing_cache_loaded: bool = False
    notes: list[str] = field(default_factory=list)



def build_serialized_engine(trt, opts: BuildOptions, input_size: tuple[int, int] | None,
                            precision: str | None = None) -> BuildResult:
    """Parse the ONNX file and build a serialized engine: strongly typed, except --fp16-flag on TRT 10 and
    DLA on TRT 10 (weakly typed with the FP16 flag, INT8 too where ``precision`` is "int8": the file's
    Q/DQ nodes give the scales), as :mod:`engines.trt.plan` and :mod:`engines.trt.dla` document."""
    plan = build_plan(trt.__version__, opts, precision)
    logger = make_logger(trt, opts.verbose)
    init_plugins(trt, logger)
    builder, network, _parser = network_from_onnx(trt, logger, opts.onnx, plan)  # the parser outlives the build
    made = create_config(trt, builder, network, opts, plan, input_size)
    log.info(f"building engine ({describe(plan, opts)}); this takes a while")
    engine = engine_bytes_from_network(builder, network, made.config, opts.onnx)

    saver = None  # merges this build's timings into the file, once the caller has written the engine
    if opts.timing_cache:
        saver = partial(save_timing_cache, made.config, made.config.get_timing_cache(), Path(opts.timing_cache))
    return BuildResult(engine=engine, save_timing_cache=saver, strongly_typed=plan.strongly_typed,
                       timing_cache_loaded=made.timing_cache_loaded, notes=made.notes)


def engine_bytes_from_network(builder, network, config, onnx: "str | Path") -> bytes:
    """``builder.build_serialized_network``, timed; None from TensorRT is one UserError line."""
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx}; see TensorRT's log lines above")
    log.info(f"engine built in {time.perf_counter() - t0:.1f} s")
    return bytes(memoryview(serialized))


def save_timing_cache(config, cache, path: Path) -> int:
    """Merge this build's timing cache into the file and write it atomically, under the file's lock, as
    Polygraphy's EngineBytesFromNetwork does (``util.LockFile``), so builds running at once keep each other's
    timings. ``combine(previous, ignore_mismatch=False)``: TensorRT skips a cache of another version whatever the
    flag, and appends one of another GPU only with the flag, warning that mixing devices' timings "may lead to
    functional/performance bugs" (NvInfer.h); so a file of another TensorRT or GPU is replaced, with a warning.
    Returns the bytes written."""
    with file_lock(path, what="timing cache"):
        data = path.read_bytes() if path.is_file() else b""
        previous = config.create_timing_cache(data) if data else None
        if previous is not None and not cache.combine(previous, False):
            log.warning(f"timing cache {path}: its entries could not be merged (another TensorRT or GPU); "
                        f"replaced by this build's")
        out = bytes(memoryview(cache.serialize()))
        atomic_write_bytes(path, out)
    return len(out)
