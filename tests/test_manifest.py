"""Manifests are validated when read; artifacts whose manifest or contents lie are refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import engines
from cpnet.runtime import UserError, manifest_path, read_manifest
from cpnet.runtime.manifest import derive_manifest, manifest_problem
from engines.backends.onnxruntime_backend import OnnxModel


def _with_manifest(src, dst, **changes):
    shutil.copy(src, dst)
    m = json.loads(manifest_path(src).read_text())
    m.update(changes)
    manifest_path(dst).write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("changes,needle", [
    ({"input_size": [0, 32]}, "input_size"),
    ({"input_size": "big"}, "input_size"),
    ({"mean": [1.0, 2.0]}, "mean"),
    ({"std": [0.0, 1.0, 1.0]}, "std"),
    ({"classes": "abc"}, "classes"),
    ({"palette": [[0, 0, 999]]}, "palette"),
    ({"kind": "zip"}, "kind"),
    ({"sha256": "xyz"}, "sha256"),
])
def test_malformed_manifest_fields_are_refused_when_read(tiny_onnx, tmp_path, changes, needle):
    path = _with_manifest(tiny_onnx, tmp_path / "model.onnx", **changes)
    with pytest.raises(UserError) as e:
        read_manifest(path)
    assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_manifest_that_disagrees_with_the_graph_is_refused(tiny_onnx, tmp_path):
    path = _with_manifest(tiny_onnx, tmp_path / "model.onnx", input_size=[64, 64])
    with pytest.raises(UserError, match="does not belong to this file"):
        OnnxModel(path, threads=1)


def test_manifest_problem_accepts_what_cpnet_writes(tiny_onnx):
    assert manifest_problem(read_manifest(tiny_onnx)) is None


def test_derived_manifest_keeps_the_interface_and_the_lineage(tiny_onnx, tmp_path):
    parent = read_manifest(tiny_onnx)
    m = derive_manifest(tiny_onnx, parent, "onnx", "fp16", relative_to=tiny_onnx.parent, fp16={"kept": []})
    assert m["classes"] == parent["classes"] and m["input_size"] == parent["input_size"]
    assert m["parent"] == {"path": tiny_onnx.name, "sha256": parent["sha256"]} and m["precision"] == "fp16"
    assert "sha256" not in m and "export" not in m


def test_checkpoints_that_lie_are_refused(tiny_checkpoint, tmp_path):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    cases = {
        "config_not_a_mapping": {**ckpt, "config": ["not", "a", "config"]},
        "model_not_tensors": {**ckpt, "model": {"w": "nope"}},
        "classes_disagree": {**ckpt, "classes": ckpt["classes"][:-1]},
    }
    from cpnet.checkpoint import load_model

    for name, bad in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(bad, path)
        with pytest.raises(UserError) as e:
            load_model(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value), name


def test_torch_backend_believes_the_checkpoint_not_a_stale_manifest(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    path = run / "best.pt"
    shutil.copy(tiny_checkpoint, path)
    m = json.loads(manifest_path(tiny_checkpoint).read_text())
    manifest_path(path).write_text(json.dumps({**m, "classes": ["lie"] * len(m["classes"])}))
    with engines.open(path, device="cpu") as b:  # same sha256: the classes come from the checkpoint itself
        assert b.classes == m["classes"]
    manifest_path(path).write_text(json.dumps({**m, "sha256": "0" * 64}))
    with pytest.raises(UserError, match="sha256 differs"):
        engines.open(path, device="cpu")


def test_a_refused_pickle_says_why_in_its_one_line(tmp_path):
    import os
    import pickle

    from cpnet.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    for protocol in (2, 4):
        path = tmp_path / f"evil{protocol}.pt"
        path.write_bytes(pickle.dumps({"model": Evil(), "config": {}}, protocol=protocol))
        with pytest.raises(UserError) as e:
            load_checkpoint(path)
        msg = str(e.value)
        assert "\n" not in msg and "could run code when loaded" in msg, msg
        assert ("posix.system" in msg) if protocol == 2 else ("Unsupported" in msg), msg  # which object, where told
