"""cpnet evaluate: the config's test scales and flip are the defaults, flags override them."""

from __future__ import annotations

import json

import pytest
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


@pytest.mark.parametrize("name,prior", [("edge_r18_256x512", "[4, 8]"), ("edge_r18_288x512", "[9, 16]")])
def test_edge_config_evaluation_is_the_deployed_prediction(name, prior, tmp_path, tiny_data):
    """An edge config (made tiny, its grid's aspect kept) exported to ONNX: cpnet evaluate's prediction with the
    config's eval settings equals the deployed one (the manifest's preprocess, the model, postprocess) on every
    image, bit for bit, so the mIoU it reports is the deployed model's."""
    import numpy as np

    from conftest import randomize_bn
    from cpnet.checkpoint import save_checkpoint
    from cpnet.config import load_config
    from cpnet.data import build_dataset
    from cpnet.data.synthetic import SYNTHETIC_NAMES, SYNTHETIC_PALETTE
    from cpnet.evaluate import evaluate_model
    from cpnet.export import export_checkpoint
    from cpnet.inference import predict_image
    from cpnet.models import CPNet
    from cpnet.runtime.metrics import ConfusionMatrix
    from cpnet.runtime.options import RuntimeOptions
    from engines.backends.onnxruntime_backend import OnnxModel

    cfg = load_config(name, [f"model.prior_size={prior}", "model.base_width=16", "model.head_channels=16",
                             "model.aux_channels=8", "model.agg_kernel=3", "model.num_classes=8",
                             "data.dataset=synthetic", f"data.root={tiny_data}", "data.num_workers=0"])
    torch.manual_seed(0)
    model = CPNet(cfg.model).eval()
    randomize_bn(model, 1)
    with torch.no_grad():
        model.decode_head.classifier.weight.normal_(0, 0.3)
        for m in model.decode_head.aggregation.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.5)
    classes, palette = list(SYNTHETIC_NAMES), [list(c) for c in SYNTHETIC_PALETTE]
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(), "iter": 0, "classes": classes,
                           "palette": palette}, cfg, classes, palette)
    onnx_path, manifest = export_checkpoint(ckpt, tmp_path / "model.onnx", runtime=RuntimeOptions(threads=1))
    assert manifest["input_size"] == list(cfg.crop_size)
    om = OnnxModel(onnx_path, threads=1)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)  # a 16:9 frame
    probs = predict_image(image, om, cfg.crop_size, 8, cfg.data.mean, cfg.data.std, mode=cfg.eval.mode,
                          scales=cfg.eval.scales, flip=cfg.eval.flip)
    assert np.array_equal(probs.argmax(1)[0].numpy(), om.segment(image))

    ds = build_dataset(cfg.data, "val", cfg.crop_size, train=False, num_classes=8)
    result = evaluate_model(None, ds, cfg, infer=om, progress=False)
    cm = ConfusionMatrix(8, 255)
    for i in range(len(ds)):
        img, label = ds.load(i)
        cm.update(torch.from_numpy(om.segment(img).astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
    assert result["mIoU"] == cm.compute()["mIoU"] and result["aAcc"] == cm.compute()["aAcc"]
