"""cpnet evaluate: the config's test scales and flip are the defaults, flags override them."""

from __future__ import annotations

import json

import torch

from cpnet import evaluate as evaluate_cli

torch.set_num_threads(1)


def test_evaluate_uses_the_configs_scales_and_flip_without_flags(tmp_path, make_tiny_checkpoint, capsys, monkeypatch):
    ckpt = make_tiny_checkpoint(tmp_path / "run", overrides=["eval.scales=[0.75, 1.25]", "eval.flip=true",
                                                             "eval.mode=slide"])
    calls = []
    real = evaluate_cli.predict_image

    def counting(image, infer, *a, **k):
        calls.append((k["mode"], tuple(k["scales"]), k["flip"]))
        return real(image, infer, *a, **k)

    monkeypatch.setattr(evaluate_cli, "predict_image", counting)
    out = tmp_path / "ms.json"
    assert evaluate_cli.main([str(ckpt), "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert (res["mode"], res["scales"], res["flip"]) == ("slide", [0.75, 1.25], True)
    assert calls and set(calls) == {("slide", (0.75, 1.25), True)}
    assert "the config's eval section" in capsys.readouterr().out
    # flags override the config
    calls.clear()
    assert evaluate_cli.main([str(ckpt), "--scales", "1", "--no-flip", "--mode", "whole", "--json", str(out),
                              "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert (res["mode"], res["scales"], res["flip"]) == ("whole", [1.0], False)
    assert set(calls) == {("whole", (1.0,), False)}
    assert "flags --mode, --scales, --no-flip over the config" in capsys.readouterr().out
