"""cpnet convert: a checkpoint in the authors' / mmseg naming becomes a cpnet run directory computing the same function.

The test writes the authors' model twice, from their code (yu-changqian/ContextPrior ``cp_head.py`` on mmseg's
``ResNetV1c`` and ``FCNHead``; mmcv-full cannot be installed against current PyTorch): the names and shapes of
its state dict, and a plain functional forward of those weights.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from cpnet import cli

torch.set_num_threads(1)

W, BLOCKS, C, K, CLASSES, AUX = 8, (3, 4, 6, 3), 16, 3, 5, 8  # a ResNet-50 V1c at base width 8, 16-channel head
PRIOR = (4, 6)  # a rectangular grid (the authors take prior_size through _pair): input 32x48
OVERRIDES = ["model.depth=50", f"model.base_width={W}", f"model.head_channels={C}", f"model.aux_channels={AUX}",
             f"model.agg_kernel={K}", f"model.prior_size=[{PRIOR[0]}, {PRIOR[1]}]", f"model.num_classes={CLASSES}"]
NAMES = ("road", "sky", "car", "tree", "person")


def authors_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """An EncoderDecoder(ResNetV1c, CPHead, FCNHead) state dict with random values, the biases of mmcv's
    ConvModules included (bias='auto': a conv without a norm after it has one)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, o, i, kh, kw, bias=False):
        sd[name + ".weight"] = torch.randn(o, i, kh, kw, generator=g) * (2.0 / (i * kh * kw)) ** 0.5
        if bias:
            sd[name + ".bias"] = torch.randn(o, generator=g) * 0.5

    def bn(name, c):
        sd[name + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".bias"] = torch.randn(c, generator=g) * 0.2
        sd[name + ".running_mean"] = torch.randn(c, generator=g) * 0.2
        sd[name + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".num_batches_tracked"] = torch.tensor(1000)

    b = "backbone."
    conv(b + "stem.0", W // 2, 3, 3, 3), bn(b + "stem.1", W // 2)
    conv(b + "stem.3", W // 2, W // 2, 3, 3), bn(b + "stem.4", W // 2)
    conv(b + "stem.6", W, W // 2, 3, 3), bn(b + "stem.7", W)
    inplanes = W
    for i, (n, planes) in enumerate(zip(BLOCKS, (W, 2 * W, 4 * W, 8 * W))):
        for j in range(n):
            p = f"{b}layer{i + 1}.{j}."
            conv(p + "conv1", planes, inplanes, 1, 1), bn(p + "bn1", planes)
            conv(p + "conv2", planes, planes, 3, 3), bn(p + "bn2", planes)
            conv(p + "conv3", 4 * planes, planes, 1, 1), bn(p + "bn3", 4 * planes)
            if j == 0:
                conv(p + "downsample.0", 4 * planes, inplanes, 1, 1), bn(p + "downsample.1", 4 * planes)
            inplanes = 4 * planes
    d, n = "decode_head.", PRIOR[0] * PRIOR[1]
    conv(d + "aggregation.reduce_conv.conv", C, inplanes, 3, 3), bn(d + "aggregation.reduce_conv.bn", C)
    conv(d + "aggregation.t1.conv", C, 1, K, 1, bias=True)
    conv(d + "aggregation.t2.conv", C, 1, 1, K, bias=True)
    conv(d + "aggregation.p1.conv", C, 1, 1, K, bias=True)
    conv(d + "aggregation.p2.conv", C, 1, K, 1, bias=True)
    bn(d + "aggregation.norm", C)
    conv(d + "prior_conv.conv", n, C, 1, 1), bn(d + "prior_conv.bn", n)
    conv(d + "intra_conv.conv", C, C, 1, 1), bn(d + "intra_conv.bn", C)
    conv(d + "inter_conv.conv", C, C, 1, 1), bn(d + "inter_conv.bn", C)
    conv(d + "bottleneck.conv", C, inplanes + 2 * C, 3, 3), bn(d + "bottleneck.bn", C)
    conv(d + "conv_seg", CLASSES, C, 1, 1, bias=True)
    a = "auxiliary_head."
    conv(a + "convs.0.conv", AUX, 16 * W, 3, 3), bn(a + "convs.0.bn", AUX)
    conv(a + "conv_seg", CLASSES, AUX, 1, 1, bias=True)
    return sd


def authors_forward(sd: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """The eval-mode logits of EncoderDecoder.encode_decode, written out from the authors' and mmseg's code."""
    relu = F.relu

    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    def conv(x, p, stride=1, padding=0, dilation=1, groups=1):
        return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), stride, padding, dilation, groups)

    # ResNetV1c: deep stem, max pool, bottlenecks ("pytorch" style: the stride on the 3x3), strides (1, 2, 1, 1),
    # dilations (1, 1, 2, 4), contract_dilation (a dilated stage's first block at half the dilation)
    x = relu(bn(conv(image, "backbone.stem.0", 2, 1), "backbone.stem.1"))
    x = relu(bn(conv(x, "backbone.stem.3", 1, 1), "backbone.stem.4"))
    x = relu(bn(conv(x, "backbone.stem.6", 1, 1), "backbone.stem.7"))
    x = F.max_pool2d(x, 3, 2, 1)
    c3 = None
    for i, (n, s, dil) in enumerate(zip(BLOCKS, (1, 2, 1, 1), (1, 1, 2, 4))):
        for j in range(n):
            p = f"backbone.layer{i + 1}.{j}."
            stride = s if j == 0 else 1
            dj = (dil // 2 if dil > 1 else dil) if j == 0 else dil
            identity = bn(conv(x, p + "downsample.0", stride), p + "downsample.1") if j == 0 else x
            out = relu(bn(conv(x, p + "conv1"), p + "bn1"))
            out = relu(bn(conv(out, p + "conv2", stride, dj, dj), p + "bn2"))
            out = bn(conv(out, p + "conv3"), p + "bn3")
            x = relu(out + identity)
        if i == 2:
            c3 = x
    c4 = x
    assert c3 is not None
    # CPHead.forward
    d, pad = "decode_head.", K // 2
    batch_size, _, height, width = c4.shape
    n = PRIOR[0] * PRIOR[1]
    assert (height, width) == PRIOR
    v = relu(bn(conv(c4, d + "aggregation.reduce_conv.conv", 1, 1), d + "aggregation.reduce_conv.bn"))
    x1 = conv(conv(v, d + "aggregation.t1.conv", 1, (pad, 0), groups=C), d + "aggregation.t2.conv", 1, (0, pad), groups=C)
    x2 = conv(conv(v, d + "aggregation.p1.conv", 1, (0, pad), groups=C), d + "aggregation.p2.conv", 1, (pad, 0), groups=C)
    value = relu(bn(x1 + x2, d + "aggregation.norm"))
    context_prior_map = bn(conv(value, d + "prior_conv.conv"), d + "prior_conv.bn")
    context_prior_map = context_prior_map.view(batch_size, n, -1).permute(0, 2, 1)
    context_prior_map = torch.sigmoid(context_prior_map)
    inter_context_prior_map = 1 - context_prior_map
    value_t = value.view(batch_size, C, -1).permute(0, 2, 1)
    intra = torch.bmm(context_prior_map, value_t).div(n).permute(0, 2, 1).contiguous().view(batch_size, C, *PRIOR)
    intra = relu(bn(conv(intra, d + "intra_conv.conv"), d + "intra_conv.bn"))
    inter = torch.bmm(inter_context_prior_map, value_t).div(n).permute(0, 2, 1).contiguous().view(batch_size, C, *PRIOR)
    inter = relu(bn(conv(inter, d + "inter_conv.conv"), d + "inter_conv.bn"))
    out = relu(bn(conv(torch.cat([c4, intra, inter], 1), d + "bottleneck.conv", 1, 1), d + "bottleneck.bn"))
    logits = conv(out, d + "conv_seg")  # cls_seg: dropout (the identity in eval mode), then conv_seg
    return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_authors_checkpoint_converts_and_computes_the_same_logits(tmp_path, capsys):
    from cpnet.checkpoint import load_model
    from cpnet.export import ExportOptions, export_checkpoint
    from cpnet.runtime import read_manifest
    from cpnet.runtime.options import RuntimeOptions

    sd = authors_state_dict()
    src = tmp_path / "cpnet_r50_authors.pth"
    palette = [[128, 64, 128], [70, 130, 180], [0, 0, 142], [107, 142, 35], [220, 20, 60]]
    torch.save({"state_dict": sd, "meta": {"CLASSES": NAMES, "PALETTE": palette, "iter": 80000}}, src)
    out, report = tmp_path / "run", tmp_path / "report.json"
    rc, stdout, err = run_cli(["convert", str(src), "--config", "quickstart", *OVERRIDES, "-o", str(out),
                               "--json", str(report)], capsys)
    assert rc == 0, err
    rep = json.loads(report.read_text())
    assert rep["missing"] == [] and rep["unexpected"] == []
    assert rep["loaded"] == sum(1 for k in sd if not k.endswith("num_batches_tracked"))

    model, cfg, ckpt = load_model(out)
    assert cfg.model.agg_bias and cfg.model.aux and cfg.model.prior_size == PRIOR
    assert ckpt["classes"] == list(NAMES) and ckpt["palette"] == palette and ckpt["iter"] == 80000
    assert read_manifest(out / "best.pt")["input_size"] == [32, 48]
    image = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.double()(image.double())
        theirs = authors_forward({k: v.double() if v.is_floating_point() else v for k, v in sd.items()},
                                 image.double())
    assert ours.shape == theirs.shape == (2, CLASSES, 32, 48)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-5
    with torch.no_grad():  # and in float32, as it runs
        rel = (model.float()(image) - authors_forward(sd, image)).abs().max() / theirs.abs().max()
    assert float(rel) <= 1e-5
    # the run directory goes on through the pipeline (random weights give logits in the thousands: the
    # parity limit is 1e-5 of that)
    atol = 1e-5 * float(theirs.abs().max())
    onnx_path, manifest = export_checkpoint(out, tmp_path / "model.onnx", ExportOptions(parity="random", atol=atol),
                                            RuntimeOptions(threads=1))
    assert manifest["classes"] == list(NAMES) and manifest["input_size"] == [32, 48]


def test_mmengine_metadata_is_read_as_inert_data_and_anything_else_is_refused(tmp_path, capsys, monkeypatch):
    import numpy as np

    ran = []

    # mmengine's HistoryBuffer and a class of some other package, under their real module paths while saving
    class HistoryBuffer:
        def __init__(self):
            self._log_history = np.arange(3.0)
            self.max_length = 1000000

        def __setstate__(self, state):  # if loading ran this class's code, we would know
            ran.append("setstate")
            self.__dict__.update(state)

    class Gadget:
        def __reduce__(self):
            return (Gadget, ())

    fake = []
    for name, cls in (("mmengine.logging.history_buffer", HistoryBuffer), ("somepkg.gadgets", Gadget)):
        cls.__module__, cls.__qualname__ = name, cls.__name__
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the package and its parents, so that pickle can import the name
            fake.append(".".join(parts[:i]))
            monkeypatch.setitem(sys.modules, fake[-1], types.ModuleType(fake[-1]))
        setattr(sys.modules[name], cls.__name__, cls)
    sd = authors_state_dict()
    meta = {"dataset_meta": {"classes": NAMES, "palette": [[i, i, i] for i in range(5)]}, "seed": np.int64(3)}
    mm = tmp_path / "mmseg1x.pth"
    torch.save({"meta": meta, "state_dict": sd, "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}}}, mm)
    other = tmp_path / "other.pth"
    torch.save({"meta": {"thing": Gadget()}, "state_dict": sd}, other)
    for name in fake:
        monkeypatch.delitem(sys.modules, name)  # as on a machine without those packages

    rc, _, err = run_cli(["convert", str(mm), "--config", "quickstart", *OVERRIDES, "-o", str(tmp_path / "a")], capsys)
    assert rc == 0, err
    assert "inert" in err and "HistoryBuffer" in err and ran == []
    from cpnet.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "a")["classes"] == list(NAMES)

    rc, _, err = run_cli(["convert", str(other), "--config", "quickstart", *OVERRIDES, "-o", str(tmp_path / "b")],
                         capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert "somepkg.gadgets.Gadget" in lines[0] and "weights_only" in lines[0] and "strip it" in lines[0]
    assert not (tmp_path / "b" / "best.pt").exists()


def test_missing_unexpected_and_misshaped_keys_are_one_message(tmp_path, capsys):
    sd = authors_state_dict()
    del sd["decode_head.aggregation.t2.conv.bias"]
    sd["decode_head.extra.weight"] = torch.zeros(3)
    sd["decode_head.conv_seg.weight"] = torch.zeros(7, C, 1, 1)
    src = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, src)
    rc, _, err = run_cli(["convert", str(src), "--config", "quickstart", *OVERRIDES, "-o", str(tmp_path / "r")], capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert rc == 2 and len(lines) == 1, err
    line = lines[0]
    assert "1 missing (decode_head.aggregation.path1_b.bias)" in line
    assert "1 unexpected (decode_head.extra.weight)" in line
    assert "decode_head.conv_seg.weight (7, 16, 1, 1) vs (5, 16, 1, 1)" in line
    assert not (tmp_path / "r" / "best.pt").exists()


@pytest.mark.parametrize("override,needle", [("model.depth=18", "ResNet-18/34"), ("model.head=fcn", "model.head")])
def test_models_that_would_not_compute_the_same_function_are_refused(tmp_path, capsys, override, needle):
    src = tmp_path / "x.pth"
    torch.save({"state_dict": authors_state_dict()}, src)
    rc, _, err = run_cli(["convert", str(src), "--config", "quickstart", *OVERRIDES, override, "-o", str(tmp_path / "r")],
                         capsys)
    assert rc == 2 and needle in err


def test_mmseg_ade20k_bed_with_a_trailing_space_is_the_same_class():
    """mmseg's ade.py names class 7 'bed ' (trailing space): readable after convert, equal in comparisons."""
    from cpnet.convert import classes_from_meta
    from cpnet.data.ade20k import ADE20K_CLASSES
    from cpnet.runtime.manifest import class_names_differ

    mmseg_names = [("bed " if c == "bed" else c) for c in ADE20K_CLASSES]
    assert mmseg_names[7] == "bed "
    classes, _ = classes_from_meta({"dataset_meta": {"classes": mmseg_names}}, len(ADE20K_CLASSES))
    assert classes[7] == "bed" and classes == list(ADE20K_CLASSES)
    assert class_names_differ(mmseg_names, ADE20K_CLASSES) is None
    assert class_names_differ(["Wall", "chest  of drawers"], ["wall", "chest of drawers"]) is None
    assert class_names_differ(["wall", "sky"], ["wall", "road"]) == "class 1 is 'sky' against 'road'"
