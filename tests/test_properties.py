"""Property-based tests (hypothesis): invariants checked on many random small cases.

- the training transform keeps image and mask aligned (and rescaling puts each label under its pixel centre);
- the confusion matrix and mIoU equal a brute-force count;
- the chunked Affinity Loss equals the loop-based formula on random small grids;
- the deploy rewrites (BN folding, 1/N, transpose-free) equal the training graph on random weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import build_tiny_model, randomize_bn
from cpnet.data.transforms import TrainTransform, rescale
from cpnet.losses import affinity_loss
from cpnet.runtime.metrics import ConfusionMatrix
from test_losses import loop_loss

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PALETTE = np.array([[220, 20, 20], [20, 220, 20], [20, 20, 220], [220, 220, 20]], np.uint8)


@FAST
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(20, 60), w=st.integers(20, 60), block=st.integers(6, 14),
       low=st.floats(0.5, 1.5), spread=st.floats(0.0, 1.0))
def test_train_transform_keeps_image_and_mask_aligned(seed, h, w, block, low, spread):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(PALETTE), size=(math.ceil(h / block), math.ceil(w / block)))
    label = np.kron(coarse, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)
    image = PALETTE[label]
    t = TrainTransform(32, scale_range=(low, low + spread), flip=True, photometric=False, cat_max_ratio=1.0,
                       mean=(0, 0, 0), std=(1, 1, 1))
    img_t, lab_t = t(image, label, rng=np.random.default_rng(seed + 1))
    img, lab = img_t.permute(1, 2, 0).numpy(), lab_t.numpy()
    assert img.shape[:2] == lab.shape == (32, 32)
    # interior pixels must carry their class's colour: pixels whose neighbourhood holds one class, the
    # neighbourhood reaching one source pixel away (bilinear reads the two source pixels around a point)
    r = math.ceil(low + spread)
    padded = np.pad(lab.astype(np.int64), r, constant_values=-1)
    same = np.ones_like(lab, bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= padded[dy:dy + 32, dx:dx + 32] == lab
    interior = same & (lab != 255)
    if interior.any():
        want = PALETTE[lab[interior]].astype(np.float32)
        assert np.abs(img[interior] - want).max() <= 1.0


@FAST
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(2, 40), w=st.integers(2, 40), ratio=st.floats(0.3, 3.0))
def test_rescaled_label_is_the_source_pixel_under_each_output_centre(seed, h, w, ratio):
    """Alignment, exactly: output pixel (y, x) takes the label of the source pixel containing its centre,
    the point bilinear resizing of the image samples around."""
    label = np.random.default_rng(seed).integers(0, 5, (h, w)).astype(np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    _, out = rescale(image, label, ratio)
    oh, ow = out.shape

    def sources(n_out, n_in):  # the source pixel under each output centre; on an exact edge, either side
        c = (np.arange(n_out) + 0.5) * n_in / n_out
        lo = np.minimum(np.floor(c - 1e-9).astype(int), n_in - 1)
        hi = np.minimum(np.floor(c + 1e-9).astype(int), n_in - 1)
        return lo, hi

    (y0, y1), (x0, x1) = sources(oh, h), sources(ow, w)
    ok = np.zeros_like(out, bool)
    for ys in (y0, y1):
        for xs in (x0, x1):
            ok |= out == label[ys][:, xs]
    assert ok.all()


@FAST
@given(seed=st.integers(0, 2**31 - 1), classes=st.integers(1, 6), n=st.integers(1, 200))
def test_confusion_matrix_and_miou_equal_a_brute_force_count(seed, classes, n):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    target[rng.random(n) < 0.2] = 255
    pred = rng.integers(0, classes, n)
    cm = ConfusionMatrix(classes)
    cm.update(pred[: n // 2], target[: n // 2])
    cm.update(torch.from_numpy(pred[n // 2:]), torch.from_numpy(target[n // 2:]))  # numpy and torch alike
    result = cm.compute()
    ious = []
    for c in range(classes):
        tp = sum(1 for p, t in zip(pred, target) if t != 255 and p == c and t == c)
        fp = sum(1 for p, t in zip(pred, target) if t != 255 and p == c and t != c)
        fn = sum(1 for p, t in zip(pred, target) if t != 255 and p != c and t == c)
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
        got = result["per_class"][str(c)]["IoU"]
        assert (got is None) == (tp + fp + fn == 0)
        if got is not None:
            assert abs(got - 100 * tp / (tp + fp + fn)) < 1e-9
    if ious:
        assert abs(result["mIoU"] - 100 * sum(ious) / len(ious)) < 1e-9
    else:
        assert math.isnan(result["mIoU"])


@FAST
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 2), h=st.integers(1, 4), w=st.integers(1, 4),
       classes=st.integers(1, 4), mode=st.sampled_from(["class", "mask"]), chunk=st.integers(1, 16))
def test_affinity_loss_equals_the_loop_formula(seed, b, h, w, classes, mode, chunk):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (b, h, w), generator=g)
    y[torch.rand(b, h, w, generator=g) < 0.2] = 255
    z = torch.randn(b, h * w, h * w, generator=g, dtype=torch.float64) * 3
    want = loop_loss(z.numpy(), y.reshape(b, -1).numpy(), mode)
    got = float(affinity_loss(z, y, ignore_mode=mode, chunk_rows=chunk))
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), inverse_n=st.sampled_from(["conv", "prior"]))
def test_deploy_rewrites_equal_the_training_graph_on_random_weights(seed, inverse_n):
    from cpnet.deploy import DeployCPNet

    model, _ = build_tiny_model("cpnet", seed=seed)
    randomize_bn(model, seed + 3)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
        out = DeployCPNet(model, inverse_n=inverse_n)(x)
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-5
