"""Backends behind cpnet.runtime.backend.Backend: torch (checkpoints), tensorrt (engines); the onnxruntime
backend is the runtime's own OnnxModel. The registry that opens them by name is
cpnet.runtime.backend.BACKENDS; each module is imported only when its backend is opened, so a machine
without TensorRT (or PyCUDA, or PyTorch) can still use the others.
"""
