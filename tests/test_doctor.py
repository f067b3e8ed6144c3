"""cpnet doctor (pipeline/doctor.py): this machine as it is, and a Jetson faked as JetPack 6 lays itself out
(files under a root the test makes, TensorRT 10.3 / PyCUDA / cuda-python from tests/fake_tensorrt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpnet import cli
from cpnet.runtime import jetson, read_manifest, write_manifest
from engines import build_engine
from engines.trt.options import BuildOptions
from pipeline import doctor
from test_trt_fake import _conv_model

ORIN = {"name": "Orin", "compute_capability": "8.7", "source": "pycuda"}


def jetpack6(root: Path) -> Path:
    """The files JetPack 6.0 (L4T 36.3) has, as on a Jetson Orin Nano developer kit."""
    files = {
        "etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
                                "DATE: Mon May  6 17:34:21 UTC 2024\n# KERNEL_VARIANT: oot\n",
        "etc/nvpmodel.conf": "< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=7W >\n"
                             "CPU_ONLINE CORE_0 1\n< PM_CONFIG DEFAULT=0 >\n",
        "var/lib/nvpmodel/status": "pmode:0001 fmode:quiet\n",
        "proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\x00",
        "proc/meminfo": "MemTotal:        7802536 kB\nMemFree:  1000 kB\n",
        "usr/local/cuda/version.json": json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.2.140"}}),
        "var/lib/dpkg/status": "\n\n".join([
            "Package: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\n"
            "Version: 36.3.0-20240506102626",
            "Package: nvidia-jetpack\nStatus: install ok installed\nVersion: 6.0+b106",
            "Package: libcudnn8\nStatus: deinstall ok config-files\nVersion: 8.6.0.166-1+cuda11.4",
            "Package: libcudnn9-cuda-12\nStatus: install ok installed\nVersion: 9.3.0.75-1",
            "Package: libnvinfer10\nStatus: install ok installed\nVersion: 10.3.0.30-1+cuda12.5"]) + "\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "dev").mkdir()
    for name in ("video0", "video1", "video-dec"):  # not a V4L2 index: left out
        (root / "dev" / name).touch()
    return root


def test_the_jetson_probes_read_a_jetpack6_tree(tmp_path):
    root = jetpack6(tmp_path)
    info = jetson.jetson_info(root)
    assert info == {"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.3.0",
                    "l4t_core_package": "36.3.0-20240506102626", "jetpack": "6.0",
                    "power_mode": {"id": 1, "name": "7W", "source": "var/lib/nvpmodel/status"}}
    assert jetson.cameras(root) == ["/dev/video0", "/dev/video1"]
    assert "libcudnn8" not in jetson.dpkg_versions(root)  # removed, only its config files left
    (root / "etc/nv_tegra_release").unlink()  # the package alone says it too; no nvidia-jetpack: the table
    (root / "var/lib/dpkg/status").write_text("Package: nvidia-l4t-core\nStatus: install ok installed\n"
                                             "Version: 36.4.3-20250107174145\n")
    assert jetson.l4t_release(root) == "36.4.3" and jetson.jetson_info(root)["jetpack"] == "6.2"
    assert jetson.jetson_info(tmp_path / "desktop") is None and jetson.power_mode(tmp_path / "desktop") is None


def test_doctor_on_a_faked_jetpack6_orin(fake_trt, tmp_path):
    root = jetpack6(tmp_path / "root")
    world = fake_trt("10.3.0", gpu=ORIN, jetson=True)
    world.driver.get_driver_version = lambda: 12020  # JetPack 6.0's driver: CUDA 12.2
    export = tmp_path / "export"
    export.mkdir()
    onnx = _conv_model(export / "model.int8.onnx")
    fresh = build_engine.build(BuildOptions(onnx=str(onnx), timing_cache="", progress=False))
    other = _conv_model(export / "model.fp16.onnx")
    moved = build_engine.build(BuildOptions(onnx=str(other), timing_cache="", progress=False, batch=2))
    m = read_manifest(moved)
    m["gpu"] = {"name": "NVIDIA A100", "compute_capability": "8.0"}  # copied from a desktop
    write_manifest(moved, m)

    r = doctor.report([str(onnx), str(fresh), str(moved)], root=root)
    assert r["jetson"]["jetpack"] == "6.0" and r["jetson"]["power_mode"]["name"] == "7W"
    n = r["nvidia"]
    assert (n["tensorrt"], n["tensorrt_cuda"], n["cudnn"], n["cuda_runtime"], n["driver_cuda"]) == (
        "10.3.0", "12.5", "9.3.0.75-1", "12.2.140", "12.2")
    assert n["fit"]["ok"] and "CUDA 12" in n["fit"]["why"] and n["driver"] == "L4T 36.3.0"
    assert r["gpu"]["name"] == "Orin" and r["gpu"]["integrated"] and r["gpu"]["dla_cores"] == 2
    assert r["system"]["cameras"] == ["/dev/video0", "/dev/video1"] and r["system"]["memory_mib"] == 7619
    a_onnx, a_fresh, a_moved = r["artifacts"]
    assert a_onnx["runs"] and a_onnx["backend"] == "onnxruntime"
    assert a_onnx["tensorrt"] == {"runs": True, "engine": str(fresh), "why": "its cached engine is fresh"}
    assert a_fresh["runs"] and a_fresh["backend"] == "tensorrt" and a_fresh["rebuild"] is None
    assert not a_moved["runs"] and "NVIDIA A100 (sm 8.0)" in a_moved["why"] and "Orin (sm 8.7)" in a_moved["why"]
    assert "cpnet build" not in a_moved["why"]  # the command is the row's own field
    assert a_moved["rebuild"] == f"cpnet build {other} -o {moved} --batch 2"
    assert not r["ok"]
    text = doctor.render(r)
    assert "L4T 36.3.0, JetPack 6.0" in text and "power mode 1 7W" in text and "DLA cores 2" in text
    assert f"rebuild: cpnet build {other} -o {moved} --batch 2" in text and "fits" in text
    json.dumps(r)  # the --json form is plain JSON


def test_an_engine_of_another_tensorrt_gets_its_rebuild_command(fake_trt, tmp_path):
    fake_trt("10.16.1")
    onnx = _conv_model(tmp_path / "model.onnx")
    engine = build_engine.build(BuildOptions(onnx=str(onnx), timing_cache="", progress=False, tf32=True))
    fake_trt("10.3.0")
    (row,) = doctor.report([str(engine)], root=tmp_path / "nothing")["artifacts"]
    assert not row["runs"] and "TensorRT 10.16.1" in row["why"] and "this is TensorRT 10.3.0" in row["why"]
    assert row["rebuild"] == f"cpnet build {onnx} -o {engine} --tf32" and "rebuild it" not in row["why"]


def test_a_tensorrt_built_for_a_newer_cuda_than_the_driver_does_not_fit(fake_trt, tmp_path):
    root = jetpack6(tmp_path)
    world = fake_trt("10.3.0", gpu=ORIN, jetson=True)
    world.driver.get_driver_version = lambda: 11040
    fit = doctor.nvidia(root)["fit"]
    assert not fit["ok"] and "CUDA 12" in fit["why"] and "11.4" in fit["why"]


def test_doctor_on_this_machine_exit_codes_and_json(tmp_path, capsys, monkeypatch):
    """Here (no TensorRT unless installed): an ONNX file runs on onnxruntime (exit 0); an engine whose sha256 does
    not match its manifest cannot run (exit 1) and gets its rebuild command; a missing path is a user error."""
    onnx = _conv_model(tmp_path / "model.onnx")
    assert cli.main(["doctor", str(onnx), "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "opencv" in out and f"ok          {onnx} on onnxruntime" in out
    r = json.loads((tmp_path / "d.json").read_text())
    assert r["schema"] == doctor.SCHEMA and r["artifacts"][0]["runs"] and r["ok"]
    assert set(r) == {"schema", "system", "jetson", "nvidia", "gpu", "onnxruntime", "openvino", "opencv", "torch",
                      "artifacts", "ok"}
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    write_manifest(engine, {"kind": "engine", "sha256": "0" * 64, "parent": {"path": str(onnx), "sha256": "1"}})
    assert cli.main(["doctor", str(engine)]) == 1
    out = capsys.readouterr().out
    assert "does not match its manifest" in out and f"rebuild: cpnet build {onnx} -o {engine}" in out
    assert cli.main(["doctor", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["doctor"])
def test_doctor_is_a_verb_at_the_top(verb):
    assert list(cli.VERBS)[-1] == verb and cli.VERBS[verb] == "pipeline.doctor"
