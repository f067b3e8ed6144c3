"""The one CUDA-context policy (docs/architecture.md §6): the device's primary context, pushed around each call."""

from __future__ import annotations

from cpnet.runtime import MissingDependency


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

