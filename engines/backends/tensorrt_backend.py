"""TensorRT backend: a serialized engine (.engine / .plan / .trt) run with PyCUDA buffers.

Opening an engine first compares its manifest with the running TensorRT version
and GPU (``engines.trt.check_engine_manifest``): a mismatch is refused with one
line saying how to rebuild; a missing manifest is a warning. Inference follows
NVIDIA's name-based I/O pattern for TensorRT 10/11 (the 8.x -> 10.x migration
guide's "allocate_buffers" / "do_inference"): page-locked host buffers
(``cuda.pagelocked_empty``), device buffers (``cuda.mem_alloc``), one
``cuda.Stream``, ``context.set_tensor_address`` per I/O tensor, then
``memcpy_htod_async`` -> ``execute_async_v3(stream.handle)`` -> ``memcpy_dtoh_async``
-> ``stream.synchronize()``. GPU time per call comes from CUDA events around the
execution.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cpnet.runtime import UserError, read_manifest

from .. import trt as trtlayer
from cpnet.runtime.backend import Backend, as_numpy_batch


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


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: "str | Path", verbose: bool = False, **unknown):
        if unknown:
            raise UserError(f"tensorrt backend: unknown option(s) {', '.join(sorted(unknown))} (known: verbose)")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such engine file")
        manifest = read_manifest(path, required=False)
        super().__init__(str(path), manifest)
        self._buffers: dict[str, _Buffer] = {}
        self._engine = self._context = self._runtime = None

        trt = trtlayer.import_tensorrt()
        cuda = trtlayer.import_pycuda()
        gpu = trtlayer.gpu_info()
        for w in trtlayer.check_engine_manifest(manifest, trt.__version__, gpu, str(path)):
            warnings.warn(w, stacklevel=2)
        self._trt, self._cuda = trt, cuda
        self._runtime, self._engine = trtlayer.deserialize_engine(trt, path.read_bytes(), str(path), manifest,
                                                                  verbose=verbose)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise UserError(f"{path}: could not create an execution context (out of GPU memory?)")
        self._stream = cuda.Stream()
        self._start, self._end = cuda.Event(), cuda.Event()
        self.gpu = gpu

        self._io = trtlayer.io_tensors(trt, self._engine)
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
            ctx.set_input_shape(self._input["name"], tuple(int(d) for d in input_shape))
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

    def infer(self, batch) -> np.ndarray:
        x = as_numpy_batch(batch)
        want = self._input["shape"]
        if not self._dynamic:
            if tuple(x.shape[1:]) != tuple(want[1:]):
                raise UserError(f"{self.path}: engine input is {tuple(want)}, got a batch of {tuple(x.shape)}")
            eb = want[0]
            if x.shape[0] == eb:
                return self._run(x)
            if x.shape[0] % eb:
                raise UserError(f"{self.path}: engine batch is {eb}; a batch of {x.shape[0]} is not a multiple of it")
            outs, gpu_ms = [], 0.0
            for i in range(0, x.shape[0], eb):  # a batch-1 engine runs a larger batch one slice at a time
                outs.append(self._run(x[i:i + eb]))
                gpu_ms += self.last_gpu_ms or 0.0
            self.last_gpu_ms = gpu_ms
            return np.concatenate(outs)
        inbuf = self._buffers.get(self._input["name"])
        if inbuf is None or inbuf.shape != tuple(x.shape):
            self._allocate(x.shape)
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        cuda, stream = self._cuda, self._stream
        inp = self._buffers[self._input["name"]]
        np.copyto(inp.host.reshape(inp.shape), x.astype(inp.dtype, copy=False))
        cuda.memcpy_htod_async(inp.device, inp.host, stream)
        self._start.record(stream)
        if not self._context.execute_async_v3(stream_handle=stream.handle):
            raise UserError(f"{self.path}: TensorRT execution failed (see the log line above)")
        self._end.record(stream)
        out = self._buffers[self._output["name"]]
        for t in self._io:
            if not t["is_input"]:
                b = self._buffers[t["name"]]
                cuda.memcpy_dtoh_async(b.host, b.device, stream)
        stream.synchronize()
        self.last_gpu_ms = float(self._end.time_since(self._start))  # ms between the two events
        return np.array(out.host.reshape(out.shape), dtype=np.float32, copy=True)

    def device_memory(self) -> dict | None:
        io = sum(b.nbytes for b in self._buffers.values())
        eng = trtlayer.device_memory_size(self._engine) if self._engine is not None else 0
        return {"engine_device_memory": eng, "io_buffers": io, "total": eng + io,
                "source": "ICudaEngine.device_memory_size_v2 + I/O buffers"}

    def describe(self) -> str:
        dev = (self.manifest.get("device") or "gpu")
        return f"tensorrt {self._trt.__version__} ({self.precision}, {dev})"

    def close(self) -> None:
        for b in getattr(self, "_buffers", {}).values():
            b.free()
        self._buffers = {}
        # release in reverse order of creation: context, engine, runtime
        self._context = None
        self._engine = None
        self._runtime = None
        super().close()
