"""Backends behind cpnet.runtime.backend.Backend: torch (checkpoints), onnxruntime (ONNX files), tensorrt (engines).

Each module is imported only when its backend is opened, so a machine without
TensorRT (or PyCUDA) can still use the other two.
"""

from __future__ import annotations

import importlib

BACKENDS = {
    "torch": ("engines.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("cpnet.runtime.ort", "OnnxModel"),
    "tensorrt": ("engines.backends.tensorrt_backend", "TensorRTBackend"),
}


def backend_class(name: str):
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)
