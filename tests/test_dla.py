"""DLA per TensorRT version (engines/trt/dla.py) and where every layer runs (engines/layers/placement.py), on the strict fake."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpnet.runtime import CheckFailed, UserError, read_manifest
from engines import build_engine
from engines.layers import placement as layers
from engines.trt import dla
from engines.trt.options import BuildOptions, validate_build_options
from fake_tensorrt.trt import plan_header
from test_trt_fake import _build, _conv_model


@pytest.mark.parametrize("version,platform,path", [
    ("10.0.0", "linux", dla.TEN), ("10.3.0.30", "linux", dla.TEN), ("10.7.0", "linux", dla.TEN),
    ("11.4.1", "linux", dla.ORIN_11), ("11.4.0", "windows-arm", dla.WOA), ("11.5.0", "windows-arm", dla.WOA)])
def test_the_support_matrix_has_dla(version, platform, path):
    assert dla.dla_path(version, platform) is path


@pytest.mark.parametrize("version,platform", [
    ("10.8.0", "linux"), ("10.16.1", "linux"), ("11.0.0", "linux"), ("11.3.0", "linux"), ("11.4.0", "linux"),
    ("11.5.0", "linux"), ("10.3.0", "windows-arm"), ("11.3.0", "windows-arm")])
def test_versions_without_dla_are_refused_naming_those_with_it(version, platform):
    with pytest.raises(UserError) as e:
        dla.dla_path(version, platform)
    line = str(e.value)
    assert "\n" not in line and f"TensorRT {version} has no DLA" in line
    assert "10.0-10.7" in line and "11.4.1 on Jetson AGX Orin" in line and "Windows on ARM" in line


def _prior_model(tmp_path, precision="fp16"):
    return _conv_model(tmp_path / "model.onnx", prior=True, precision=precision)


def test_dla_on_10_3_is_weakly_typed_with_the_precision_flags_and_gpu_fallback(fake_trt, tmp_path):
    """Old code: a strongly typed network without the FP16/INT8 flags on 10.3."""
    fake_trt("10.3.0")
    out = _build(_prior_model(tmp_path, "int8"), dla_core=0)
    head = plan_header(out.read_bytes())
    assert head["strongly_typed"] is False and head["dla"] == 0
    assert {"FP16", "INT8", "GPU_FALLBACK"} <= set(head["flags"])
    m = read_manifest(out)
    assert m["tensorrt"]["strongly_typed"] is False and m["precision_mode"] == "builder-flags"


def test_dla_fp16_file_on_10_3_sets_fp16_but_not_int8(fake_trt, tmp_path):
    fake_trt("10.3.0")
    head = plan_header(_build(_prior_model(tmp_path, "fp16"), dla_core=0).read_bytes())
    assert "FP16" in head["flags"] and "INT8" not in head["flags"]


def test_dla_on_11_4_1_is_strongly_typed(fake_trt, tmp_path):
    fake_trt("11.4.1")
    head = plan_header(_build(_prior_model(tmp_path), dla_core=0).read_bytes())
    assert head["strongly_typed"] is True and "GPU_FALLBACK" in head["flags"]
    assert not {"FP16", "INT8"} & set(head["flags"])


@pytest.mark.parametrize("version", ["10.16.1", "11.4.0"])
def test_dla_build_refused_where_the_matrix_has_none(fake_trt, tmp_path, version):
    """Old code: 10.16 and 11.4.0 on Linux built a DLA engine."""
    fake_trt(version)
    with pytest.raises(UserError, match=f"TensorRT {version} has no DLA on Linux/JetPack"):
        _build(_prior_model(tmp_path), dla_core=0)


def test_windows_on_arm_builds_without_gpu_fallback(fake_trt, tmp_path, monkeypatch):
    fake_trt("11.4.0", dla_gpu_ops=("Tile",))
    monkeypatch.setattr(dla, "host_platform", lambda: "windows-arm")
    with pytest.raises(UserError, match="TensorRT failed to build"):  # the fake refuses fallback without the flag
        _build(_prior_model(tmp_path), dla_core=0)
    fake_trt("11.4.0")
    head = plan_header(_build(_prior_model(tmp_path), dla_core=0, output=str(tmp_path / "b.engine")).read_bytes())
    assert "GPU_FALLBACK" not in head["flags"] and head["strongly_typed"] is True


def test_layers_file_and_placement_in_the_manifest(fake_trt, tmp_path, caplog):
    fake_trt("10.3.0", dla_gpu_ops=("Tile",))
    with caplog.at_level("INFO"):
        out = _build(_prior_model(tmp_path), dla_core=0)
    lf = out.with_name(out.name + ".layers.json")
    assert lf.name == "model.dla0.engine.layers.json"
    info = json.loads(lf.read_text())  # the inspector's JSON as TensorRT returned it
    names = [x["Name"] for x in info["Layers"]]
    assert "{ForeignNode[conv...col]}" in names and "rows" in names and "{ForeignNode[prior_scale]}" in names
    p = read_manifest(out)["layer_placement"]
    assert p["by_device"] == {"dla": 2, "gpu": 1} and p["gpu_layers"] == ["rows"]
    assert p["reformats"] == 2  # DLA -> GPU and GPU -> DLA
    assert p["by_precision_device"] == {"dla": {"fp16": 2}, "gpu": {"fp16": 1}}  # the FP16 flag
    assert read_manifest(out)["layers_file"] == lf.name
    assert "DLA 2 layers, GPU 1: rows; 2 reformat layer(s)" in caplog.text


def test_cpnet_inspect_reads_the_table_the_build_recorded_with_the_same_devices(fake_trt, tmp_path):
    """The build's placement and cpnet inspect's table read one JSON with one device and reformat rule."""
    from engines.layers import engine_json

    fake_trt("10.3.0", dla_gpu_ops=("Tile",))
    out = _build(_prior_model(tmp_path), dla_core=0)
    _, document = engine_json.read_layers(out)
    table = engine_json.counts(engine_json.layer_rows(document))
    placed = read_manifest(out)["layer_placement"]
    assert table["reformat"] == placed["reformats"] == 2
    compute = [r for r in engine_json.layer_rows(document) if not r.reformat]
    assert sorted(r.device for r in compute) == ["DLA", "DLA", "GPU"]
    assert [r.name for r in compute if r.device == "GPU"] == placed["gpu_layers"]


def _reshape_model(tmp_path):
    """image -> conv -> reshape (same shape) -> logits, FP32 (10.x DLA builds set the FP16 flag): a node only
    TensorRT can place, and none the check refuses."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cpnet.runtime import write_manifest
    from cpnet.runtime.files import sha256_file

    path = tmp_path / "model.onnx"
    inits = [numpy_helper.from_array(np.full((2, 3, 1, 1), 1.0, np.float32), "W"),
             numpy_helper.from_array(np.array([1, 2, 4, 4], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["image", "W"], ["y"], name="conv"),
             helper.make_node("Reshape", ["y", "shape"], ["logits"], name="reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    write_manifest(path, {"kind": "onnx", "precision": "fp32", "input_size": [4, 4], "classes": ["a", "b"],
                          "mean": [0, 0, 0], "std": [1, 1, 1], "sha256": sha256_file(path)})
    return path


def test_strict_dla_fails_naming_the_fallen_back_layers(fake_trt, tmp_path):
    """Old code: --strict-dla cleared GPU fallback (and the check refused every node TensorRT might not place on
    DLA), so a build failed without TensorRT having said which layers fell back."""
    fake_trt("10.3.0", dla_gpu_ops=("Reshape",))
    with pytest.raises(CheckFailed, match=r"1 layer\(s\) fell back to the GPU on TensorRT 10.3.0: reshape; "
                                          r"nothing written"):
        _build(_reshape_model(tmp_path), dla_core=0, strict_dla=True, output=str(tmp_path / "s.engine"))
    assert not (tmp_path / "s.engine").exists() and not (tmp_path / "s.engine.layers.json").exists()


def test_strict_dla_passes_when_everything_runs_on_dla(fake_trt, tmp_path):
    fake_trt("10.3.0")
    out = _build(_conv_model(tmp_path / "model.onnx", precision="fp16"), dla_core=0, strict_dla=True)
    assert read_manifest(out)["layer_placement"]["gpu_layers"] == []


def test_gpu_build_counts_layers_on_the_gpu(fake_trt, tmp_path):
    fake_trt("10.16.1")
    out = _build(_prior_model(tmp_path))
    p = read_manifest(out)["layer_placement"]
    assert p["by_device"] == {"gpu": 5} and p["gpu_layers"] == [] and p["reformats"] == 0


def test_placement_reads_real_shaped_json():
    """Q/DQ scale layers are of type Reformat with Origin QDQ: quantization, not reformatting."""
    info = {"Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to conv", "LayerType": "Reformat",
         "ParameterType": "Reformat", "Origin": "REFORMAT",
         "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32 format"}]},
        {"Name": "input qdq", "LayerType": "Reformat", "Origin": "QDQ",
         "Inputs": [{"Name": "x", "Format/Datatype": "FP32"}], "Outputs": [{"Name": "q", "Format/Datatype": "Int8"}]},
        {"Name": "{ForeignNode[conv...relu]}", "LayerType": "DLA",
         "Inputs": [{"Name": "q", "Format/Datatype": "Int8"}]},
        {"Name": "{ForeignNode[a...b]}", "LayerType": "Myelin", "Inputs": [{"Name": "h", "DataType": "Half"}]}]}
    p = layers.placement(json.dumps(info), dla=True)
    assert p["reformats"] == 1 and p["by_device"] == {"dla": 1, "gpu": 2}
    assert p["gpu_layers"] == ["input qdq", "{ForeignNode[a...b]}"]


def test_validate_build_options_uses_the_table(monkeypatch):
    opts = BuildOptions(onnx="m.onnx", dla_core=0)
    assert validate_build_options(opts, "10.7.0", {"precision": "fp16"}) == "dla"
    with pytest.raises(UserError, match="10.8.0 has no DLA"):
        validate_build_options(opts, "10.8.0", {"precision": "fp16"})


def test_cli_strict_dla_keeps_gpu_fallback_for_the_inspector():
    import argparse
    p = argparse.ArgumentParser()
    build_engine.add_arguments(p)
    from cpnet.cli import args as a  # noqa: F401  (the parser's shared flags)
    args = p.parse_args(["m.onnx", "--dla-core", "0", "--strict-dla"])
    args.verbose = False
    assert build_engine.options_from(args).gpu_fallback is True


def test_check_target_dla_names_every_layer_the_build_put_on_the_gpu(fake_trt, tmp_path):
    """As far as the fake can say: each GPU layer of the build is a node the check said falls back; the check
    marks the nodes whose placement TensorRT decides ("may run on DLA; check the build log")."""
    from engines import check

    onnx_file = _prior_model(tmp_path)
    fake_trt("10.3.0", dla_gpu_ops=("Tile", "Reshape"))
    out = _build(onnx_file, dla_core=0)
    gpu = set(read_manifest(out)["layer_placement"]["gpu_layers"])
    result = check.check_file(onnx_file, options=check.CheckOptions(target="dla", assume_fp16=True))
    flagged = {p.node for p in result.problems if "fall back to GPU" in p.message or "falls back" in p.message}
    assert gpu == {"col", "rows"} and gpu <= flagged
    unsure = {p.node for p in result.problems if "the check cannot know" in p.message}
    assert unsure == {"ch0", "col"}  # Slice, Reshape: TensorRT decides
    assert "rows" not in unsure  # Tile: DLA has no layer for it, the check knows


def test_strict_check_leaves_what_only_tensorrt_decides_to_the_build(tmp_path):
    """Old code: --strict-dla made every "may run on DLA" node an error, so the build never ran to decide."""
    from engines import check

    result = check.check_file(_prior_model(tmp_path), options=check.CheckOptions(target="dla", strict_dla=True,
                                                                                        assume_fp16=True))
    assert {p.node for p in result.errors} == {"rows"}
    assert {p.node for p in result.warnings} >= {"ch0", "col"}


def _export(tmp_path, config: str):
    """The config's architecture at the tests' tiny size (conftest.TINY_OVERRIDES), exported to ONNX as FP32
    (random weights, parity on random inputs)."""
    import torch

    from conftest import TINY_OVERRIDES, randomize_bn
    from cpnet.checkpoint import save_checkpoint
    from cpnet.config import load_config
    from cpnet.export import ExportOptions, export_checkpoint
    from cpnet.models.cpnet import CPNet
    from cpnet.runtime.options import RuntimeOptions

    cfg = load_config(config, TINY_OVERRIDES)
    torch.manual_seed(0)
    model = CPNet(cfg.model)
    randomize_bn(model)
    n = cfg.model.num_classes
    classes, palette = [f"c{i}" for i in range(n)], [[i, i, i] for i in range(n)]
    ckpt = tmp_path / "run" / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(), "iter": 0, "classes": classes,
                           "palette": palette}, cfg, classes, palette)
    path, _ = export_checkpoint(ckpt, tmp_path / "model.onnx", ExportOptions(parity="random", num_parity_images=1),
                                RuntimeOptions(threads=1))
    return path


@pytest.mark.parametrize("config", ["quickstart", "edge_r18_256x512"])
def test_check_and_build_agree_on_the_project_models(fake_trt, tmp_path, config):
    """The quickstart and edge architectures: the fake places on the GPU the op types the check says DLA has no
    layer for, plus the shuffles it says TensorRT decides; every GPU layer of the build is then a node the check
    named, each with whether the check could know."""
    from engines import check

    path = _export(tmp_path, config)
    result = check.check_file(path, options=check.CheckOptions(target="dla", assume_fp16=True))
    known = {p.node: p.op for p in result.problems if p.message.startswith("falls back")}
    unsure = {p.node: p.op for p in result.problems if check.CANNOT_KNOW in p.message}
    assert known and unsure and not set(known) & set(unsure)
    gpu_ops = {op for op in known.values() if "has no layer" in " ".join(
        p.message for p in result.problems if p.op == op)} | {"Reshape", "Transpose"}
    fake_trt("10.3.0", dla_gpu_ops=tuple(sorted(gpu_ops)))
    out = _build(path, dla_core=0)
    gpu = read_manifest(out)["layer_placement"]["gpu_layers"]
    assert gpu and set(gpu) <= set(known) | set(unsure)
