"""Run a CPNet artifact with the backend its file calls for, behind one small interface.

    import engines
    with engines.open("runs/quickstart") as m:             # torch: a run dir or a .pt/.pth checkpoint
        ...
    with engines.open("model.int8.onnx") as m:             # onnxruntime: any ONNX file
        ...
    with engines.open("model.fp16.engine") as m:           # tensorrt: .engine / .plan / .trt
        labels = m.segment(image_rgb)

``engines.open(path, backend=None, **options)`` picks the backend from the path
(``backend=`` overrides it) and passes the options on: torch takes device,
precision, channels_last, threads; onnxruntime takes providers, threads;
tensorrt takes verbose, cuda_graph (replay as a CUDA graph; not for DLA engines),
trust_engine (open an engine that has no manifest) and allow_host_code (let a
version-compatible engine run the host code it carries); a TensorRT backend may be opened
in one thread and used from others (engines.trt.context.PrimaryContext; calls take turns). See
cpnet/runtime/backend.py for the interface, engines/backends/ for the runners and their
registry, and docs/architecture.md for the manifests.

The verbs on top: ``cpnet check`` (engines.check), ``cpnet build`` (engines.build_engine),
``cpnet benchmark`` (engines.benchmark), ``cpnet report`` (engines.report.report, the accuracy-drift report).

What has run where: the TensorRT layer (engines/trt/, engines/backends/tensorrt_backend.py,
engines/build_engine.py past its TensorRT import) is written from NVIDIA's TensorRT 10.x/11.x
documentation, Polygraphy and trtexec, and is tested against the fake TensorRT, PyCUDA and
cuda-python of tests/fake_tensorrt (the real names of TensorRT 10.3, 10.16 and 11.4, a CUDA
context per thread; its docstring says what that proves and what not); none of the machines this project was developed on has TensorRT, so building,
deserializing, running (with or without CUDA graphs), DLA cores and version- or
hardware-compatible engines have never run on a real TensorRT here. The tests marked
``tensorrt`` do that where TensorRT and a GPU are present.
"""

from __future__ import annotations


from cpnet.runtime.backend import Backend  # noqa: F401

from .backends import (BACKENDS, ENGINE_SUFFIXES, ONNX_SUFFIXES, TORCH_SUFFIXES,  # noqa: F401
                       backend_class, backend_for)
from .backends import open_artifact as open  # noqa: A001 - the API name

__all__ = ["open", "backend_for", "Backend", "BACKENDS"]
