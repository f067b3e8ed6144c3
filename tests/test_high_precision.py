"""quantize.high_precision: INT8 Q/DQ in an FP16 graph (opset 19, float16 scales, re-quantized weights)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantize import high_precision as hp

RNG = np.random.default_rng(0)
TINY_SCALE = 1e-9


def _qdq(name: str, x: str, scale: float, inits: list, nodes: list) -> str:
    """Symmetric per-tensor INT8 Q/DQ on activation ``x``; returns the DQ output."""
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
              numpy_helper.from_array(np.array(0, np.int8), f"{name}_z")]
    nodes += [helper.make_node("QuantizeLinear", [x, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_Q"),
              helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                               name=f"{name}_DQ")]
    return f"{name}_dq"


def _weight(name: str, w: np.ndarray, axis: int, inits: list, nodes: list, tiny_channel: int | None = None) -> str:
    """Per-channel symmetric INT8 weight (scale amax/127 on ``axis``) feeding a DequantizeLinear."""
    red = tuple(i for i in range(w.ndim) if i != axis)
    s = (np.abs(w).max(axis=red) / 127).astype(np.float32)
    if tiny_channel is not None:
        s[tiny_channel] = TINY_SCALE
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / s.reshape(shape)), -127, 127).astype(np.int8)
    inits += [numpy_helper.from_array(q, f"{name}_w"), numpy_helper.from_array(s, f"{name}_ws"),
              numpy_helper.from_array(np.zeros(s.size, np.int8), f"{name}_wz")]
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_w", f"{name}_ws", f"{name}_wz"], [f"{name}_wdq"],
                                  name=f"{name}_wDQ", axis=axis))
    return f"{name}_wdq"


def tiny_qdq_model(opset: int = 17, act_scale: float = 0.02, w2_std: float = 0.3) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Add -> Resize -> MatMul -> Sigmoid (-> ReduceMean with an axes attribute), as
    cpnet int8 writes it: INT8 Q/DQ (zero point 0), per-channel weights, float biases, FP32 everywhere else."""
    inits, nodes = [], []
    x = _qdq("in", "x", 0.03, inits, nodes)
    w1 = _weight("c1", RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), 0, inits, nodes, tiny_channel=2)
    inits.append(numpy_helper.from_array(RNG.normal(0, 0.1, 8).astype(np.float32), "c1_b"))
    nodes += [helper.make_node("Conv", [x, w1, "c1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    r1 = _qdq("r1", "r1", act_scale, inits, nodes)
    w2 = _weight("c2", RNG.normal(0, w2_std, (8, 8, 1, 1)).astype(np.float32), 0, inits, nodes)
    inits.append(numpy_helper.from_array(RNG.normal(0, 0.1, 8).astype(np.float32), "c2_b"))
    nodes.append(helper.make_node("Conv", [r1, w2, "c2_b"], ["c2"], name="conv2"))
    a = _qdq("c2o", "c2", 0.03, inits, nodes)
    b = _qdq("skip", "r1", act_scale, inits, nodes)
    nodes.append(helper.make_node("Add", [a, b], ["add"], name="add"))
    inits += [numpy_helper.from_array(np.array([], np.float32), "roi"),
              numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up")]
    nodes.append(helper.make_node("Resize", ["add", "roi", "up"], ["rs"], name="resize", mode="linear"))
    m = _qdq("mm", "rs", 0.03, inits, nodes)
    wm = _weight("mm", RNG.normal(0, 0.3, (16, 16)).astype(np.float32), 1, inits, nodes)
    nodes += [helper.make_node("MatMul", [m, wm], ["mm"], name="matmul"),
              helper.make_node("Sigmoid", ["mm"], ["y"], name="sigmoid"),
              helper.make_node("ReduceMean", ["y"], ["mean"], name="mean", axes=[1], keepdims=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16]),
                               helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 1, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(hp.ORT_DISABLED_OPTIMIZERS))
    return sess.run(None, {"x": x})


@pytest.fixture(scope="module")
def base():
    return tiny_qdq_model()


@pytest.fixture(scope="module")
def converted(base):
    return hp.to_fp16(base)


def _inits(model):
    return {t.name: t for t in model.graph.initializer}


def _arr(model, name):
    return numpy_helper.to_array(_inits(model)[name])


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}


def test_outputs_close_to_fp32_qdq(base, converted):
    fp16, _ = converted
    x = RNG.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    ref, got = run(base, x), run(fp16, x)
    for r, g in zip(ref, got):
        assert g.dtype == np.float32 and g.shape == r.shape
        # FP16 arithmetic (~1e-3 relative) plus the odd activation landing one INT8 step away (scale 0.03
        # through a Sigmoid: <= 0.03 * 0.25 * sum|w|) after the scales moved by < 2**-11
        assert np.abs(g - r).max() < 0.05
        assert np.abs(g - r).mean() < 2e-3


def test_opset_types_and_scales(converted):
    fp16, record = converted
    assert hp.opset_of(fp16) == 19
    onnx.checker.check_model(fp16, full_check=True)
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*fp16.graph.input, *fp16.graph.output])
    qdq = [n for n in fp16.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) == 13
    inits = _inits(fp16)
    for n in qdq:
        assert inits[n.input[1]].data_type == TensorProto.FLOAT16, n.name
        assert inits[n.input[2]].data_type == TensorProto.INT8 and not numpy_helper.to_array(inits[n.input[2]]).any()
    types = _types(fp16)
    for n in fp16.graph.node:
        if n.op_type in ("Conv", "Relu", "Add", "Resize", "MatMul", "Sigmoid", "ReduceMean"):
            assert types[n.output[0]] == TensorProto.FLOAT16, n.name
        if n.op_type == "Resize":
            assert inits[n.input[2]].data_type == TensorProto.FLOAT  # opset 19 Resize scales are float
    assert record["opset"] == {"before": 17, "after": 19, "method": "onnx.version_converter"}
    assert record["nodes"]["fp32"] == 0 and record["nodes"]["fp16"] == 8 and record["fp32_nodes"] == {}
    sc = record["scales"]
    assert 0 < sc["max_rel_change_rounding"] < 2 ** -10                 # float16 has 11 significant bits
    assert sc["clamped_to_fp16_smallest"] == 1                           # the 1e-9 channel
    assert sc["max_rel_change"] == pytest.approx(hp.FP16_TINY / TINY_SCALE - 1)
    assert record["scales"]["weight"]["scales"] == 3 and record["scales"]["activation"]["scales"] == 5


def test_int8_weight_scales_round_up_to_fp16_and_never_reach_0(base, converted):
    fp16, record = converted
    for name, axis in (("c1", 0), ("c2", 0), ("mm", 1)):
        q, s32 = _arr(base, f"{name}_w"), _arr(base, f"{name}_ws")
        q16, s16 = _arr(fp16, f"{name}_w"), _arr(fp16, f"{name}_ws")
        assert q16.dtype == np.int8 and s16.dtype == np.float16
        assert np.abs(q16.astype(int)).max() <= 127
        assert np.all(s16.astype(np.float64) >= s32) and np.all(s16 > 0)     # rounded up, never 0
        shape = [1] * q.ndim
        shape[axis] = -1
        w32 = q.astype(np.float64) * s32.astype(np.float64).reshape(shape)
        w16 = q16.astype(np.float64) * s16.astype(np.float64).reshape(shape)
        step = np.broadcast_to(s16.astype(np.float64).reshape(shape), q.shape)
        assert np.all(np.abs(w16 - w32) <= step / 2 * (1 + 1e-9)), name
    tiny = _arr(fp16, "c1_ws")[2]
    assert tiny == np.float16(hp.FP16_TINY) and tiny > 0           # 1e-9 -> the smallest float16, not 0
    assert record["scales"]["weight"]["subnormal_fp16_values"] >= 1
    assert record["scales"]["weight"]["requantized"]["tensors"] == 3
    assert record["scales"]["weight"]["requantized"]["values_changed"] > 0   # the tiny channel at least


def test_fp16_up_and_requantize_edges():
    s = np.array([1e-9, 6e-5, 0.1, 1.0, 3.0001], np.float32)
    up = hp.fp16_up(s)
    assert np.all(up.astype(np.float64) >= s) and np.all(up.astype(np.float16).astype(np.float32) == up)
    assert np.all(np.nextafter(up.astype(np.float16), np.float16(0)).astype(np.float64)[1:] < s[1:])  # smallest
    assert up[3] == 1.0 and up[0] == np.float32(hp.FP16_TINY)
    q = np.array([[127, -127, 5]], np.int8)
    q16 = hp.requantize(q, np.array([0.1], np.float32), hp.fp16_up(np.array([0.1], np.float32)), 0)
    assert np.abs(q16.astype(int)).max() <= 127


def test_keep_float_node_computes_in_fp32_with_its_qdq_in_fp32(base):
    fp16, record = hp.to_fp16(base, keep_float=["conv2"])
    onnx.checker.check_model(fp16, full_check=True)
    types = _types(fp16)
    by = {n.name: n for n in fp16.graph.node}
    assert types["c2"] == TensorProto.FLOAT                       # conv2 computes in FP32
    assert types["r1"] == TensorProto.FLOAT16 and types["add"] == TensorProto.FLOAT16
    inits = _inits(fp16)
    # its weight DQ and input Q/DQ stay FP32 (no Cast inside the Q/DQ -> Conv pattern), so does the Q on its output
    for name in ("c2_wDQ", "r1_Q", "r1_DQ", "c2o_Q"):
        assert inits[by[name].input[1]].data_type == TensorProto.FLOAT, name
        assert record["fp32_nodes"][name].endswith("of kept node conv2")
    assert inits[by["c2o_DQ"].input[1]].data_type == TensorProto.FLOAT16   # the DQ read by the FP16 Add
    assert by["conv2"].input[1] == "c2_wdq" and by["conv2"].input[0] == "r1_dq"
    assert record["fp32_nodes"]["conv2"] == "keep_float" and record["nodes"]["fp32"] == 1
    x = RNG.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    for r, g in zip(run(base, x), run(fp16, x)):
        assert np.abs(g - r).max() < 0.05
    with pytest.raises(ValueError, match="no_such_node"):
        hp.to_fp16(base, keep_float=["no_such_node"])


def test_opset13_and_hand_bump(monkeypatch):
    m13 = tiny_qdq_model(opset=13)
    x = RNG.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    ref = run(m13, x)
    fp16, record = hp.to_fp16(m13)
    assert record["opset"]["before"] == 13 and hp.opset_of(fp16) == 19
    from onnx import version_converter

    def broken(*a, **k):
        raise RuntimeError("adapter missing")

    monkeypatch.setattr(version_converter, "convert_version", broken)
    bumped, record = hp.to_fp16(m13)
    assert hp.opset_of(bumped) == 19 and record["opset"]["method"].startswith("opset_import raised by hand")
    assert "ReduceMean" in record["opset"]["method"]             # axes attribute moved to an input
    onnx.checker.check_model(bumped, full_check=True)
    for r, a, b in zip(ref, run(fp16, x), run(bumped, x)):
        assert np.abs(a - r).max() < 0.05 and np.abs(b - r).max() < 0.05


def test_hand_bump_refuses_changed_meaning(monkeypatch):
    from onnx import version_converter

    monkeypatch.setattr(version_converter, "convert_version", lambda *a, **k: (_ for _ in ()).throw(RuntimeError()))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])
    rois = numpy_helper.from_array(np.array([[0, 0, 3, 3]], np.float32), "rois")
    idx = numpy_helper.from_array(np.array([0], np.int64), "idx")
    g = helper.make_graph([helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=2,
                                            output_width=2)], "g", [x], [y], [rois, idx])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ValueError, match="RoiAlign"):
        hp.raise_opset(m)


def test_tiny_activation_scale_recorded():
    m = tiny_qdq_model(act_scale=1e-5)
    fp16, record = hp.to_fp16(m)
    below = record["scales"]["activation"]["below_fp16_min_normal"]
    assert set(below) == {"r1_s", "skip_s"} and below["r1_s"] == pytest.approx(1e-5)
    assert _arr(fp16, "r1_s").dtype == np.float16 and _arr(fp16, "r1_s") > 0
    import json

    json.dumps(record)   # the manifest stores it


def test_large_bias_over_small_scales():
    """|bias| / (s_x * s_w) beyond float16's range: ORT's WeightBiasQuantization would overflow it (see
    hp.ORT_DISABLED_OPTIMIZERS); the graph itself is right, as ORT shows with that transformer off."""
    m = tiny_qdq_model(w2_std=0.003)   # conv2: s_w ~ 7e-5, s_x 0.02, bias ~0.1 -> ~7e4 > 65504
    s_w = _arr(m, "c2_ws").astype(np.float64)
    assert np.any(np.abs(_arr(m, "c2_b")) / (0.02 * s_w) > hp.FP16_MAX)
    fp16, _ = hp.to_fp16(m)
    x = RNG.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    for r, g in zip(run(m, x), run(fp16, x)):
        assert np.abs(g - r).max() < 0.05
