"""The runtime side's thin calls into TensorRT: a plan deserialized with the settings its manifest implies, input
shapes set and checked, what the engine says of itself (I/O tensors, activation memory, the inspector's JSON).

Each function takes the ``tensorrt`` module (or a stand-in) as an argument; nothing here imports it.
``ICudaEngine.device_memory_size`` is removed in 11.x; ``device_memory_size_v2`` (10.1+) stays.
"""

from __future__ import annotations

from cpnet.runtime import UserError

from .logger import init_plugins, make_logger
from .manifest import DeserializeOptions, rebuild_hint


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
