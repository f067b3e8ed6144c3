"""Every runner of an artifact, and the one registry that opens them: ``engines.open(path)``.

One module per backend, each implementing :class:`cpnet.runtime.backend.Backend` (the small interface
in the runtime, below every stage), as Polygraphy keeps one runner per framework under ``backend/``:

| name | module | runs |
|---|---|---|
| ``torch`` | :mod:`.torch_backend` | a run directory or a ``.pt``/``.pth`` checkpoint |
| ``onnxruntime`` | :mod:`.onnxruntime_backend` | any ONNX file cpnet made |
| ``tensorrt`` | :mod:`.tensorrt_backend` | a ``.engine``/``.plan``/``.trt`` file |
| ``openvino`` | :mod:`.openvino_backend` | any ONNX file cpnet made, on Intel's runtime (``backend="openvino"``) |

The registry names each module relative to this package and imports it only when an artifact of its
kind is opened, so a machine without TensorRT (or PyCUDA, or PyTorch) still opens the rest. Every
stage that runs artifacts (the drift report, the benchmark, the demo) is at or above this one and
imports it; nothing below names a backend.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from cpnet.runtime.backend import Backend
from cpnet.runtime.errors import UserError

#: backend name -> (module in this package, class)
BACKENDS = {
    "torch": (".torch_backend", "TorchBackend"),
    "onnxruntime": (".onnxruntime_backend", "OnnxModel"),
    "tensorrt": (".tensorrt_backend", "TensorRTBackend"),
    "openvino": (".openvino_backend", "OpenVinoModel"),
}
TORCH_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def backend_class(name: str):
    """The class of backend ``name`` (imported now)."""
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module, __name__), cls)


def backend_for(path) -> str:
    """The backend name for an artifact path: run dir / .pt / .pth -> torch, .onnx -> onnxruntime,
    .engine / .plan / .trt -> tensorrt."""
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir() or suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise UserError(f"{p}: cannot tell which backend runs this file (expected a run directory, .pt/.pth, "
                    f".onnx or .engine/.plan/.trt); pass backend={'|'.join(BACKENDS)}")


#: backends that run an ONNX file besides onnxruntime (tensorrt builds its engine on first use)
ONNX_ALSO = ("openvino", "tensorrt")


def can_run(backend: str, path) -> bool:
    """Whether ``backend`` runs the artifact at ``path``: its own backend, or for an ONNX file one of ONNX_ALSO."""
    own = backend_for(path)
    return backend == own or (own == "onnxruntime" and backend in ONNX_ALSO)


def backends_for(path) -> list[str]:
    """Every installed backend that runs this kind of file, its own first: an ONNX file runs on onnxruntime and,
    where OpenVINO is installed, on openvino; checkpoints and engines on their one backend."""
    own = backend_for(path)
    if own != "onnxruntime":
        return [own]
    from .openvino_backend import installed

    return [own, "openvino"] if installed() else [own]


def row_options(backend: str) -> list[dict]:
    """The option sets that make distinct rows for ``backend`` on this machine (the drift report runs each):
    openvino: one per precision hint the CPU runs (f32; bf16 with AVX512_BF16 or AMX; f16 with AVX512_FP16);
    the others: their defaults."""
    if backend == "openvino":
        from .openvino_backend import precisions_here

        return [{"precision": p} for p in precisions_here("CPU")]
    return [{}]


def open_artifact(path, backend: str | None = None, **options) -> Backend:
    """Open an artifact with the backend its file calls for (or ``backend``); use as a context manager.
    ``engines.open`` is this function."""
    name = backend or backend_for(path)
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if not Path(path).exists():
        raise UserError(f"{path}: no such file or directory")
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads={threads!r}: give a whole number of 1 or more, or None for the runtime's choice")
    return backend_class(name)(path, **options)
