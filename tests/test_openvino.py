"""The openvino backend (engines/backends/openvino_backend.py): the common interface on ONNX Runtime's figures,
the precision hint set and read back, options refused in one line, the compiled-model cache, and the one-line
refusal (exit 3) where OpenVINO is missing. Skipped with the reason where OpenVINO is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engines
from cpnet.runtime import MissingDependency, UserError

from no_torch import BLOCK_TORCH

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="OpenVINO is not installed (pip install -e '.[openvino]')")


def _batch(m, n=2, seed=0):
    h, w = m.input_size
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def test_openvino_f32_matches_onnxruntime_and_reads_its_precision_back(tiny_onnx):
    with engines.open(tiny_onnx, threads=1) as ort, engines.open(tiny_onnx, backend="openvino", threads=1) as ov:
        assert ov.name == "openvino" and ov.precision_hint == "f32"
        assert ov.runs_as == "f32"  # read back from the compiled model, not assumed
        assert "runs as f32" in ov.describe()
        assert (ov.input_size, ov.classes, ov.palette) == (ort.input_size, ort.classes, ort.palette)
        x = _batch(ort)
        a, b = ort.infer(x), ov.infer(x)
        assert a.shape == b.shape and b.dtype == np.float32
        assert np.abs(a - b).max() < 1e-3
        labels = ov.segment(np.zeros((40, 50, 3), np.uint8))
        assert labels.shape == (40, 50)
    assert ov.closed


def test_openvino_refuses_a_closed_model_and_a_wrong_input_size_in_one_line_as_every_backend(tiny_onnx):
    from cpnet.runtime import UserError

    with engines.open(tiny_onnx, backend="openvino", threads=1) as ov:
        x = _batch(ov)
        with pytest.raises(UserError, match="a batch of"):
            ov.infer(x[:, :, :-8])
    with pytest.raises(UserError, match="the model was closed"):
        ov.infer(x)


def test_openvino_returns_every_output_by_name(tiny_prior_onnx):
    with engines.open(tiny_prior_onnx, threads=1) as ort, \
            engines.open(tiny_prior_onnx, backend="openvino", threads=1) as ov:
        assert ov.output_names == ort.output_names == ["logits", "prior"]
        x = _batch(ort, n=1)
        a, b = ort.infer_all(x), ov.infer_all(x)
        for name in ("logits", "prior"):
            assert a[name].shape == b[name].shape
            assert np.abs(a[name] - b[name]).max() < 1e-3


def test_precisions_come_from_the_device_capabilities(tiny_onnx):
    from engines.backends.openvino_backend import PRECISIONS, capabilities, precisions_here

    caps = capabilities("CPU")
    here = precisions_here("CPU")
    assert here[0] == "f32"
    assert ("bf16" in here) == ("BF16" in caps) and ("f16" in here) == ("FP16" in caps)
    for precision in PRECISIONS:
        if precision in here:
            with engines.open(tiny_onnx, backend="openvino", precision=precision, threads=1) as m:
                assert m.runs_as == PRECISIONS[precision][0]
        else:  # never a silent fall-back to another precision
            with pytest.raises(UserError, match=f"precision {precision} needs"):
                engines.open(tiny_onnx, backend="openvino", precision=precision)


@pytest.mark.parametrize("options,match", [({"precision": "fp64"}, "choose one of"),
                                           ({"performance": "fast"}, "latency or throughput"),
                                           ({"providers": "cpu"}, "unknown option"),
                                           ({"device": "TPU"}, "not available here")])
def test_bad_options_are_one_line_user_errors(tiny_onnx, options, match):
    with pytest.raises(UserError, match=match) as e:
        engines.open(tiny_onnx, backend="openvino", **options)
    assert "\n" not in str(e.value)


def test_cache_dir_keeps_the_compiled_model(tiny_onnx, tmp_path):
    cache = tmp_path / "ov_cache"
    with engines.open(tiny_onnx, backend="openvino", cache_dir=cache, threads=1) as m:
        first = m.infer(_batch(m, n=1))
    blobs = sorted(p.name for p in cache.iterdir())
    assert blobs, "OpenVINO wrote nothing to its cache"
    with engines.open(tiny_onnx, backend="openvino", cache_dir=cache, threads=1) as m:
        assert np.array_equal(m.infer(_batch(m, n=1)), first)
    assert sorted(p.name for p in cache.iterdir()) == blobs  # the second start read the blob, wrote no other


def test_profile_names_the_layers_and_their_kernels(tiny_onnx):
    with engines.open(tiny_onnx, backend="openvino", profile=True, threads=1) as m:
        m.infer(_batch(m, n=1))
        layers = m.profile()
    assert layers and {"node", "type", "exec_type", "us"} <= set(layers[0])
    assert any(layer["type"] == "Convolution" for layer in layers)
    assert layers[0]["us"] >= layers[-1]["us"]


def test_int8_files_run_with_their_quantized_layers_in_int8(tiny_onnx, tmp_path):
    from quantize import int8

    from test_int8 import copy_model, write_calibration_pngs

    model = copy_model(tiny_onnx, tmp_path)
    calib = write_calibration_pngs(tmp_path / "calib", n=4)
    assert int8.main([str(model), "--calib-data", str(calib), "--no-progress", "--threads", "1",
                      "--flavour", "cpu"]) == 0
    path = model.with_name("model.int8-cpu.onnx")
    with engines.open(path, backend="openvino", profile=True, threads=1) as ov, engines.open(path, threads=1) as ort:
        x = _batch(ort, n=1)
        agree = (ov.infer(x).argmax(1) == ort.infer(x).argmax(1)).mean()
        kernels = {layer["exec_type"] for layer in ov.profile() if layer["type"] == "Convolution"}
    assert agree > 0.9
    assert any("I8" in k or "i8" in k.lower() for k in kernels), kernels


NO_OPENVINO = BLOCK_TORCH + """
class NoOpenVino:
    def find_spec(self, name, path=None, target=None):
        if name == "openvino" or name.startswith("openvino."):
            raise ModuleNotFoundError("No module named 'openvino'", name="openvino")

sys.meta_path.insert(0, NoOpenVino())
from cpnet.cli import main
sys.exit(main(sys.argv[1:]))
"""

RUNS_WITHOUT_TORCH = BLOCK_TORCH + """
import engines, numpy as np
with engines.open(sys.argv[1], backend="openvino", threads=1) as m:
    m.infer(np.zeros((1, 3, *m.input_size), np.float32))
assert "torch" not in sys.modules
print(m.runs_as)
"""


def test_missing_openvino_is_one_line_exit_3(tiny_onnx):
    r = subprocess.run([sys.executable, "-c", NO_OPENVINO, "benchmark", str(tiny_onnx), "--backend", "openvino",
                        "--iters", "1", "--warmup", "0", "--in-process"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "OpenVINO is not installed" in r.stderr and "pip install" in r.stderr
    assert "Traceback" not in r.stderr


def test_openvino_backend_needs_no_torch(tiny_onnx):
    r = subprocess.run([sys.executable, "-c", RUNS_WITHOUT_TORCH, str(tiny_onnx)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "f32"


def test_missing_openvino_raises_missing_dependency(monkeypatch, tiny_onnx):
    import builtins

    real = builtins.__import__

    def no_openvino(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(MissingDependency, match="OpenVINO is not installed"):
        engines.open(tiny_onnx, backend="openvino")


def test_benchmark_and_demo_take_the_backend_flags(tiny_onnx, tmp_path, capsys):
    import json

    from cpnet.cli import main as cpnet
    from demo_doubles import write_clip  # noqa: F401 - the demo tests' clip writer

    out = tmp_path / "bench.json"
    assert cpnet(["benchmark", str(tiny_onnx), "--backend", "openvino", "--backend-options", "precision=f32",
                  "--iters", "2", "--warmup", "1", "--threads", "1", "--in-process", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["key"] == "model.onnx@openvino[precision=f32]" and row["runs_as"] == "f32"
    assert "runs as" in capsys.readouterr().out
    clip = write_clip(tmp_path / "clip.mp4", frames=4, size=(64, 48))
    summary = tmp_path / "demo.json"
    assert cpnet(["demo", str(tiny_onnx), "--backend", "openvino", "--backend-options", "precision=f32",
                  "--source", str(clip), "--headless", "--no-drop", "--threads", "1", "--json", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["frames_shown"] == 4 and "openvino" in s["backend"] and "runs as f32" in s["backend"]
    # a malformed option is the parser's one-line usage error (exit 2), before any work
    with pytest.raises(SystemExit) as e:
        cpnet(["demo", str(tiny_onnx), "--backend", "openvino", "--backend-options", "precision"])
    assert e.value.code == 2
