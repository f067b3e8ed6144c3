"""The parts of ``cpnet check`` (the TensorRT pre-flight check; front door, driver and verb: :mod:`engines.check`).

- :mod:`.results`: what is asked and answered (``CheckOptions``, ``Problem``, ``CheckResult``, ``CheckError``);
- :mod:`.graph`: the graph as the check reads it (build-time constants folded, shapes, producers, readers);
- :mod:`.operators`: the opset and every node against the release's ONNX operator table, with a rule per op
  whose table entry states a restriction;
- :mod:`.qdq_nodes`: each QuantizeLinear/DequantizeLinear by TensorRT's Q/DQ rulebook
  (:mod:`cpnet.runtime.qdq_rules`): type, zero point, scale, axis;
- :mod:`.qdq_placement`: the placement lint, each Q/DQ pair TensorRT cannot fuse into an INT8 layer;
- :mod:`.inputs`: static input shapes (and DLA's batch and dimension limits);
- :mod:`.dla_fallback`: ``--target dla``, the nodes that fall back to the GPU and the file's precision.

The operator tables themselves are :mod:`engines.trt_ops`.
"""
