"""Deploy rewrites, ONNX export + parity, the ONNX Runtime loader, and pre/post-processing."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from cpnet.runtime.options import RuntimeOptions
import pytest
import torch

from conftest import build_tiny_model, randomize_bn
from cpnet import deploy as deploy_mod
from cpnet.deploy import (ALL_REWRITES, DeployContextPriorHead, DeployCPNet, fold_aggregation_bn,
                          fold_conv_bn_pairs, fold_inverse_n, fold_inverse_n_into_prior, use_inter_from_sum)
from cpnet.runtime import UserError, manifest_path, read_manifest, sha256_file
from cpnet.models.heads import AggregationModule, ContextPriorHead
from engines.backends.onnxruntime_backend import OnnxModel
from cpnet.runtime.preprocess import colorize, postprocess, preprocess, preprocess_bgr

torch.set_num_threads(1)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# ---------------------------------------------------------------- each rewrite is exact


def randomize_agg_biases(module: torch.nn.Module, seed: int = 7) -> None:
    """Non-zero biases in every aggregation depthwise conv (they start at 0, as mmcv's), so folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, AggregationModule):
                for conv in (m.path1_a, m.path1_b, m.path2_a, m.path2_b):
                    if conv.bias is not None:
                        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))


@pytest.mark.parametrize("bias", [True, False])
def test_fold_aggregation_bn_is_exact(bias):
    torch.manual_seed(0)
    agg = AggregationModule(12, 8, k=5, bias=bias)
    assert all((c.bias is not None) == bias for c in (agg.path1_a, agg.path1_b, agg.path2_a, agg.path2_b))
    randomize_bn(agg, 3)
    randomize_agg_biases(agg)
    agg.eval()
    x = torch.randn(2, 12, 9, 9)
    with torch.no_grad():
        ref = agg(x)
        fold_aggregation_bn(agg)
        out = agg(x)
    assert isinstance(agg.norm, torch.nn.Identity)
    assert agg.path1_b.bias is not None
    assert rel_diff(out, ref) <= 1e-5


def test_aggregation_biases_are_not_absorbed_by_the_bn():
    # With zero padding, path1_a's bias meets a truncated kernel near the borders: the models with and
    # without biases differ by more than a per-channel constant, so the biases matter (the point).
    torch.manual_seed(0)
    agg = AggregationModule(4, 4, k=5).eval()
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        y0 = agg.path1_b(agg.path1_a(agg.reduce(x)))
        agg.path1_a.bias.fill_(1.0)
        y1 = agg.path1_b(agg.path1_a(agg.reduce(x)))
    d = y1 - y0
    assert float(d.amax(dim=(2, 3)).sub(d.amin(dim=(2, 3))).abs().max()) > 1e-3


def test_fold_conv_bn_pairs_is_exact():
    model, _ = build_tiny_model("cpnet")
    randomize_agg_biases(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        n = fold_conv_bn_pairs(model)
        out = model(x)
    assert n > 20
    # only the aggregation module's BN (after a sum) is left for fold_aggregation_bn
    left = [name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all("aggregation.norm" in name for name in left) and left
    assert rel_diff(out, ref) <= 1e-5


def _head(prior: int, seed: int = 0) -> ContextPriorHead:
    torch.manual_seed(seed)
    head = ContextPriorHead(12, 8, num_classes=5, prior_size=prior, k=3)
    randomize_bn(head, seed + 1)
    randomize_agg_biases(head, seed + 2)
    return head.eval()


@pytest.mark.parametrize("prior", [3, 5])  # N = 9, 25: not powers of two, so 1/N is not exact in binary
def test_transpose_free_head_fold_inverse_n_and_inter_from_sum_are_exact(prior):
    head = _head(prior)
    x = torch.randn(2, 12, prior, prior)
    with torch.no_grad():
        ref = head(x)[0]
        dh = DeployContextPriorHead(head)
        base = dh(x)
        assert rel_diff(base, ref) <= 1e-5  # the transpose-free form alone
        w_intra = dh.intra_conv.conv.weight.clone()
        fold_inverse_n(dh)
        assert dh.context_scale == 1.0
        assert torch.allclose(dh.intra_conv.conv.weight, w_intra / prior ** 2)
        folded = dh(x)
        assert rel_diff(folded, ref) <= 1e-5
        use_inter_from_sum(dh)
        both = dh(x)
        assert rel_diff(both, ref) <= 1e-5
        # inter_from_sum on its own (1/N not folded): colsum(V) / N - P V / N
        dh2 = use_inter_from_sum(DeployContextPriorHead(_head(prior)))
        assert rel_diff(dh2(x), ref) <= 1e-5
        # the FP16-safe placement: (P / N) V, alone and with inter = mean(V) - (P / N) V
        dh3 = fold_inverse_n_into_prior(DeployContextPriorHead(_head(prior)))
        assert dh3.context_scale == 1.0 and dh3.prior_scale == pytest.approx(1 / prior ** 2)
        assert rel_diff(dh3(x), ref) <= 1e-5
        assert rel_diff(use_inter_from_sum(dh3)(x), ref) <= 1e-5


def test_inter_from_sum_algebra():
    # (1 - P) V / N == colsum(V) / N - P V / N, on the layouts the head uses
    g = torch.Generator().manual_seed(0)
    n, c = 25, 7
    p = torch.rand(2, n, n, generator=g)
    v = torch.randn(2, n, c, generator=g)
    direct = torch.bmm(1 - p, v) / n
    via_sum = v.sum(1, keepdim=True) / n - torch.bmm(p, v) / n
    assert torch.allclose(direct, via_sum, atol=1e-6)


@pytest.mark.parametrize("head", ["cpnet", "agg", "fcn"])
def test_deploy_model_matches_eval_model(head):
    model, cfg = build_tiny_model(head)
    randomize_agg_biases(model)
    deploy = DeployCPNet(model)
    size = 32 if head == "cpnet" else 40
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        out = deploy(x)
    assert out.shape == ref.shape == (2, cfg.model.num_classes, size, size)
    assert rel_diff(out, ref) <= 1e-5
    assert not any("aux" in name for name, _ in deploy.named_modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.modules())
    expected = {"cpnet": (set(ALL_REWRITES) - {"inverse_n"}) | {"inverse_n_prior", "transpose_free"},
                "agg": {"aggregation_bn", "conv_bn"},
                "fcn": {"conv_bn"}}[head]
    assert set(deploy.rewrites) == expected
    # the original model is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and model.aux_head is not None
    if head == "cpnet":
        prior_variant = DeployCPNet(model, inverse_n="prior")
        assert "inverse_n_prior" in prior_variant.rewrites and "inverse_n" not in prior_variant.rewrites
        with torch.no_grad():
            assert rel_diff(prior_variant(x), ref) <= 1e-5


# ---------------------------------------------------------------- export


def test_exported_manifest_holds_every_field_and_the_lineage(tiny_onnx, tiny_checkpoint):
    m = read_manifest(tiny_onnx)
    for key in ("kind", "model", "config", "classes", "palette", "input_size", "mean", "std", "channel_order",
                "input", "output", "precision", "opset", "parent", "sha256", "export", "versions", "schema"):
        assert key in m, key
    assert m["kind"] == "onnx" and m["precision"] == "fp32" and m["opset"] == 17
    assert m["input"] == {"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert m["output"]["name"] == "logits" and m["output"]["shape"] == [1, 8, 32, 32]
    assert m["parent"] == {"path": str(tiny_checkpoint), "sha256": sha256_file(tiny_checkpoint)}
    assert m["sha256"] == sha256_file(tiny_onnx)
    par = m["export"]["parity"]
    assert par["source"].startswith("val split of") and par["images"] == 4
    assert par["max_abs"] <= 1e-3 and par["agreement"] >= 0.999
    assert "inter_from_sum" in m["export"]["rewrites"] and "dynamo=False" in m["export"]["exporter"]
    assert not list(tiny_onnx.parent.glob(".*"))  # no temporary files left

    import onnx

    graph = onnx.load(str(tiny_onnx))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("MatMul") == 1 and "BatchNormalization" not in ops and "Div" not in ops
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)

    from cpnet.checkpoint import config_of, load_checkpoint
    from cpnet.models import CPNet

    ckpt = load_checkpoint(tiny_checkpoint)
    model = CPNet(config_of(ckpt).model)
    model.load_state_dict(ckpt["model"])
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with OnnxModel(tiny_onnx, threads=1) as om, torch.no_grad():
        assert om.input_size == (32, 32) and om.num_classes == 8 and om.precision == "fp32"
        out = om.infer(x)  # batch 3 through a batch-1 model: looped
        ref = model(x).numpy()
        assert out.shape == ref.shape and out.dtype == np.float32
        assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
        t = om(x[:1])  # an InferFn: returns torch
        assert isinstance(t, torch.Tensor)

        from cpnet.inference import predict_probs
        p = predict_probs(torch.randn(1, 3, 45, 60), om, 32, 8)
        assert p.shape == (1, 8, 45, 60)


def test_export_cli_default_path_and_parity_failure(tmp_path, make_tiny_checkpoint, monkeypatch, capsys):
    from cpnet import export

    run = tmp_path / "run"
    make_tiny_checkpoint(run, seed=5)

    def broken_fold(head):  # "forgets" to scale the convs: the graph is N times off in the context path
        head.context_scale = 1.0
        return head

    monkeypatch.setattr(deploy_mod, "fold_inverse_n", broken_fold)
    rc = export.main([str(run), "--threads", "1", "--num-parity-images", "2", "--inverse-n", "conv"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and "parity check failed" in err
    assert not (run / "export" / "model.onnx").exists()
    assert not [p for p in (run / "export").iterdir()]  # nothing half-written left behind

    monkeypatch.undo()
    rc = export.main([str(run), "--threads", "1", "--num-parity-images", "2", "--no-simplify"])
    assert rc == 0
    m = read_manifest(run / "export" / "model.onnx")
    assert m["export"]["simplified"] is False and m["export"]["parity"]["images"] == 2


def test_export_refuses_other_input_size_and_missing_data(tmp_path, make_tiny_checkpoint, capsys):
    from cpnet import export

    ckpt = make_tiny_checkpoint(tmp_path / "run")
    rc = export.main([str(ckpt), "--input-size", "48", "48", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "32 32" in err

    rc = export.main([str(ckpt), "--data-root", str(tmp_path / "nowhere"), "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--data-root" in err and "--parity random" in err

    path, m = export.export_checkpoint(ckpt, None, data_root=str(tmp_path / "nowhere"), parity="random",
                                       num_parity_images=2, runtime=RuntimeOptions(threads=1))
    assert path == ckpt.with_name("best.onnx")  # beside a checkpoint file, named after it
    assert m["export"]["parity"]["source"] == "random"


def test_export_fcn_head_at_another_input_size(tmp_path, make_tiny_checkpoint):
    from cpnet.export import export_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "run", head="fcn")
    path, m = export_checkpoint(ckpt, tmp_path / "fcn.onnx", input_size=(40, 48), num_parity_images=2,
                                runtime=RuntimeOptions(threads=1))
    assert m["input"]["shape"] == [1, 3, 40, 48] and m["input_size"] == [40, 48]
    with OnnxModel(path, threads=1) as om:
        assert om.infer(np.zeros((1, 3, 40, 48), np.float32)).shape == (1, 8, 40, 48)


# ---------------------------------------------------------------- the ONNX Runtime loader refuses bad files


def _copy_with_manifest(src, dst):
    shutil.copy(src, dst)
    shutil.copy(manifest_path(src), manifest_path(dst))
    return dst


def _one_line_error(path, **kw) -> str:
    with pytest.raises(UserError) as e:
        OnnxModel(path, threads=1, **kw)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_onnx_model_refuses_truncated_corrupt_and_manifestless_files(tiny_onnx, tmp_path):
    data = tiny_onnx.read_bytes()
    truncated = _copy_with_manifest(tiny_onnx, tmp_path / "truncated.onnx")
    truncated.write_bytes(data[: len(data) // 2])
    msg = _one_line_error(truncated)
    assert "sha256 differs" in msg and "re-create it" in msg
    # without the manifest's checksum the truncated file still fails to load
    assert "not a valid ONNX model" in _one_line_error(truncated, verify=False)

    garbage = _copy_with_manifest(tiny_onnx, tmp_path / "garbage.onnx")
    garbage.write_bytes(b"this is not a protobuf" * 10)
    # the checksum is checked before the file is parsed: nothing unverified reaches the ONNX parser
    assert "sha256 differs" in _one_line_error(garbage)
    assert "not a valid ONNX model" in _one_line_error(garbage, verify=False)

    flipped = _copy_with_manifest(tiny_onnx, tmp_path / "flipped.onnx")
    flipped.write_bytes(data[:-200] + bytes(b ^ 0xFF for b in data[-200:-100]) + data[-100:])
    assert "sha256 differs" in _one_line_error(flipped)

    lonely = tmp_path / "lonely.onnx"
    shutil.copy(tiny_onnx, lonely)
    assert "cpnet export" in _one_line_error(lonely)
    assert "not found" in _one_line_error(tmp_path / "absent.onnx")


# ---------------------------------------------------------------- pre/post-processing


def test_preprocess_resizes_and_normalises_and_postprocess_resizes_logits_back(tiny_onnx):
    manifest = read_manifest(tiny_onnx)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)
    x = preprocess(image, manifest)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    resized = cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = (resized[:, :, 0] - manifest["mean"][0]) / manifest["std"][0]
    assert np.allclose(x[0, 0], expected, atol=1e-5)
    assert np.array_equal(preprocess_bgr(image[:, :, ::-1].copy(), manifest), x)

    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[0, 2, :, 2:] = 5.0  # right half is class 2
    labels = postprocess(logits, (8, 16))
    assert labels.shape == (8, 16) and labels.dtype == np.uint8
    assert (labels[:, :6] == 0).all() and (labels[:, 6:] == 2).all()  # bilinear moves the edge to x = 6
    assert np.array_equal(postprocess(torch.from_numpy(logits), (8, 16)), labels)
    assert colorize(labels, manifest["palette"]).shape == (8, 16, 3)
    json.dumps(manifest)  # plain JSON all the way down


def test_simplify_falls_back_when_onnxslim_fails_or_changes_outputs(tiny_onnx, monkeypatch, caplog):
    import onnx
    import onnxslim
    from onnx import numpy_helper

    from cpnet.export import _simplify

    raw = onnx.load(str(tiny_onnx))
    real_slim = onnxslim.slim

    def boom(model):
        raise RuntimeError("unsupported pattern")

    monkeypatch.setattr(onnxslim, "slim", boom)
    model, simplified, note = _simplify(raw, (32, 32), threads=1)
    assert model is raw and simplified is False and "onnxslim failed (unsupported pattern)" in note
    assert "onnxslim failed" in caplog.text  # the user is told, as a warning

    def wrong(model):
        out = real_slim(model)
        del out.graph.node[-1:]  # drop the final Resize ...
        out.graph.node[-1].output[0] = "logits"  # ... and upsample nothing: same name, wrong values
        init = next(t for t in out.graph.initializer if t.name.endswith("classifier.bias"))
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
        return out

    monkeypatch.setattr(onnxslim, "slim", wrong)
    model, simplified, note = _simplify(raw, (32, 32), threads=1)
    assert model is raw and simplified is False and "kept the unsimplified graph" in note


# ---------------------------------------------------------------- --with-prior


def test_deploy_model_with_prior_returns_the_heads_prior():
    model, _ = build_tiny_model("cpnet")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        _, _, p_ref = model.forward_head(model.forward_features(x)[1])
        for inverse_n in ("prior", "conv"):
            logits, prior = DeployCPNet(model, inverse_n=inverse_n, with_prior=True)(x)
            assert rel_diff(logits, ref) <= 1e-5
            assert prior.shape == (2, 16, 16) and float((prior - p_ref).abs().max()) <= 1e-5
        assert isinstance(DeployCPNet(model)(x), torch.Tensor)  # without it: the logits alone
    fcn, _ = build_tiny_model("fcn")
    with pytest.raises(ValueError, match="no context prior"):
        DeployCPNet(fcn, with_prior=True)


def test_export_with_prior_adds_a_prior_output_at_parity_and_keeps_the_logits_first(tiny_prior_onnx, tiny_onnx, tiny_checkpoint):
    m = read_manifest(tiny_prior_onnx)
    assert m["output"]["name"] == "logits"  # the logits stay the first output, as every stage expects
    assert m["prior"]["output"] == "prior" and m["prior"]["shape"] == [1, 16, 16] and m["prior"]["grid"] == [4, 4]
    par = m["export"]["parity"]
    assert par["max_abs"] <= 1e-3 and par["agreement"] >= 0.999 and par["prior_max_abs"] <= 1e-3

    from cpnet.checkpoint import load_model

    model, _, _ = load_model(tiny_checkpoint)
    x = torch.randn(1, 3, 32, 32)
    with OnnxModel(tiny_prior_onnx, threads=1) as om, OnnxModel(tiny_onnx, threads=1) as plain, torch.no_grad():
        assert om.output_names == ["logits", "prior"] and plain.output_names == ["logits"]
        out = om.infer_all(x.numpy())
        assert set(out) == {"logits", "prior"}
        # parity on the logits, with the model and with the file exported without the prior
        ref = model(x).numpy()
        assert np.abs(out["logits"] - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
        assert np.abs(om.infer(x) - plain.infer(x)).max() <= 1e-5 * max(1.0, np.abs(ref).max())
        # P: (1, N, N), N = the prior grid's h*w; row i holds pixel i's sigmoid prior probabilities
        prior_logits = model.forward_head(model.forward_features(x)[1])[1]
        p = out["prior"]
        assert p.shape == (1, 16, 16) and p.dtype == np.float32
        assert np.abs(p - torch.sigmoid(prior_logits).numpy()).max() <= 1e-5
        assert (p > 0).all() and (p < 1).all()
        assert plain.infer_all(x.numpy()).keys() == {"logits"}


def test_export_with_prior_cli_and_refusal(tmp_path, make_tiny_checkpoint, capsys):
    from cpnet import export

    run = make_tiny_checkpoint(tmp_path / "run")
    out = tmp_path / "p.onnx"
    assert export.main([str(run), "-o", str(out), "--with-prior", "--threads", "1", "--parity", "random",
                        "--num-parity-images", "1"]) == 0
    assert read_manifest(out)["prior"]["grid"] == [4, 4]
    fcn = make_tiny_checkpoint(tmp_path / "fcn", head="fcn")
    capsys.readouterr()
    assert export.main([str(fcn), "-o", str(tmp_path / "f.onnx"), "--with-prior", "--parity", "random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no context prior" in err[0]
    assert not (tmp_path / "f.onnx").exists()
