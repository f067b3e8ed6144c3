"""Model tests: shapes, the prior map, gradients, backbone weight loading, parameter count."""

from __future__ import annotations

import argparse
import dataclasses
import warnings

import pytest
import torch

from cpnet.config import ModelConfig, load_config, named_configs
from cpnet.runtime import UserError
from cpnet.models.cpnet import CPNet
from cpnet.models.heads import ContextPriorHead
from cpnet.models.resnet import ResNet
from cpnet.models.weights import load_backbone_weights

torch.set_num_threads(1)


def small(cfg: ModelConfig, prior=4, **kw) -> ModelConfig:
    return dataclasses.replace(cfg, prior_size=prior, **kw)


def build(cfg: ModelConfig, seed: int = 0) -> CPNet:
    torch.manual_seed(seed)
    return CPNet(cfg)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", named_configs())
def test_every_named_config_builds_with_the_output_shapes_it_promises(name):
    ph, pw = load_config(name).model.prior_size
    prior = (4, 4 * pw // ph) if pw >= ph else (4 * ph // pw, 4)  # small, with the config's aspect
    cfg = small(load_config(name).model, prior=prior)
    model = build(cfg)
    s, n, k = cfg.input_size, cfg.prior_cells, cfg.num_classes
    assert model.input_size == s == (8 * prior[0], 8 * prior[1]) and n == prior[0] * prior[1]
    x = torch.randn(2, 3, *s)

    model.train()
    out = model(x)
    assert set(out) == {"out", "aux", "prior", "prior_logits"}
    assert out["out"].shape == (2, k, *s)
    assert out["aux"].shape == (2, k, *s)
    assert out["prior"].shape == out["prior_logits"].shape == (2, n, n)
    p = out["prior"]
    assert bool(((p > 0) & (p < 1)).all())
    assert torch.allclose(p, torch.sigmoid(out["prior_logits"]))

    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, k, *s)
    assert torch.isfinite(y).all()


def test_eval_does_not_run_aux():
    model = build(ModelConfig(depth=18, base_width=16, num_classes=5, prior_size=4,
                              head_channels=16, aux_channels=8, agg_kernel=3)).eval()
    calls = []
    model.aux_head.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert calls == []


def test_wrong_input_size_raises():
    model = build(ModelConfig(depth=18, base_width=16, num_classes=5, prior_size=4,
                              head_channels=16, aux_channels=8, agg_kernel=3))
    for size in (40, 24):
        with pytest.raises(ValueError, match=r"prior grid 4x4\) takes 32x32 inputs"):
            model(torch.randn(1, 3, size, size))
    head = ContextPriorHead(32, 16, 5, prior_size=4, k=3)
    with pytest.raises(ValueError, match=r"8 x the prior grid = 32x32"):
        head(torch.randn(1, 32, 5, 5))


def test_a_rectangular_prior_grid_takes_8h_by_8w_inputs_with_row_major_prior_rows():
    """prior_size [h, w]: input 8h x 8w, P is (N, N) with N = h*w, rows = pixels in row-major order."""
    cfg = ModelConfig(depth=18, base_width=16, num_classes=5, prior_size=(3, 5), head_channels=16, aux_channels=8,
                      agg_kernel=3)
    assert cfg.input_size == (24, 40) and cfg.prior_cells == 15
    assert load_config("quickstart", ["model.prior_size=[3, 5]"]).model.prior_size == (3, 5)
    assert load_config("quickstart", ["model.prior_size=6"]).model.prior_size == (6, 6)
    model = build(cfg)
    out = model(torch.randn(2, 3, 24, 40))
    assert out["out"].shape == (2, 5, 24, 40) and out["prior"].shape == (2, 15, 15)
    with pytest.raises(ValueError, match="takes 24x40 inputs"):
        model(torch.randn(1, 3, 40, 24))
    head = model.decode_head.eval()
    x = torch.randn(1, model.backbone.out_channels[1], 3, 5)
    with torch.no_grad():
        _, logits, _ = head(x)
        conv = head.prior_bn(head.prior_conv(head.aggregation(x)))  # (1, N, 3, 5)
    assert torch.allclose(logits[0, 1 * 5 + 3, 11], conv[0, 11, 1, 3])  # pixel (1, 3) = row 8, channel 11


@pytest.mark.parametrize("stem,first", [("v1c", "stem.0.weight"), ("v1b", "conv1.weight")])
def test_gradients_reach_first_conv(stem, first):
    cfg = ModelConfig(depth=18, stem=stem, base_width=16, num_classes=5, prior_size=4,
                      head_channels=16, aux_channels=8, agg_kernel=3)
    model = build(cfg).train()
    out = model(torch.randn(2, 3, 32, 32))
    sum(v.sum() for v in out.values()).backward()
    grad = dict(model.backbone.named_parameters())[first].grad
    assert grad is not None and grad.abs().sum() > 0
    for name in ("prior_conv.weight", "intra_conv.conv.weight", "inter_conv.conv.weight",
                 "aggregation.path1_a.weight", "aggregation.path2_b.weight"):
        assert dict(model.decode_head.named_parameters())[name].grad.abs().sum() > 0, name


def test_a_batch_of_one_runs_in_train_mode():
    cfg = ModelConfig(depth=18, base_width=16, num_classes=5, prior_size=2,
                      head_channels=16, aux_channels=8, agg_kernel=3)
    out = build(cfg).train()(torch.randn(1, 3, 16, 16))
    assert out["out"].shape == (1, 5, 16, 16) and out["prior"].shape == (1, 4, 4)


@pytest.mark.parametrize("head", ["agg", "fcn"])
@pytest.mark.parametrize("aux", [True, False])
def test_ablation_heads_build_with_and_without_the_aux_head(head, aux):
    cfg = ModelConfig(head=head, depth=18, base_width=16, num_classes=7, prior_size=4,
                      head_channels=16, aux_channels=8, agg_kernel=3, aux=aux)
    model = build(cfg).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert set(out) == ({"out", "aux"} if aux else {"out"})
    assert out["out"].shape == (2, 7, 32, 32)
    assert (model.aux_head is None) == (not aux)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7, 32, 32)


def test_the_head_has_the_authors_module_names_and_kernel_shapes():
    cfg = ModelConfig(depth=18, base_width=16, num_classes=5, prior_size=4, head_channels=16,
                      aux_channels=8, agg_kernel=5)
    names = set(dict(build(cfg).decode_head.named_modules()))
    for n in ("aggregation", "aggregation.reduce", "aggregation.path1_a", "aggregation.path1_b",
              "aggregation.path2_a", "aggregation.path2_b", "aggregation.norm", "prior_conv", "prior_bn",
              "intra_conv", "inter_conv", "bottleneck", "classifier"):
        assert n in names, n
    head = build(cfg).decode_head
    assert head.aggregation.path1_a.kernel_size == (5, 1) and head.aggregation.path1_b.kernel_size == (1, 5)
    assert head.aggregation.path2_a.kernel_size == (1, 5) and head.aggregation.path2_b.kernel_size == (5, 1)
    assert head.aggregation.path1_a.groups == 16 and head.aggregation.path1_a.bias is not None  # as the authors'
    assert head.prior_conv.out_channels == 16 and head.prior_conv.bias is None


def test_prior_rows_are_pixels():
    """P = sigmoid(prior logits) with row i = pixel i, intra = P V / N as in the authors' code."""
    torch.manual_seed(0)
    head = ContextPriorHead(8, 4, 3, prior_size=3, k=3).eval()
    x = torch.randn(1, 8, 3, 3)
    with torch.no_grad():
        _, logits, p = head(x)
        value = head.aggregation(x)
        conv = head.prior_bn(head.prior_conv(value))  # (1, N, 3, 3): channel j at pixel i
    assert torch.allclose(logits[0, 4, 7], conv[0, 7, 1, 1])  # pixel 4 = (1, 1), channel 7


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("stem", ["v1c", "v1b"])
def test_every_resnet_depth_and_stem_has_output_stride_8(depth, stem):
    net = ResNet(depth, stem=stem, base_width=8).eval()
    with torch.no_grad():
        c3, c4 = net(torch.randn(1, 3, 64, 64))
    exp = 4 if depth >= 50 else 1
    assert c3.shape == (1, 8 * 4 * exp, 8, 8)
    assert c4.shape == (1, 8 * 8 * exp, 8, 8)
    assert net.out_channels == (c3.shape[1], c4.shape[1])


def test_out_channels_standard_width():
    assert ResNet(50).out_channels == (1024, 2048)
    assert ResNet(18).out_channels == (256, 512)


def test_dilated_resnet_contracts_the_first_block_dilation():
    net = ResNet(50, base_width=8)
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[2].conv2.dilation == (4, 4)
    assert net.layer4[2].conv2.padding == (4, 4)
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer3[0].conv2.stride == (1, 1)


def test_inference_param_count_matches_paper():
    model = CPNet(ModelConfig(depth=50, stem="v1c", num_classes=150, prior_size=64))
    total = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for p in model.aux_head.parameters())
    assert abs((total - aux) / 49.8e6 - 1) < 0.02, total - aux
    # the aggregation module's four depthwise biases: 4 x 512
    no_bias = CPNet(ModelConfig(depth=50, stem="v1c", num_classes=150, prior_size=64, agg_bias=False))
    assert total - sum(p.numel() for p in no_bias.parameters()) == 4 * 512


def test_checkpoint_from_before_aggregation_biases_loads_bias_free(tmp_path):
    from cpnet.checkpoint import config_of, load_model, save_checkpoint
    from cpnet.config import load_config

    cfg = load_config("quickstart", ["model.prior_size=4", "model.base_width=16", "model.head_channels=16",
                                     "model.aux_channels=8", "model.agg_kernel=3", "model.agg_bias=false"])
    model = CPNet(cfg.model).eval()
    old_config = cfg.to_dict()
    del old_config["model"]["agg_bias"]  # as written before the key existed
    state = {"model": model.state_dict(), "config": old_config, "iter": 0}
    assert not any(k.endswith("path1_a.bias") for k in state["model"])
    save_checkpoint(tmp_path / "best.pt", state, cfg, [str(i) for i in range(8)], [[0, 0, 0]] * 8)
    loaded, lcfg, _ = load_model(tmp_path)
    assert lcfg.model.agg_bias is False and config_of({"config": cfg.to_dict()}).model.agg_bias is False
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert load_config("quickstart").model.agg_bias is True


# ---------------------------------------------------------------- weight loading


def torchvision_keys(blocks=(3, 4, 6, 3)) -> list[str]:
    """torchvision resnet50().state_dict() keys, written out from its naming rules."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in bn]
    for i, n in enumerate(blocks, 1):
        for j in range(n):
            p = f"layer{i}.{j}."
            for c in (1, 2, 3):
                keys += [p + f"conv{c}.weight"] + [p + f"bn{c}.{b}" for b in bn]
            if j == 0:
                keys += [p + "downsample.0.weight"] + [p + f"downsample.1.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


def mmcv_stem_keys() -> list[str]:
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return [f"stem.{c}.weight" for c in (0, 3, 6)] + [f"stem.{b}.{x}" for b in (1, 4, 7) for x in bn]


def randomised(sd: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        out[k] = v.clone() if not v.is_floating_point() else torch.rand(v.shape, generator=g) + 0.5
    return out


def test_v1b_naming_equals_torchvision():
    ours = list(ResNet(50, stem="v1b", base_width=8).state_dict())
    assert sorted(ours) == sorted(torchvision_keys()[:-2])
    assert len(ours) == 318  # torchvision resnet50: 320 keys with fc.weight / fc.bias


def test_v1c_stem_naming_equals_mmcv():
    ours = [k for k in ResNet(50, stem="v1c", base_width=8).state_dict() if k.startswith("stem.")]
    assert sorted(ours) == sorted(mmcv_stem_keys())


def test_torchvision_v1b_backbone_weights_load_and_fc_is_dropped(tmp_path):
    src = ResNet(50, stem="v1b", base_width=16).state_dict()
    sd = randomised(src, 1)
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 128), torch.randn(1000)
    path = tmp_path / "resnet50-tv.pth"
    torch.save(sd, path)

    model = build(ModelConfig(depth=50, stem="v1b", base_width=16, num_classes=5, prior_size=2,
                              head_channels=16, aux_channels=8, agg_kernel=3))
    before = model.backbone.layer4[2].conv3.weight.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fc is dropped silently
        report = load_backbone_weights(model, path)
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["loaded"] == len([k for k in src if not k.endswith("num_batches_tracked")])
    after = model.backbone.state_dict()
    assert not torch.equal(before, after["layer4.2.conv3.weight"])
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.bn3.bias"):
        assert torch.equal(after[k], sd[k]), k


def test_an_old_backbone_file_without_num_batches_tracked_loads(tmp_path):
    """Files saved before PyTorch 0.4.1 lack the batch norms' num_batches_tracked; they are optional, and a file
    without them loads with every other tensor in place."""
    src = ResNet(18, stem="v1b", base_width=16).state_dict()
    sd = {k: v for k, v in randomised(src, 3).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18-old.pth"
    torch.save(sd, path)
    backbone = ResNet(18, stem="v1b", base_width=16)
    report = load_backbone_weights(backbone, path)
    assert report["missing"] == [] and report["loaded"] == len(sd)
    assert torch.equal(backbone.state_dict()["layer4.1.bn2.running_mean"], sd["layer4.1.bn2.running_mean"])


def test_load_mmcv_v1c_dict(tmp_path):
    src = ResNet(50, stem="v1c", base_width=16).state_dict()
    sd = {"backbone." + k: v for k, v in randomised(src, 2).items()}
    ckpt = {"meta": {"epoch": 1}, "state_dict": sd}
    path = tmp_path / "resnet50_v1c.pth"
    torch.save(ckpt, path)
    net = ResNet(50, stem="v1c", base_width=16)
    report = load_backbone_weights(net, path)
    assert report["missing"] == [] and report["unexpected"] == []
    assert torch.equal(net.state_dict()["stem.3.weight"], sd["backbone.stem.3.weight"])
    assert torch.equal(net.state_dict()["stem.7.running_mean"], sd["backbone.stem.7.running_mean"])


def test_load_module_prefix_and_extra_keys_warn(tmp_path):
    src = ResNet(18, stem="v1c", base_width=8).state_dict()
    sd = {"module.backbone." + k: v for k, v in src.items()}
    sd["module.decode_head.conv_seg.weight"] = torch.zeros(3, 8, 1, 1)
    path = tmp_path / "ddp.pth"
    torch.save({"model": sd}, path)
    with pytest.warns(UserWarning, match="decode_head.conv_seg.weight"):
        report = load_backbone_weights(ResNet(18, stem="v1c", base_width=8), path)
    assert report["unexpected"] == ["decode_head.conv_seg.weight"]


def test_old_torchvision_without_num_batches_tracked(tmp_path):
    src = ResNet(18, stem="v1b", base_width=8).state_dict()
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in src.items() if not k.endswith("num_batches_tracked")}, path)
    assert load_backbone_weights(ResNet(18, stem="v1b", base_width=8), path)["missing"] == []


def test_v1b_into_v1c_is_refused(tmp_path):
    sd = dict(ResNet(50, stem="v1b", base_width=16).state_dict())
    sd["fc.weight"] = torch.zeros(10, 128)
    path = tmp_path / "tv.pth"
    torch.save(sd, path)
    net = ResNet(50, stem="v1c", base_width=16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(UserError, match="stem=v1b") as e:
        load_backbone_weights(net, path)
    assert "tv.pth" in str(e.value) and "missing" in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing half-loaded


def test_v1c_into_v1b_is_refused(tmp_path):
    path = tmp_path / "mm.pth"
    torch.save(ResNet(18, stem="v1c", base_width=8).state_dict(), path)
    with pytest.raises(UserError, match="stem=v1c"):
        load_backbone_weights(ResNet(18, stem="v1b", base_width=8), path)


def test_depth_and_width_mismatch_refused(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(ResNet(50, base_width=8).state_dict(), path)
    with pytest.raises(UserError, match="model.depth"):
        load_backbone_weights(ResNet(101, base_width=8), path)
    with pytest.raises(UserError, match="shape mismatch"):
        load_backbone_weights(ResNet(50, base_width=16), path)
    path101 = tmp_path / "r101.pth"
    torch.save(ResNet(101, base_width=8).state_dict(), path101)
    with pytest.raises(UserError, match="ResNet-101"):
        load_backbone_weights(ResNet(50, base_width=8), path101)


def test_corrupt_missing_or_unsafe_backbone_files_are_user_errors(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="corrupt.pth"):
        load_backbone_weights(ResNet(18, base_width=8), bad)
    with pytest.raises(UserError, match="nowhere.pth"):
        load_backbone_weights(ResNet(18, base_width=8), tmp_path / "nowhere.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1)}, unsafe)
    with pytest.raises(UserError, match="unsafe.pth"):
        load_backbone_weights(ResNet(18, base_width=8), unsafe)
