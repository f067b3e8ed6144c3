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


def mmcv_rescale_size(old_size, scale):
    """mmcv.image.geometric.rescale_size (with _scale_size), re-implemented: sizes are (w, h); a tuple scale is a
    (long, short) bound in either order, one factor for both sides, each side int(x * f + 0.5)."""
    w, h = old_size
    if isinstance(scale, (float, int)):
        factor = scale
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def mmseg0_test_sizes(h, w, ratios, img_scale=None):
    """(h, w) per ratio in mmseg 0.x's MultiScaleFlipAug(img_scale, img_ratios) + Resize(keep_ratio=True): the
    scales are (int(a * r), int(b * r)) of img_scale, or of the image's (w, h) when img_scale is None, and each
    goes through mmcv.imrescale (rescale_size)."""
    a, b = img_scale if img_scale is not None else (w, h)
    return [mmcv_rescale_size((w, h), (int(a * r), int(b * r)))[::-1] for r in ratios]


def mmseg_tta(image, infer, crop, stride, num_classes, ratios, flip, base=None):
    """mmseg's test-time augmentation: mmseg 0.x's multi-scale sizes (slide; ``base``: whole mode's squashed
    input, scaled as int(x * r + 0.5)), RandomFlip, slide inference, postprocess_result (flip the logits back,
    resize them to the original shape, bilinear), then the mean of the softmax probabilities."""
    _, _, H, W = image.shape
    total = torch.zeros(1, num_classes, H, W, dtype=torch.float64)
    n = 0
    sizes = ([(int(base[0] * r + 0.5), int(base[1] * r + 0.5)) for r in ratios] if base else
             mmseg0_test_sizes(H, W, ratios))
    for r, size in zip(ratios, sizes):
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


def test_test_time_sizes_equal_mmseg_0x_on_a_grid():
    """Slide mode's multi-scale sizes against the re-implementation of mmcv's rescale_size and mmseg 0.x's
    MultiScaleFlipAug, for image sides 16 to 2100 px, ratios 0.5 to 2 and every base scale: 0 mismatches."""
    from cpnet.data.transforms import BASE_SCALES
    from cpnet.inference import test_size

    ratios = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    sides = range(16, 2101, 23)
    checked = mismatches = 0
    for base in (None, *BASE_SCALES.values()):
        for h in sides:
            for w in sides:
                want = mmseg0_test_sizes(h, w, ratios, base)
                got = [test_size("slide", (h, w), (32, 32), r, base) for r in ratios]
                mismatches += sum(g != tuple(x) for g, x in zip(got, want))
                checked += len(ratios)
    assert checked == 4 * len(sides) ** 2 * len(ratios) and mismatches == 0
    # at ratio 1 with a base scale it is the single-scale test size (mmseg's test Resize(scale, keep_ratio=True))
    assert test_size("slide", (375, 500), (32, 32), 1.0, (2048, 512)) == rescale_size((375, 500), (2048, 512))


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


def test_a_frame_stretched_by_the_whole_image_resize_is_said_aloud(tiny_checkpoint, tmp_path, caplog):
    """edge_r18_288x512 is for 16:9 frames: a 2:1 Cityscapes frame is stretched 1.125 in height against training,
    and cpnet evaluate says so (here: a 2:1 dataset into the tiny model's square input)."""
    import cv2

    from cpnet.config import load_config
    from cpnet.runtime.preprocess import aspect_note, aspect_stretch

    cfg = load_config("edge_r18_288x512")
    assert aspect_stretch((1024, 2048), cfg.crop_size) == pytest.approx(1.125)
    assert aspect_note((720, 1280), cfg.crop_size) is None and aspect_note((1080, 1920), cfg.crop_size) is None
    assert "1.125" in aspect_note((1024, 2048), cfg.crop_size)

    data = tmp_path / "wide"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True)
        (data / "masks" / split).mkdir(parents=True)
        cv2.imwrite(str(data / "images" / split / "a.png"), rng.integers(0, 255, (32, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(data / "masks" / split / "a.png"), np.zeros((32, 64), np.uint8))
    from cpnet.data.synthetic import classes_yaml_text

    (data / "classes.yaml").write_text(classes_yaml_text())
    from cpnet import cli

    with caplog.at_level("WARNING"):
        rc = cli.main(["evaluate", str(tiny_checkpoint), "--data-root", str(data), "--no-progress"])
    assert rc == 0
    assert any("stretches height by 2.000" in r.getMessage() for r in caplog.records), caplog.text
