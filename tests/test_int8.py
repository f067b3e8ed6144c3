"""INT8 quantization: the TensorRT and CPU flavours' Q/DQ rules, calibration reuse, keep-float, sensitivity, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cpnet.runtime import read_manifest, sha256_file
from quantize import calibrate, int8, sensitivity

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


def _inits(model):
    from onnx import numpy_helper

    return {i.name: (i, numpy_helper.to_array(i)) for i in model.graph.initializer}


def test_tensorrt_flavour_symmetric_int8_per_channel(quantized):
    import onnx

    model = onnx.load(str(quantized["tensorrt"]))
    inits = _inits(model)
    assert int8.check_qdq(model, "tensorrt") == []
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 20
    for n in qdq:
        scale = inits[n.input[1]][1]
        zp_proto, zp = inits[n.input[2]]
        assert zp_proto.data_type == onnx.TensorProto.INT8, n.name
        assert np.all(zp == 0), n.name
        assert inits[n.input[1]][0].data_type == onnx.TensorProto.FLOAT
        assert np.all(scale > 0) and np.all(np.isfinite(scale)), n.name
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]][0].data_type == onnx.TensorProto.INT8  # no INT32 bias DQ for TensorRT
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producers.get(conv.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", f"{conv.name}: weight not quantized"
        w = inits[dq.input[0]][1]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        assert inits[dq.input[1]][1].shape == (w.shape[0],), f"{conv.name}: scales are not one per output channel"
        if len(conv.input) > 2 and conv.input[2]:
            assert conv.input[2] in inits and inits[conv.input[2]][0].data_type == onnx.TensorProto.FLOAT
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13


def test_tensorrt_flavour_passes_the_tensorrt_preflight_check_and_cpu_flavour_does_not(quantized):
    check = pytest.importorskip("engines.check")
    for target in ("trt10", "trt11"):
        res = check.check_file(quantized["tensorrt"], target=target)
        assert res.ok, res.lines()
    assert not check.check_file(quantized["cpu"], target="trt10").ok  # U8 activations, INT32 biases


def test_cpu_flavour_unsigned_activations_signed_weights(quantized):
    import onnx

    model = onnx.load(str(quantized["cpu"]))
    inits = _inits(model)
    assert int8.check_qdq(model, "cpu") == []
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for n in qs:
        assert inits[n.input[2]][0].data_type == onnx.TensorProto.UINT8, n.name
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                  and inits[n.input[0]][0].data_type == onnx.TensorProto.INT8]
    assert weight_dqs


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
    assert read_manifest(quantized["tensorrt"])["calibration"]["method"] == "entropy"
    c = read_manifest(quantized["cpu"])["calibration"]
    assert c["method"] == "percentile" and c["percentile"] == pytest.approx(99.999) and c["ranges_reused"] is True


def test_int8_files_run_in_ort_and_agree_with_fp32(quantized, calib_dir):
    from cpnet.runtime.ort import OnnxModel
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


def test_second_run_reuses_saved_ranges_without_a_pass(tiny_onnx, calib_dir, tmp_path, monkeypatch, capsys):
    model = copy_model(tiny_onnx, tmp_path)
    assert run_int8(model, "--calib-data", calib_dir) == 0
    out = capsys.readouterr().out
    assert "running" in out and (tmp_path / "model.calib.npz").is_file()

    def no_second_pass(*a, **k):
        raise AssertionError("calibration images were run through the model again")

    monkeypatch.setattr(calibrate, "collect", no_second_pass)
    assert run_int8(model, "--calib-data", calib_dir, "--method", "minmax", "-o", tmp_path / "b.onnx") == 0
    assert run_int8(model, "--calib-data", calib_dir, "--flavour", "cpu", "--method", "percentile") == 0
    out = capsys.readouterr().out
    assert out.count("reused saved ranges") == 2
    assert read_manifest(tmp_path / "b.onnx")["calibration"]["method"] == "minmax"
    # the ranges file is plain arrays: it loads without pickle
    with np.load(tmp_path / "model.calib.npz", allow_pickle=False) as z:
        assert z["hist"].shape[1] == calibrate.NUM_BINS
    # another image set does not reuse them
    monkeypatch.undo()
    assert run_int8(model, "--calib-data", calib_dir, "--num-images", "4", "-o", tmp_path / "c.onnx") == 0
    assert "collecting new ranges" in capsys.readouterr().out
    assert read_manifest(tmp_path / "c.onnx")["calibration"]["images"] == 4


def test_explicit_ranges_file(tiny_onnx, calib_dir, tmp_path, monkeypatch, capsys):
    model = copy_model(tiny_onnx, tmp_path)
    ranges = tmp_path / "my.npz"
    assert run_int8(model, "--calib-data", calib_dir, "--ranges", ranges) == 0
    assert ranges.is_file() and not (tmp_path / "model.calib.npz").exists()
    monkeypatch.setattr(calibrate, "collect", lambda *a, **k: pytest.fail("second pass"))
    assert run_int8(model, "--calib-data", calib_dir, "--ranges", ranges, "--method", "minmax") == 0
    assert "reused saved ranges from" in capsys.readouterr().out


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
    assert int8.check_qdq(q, "tensorrt") == []
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


@pytest.mark.parametrize("flavour", ["cpu", "tensorrt"])
def test_node_kept_in_float_reads_float_values(tiny_onnx, calib_dir, tmp_path, flavour):
    """Also where ORT folded the ReLU before it into an asymmetric Q (cpu flavour): the ReLU is re-applied in float."""
    import onnx

    model = copy_model(tiny_onnx, tmp_path)
    node = "/head/classifier/Conv"
    with int8.prepare(model, str(calib_dir), N_CALIB, progress=False, log=lambda *a: None, threads=1) as prep:
        ref = int8.reference(prep, 4)
        full, kept = tmp_path / "full.onnx", tmp_path / "kept.onnx"
        int8.build(prep, full, "minmax", flavour)
        int8.build(prep, kept, "minmax", flavour, exclude=[node])
        q = onnx.load(str(kept))
        assert int8.check_qdq(q, flavour) == []
        onnx.checker.check_model(q)
        producers = {o: n for n in q.graph.node for o in n.output}
        conv = next(n for n in q.graph.node if n.name == node)
        assert producers[conv.input[0]].op_type == "Relu"
        mad_full, _ = ref.compare(full)
        mad_kept, _ = ref.compare(kept)
        assert mad_kept <= mad_full * 1.05, (mad_kept, mad_full)


def test_keep_float_unknown_name_is_a_one_line_error(tiny_onnx, calib_dir, tmp_path, capsys):
    model = copy_model(tiny_onnx, tmp_path)
    assert run_int8(model, "--calib-data", calib_dir, "--keep-float", "/no/such/Conv") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "/no/such/Conv" in err


def test_keep_float_auto_excludes_worst_nodes_and_records_them(tiny_onnx, calib_dir, tmp_path, capsys):
    model = copy_model(tiny_onnx, tmp_path)
    out = tmp_path / "auto.onnx"
    # an unreachable target forces the greedy loop to its bound
    assert run_int8(model, "--calib-data", calib_dir, "--keep-float", "auto", "--max-drift", "-1",
                    "--max-keep-float", "2", "--eval-images", "2", "-o", out) == 0
    c = read_manifest(out)["calibration"]
    rec = c["keep_float_auto"]
    assert rec["target"] == -1 and rec["met"] is False
    tried = [s for s in rec["steps"] if s["tried"]]
    assert 1 <= len(tried) <= 4  # at most 2 x --max-keep-float nodes tried
    kept = [s["tried"] for s in tried if s["kept"]]
    assert len(kept) <= 2 and all(k in c["excluded_nodes"] for k in kept)
    assert "still above" in capsys.readouterr().out


def test_no_readable_calibration_image_is_a_one_line_error(tiny_onnx, tmp_path, capsys):
    model = copy_model(tiny_onnx, tmp_path / "m")
    bad = tmp_path / "bad_images"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"this is not a png")
    assert run_int8(model, "--calib-data", bad) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err
    assert not (tmp_path / "m" / "model.int8.onnx").exists()


def test_corrupt_onnx_is_a_one_line_error(tiny_onnx, calib_dir, tmp_path, capsys):
    model = copy_model(tiny_onnx, tmp_path)
    model.write_bytes(b"\x08\x07garbage" * 10)
    assert run_int8(model, "--calib-data", calib_dir) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.onnx" in err and "not a valid ONNX model" in err
    assert run_int8(tmp_path / "missing.onnx", "--calib-data", calib_dir) == 2
    assert "not found" in capsys.readouterr().err


def test_quantizing_a_quantized_model_is_refused(quantized, calib_dir, capsys):
    assert run_int8(quantized["tensorrt"], "--calib-data", calib_dir, "-o", quantized["model"].with_name("x.onnx")) == 2
    assert "int8" in capsys.readouterr().err


def test_sensitivity_prints_a_ranking(quantized, calib_dir, tmp_path, capsys):
    js = tmp_path / "sens.json"
    rc = sensitivity.main([*COMMON, str(quantized["model"]), "--calib-data", str(calib_dir), "--eval-images", "2",
                           "--top", "5", "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "reused saved ranges" in out  # the cache made by the int8 runs
    assert "rank" in out and "disagree %" in out and "more nodes" in out
    rows = json.loads(js.read_text())["ranking"]
    names = [r["node"] for r in rows]
    assert "/head/MatMul" in names and "/head/prior_conv/Conv" in names
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    keys = [(r["disagree_pct"], r["mean_abs_diff"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert rows[0]["node"] in out


# --- calibration statistics -------------------------------------------------------------------------


def test_histogram_doubling_is_exact_and_methods_order():
    acc = calibrate._Accumulator()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(5000).astype(np.float32) * s for s in (1, 3, 10)]
    for x in xs:
        acc.update(x, lambda n: None)
    allx = np.concatenate(xs)
    assert acc.hist.sum() == allx.size
    assert acc.lo == allx.min() and acc.hi == allx.max() and acc.edge >= np.abs(allx).max()
    # the doubled histogram equals one built at the final range in one go
    half = calibrate.NUM_BINS // 2
    b = np.clip(np.floor(allx.astype(np.float64) * (half / acc.edge)).astype(np.int64) + half, 0,
                calibrate.NUM_BINS - 1)
    assert np.array_equal(acc.hist, np.bincount(b, minlength=calibrate.NUM_BINS))
    st = calibrate.RangeStats(["t"], np.array([acc.lo], np.float32), np.array([acc.hi], np.float32),
                              np.array([acc.edge]), acc.hist[None])
    amax = float(np.abs(allx).max())
    mm = st.ranges("minmax", True)["t"]
    pc = st.ranges("percentile", True, 99.0)["t"]
    en = st.ranges("entropy", True)["t"]
    assert mm == pytest.approx((-amax, amax))
    assert 0 < pc[1] < amax and pc[1] == pytest.approx(np.percentile(np.abs(allx), 99.0), rel=0.05)
    assert 0 < en[1] <= amax
    lo, hi = st.ranges("minmax", False)["t"]
    assert (lo, hi) == pytest.approx((float(acc.lo), float(acc.hi)))


def test_entropy_range_keeps_an_offset_distribution():
    """A sigmoid-like tensor far from zero must not be clipped to its lower edge (the KL method's blind spot)."""
    acc = calibrate._Accumulator()
    x = np.random.default_rng(1).uniform(0.35, 0.65, 20000).astype(np.float32)
    acc.update(x, lambda n: None)
    st = calibrate.RangeStats(["s"], np.array([acc.lo], np.float32), np.array([acc.hi], np.float32),
                              np.array([acc.edge]), acc.hist[None])
    for sym in (True, False):
        lo, hi = st.ranges("entropy", sym)["s"]
        assert hi >= 0.64


def test_corrupt_ranges_file_is_a_user_error(tmp_path):
    from cpnet.runtime import UserError

    bad = tmp_path / "r.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a cpnet calibration ranges file"):
        calibrate.RangeStats.load(bad)
