"""Loss tests: ideal affinity, the chunked Affinity Loss against a loop over the formulas and the
naive reference, its gradient (gradcheck), edge cases, OHEM, and the CPNet total loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpnet.config import Config, LossConfig
from cpnet.losses import (AffinityLoss, CPNetLoss, CrossEntropy, OhemCrossEntropy, affinity_loss,
                          affinity_loss_reference, build_loss, downsample_labels, ideal_affinity, ohem_keep_mask)

torch.set_num_threads(1)
IGN = 255
# float(loss) on a loss that requires grad is fine here
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")


# ----------------------------------------------------------------------------- helpers


def rand_labels(B: int, h: int, w: int, classes: int = 3, p_ignore: float = 0.2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (B, h, w), generator=g)
    y[torch.rand(B, h, w, generator=g) < p_ignore] = IGN
    y[:, 0, 0] = classes + 1 if classes + 1 != IGN else 0   # a pixel alone in its class: clamped terms
    return y


def rand_logits(B: int, N: int, dtype=torch.float32, seed: int = 0, transposed: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(B, N, N, generator=g, dtype=torch.float64) * 2.0
    if transposed:  # the model's layout: flatten(2).transpose(1, 2) of a (B, N, h, w) tensor
        z = z.transpose(1, 2).contiguous().transpose(1, 2)
    return z.to(dtype)


def loop_loss(z: np.ndarray, y: np.ndarray, mode: str) -> float:
    """The formulas, one entry at a time, in float64."""
    B, N, _ = z.shape
    unary, n_pairs, glob, n_rows = 0.0, 0, 0.0, 0

    def clog(t):  # log with BCE's clamp at -100
        return max(math.log(t), -100.0) if t > 0 else -100.0

    for b in range(B):
        ok = [mode == "class" or y[b, j] != IGN for j in range(N)]
        for i in range(N):
            if not ok[i]:
                continue
            n_rows += 1
            s_p = s_pa = s_a = s_pn = s_n = 0.0
            for j in range(N):
                if not ok[j]:
                    continue
                p = 1.0 / (1.0 + math.exp(-z[b, i, j]))
                a = 1.0 if y[b, i] == y[b, j] else 0.0
                ad = a if i != j else 0.0
                unary += -(a * clog(p) + (1 - a) * clog(1 - p))
                n_pairs += 1
                s_p += p
                s_pa += p * ad
                s_a += ad
                s_pn += (1 - p) * (1 - a)
                s_n += 1 - a
            prec = s_pa / (s_p if s_p > 0 else 1.0)
            rec = s_pa / (s_a if s_a > 0 else 1.0)
            spec = s_pn / (s_n if s_n > 0 else 1.0)
            glob += -clog(prec) - clog(rec) - clog(spec)
    if n_rows == 0:
        return 0.0
    return unary / n_pairs + glob / n_rows


# ----------------------------------------------------------------------------- labels and ideal affinity


def test_downsample_labels_nearest_takes_top_left_of_each_cell():
    y = torch.randint(0, 5, (2, 32, 24))
    small = downsample_labels(y, (4, 3))
    assert small.dtype == torch.long and small.shape == (2, 4, 3)
    assert torch.equal(small, y[:, ::8, ::8])
    assert torch.equal(downsample_labels(y, (32, 24)), y)
    y[0, 0, 0] = IGN
    assert downsample_labels(y, 4)[0, 0, 0] == IGN


@pytest.mark.parametrize("mode", ["class", "mask"])
def test_ideal_affinity_matches_brute_force(mode):
    y = rand_labels(2, 3, 4, classes=3, seed=3)
    a, valid = ideal_affinity(y, num_classes=5, ignore_mode=mode, return_valid=True)
    yf = y.reshape(2, -1).tolist()
    assert a.dtype == torch.bool and a.shape == (2, 12, 12)
    for b in range(2):
        for i in range(12):
            assert bool(valid[b, i]) == (mode == "class" or yf[b][i] != IGN)
            for j in range(12):
                same = yf[b][i] == yf[b][j]
                if mode == "mask":
                    same = same and yf[b][i] != IGN and yf[b][j] != IGN
                assert bool(a[b, i, j]) == same, (b, i, j)
    assert torch.equal(ideal_affinity(y, 5, ignore_mode=mode), a)


def test_ideal_affinity_class_mode_equals_authors_one_hot_product():
    y = rand_labels(2, 4, 4, classes=3, seed=5)
    ym = torch.where(y == IGN, torch.full_like(y, 5), y).reshape(2, -1)
    oh = F.one_hot(ym, 6).float()
    assert torch.equal(ideal_affinity(y, 5), torch.bmm(oh, oh.transpose(1, 2)).bool())


def test_ideal_affinity_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="outside"):
        ideal_affinity(torch.tensor([[[0, 7]]]), num_classes=3)


# ----------------------------------------------------------------------------- chunked affinity loss: value


@pytest.mark.parametrize("mode", ["class", "mask"])
@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("transposed", [False, True])
def test_chunked_loss_matches_loop(mode, B, transposed):
    h, w = 4, 5
    N = h * w
    y = rand_labels(B, h, w, seed=B)
    z = rand_logits(B, N, seed=B, transposed=transposed)
    want = loop_loss(z.double().numpy(), y.reshape(B, -1).numpy(), mode)
    for chunk in (1, 7, N, None):  # 7 does not divide N = 20
        got = affinity_loss(z, y, ignore_mode=mode, chunk_rows=chunk)
        assert got.dtype == torch.float32 and got.dim() == 0
        assert abs(float(got) - want) <= 1e-5 * max(1.0, abs(want)), (chunk, float(got), want)
        got64 = affinity_loss(z.double(), y, ignore_mode=mode, chunk_rows=chunk)
        assert abs(float(got64) - want) <= 1e-10 * max(1.0, abs(want))
    ref = affinity_loss_reference(z.double(), y, num_classes=5, ignore_mode=mode)
    assert abs(float(ref) - want) <= 1e-10 * max(1.0, abs(want))


def test_singleton_pixel_costs_the_clamp():
    # one pixel alone in its class: precision = recall = 0 -> 100 each, as BCE(0, 1) in the authors' code
    y = torch.tensor([[0, 0, 1, 1, 2, 1, 0, 0, 1]])
    z = rand_logits(1, 9, torch.float64)
    full = float(affinity_loss(z, y))
    assert abs(full - loop_loss(z.numpy(), y.numpy(), "class")) < 1e-10
    assert full > 200.0 / 9


@pytest.mark.parametrize("mode", ["class", "mask"])
def test_mask_vs_class_ignore(mode):
    y = rand_labels(2, 4, 4, seed=7)
    z = rand_logits(2, 16, torch.float64, seed=7).requires_grad_()
    loss = affinity_loss(z, y, ignore_mode=mode)
    (g,) = torch.autograd.grad(loss, z)
    ign = (y.reshape(2, -1) == IGN)
    if mode == "mask":
        # ignored rows and columns get no gradient, and changing their logits changes nothing
        assert torch.all(g[ign] == 0) and torch.all(g.transpose(1, 2)[ign] == 0)
        z2 = z.detach().clone()
        z2[ign] = 50.0
        z2.transpose(1, 2)[ign] = -50.0
        assert abs(float(affinity_loss(z2, y, ignore_mode=mode)) - float(loss.detach())) < 1e-12
    else:
        assert torch.all(g[ign] != 0)


def test_module_downsamples_full_resolution_labels():
    s = 4
    y_full = rand_labels(2, 8 * s, 8 * s, seed=11)
    z = rand_logits(2, s * s, seed=11)
    for mode in ("class", "mask"):
        crit = AffinityLoss(num_classes=5, ignore_mode=mode, chunk_rows=3)
        want = affinity_loss(z, downsample_labels(y_full, s), ignore_mode=mode)
        assert torch.allclose(crit(z, y_full), want)
    # a non-square prior grid, given explicitly
    y_full = rand_labels(1, 24, 32, seed=12)
    z = rand_logits(1, 12, seed=12)
    want = affinity_loss(z, downsample_labels(y_full, (3, 4)))
    assert torch.allclose(AffinityLoss(5)(z, y_full, prior_size=(3, 4)), want)
    assert torch.allclose(AffinityLoss(5, prior_size=(3, 4))(z, y_full), want)
    with pytest.raises(ValueError, match="square"):
        AffinityLoss(5)(z, y_full)


@pytest.mark.parametrize("mode", ["class", "mask"])
def test_rectangular_grid_equals_the_loop_formula(mode):
    """A 3x5 prior grid (N = 15) from a model's own output: the loss on full-resolution 24x40 labels equals
    the loop over the formulas with the labels taken by hand at the top-left pixel of each 8x8 cell, in
    row-major order (so h and w are not swapped anywhere between the head, the labels and the loss)."""
    from cpnet.config import load_config
    from cpnet.losses import build_loss
    from cpnet.models.cpnet import CPNet

    cfg = load_config("quickstart", ["model.prior_size=[3, 5]", "model.base_width=16", "model.head_channels=16",
                                     "model.aux_channels=8", "model.agg_kernel=3", f"loss.affinity_ignore={mode}"])
    torch.manual_seed(0)
    out = CPNet(cfg.model).train()(torch.randn(2, 3, 24, 40))
    z = out["prior_logits"].detach().double()
    assert z.shape == (2, 15, 15)
    y_full = rand_labels(2, 24, 40, seed=21)
    cells = y_full[:, ::8, ::8]  # (2, 3, 5)
    want = loop_loss(z.numpy(), cells.reshape(2, -1).numpy(), mode)
    got = float(build_loss(cfg).affinity(z, y_full))
    assert abs(got - want) < 1e-9 * max(1.0, abs(want))
    # the transposed grid (5x3) reads other cells: a swap of h and w would not go unnoticed
    other = loop_loss(z.numpy(), y_full[:, ::8, ::8].transpose(1, 2).reshape(2, -1).numpy(), mode)
    assert abs(other - want) > 1e-6


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("mode", ["class", "mask"])
@pytest.mark.parametrize("N,transposed", [(9, False), (16, True)])
def test_affinity_loss_gradient_passes_gradcheck(mode, N, transposed):
    s = int(math.isqrt(N))
    y = rand_labels(2, s, s, classes=2, seed=N)
    z = rand_logits(2, N, torch.float64, seed=N, transposed=transposed).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: affinity_loss(t, y, ignore_mode=mode, chunk_rows=2), (z,),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)
    y1 = y[:1]
    z1 = z[:1].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: affinity_loss(t, y1, ignore_mode=mode), (z1,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["class", "mask"])
@pytest.mark.parametrize("B", [1, 2])
def test_chunked_affinity_gradient_matches_the_reference_in_float64_and_float32(mode, B):
    y = rand_labels(B, 5, 5, classes=4, seed=20 + B)
    z = rand_logits(B, 25, torch.float64, seed=20 + B, transposed=True).requires_grad_()
    (g_ref,) = torch.autograd.grad(affinity_loss_reference(z, y, 6, ignore_mode=mode), z)
    for chunk in (1, 4, None):
        loss = affinity_loss(z, y, ignore_mode=mode, chunk_rows=chunk)
        (g,) = torch.autograd.grad(loss, z)
        assert g.stride() == z.stride()
        assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-12)
    # float32 against the float64 reference
    z32 = z.detach().float().requires_grad_()
    (g32,) = torch.autograd.grad(affinity_loss(z32, y, ignore_mode=mode), z32)
    assert torch.allclose(g32.double(), g_ref, rtol=1e-4, atol=1e-7)


def test_affinity_loss_gradient_scales_with_the_upstream_gradient():
    y = rand_labels(2, 3, 3, seed=4)
    z = rand_logits(2, 9, torch.float64, seed=4).requires_grad_()
    (g1,) = torch.autograd.grad(affinity_loss(z, y), z)
    (g3,) = torch.autograd.grad(3.0 * affinity_loss(z, y), z)
    assert torch.allclose(g3, 3 * g1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_give_a_float32_loss_close_to_the_float_one(dtype):
    y = rand_labels(2, 4, 4, seed=9)
    z = rand_logits(2, 16, torch.float32, seed=9)
    zh = z.to(dtype).requires_grad_()
    loss = affinity_loss(zh, y, chunk_rows=5)
    assert loss.dtype == torch.float32
    (g,) = torch.autograd.grad(loss, zh)
    assert g.dtype == dtype
    zf = zh.detach().float().requires_grad_()
    loss_f = affinity_loss(zf, y)
    (gf,) = torch.autograd.grad(loss_f, zf)
    assert abs(float(loss) - float(loss_f)) < 1e-5 * float(loss_f)
    assert torch.allclose(g.float(), gf, rtol=2e-2, atol=1e-4)


def test_saves_no_n_by_n_tensor_but_the_logits():
    y = rand_labels(2, 6, 6, seed=1)
    z = rand_logits(2, 36, transposed=True).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = affinity_loss(z, y, chunk_rows=5)
    big = [t for t in saved if t.numel() >= 36 * 36]
    assert len(big) == 1 and big[0].data_ptr() == z.data_ptr()
    assert all(t.numel() <= 2 * 36 for t in saved if t is not big[0])
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("mode", ["class", "mask"])
def test_prior_given_saves_p_instead_of_the_logits_same_loss_and_gradient(mode):
    y = rand_labels(2, 6, 6, seed=3)
    z = rand_logits(2, 36, torch.float64, seed=3, transposed=True).requires_grad_()
    p = torch.sigmoid(z)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss_p = affinity_loss(z, y, ignore_mode=mode, chunk_rows=5, prior=p)
    big = [t for t in saved if t.numel() >= 36 * 36]
    assert len(big) == 1 and big[0].data_ptr() == p.data_ptr()  # P, not z: z may be freed after forward
    (g_p,) = torch.autograd.grad(loss_p, z, retain_graph=True)
    loss = affinity_loss(z, y, ignore_mode=mode, chunk_rows=5)
    (g,) = torch.autograd.grad(loss, z)
    assert float(loss_p) == float(loss)
    assert g_p.stride() == z.stride()
    assert torch.allclose(g_p, g, rtol=1e-9, atol=1e-12)
    # a P of another layout is not used (the logits are saved as before)
    loss_c = affinity_loss(z, y, ignore_mode=mode, prior=p.contiguous())
    (g_c,) = torch.autograd.grad(loss_c, z)
    assert torch.allclose(g_c, g, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("mode", ["class", "mask"])
@pytest.mark.parametrize("fill", [3, IGN])
def test_one_class_and_all_ignore_maps_are_finite(mode, fill):
    y = torch.full((1, 4, 4), fill)
    z = rand_logits(1, 16, seed=2).requires_grad_()
    loss = affinity_loss(z, y, ignore_mode=mode)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    if mode == "mask" and fill == IGN:
        assert float(loss) == 0.0 and torch.all(z.grad == 0)
    else:
        want = loop_loss(z.detach().double().numpy(), y.reshape(1, -1).numpy(), mode)
        assert abs(float(loss) - want) <= 1e-5 * want
        ref = affinity_loss_reference(z.detach(), y, 5, ignore_mode=mode)
        assert torch.isfinite(ref)
    # one image fully ignored next to a normal one (batch 2)
    y2 = torch.cat([y, rand_labels(1, 4, 4, seed=3)])
    z2 = rand_logits(2, 16, torch.float64, seed=3).requires_grad_()
    loss2 = affinity_loss(z2, y2, ignore_mode=mode)
    assert abs(float(loss2) - loop_loss(z2.detach().numpy(), y2.reshape(2, -1).numpy(), mode)) < 1e-10
    (g2,) = torch.autograd.grad(loss2, z2)
    (gr,) = torch.autograd.grad(affinity_loss_reference(z2, y2, 5, ignore_mode=mode), z2)
    assert torch.allclose(g2, gr, rtol=1e-9, atol=1e-12)


def test_extreme_logits_are_finite():
    y = rand_labels(2, 4, 4, seed=6)
    z = (rand_logits(2, 16, seed=6) * 100).requires_grad_()   # |z| up to several hundred
    loss = affinity_loss(z, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_affinity_loss_refuses_a_pixel_mismatch_and_an_unknown_ignore_mode():
    with pytest.raises(ValueError, match="pixels"):
        affinity_loss(torch.zeros(1, 9, 9), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_mode"):
        AffinityLoss(5, ignore_mode="drop")


# ----------------------------------------------------------------------------- cross-entropy and OHEM


def seg_data(B=2, C=4, H=6, W=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, H, W, generator=g) * 2
    labels = torch.randint(0, C, (B, H, W), generator=g)
    labels[torch.rand(B, H, W, generator=g) < 0.2] = IGN
    return logits, labels


def test_cross_entropy_mean_over_valid_and_all_ignore():
    logits, labels = seg_data()
    assert torch.allclose(CrossEntropy()(logits, labels), F.cross_entropy(logits, labels, ignore_index=IGN))
    x = logits.clone().requires_grad_()
    loss = CrossEntropy()(x, torch.full_like(labels, IGN))
    loss.backward()
    assert float(loss) == 0.0 and torch.all(x.grad == 0)


def test_ohem_thresh_one_equals_plain_ce():
    logits, labels = seg_data(seed=1)
    plain = F.cross_entropy(logits, labels, ignore_index=IGN)
    assert torch.allclose(OhemCrossEntropy(thresh=1.0, min_kept=0)(logits, labels), plain)
    assert torch.allclose(OhemCrossEntropy(thresh=1.0, min_kept=10)(logits, labels), plain)
    # min_kept above the number of valid pixels keeps them all
    assert torch.allclose(OhemCrossEntropy(thresh=0.0, min_kept=10**6)(logits, labels), plain)


def test_ohem_keeps_at_least_min_kept_hardest():
    logits, labels = seg_data(seed=2)
    valid = labels != IGN
    p_true = F.softmax(logits, 1).gather(1, labels.clamp(max=3)[:, None])[:, 0]
    for min_kept in (1, 5, 20):
        keep = ohem_keep_mask(logits, labels, thresh=0.0, min_kept=min_kept)
        k = min(min_kept * 2, int(valid.sum()))       # min_kept counts per image (mmseg)
        assert int(keep.sum()) == k                    # thresh 0: exactly the k hardest (no ties)
        assert not bool((keep & ~valid).any())
        kept_max = p_true[keep].max()
        assert bool((p_true[valid & ~keep] > kept_max).all())
        target = torch.where(keep, labels, torch.full_like(labels, IGN))
        want = F.cross_entropy(logits, target, ignore_index=IGN)
        assert torch.allclose(OhemCrossEntropy(0.0, min_kept)(logits, labels), want)
    # a threshold above the k-th probability keeps every pixel below it
    keep = ohem_keep_mask(logits, labels, thresh=0.7, min_kept=1)
    assert torch.equal(keep, valid & (p_true <= 0.7))
    assert int(keep.sum()) >= 2


def test_ohem_all_ignore_is_zero():
    logits, labels = seg_data()
    x = logits.clone().requires_grad_()
    loss = OhemCrossEntropy()(x, torch.full_like(labels, IGN))
    loss.backward()
    assert float(loss) == 0.0 and torch.all(x.grad == 0)


# ----------------------------------------------------------------------------- CPNet loss


def model_outputs(B=2, C=5, s=4, size=32, aux=True, prior=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"out": torch.randn(B, C, size, size, generator=g, requires_grad=True)}
    if aux:
        out["aux"] = torch.randn(B, C, size, size, generator=g, requires_grad=True)
    if prior:
        z = torch.randn(B, s * s, s * s, generator=g).requires_grad_()
        out["prior_logits"] = z
        out["prior"] = torch.sigmoid(z)
    return out


@pytest.mark.parametrize("ohem", [False, True])
def test_cpnet_loss_total_is_weighted_sum(ohem):
    cfg = LossConfig(aux_weight=0.4, affinity_weight=0.7, ohem=ohem, ohem_thresh=0.7, ohem_min_kept=50)
    crit = CPNetLoss(cfg, num_classes=5)
    outputs = model_outputs()
    labels = rand_labels(2, 32, 32, classes=5, seed=4)
    labels[labels == 6] = 1
    total, terms = crit(outputs, labels)
    assert set(terms) == {"main", "aux", "affinity"}
    assert all(not t.requires_grad for t in terms.values())
    assert torch.allclose(total, terms["main"] + 0.4 * terms["aux"] + 0.7 * terms["affinity"])
    ce = OhemCrossEntropy(0.7, 50) if ohem else CrossEntropy()
    assert torch.allclose(terms["main"], ce(outputs["out"], labels))
    assert torch.allclose(terms["aux"], ce(outputs["aux"], labels))
    assert torch.allclose(terms["affinity"], AffinityLoss(5)(outputs["prior_logits"], labels))
    total.backward()
    assert all(outputs[k].grad is not None for k in ("out", "aux", "prior_logits"))


def test_cpnet_loss_optional_terms_and_upsampling():
    crit = CPNetLoss(LossConfig(), num_classes=5)
    labels = rand_labels(2, 32, 32, classes=5, seed=5)
    labels[labels == 6] = 2
    small = model_outputs(size=8, aux=False, prior=False)
    total, terms = crit(small, labels)
    assert set(terms) == {"main"}
    up = F.interpolate(small["out"], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(total, F.cross_entropy(up, labels, ignore_index=IGN))


def test_build_loss_from_config():
    cfg = Config()
    cfg.model.num_classes, cfg.model.prior_size = 7, 4
    cfg.loss.ohem, cfg.loss.affinity_ignore = True, "mask"
    crit = build_loss(cfg)
    assert isinstance(crit, CPNetLoss) and isinstance(crit.ce, OhemCrossEntropy)
    assert crit.affinity.ignore_mode == "mask" and crit.affinity.num_classes == 7
    assert crit.aux_weight == cfg.loss.aux_weight and crit.affinity_weight == cfg.loss.affinity_weight
