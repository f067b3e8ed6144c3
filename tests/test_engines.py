"""engines: the backend interface on the CPU (torch, onnxruntime), backend choice, and the
one-line refusals of the tensorrt backend and build_engine.py where TensorRT is missing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engines
from cpnet.runtime import MissingDependency, UserError, read_manifest, write_manifest

ROOT = Path(__file__).resolve().parent.parent
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """(checkpoint, model.onnx) of the tiny model; the ONNX file made by cpnet.export."""
    from cpnet.export import export_checkpoint

    out = tmp_path_factory.mktemp("export") / "model.onnx"
    export_checkpoint(tiny_checkpoint, out, parity="random", num_parity_images=1)
    return Path(tiny_checkpoint), out


def _batch(m, n=2, seed=0):
    h, w = m.input_size
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


# ------------------------------------------------------------------------------ choosing the backend


@pytest.mark.parametrize("name,expected", [("best.pt", "torch"), ("w.PTH", "torch"), ("model.onnx", "onnxruntime"),
                                           ("model.int8.onnx", "onnxruntime"), ("m.engine", "tensorrt"),
                                           ("m.plan", "tensorrt"), ("m.trt", "tensorrt")])
def test_the_file_suffix_picks_the_backend(name, expected):
    assert engines.backend_for(name) == expected


def test_backend_for_run_dir_and_unknown(tmp_path):
    assert engines.backend_for(tmp_path) == "torch"
    with pytest.raises(UserError, match="cannot tell which backend"):
        engines.backend_for(tmp_path / "weights.bin")
    with pytest.raises(UserError, match="unknown backend"):
        engines.open(tmp_path, backend="tflite")
    with pytest.raises(UserError, match="no such file"):
        engines.open(tmp_path / "missing.onnx")


def test_open_picks_the_backend(exported):
    ckpt, onnx_path = exported
    with engines.open(ckpt.parent) as a, engines.open(ckpt) as b, engines.open(onnx_path) as c:
        assert (a.name, b.name, c.name) == ("torch", "torch", "onnxruntime")
    with engines.open(onnx_path, backend="onnxruntime", providers="cpu", threads=1) as m:
        assert m.providers[-1] == "CPUExecutionProvider"
    assert m.closed


# ------------------------------------------------------------------------------ torch vs onnxruntime


def test_torch_and_onnxruntime_agree(exported):
    ckpt, onnx_path = exported
    with engines.open(ckpt, threads=1) as pt, engines.open(onnx_path, threads=1) as ort:
        assert pt.input_size == ort.input_size == (32, 32)
        assert pt.classes == ort.classes and len(pt.classes) == 8
        assert pt.palette == ort.palette and len(pt.palette) == 8
        assert pt.manifest["mean"] == ort.manifest["mean"]
        x = _batch(pt)
        a, b = pt.infer(x), ort.infer(x)
        assert a.shape == b.shape == (2, 8, 32, 32) and a.dtype == b.dtype == np.float32
        assert np.abs(a - b).max() < 1e-3
        assert (a.argmax(1) == b.argmax(1)).all()
        # the same label map from an image, through the shared pre/post-processing
        image = (np.random.default_rng(1).random((45, 61, 3)) * 255).astype(np.uint8)
        la, lb = pt.segment(image), ort.segment(image)
        assert la.shape == (45, 61) and la.dtype == np.uint8
        assert (la == lb).mean() > 0.999
        # a backend is an InferFn for cpnet.inference (torch in, torch out)
        out = ort(torch.from_numpy(x))
        assert isinstance(out, torch.Tensor) and out.shape == (2, 8, 32, 32)


def test_torch_backend_options_apply_and_impossible_ones_are_one_line_errors(exported):
    ckpt, _ = exported
    with engines.open(ckpt, channels_last=True, threads=1) as m:
        assert m.infer(_batch(m, 1)).shape == (1, 8, 32, 32)
        assert "channels_last" in m.describe() and m.device_memory() is None
    with pytest.warns(UserWarning) if not _native_bf16() else _nullcontext():
        with engines.open(ckpt, precision="bf16", threads=1) as m:
            assert m.infer(_batch(m, 1)).dtype == np.float32 and m.precision == "bf16"
    with pytest.raises(UserError, match="fp16 autocast needs CUDA"):
        engines.open(ckpt, device="cpu", precision="fp16")
    with pytest.raises(UserError, match="unknown option"):
        engines.open(ckpt, providers="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="cuda"):
            engines.open(ckpt, device="cuda")


def test_onnxruntime_missing_provider_is_one_line(exported):
    _, onnx_path = exported
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider")
    with pytest.raises(UserError) as e:
        engines.open(onnx_path, providers="tensorrt")
    assert "\n" not in str(e.value) and "tensorrt" in str(e.value) and "not available" in str(e.value)


def _native_bf16():
    from engines.backends.torch_backend import cpu_has_native_bf16

    return cpu_has_native_bf16()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ------------------------------------------------------------------------------ without TensorRT


def _fake_engine(tmp_path, manifest=True) -> Path:
    eng = tmp_path / "model.engine"
    eng.write_bytes(b"\x00" * 64)
    if manifest:
        write_manifest(eng, {"kind": "engine", "input_size": [32, 32], "tensorrt": {"version": "10.3.0"},
                             "parent": {"path": "model.onnx"}})
    return eng


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_tensorrt_backend_without_tensorrt_is_one_line(tmp_path):
    eng = _fake_engine(tmp_path)
    with pytest.raises(MissingDependency) as e:
        engines.open(eng)
    msg = str(e.value)
    assert "\n" not in msg and "TensorRT is not installed" in msg and "pip install -e .[tensorrt-cu12]" in msg


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here; this checks the message where it is not")
@pytest.mark.parametrize("form", ["script", "module"])
def test_build_engine_without_tensorrt_is_one_line(exported, form):
    _, onnx_path = exported
    cmd = ([sys.executable, "engines/build_engine.py"] if form == "script"
           else [sys.executable, "-m", "engines.build_engine"])
    r = subprocess.run(cmd + [str(onnx_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3  # a missing optional dependency
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: TensorRT is not installed") and "Traceback" not in r.stderr


def test_build_engine_script_runs_from_another_directory(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "engines" / "build_engine.py"), "--help"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0 and "--fp16-flag" in r.stdout


def test_build_engine_refuses_cpu_flavour_before_needing_tensorrt(exported, tmp_path):
    _, onnx_path = exported
    cpu = tmp_path / "model.int8-cpu.onnx"
    cpu.write_bytes(onnx_path.read_bytes())
    man = dict(read_manifest(onnx_path))
    man.pop("schema")
    man.update(precision="int8", flavour="cpu", calibration={"flavour": "cpu", "method": "entropy"})
    write_manifest(cpu, man)
    r = subprocess.run([sys.executable, "-m", "engines.build_engine", str(cpu)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--flavour tensorrt" in lines[0] and "cpu flavour" in lines[0]


def test_build_engine_needs_the_onnx_manifest(tmp_path):
    bare = tmp_path / "x.onnx"
    bare.write_bytes(b"\x08\x07")
    r = subprocess.run([sys.executable, "-m", "engines.build_engine", str(bare)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and "manifest not found" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ benchmark


def test_benchmark_rows_in_process(exported, tmp_path, capsys):
    from engines import benchmark

    ckpt, onnx_path = exported
    out = tmp_path / "bench.json"
    rc = benchmark.main([str(ckpt), str(onnx_path), "--iters", "3", "--warmup", "1", "--batch", "2",
                         "--threads", "1", "--in-process", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "p50 ms" in text and "img/s" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"]
    for r in rows:
        assert r["p50_ms"] > 0 and r["throughput_ips"] > 0 and r["input"] == [2, 3, 32, 32]
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert "in-process" in r["rss_method"] and r["device_memory_mib"] is None


def test_benchmark_subprocess_row_and_errors(exported, tmp_path):
    _, onnx_path = exported
    out = tmp_path / "bench.json"
    broken = _fake_engine(tmp_path)  # exists, but does not open (no TensorRT here; no sha256 in its manifest)
    r = subprocess.run([sys.executable, "-m", "engines.benchmark", str(onnx_path), str(broken), "--iters", "2",
                        "--warmup", "0", "--threads", "1", "--json", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3  # one artifact failed, because TensorRT is missing: the table's code for that
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["rss_peak_mib"] > 10 and "subprocess" in rows[0]["rss_method"]
    assert rows[1]["error"] and "Traceback" not in rows[1]["error"]
    # a path that does not exist is a user mistake: exit 2, nothing run
    r = subprocess.run([sys.executable, "-m", "engines.benchmark", str(onnx_path), str(tmp_path / "nothing.engine")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == "" and "nothing.engine" in r.stderr


def test_benchmark_table_keeps_its_width_when_a_row_fails():
    """A failing artifact's error (337 characters wide in one run) goes on its own line below the table, as a
    numbered note; the table's columns are sized by the measured rows alone."""
    from engines.benchmark import format_table

    good = {"artifact": "model.onnx", "backend": "onnxruntime", "runs_as": "fp32", "batch": 1, "p50_ms": 3.2,
            "p90_ms": 3.5, "p99_ms": 4.0, "throughput_ips": 310.0, "gpu_p50_ms": None, "rss_peak_mib": 180.0,
            "device_memory_mib": None}
    error = "model.fp16.engine: cannot open it: " + "TensorRT is not installed here; " * 10
    text = format_table([good, {"artifact": "model.fp16.engine", "error": error}, good])
    table, _, notes = text.partition("\n\n")
    assert max(map(len, table.splitlines())) <= 120, table
    assert "model.fp16.engine  failed [1]" in table
    assert notes == f"[1] model.fp16.engine: {error}"  # the whole error, once


def test_benchmark_backend_options_parse():
    from engines.benchmark import parse_kv

    assert parse_kv("device=cuda,precision=fp16,channels_last=1") == {"device": "cuda", "precision": "fp16",
                                                                     "channels_last": True}
    with pytest.raises(UserError):
        parse_kv("device")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_torch_backend_on_cuda(exported, precision):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available to torch (no GPU, or a CPU-only torch build)")
    ckpt, onnx_path = exported
    with engines.open(ckpt, device="cuda", precision=precision, channels_last=True) as pt, engines.open(onnx_path) as ort:
        x = _batch(pt)
        a, b = pt.infer(x), ort.infer(x)
        assert pt.last_gpu_ms is not None and pt.device_memory()["max_allocated"] > 0
        assert (a.argmax(1) == b.argmax(1)).mean() >= (1.0 if precision == "fp32" else 0.99)


# ------------------------------------------------------------------------------ the front door


@pytest.mark.parametrize("verb,module", [("check", "engines.check"), ("build", "engines.build_engine"),
                                         ("benchmark", "engines.benchmark")])
def test_engine_verbs_help_every_flag(verb, module):
    import argparse
    import importlib

    from cpnet.cli import build_parser

    mod = importlib.import_module(module)
    assert mod.DESCRIPTION.strip().splitlines()[0] and all(
        line.startswith(f"cpnet {verb} ") for line in mod.EXAMPLES.strip().splitlines())
    parser = build_parser(mod, f"cpnet {verb}")
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"cpnet {verb}: {action.option_strings or action.dest} has no help"
    r = subprocess.run([sys.executable, "-m", "cpnet", verb, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and f"cpnet {verb}" in r.stdout


@pytest.mark.parametrize("argv", [["check", "model.onnx", "--target", "trt9"],
                                  ["build", "model.onnx", "--hardware-compatibility", "turing+"],
                                  ["benchmark", "x.onnx", "--iters", "0"],
                                  ["build", "model.onnx", "--onnx", "model.onnx"]])
def test_engine_verbs_user_mistakes_exit_2_in_one_line(argv):
    r = subprocess.run([sys.executable, "-m", "cpnet", *argv], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1 and "Traceback" not in r.stderr
