"""A fake TensorRT, PyCUDA and cuda-python that fail where the real libraries fail, selectable by version.

    def test_x(fake_trt):                   # tests/conftest.py's fixture
        world = fake_trt("10.3.0")          # or "10.16.1", "11.4.0", "11.4.1"; knobs: gpu=, dla_cores=, ...
        import tensorrt as trt              # the fake, with 10.3's names

Child processes (CLI tests, two-process tests) get the same fake from :func:`child_env`: it puts
``tests/fake_tensorrt/site`` (a ``tensorrt`` package, ``pycuda``, ``cuda.bindings``) first on
``PYTHONPATH`` and the version and knobs in ``CPNET_FAKE_TRT``; each process has its own world.

What the fake proves (each point is a way the real libraries fail, and the fake fails the same way):

- Names: every class and enum has exactly the public names of the real binding of that version, read
  from NVIDIA's wheel (``names/``, :mod:`.extract_names`); a misspelled or removed name
  (``BuilderFlag.FP16`` on 11, ``ICudaEngine.device_memory_size`` on 11,
  ``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` before 10.9) raises AttributeError on get
  and on set, as pybind11 objects do.
- CUDA contexts: a context is current per thread; PyCUDA calls from a thread with none current raise
  ``pycuda._driver.LogicError: <routine> failed: invalid device context``; ``pycuda.autoprimaryctx``
  pushes the primary context in the importing thread only; TensorRT refuses to run while a context
  other than the primary one (``make_context``) is current.
- Threads: an IExecutionContext enqueued from a second thread before the first thread's work on it is
  synchronized raises :class:`~.trt.FakeMisuse` (the real library gives undefined results).
- Dtypes: engines have the ONNX file's I/O dtypes (``nptype``: HALF→float16, INT8→int8, INT32→int32,
  BOOL→bool, FLOAT→float32); device memory is bytes, so host buffers of another dtype compute garbage.
- Engines compute: a plan is the ONNX file behind a header, run with ONNX Runtime, so results are real.
- Failure paths: ``set_timing_cache`` returns False for a cache of another TensorRT or GPU (unless
  ``ignore_mismatch``); the parser fails on ``unsupported_ops``; the builder returns None for
  precision flags on a strongly typed network, hardware compatibility on DLA, a dynamic input without
  a profile, or ``build_fails``; ``deserialize_cuda_engine`` returns None for another TensorRT version
  or GPU, a version-compatible plan without ``engine_host_code_allowed``, the wrong DLA core, damaged
  bytes, or ``loads=False``; ``set_input_shape`` returns False outside the profile.
- DLA placement: a DLA build puts the nodes of ``dla_gpu_ops`` on the GPU (refused without
  ``BuilderFlag.GPU_FALLBACK``) and the rest on DLA; the inspector JSON shows each run of DLA nodes as one
  ``{ForeignNode[first...last]}`` layer and a ``Reformat`` layer (``"Origin": "REFORMAT"``) at every
  DLA/GPU boundary, shaped as TensorRT's (``engines/layers/placement.py`` says which parts of that shape are
  confirmed). Which layers DLA really runs is TensorRT's decision: the fake only says what it is told.

What it cannot prove: that a real TensorRT builds, parses or runs these files at all (operator support,
tactics, precision, accuracy, speed, memory); the real error messages (the fake's are paraphrases,
except PyCUDA's context error); asynchronous execution (the fake computes at enqueue time, so a missing
``synchronize`` is not caught); DLA, CUDA graphs and version/hardware compatibility beyond the
documented rules it encodes; the 11.4.1 (JetPack 7.2) names, taken from PyPI's 11.4.0 wheel; and any
name outside the classes the lists cover (``extract_names.CLASSES``, ``ENUMS``); enum members' integer
values (the lists hold names, and the fake numbers them in list order, so code that shifts by
``int(flag)`` is checked against the fake's own numbering only); read-only properties (the lists do
not say which are, so a set the real bindings refuse is accepted); and whether a buffer handed to a copy
is contiguous (the fake copies any array).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent / "site"
ENV = "CPNET_FAKE_TRT"
MODULES = ("tensorrt", "pycuda", "pycuda.driver", "pycuda._driver", "pycuda.autoprimaryctx", "pycuda.autoinit",
           "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")

AMPERE = {"name": "Fake A100", "compute_capability": "8.0", "source": "pycuda"}
TURING = {"name": "Fake T4", "compute_capability": "7.5", "source": "pycuda"}


class World:
    """One process's fake libraries: what they were asked, their knobs, device memory and contexts."""

    def __init__(self, version="10.3.0", gpu=None, dla_cores=2, gpus=1, loads=True, build_fails=False,
                 capture_fails=False, unsupported_ops=(), latency_s=0.0, gpu_ms=0.25, jetson=False, dla_gpu_ops=()):
        from .cuda import CudaState
        from .names import list_for

        list_for(version)  # a version without a list is refused here
        self.version = version
        self.gpu = dict(gpu or AMPERE)
        self.dla_cores, self.gpus, self.loads, self.build_fails = dla_cores, gpus, loads, build_fails
        self.capture_fails, self.unsupported_ops = capture_fails, tuple(unsupported_ops)
        self.latency_s, self.gpu_ms, self.jetson = latency_s, gpu_ms, jetson
        self.dla_gpu_ops = tuple(dla_gpu_ops)  # op types a DLA build places on the GPU (fallback)
        self.calls: list = []
        self.trt_log: list = []
        self.runtimes: list = []
        self.misuse: list = []
        self.executions = 0
        self.dtoh_bytes = 0
        self.on_build = None  # called inside build_serialized_network (tests interleave another build there)
        self.pending: dict[int, list] = {}
        self._lock = threading.Lock()
        self.cuda = CudaState(self)
        self._modules: dict | None = None

    def knobs(self) -> dict:
        return {"version": self.version, "gpu": self.gpu, "dla_cores": self.dla_cores, "gpus": self.gpus,
                "loads": self.loads, "build_fails": self.build_fails, "capture_fails": self.capture_fails,
                "unsupported_ops": list(self.unsupported_ops), "latency_s": self.latency_s, "gpu_ms": self.gpu_ms,
                "jetson": self.jetson, "dla_gpu_ops": list(self.dla_gpu_ops)}

    @staticmethod
    def clock() -> float:
        return time.perf_counter()

    def on_synchronize(self, handle: int) -> None:
        for ctx in self.pending.pop(int(handle), []):
            ctx._synchronized()

    def modules(self) -> dict:
        """The fake modules of this world by import name (made once)."""
        if self._modules is None:
            import types

            from .cuda import _driver_module, make_cudart, make_driver
            from .trt import make_tensorrt

            drv = make_driver(self)
            rt = make_cudart(self)
            self._modules = {"tensorrt": make_tensorrt(self), "pycuda.driver": drv,
                             "pycuda._driver": _driver_module(self), "cuda.bindings.runtime": rt}
            self._modules["_"] = types.SimpleNamespace(driver=drv)
        return self._modules

    @property
    def trt(self):
        return self.modules()["tensorrt"]

    @property
    def driver(self):
        return self.modules()["pycuda.driver"]


_current: World | None = None


def current_world() -> World:
    """The world the ``site`` stubs fill themselves from: the one installed in-process, else one made from
    ``CPNET_FAKE_TRT`` (a child process)."""
    global _current
    if _current is None:
        raw = os.environ.get(ENV)
        if not raw:
            raise ImportError(f"the fake TensorRT is on sys.path but {ENV} is not set")
        _current = World(**json.loads(raw))
    return _current


_real_modules: dict | None = None  # the real libraries' modules, where imported before the fake came


def _forget_modules() -> None:
    for name in MODULES:
        sys.modules.pop(name, None)


def install(version: str = "10.3.0", **knobs) -> World:
    """Make ``import tensorrt`` / ``pycuda`` / ``cuda.bindings`` in this process the fake of ``version``."""
    global _current, _real_modules
    if _real_modules is None:  # a pybind11 module cannot be imported twice: keep the real ones aside
        _real_modules = {name: sys.modules[name] for name in MODULES if name in sys.modules}
    _forget_modules()
    _current = World(version, **knobs)
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    return _current


def uninstall() -> None:
    """Back to the real libraries (or none), as before :func:`install`."""
    global _current, _real_modules
    _forget_modules()
    sys.modules.update(_real_modules or {})
    _current = _real_modules = None
    while str(SITE) in sys.path:
        sys.path.remove(str(SITE))


def child_env(world: World, base: dict | None = None) -> dict:
    """Environment for a child process that should see the fake with ``world``'s version and knobs."""
    env = dict(os.environ if base is None else base)
    tests = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), tests] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                              if p])
    env[ENV] = json.dumps(world.knobs())
    return env
