"""Stand-ins for PyCUDA (``pycuda.driver``, ``pycuda._driver``, ``pycuda.autoprimaryctx``) and cuda-python's
runtime bindings (``cuda.bindings.runtime``), with a CUDA context current per thread as the driver has it.

The driver API works on the calling thread's current context: with none current, cuMemAlloc, the async
copies, cuStreamCreate, cuEventCreate and the rest fail with CUDA_ERROR_INVALID_CONTEXT, which PyCUDA
raises as ``pycuda._driver.LogicError: <routine> failed: invalid device context``. So here:
``Device(0).retain_primary_context()`` is the one primary context, ``push()`` / ``Context.pop()`` make it
current on the calling thread only, and ``pycuda.autoprimaryctx`` pushes it in the importing thread only
(PyCUDA's module does exactly that, and pops it at exit). ``make_context()`` makes a new, non-primary
context: TensorRT works in the primary one (the CUDA runtime's), so the fake TensorRT refuses to execute
while one is current. The runtime API (cuda-python) binds the primary context itself, as cudart does.
"""

from __future__ import annotations

import enum
import threading
import time
import types

import numpy as np


class _DriverError(Exception):
    pass


class LogicError(_DriverError):
    pass


class DriverMemoryError(_DriverError):
    pass


def _driver_module(world) -> types.ModuleType:
    """``pycuda._driver``: the error classes (PyCUDA: ``pycuda._driver.Error``, ``LogicError``, ...)."""
    m = types.ModuleType("pycuda._driver")
    m.Error, m.LogicError, m.MemoryError = _DriverError, LogicError, DriverMemoryError
    return m


_DriverError.__module__ = LogicError.__module__ = DriverMemoryError.__module__ = "pycuda._driver"
_DriverError.__name__, _DriverError.__qualname__ = "Error", "Error"
DriverMemoryError.__name__, DriverMemoryError.__qualname__ = "MemoryError", "MemoryError"


class CudaState:
    """What one process's (fake) CUDA driver knows: the contexts current per thread, device memory, streams."""

    def __init__(self, world):
        self.world = world
        self.local = threading.local()
        self.primary = None
        self.contexts_made = 0
        self.memory: dict[int, dict] = {}  # address -> {"data": bytearray, "context": ctx}
        self.next_addr = 1 << 20
        self.lock = threading.Lock()
        self.capturing: dict[int, list] = {}  # stream handle -> recorded work
        self.next_stream = 100

    def stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def current(self):
        s = self.stack()
        return s[-1] if s else None

    def need_context(self, routine: str):
        ctx = self.current()
        if ctx is None or ctx.released:
            raise LogicError(f"{routine} failed: invalid device context")
        return ctx

    def alloc(self, nbytes: int, ctx) -> int:
        with self.lock:
            self.next_addr += max(256, (int(nbytes) + 255) // 256 * 256)
            addr = self.next_addr
            self.memory[addr] = {"data": bytearray(int(nbytes)), "context": ctx}
        return addr

    def region(self, addr: int, nbytes: int, routine: str) -> bytearray:
        rec = self.memory.get(int(addr))
        if rec is None:
            raise LogicError(f"{routine} failed: invalid argument")
        if nbytes > len(rec["data"]):
            raise LogicError(f"{routine} failed: invalid argument")
        return rec["data"]


def make_driver(world) -> types.ModuleType:
    """``pycuda.driver`` for ``world``."""
    state: CudaState = world.cuda
    drv = types.ModuleType("pycuda.driver")
    drv.Error, drv.LogicError, drv.MemoryError = _DriverError, LogicError, DriverMemoryError

    class Context:
        def __init__(self, primary: bool):
            self.primary = primary
            self.released = False
            self.refs = 0

        def push(self):
            state.stack().append(self)

        @staticmethod
        def pop():
            s = state.stack()
            if not s:
                raise LogicError("cuCtxPopCurrent failed: invalid device context")
            s.pop()

        @staticmethod
        def get_current():
            return state.current()

        def detach(self):
            if self.primary:
                self.refs -= 1
                if self.refs <= 0:
                    self.released = True
            else:
                self.released = True
            s = state.stack()
            if s and s[-1] is self:
                s.pop()

        def synchronize(self):
            state.need_context("cuCtxSynchronize")

    class Device:
        def __init__(self, ordinal: int):
            if not _initialized[0]:
                raise LogicError("cuDeviceGet failed: initialization error")
            if ordinal >= world.gpus:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            self.ordinal = ordinal

        @staticmethod
        def count():
            if not _initialized[0]:
                raise LogicError("cuDeviceGetCount failed: initialization error")
            return world.gpus

        def name(self):
            return world.gpu["name"]

        def compute_capability(self):
            major, minor = str(world.gpu["compute_capability"]).split(".")
            return int(major), int(minor)

        def total_memory(self):
            return 8 << 30

        def retain_primary_context(self):
            if state.primary is None or state.primary.released:
                state.primary = Context(primary=True)
            state.primary.refs += 1
            return state.primary

        def make_context(self, flags=0):
            state.contexts_made += 1
            ctx = Context(primary=False)
            ctx.push()
            return ctx

    _initialized = [False]

    def init(flags=0):
        _initialized[0] = True

    class DeviceAllocation:
        def __init__(self, addr: int):
            self.addr = addr

        def __int__(self):
            return self.addr

        __index__ = __int__

        def free(self):
            state.need_context("cuMemFree")
            with state.lock:
                state.memory.pop(self.addr, None)

    def mem_alloc(nbytes):
        ctx = state.need_context("cuMemAlloc")
        return DeviceAllocation(state.alloc(int(nbytes), ctx))

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        state.need_context("cuMemHostAlloc")
        return np.empty(shape, dtype, order=order)

    def _pause():
        if world.latency_s:
            time.sleep(world.latency_s)  # lets another thread in between, as a real copy's latency does

    def memcpy_htod_async(dest, src, stream=None):
        state.need_context("cuMemcpyHtoDAsync")
        src = np.ascontiguousarray(src)
        data = state.region(int(dest), src.nbytes, "cuMemcpyHtoDAsync")
        _pause()
        data[:src.nbytes] = src.tobytes()

    def memcpy_dtoh_async(dest, src, stream=None):
        state.need_context("cuMemcpyDtoHAsync")
        data = state.region(int(src), dest.nbytes, "cuMemcpyDtoHAsync")
        _pause()
        dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(data[:dest.nbytes]), np.uint8)
        world.dtoh_bytes += dest.nbytes

    class Stream:
        def __init__(self, flags=0):
            state.need_context("cuStreamCreate")
            with state.lock:
                state.next_stream += 1
                self.handle = state.next_stream

        def synchronize(self):
            state.need_context("cuStreamSynchronize")
            world.on_synchronize(self.handle)

        def is_done(self):
            return True

    class Event:
        def __init__(self, flags=0):
            state.need_context("cuEventCreate")
            self.t = None

        def record(self, stream=None):
            state.need_context("cuEventRecord")
            self.t = world.clock()
            return self

        def synchronize(self):
            state.need_context("cuEventSynchronize")
            return self

        def time_since(self, other):
            state.need_context("cuEventElapsedTime")
            return world.gpu_ms

    drv.init, drv.Device, drv.Context = init, Device, Context
    drv.DeviceAllocation, drv.mem_alloc, drv.pagelocked_empty = DeviceAllocation, mem_alloc, pagelocked_empty
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    drv.Stream, drv.Event = Stream, Event
    return drv


def autoprimaryctx_init(drv) -> None:
    """What ``import pycuda.autoprimaryctx`` does (PyCUDA's autoprimaryctx.py): init, retain device 0's
    primary context, push it in the importing thread, pop it at exit."""
    import atexit

    drv.init()
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()

    def _finish_up():
        try:
            drv.Context.pop()
        except Exception:  # another thread's exit: nothing current here
            pass

    atexit.register(_finish_up)


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorStreamCaptureInvalidated = 901


def make_cudart(world) -> types.ModuleType:
    """``cuda.bindings.runtime``: the CUDA-graph calls, returning ``(cudaError_t, value...)`` tuples."""
    state: CudaState = world.cuda
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = cudaError_t
    rt.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeGlobal=0,
                                                     cudaStreamCaptureModeThreadLocal=1,
                                                     cudaStreamCaptureModeRelaxed=2)

    def begin(stream, mode):
        world.calls.append(("begin_capture", mode))
        state.capturing[int(stream)] = []
        return (cudaError_t.cudaSuccess,)

    def end(stream):
        ops = state.capturing.pop(int(stream), None)
        if ops is None:
            return (cudaError_t.cudaErrorInvalidValue, None)
        if world.capture_fails:
            return (cudaError_t.cudaErrorStreamCaptureInvalidated, None)
        return (cudaError_t.cudaSuccess, ("graph", ops))

    def instantiate(graph, flags):
        return (cudaError_t.cudaSuccess, ("exec", graph[1]))

    def launch(exec_, stream):
        world.calls.append("graph_launch")
        for op in exec_[1]:
            op()
        return (cudaError_t.cudaSuccess,)

    def device_properties(device):
        major, minor = str(world.gpu["compute_capability"]).split(".")
        return (cudaError_t.cudaSuccess, types.SimpleNamespace(name=world.gpu["name"].encode(), major=int(major),
                                                               minor=int(minor)))

    rt.cudaStreamBeginCapture, rt.cudaStreamEndCapture = begin, end
    rt.cudaGraphInstantiate, rt.cudaGraphLaunch = instantiate, launch
    rt.cudaGraphDestroy = lambda g: (cudaError_t.cudaSuccess,)
    rt.cudaGraphExecDestroy = lambda e: world.calls.append("exec_destroy") or (cudaError_t.cudaSuccess,)
    rt.cudaGetLastError = lambda: (cudaError_t.cudaSuccess,)
    rt.cudaGetDeviceProperties = device_properties
    return rt
