"""The one rulebook for TensorRT's Q/DQ (cpnet.runtime.qdq_rules): every tensorrt-flavour file cpnet int8 writes
passes cpnet check by construction, for every weighted op type, on small hand-built parents (the CPNet model has
Conv and MatMul of activations only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cpnet.runtime import qdq_rules as rules
from cpnet.runtime import sha256_file, write_manifest
from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
from engines import check
from quantize import qdq
from quantize.int8 import quantize_int8
from quantize.int8_parent import Int8Options

SIZE, CLASSES = 16, 4
RUNTIME = RuntimeOptions(threads=1, progress=False)


def _w(shape, seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), f"W{seed}")


def _shape(name, dims):
    return numpy_helper.from_array(np.array(dims, np.int64), name)


def _nhwc_to_rows(x):
    """image (1, 3, H, W) -> rows (H*W, 3), and the way back from (H*W, C) to (1, C, H, W)."""
    return [helper.make_node("Transpose", [x], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", ["nhwc", "rows_shape"], ["rows"], name="to_rows")]


def _rows_to_logits(y):
    return [helper.make_node("Reshape", [y, "nhwc_shape"], ["out_nhwc"], name="from_rows"),
            helper.make_node("Transpose", ["out_nhwc"], ["logits"], name="to_nchw", perm=[0, 3, 1, 2])]


ROWS = [_shape("rows_shape", [SIZE * SIZE, 3]), _shape("nhwc_shape", [1, SIZE, SIZE, CLASSES])]


def graph(kind: str):
    """(nodes, initializers) of a parent image (1, 3, 16, 16) -> logits (1, 4, 16, 16) around one weighted op."""
    if kind == "Conv":
        return [helper.make_node("Conv", ["image", "W1", "B1"], ["c"], name="conv", pads=[1] * 4),
                helper.make_node("Relu", ["c"], ["logits"], name="relu")], [
            _w((CLASSES, 3, 3, 3), 1), numpy_helper.from_array(np.zeros(CLASSES, np.float32), "B1")]
    if kind == "ConvTranspose":  # down with a Conv, up with the transposed conv: (C_in, C_out, kH, kW) weights
        return [helper.make_node("Conv", ["image", "W1"], ["down"], name="down", strides=[2, 2], kernel_shape=[2, 2]),
                helper.make_node("ConvTranspose", ["down", "W2"], ["logits"], name="up", strides=[2, 2])], [
            _w((8, 3, 2, 2), 1), _w((8, CLASSES, 2, 2), 2)]
    if kind in ("Gemm", "Gemm-transB"):  # (N, C) weights with transB (PyTorch's nn.Linear), (C, N) without
        trans_b = kind == "Gemm-transB"
        w = _w((CLASSES, 3) if trans_b else (3, CLASSES), 1)
        return [*_nhwc_to_rows("image"),
                helper.make_node("Gemm", ["rows", w.name], ["y"], name="gemm", transB=int(trans_b)),
                *_rows_to_logits("y")], [w, *ROWS]
    if kind == "MatMul-2D":  # (1, H, W, 3) x (3, C)
        return [helper.make_node("Transpose", ["image"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
                helper.make_node("MatMul", ["nhwc", "W1"], ["out_nhwc"], name="matmul"),
                helper.make_node("Transpose", ["out_nhwc"], ["logits"], name="to_nchw", perm=[0, 3, 1, 2])], [
            _w((3, CLASSES), 1)]
    if kind == "MatMul-3D":  # three (16, 16) matrices, each times its own (16, 16) weight; then a 1x1 Conv to C
        return [helper.make_node("Reshape", ["image", "stack"], ["mats"], name="to_mats"),
                helper.make_node("MatMul", ["mats", "W1"], ["prod"], name="matmul"),
                helper.make_node("Reshape", ["prod", "image_shape"], ["back"], name="from_mats"),
                helper.make_node("Conv", ["back", "W2"], ["logits"], name="head")], [
            _w((3, SIZE, SIZE), 1), _w((CLASSES, 3, 1, 1), 2), _shape("stack", [3, SIZE, SIZE]),
            _shape("image_shape", [1, 3, SIZE, SIZE])]
    if kind == "AveragePool-Conv":  # a weighted layer after an AveragePool gets its pair after the pool
        return [helper.make_node("AveragePool", ["image"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1] * 4),
                helper.make_node("Conv", ["p", "W1"], ["logits"], name="conv", pads=[1] * 4)], [
            _w((CLASSES, 3, 3, 3), 1)]
    raise ValueError(kind)


KINDS = ["Conv", "ConvTranspose", "Gemm", "Gemm-transB", "MatMul-2D", "MatMul-3D", "AveragePool-Conv"]


def write_parent(folder: Path, kind: str) -> Path:
    """A hand-built FP32 parent with the manifest cpnet export would write beside it."""
    nodes, inits = graph(kind)
    g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES, SIZE, SIZE])],
                          initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    write_manifest(path, {"kind": "onnx", "precision": "fp32", "input_size": [SIZE, SIZE],
                          "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "channel_order": "RGB",
                          "classes": [f"c{i}" for i in range(CLASSES)], "palette": [[i * 60, 0, 0] for i in range(CLASSES)],
                          "input": {"name": "image", "shape": [1, 3, SIZE, SIZE]},
                          "output": {"name": "logits", "shape": [1, CLASSES, SIZE, SIZE]},
                          "sha256": sha256_file(path)})
    return path


@pytest.mark.parametrize("high_precision", ["fp16", "fp32"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_tensorrt_flavour_file_passes_cpnet_check(kind, high_precision, tiny_data, tmp_path):
    """cpnet int8's tensorrt flavour (its self-check included) on a parent around each weighted op type: the file
    passes cpnet check with no error and no warning, and every weighted layer runs in INT8."""
    parent = write_parent(tmp_path, kind)
    options = Int8Options(flavour="tensorrt", method="minmax", eval_images=1, high_precision=high_precision)
    calibration = CalibrationOptions(data=str(Path(tiny_data) / "images" / "train"), num_images=2)
    out, _ = quantize_int8(parent, options=options, calibration=calibration, runtime=RUNTIME)
    model = onnx.load(str(out))
    assert qdq.check_qdq(model, "tensorrt") == []
    for target in ("trt10", "trt11"):
        res = check.check_file(out, target=target)
        assert res.ok and res.warnings == [], "\n".join(res.lines())
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type in rules.WEIGHTED_OP_TYPES]
    assert {n.op_type for n in weighted} >= {kind.split("-")[0]} - {"AveragePool"}
    for n in weighted:
        dqs = [producers.get(n.input[k]) for k in rules.QUANTIZED_INPUTS]
        assert all(d is not None and d.op_type == "DequantizeLinear" for d in dqs), f"{n.name} is not INT8"
        w = inits[dqs[1].input[0]]
        scale = numpy_helper.to_array(inits[dqs[1].input[1]])
        axis = next((a.i for a in dqs[1].attribute if a.name == "axis"), None)
        if rules.per_channel_weights(n, len(w.dims)):
            want = rules.weight_axis(n, 1, len(w.dims))
            assert axis == want and scale.shape == (w.dims[want],), (n.name, axis, scale.shape)
        else:
            assert scale.size == 1 and axis is None, n.name


def test_output_channel_axis_by_op_and_rank():
    node = helper.make_node
    assert rules.weight_axis(node("Conv", ["x", "w"], ["y"]), 1, 4) == 0
    assert rules.weight_axis(node("ConvTranspose", ["x", "w"], ["y"]), 1, 4) == 1
    assert rules.weight_axis(node("Gemm", ["x", "w"], ["y"], transB=1), 1, 2) == 0
    assert rules.weight_axis(node("Gemm", ["x", "w"], ["y"]), 1, 2) == 1
    mm = node("MatMul", ["x", "w"], ["y"])
    assert [rules.weight_axis(mm, 1, r) for r in (2, 3, 4)] == [1, 2, 3]
    assert [rules.per_channel_weights(mm, r) for r in (2, 3)] == [True, False]
    assert rules.weight_axis(mm, 0, 2) is None and rules.weight_axis(node("Add", ["a", "b"], ["c"]), 1, 2) is None


def test_the_rulebook_names_onnx_types_as_onnx_does():
    for name in ("FLOAT", "UINT8", "INT8", "INT32", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "UINT4", "INT4",
                 "FLOAT4E2M1"):
        assert getattr(rules, name) == getattr(TensorProto, name), name
        assert rules.type_name(getattr(TensorProto, name)) == name
