"""The TensorRT layer: pure-Python parts on any machine; engine builds and runs where TensorRT and a GPU are.

On a GPU machine with TensorRT and PyCUDA installed:  pytest -m "gpu or tensorrt"
Elsewhere the marked tests are skipped with the reason (what is missing).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpnet.runtime import CpnetError, UserError, read_manifest, sha256_file, write_manifest
from engines.build_engine import default_output
from engines.layers import placement
from engines.trt.config import make_progress_monitor
from engines.trt.hardware import gpu_info, is_jetson
from engines.trt.imports import import_pycuda, import_tensorrt
from engines.trt.manifest import check_engine_manifest
from engines.trt.network import format_parser_errors
from engines.trt.options import BuildOptions, is_cpu_flavour, validate_build_options
from engines.trt.versions import major_of, parse_version, same_version, version_compatible_runs

ROOT = Path(__file__).resolve().parent.parent

# ================================================================================ pure Python (CPU)


def _opts(**kw):
    return BuildOptions(onnx=kw.pop("onnx", "model.onnx"), **kw)


FP32 = {"precision": "fp32"}
FP16 = {"precision": "fp16"}
INT8_TRT = {"precision": "int8", "flavour": "tensorrt", "calibration": {"flavour": "tensorrt"}}
INT8_CPU = {"precision": "int8", "flavour": "cpu", "calibration": {"flavour": "cpu"}}


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1.2"])
def test_fp16_flag_refused_on_trt11(version):
    with pytest.raises(UserError) as e:
        validate_build_options(_opts(fp16_flag=True), version, FP32)
    msg = str(e.value)
    assert "\n" not in msg and "--fp16-flag needs TensorRT 10" in msg and "model.fp16.onnx" in msg


def test_fp16_flag_allowed_on_trt10_over_fp32_only():
    assert validate_build_options(_opts(fp16_flag=True), "10.3.0", FP32) == "trt10"
    with pytest.raises(UserError, match="already fp16"):
        validate_build_options(_opts(fp16_flag=True, onnx="model.fp16.onnx"), "10.3.0", FP16)


@pytest.mark.parametrize("version", ["10.3.0", "11.1.0"])
def test_cpu_flavour_refused_with_the_command_to_run(version):
    with pytest.raises(UserError) as e:
        validate_build_options(_opts(onnx="model.int8-cpu.onnx"), version, INT8_CPU)
    assert "--flavour tensorrt" in str(e.value) and "model.int8-cpu.onnx" in str(e.value)
    assert is_cpu_flavour({"precision": "int8", "flavour": "cpu"})  # top-level key alone also counts
    assert not is_cpu_flavour(INT8_TRT)


@pytest.mark.parametrize("version,dla,expected", [
    ("10.3.0.30", None, "trt10"), ("11.2.0", None, "trt11"), ("10.3.0", 0, "dla"), ("11.4.1", 1, "dla")])
def test_targets(version, dla, expected):
    assert validate_build_options(_opts(dla_core=dla), version, INT8_TRT) == expected


@pytest.mark.parametrize("kw,version,match", [
    ({"dla_core": 0}, "11.2.0", "has no DLA"), ({"dla_core": -1}, "10.3.0", "dla-core"),
    ({"opt_level": 7}, "10.3.0", "opt-level"), ({"workspace_mib": 0}, "10.3.0", "workspace"),
    ({}, "8.6.1", "too old"), ({"batch": 0}, "10.3.0", "batch")])
def test_invalid_options(kw, version, match):
    with pytest.raises(UserError, match=match):
        validate_build_options(_opts(**kw), version, FP32)


def test_default_output_names():
    assert default_output(Path("a/model.onnx")) == Path("a/model.engine")
    assert default_output(Path("a/model.fp16.onnx")) == Path("a/model.fp16.engine")
    assert default_output(Path("model.int8.onnx"), dla_core=0) == Path("model.int8.dla0.engine")
    assert default_output(Path("model.onnx"), fp16_flag=True) == Path("model.fp16flag.engine")


def test_versions():
    assert parse_version("10.3.0.30") == (10, 3, 0, 30)
    assert parse_version("11.0.0b1") == (11, 0, 0)
    assert same_version("10.3.0", "10.3.0.30")
    assert not same_version("10.3.0", "10.4.0")


# --- manifest checks --------------------------------------------------------------------------

ORIN = {"name": "Orin", "compute_capability": "8.7", "source": "pycuda"}
RTX = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "source": "pycuda"}


def _engine_manifest(version="10.3.0", gpu=ORIN, vc=False):
    return {"schema": 1, "kind": "engine", "tensorrt": {"version": version, "version_compatible": vc}, "gpu": gpu,
            "parent": {"path": "runs/q/export/model.fp16.onnx", "sha256": "0" * 64}}


def test_manifest_match_passes():
    assert check_engine_manifest(_engine_manifest(), "10.3.0", ORIN, "m.engine") == []


def test_manifest_other_trt_version_refused_with_rebuild_command():
    with pytest.raises(UserError) as e:
        check_engine_manifest(_engine_manifest("10.3.0"), "10.7.0", ORIN, "m.engine")
    msg = str(e.value)
    assert "\n" not in msg and "TensorRT 10.3.0" in msg and "TensorRT 10.7.0" in msg
    assert "cpnet build runs/q/export/model.fp16.onnx" in msg


def test_manifest_version_compatible_engines():
    """Defect 2: NVIDIA documents that TensorRT 10 version-compatible engines run on TensorRT 11."""
    m = _engine_manifest("10.3.0", vc=True)
    for running in ("10.3.0", "10.7.0", "11.0.0", "11.4.1"):
        assert check_engine_manifest(m, running, ORIN, "m.engine") == [], running
    for running in ("10.1.0", "12.0.0"):
        with pytest.raises(UserError, match="version-compatible engine runs on the same or a newer release"):
            check_engine_manifest(m, running, ORIN, "m.engine")
    m11 = _engine_manifest("11.1.0", vc=True)
    assert check_engine_manifest(m11, "11.5.0", ORIN, "m.engine") == []
    with pytest.raises(UserError):
        check_engine_manifest(m11, "10.15.0", ORIN, "m.engine")  # never backwards
    with pytest.raises(UserError):  # without the flag even 10.3 -> 11.0 is refused
        check_engine_manifest(_engine_manifest("10.3.0"), "11.0.0", ORIN, "m.engine")


@pytest.mark.parametrize("built,running,ok", [
    ("10.3.0", "10.3.0", True), ("10.3.0", "10.15.1", True), ("10.3.0", "11.0.0", True), ("10.15.0", "11.5.0", True),
    ("10.7.0", "10.3.0", False), ("11.0.0", "10.15.0", False), ("11.1.0", "11.0.0", False), ("10.3.0", "12.0.0", False),
    ("8.6.1", "10.0.0", True), ("8.5.3", "10.0.0", False), ("8.6.1", "11.0.0", False)])
def test_version_compatible_policy(built, running, ok):
    assert version_compatible_runs(built, running) is ok


def test_manifest_gpu_mismatch():
    with pytest.raises(UserError) as e:
        check_engine_manifest(_engine_manifest(gpu=ORIN), "10.3.0", RTX, "m.engine")
    assert "sm 8.7" in str(e.value) and "sm 8.9" in str(e.value) and "cpnet build" in str(e.value)
    other_name = dict(ORIN, name="Orin NX")
    w = check_engine_manifest(_engine_manifest(gpu=ORIN), "10.3.0", other_name, "m.engine")
    assert len(w) == 1 and "same compute capability" in w[0]
    w = check_engine_manifest(_engine_manifest(), "10.3.0", None, "m.engine")
    assert any("could not identify" in x for x in w)


def test_missing_manifest_is_refused_unless_trusted():
    """An engine is native code: without a manifest (so without a sha256) it is opened only when trusted."""
    with pytest.raises(UserError) as e:
        check_engine_manifest(None, "10.3.0", ORIN, "m.engine")
    assert "\n" not in str(e.value) and "no manifest" in str(e.value) and "--trust-engine" in str(e.value)
    w = check_engine_manifest(None, "10.3.0", ORIN, "m.engine", trust=True)
    assert len(w) == 1 and "no manifest" in w[0] and "trusted" in w[0]


# --- engine inspector JSON ----------------------------------------------------------------------

# TensorRT 10.x, ProfilingVerbosity.DETAILED (layer fields as printed by get_engine_information(JSON))
TRT10_JSON = json.dumps({"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
     "Inputs": [{"Name": "image", "Location": "Device", "Dimensions": [1, 3, 32, 32],
                 "Format/Datatype": "Row major linear FP32 format"}],
     "Outputs": [{"Name": "x", "Location": "Device", "Dimensions": [1, 3, 32, 32],
                  "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "conv1 + relu1", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
     "Outputs": [{"Name": "y", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "q_input", "LayerType": "Scale",
     "Inputs": [{"Name": "y", "Format/Datatype": "Half"}], "Outputs": [{"Name": "yq", "Format/Datatype": "Int8"}]},
    {"Name": "conv2", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "yq", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
     "Outputs": [{"Name": "z", "Format/Datatype": "Row major linear FP32 format"}]},
    {"Name": "shape_math", "LayerType": "ElementWise",
     "Inputs": [{"Name": "s", "Format/Datatype": "Int32"}], "Outputs": [{"Name": "t", "Format/Datatype": "Int32"}]},
], "Bindings": ["image", "logits"]})

# TensorRT 11.x: "Format/Datatype" split into "Format" and "DataType"; "Bindings" -> "I/O Tensors"
TRT11_JSON = json.dumps({"Layers": [
    {"Name": "conv1", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Channel major FP16 format (kHWC8)"}],
     "Outputs": [{"Name": "y", "DataType": "Half", "Format": "Channel major FP16 format (kHWC8)"}]},
    {"Name": "head", "LayerType": "CaskGemmMatrixMultiply",
     "Inputs": [{"Name": "y", "DataType": "Float", "Format": "Row major linear FP32 format (kLINEAR)"}],
     "Outputs": [{"Name": "logits", "DataType": "Float", "Format": "Row major linear FP32 format (kLINEAR)"}]},
], "I/O Tensors": [{"Name": "x", "IOMode": "Input", "DataType": "Float"}]})


def test_layer_precision_summary_trt10():
    s = placement.summarize_layer_precisions(TRT10_JSON)
    assert s["layers"] == 5
    # a layer counts at the lowest precision it reads: the reformat reads FP32, the Q layer FP16
    assert s["by_precision"] == {"fp16": 2, "fp32": 1, "int32": 1, "int8": 1}
    assert s["by_type"]["CaskConvolution"] == 2
    assert s["convolutions"] == {"layers": 2, "by_precision": {"fp16": 1, "int8": 1}}


def test_layer_precision_summary_trt11_and_names_only():
    assert placement.summarize_layer_precisions(TRT11_JSON)["by_precision"] == {"fp16": 1, "fp32": 1}
    names_only = json.dumps({"Layers": ["conv1 + relu1", "head"], "Bindings": ["x", "y"]})
    assert placement.summarize_layer_precisions(names_only)["by_precision"] == {"unknown": 2}
    with pytest.raises(ValueError):
        placement.summarize_layer_precisions("not json")


# --- parser errors and progress lines (fake TensorRT objects) ------------------------------------


class _Err:
    def __init__(self, node, desc, name=None, op=None):
        self._node, self._desc, self._name, self._op = node, desc, name, op
        if name is not None:
            self.node_name = lambda: self._name
            self.node_operator = lambda: self._op

    def node(self):
        return self._node

    def desc(self):
        return self._desc


class _Parser:
    def __init__(self, errors):
        self._errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self._errors[i]


def test_parser_errors_one_per_line_with_node_names():
    p = _Parser([_Err(3, "Unsupported operator FancyConv", name="my_custom", op="FancyConv"),
                 _Err(1, "zero point must be 0\n(asymmetric)"), _Err(-1, "Graph has no outputs")])
    lines = format_parser_errors(p, ["a", "q_input", "b", "c"])
    assert lines == ["parser error: node 'my_custom' (FancyConv): Unsupported operator FancyConv",
                     "parser error: node 'q_input': zero point must be 0 (asymmetric)",
                     "parser error: Graph has no outputs"]


def test_progress_monitor_prints_a_line_per_phase():
    class FakeTrt:
        class IProgressMonitor:
            def __init__(self):
                pass

    lines = []
    mon = make_progress_monitor(FakeTrt, lines.append)
    mon.phase_start("Building engine", None, 3)
    mon.phase_start("Tactic search", "Building engine", 10)
    mon.phase_start("deep", "Tactic search", 2)  # depth 2: not printed
    assert mon.step_complete("Tactic search", 1) is True
    mon.phase_finish("deep")
    mon.phase_finish("Tactic search")
    mon.phase_finish("Building engine")
    assert lines[0] == "Building engine (3 steps)" and lines[1] == "  Tactic search (10 steps)"
    assert lines[2].startswith("  Tactic search done in") and lines[3].startswith("Building engine done")
    assert len(lines) == 4
    assert make_progress_monitor(object(), lines.append) is None


# ================================================================================ TensorRT + GPU


def _trt_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install -e .[tensorrt-cu12] or .[tensorrt-cu13] from NVIDIA's package index, or JetPack)"
    if importlib.util.find_spec("pycuda") is None:
        return "PyCUDA is not installed (pip install pycuda)"
    try:
        import_pycuda()
    except CpnetError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def trt_env():
    reason = _trt_skip_reason()
    if reason:
        pytest.skip(reason)
    return import_tensorrt()


def _run(args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def onnx_files(trt_env, tiny_checkpoint, tiny_data, tmp_path_factory):
    """model.onnx / model.fp16.onnx / model.int8.onnx (tensorrt flavour) made with the project's CLIs."""
    out = tmp_path_factory.mktemp("trt")
    model = out / "model.onnx"
    calib = str(Path(tiny_data) / "images" / "train")
    for args in (["-m", "cpnet.export", str(tiny_checkpoint), "-o", str(model), "--parity", "random"],
                 ["-m", "quantize", "fp16", str(model), "--calib-data", calib, "--num-images", "4"],
                 ["-m", "quantize", "int8", str(model), "--calib-data", calib, "--num-images", "4",
                  "--flavour", "tensorrt", "--no-progress"]):
        r = _run(args)
        assert r.returncode == 0, r.stdout + r.stderr
    return {"fp32": model, "fp16": out / "model.fp16.onnx", "int8": out / "model.int8.onnx", "dir": out,
            "images": sorted((Path(tiny_data) / "images" / "val").iterdir())}


@pytest.fixture(scope="module")
def engines_built(onnx_files):
    cache = onnx_files["dir"] / "tensorrt.timing.cache"
    built, logs = {}, {}
    for key in ("fp32", "fp16", "int8"):
        r = _run(["engines/build_engine.py", str(onnx_files[key]), "--timing-cache", str(cache)])
        assert r.returncode == 0, r.stdout + r.stderr
        built[key] = default_output(onnx_files[key])
        assert r.stdout.strip() == str(built[key])  # the engine path on stdout, the log on stderr
        logs[key] = r.stderr
    return {"engines": built, "logs": logs, "cache": cache}


def _inputs(onnx_files, manifest):
    import cv2

    from cpnet.runtime.preprocess import preprocess

    xs = [preprocess(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), manifest) for p in onnx_files["images"]]
    rng = np.random.default_rng(0)
    xs += [rng.standard_normal(xs[0].shape).astype(np.float32) for _ in range(2)]
    return xs


def _compare(engine_path, onnx_path, onnx_files):
    import engines

    with engines.open(engine_path) as trt_m, engines.open(onnx_path) as ort_m:
        diffs, agree, total = [], 0, 0
        for x in _inputs(onnx_files, ort_m.manifest):
            a, b = trt_m.infer(x), ort_m.infer(x)
            diffs.append(float(np.abs(a - b).max()))
            agree += int((a.argmax(1) == b.argmax(1)).sum())
            total += a.shape[0] * a.shape[2] * a.shape[3]
        return max(diffs), agree / total


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp32_engine_matches_onnxruntime(engines_built, onnx_files):
    # TensorRT picks its own kernels (and TF32 is off in a strongly typed FP32 network, but accumulation order
    # differs), so agreement is within a tolerance, not bit-exact argmax
    diff, agreement = _compare(engines_built["engines"]["fp32"], onnx_files["fp32"], onnx_files)
    assert diff <= 1e-2, f"max |logit diff| {diff}"
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("key", ["fp16", "int8"])
def test_reduced_precision_engines_agree_with_onnxruntime(engines_built, onnx_files, key):
    _, agreement = _compare(engines_built["engines"][key], onnx_files[key], onnx_files)
    assert agreement >= 0.99, f"{key}: argmax agreement {agreement:.4f}"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("key", ["fp32", "fp16", "int8"])
def test_engine_manifest(engines_built, onnx_files, trt_env, key):
    eng = engines_built["engines"][key]
    m = read_manifest(eng)
    onnx_m = read_manifest(onnx_files[key])
    assert m["kind"] == "engine" and m["precision"] == key and m["precision_mode"] == "strongly-typed"
    assert m["tensorrt"]["version"] == trt_env.__version__ and m["tensorrt"]["strongly_typed"]
    assert m["gpu"]["name"] and m["gpu"]["compute_capability"] and m["gpu"]["source"]
    assert m["parent"]["sha256"] == onnx_m["sha256"]
    assert m["sha256"] == sha256_file(eng)  # checked whenever the engine is opened
    assert m["tensorrt"]["hardware_compatibility"] == "none" and m["build_options"]["dla_core"] is None
    for k in ("classes", "palette", "input_size", "mean", "std"):
        assert m[k] == onnx_m[k]
    by = m["layer_precisions"]["by_precision"]
    if key == "int8":  # most convolutions read INT8: the Q/DQ placement fused as intended
        convs = m["layer_precisions"]["convolutions"]
        assert convs["by_precision"].get("int8", 0) > convs["layers"] / 2, convs
    if key == "fp16":
        assert by.get("fp16", 0) > 0, by


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_flag_path(trt_env, onnx_files):
    out = onnx_files["dir"] / "flag.engine"
    r = _run(["-m", "engines.build_engine", str(onnx_files["fp32"]), "--fp16-flag", "-o", str(out),
              "--no-timing-cache"])
    if major_of(trt_env.__version__) >= 11:
        assert r.returncode == 2 and "--fp16-flag needs TensorRT 10" in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
        return
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_manifest(out)
    assert m["precision_mode"] == "fp16-flag" and not m["tensorrt"]["strongly_typed"]
    _, agreement = _compare(out, onnx_files["fp32"], onnx_files)
    assert agreement >= 0.99


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_from_other_tensorrt_is_refused(engines_built, tmp_path):
    import engines

    src = engines_built["engines"]["fp32"]
    eng = tmp_path / "old.engine"
    shutil.copy(src, eng)
    m = read_manifest(src)
    m.pop("schema")
    m["tensorrt"]["version"] = "9.9.9"
    write_manifest(eng, m)
    with pytest.raises(UserError) as e:
        engines.open(eng)
    assert "\n" not in str(e.value) and "TensorRT 9.9.9" in str(e.value)
    assert "cpnet build" in str(e.value)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_without_manifest_needs_trust_and_damaged_engine_is_one_line(engines_built, tmp_path):
    import engines

    bare = tmp_path / "bare.engine"
    shutil.copy(engines_built["engines"]["fp16"], bare)
    with pytest.raises(UserError, match="no manifest"):
        engines.open(bare)
    with engines.open(bare, trust_engine=True) as m:
        assert m.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 8, 32, 32)
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"\x00" * 1024)
    man = read_manifest(engines_built["engines"]["fp16"])
    man.pop("schema")
    write_manifest(bad, man)
    with pytest.raises(UserError, match="does not match its manifest"):  # sha256 checked before TensorRT sees it
        engines.open(bad)
    man["sha256"] = sha256_file(bad)
    write_manifest(bad, man)
    with pytest.raises(UserError, match="could not deserialize"):
        engines.open(bad)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_timing_cache_written_and_reused(engines_built, onnx_files, tmp_path):
    cache = engines_built["cache"]
    assert cache.is_file() and cache.stat().st_size > 0
    assert "timing cache" in engines_built["logs"]["fp32"]
    # later builds in the fixture loaded it; one more build shows it again
    r = _run(["engines/build_engine.py", str(onnx_files["fp32"]), "-o", str(tmp_path / "again.engine"),
              "--timing-cache", str(cache)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "loaded" in r.stderr


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_benchmark_engine_row(engines_built, tmp_path):
    out = tmp_path / "b.json"
    r = _run(["-m", "engines.benchmark", str(engines_built["engines"]["fp16"]), "--iters", "5", "--json", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["gpu_p50_ms"] is not None and row["device_memory_mib"] > 0


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_benchmark_engine_row_with_cuda_graph(engines_built, tmp_path):
    if importlib.util.find_spec("cuda") is None:
        pytest.skip("cuda-python is not installed (pip install cuda-python); --cuda-graph needs it")
    out = tmp_path / "g.json"
    r = _run(["-m", "engines.benchmark", str(engines_built["engines"]["fp16"]), "--iters", "5", "--cuda-graph",
              "--json", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["cuda_graph"] is True and row["gpu_p50_ms"] is not None


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_cuda_graph_replay_matches_plain_execution(engines_built, onnx_files):
    if importlib.util.find_spec("cuda") is None:
        pytest.skip("cuda-python is not installed (pip install cuda-python); cuda_graph=True needs it")
    import engines

    eng = engines_built["engines"]["fp32"]
    with engines.open(eng) as plain, engines.open(eng, cuda_graph=True) as graphed:
        for x in _inputs(onnx_files, plain.manifest):
            a = plain.infer(x)
            for _ in range(3):  # the first call captures, the next ones replay
                b = graphed.infer(x)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        assert graphed.cuda_graph_active and "CUDA graph" in graphed.describe()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_version_compatible_engine_builds_and_loads(trt_env, onnx_files, tmp_path):
    """Defect 1 on a real TensorRT: a --version-compatible build deserializes (host code allowed) and runs."""
    import engines

    out = tmp_path / "vc.engine"
    r = _run(["engines/build_engine.py", str(onnx_files["fp16"]), "-o", str(out), "--version-compatible",
              "--no-timing-cache"])
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_manifest(out)
    assert m["tensorrt"]["version_compatible"] and m["sha256"] == sha256_file(out)
    with engines.open(out) as e:
        assert e.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 8, 32, 32)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_hardware_compatible_engine_builds_on_ampere_plus(trt_env, onnx_files, tmp_path):
    import engines

    gpu = gpu_info()
    out = tmp_path / "hw.engine"
    r = _run(["engines/build_engine.py", str(onnx_files["fp16"]), "-o", str(out), "--hardware-compatibility",
              "ampere+", "--no-timing-cache"])
    cc = tuple(int(v) for v in gpu["compute_capability"].split("."))
    if cc < (8, 0) or is_jetson():
        assert r.returncode == 2 and "--hardware-compatibility ampere+" in r.stderr
        return
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_manifest(out)["tensorrt"]["hardware_compatibility"] == "ampere+"
    with engines.open(out) as e:
        assert e.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 8, 32, 32)
