"""engines.check: the TensorRT pre-flight check, on small hand-made graphs and on the project's own files."""

from __future__ import annotations

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


def test_quantize_without_zero_point_defaults_to_uint8():
    m = qdq_model()
    m.graph.node[0].input.pop()  # QuantizeLinear(image, x_scale): output type is UINT8 by ONNX's default
    res = check.check_model(m)
    assert any(p.node == "q_input" and "UINT8" in p.message for p in res.errors)


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
    r = _run_cli(junk)
    assert r.returncode == 1 and len(r.stdout.strip().splitlines()) == 1 and "Traceback" not in r.stderr


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
@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_project_files_pass(project_onnx_files, which, target):
    res = check.check_file(project_onnx_files[which], target=target)
    assert res.ok, "\n".join(res.lines())


@pytest.mark.slow
def test_project_cpu_flavour_is_refused(project_onnx_files):
    res = check.check_file(project_onnx_files["int8-cpu"], target="trt10")
    assert not res.ok
    assert any("UINT8" in p.message and p.node for p in res.errors)
