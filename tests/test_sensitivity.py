"""cpnet sensitivity: per-node INT8 ranking, reusing the ranges cpnet int8 saved, as a table and as JSON."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
from quantize import int8
from quantize.__main__ import main as python_m_quantize
from quantize.sensitivity import format_table, rank_sensitivity

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> Path:
    """The FP32 model and its manifest in a folder of this module's own (its ranges file is this module's)."""
    dst = tmp_path_factory.mktemp("sensitivity") / "model.onnx"
    shutil.copy(tiny_onnx, dst)
    shutil.copy(tiny_onnx.with_name(tiny_onnx.name + ".json"), dst.with_name(dst.name + ".json"))
    return dst


def test_sensitivity_prints_a_ranking_and_writes_json(model, tiny_data, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="cpnet")
    calib = str(Path(tiny_data) / "images" / "train")
    common = ["--calib-data", calib, "--num-images", "6", "--no-progress", "--threads", "1"]
    assert int8.main([str(model), *common]) == 0  # saves model.calib.npz
    capsys.readouterr()
    caplog.clear()
    js = tmp_path / "sens.json"
    rc = python_m_quantize(["sensitivity", str(model), *common, "--eval-images", "2", "--top", "5", "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "reused saved ranges" in caplog.text  # the cache made by the int8 run
    assert "rank" in out and "disagree %" in out and "more nodes" in out and "all nodes quantized" in out
    report = json.loads(js.read_text())
    assert report["flavour"] == "tensorrt" and report["method"] == "entropy" and report["images"] == 2
    assert set(report["all_quantized"]) >= {"disagreement_percent", "mean_abs", "max_abs", "agreement"}
    rows = report["ranking"]
    names = [r["node"] for r in rows]
    assert "/head/MatMul" in names and "/head/prior_conv/Conv" in names
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    keys = [(r["disagreement_percent"], r["mean_abs"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert rows[0]["node"] in out


def test_rank_sensitivity_library_call(model, tiny_data):
    report = rank_sensitivity(model, calibration=CalibrationOptions(data=str(Path(tiny_data) / "images" / "train"),
                                                                      num_images=6),
                              runtime=RuntimeOptions(threads=1, progress=False), flavour="cpu", eval_images=1)
    assert report["flavour"] == "cpu" and report["images"] == 1
    assert all(r["op_type"] in ("Conv", "ConvTranspose", "MatMul", "Gemm") for r in report["ranking"])
    table = format_table(report["ranking"], top=2)
    assert len(table.splitlines()) == 4 and table.splitlines()[-1].startswith("(")
