"""TensorRT backend: a serialized engine (.engine / .plan / .trt) run with PyCUDA buffers.

Given an ONNX file instead, it runs the engine :mod:`engines.engine_cache` finds for it, building it there on
first use (``engine_cache=DIR`` for the cache folder, ``build={...}`` for BuildOptions fields such as
``dla_core`` or ``batch``); the engine is then opened exactly as below.

Opening an engine (an engine is native code, so nothing runs before these pass):

1. its manifest is compared with the running TensorRT version and GPU
   (``engines.trt.manifest.check_engine_manifest``: version-compatible and hardware-compatible engines
   as NVIDIA documents them); a mismatch is refused with one line saying how to rebuild, and an
   engine without a manifest is refused unless ``trust_engine=True`` (``--trust-engine``); a
   version-compatible engine (it carries host code) is refused unless ``allow_host_code=True``
   (``--allow-host-code``), and a DLA engine with ``cuda_graph=True`` is refused (trtexec turns
   graphs off there: "CUDA graphs and DLA offloading are not simultaneously supported");
2. the engine's bytes are checked against the sha256 in its manifest (an integrity check: the
   manifest is not signed), and those same bytes are deserialized, after TensorRT's standard
   plugins are registered and the runtime is given ``engine_host_code_allowed`` where the caller
   allowed it and ``IRuntime.DLA_core`` for DLA plans.

Two flags, not one: ``--trust-engine`` says "I made this engine, run it without a manifest" (GPU code
TensorRT loads); ``--allow-host-code`` says "let it run native code on the CPU in this process".
An engine without a manifest that is version compatible needs both.

Threads and CUDA contexts (docs/architecture.md): everything runs in the device's primary context,
pushed around each call on the calling thread (``engines.trt.context.PrimaryContext``), so a backend opened
in one thread runs in another. One execution context and one set of buffers per backend, behind a
lock: calls from two threads take turns (the demo's drawing thread runs the model only when paused,
for the prior view), which costs nothing measurable there, while a context and buffers per thread
would double the activation memory (``device_memory_size_v2``) on an 8 GB Jetson and need a CUDA
graph per thread.

I/O dtypes: the project's engines have FP32 (or FP16) inputs and outputs; an engine with INT8, BOOL
or other I/O was not made by cpnet and is refused in one line.

Inference follows NVIDIA's name-based I/O pattern for TensorRT 10/11 (the 8.x -> 10.x migration
guide's "allocate_buffers" / "do_inference"): page-locked host buffers (``cuda.pagelocked_empty``),
device buffers (``cuda.mem_alloc``), one ``cuda.Stream``, ``context.set_tensor_address`` per I/O
tensor, then ``memcpy_htod_async`` -> ``execute_async_v3(stream.handle)`` -> ``memcpy_dtoh_async``
-> ``stream.synchronize()``; only the outputs the caller asks for are copied back (``infer``: the
logits; ``infer_all``: every output), each output still bound to its device buffer. With ``cuda_graph=True`` the execution is captured once into a CUDA
graph and replayed (``engines.trt.cuda_graph.CudaGraph``, trtexec's --useCudaGraph). GPU time per call comes
from CUDA events around the execution.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from cpnet.runtime import UserError, read_manifest
from cpnet.runtime.backend import Backend
from cpnet.runtime.log import get_logger

from ..trt.context import PrimaryContext
from ..trt.cuda_graph import CudaGraph
from ..trt.engine import deserialize_engine, device_memory_size, io_tensors, set_input_shape
from ..trt.hardware import gpu_info
from ..trt.imports import import_cudart, import_pycuda, import_tensorrt
from ..trt.manifest import DeserializeOptions, check_engine_manifest, check_host_code, verify_engine_bytes

log = get_logger("engines")

OPTIONS = ("verbose", "cuda_graph", "trust_engine", "allow_host_code", "engine_cache", "build")
IO_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class _Buffer:
    def __init__(self, cuda, shape, dtype):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        size = int(np.prod(self.shape)) if self.shape else 1
        self.host = cuda.pagelocked_empty(size, self.dtype)  # page-locked: async copies need it
        self.device = cuda.mem_alloc(max(1, self.host.nbytes))
        self.nbytes = int(self.host.nbytes)

    def free(self):
        try:
            self.device.free()
        except Exception:
            pass


def open_checks(path: Path, manifest: dict | None, trt_version: str, gpu: dict | None, trust_engine: bool,
                jetson: bool | None = None) -> bytes:
    """What is decided with TensorRT imported, before it sees the engine: manifest vs this TensorRT and GPU, then
    the bytes vs the manifest's sha256. Returns the verified bytes (the ones to deserialize). Warnings go to the
    log. (No manifest without trust, host code and CUDA graphs on DLA are refused before, without TensorRT.)"""
    for w in check_engine_manifest(manifest, trt_version, gpu, str(path), trust=trust_engine, jetson=jetson):
        log.warning(w)
    data = path.read_bytes()
    verify_engine_bytes(data, manifest, str(path), trust=trust_engine)
    return data


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: "str | Path", verbose: bool = False, cuda_graph: bool = False,
                 trust_engine: bool = False, allow_host_code: bool = False, engine_cache: "str | Path | None" = None,
                 build: dict | None = None, **unknown):
        self.refuse_unknown(unknown, OPTIONS)
        path = Path(path)
        if path.suffix.lower() == ".onnx":  # an ONNX file: its engine from the cache, built here on first use
            from ..engine_cache import ensure_engine

            path = ensure_engine(path, {**(build or {}), "verbose": verbose} if verbose else build, engine_cache)
        elif build:  # (engine_cache is where engines of ONNX files go: an engine file given as such needs none)
            raise UserError(f"{path}: build options apply to an ONNX file opened on the tensorrt backend, not to "
                            f"an engine file; rebuild it with cpnet build")
        if not path.is_file():
            raise UserError(f"{path}: no such engine file")
        manifest = read_manifest(path, required=False)
        if manifest is not None and manifest.get("kind", "engine") != "engine":
            raise UserError(f"{path}: its manifest describes a {manifest.get('kind')!r}, not an engine")
        if manifest is None and not trust_engine:  # an engine is native code: refused before TensorRT is even needed
            check_engine_manifest(None, "", None, str(path), trust=False)
        check_host_code(manifest, allow_host_code, str(path))
        options = DeserializeOptions.from_manifest(manifest, allow_host_code=allow_host_code)
        if cuda_graph and options.dla_core is not None:
            raise UserError(f"{path}: a DLA engine cannot run as a CUDA graph (trtexec: \"CUDA graphs and DLA "
                            f"offloading are not simultaneously supported\"); run it without --cuda-graph")
        super().__init__(str(path), manifest)
        self._buffers: dict[str, _Buffer] = {}
        self._engine = self._context = self._runtime = None
        self._graph = None
        self._lock = threading.Lock()  # one execution context and one set of buffers: calls take turns
        self._cuda_context = None

        trt = import_tensorrt()
        cuda = import_pycuda()
        cudart = import_cudart() if cuda_graph else None
        gpu = gpu_info()
        data = open_checks(path, manifest, trt.__version__, gpu, trust_engine)
        self._trt, self._cuda = trt, cuda
        self._cuda_context = PrimaryContext(cuda)
        with self._cuda_context:
            self._open(trt, cuda, cudart, data, options, verbose)
        self.gpu = gpu

    def _open(self, trt, cuda, cudart, data: bytes, options, verbose: bool) -> None:
        path = self.path
        self._runtime, self._engine = deserialize_engine(trt, data, path, self.manifest or None,
                                                                  verbose=verbose, options=options)
        self._io = io_tensors(trt, self._engine)
        odd = [t for t in self._io if t["dtype"] not in IO_DTYPES]
        if odd:
            t = odd[0]
            raise UserError(f"{path}: {'input' if t['is_input'] else 'output'} '{t['name']}' is "
                            f"{t['dtype'] or t['trt_dtype']}; cpnet runs engines with FP32 or FP16 inputs and "
                            f"outputs, as its ONNX files have: rebuild it with cpnet build <model.onnx>")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise UserError(f"{path}: could not create an execution context (out of GPU memory?)")
        self._stream = cuda.Stream()  # a non-default stream: CUDA graph capture needs one
        self._start, self._end = cuda.Event(), cuda.Event()
        if cudart is not None:
            stream = self._stream
            self._graph = CudaGraph(
                cudart, stream.handle, execute=lambda: self._context.execute_async_v3(stream_handle=stream.handle),
                synchronize=stream.synchronize)

        inputs = [t for t in self._io if t["is_input"]]
        outputs = [t for t in self._io if not t["is_input"]]
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{path}: expected one input and at least one output, found "
                            f"{len(inputs)} input(s) and {len(outputs)} output(s)")
        self._input = inputs[0]
        wanted = (self.manifest.get("output") or {}).get("name") if isinstance(self.manifest.get("output"), dict) \
            else self.manifest.get("output")
        self._output = next((t for t in outputs if t["name"] in (wanted, "logits")), outputs[0])
        self._dynamic = any(d < 0 for d in self._input["shape"])
        if not self._dynamic:
            self._allocate(self._input["shape"])

    # --- buffers -------------------------------------------------------------------------
    def _allocate(self, input_shape) -> None:
        """(Re)allocate I/O buffers for an input shape and bind their addresses to the context."""
        ctx = self._context
        if self._dynamic:
            set_input_shape(ctx, self._engine, self._input["name"], input_shape, self.path)
        if self._graph is not None:
            self._graph.reset()  # a graph fixes shapes and buffer addresses
        for b in self._buffers.values():
            b.free()
        self._buffers = {}
        for t in self._io:
            shape = input_shape if t["is_input"] else tuple(ctx.get_tensor_shape(t["name"]))
            buf = _Buffer(self._cuda, shape, t["dtype"])
            self._buffers[t["name"]] = buf
            ctx.set_tensor_address(t["name"], int(buf.device))

    # --- inference -----------------------------------------------------------------------
    @property
    def engine_batch(self) -> int | None:
        d = self._input["shape"][0] if self._input["shape"] else 1
        return None if d < 0 else int(d)

    @property
    def cuda_graph_active(self) -> bool:
        return self._graph is not None and self._graph.active

    @property
    def output_names(self) -> list[str]:
        """The engine's outputs, the logits first (``prior`` follows in engines built from --with-prior files)."""
        return [self._output["name"]] + [t["name"] for t in self._io
                                         if not t["is_input"] and t["name"] != self._output["name"]]

    def infer(self, batch) -> np.ndarray:
        return self._infer(batch, [self._output["name"]])[self._output["name"]]

    def infer_all(self, batch) -> dict[str, np.ndarray]:
        return self._infer(batch, self.output_names)

    def _infer(self, batch, names: list[str]) -> dict[str, np.ndarray]:
        """Run on any thread: the primary context is pushed around the call, and the lock makes callers take
        turns on the one execution context and its buffers."""
        x = self.checked_batch(batch)
        with self._lock, self._cuda_context:
            return self._infer_locked(x, names)

    def _infer_locked(self, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        want = self._input["shape"]
        if not self._dynamic:
            if tuple(x.shape[1:]) != tuple(want[1:]):
                raise UserError(f"{self.path}: engine input is {tuple(want)}, got a batch of {tuple(x.shape)}")
            eb = want[0]
            if x.shape[0] == eb:
                return self._run(x, names)
            if x.shape[0] % eb:
                raise UserError(f"{self.path}: engine batch is {eb}; a batch of {x.shape[0]} is not a multiple of it")
            outs, gpu_ms = [], 0.0
            for i in range(0, x.shape[0], eb):  # a batch-1 engine runs a larger batch one slice at a time
                outs.append(self._run(x[i:i + eb], names))
                gpu_ms += self.last_gpu_ms or 0.0
            self.last_gpu_ms = gpu_ms
            return {name: np.concatenate([o[name] for o in outs]) for name in outs[0]}
        inbuf = self._buffers.get(self._input["name"])
        if inbuf is None or inbuf.shape != tuple(x.shape):
            self._allocate(x.shape)
        return self._run(x, names)

    def _run(self, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        cuda, stream = self._cuda, self._stream
        inp = self._buffers[self._input["name"]]
        np.copyto(inp.host.reshape(inp.shape), x.astype(inp.dtype, copy=False))
        cuda.memcpy_htod_async(inp.device, inp.host, stream)
        self._start.record(stream)
        if self._graph is not None:
            ok = self._graph.run()
        else:
            ok = self._context.execute_async_v3(stream_handle=stream.handle)
        if not ok:
            raise UserError(f"{self.path}: TensorRT execution failed (see the log line above)")
        self._end.record(stream)
        for name in names:  # every output is bound to a device buffer; only the asked ones come back
            b = self._buffers[name]
            cuda.memcpy_dtoh_async(b.host, b.device, stream)
        stream.synchronize()
        self.last_gpu_ms = float(self._end.time_since(self._start))  # ms between the two events
        return {name: np.array(self._buffers[name].host.reshape(self._buffers[name].shape), dtype=np.float32,
                               copy=True) for name in names}

    def device_memory(self) -> dict | None:
        io = sum(b.nbytes for b in self._buffers.values())
        eng = device_memory_size(self._engine) if self._engine is not None else 0
        return {"engine_device_memory": eng, "io_buffers": io, "total": eng + io,
                "source": "ICudaEngine.device_memory_size_v2 + I/O buffers"}

    def describe(self) -> str:
        dev = (self.manifest.get("device") or "gpu")
        graph = ""
        if self._graph is not None:
            graph = ", CUDA graph" if self._graph.active else (", no CUDA graph: capture failed" if self._graph.failed
                                                                else ", CUDA graph")
        return f"tensorrt {self._trt.__version__} ({self.precision}, {dev}{graph})"

    def close(self) -> None:
        ctx = getattr(self, "_cuda_context", None)
        if ctx is None:  # nothing CUDA was made
            super().close()
            return
        with getattr(self, "_lock", threading.Lock()), ctx:  # CUDA objects are released in their context
            graph = getattr(self, "_graph", None)
            if graph is not None:
                try:
                    graph.reset()
                except Exception:
                    pass
            for b in getattr(self, "_buffers", {}).values():
                b.free()
            self._buffers = {}
            # release in reverse order of creation: context, engine, runtime
            self._context = None
            self._engine = None
            self._runtime = None
            self._stream = self._start = self._end = None
        self._cuda_context = None
        super().close()
