"""Reduced precision for deployment: FP16 and INT8 ONNX files made from the FP32 export.

Precision lives in the graph (see docs/architecture.md): ``model.fp16.onnx`` holds
FP16 weights and compute with FP32 inputs/outputs, ``model.int8.onnx`` explicit
Q/DQ nodes. Both keep a manifest beside them with their lineage, the calibration
they used and the drift measured against FP32. Run ``cpnet fp16|int8|sensitivity``
(or ``python -m quantize fp16|int8|sensitivity``).

The FP16/INT8 modules, each importing only those listed before it:

- :mod:`.calib_data`: calibration images, preprocessed exactly as at inference;
- :mod:`.calibrate`: activation statistics in one pass over the images, saved and reused;
- :mod:`.qdq`: the Q/DQ core: flavours (tensorrt, cpu), ORT pre-processing, Q/DQ insertion, checks;
- :mod:`.logit_drift`: label-free logit drift: FP32 reference logits and how far a candidate moves
  them (``cpnet.runtime.compare``);
- :mod:`.parent`: the FP32 parent, checked against its manifest, and the names of files made from it;
- :mod:`.int8_parent`: ``Int8Parent``, a parent ready for INT8 (checked, pre-processed, calibrated), ``Int8Options``;
- :mod:`.sensitivity`: per-node INT8 sensitivity ranking (``cpnet sensitivity``);
- :mod:`.keep_float`: ``--keep-float auto``, the greedy search on that ranking;
- :mod:`.int8`: ``cpnet int8``: prepare, Q/DQ, keep-float, drift, manifest;
- :mod:`.fp16`: ``cpnet fp16``: FP16 conversion with a measured FP32 block list.

Everything here runs ONNX Runtime sessions from :func:`cpnet.runtime.ort.make_session`; the
accuracy-drift report (``cpnet report``), which opens artifacts of every backend, is in
``engines/report/``.
"""
