"""TensorRT's logger and standard plugins, set up once per process for the builder and the runtime alike."""

from __future__ import annotations

from cpnet.runtime.log import get_logger

log = get_logger("engines")


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

