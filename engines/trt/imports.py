"""Importing TensorRT, PyCUDA and cuda-python, each failure one MissingDependency line saying what to install.

Nothing here imports them at module level: every stage that can run without TensorRT (the check, the
report on ONNX Runtime, ``cpnet doctor``) imports this module freely.
"""

from __future__ import annotations

from cpnet.runtime import MissingDependency

INSTALL_HINT = ("on a desktop GPU: pip install -e .[tensorrt-cu12] (CUDA-12 driver) or .[tensorrt-cu13] "
                "(CUDA-13 driver) with NVIDIA's package index; "
                "on a Jetson: JetPack's TensorRT in a venv made with --system-site-packages (see README)")


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

