"""FP16 conversion (range + drift driven FP32 block list, drift gate), calibration images, the quantize dispatcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cpnet.runtime import UserError, read_manifest, sha256_file, write_manifest
from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
from engines.backends.onnxruntime_backend import OnnxModel
from quantize import calib_data
from quantize.logit_drift import DriftLimitExceeded
from quantize.fp16 import convert_fp16

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = RuntimeOptions(threads=1, progress=False)


def images(data, n: int) -> CalibrationOptions:
    return CalibrationOptions(data=str(data), num_images=n)


def write_pngs(folder: Path, n: int, size=(40, 52), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), img)
    return folder


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    return write_pngs(tmp_path_factory.mktemp("calib") / "pngs", 6)


@pytest.fixture(scope="module")
def fp16_file(tiny_onnx, calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    path, manifest = convert_fp16(tiny_onnx, out, calibration=images(calib_dir, 6), runtime=ONE_THREAD)
    return path, manifest


def test_fp16_file_types_weights_and_manifest(fp16_file, tiny_onnx, calib_dir):
    import onnx

    path, manifest = fp16_file
    assert read_manifest(path) == manifest
    model = onnx.load(str(path))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    floats = [t for t in model.graph.initializer if t.data_type in (f32, f16)]
    assert sum(t.data_type == f16 for t in floats) >= 0.8 * len(floats)
    onnx.checker.check_model(model)  # includes topological order

    assert manifest["precision"] == "fp16" and manifest["kind"] == "onnx"
    assert manifest["parent"] == {"path": str(tiny_onnx), "sha256": sha256_file(tiny_onnx)}
    assert manifest["sha256"] == sha256_file(path)
    info = manifest["fp16"]
    assert isinstance(info["fp32_nodes"], list) and set(info["fp32_nodes"]) == set(info["fp32_node_reasons"])
    assert info["calibration"] == {"images": 6, "source": f"folder {calib_dir}", "seed": 0}
    assert info["drift"]["agreement"] >= 0.99 and "rounds" in info["drift"]
    for key in ("classes", "palette", "input_size", "mean", "std", "input", "output", "config"):
        assert manifest[key] == read_manifest(tiny_onnx)[key]


def test_fp16_runs_in_ort_cpu_close_to_fp32(fp16_file, tiny_onnx, calib_dir):
    path, manifest = fp16_file
    images = list(calib_data.iter_calibration_images(calib_dir, manifest, 6))
    with OnnxModel(tiny_onnx, threads=1) as m32, OnnxModel(path, threads=1) as m16:
        assert m16.precision == "fp16" and m16.input_dtype == np.float32
        agree = total = 0
        for x in images:
            a, b = m32.infer(x), m16.infer(x)
            assert b.dtype == np.float32 and np.isfinite(b).all()
            assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            total += a.shape[2] * a.shape[3]
    assert agree / total >= 0.99


def test_fp16_greedy_rounds_and_keep_float(tiny_onnx, calib_dir, tmp_path):
    import onnx

    names = [n.name for n in onnx.load(str(tiny_onnx)).graph.node]
    matmul = next(n for n in names if "MatMul" in n)
    # an unreachable target: the loop runs its rounds, moves nodes to FP32, and still writes the closest result
    with pytest.raises(DriftLimitExceeded) as e:
        convert_fp16(tiny_onnx, tmp_path / "g.onnx", calibration=images(calib_dir, 2), runtime=ONE_THREAD,
                     max_logit_error=0.0, max_rounds=1, nodes_per_round=1, keep_float=(matmul,))
    path, m = e.value.path, e.value.manifest
    assert path == tmp_path / "g.onnx" and read_manifest(path) == m
    assert e.value.exit_code == 1 and "\n" not in str(e.value) and "--max-rounds" in str(e.value)
    info = m["fp16"]
    rounds = info["drift"]["rounds"]
    assert len(rounds) == 2 and rounds[0]["fp32_nodes"] == 1 and rounds[1]["fp32_nodes"] == 2
    assert info["drift"]["target_met"] is False
    assert matmul in info["fp32_nodes"] and info["fp32_node_reasons"][matmul].startswith("user")
    with pytest.raises(UserError, match="no node named"):
        convert_fp16(tiny_onnx, tmp_path / "h.onnx", calibration=images(calib_dir, 1), runtime=ONE_THREAD,
                     keep_float=("nope",))


def _small_model(tmp_path: Path, name: str, nodes, constants: dict) -> Path:
    """An 8x8 three-class "segmentation" model image -> nodes -> logits, with its manifest (pixels 0-255 as they are)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in constants.items()]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(model, str(path))
    write_manifest(path, {"kind": "onnx", "precision": "fp32", "input_size": [8, 8], "mean": [0, 0, 0],
                          "std": [1, 1, 1], "channel_order": "RGB", "classes": ["a", "b", "c"],
                          "sha256": sha256_file(path)})
    return path


def _overflow_model(tmp_path: Path) -> Path:
    """image * 300 (reaches 76500 on 0-255 pixels: past FP16's 65504) * 0.001 -> relu -> logits."""
    from onnx import helper

    nodes = [helper.make_node("Mul", ["image", "k1"], ["big"], name="scale_up"),
             helper.make_node("Mul", ["big", "k2"], ["small"], name="scale_down"),
             helper.make_node("Relu", ["small"], ["logits"], name="relu")]
    return _small_model(tmp_path, "overflow", nodes, {"k1": 300.0, "k2": 0.001})


def _white_images(tmp_path: Path) -> Path:
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "white.png"), np.full((8, 8, 3), 255, np.uint8))
    return calib


def test_fp16_keeps_overflowing_tensors_in_fp32(tmp_path):
    import onnx

    src = _overflow_model(tmp_path)
    calib = _white_images(tmp_path)
    path, m = convert_fp16(src, None, calibration=images(calib, 1), runtime=ONE_THREAD)
    assert path == tmp_path / "overflow.fp16.onnx"
    reasons = m["fp16"]["fp32_node_reasons"]
    assert set(reasons) == {"scale_up", "scale_down"} and all(r.startswith("range") for r in reasons.values())
    graph = onnx.load(str(path)).graph
    down = next(n for n in graph.node if n.name == "scale_down")
    producer = next(n for n in graph.node if down.input[0] in n.output)
    assert producer.name == "scale_up"  # the FP32 edge does not round-trip through FP16 (no Cast pair between)
    with OnnxModel(path, threads=1) as om:
        out = om.infer(np.full((1, 3, 8, 8), 255, np.float32))
    assert np.isfinite(out).all() and np.allclose(out, 76.5, rtol=1e-3)
    assert m["fp16"]["drift"]["target_met"] is True


# ---------------------------------------------------------------- calibration images


def test_calibration_folder_without_readable_images(tmp_path, tiny_onnx):
    manifest = read_manifest(tiny_onnx)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(UserError) as e:
        calib_data.iter_calibration_images(empty, manifest, 4)
    assert "\n" not in str(e.value) and "no image files" in str(e.value)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (broken / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError) as e:
        list(calib_data.iter_calibration_images(broken, manifest, 4))
    assert "\n" not in str(e.value) and "no readable image" in str(e.value)

    rc_err = _fp16_cli([str(tiny_onnx), "-o", str(tmp_path / "x.onnx"), "--calib-data", str(broken),
                        "--threads", "1"])
    assert rc_err[0] == 2 and len(rc_err[1].strip().splitlines()) == 1


def _fp16_cli(argv):
    import contextlib
    import io

    from quantize.__main__ import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["fp16", *argv])
    return rc, err.getvalue()


def test_calibration_subset_is_deterministic_and_skips_masks(tmp_path, tiny_onnx, tiny_data):
    manifest = read_manifest(tiny_onnx)
    folder = write_pngs(tmp_path / "many", 10)
    (folder / "masks").mkdir()
    cv2.imwrite(str(folder / "masks" / "m.png"), np.zeros((8, 8), np.uint8))
    src = calib_data.resolve_calibration_source(folder, manifest)
    assert len(src.paths) == 10 and all("masks" not in p.parts for p in src.paths)
    a = [x.sum() for x in calib_data.iter_calibration_images(folder, manifest, 4, seed=1)]
    b = [x.sum() for x in calib_data.iter_calibration_images(folder, manifest, 4, seed=1)]
    c = [x.sum() for x in calib_data.iter_calibration_images(folder, manifest, 4, seed=2)]
    assert a == b and a != c and len(a) == 4
    assert calib_data.count(folder, manifest, 4) == 4 and calib_data.count(folder, manifest, 40, seed=3) == 10
    x = next(calib_data.iter_calibration_images(folder, manifest, 1))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32

    # a folder-format dataset root: its images/train, never its masks
    ds = calib_data.resolve_calibration_source(tiny_data, manifest)
    assert len(ds.paths) == 6 and all(p.parent.name == "train" and "images" in p.parts for p in ds.paths)
    # no source: the dataset of the manifest's config (train split)
    default = calib_data.resolve_calibration_source(None, manifest)
    assert default.description.startswith("train split") and len(default.paths) == 6
    with pytest.raises(UserError, match="not a named config"):
        calib_data.resolve_calibration_source(tmp_path / "missing", manifest)


def test_python_m_quantize_lists_verbs_and_suggests_the_close_one(capsys):
    from quantize.__main__ import main

    assert main([]) == 2 and "fp16" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["fp17"]) == 2 and "unknown verb 'fp17'; did you mean 'fp16'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fp16", "--help"])


# ---------------------------------------------------------------- the command: --json, the gate, python -m forms


def cli(*argv) -> tuple[int, str, str]:
    """``cpnet ARGV`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from cpnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def test_fp16_json_writes_the_manifest(tiny_onnx, calib_dir, tmp_path):
    out, js = tmp_path / "m.fp16.onnx", tmp_path / "fp16.json"
    rc, stdout, _ = cli("fp16", tiny_onnx, "-o", out, "--calib-data", calib_dir, "--num-images", 2, "--threads", 1,
                        "--max-rounds", 0, "--json", js)
    assert rc == 0 and stdout.strip() == str(out)
    report = json.loads(js.read_text())
    assert report == read_manifest(out) and report["precision"] == "fp16"
    drift = report["fp16"]["drift"]
    assert drift["target_met"] is True and drift["max_disagreement"] == 0.1 and drift["max_logit_error"] == 2.0


def _tied_logits_model(tmp_path: Path) -> Path:
    """logits = image * (1, 1.0001, 0.5) per channel: on a grey image class 1 wins by 1e-4 in FP32, but FP16
    rounds 1.0001 to 1 and ties it with class 0 (argmax 0): every pixel disagrees, the logits barely move."""
    from onnx import helper

    nodes = [helper.make_node("Mul", ["image", "k"], ["logits"], name="weigh")]
    return _small_model(tmp_path, "tied", nodes, {"k": np.array([1.0, 1.0001, 0.5]).reshape(1, 3, 1, 1)})


def test_fp16_max_disagreement_gate_fails_with_exit_1_and_one_line(tmp_path):
    src = _tied_logits_model(tmp_path)
    calib = _white_images(tmp_path)
    js = tmp_path / "gate.json"
    # no rounds to move the node to FP32: the disagreement stays at 100% of pixels
    rc, stdout, err = cli("fp16", src, "--calib-data", calib, "--num-images", 1, "--threads", 1, "--max-rounds", 0,
                          "--max-logit-error", 100, "--json", js, "-q")
    assert rc == 1 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: FP16 drift limits missed")
    assert "argmax disagreement 100.000% (--max-disagreement 0.1%)" in err
    m = read_manifest(tmp_path / "tied.fp16.onnx")  # the closest round is written, and says it missed
    assert json.loads(js.read_text()) == m and m["fp16"]["drift"]["target_met"] is False
    # with a round to spend, the greedy search keeps the Mul in FP32 and the gate holds
    rc, _, err = cli("fp16", src, "--calib-data", calib, "--num-images", 1, "--threads", 1, "--max-rounds", 1,
                     "--max-logit-error", 100, "-q")
    assert rc == 0 and err == ""
    assert read_manifest(tmp_path / "tied.fp16.onnx")["fp16"]["fp32_nodes"] == ["weigh"]


@pytest.mark.parametrize("form", [["-m", "quantize.fp16"], ["-m", "quantize", "fp16"]])
def test_python_m_forms_share_the_cpnet_parser(form):
    r = subprocess.run([sys.executable, *form, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: python {' '.join(form)} ")
    assert "--max-logit-error PERCENT" in r.stdout and "cpnet fp16 " in r.stdout  # flags and examples of the verb
    r = subprocess.run([sys.executable, *form, "model.onnx", "--keep-fp32", "x"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--keep-float" in r.stderr
