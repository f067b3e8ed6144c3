"""cpnet int8: files of both flavours, manifest, calibration reuse, --keep-float, --json, the drift gate, errors.

The Q/DQ rules of each flavour are tested in test_qdq.py, the statistics in test_calibrate.py, the
ranking in test_sensitivity.py and the --keep-float auto search in test_keep_float.py.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cpnet.runtime import read_manifest, sha256_file
from no_torch import BLOCK_TORCH
from quantize import calibrate, int8, qdq

torch.set_num_threads(1)
N_CALIB = 8
COMMON = ["--num-images", str(N_CALIB), "--no-progress", "--threads", "1"]


def write_calibration_pngs(folder: Path, n: int = N_CALIB, size: int = 48) -> Path:
    """Synthetic-dataset scenes (real-looking, with the model's classes) written as PNGs."""
    from cpnet.data.synthetic import make_sample

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, _ = make_sample(3, "train", i, size)
        cv2.imwrite(str(folder / f"calib_{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    return write_calibration_pngs(tmp_path_factory.mktemp("int8_calib") / "images")


def copy_model(src: Path, folder: Path) -> Path:
    """The FP32 model and its manifest in a folder of the test's own (so calibration caches do not mix)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "model.onnx"
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.name + ".json"), dst.with_name(dst.name + ".json"))
    return dst


def run_int8(*argv) -> int:
    return int8.main([*COMMON, *map(str, argv)])  # options given later win


@pytest.fixture(scope="module")
def quantized(tiny_onnx, calib_dir, tmp_path_factory):
    """Both flavours made from one calibration pass: {flavour: path}, plus the model they came from."""
    model = copy_model(tiny_onnx, tmp_path_factory.mktemp("int8"))
    assert run_int8(model, "--calib-data", calib_dir) == 0
    assert run_int8(model, "--calib-data", calib_dir, "--flavour", "cpu", "--method", "percentile") == 0
    return {"model": model, "tensorrt": model.with_name("model.int8.onnx"),
            "cpu": model.with_name("model.int8-cpu.onnx")}


def test_manifest_records_calibration_and_lineage(quantized, calib_dir):
    parent = quantized["model"]
    for flavour in ("tensorrt", "cpu"):
        path = quantized[flavour]
        m = read_manifest(path)
        assert m["precision"] == "int8" and m["kind"] == "onnx" and m["flavour"] == flavour
        assert m["sha256"] == sha256_file(path)
        assert m["parent"]["sha256"] == sha256_file(parent)
        assert (path.parent / m["parent"]["path"]).resolve() == parent.resolve()
        assert m["input_size"] == read_manifest(parent)["input_size"] and m["classes"]
        c = m["calibration"]
        assert c["images"] == N_CALIB and str(calib_dir) in c["source"]
        assert c["flavour"] == flavour and c["per_channel"] is True
        assert c["symmetric_activations"] is (flavour == "tensorrt")
        assert c["excluded_nodes"] == [] and c["seed"] == 0
        assert (path.parent / c["ranges_file"]).is_file()
        assert "versions" in m and m["versions"].get("onnxruntime")
        # the drift against FP32 is always measured; no limit was given, so none is in force
        d = m["drift"]
        assert d["images"] == N_CALIB and 0 <= d["disagreement_percent"] <= 100 and d["mean_abs"] > 0
        assert d["max_disagreement"] is None and d["met"] is True
        import onnx

        assert qdq.check_qdq(onnx.load(str(path)), flavour) == []
    assert read_manifest(quantized["tensorrt"])["calibration"]["method"] == "entropy"
    c = read_manifest(quantized["cpu"])["calibration"]
    assert c["method"] == "percentile" and c["percentile"] == pytest.approx(99.999) and c["ranges_reused"] is True


def test_int8_files_run_in_ort_and_agree_with_fp32(quantized, calib_dir):
    from engines.backends.onnxruntime_backend import OnnxModel
    from quantize.calib_data import iter_calibration_images

    fp32 = OnnxModel(quantized["model"], threads=1)
    images = list(iter_calibration_images(calib_dir, fp32.manifest, N_CALIB))
    ref = [fp32.infer(x) for x in images]
    for flavour in ("tensorrt", "cpu"):
        q = OnnxModel(quantized[flavour], threads=1)
        assert q.precision == "int8"
        outs = [q.infer(x) for x in images]
        agree = np.mean([(o.argmax(1) == r.argmax(1)).mean() for o, r in zip(outs, ref)])
        assert agree >= 0.9, f"{flavour}: argmax agreement with FP32 only {agree:.3f}"
        assert np.all(np.isfinite(np.concatenate(outs)))


def test_tensorrt_flavour_is_int8_in_an_fp16_graph_and_cpu_flavour_stays_fp32(quantized):
    """The tensorrt file: opset 19, float16 scales and activations, float32 input and output, the record in the
    manifest, TensorRT's pre-flight check and placement lint clean; the cpu file: FP32, the parent's opset."""
    import onnx
    from onnx import TensorProto

    check = pytest.importorskip("engines.check")
    m = onnx.load(str(quantized["tensorrt"]))
    assert qdq.opset(m) == 19
    inits = {i.name: i for i in m.graph.initializer}
    scales = [inits[n.input[1]] for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert scales and all(s.data_type == TensorProto.FLOAT16 for s in scales)
    assert [i.type.tensor_type.elem_type for i in (*m.graph.input, *m.graph.output)] == [TensorProto.FLOAT] * 2
    record = read_manifest(quantized["tensorrt"])["high_precision"]
    assert record["dtype"] == "fp16" and record["opset"]["after"] == 19 and record["nodes"]["fp16"] > 0
    for target in ("trt10", "trt11"):
        res = check.check_file(quantized["tensorrt"], target=target)
        assert res.ok and res.warnings == [], res.lines()
    cpu = onnx.load(str(quantized["cpu"]))
    assert read_manifest(quantized["cpu"])["high_precision"] == {"dtype": "fp32"}
    assert qdq.opset(cpu) == qdq.opset(onnx.load(str(quantized["model"])))


def test_high_precision_fp32_keeps_the_graph_fp32(quantized, calib_dir, tmp_path, capsys):
    import onnx
    from onnx import TensorProto

    out = tmp_path / "fp32.int8.onnx"
    assert run_int8(quantized["model"], "--calib-data", calib_dir, "--high-precision", "fp32", "-o", out) == 0
    m = onnx.load(str(out))
    inits = {i.name: i for i in m.graph.initializer}
    assert all(inits[n.input[1]].data_type == TensorProto.FLOAT for n in m.graph.node if n.op_type == "QuantizeLinear")
    assert read_manifest(out)["high_precision"] == {"dtype": "fp32"}
    # fp16 is the tensorrt flavour's; the cpu flavour runs on ONNX Runtime's FP32 INT8 kernels
    capsys.readouterr()
    assert run_int8(quantized["model"], "--calib-data", calib_dir, "--flavour", "cpu", "--high-precision", "fp16",
                    "-o", tmp_path / "x.onnx") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--high-precision fp16 is for the tensorrt flavour" in err[0]


def test_second_run_reuses_saved_ranges_without_a_pass(tiny_onnx, calib_dir, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cpnet")
    model = copy_model(tiny_onnx, tmp_path)
    assert run_int8(model, "--calib-data", calib_dir) == 0
    assert "running" in caplog.text and (tmp_path / "model.calib.npz").is_file()
    caplog.clear()

    def no_second_pass(*a, **k):
        raise AssertionError("calibration images were run through the model again")

    monkeypatch.setattr(calibrate, "collect", no_second_pass)
    assert run_int8(model, "--calib-data", calib_dir, "--method", "minmax", "-o", tmp_path / "b.onnx") == 0
    assert run_int8(model, "--calib-data", calib_dir, "--flavour", "cpu", "--method", "percentile") == 0
    assert caplog.text.count("reused saved ranges") == 2
    caplog.clear()
    assert read_manifest(tmp_path / "b.onnx")["calibration"]["method"] == "minmax"
    # the ranges file is plain arrays: it loads without pickle
    with np.load(tmp_path / "model.calib.npz", allow_pickle=False) as z:
        assert z["hist"].shape[1] == calibrate.NUM_BINS
    # another image set does not reuse them
    monkeypatch.undo()
    assert run_int8(model, "--calib-data", calib_dir, "--num-images", "4", "-o", tmp_path / "c.onnx") == 0
    assert "collecting new ranges" in caplog.text
    assert read_manifest(tmp_path / "c.onnx")["calibration"]["images"] == 4


def test_a_file_at_the_default_ranges_name_that_cpnet_did_not_make_is_left_as_it_is(tiny_onnx, calib_dir, tmp_path,
                                                                                      caplog):
    caplog.set_level(logging.INFO, logger="cpnet")
    model = copy_model(tiny_onnx, tmp_path)
    theirs = tmp_path / "model.calib.npz"
    theirs.write_text("someone's notes, under an unlucky name")
    assert run_int8(model, "--calib-data", calib_dir) == 0
    assert theirs.read_text() == "someone's notes, under an unlucky name"
    assert "is not a ranges file cpnet made: left as it is" in caplog.text


def test_an_explicit_ranges_file_is_written_there_and_reused_without_calibrating(tiny_onnx, calib_dir, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cpnet")
    model = copy_model(tiny_onnx, tmp_path)
    ranges = tmp_path / "my.npz"
    assert run_int8(model, "--calib-data", calib_dir, "--ranges", ranges) == 0
    assert ranges.is_file() and not (tmp_path / "model.calib.npz").exists()
    monkeypatch.setattr(calibrate, "collect", lambda *a, **k: pytest.fail("second pass"))
    assert run_int8(model, "--calib-data", calib_dir, "--ranges", ranges, "--method", "minmax") == 0
    assert "reused saved ranges from" in caplog.text


def test_keep_float_name_leaves_that_node_unquantized(tiny_onnx, calib_dir, tmp_path):
    import onnx

    model = copy_model(tiny_onnx, tmp_path)
    node = "/head/classifier/Conv"
    out = tmp_path / "kf.onnx"
    assert run_int8(model, "--calib-data", calib_dir, "--keep-float", node, "-o", out) == 0
    q = onnx.load(str(out))
    producers = {o: n for n in q.graph.node for o in n.output}
    conv = next(n for n in q.graph.node if n.name == node)
    # float weights, and a float input: the ReLU before it is fed its float input too
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in conv.input)
    relu = producers[conv.input[0]]
    assert relu.op_type == "Relu" and producers[relu.input[0]].op_type == "Conv"
    other = next(n for n in q.graph.node if n.name == "/head/bottleneck/conv/Conv")
    assert producers[other.input[0]].op_type == "DequantizeLinear"
    assert producers[other.input[1]].op_type == "DequantizeLinear"
    assert qdq.check_qdq(q, "tensorrt") == []
    assert read_manifest(out)["calibration"]["excluded_nodes"] == [node]
    # a Conv followed by its own ReLU: both stay float, and the manifest lists both
    out2 = tmp_path / "kf2.onnx"
    assert run_int8(model, "--calib-data", calib_dir, "--keep-float", "/head/bottleneck/conv/Conv", "-o", out2) == 0
    assert read_manifest(out2)["calibration"]["excluded_nodes"] == ["/head/bottleneck/conv/Conv",
                                                                    "/head/bottleneck/relu/Relu"]
    q2 = onnx.load(str(out2))
    producers = {o: n for n in q2.graph.node for o in n.output}
    conv = next(n for n in q2.graph.node if n.name == "/head/bottleneck/conv/Conv")
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in conv.input)


def test_keep_float_unknown_name_is_a_one_line_error(tiny_onnx, calib_dir, tmp_path, capsys, monkeypatch):
    model = copy_model(tiny_onnx, tmp_path)
    # the names are checked before any image is read
    monkeypatch.setattr(calibrate, "collect", lambda *a, **k: pytest.fail("calibrated before checking --keep-float"))
    assert run_int8(model, "--calib-data", calib_dir, "--keep-float", "/no/such/Conv") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "/no/such/Conv" in err and "cpnet sensitivity" in err


def test_no_readable_calibration_image_is_a_one_line_error(tiny_onnx, tmp_path, capsys):
    model = copy_model(tiny_onnx, tmp_path / "m")
    bad = tmp_path / "bad_images"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"this is not a png")
    assert run_int8(model, "--calib-data", bad, "-q") == 2  # -q: no progress lines, so stderr is the error alone
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err
    assert not (tmp_path / "m" / "model.int8.onnx").exists()


def test_corrupt_onnx_is_a_one_line_error(tiny_onnx, calib_dir, tmp_path, capsys):
    from cpnet.runtime import write_manifest

    model = copy_model(tiny_onnx, tmp_path)
    model.write_bytes(b"\x08\x07garbage" * 10)
    # changed after its manifest was written: refused by its sha256, before its bytes are parsed
    assert run_int8(model, "--calib-data", calib_dir) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.onnx" in err and "sha256 differs" in err
    # a manifest that vouches for garbage: the file is parsed, and is not a model
    manifest = read_manifest(model)
    write_manifest(model, {**{k: v for k, v in manifest.items() if k != "schema"}, "sha256": sha256_file(model)})
    assert run_int8(model, "--calib-data", calib_dir) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.onnx" in err and "not a valid ONNX model" in err
    assert run_int8(tmp_path / "missing.onnx", "--calib-data", calib_dir) == 2
    assert "not found" in capsys.readouterr().err


def test_quantizing_a_quantized_model_is_refused(quantized, calib_dir, capsys):
    assert run_int8(quantized["tensorrt"], "--calib-data", calib_dir, "-o", quantized["model"].with_name("x.onnx")) == 2
    assert "int8" in capsys.readouterr().err


def test_int8_json_writes_the_manifest(quantized, calib_dir, tmp_path, capsys):
    out, js = quantized["model"].with_name("j.int8.onnx"), tmp_path / "int8.json"  # beside the model: its ranges
    assert run_int8(quantized["model"], "--calib-data", calib_dir, "-o", out, "--json", js) == 0
    assert capsys.readouterr().out.strip() == str(out)  # stdout: the file made; the figures go to the log and JSON
    report = json.loads(js.read_text())
    assert report == read_manifest(out) and report["precision"] == "int8"
    assert report["calibration"]["ranges_reused"] is True and "disagreement_percent" in report["drift"]


def test_int8_max_disagreement_gate_fails_with_exit_1_and_one_line(quantized, calib_dir, tmp_path, capsys):
    from cpnet.cli import main

    out, js = quantized["model"].with_name("gate.int8.onnx"), tmp_path / "gate.json"
    rc = main(["int8", str(quantized["model"]), "--calib-data", str(calib_dir), *COMMON, "-o", str(out),
               "--max-disagreement", "0", "--json", str(js), "-q"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: INT8 drift limit missed")
    assert "--max-disagreement 0%" in err and "--keep-float auto" in err
    m = read_manifest(out)  # written for inspection, and it says the limit was missed
    assert json.loads(js.read_text()) == m
    assert m["drift"]["max_disagreement"] == 0 and m["drift"]["met"] is False and m["drift"]["disagreement_percent"] > 0
    # a limit the file keeps: exit 0
    limit = m["drift"]["disagreement_percent"] + 0.01
    assert run_int8(quantized["model"], "--calib-data", calib_dir, "-o", out, "--max-disagreement", limit) == 0
    assert read_manifest(out)["drift"]["met"] is True


def test_output_places_are_checked_before_any_work(quantized, calib_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(calibrate, "collect", lambda *a, **k: pytest.fail("calibrated before checking the outputs"))
    folder = tmp_path / "a_folder"
    folder.mkdir()
    for flag in ("-o", "--json", "--ranges"):
        assert run_int8(quantized["model"], "--calib-data", calib_dir, "--recalibrate", flag, folder) == 2, flag
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(folder) in err and "existing folder" in err, (flag, err)


NO_TORCH = BLOCK_TORCH + """
from quantize.int8 import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(rc)
"""


def test_int8_from_a_folder_of_images_runs_without_torch(tiny_onnx, calib_dir, tmp_path):
    import subprocess
    import sys

    model = copy_model(tiny_onnx, tmp_path)
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(model), "--calib-data", str(calib_dir), *COMMON],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_manifest(model.with_name("model.int8.onnx"))["precision"] == "int8"
