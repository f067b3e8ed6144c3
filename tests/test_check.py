"""engines.check: the TensorRT pre-flight check, on small hand-made graphs and on the project's own files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines import check

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ graph makers


def _model(nodes, inits, inp_shape=(1, 3, 8, 8), out_shape=(1, 4, 8, 8), opset=17, extra_opsets=(), name="g"):
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(inp_shape))
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(out_shape))
    graph = helper.make_graph(nodes, name, [inp], [out], initializer=inits)
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets)


def _w(shape=(4, 3, 3, 3), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def fp32_model(kernel=3, inp_shape=(1, 3, 8, 8)):
    w = numpy_helper.from_array(_w((4, 3, kernel, kernel)), "W")
    pad = kernel // 2
    nodes = [helper.make_node("Conv", ["image", "W"], ["c"], name="conv1", pads=[pad] * 4),
             helper.make_node("Relu", ["c"], ["logits"], name="relu1")]
    return _model(nodes, [w], inp_shape=inp_shape)


def fp16_model():
    w = numpy_helper.from_array(_w(dtype=np.float16), "W")
    nodes = [helper.make_node("Cast", ["image"], ["x16"], name="cast_in", to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["x16", "W"], ["c"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu1"),
             helper.make_node("Cast", ["r"], ["logits"], name="cast_out", to=TensorProto.FLOAT)]
    return _model(nodes, [w])


def qdq_model(act_zp=0, act_zp_dtype=np.int8, w_scale=None, w_axis=0, act_scale=0.05):
    """Input Q/DQ per tensor, weights as INT8 initializer + per-channel DequantizeLinear, Conv, Relu."""
    w = _w()
    ws = np.abs(w).reshape(4, -1).max(1) / 127.0 if w_scale is None else np.asarray(w_scale, np.float32)
    wq = np.clip(np.round(w / np.abs(w).reshape(4, -1).max(1).reshape(4, 1, 1, 1) * 127), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(act_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(act_zp, act_zp_dtype), "x_zp"),
        numpy_helper.from_array(wq, "Wq"),
        numpy_helper.from_array(ws.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(ws.shape, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "x_scale", "x_zp"], ["xq"], name="q_input"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dq_input"),
        helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["W"], name="dq_weight", axis=w_axis),
        helper.make_node("Conv", ["xdq", "W"], ["c"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["logits"], name="relu1"),
    ]
    return _model(nodes, inits)


def _messages(result, level=None):
    return [p for p in result.problems if level is None or p.level == level]


# ------------------------------------------------------------------------------ passes


@pytest.mark.parametrize("target", ["trt10", "trt11"])
@pytest.mark.parametrize("maker", [fp32_model, fp16_model, qdq_model], ids=["fp32", "fp16", "int8-qdq"])
def test_clean_files_pass(maker, target):
    res = check.check_model(maker(), target=target)
    assert res.ok, [p.format() for p in res.problems]
    assert res.summary().startswith("OK:")


def test_symmetric_qdq_has_no_problems_at_all():
    assert check.check_model(qdq_model()).problems == []


# ------------------------------------------------------------------------------ Q/DQ rules


def test_asymmetric_uint8_qdq_is_flagged_by_node_name():
    res = check.check_model(qdq_model(act_zp=128, act_zp_dtype=np.uint8))
    assert not res.ok
    nodes = {p.node for p in res.errors}
    assert {"q_input", "dq_input"} <= nodes
    text = " ".join(p.message for p in res.errors)
    assert "zero point 128" in text and "UINT8" in text and "--flavour tensorrt" in text


def test_nonzero_int8_zero_point_is_an_error():
    res = check.check_model(qdq_model(act_zp=3))
    assert any(p.node == "q_input" and "zero point 3" in p.message for p in res.errors)


def test_quantize_without_zero_point_is_a_warning_naming_the_difference():
    """Defect 4: ONNX reads a zero-point-less QuantizeLinear as UINT8, TensorRT's parser as INT8: a warning, not an error."""
    m = qdq_model()
    m.graph.node[0].input.pop()  # QuantizeLinear(image, x_scale): output type is UINT8 by ONNX's default
    m.graph.node[1].input.pop()  # and its DequantizeLinear reads that UINT8 tensor
    res = check.check_model(m)
    assert res.ok, [p.format() for p in res.problems]
    warned = [p for p in res.warnings if p.node == "q_input"]
    assert len(warned) == 1 and "UINT8" in warned[0].message and "INT8" in warned[0].message
    assert "ONNX Runtime" in warned[0].message and "zero point of 0" in warned[0].message
    assert not [p for p in res.problems if p.node == "dq_input"]  # reported once, at the Q
    # with output_dtype=INT8 (opset 21) ONNX agrees with TensorRT: nothing to say
    m.opset_import[0].version = 21
    m.graph.node[0].attribute.append(helper.make_attribute("output_dtype", TensorProto.INT8))
    res = check.check_model(m, target="trt10.15")
    assert not [p for p in res.problems if p.node == "q_input"], [p.format() for p in res.problems]


def test_per_channel_axis_must_match_the_weight_shape():
    res = check.check_model(qdq_model(w_scale=[0.1, 0.1, 0.1]))  # 3 scales for 4 output channels
    assert any(p.node == "dq_weight" and "3 values" in p.message for p in res.errors)
    res = check.check_model(qdq_model(w_axis=7))
    assert any(p.node == "dq_weight" and "out of range" in p.message for p in res.errors)


@pytest.mark.parametrize("bad", [-0.1, 0.0, np.inf, np.nan])
def test_scales_must_be_positive_and_finite(bad):
    res = check.check_model(qdq_model(act_scale=bad))
    assert any(p.node == "q_input" and "scale" in p.message for p in res.errors)


def test_per_channel_activation_quantization_is_an_error():
    m = qdq_model()
    # give the input Q/DQ a 3-element (per-channel) scale on axis 1 of the activation
    for init in m.graph.initializer:
        if init.name == "x_scale":
            init.CopyFrom(numpy_helper.from_array(np.full(3, 0.05, np.float32), "x_scale"))
        if init.name == "x_zp":
            init.CopyFrom(numpy_helper.from_array(np.zeros(3, np.int8), "x_zp"))
    res = check.check_model(m)
    assert any(p.node == "q_input" and "activation" in p.message for p in res.errors)


def _scale_via(kind: str):
    """qdq_model whose input scale reaches the Q/DQ through ``kind``: identity-of-constant, mul-of-initializers, input."""
    m = qdq_model()
    g = m.graph
    if kind == "identity-of-constant":
        g.node.insert(0, helper.make_node("Constant", [], ["s_c"], name="s_const",
                                          value=numpy_helper.from_array(np.array(0.05, np.float32))))
        g.node.insert(1, helper.make_node("Identity", ["s_c"], ["s_id"], name="s_identity"))
        src = "s_id"
    elif kind == "mul-of-initializers":
        g.initializer.extend([numpy_helper.from_array(np.array(0.1, np.float32), "s_a"),
                              numpy_helper.from_array(np.array(0.5, np.float32), "s_b")])
        g.node.insert(0, helper.make_node("Mul", ["s_a", "s_b"], ["s_mul"], name="s_mul"))
        src = "s_mul"
    else:  # computed from the image at run time
        g.node.insert(0, helper.make_node("ReduceMax", ["image"], ["s_rt"], name="s_runtime", keepdims=0))
        src = "s_rt"
    for n in g.node:
        if n.name in ("q_input", "dq_input"):
            n.input[1] = src
    return m


@pytest.mark.parametrize("kind", ["identity-of-constant", "mul-of-initializers"])
def test_scale_may_be_any_build_time_constant(kind):
    """Defect 4: the parser takes any build-time constant scale, not only an initializer or a Constant output."""
    res = check.check_model(_scale_via(kind))
    assert res.ok, [p.format() for p in res.problems]


def test_scale_from_a_graph_input_is_an_error():
    res = check.check_model(_scale_via("runtime"))
    assert any(p.node == "q_input" and "depends on a graph input" in p.message for p in res.errors)


def test_per_channel_weight_scales_must_be_on_the_output_channel_axis():
    # Conv weights are (K=4, C=3, 3, 3): three scales on axis 1 match the shape but are input channels
    res = check.check_model(qdq_model(w_scale=[0.1, 0.1, 0.1], w_axis=1))
    err = [p for p in res.errors if p.node == "dq_weight"]
    assert err and "output channels on axis 0" in err[0].message and "'conv1' (Conv)" in err[0].message
    assert check.check_model(qdq_model(w_axis=0)).ok


def test_per_channel_weight_axis_of_a_transposed_conv_and_a_matmul():
    wq = numpy_helper.from_array(np.ones((3, 4, 2, 2), np.int8), "Wq")  # ConvTranspose: (C_in, C_out, kH, kW)
    zp = numpy_helper.from_array(np.zeros(4, np.int8), "w_zp")
    sc = numpy_helper.from_array(np.full(4, 0.1, np.float32), "w_scale")
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["W"], name="dq_w", axis=1),
             helper.make_node("ConvTranspose", ["image", "W"], ["logits"], name="deconv", strides=[2, 2])]
    assert check.check_model(_model(nodes, [wq, zp, sc], out_shape=(1, 4, 16, 16))).ok
    nodes[0].attribute[0].i = 0
    sc0 = numpy_helper.from_array(np.full(3, 0.1, np.float32), "w_scale")
    zp0 = numpy_helper.from_array(np.zeros(3, np.int8), "w_zp")
    res = check.check_model(_model(nodes, [wq, zp0, sc0], out_shape=(1, 4, 16, 16)))
    assert any(p.node == "dq_w" and "output channels on axis 1" in p.message for p in res.errors)
    # MatMul weights (K, N): output channels on the last axis
    wm = numpy_helper.from_array(np.ones((8, 5), np.int8), "Wm")
    nodes = [helper.make_node("DequantizeLinear", ["Wm", "ms", "mz"], ["M"], name="dq_m", axis=0),
             helper.make_node("MatMul", ["image", "M"], ["logits"], name="mm")]
    inits = [wm, numpy_helper.from_array(np.full(8, 0.1, np.float32), "ms"),
             numpy_helper.from_array(np.zeros(8, np.int8), "mz")]
    res = check.check_model(_model(nodes, inits, inp_shape=(1, 3, 8, 8), out_shape=(1, 3, 8, 5)))
    assert any(p.node == "dq_m" and "output channels on axis 1" in p.message for p in res.errors)


# ------------------------------------------------------------------------------ the table's restrictions (defect 5)


def _one(op, inputs, inits=(), opset=17, out_shape=(1, 3, 8, 8), outputs=("logits",), **attrs):
    nodes = [helper.make_node(op, list(inputs), list(outputs), name="n", **attrs)]
    return _model(nodes, list(inits), out_shape=out_shape, opset=opset)


def _errors(model, **kw):
    return [p.message for p in check.check_model(model, **kw).errors if p.node == "n"]


def test_every_restriction_in_the_table_is_checked():
    from engines import trt_ops
    from engines.onnx_check.operators import RULES

    unchecked = set(trt_ops.RESTRICTIONS) - set(RULES)
    assert not unchecked, f"restrictions quoted but never checked: {sorted(unchecked)}"


def test_resize_keep_aspect_ratio_policy_must_be_stretch():
    sizes = numpy_helper.from_array(np.array([1, 3, 16, 16], np.int64), "sizes")
    m = _one("Resize", ["image", "", "", "sizes"], [sizes], opset=18, out_shape=(1, 3, 16, 16),
             keep_aspect_ratio_policy="not_larger")
    assert any("keep_aspect_ratio_policy 'not_larger'" in e for e in _errors(m))
    ok = _one("Resize", ["image", "", "", "sizes"], [sizes], opset=18, out_shape=(1, 3, 16, 16))
    assert _errors(ok) == []


def test_resize_axes_with_run_time_scales_must_be_iota():
    nodes = [helper.make_node("Shape", ["image"], ["shp"], name="shape"),
             helper.make_node("Cast", ["shp"], ["scales"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Resize", ["image", "", "scales"], ["logits"], name="n", axes=[2, 3])]
    res = check.check_model(_model(nodes, [], opset=18))
    assert any(p.node == "n" and "axes [2, 3]" in p.message for p in res.errors)


@pytest.mark.parametrize("how,ok", [("initializer", True), ("constant-node", True), ("computed", False),
                                    ("graph-input", False)])
def test_reduce_mean_opset18_axes_must_be_an_initializer(how, ok):
    inits, nodes = [], []
    if how == "initializer":
        inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    elif how == "constant-node":
        nodes = [helper.make_node("Constant", [], ["axes"], name="c", value=numpy_helper.from_array(
            np.array([2, 3], np.int64)))]
    elif how == "computed":
        inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes0")]
        nodes = [helper.make_node("Identity", ["axes0"], ["axes"], name="id")]
    else:
        nodes = [helper.make_node("Shape", ["image"], ["s"], name="shape", start=2),
                 helper.make_node("Sub", ["s", "s"], ["axes"], name="sub")]
    nodes.append(helper.make_node("ReduceMean", ["image", "axes"], ["logits"], name="n", keepdims=1))
    errs = [p.message for p in check.check_model(_model(nodes, inits, opset=18, out_shape=(1, 3, 1, 1))).errors
            if p.node == "n"]
    if ok:
        assert errs == []
    else:
        assert errs and "ReduceMean axes" in errs[0]
        assert ("computed from constants" in errs[0]) == (how == "computed")


def test_topk_must_be_sorted_and_k_below_3840():
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    assert any("sorted=0" in e for e in _errors(_one("TopK", ["image", "k"], [k], outputs=("logits", "idx"),
                                                     sorted=0)))
    big = numpy_helper.from_array(np.array([4000], np.int64), "k")
    assert any("K=4000" in e for e in _errors(_one("TopK", ["image", "k"], [big], outputs=("logits", "idx"))))
    assert _errors(_one("TopK", ["image", "k"], [k], outputs=("logits", "idx"))) == []


@pytest.mark.parametrize("value,ok", [(False, True), (True, False)])
def test_dropout_training_mode(value, ok):
    tm = numpy_helper.from_array(np.array(value), "tm")
    r = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    errs = _errors(_one("Dropout", ["image", "ratio", "tm"], [tm, r]))
    assert (errs == []) == ok
    if not ok:
        assert "training_mode=True" in errs[0]


def test_scatternd_reduction_cumsum_axis_onehot_depth_layernorm_outputs():
    idx = numpy_helper.from_array(np.zeros((1, 1), np.int64), "idx")
    upd = numpy_helper.from_array(np.zeros((1, 3, 8, 8), np.float32), "upd")
    assert any("reduction 'add'" in e for e in _errors(_one("ScatterND", ["image", "idx", "upd"], [idx, upd],
                                                            reduction="add", opset=18)))
    nodes = [helper.make_node("Shape", ["image"], ["s"], name="shape", start=0, end=1),
             helper.make_node("Squeeze", ["s"], ["ax"], name="sq", ),
             helper.make_node("CumSum", ["image", "ax"], ["logits"], name="n")]
    res = check.check_model(_model(nodes, []))
    assert any(p.node == "n" and "CumSum axis" in p.message for p in res.errors)
    nodes = [helper.make_node("Shape", ["image"], ["s"], name="shape", start=1, end=2),
             helper.make_node("OneHot", ["image", "s", "vals"], ["logits"], name="n")]
    vals = numpy_helper.from_array(np.array([0, 1], np.float32), "vals")
    res = check.check_model(_model(nodes, [vals]))
    assert any(p.node == "n" and "OneHot depth" in p.message for p in res.errors)
    sc = numpy_helper.from_array(np.ones(8, np.float32), "sc")
    assert any("only the first output" in e for e in _errors(
        _one("LayerNormalization", ["image", "sc"], [sc], outputs=("logits", "mean", "inv_std"))))
    assert _errors(_one("LayerNormalization", ["image", "sc"], [sc])) == []


# ------------------------------------------------------------------------------ per-version operator tables


def test_operator_tables_per_version():
    from engines import trt_ops

    t103, t1015, t11 = (trt_ops.operator_table(t) for t in ("trt10", "trt10.15", "trt11"))
    assert t103.version == (10, 3) and t1015.version == (10, 15) and t11.version == (11, 5)
    for op in ("HannWindow", "BlackmanWindow", "STFT", "Attention", "RMSNormalization"):
        assert t103.support(op) == "N" or t103.support(op) == "?", op
        assert t1015.support(op) == "Y" and t11.support(op) == "Y", op
    assert trt_ops.operator_table("10.4.0").support("HannWindow") == "Y"
    assert trt_ops.operator_table("10.4.0").support("STFT") == "N"
    assert t1015.support("Swish") == "?" and t11.support("Swish") == "Y"
    assert trt_ops.operator_table((11, 0)).support("DFT") == "N" and t11.support("DFT") == "Y"
    assert (t103.opset_documented, t1015.opset_documented, t11.opset_documented) == (20, 24, 25)
    assert "10.1-GA" in t103.source


def test_window_operator_fails_on_jetpack6_and_passes_on_the_latest_10():
    size = numpy_helper.from_array(np.array(8, np.int64), "size")
    m = _one("HannWindow", ["size"], [size], opset=17, out_shape=(8,))
    assert any("TensorRT 10.3" in e for e in _errors(m, target="trt10"))
    assert _errors(m, target="trt10.15") == [] and _errors(m, target="trt11") == []
    assert _errors(m, trt_version="10.4.1") == []


def test_squeeze_rules_follow_the_version():
    nodes = [helper.make_node("Squeeze", ["image"], ["logits"], name="n")]  # no axes: every size-1 dim
    m = _model(nodes, [], out_shape=(3, 8, 8), opset=17)
    assert any("without axes" in p.message for p in check.check_model(m, trt_version="11.0").errors)
    assert check.check_model(m, target="trt11").ok
    ax0 = numpy_helper.from_array(np.array([0], np.int64), "ax0")
    nodes = [helper.make_node("Identity", ["ax0"], ["ax"], name="id"),
             helper.make_node("Squeeze", ["image", "ax"], ["logits"], name="n")]
    m = _model(nodes, [ax0], out_shape=(3, 8, 8), opset=17)
    assert any("computed from constants" in p.message for p in check.check_model(m, target="trt10").errors)
    assert check.check_model(m, trt_version="10.7").ok


def test_gridsample_5d_needs_11_2():
    grid = numpy_helper.from_array(np.zeros((1, 2, 8, 8, 3), np.float32), "grid")
    m = _model([helper.make_node("GridSample", ["image", "grid"], ["logits"], name="n")], [grid],
               inp_shape=(1, 3, 2, 8, 8), out_shape=(1, 3, 2, 8, 8), opset=20)
    assert any(p.node == "n" and "rank-5" in p.message for p in check.check_model(m, target="trt10.15").errors)
    assert not [p for p in check.check_model(m, target="trt11").errors if p.node == "n"]


# ------------------------------------------------------------------------------ operators, opset, shapes


def test_custom_domain_op_is_flagged():
    nodes = [helper.make_node("FancyConv", ["image"], ["logits"], name="my_custom", domain="com.example")]
    res = check.check_model(_model(nodes, [], out_shape=(1, 3, 8, 8), extra_opsets=[("com.example", 1)]))
    err = [p for p in res.errors if p.node == "my_custom"]
    assert err and "custom-domain" in err[0].message and "plugin" in err[0].message


@pytest.mark.parametrize("op", ["Unique", "NotARealOp"])
def test_unsupported_onnx_op_is_flagged(op):
    nodes = [helper.make_node(op, ["image"], ["logits"], name="odd_node")]
    res = check.check_model(_model(nodes, [], out_shape=(1, 3, 8, 8)))
    assert any(p.node == "odd_node" and p.op == op for p in res.errors)


def test_resize_with_unsupported_mode_is_flagged():
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Resize", ["image", "", "scales"], ["logits"], name="up", mode="cubic")]
    res = check.check_model(_model(nodes, inits, out_shape=(1, 3, 16, 16)))
    assert any(p.node == "up" and "cubic" in p.message for p in res.errors)


def test_dynamic_input_is_an_error_for_dla_and_a_warning_otherwise():
    m = fp32_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].ClearField("dim_value")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dla = check.check_model(m, target="dla")
    assert any("dynamic" in p.message and "batch" in p.message for p in dla.errors)
    trt10 = check.check_model(m, target="trt10")
    assert trt10.ok and any("optimization profile" in p.message for p in trt10.warnings)


@pytest.mark.parametrize("opset,target,level", [(8, "trt10", "error"), (22, "trt10", "warning"),
                                                 (26, "trt11", "error"), (25, "trt11", None)])
def test_opset_bounds(opset, target, level):
    m = fp32_model()
    m.opset_import[0].version = opset
    probs = [p for p in check.check_model(m, target=target).problems if "opset" in p.message]
    if level is None:
        assert probs == []
    else:
        assert probs and probs[0].level == level


# ------------------------------------------------------------------------------ DLA


def test_dla_fp32_file_warns_and_strict_mode_errors():
    res = check.check_model(fp32_model(), target="dla")
    assert res.ok and any("FP16 and INT8 only" in p.message for p in res.warnings)
    assert not check.check_model(fp32_model(), target="dla", strict_dla=True).ok
    # with TensorRT 10's FP16 flag (build_engine --fp16-flag) the FP32 file is not a DLA precision problem
    assert check.check_model(fp32_model(), target="dla", strict_dla=True, assume_fp16=True).ok


def test_dla_layer_limits_fall_back_to_gpu():
    m = fp16_model()
    res = check.check_model(m, target="dla")
    # Casts at the FP32 I/O boundary run on the GPU; the conv and relu are DLA-able
    assert {p.node for p in res.warnings} == {"cast_in", "cast_out"}
    big = fp32_model(kernel=33, inp_shape=(1, 3, 40, 40))
    res = check.check_model(big, target="dla")
    conv = [p for p in res.warnings if p.node == "conv1"]
    assert conv and "falls back to GPU" in conv[0].message and "kernel" in conv[0].message
    strict = check.check_model(big, target="dla", strict_dla=True)
    assert any(p.node == "conv1" and "not DLA-able" in p.message for p in strict.errors)


def test_dla_matmul_of_two_activations_falls_back():
    nodes = [helper.make_node("MatMul", ["image", "image"], ["logits"], name="mm")]
    res = check.check_model(_model(nodes, [], inp_shape=(1, 3, 8, 8), out_shape=(1, 3, 8, 8)), target="dla")
    assert any(p.node == "mm" and "two activations" in p.message for p in res.warnings)


# ------------------------------------------------------------------------------ CLI


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "engines.check", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_cli_ok_and_error_exit_codes(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(qdq_model(), str(good))
    onnx.save(qdq_model(act_zp=128, act_zp_dtype=np.uint8), str(bad))
    r = _run_cli(good, "--target", "trt11")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("OK: ")
    r = _run_cli(good, bad)
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert any("node 'q_input' (QuantizeLinear)" in ln and ln.startswith(str(bad)) for ln in lines)
    assert lines[-1].startswith("FAILED: ")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    r = _run_cli(junk)  # not an ONNX model at all: the user's file to fix (2), not a check verdict (1)
    assert r.returncode == 2 and len(r.stdout.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "junk.onnx" in r.stderr


def test_cli_json_missing_file_and_bad_version(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(qdq_model(), str(good))
    onnx.save(qdq_model(act_zp=128, act_zp_dtype=np.uint8), str(bad))
    out = tmp_path / "check.json"
    r = _run_cli(good, bad, "--target", "trt10.15", "--json", out)
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert err == ["error: 1 of 2 file(s) failed the TensorRT pre-flight check (TensorRT 10.15): bad.onnx"]
    data = json.loads(out.read_text())
    assert [f["ok"] for f in data["files"]] == [True, False] and data["target"] == "trt10.15"
    assert any(p["node"] == "q_input" and p["level"] == "error" for p in data["files"][1]["problems"])
    r = _run_cli(tmp_path / "missing.onnx")  # a user error: exit 2, one line, nothing checked
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    r = _run_cli(good, "--trt-version", "9.0")
    assert r.returncode == 2 and "TensorRT 10" in r.stderr and "Traceback" not in r.stderr
    r = _run_cli(good, "--trt-version", "10.4")
    assert r.returncode == 0 and "TensorRT 10.4 table" in r.stdout


def test_cpnet_check_help_and_script_form(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cpnet", "check", "--help"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0 and "--trt-version" in r.stdout and "cpnet check" in r.stdout
    good = tmp_path / "good.onnx"
    onnx.save(fp32_model(), str(good))
    r = subprocess.run([sys.executable, str(ROOT / "engines" / "check.py"), str(good)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("OK: ")


# ------------------------------------------------------------------------------ Q/DQ placement lint


def _qdq(x, tag, scale=0.05):
    """A per-tensor INT8 Q/DQ pair on ``x`` (nodes ``q_TAG``, ``dq_TAG``; output ``TAG_dq``) and its constants."""
    return ([helper.make_node("QuantizeLinear", [x, f"{tag}_s", f"{tag}_z"], [f"{tag}_q"], name=f"q_{tag}"),
             helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_s", f"{tag}_z"], [f"{tag}_dq"],
                              name=f"dq_{tag}")],
            [numpy_helper.from_array(np.array(scale, np.float32), f"{tag}_s"),
             numpy_helper.from_array(np.array(0, np.int8), f"{tag}_z")])


def _qconv(x, name, out, quantize_input=True, cin=4, cout=4):
    """Conv with an INT8 per-channel weight; its activation input through a Q/DQ pair unless told otherwise."""
    w = _w((cout, cin, 3, 3), seed=len(name))
    scale = np.abs(w).reshape(cout, -1).max(1) / 127.0
    nodes, inits = _qdq(x, name) if quantize_input else ([], [])
    inits = inits + [numpy_helper.from_array(np.clip(np.rint(w / scale[:, None, None, None]), -127, 127)
                                             .astype(np.int8), f"{name}_wq"),
                     numpy_helper.from_array(scale.astype(np.float32), f"{name}_ws"),
                     numpy_helper.from_array(np.zeros(cout, np.int8), f"{name}_wz")]
    nodes = nodes + [helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_ws", f"{name}_wz"], [f"{name}_w"],
                                      name=f"dqw_{name}", axis=0),
                     helper.make_node("Conv", [f"{name}_dq" if quantize_input else x, f"{name}_w"], [out], name=name,
                                      pads=[1] * 4)]
    return nodes, inits


def _placement(res):
    return [p for p in res.warnings if "TensorRT cannot fuse" in p.message]


def test_placement_as_tensorrt_fuses_it_has_no_lint():
    """Relu -> Q/DQ -> Conv, a residual Add quantized on its skip input, Q/DQ moved across a MaxPool."""
    n1, i1 = _qconv("image_4", "conv1", "c1")
    n2, i2 = _qconv("r1", "conv2", "c2")
    skip, iskip = _qdq("image_4", "skip")
    pool, ipool = _qdq("sum", "pool")
    n3, i3 = _qconv("p", "conv3", "logits", quantize_input=False)
    nodes = [helper.make_node("Pad", ["image", "pads"], ["image_4"], name="pad"), *n1,
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"), *n2, *skip,
             helper.make_node("Add", ["c2", "skip_dq"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["sum"], name="relu2"), *pool,
             helper.make_node("MaxPool", ["pool_dq"], ["p"], name="maxpool", kernel_shape=[1, 1]), *n3]
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64), "pads")
    res = check.check_model(_model(nodes, [pads, *i1, *i2, *iskip, *ipool, *i3]))
    assert res.ok and res.warnings == [], [p.format() for p in res.problems]


def test_pairs_tensorrt_cannot_fuse_are_named():
    """A pair on a Conv's output before its ReLU, before a Resize, on both inputs of an Add, and before a
    Conv whose weight is float: each a warning naming the pair and what it feeds; the file still passes."""
    n1, i1 = _qconv("image_4", "conv1", "c1")
    out1, io1 = _qdq("c1", "out1")
    both_a, ia = _qdq("r1", "adda")
    both_b, ib = _qdq("r1b", "addb")
    tail, itail = _qdq("s", "tail")
    fw = numpy_helper.from_array(_w((4, 4, 3, 3)), "float_w")
    nodes = [helper.make_node("Pad", ["image", "pads"], ["image_4"], name="pad"), *n1, *out1,
             helper.make_node("Relu", ["out1_dq"], ["r1"], name="relu1"),
             helper.make_node("Relu", ["r1"], ["r1b"], name="relu1b"), *both_a, *both_b,
             helper.make_node("Add", ["adda_dq", "addb_dq"], ["s"], name="add"), *tail,
             helper.make_node("Conv", ["tail_dq", "float_w"], ["logits"], name="float_conv", pads=[1] * 4)]
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64), "pads")
    res = check.check_model(_model(nodes, [pads, *i1, *io1, *ia, *ib, *itail, fw]))
    assert res.ok, [p.format() for p in res.errors]
    flagged = {p.node: p.message for p in _placement(res)}
    assert set(flagged) == {"dq_out1", "dq_adda", "dq_addb", "dq_tail"}, flagged
    assert "'q_out1' -> 'dq_out1' on 'c1' feeds 'relu1' (Relu)" in flagged["dq_out1"]
    assert "'float_conv' (Conv)" in flagged["dq_tail"]
    # the logits quantized before the final Resize
    r, ir = _qdq("image", "logits_q")
    resize = [helper.make_node("Resize", ["logits_q_dq", "", "scales"], ["logits"], name="resize", mode="linear")]
    scales = numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), "scales")
    res = check.check_model(_model(r + resize, [*ir, scales], out_shape=(1, 3, 8, 8)))
    assert [p.node for p in _placement(res)] == ["dq_logits_q"]


@pytest.mark.parametrize("pool", ["AveragePool", "GlobalAveragePool"])
def test_a_pair_before_an_average_pool_does_not_reach_the_conv_after_it(pool):
    """NVIDIA fuses DQ -> AveragePool -> Q into one INT8 pooling (AveragePool does not commute with Q/DQ as
    MaxPool does): without a Q after the pool, the Conv after it reads a float tensor and the pair runs alone."""
    attrs = {"kernel_shape": [1, 1]} if pool == "AveragePool" else {}
    pair, ipair = _qdq("image_4", "pool")
    conv, iconv = _qconv("p", "conv", "logits", quantize_input=False)
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64), "pads")
    out_shape = (1, 4, 8, 8) if pool == "AveragePool" else (1, 4, 1, 1)
    nodes = [helper.make_node("Pad", ["image", "pads"], ["image_4"], name="pad"), *pair,
             helper.make_node(pool, ["pool_dq"], ["p"], name="pool", **attrs), *conv]
    res = check.check_model(_model(nodes, [pads, *ipair, *iconv], out_shape=out_shape))
    assert res.ok, [p.format() for p in res.errors]
    assert [(p.node, f"'pool' ({pool})" in p.message) for p in _placement(res)] == [("dq_pool", True)]
    # quantized again after the pool (as cpnet int8 places it: on the Conv's input), every pair fuses
    again, iagain = _qdq("p", "conv")
    nodes = nodes[:-2] + again + nodes[-2:]
    nodes[-1].input[0] = "conv_dq"
    res = check.check_model(_model(nodes, [pads, *ipair, *iconv, *iagain], out_shape=out_shape))
    assert res.ok and res.warnings == [], [p.format() for p in res.problems]


def _typed_qdq(qtype: int, opset: int, **dq_attrs):
    """image -> Q/DQ (per tensor, zero point of ``qtype``) -> Conv whose weight is a ``qtype`` DequantizeLinear."""
    zp = helper.make_tensor("x_zp", qtype, [], [0])
    w = helper.make_tensor("Wq", qtype, [4, 3, 3, 3], [1] * (4 * 3 * 3 * 3))
    blocked = "block_size" in dq_attrs
    w_scale = np.full((4, 3 // 3, 3, 3) if blocked else (4,), 0.1, np.float32)
    wzp = helper.make_tensor("w_zp", qtype, list(w_scale.shape), [0] * w_scale.size)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"), zp, w,
             numpy_helper.from_array(w_scale, "w_scale"), wzp]
    nodes = [helper.make_node("QuantizeLinear", ["image", "x_scale", "x_zp"], ["xq"], name="q_input"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"], name="dq_input"),
             helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["W"], name="dq_weight",
                              **({"axis": 1, **dq_attrs} if blocked else {"axis": 0})),
             helper.make_node("Conv", ["xdq", "W"], ["logits"], name="conv1", pads=[1] * 4)]
    return _model(nodes, inits, opset=opset)


@pytest.mark.parametrize("qtype,opset,what", [(TensorProto.FLOAT8E4M3FN, 19, "FP8"), (TensorProto.INT4, 21, "INT4")])
def test_fp8_and_int4_qdq_are_warnings_not_errors(qtype, opset, what):
    """TensorRT 10 parses FP8 and INT4 Q/DQ: the file is TensorRT's to build, only not this project's INT8 path."""
    res = check.check_model(_typed_qdq(qtype, opset), target="trt10.15")
    assert res.ok, [p.format() for p in res.errors]
    flagged = {p.node for p in res.warnings if what in p.message}
    assert {"q_input", "dq_weight"} <= flagged, [p.format() for p in res.problems]


def test_blocked_quantization_is_a_warning_not_an_error():
    res = check.check_model(_typed_qdq(TensorProto.INT8, 21, block_size=3), target="trt10.15")
    assert res.ok, [p.format() for p in res.errors]
    assert [p.node for p in res.warnings if "block_size=3" in p.message] == ["dq_weight"]


# ------------------------------------------------------------------------------ the project's own files


@pytest.fixture(scope="module")
def project_onnx_files(tmp_path_factory, tiny_checkpoint, tiny_data):
    """model.onnx, model.fp16.onnx, model.int8.onnx (tensorrt) and model.int8-cpu.onnx made by the project's CLIs."""
    out = tmp_path_factory.mktemp("onnx")
    model = out / "model.onnx"
    calib = str(Path(tiny_data) / "images" / "train")
    cmds = [
        ["-m", "cpnet.export", str(tiny_checkpoint), "-o", str(model), "--parity", "random", "--num-parity-images", "1"],
        ["-m", "quantize", "fp16", str(model), "--calib-data", calib, "--num-images", "2"],
        ["-m", "quantize", "int8", str(model), "--calib-data", calib, "--num-images", "2", "--eval-images", "1",
         "--no-progress", "--flavour", "tensorrt"],
        ["-m", "quantize", "int8", str(model), "--calib-data", calib, "--num-images", "2", "--eval-images", "1",
         "--no-progress", "--flavour", "cpu"],
    ]
    for c in cmds:
        r = subprocess.run([sys.executable, *c], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, f"{' '.join(c)}\n{r.stdout}\n{r.stderr}"
    return {k: out / f for k, f in [("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"),
                                    ("int8", "model.int8.onnx"), ("int8-cpu", "model.int8-cpu.onnx")]}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("target", ["trt10", "trt10.15", "trt11"])
def test_project_files_pass(project_onnx_files, which, target):
    res = check.check_file(project_onnx_files[which], target=target)
    assert res.ok, "\n".join(res.lines())
    # our quantizer must never write a QuantizeLinear that ONNX Runtime and TensorRT read differently,
    # nor a Q/DQ pair TensorRT cannot fuse
    assert not res.warnings, "\n".join(res.lines())


@pytest.mark.slow
def test_project_cpu_flavour_is_refused(project_onnx_files):
    res = check.check_file(project_onnx_files["int8-cpu"], target="trt10")
    assert not res.ok
    assert any("UINT8" in p.message and p.node for p in res.errors)


def test_onnx_checker_runs_first_an_undefined_input_is_refused(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["nowhere"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "undefined.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = _run_cli(path)
    assert r.returncode == 2 and "onnx.checker" in r.stderr and "undefined.onnx" in r.stderr, r.stderr
