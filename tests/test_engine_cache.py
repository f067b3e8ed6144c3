"""The engine cache (engines/engine_cache.py): engines.open(model.onnx, backend="tensorrt") builds on first use and
reuses after, on the strict fake TensorRT (tests/fake_tensorrt), in this process and in two child processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import engines
from cpnet.runtime import UserError, read_manifest
from engines import build_engine
from engines.trt.options import BuildOptions
from fake_tensorrt import TURING, child_env
from test_trt_fake import _conv_model, _x


def _builds(world) -> int:
    return world.calls.count("build")


def _open(onnx, caplog=None, **options):
    with engines.open(onnx, backend="tensorrt", **options) as m:
        return m.path, m.infer(_x())


def _cache_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine cache:")]


@pytest.fixture
def onnx_file(tmp_path):
    return _conv_model(tmp_path / "model.onnx")


def test_built_on_first_use_then_reused(fake_trt, onnx_file, caplog):
    world = fake_trt()
    caplog.set_level(logging.INFO, logger="cpnet")
    path, y = _open(onnx_file)
    assert Path(path) == onnx_file.with_name("model.engine") and _builds(world) == 1
    np.testing.assert_allclose(y, np.repeat(_x().sum(1, keepdims=True), 2, axis=1), rtol=1e-5)
    path2, y2 = _open(onnx_file)
    assert path2 == path and _builds(world) == 1  # reused
    np.testing.assert_array_equal(y, y2)
    lines = _cache_lines(caplog)
    assert "no cached engine yet" in lines[0] and "reusing" in lines[1]
    manifest = read_manifest(path)  # the cache's engine is cpnet build's: engine + manifest
    assert manifest["kind"] == "engine" and manifest["parent"]["sha256"] == read_manifest(onnx_file)["sha256"]


def test_an_engine_cpnet_build_made_is_the_one_the_cache_reuses(fake_trt, onnx_file):
    world = fake_trt()
    built = build_engine.build(BuildOptions(onnx=str(onnx_file), timing_cache="", progress=False))
    assert _builds(world) == 1
    path, _ = _open(onnx_file)
    assert Path(path) == built and _builds(world) == 1


def test_a_fresh_engine_is_reused_without_writing_anything(fake_trt, onnx_file, monkeypatch):
    """A copied export folder may be read-only: reusing its fresh engine takes no lock and checks no write access."""
    from engines import engine_cache

    world = fake_trt()
    path, _ = _open(onnx_file)

    def no_writing(*a, **k):
        raise AssertionError("a fresh engine's reuse wrote or locked")

    monkeypatch.setattr(engine_cache, "file_lock", no_writing)
    monkeypatch.setattr(engine_cache, "check_output", no_writing)
    assert _open(onnx_file)[0] == path and _builds(world) == 1


def test_engine_cache_dir_keeps_one_engine_per_onnx_file(fake_trt, tmp_path):
    world = fake_trt()
    a = _conv_model((tmp_path / "run_a").mkdir() or tmp_path / "run_a" / "model.onnx")
    b = _conv_model((tmp_path / "run_b").mkdir() or tmp_path / "run_b" / "model.onnx", weight=2.0)
    cache = tmp_path / "cache"
    pa, _ = _open(a, engine_cache=str(cache))
    pb, yb = _open(b, engine_cache=str(cache))
    assert Path(pa).parent == Path(pb).parent == cache and pa != pb and _builds(world) == 2
    assert read_manifest(a)["sha256"][:12] in Path(pa).name
    assert _open(a, engine_cache=str(cache))[0] == pa and _builds(world) == 2
    assert not a.with_name("model.engine").exists()  # nothing written beside the ONNX file


CHANGES = {
    "onnx sha256": lambda fake, onnx: (fake(), _conv_model(onnx, weight=3.0), {}),
    "TensorRT version": lambda fake, onnx: (fake("10.16.1"), None, {}),
    "GPU": lambda fake, onnx: (fake(gpu=TURING), None, {}),
    "build option batch": lambda fake, onnx: (fake(), None, {"batch": 2}),
    "build option workspace_mib": lambda fake, onnx: (fake(), None, {"workspace_mib": 256}),
    "build option opt_level": lambda fake, onnx: (fake(), None, {"opt_level": 1}),
    "build option tf32": lambda fake, onnx: (fake(), None, {"tf32": True}),
    "build option version_compatible": lambda fake, onnx: (fake(), None, {"version_compatible": True}),
    "build option hardware_compatibility": lambda fake, onnx: (fake(), None, {"hardware_compatibility": "ampere+"}),
}


@pytest.mark.parametrize("key", list(CHANGES))
def test_a_changed_key_rebuilds_and_says_which(fake_trt, onnx_file, caplog, key):
    fake_trt("10.3.0")
    _open(onnx_file)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="cpnet")
    world, _, build = CHANGES[key](fake_trt, onnx_file)
    extra = {"allow_host_code": True} if build.get("version_compatible") else {}
    path, _ = _open(onnx_file, build=build or None, **extra)
    assert _builds(world) == 1
    (line,) = [ln for ln in _cache_lines(caplog) if "building" in ln]
    assert f"changed: {key} " in line and line.count("->") == 1, line  # this key, and only this one
    assert _open(onnx_file, build=build or None, **extra)[0] == path and _builds(world) == 1  # fresh again


def test_dla_and_the_fp16_flag_have_their_own_engines(fake_trt, onnx_file):
    world = fake_trt("10.3.0", jetson=True)
    plain, _ = _open(onnx_file)
    flag, _ = _open(onnx_file, build={"fp16_flag": True})
    assert Path(flag).name == "model.fp16flag.engine" and plain != flag and _builds(world) == 2
    assert _open(onnx_file)[0] == plain and _builds(world) == 2


def test_an_engine_cpnet_did_not_build_where_the_cache_would_write_is_refused_not_replaced(fake_trt, onnx_file):
    world = fake_trt()
    foreign = onnx_file.with_name("model.engine")  # cpnet build's name beside the ONNX file, from trtexec say
    foreign.write_bytes(b"someone else's engine")
    with pytest.raises(UserError, match="an engine cpnet did not build"):
        _open(onnx_file)
    assert foreign.read_bytes() == b"someone else's engine" and _builds(world) == 0


def test_strict_dla_builds_the_engine_cpnet_build_does_so_the_cache_reuses_it(fake_trt, onnx_file):
    """cpnet build --strict-dla keeps GPU fallback on (its fallback check names the layers); the cache asked for
    the same options wants the same engine, not a rebuild over it."""
    from engines import engine_cache

    fake_trt("10.3.0", jetson=True)
    opts = engine_cache.build_options(onnx_file, {"dla_core": 0, "strict_dla": True})
    assert opts.gpu_fallback is True


def test_a_tampered_cached_engine_is_refused_by_its_sha256(fake_trt, onnx_file):
    world = fake_trt()
    path, _ = _open(onnx_file, build={"batch": 2})
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    Path(path).write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        _open(onnx_file, build={"batch": 2})
    msg = str(e.value)
    assert "does not match its manifest" in msg and f"cpnet build {onnx_file} -o {path} --batch 2" in msg, msg
    assert _builds(world) == 1  # neither run nor silently replaced


def test_the_cache_refuses_what_tensorrt_cannot_build_in_one_line(fake_trt, tmp_path, onnx_file):
    fake_trt()
    cpu = _conv_model(tmp_path / "model.int8-cpu.onnx", precision="int8")
    m = read_manifest(cpu)
    m["calibration"] = {"flavour": "cpu"}
    from cpnet.runtime import write_manifest

    write_manifest(cpu, m)
    with pytest.raises(UserError, match="cpu flavour"):
        _open(cpu)
    with pytest.raises(UserError, match="unknown TensorRT build option"):
        _open(onnx_file, build={"precision": "fp16"})
    engine, _ = _open(onnx_file)
    with pytest.raises(UserError, match="apply to an ONNX file"):
        _open(engine, build={"batch": 2})


CHILD = textwrap.dedent("""
    import sys, time, os
    from pathlib import Path
    import engines
    from engines import build_engine
    real = build_engine.build
    here, other = Path(sys.argv[2]) / f"started.{sys.argv[3]}", Path(sys.argv[2]) / f"started.{sys.argv[4]}"

    def slow_build(opts):  # hold the build open until the other process starts one too (or 2 s)
        here.touch()
        end = time.time() + 2
        while not other.exists() and time.time() < end:
            time.sleep(0.05)
        return real(opts)

    build_engine.build = slow_build
    from cpnet.runtime import log
    log.setup()
    with engines.open(sys.argv[1], backend="tensorrt") as m:
        m.infer(__import__("numpy").zeros((1, 3, 4, 4), "float32"))
    """)


def test_two_processes_asking_at_once_build_once(fake_trt, onnx_file, tmp_path):
    """Each child has its own fake world (child_env); the lock makes the second wait and find the first's engine."""
    world = fake_trt()
    env = child_env(world)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    procs = [subprocess.Popen([sys.executable, str(script), str(onnx_file), str(tmp_path), me, them], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, them in (("a", "b"), ("b", "a"))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    logs = "".join(err for _, err in outs)
    assert logs.count("engine cache: building") == 1 and logs.count("engine cache: reusing") == 1, logs
    assert read_manifest(onnx_file.with_name("model.engine"))["kind"] == "engine"


def test_cpnet_benchmark_on_an_onnx_file_with_backend_tensorrt(fake_trt, onnx_file, tmp_path):
    """The front door in child processes on the fake: the first run builds into --engine-cache, the second reuses
    (the benchmark's own child process, not --in-process, so --engine-cache travels to it)."""
    world = fake_trt("10.16.1")
    env = child_env(world)
    root = Path(__file__).resolve().parent.parent
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "cpnet", "benchmark", str(onnx_file), "--backend", "tensorrt", "--engine-cache",
            str(cache), "--iters", "2", "--warmup", "0", "--json", str(tmp_path / "b.json")]
    first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert first.returncode == 0, first.stderr
    (engine,) = cache.glob("model.*.engine")
    made = engine.stat().st_mtime_ns, engine.stat().st_ino
    second = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert second.returncode == 0, second.stderr
    assert (engine.stat().st_mtime_ns, engine.stat().st_ino) == made  # reused, not rebuilt
    assert read_manifest(engine)["tensorrt"]["version"] == "10.16.1" and not onnx_file.with_name("model.engine").exists()
    row = __import__("json").loads((tmp_path / "b.json").read_text())["rows"][0]
    assert row.get("error") is None and row["backend"] == "tensorrt"


def test_cpnet_demo_on_an_onnx_file_with_backend_tensorrt(fake_trt, onnx_file, tmp_path, capsys):
    """README's Jetson line: cpnet demo model.int8.onnx --backend tensorrt builds the engine once, then reuses it."""
    import cv2

    from cpnet import cli

    world = fake_trt("10.3.0", jetson=True)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    argv = ["demo", str(onnx_file), "--backend", "tensorrt", "-s", str(frames), "--headless", "--no-drop",
            "--json", str(tmp_path / "s.json")]
    for _ in range(2):
        assert cli.main(argv) == 0, capsys.readouterr().err
    assert _builds(world) == 1 and onnx_file.with_name("model.engine").is_file()
    s = __import__("json").loads((tmp_path / "s.json").read_text())
    assert s["frames_shown"] == 3 and "tensorrt" in s["backend"]


def test_report_asked_for_tensorrt_gives_onnx_files_a_tensorrt_row(tmp_path):
    """cpnet report FILE.onnx --backend tensorrt: a row keyed on tensorrt for each ONNX file (opened through
    engines.open(onnx, backend="tensorrt"), which builds into the engine cache), none for the checkpoint."""
    from engines.report.options import ReportOptions
    from engines.report.rows import variant_rows

    onnx, ckpt = tmp_path / "model.int8.onnx", tmp_path / "best.pt"
    rows = variant_rows([onnx, ckpt], ["model.int8.onnx", "best.pt"], ReportOptions(backends=["tensorrt"]))
    assert [(str(k.artifact), k.backend) for _, k in rows] == [("model.int8.onnx", "tensorrt")]
