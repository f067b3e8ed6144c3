"""The TensorRT layer: policy in plain Python, and the thin calls into TensorRT, PyCUDA and cuda-python.

Everything here follows NVIDIA's documented Python API for TensorRT 10.x and 11.x (the Python API
reference, the developer guide's "Engine Compatibility", "Working with DLA" and "CUDA Graphs"
sections) and, where the documentation is silent, what NVIDIA's own tools do: Polygraphy
(``tools/Polygraphy/polygraphy/backend/trt``) and trtexec (``samples/common``). Each non-obvious
call names its source.

Policy (plain values in, decisions out; no TensorRT needed, tested on any machine):

- :mod:`~engines.trt.versions`: version numbers, and which release runs which engine;
- :mod:`~engines.trt.hardware`: the GPU, Jetson or not, the default workspace;
- :mod:`~engines.trt.dla`: which TensorRT builds DLA engines on which platform, and how;
- :mod:`~engines.trt.options`: ``BuildOptions`` and the requests this TensorRT, GPU and file can build;
- :mod:`~engines.trt.plan`: what a build sets (network typing, builder flags, the optimization profile);
- :mod:`~engines.trt.manifest`: what an engine's manifest allows when it is opened (TensorRT and GPU,
  sha256, host code, the runtime settings), and the command that rebuilds it.

Thin calls (each takes the ``tensorrt`` module, or a stand-in, as an argument):

- :mod:`~engines.trt.imports`: importing TensorRT, PyCUDA, cuda-python, or one MissingDependency line;
- :mod:`~engines.trt.logger`: the one ``trt.Logger`` and the standard plugins;
- :mod:`~engines.trt.network`, :mod:`~engines.trt.config`, :mod:`~engines.trt.build`: ONNX file -> network ->
  builder config -> serialized engine bytes, as Polygraphy's loaders are cut (NetworkFromOnnxPath,
  CreateConfig, EngineBytesFromNetwork), and the shared timing cache;
- :mod:`~engines.trt.engine`: deserializing a plan, input shapes, I/O tensors, activation memory, the
  engine inspector;
- :mod:`~engines.trt.context` (the one CUDA-context policy, docs/architecture.md §6) and
  :mod:`~engines.trt.cuda_graph` (trtexec's --useCudaGraph).

The package is not named ``tensorrt``: a script run as ``python engines/check.py`` has ``engines/`` on its
path, where such a folder would shadow NVIDIA's ``tensorrt`` module.
"""
