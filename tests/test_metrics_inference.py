import math

import numpy as np
import pytest
import torch

from cpnet.inference import predict_probs, slide_probs
from cpnet.runtime.metrics import ConfusionMatrix, format_table


def test_confusion_matrix_metrics_match_hand_computation():
    cm = ConfusionMatrix(3, ignore_index=255)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm.update(pred, target)
    r = cm.compute(["a", "b", "c"])
    # class a: tp 1, gt 2, pred 2 -> 1/3; b: tp 3, gt 3, pred 4 -> 3/4; c: tp 1, gt 2, pred 1 -> 1/2
    assert r["per_class"]["a"]["IoU"] == pytest.approx(100 / 3)
    assert r["per_class"]["b"]["IoU"] == pytest.approx(75)
    assert r["per_class"]["c"]["IoU"] == pytest.approx(50)
    assert r["mIoU"] == pytest.approx((100 / 3 + 75 + 50) / 3)
    assert r["aAcc"] == pytest.approx(5 / 7 * 100)
    assert r["mAcc"] == pytest.approx((50 + 100 + 50) / 3)
    assert "mIoU" in format_table(r)


def test_absent_class_is_left_out_of_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    r = cm.compute()
    assert r["per_class"]["2"]["IoU"] is None and r["mIoU"] == pytest.approx(100)


def _identity_model(num_classes):
    # "logits" = a function of position so that window stitching errors show up
    def infer(batch):
        n, _, h, w = batch.shape
        return batch[:, :1].repeat(1, num_classes, 1, 1) * torch.arange(num_classes).view(1, -1, 1, 1)
    return infer


@pytest.mark.parametrize("h,w", [(20, 20), (13, 37), (50, 31)])
def test_slide_covers_every_pixel_and_stitches_exactly(h, w):
    # A per-pixel model must give the same answer however the image is cut into windows.
    image = torch.randn(1, 3, h, w)
    infer = _identity_model(4)
    probs = slide_probs(image, infer, window=16, num_classes=4, overlap=1 / 3)
    expected = infer(image).softmax(1)
    assert probs.shape == (1, 4, h, w)
    assert torch.allclose(probs, expected, atol=1e-6)


def test_predict_probs_whole_multiscale_flip_shapes_and_normalisation():
    image = torch.randn(1, 3, 30, 45)
    calls = []

    def infer(batch):
        calls.append(batch.shape)
        return torch.randn(batch.shape[0], 5, batch.shape[2], batch.shape[3])

    p = predict_probs(image, infer, input_size=16, num_classes=5, mode="whole", scales=(0.5, 1.0, 1.5), flip=True)
    assert p.shape == (1, 5, 30, 45)
    assert torch.allclose(p.sum(1), torch.ones(1, 30, 45), atol=1e-5)
    assert all(s[-2:] == (16, 16) for s in calls)
    with pytest.raises(ValueError):
        predict_probs(image, infer, 16, 5, mode="bogus")
