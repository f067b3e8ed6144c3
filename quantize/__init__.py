"""Reduced precision for deployment: FP16 and INT8 ONNX files made from the FP32 export.

Precision lives in the graph (DESIGN.md §3): ``model.fp16.onnx`` holds FP16
weights and compute with FP32 inputs/outputs, ``model.int8.onnx`` explicit
Q/DQ nodes. Both keep a manifest beside them with their lineage and the
calibration they used. Run ``python -m quantize fp16|int8|sensitivity``.

``quantize.calib_data`` reads calibration images, preprocessed exactly as at
inference, for every subcommand.
"""
