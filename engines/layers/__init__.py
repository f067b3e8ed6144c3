"""Layer by layer: what each layer of an artifact runs in, and where two artifacts part.

- :mod:`.onnx_graph`: the per-node table of an ONNX file (op, precision, whether Q/DQ feeds it) and the
  rule that matches tensors of two ONNX files through Q/DQ and Cast nodes;
- :mod:`.engine_json`: the per-layer table of a TensorRT engine, read from the engine inspector's JSON that
  the build records beside it (``<engine file name>.layers.json``);
- :mod:`.tensors`: every matched intermediate tensor of two ONNX files exposed as an output, run on the
  same images, and each compared with :func:`cpnet.runtime.compare.compare`.

The verbs on top: ``cpnet inspect`` (:mod:`engines.inspection`) and ``cpnet compare`` (:mod:`engines.compare`).
"""
