"""cpnet inspect and cpnet compare --layers: the node and layer tables, the matching rule through Q/DQ and Cast,
and a deliberately damaged layer found by name (in an FP32 copy and through Q/DQ in an INT8 file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import error_line
from cpnet.cli import main as cpnet_main
from cpnet.runtime import read_manifest, sha256_file, write_manifest
from engines.layers import engine_json, onnx_graph
from engines.layers.tensors import layer_errors, tensor_info
from test_int8 import copy_model, run_int8, write_calibration_pngs

torch.set_num_threads(1)
DAMAGED = "/backbone/layer2/layer2.0/conv1/Conv"


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    return write_calibration_pngs(tmp_path_factory.mktemp("layers_calib") / "images", n=4)


@pytest.fixture(scope="module")
def int8_model(tiny_onnx, calib_dir, tmp_path_factory) -> dict:
    """The tiny FP32 model and its INT8 file (tensorrt flavour: Q/DQ in an FP16 graph, Casts at its edges)."""
    model = copy_model(tiny_onnx, tmp_path_factory.mktemp("layers_int8"))
    assert run_int8(model, "--calib-data", calib_dir, "--num-images", "4") == 0
    assert run_int8(model, "--calib-data", calib_dir, "--num-images", "4", "--flavour", "cpu") == 0
    return {"fp32": model, "int8": model.with_name("model.int8.onnx"), "cpu": model.with_name("model.int8-cpu.onnx")}


def damaged_copy(src: Path, dst: Path, node: str, factor: float) -> Path:
    """A copy of ``src`` (and its manifest, sha256 renewed) whose ``node``'s weights are multiplied by ``factor``:
    the weight initializer itself, or in a Q/DQ file the scale of the DequantizeLinear that feeds it."""
    model = onnx.load(str(src))
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    weight = next(n for n in model.graph.node if n.name == node).input[1]
    name = weight if weight in inits else producer[weight].input[1]  # the DQ's scale
    t = inits[name]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.asarray(factor, numpy_helper.to_array(t).dtype),
                                       name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    manifest = read_manifest(src)
    manifest["sha256"] = sha256_file(dst)
    write_manifest(dst, manifest)
    return dst


def run_cli(*argv) -> int:
    return cpnet_main([*map(str, argv)])


# --------------------------------------------------------------------------- cpnet inspect, ONNX


def test_inspect_onnx_int8_rows_say_precision_and_which_inputs_qdq_feeds(int8_model, capsys, tmp_path):
    out = tmp_path / "inspect.json"
    assert run_cli("inspect", int8_model["int8"], "--json", out) == 0
    text = capsys.readouterr().out
    conv = next(line for line in text.splitlines() if line.split()[1:2] == [DAMAGED])
    assert conv.split()[2:] == ["Conv", "int8", "act+weight"]
    record = json.loads(out.read_text())
    rows = {r["name"]: r for r in record["nodes"]}
    graph = onnx.load(str(int8_model["int8"]))
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    assert all(rows[c]["precision"] == "int8" and rows[c]["qdq"] == "act+weight" for c in convs)
    relu = next(r for r in record["nodes"] if r["op"] == "Relu")
    assert (relu["precision"], relu["qdq"]) == ("fp16", "")  # the layers left unquantized run in FP16
    c = record["counts"]
    assert c["quantize_linear"] == sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) > 0
    assert c["precision"]["int8"] == c["qdq_fed"] >= len(convs)
    assert "QuantizeLinear" not in text.split("precision (nodes")[0]  # Q/DQ rows only with --all-nodes
    assert run_cli("inspect", int8_model["int8"], "--all-nodes") == 0
    assert "QuantizeLinear" in capsys.readouterr().out.split("precision (nodes")[0]


def test_inspect_onnx_fp32_has_no_qdq(tiny_onnx, capsys):
    assert run_cli("inspect", tiny_onnx) == 0
    text = capsys.readouterr().out
    assert "Q/DQ: 0 QuantizeLinear, 0 DequantizeLinear; 0 node(s) read a dequantized input" in text
    assert "int8" not in text and "fp16" not in text


# --------------------------------------------------------------------------- cpnet inspect, engine


def _tensor(name, dims, fmt):
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}


#: Shaped as TensorRT 10's IEngineInspector.get_engine_information(JSON) at ProfilingVerbosity.DETAILED
#: (the fields and formats TREx and trtexec's --exportLayerInfo read), for a Q/DQ CPNet's first layers.
ENGINE_LAYERS = {"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0 to /backbone/stem/stem.0/Conv + /backbone/stem/stem.2/Relu",
     "LayerType": "Reformat",
     "Inputs": [_tensor("image", [1, 3, 128, 128], "Row major linear FP32")],
     "Outputs": [_tensor("Reformatted Input Tensor 0 to /backbone/stem/stem.0/Conv + /backbone/stem/stem.2/Relu",
                         [1, 3, 128, 128], "Channel major FP16 format where channel % 8 == 0")],
     "ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x0000000000000000", "StreamId": 0,
     "Metadata": ""},
    {"Name": "/backbone/stem/stem.0/Conv + /backbone/stem/stem.2/Relu", "LayerType": "CaskConvolution",
     "Inputs": [_tensor("/backbone/stem/stem.0/Conv/input0_dequantized", [1, 3, 128, 128],
                        "Thirty-two wide channel vectorized row major Int8 format")],
     "Outputs": [_tensor("/backbone/stem/stem.2/Relu_output_0", [1, 16, 64, 64],
                         "Thirty-two wide channel vectorized row major Int8 format")],
     "ParameterType": "Convolution", "Kernel": [3, 3], "Stride": [2, 2], "OutMaps": 16, "Groups": 1,
     "Weights": {"Type": "Int8", "Count": 432}, "Bias": {"Type": "Float", "Count": 16},
     "Activation": "RELU", "HasBias": 1, "HasReLU": 1,
     "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32",
     "TacticValue": "0x11bde0e1d9f2f35d", "StreamId": 0,
     "Metadata": "[ONNX Layer: /backbone/stem/stem.0/Conv]\x1e[ONNX Layer: /backbone/stem/stem.2/Relu]"},
    {"Name": "/head/Sigmoid", "LayerType": "PointWiseV2",
     "Inputs": [_tensor("/head/prior_conv/Conv_output_0", [1, 256, 16, 16], "Row major linear FP16 format")],
     "Outputs": [_tensor("/head/Sigmoid_output_0", [1, 256, 16, 16], "Row major linear FP16 format")],
     "ParameterType": "PointWise", "TacticValue": "0x0", "Metadata": "[ONNX Layer: /head/Sigmoid]"},
    {"Name": "Reformatting CopyNode for Output Tensor 0 to /Resize", "LayerType": "Reformat",
     "Inputs": [_tensor("/Resize_output_0", [1, 8, 128, 128], "Half")],
     "Outputs": [_tensor("logits", [1, 8, 128, 128], "Float")], "Origin": "REFORMAT", "TacticValue": "0x0"},
], "Bindings": ["image", "logits"]}


def fake_engine(folder: Path, document) -> Path:
    """An engine file TensorRT never made (nothing reads its bytes) and the layer table its build recorded."""
    engine = folder / "model.int8.engine"
    engine.write_bytes(b"not a real plan: cpnet inspect reads the recorded table only")
    engine_json.layers_path(engine).write_text(json.dumps(document), encoding="utf-8")
    return engine


def test_inspect_engine_reads_the_recorded_layer_table(tmp_path, capsys):
    engine = fake_engine(tmp_path, ENGINE_LAYERS)
    assert engine_json.layers_path(engine).name == "model.int8.engine.layers.json"
    out = tmp_path / "layers.json"
    assert run_cli("inspect", engine, "--json", out) == 0
    text = capsys.readouterr().out
    assert "4 layers" in text and "reformatting layers: 2" in text and "bindings: image, logits" in text
    record = json.loads(out.read_text())
    assert record["counts"] == {"layers": 4, "reformat": 2, "precision": {"int8": 1, "fp16": 1},
                                "device": {"GPU": 4}}
    conv = record["layers"][1]
    assert (conv["type"], conv["precision"], conv["output_precision"]) == ("Convolution (CaskConvolution)", "int8", "int8")
    assert conv["origin"] == "[ONNX Layer: /backbone/stem/stem.0/Conv] + [ONNX Layer: /backbone/stem/stem.2/Relu]"
    assert conv["tactic"].startswith("sm80_xmma_fprop")
    first, last = record["layers"][0], record["layers"][3]
    assert first["reformat"] and (first["precision"], first["output_precision"]) == ("fp32", "fp16")
    assert last["reformat"] and (last["precision"], last["output_precision"]) == ("fp16", "fp32")


def test_inspect_engine_names_only_and_dla_layers(tmp_path, capsys):
    names = {"Layers": ["image to nvm", "{ForeignNode[/backbone/stem/stem.0/Conv.../Resize]}",
                        "logits from nvm", "Reformatting CopyNode for Output Tensor 0 to logits"],
             "Bindings": ["image", "logits"]}
    out = tmp_path / "layers.json"
    assert run_cli("inspect", fake_engine(tmp_path, names), "--json", out) == 0
    assert "names only" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["counts"]["device"] == {"DLA I/O": 2, "GPU": 2} and record["counts"]["reformat"] == 1
    dla = {"Name": "{ForeignNode[/backbone...]}", "LayerType": "DLA", "Inputs": [], "Outputs": []}
    assert engine_json.layer_rows({"Layers": [dla]})[0].device == "DLA"


@pytest.mark.parametrize("fmt, precision", [
    ("Thirty-two wide channel vectorized row major Int8 format.", "int8"), ("Row major linear FP32", "fp32"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"), ("Half", "fp16"), ("Float", "fp32"),
    ("Row major linear UInt8 format", "uint8"), ("Row major linear BFloat16 format", "bf16"),
    ("Row major linear Int32", "int32"), ("N/A due to dynamic shapes", "?")])
def test_engine_formats_name_their_precision(fmt, precision):
    assert engine_json.format_precision(fmt) == precision


def test_inspect_engine_reads_tensorrt_11_datatype_fields_as_the_manifest_does():
    """TensorRT 11 writes "Format" and "DataType" instead of "Format/Datatype": the table reads them, and by the
    same rule as the manifest's counts (the lowest precision a layer reads, its outputs' beside it)."""
    from engines.layers import placement

    layers = {"Layers": [
        {"Name": "conv", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Channel major FP16 format (kHWC8)"}],
         "Outputs": [{"Name": "y", "DataType": "Float", "Format": "Row major linear FP32 format (kLINEAR)"}]},
        {"Name": "add", "LayerType": "ElementWise",
         "Inputs": [_tensor("a", [1], "Row major linear FP32"), _tensor("b", [1], "Row major linear Int8 format")],
         "Outputs": [_tensor("c", [1], "Row major linear FP32")]}], "I/O Tensors": []}
    rows = engine_json.layer_rows(layers)
    assert [(r.precision, r.output_precision) for r in rows] == [("fp16", "fp32"), ("int8", "fp32")]
    summary = placement.summarize_layer_precisions(json.dumps(layers))
    assert summary["by_precision"] == {"fp16": 1, "int8": 1}

def test_inspect_engine_without_its_layer_table_is_one_line_error(tmp_path, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    assert run_cli("inspect", engine) == 2
    assert "model.engine.layers.json" in error_line(capsys.readouterr().err)
    engine_json.layers_path(engine).write_text("{not json")
    assert run_cli("inspect", engine) == 2
    assert "not readable as JSON" in error_line(capsys.readouterr().err)
    engine_json.layers_path(engine).write_text("[]")
    assert run_cli("inspect", engine) == 2
    assert "no \"Layers\" list" in error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- the matching rule


def _model(nodes, inits, out_name, out_type=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info(out_name, out_type, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _w(name, dtype=np.float32):
    return numpy_helper.from_array(np.ones((2, 2, 1, 1), dtype), name)


def test_matching_goes_through_qdq_and_cast():
    """Reference: x -> Conv -> y -> Relu -> z. Candidate: x -> Cast(fp16) -> Q/DQ -> Conv (DQ weights) -> y ->
    Cast(fp32) -> y32 -> Relu -> out, where out stands for z only by position (no rule can match it)."""
    ref = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
                  helper.make_node("Relu", ["y"], ["z"], name="relu")], [_w("w")], "z")
    scale = numpy_helper.from_array(np.array(0.1, np.float16), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zp")
    wq = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "w_q")
    cand = _model([helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
                   helper.make_node("QuantizeLinear", ["x16", "s", "zp"], ["x_q"]),
                   helper.make_node("DequantizeLinear", ["x_q", "s", "zp"], ["x_dq"]),
                   helper.make_node("DequantizeLinear", ["w_q", "s", "zp"], ["w_dq"]),
                   helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv"),
                   helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["y_q"]),
                   helper.make_node("DequantizeLinear", ["y_q", "s", "zp"], ["y_dq"]),
                   helper.make_node("Cast", ["y_dq"], ["y32"], to=TensorProto.FLOAT),
                   helper.make_node("Relu", ["y32"], ["out"], name="relu")], [scale, zero, wq], "out")
    roots = onnx_graph.alias_roots(cand)
    assert roots["x_dq"] == roots["x16"] == "x" and roots["y32"] == roots["y_dq"] == "y" and "w_dq" not in roots
    matches, unmatched = onnx_graph.match_tensors(cand, tensor_info(cand), ref, tensor_info(ref))
    # y as the next layer reads it: the DequantizeLinear output that stands for it
    assert [(m.node, m.tensor, m.reference, m.candidate) for m in matches] == [("conv", "y", "y", "y_dq")]
    assert unmatched == {"candidate": 1, "reference": 1}  # relu's outputs: different names, nothing links them
    rows = {r.name: r for r in onnx_graph.node_table(cand, tensor_info(cand))}
    assert (rows["conv"].precision, rows["conv"].qdq) == ("int8", "act+weight")
    assert (rows["relu"].precision, rows["relu"].qdq) == ("fp32", "")


def test_matching_uses_the_alias_when_only_it_carries_the_name():
    """An FP16 file whose graph output keeps its name through a Cast: 'z' is the Cast's output there."""
    ref = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
                  helper.make_node("Relu", ["y"], ["z"], name="relu")], [_w("w")], "z")
    cand = _model([helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
                   helper.make_node("Conv", ["x16", "w"], ["y"], name="conv"),
                   helper.make_node("Relu", ["y"], ["z16"], name="relu"),
                   helper.make_node("Cast", ["z16"], ["z"], to=TensorProto.FLOAT)], [_w("w", np.float16)], "z")
    matches, _ = onnx_graph.match_tensors(cand, tensor_info(cand), ref, tensor_info(ref))
    assert [(m.tensor, m.candidate) for m in matches] == [("y", "y"), ("z", "z")]


# --------------------------------------------------------------------------- cpnet compare --layers


def test_compare_layers_names_the_damaged_conv(tiny_onnx, tmp_path, capsys):
    damaged = damaged_copy(tiny_onnx, tmp_path / "damaged.onnx", DAMAGED, 3.0)
    out = tmp_path / "cmp.json"
    assert run_cli("compare", damaged, tiny_onnx, "--layers", "--num-images", "2", "--threads", "1",
                   "--json", out) == 0
    text = capsys.readouterr().out
    assert f"first layer past 5%: {DAMAGED} (Conv)" in text
    record = json.loads(out.read_text())["layers"]
    table = record["table"]
    at = next(i for i, row in enumerate(table) if row["node"] == DAMAGED)
    assert all(row["error_percent"] == 0 for row in table[:at])  # the same graph up to the damage
    assert record["first_past"]["node"] == record["largest_added"]["node"] == DAMAGED
    assert record["unmatched"] == {"candidate": 0, "reference": 0, "shape_differs": 0}
    reference = onnx.load(str(tiny_onnx))
    assert [row["tensor"] for row in table] == onnx_graph.float_activations(reference, tensor_info(reference))
    for side in ("candidate", "reference"):  # FP32 files: the exposed run is the deployed run, to rounding
        assert record["unfused_gap"][side]["logits"]["max_rel"] < 1e-4


def test_compare_layers_through_qdq_names_the_damaged_conv_of_an_int8_file(int8_model, calib_dir, tmp_path):
    from quantize.calib_data import iter_calibration_images

    images = list(iter_calibration_images(calib_dir, read_manifest(int8_model["fp32"]), 2))
    clean = layer_errors(int8_model["int8"], int8_model["fp32"], images, threads=1)
    assert clean.unmatched["reference"] == 0 and clean.unmatched["shape_differs"] == 0
    assert max(e.percent for e in clean.layers) < 50  # INT8's own error stays below the damage threshold
    damaged = damaged_copy(int8_model["int8"], tmp_path / "model.int8.onnx", DAMAGED, 4.0)
    result = layer_errors(damaged, int8_model["fp32"], images, threads=1)
    first = result.first_past(50.0)
    assert first is not None and first.match.node == DAMAGED
    assert [e.match.tensor for e in result.layers] == [e.match.tensor for e in clean.layers]


def test_cpu_flavour_layers_are_read_after_their_quantization(int8_model, calib_dir):
    """ONNX Runtime's quantizer (the cpu flavour) drops each Relu after a Conv and names the Conv's output after
    the Relu, the uint8 Q doing the clamp: that tensor holds the Conv's negatives until it is quantized, so it is
    compared as its DequantizeLinear output reads it (by name alone the first Relu was 'off' by about 100 %)."""
    from quantize.calib_data import iter_calibration_images

    images = list(iter_calibration_images(calib_dir, read_manifest(int8_model["fp32"]), 2))
    result = layer_errors(int8_model["cpu"], int8_model["fp32"], images, threads=1)
    relu = next(e for e in result.layers if e.match.op == "Relu")
    assert relu.match.candidate.endswith("DequantizeLinear_Output") and relu.match.reference == relu.match.tensor
    assert result.first_past(50.0) is None, [(e.match.node, e.percent) for e in result.layers if e.percent > 50]
    assert result.unmatched["reference"] > 0  # the Conv outputs the quantizer fused away


def test_compare_outputs_only_and_user_errors(int8_model, tmp_path, capsys):
    assert run_cli("compare", int8_model["int8"], int8_model["fp32"], "--num-images", "1", "--threads", "1") == 0
    text = capsys.readouterr().out
    assert "logits: max |diff|" in text and "layers:" not in text
    engine = fake_engine(tmp_path, ENGINE_LAYERS)
    assert run_cli("compare", engine, int8_model["fp32"], "--layers") == 2
    assert "--layers compares two ONNX files" in error_line(capsys.readouterr().err)
    assert run_cli("compare", tmp_path / "missing.onnx", int8_model["fp32"]) == 2
    assert "no such file" in error_line(capsys.readouterr().err)


def test_inspect_and_compare_are_verbs_in_pipeline_order():
    from cpnet.cli import VERBS

    order = list(VERBS)
    assert order.index("build") < order.index("inspect") < order.index("compare") < order.index("benchmark")


NO_TORCH = """
from cpnet.cli import main
assert main(["inspect", sys.argv[1]]) == 0
assert main(["compare", sys.argv[1], sys.argv[2], "--layers", "--num-images", "1", "--calib-data", sys.argv[3],
             "--threads", "1"]) == 0
assert "torch" not in sys.modules
print("ok")
"""


def test_inspect_and_compare_layers_run_without_torch(int8_model, calib_dir):
    """Both are deploy-side diagnostics: an edge box with ONNX Runtime and no PyTorch runs them."""
    import subprocess
    import sys

    from no_torch import BLOCK_TORCH

    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH + NO_TORCH, str(int8_model["int8"]), str(int8_model["fp32"]),
                        str(calib_dir)], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr
