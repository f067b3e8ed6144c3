"""The one confusion matrix and mIoU (cpnet.runtime.metrics)."""


import pytest
import torch

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
