"""One execution context replayed as a CUDA graph, as trtexec's --useCudaGraph does (the developer guide's "CUDA
Graphs"); the CUDA calls go through cuda-python's runtime bindings, injected (:func:`engines.trt.imports.import_cudart`)."""

from __future__ import annotations

from typing import Callable

from cpnet.runtime import CpnetError
from cpnet.runtime.log import get_logger

log = get_logger("engines")


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

