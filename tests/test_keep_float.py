"""--keep-float auto: the greedy search keeps clearly better nodes in float, within its bounds, and gates the result."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cpnet.runtime import read_manifest
from cpnet.runtime.compare import Comparison
from quantize import int8
from quantize.keep_float import clearly_better

torch.set_num_threads(1)


def _result(disagreement_percent: float, mean_abs: float) -> Comparison:
    """A Comparison with these figures (100 pixels, 100 values)."""
    return Comparison(images=1, pixels=100, agreeing=round(100 - disagreement_percent), sum_abs=100 * mean_abs,
                      values=100)


def test_clearly_better_needs_a_real_gain():
    now = _result(10, 1.0)
    assert clearly_better(_result(9, 1.0), now)            # 10% less disagreement
    assert clearly_better(_result(10, 0.9), now)           # as little disagreement, 10% less logit error
    assert not clearly_better(_result(10, 0.97), now)      # noise
    assert not clearly_better(_result(11, 0.5), now)       # more disagreement


def test_keep_float_auto_excludes_worst_nodes_records_them_and_gates(tiny_onnx, tiny_data, tmp_path, capsys):
    model = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, model)
    shutil.copy(tiny_onnx.with_name(tiny_onnx.name + ".json"), model.with_name(model.name + ".json"))
    out = tmp_path / "auto.onnx"
    calib = str(Path(tiny_data) / "images" / "train")
    # an unreachable target forces the greedy loop to its bound; the closest result is written and exit is 1
    rc = int8.main([str(model), "--calib-data", calib, "--num-images", "6", "--no-progress", "--threads", "1",
                    "--keep-float", "auto", "--max-disagreement", "0", "--max-keep-float", "2", "--eval-images", "2",
                    "-o", str(out), "-q"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "INT8 drift limit missed" in err and "--max-keep-float 2" in err
    m = read_manifest(out)
    c = m["calibration"]
    rec = c["keep_float_auto"]
    assert rec["target"] == 0 and rec["met"] is False and m["drift"]["met"] is False
    tried = [s for s in rec["steps"] if s["tried"]]
    assert 1 <= len(tried) <= 4  # at most 2 x --max-keep-float nodes tried
    kept = [s["tried"] for s in tried if s["kept"]]
    assert len(kept) <= 2 and all(k in c["excluded_nodes"] for k in kept)
    last = ([rec["steps"][0]] + [s for s in tried if s["kept"]])[-1]  # the file is the last kept step
    assert m["drift"]["disagreement_percent"] == last["disagreement_percent"]
