import numpy as np
import pytest
import torch

import torch.nn.functional as F

from cpnet.inference import (_window_starts, predict_image, predict_probs, rescale_size, scaled_size, slide_logits,
                             window_stride)


def _identity_model(num_classes):
    # "logits" = a per-pixel function, so that window stitching errors show up
    def infer(batch):
        n, _, h, w = batch.shape
        return batch[:, :1].repeat(1, num_classes, 1, 1) * torch.arange(num_classes).view(1, -1, 1, 1)
    return infer


@pytest.mark.parametrize("h,w", [(20, 20), (13, 37), (50, 31)])
def test_slide_covers_every_pixel_and_stitches_exactly(h, w):
    # A per-pixel model must give the same answer however the image is cut into windows.
    image = torch.randn(1, 3, h, w)
    infer = _identity_model(4)
    for window in (16, (12, 20)):
        logits = slide_logits(image, infer, window=window, num_classes=4, overlap=1 / 3)
        assert logits.shape == (1, 4, h, w)
        assert torch.allclose(logits, infer(image), atol=1e-6)


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


# ---------------------------------------------------------------- against a plain reimplementation of mmseg


def positional_model(num_classes: int = 5, seed: int = 0):
    """A conv (zero padding at the window's borders) plus a ramp over the window's own columns and rows: the
    logits of a pixel depend on where the window is, so overlapping windows disagree (as in a real network)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_classes, 3, 3, 3, generator=g)
    ramp = torch.randn(num_classes, 2, generator=g) * 3

    def infer(batch):
        batch = torch.as_tensor(batch)
        n, _, h, w = batch.shape
        out = F.conv2d(batch, weight, padding=1)
        ys = torch.linspace(0, 1, h).view(1, 1, h, 1)
        xs = torch.linspace(0, 1, w).view(1, 1, 1, w)
        return out + ramp[:, 0].view(1, -1, 1, 1) * ys + ramp[:, 1].view(1, -1, 1, 1) * xs

    return infer


def mmseg_slide_inference(inputs, infer, crop, stride, num_classes):
    """mmseg 1.x ``EncoderDecoder.slide_inference``, written out (the model's logits are already at crop size)."""
    h_stride, w_stride = stride
    h_crop, w_crop = crop
    batch_size, _, h_img, w_img = inputs.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = inputs.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = inputs.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = inputs[:, :, y1:y2, x1:x2]
            crop_seg_logit = infer(crop_img)
            preds += F.pad(crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat


def mmseg_tta(image, infer, crop, stride, num_classes, ratios, flip, base=None):
    """mmseg's test-time augmentation: Resize(scale_factor=r, keep_ratio=True) (mmcv's int(x * r + 0.5)),
    RandomFlip, slide inference, postprocess_result (flip the logits back, resize them to the original shape,
    bilinear), then SegTTAModel.merge_preds (the mean of the softmax probabilities)."""
    _, _, H, W = image.shape
    bh, bw = base or (H, W)
    total = torch.zeros(1, num_classes, H, W, dtype=torch.float64)
    n = 0
    for r in ratios:
        size = (int(bh * r + 0.5), int(bw * r + 0.5))
        img = F.interpolate(image, size=size, mode="bilinear", align_corners=False) if size != (H, W) else image
        for f in ([False, True] if flip else [False]):
            x = img.flip(-1) if f else img
            logits = mmseg_slide_inference(x, infer, crop, stride, num_classes)
            if f:
                logits = logits.flip(dims=(3,))
            logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
            total += logits.softmax(dim=1).double()
            n += 1
    return total / n


@pytest.mark.parametrize("window,scales,flip", [
    ((16, 24), (1.0,), False),
    ((16, 24), (0.5, 0.75, 1.0, 1.5), True),
    (20, (0.75, 1.25), True),
])
def test_slide_and_tta_equal_mmseg(window, scales, flip):
    image = torch.randn(1, 3, 47, 71)
    infer = positional_model()
    win = (window, window) if isinstance(window, int) else window
    stride = window_stride(win, 1 / 3)
    # the model really disagrees with itself where windows overlap: averaging probabilities would differ
    logits = slide_logits(image, infer, win, 5)
    assert torch.allclose(logits, mmseg_slide_inference(image, infer, win, stride, 5), atol=1e-5)
    probs_avg = torch.zeros_like(logits)
    cnt = torch.zeros(1, 1, 47, 71)
    for y in _window_starts(47, win[0], stride[0]):
        for x in _window_starts(71, win[1], stride[1]):
            probs_avg[..., y:y + win[0], x:x + win[1]] += infer(image[..., y:y + win[0], x:x + win[1]]).softmax(1)
            cnt[..., y:y + win[0], x:x + win[1]] += 1
    assert float((probs_avg / cnt - logits.softmax(1)).abs().max()) > 1e-3

    got = predict_probs(image, infer, win, 5, mode="slide", scales=scales, flip=flip)
    want = mmseg_tta(image, infer, win, stride, 5, scales, flip)
    assert float((got.double() - want).abs().max()) < 1e-5
    # whole mode: the base is the model input (the image squashed to it, as deployed), then the same machinery
    # (scales below 1 make images smaller than the window, which we pad and mmseg's fully convolutional models
    # do not need to: compared where mmseg's semantics apply)
    big = tuple(s for s in scales if s >= 1)
    got = predict_probs(image, infer, win, 5, mode="whole", scales=big, flip=flip)
    want = mmseg_tta(image, infer, win, stride, 5, big, flip, base=win)
    assert float((got.double() - want).abs().max()) < 1e-5


def test_windows_smaller_images_are_padded_with_the_mean_colour():
    image = torch.randn(1, 3, 10, 13)
    infer = positional_model()
    got = slide_logits(image, infer, (16, 24), 5)
    padded = F.pad(image, (0, 11, 0, 6))
    assert torch.allclose(got, infer(padded)[..., :10, :13], atol=1e-6)


def test_mmcv_rounding_and_keep_ratio_rescale():
    assert scaled_size((5, 7), 0.5) == (3, 4)  # int(2.5 + 0.5), int(3.5 + 0.5); Python's round gives (2, 4)
    assert scaled_size((1024, 2048), 0.75) == (768, 1536)
    assert rescale_size((375, 500), (2048, 512)) == (512, 683)  # ADE20K's base: the short side to 512
    assert rescale_size((375, 500), (520, 520)) == (390, 520)   # PASCAL-Context's: the long side to 520
    assert rescale_size((1024, 2048), (2048, 1024)) == (1024, 2048)


def test_predict_image_resizes_the_uint8_image_as_deployed():
    """Whole mode, one scale, no flip: the window is exactly what cpnet.runtime.preprocess feeds a deployed model,
    and the label map is exactly its postprocess's (same logits resize, same argmax)."""
    from cpnet.runtime.preprocess import postprocess, preprocess

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    infer = positional_model(5)
    manifest = {"input_size": [16, 24], "mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0], "channel_order": "RGB"}
    seen = []

    def spy(batch):
        seen.append(batch.clone())
        return infer(batch)

    probs = predict_image(image, spy, (16, 24), 5, manifest["mean"], manifest["std"])
    x = preprocess(image, manifest)
    assert len(seen) == 1 and torch.equal(seen[0], torch.from_numpy(x))
    deployed = postprocess(infer(torch.from_numpy(x)).numpy(), image.shape[:2])
    assert np.array_equal(probs.argmax(1)[0].numpy(), deployed)
