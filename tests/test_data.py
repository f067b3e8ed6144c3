"""Datasets on tiny fake trees in each layout, bad-data handling, and the transforms."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cpnet.config import DataConfig
from cpnet.data import (
    ADE20KDataset,
    BadSampleError,
    CityscapesDataset,
    FolderDataset,
    PascalContextDataset,
    build_dataset,
    classes_of,
    collate_skip,
)
from cpnet.data.transforms import EvalTransform, TrainTransform, hflip, photometric_distortion
from cpnet.runtime import UserError

H, W = 32, 64


def _write(path: Path, array: np.ndarray, ext: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext or path.suffix, array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _image(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _label(values, h: int = H, w: int = W) -> np.ndarray:
    """A label whose columns cycle through ``values``."""
    values = np.asarray(values, dtype=np.uint8)
    return np.broadcast_to(values[np.arange(w) % len(values)], (h, w)).copy()


# --------------------------------------------------------------------------- fake trees


def make_cityscapes(root: Path, masks: dict[str, np.ndarray]) -> Path:
    for stem, lab in masks.items():
        city = stem.split("_")[0]
        _write(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", _image(len(stem)))
        _write(root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", lab)
    return root


def make_ade(root: Path, masks: dict[str, np.ndarray], split: str = "training") -> Path:
    for stem, lab in masks.items():
        _write(root / "images" / split / f"{stem}.jpg", _image(1))
        _write(root / "annotations" / split / f"{stem}.png", lab)
    return root


def make_context(root: Path, masks: dict[str, np.ndarray], split: str = "train") -> Path:
    for stem, lab in masks.items():
        _write(root / "JPEGImages" / f"{stem}.jpg", _image(2))
        _write(root / "SegmentationClassContext" / f"{stem}.png", lab)
    lst = root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
    lst.parent.mkdir(parents=True, exist_ok=True)
    lst.write_text("\n".join(masks) + "\n")
    return root


def make_folder(root: Path, masks: dict[str, np.ndarray], split: str = "train", n_classes: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    names = ["sky", "road", "car", "tree", "wall"][:n_classes]
    (root / "classes.yaml").write_text(
        "\n".join(f"- {{name: {n}, color: [{i * 40}, {i * 20}, 7]}}" for i, n in enumerate(names)) + "\n")
    for stem, lab in masks.items():
        _write(root / "images" / split / f"{stem}.png", _image(3))
        _write(root / "masks" / split / f"{stem}.png", lab)
    return root


# --------------------------------------------------------------------------- label mapping


def test_cityscapes_label_ids_map_to_the_19_train_ids(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"aachen_000000_000019": _label([7, 26, 0, 1, 8, 24])})
    ds = CityscapesDataset(root, "train")
    assert ds.num_classes == 19 and ds.classes[0] == "road" and ds.classes[13] == "car"
    assert ds.palette[0] == (128, 64, 128)
    img, lab = ds.load(0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert lab.dtype == np.uint8 and lab.shape == (H, W)
    np.testing.assert_array_equal(lab[0, :6], [0, 13, 255, 255, 1, 11])
    assert ds.sample_path(0).name == "aachen_000000_000019_leftImg8bit.png"


def test_cityscapes_unknown_id_is_bad(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"bonn_000000_000019": _label([7, 40])})
    with pytest.raises(BadSampleError, match="40"):
        CityscapesDataset(root, "train").load(0)


def test_ade20k_labels_shift_down_one_with_0_ignored(tmp_path):
    root = make_ade(tmp_path / "ADEChallengeData2016", {"ADE_train_00000001": _label([0, 1, 150, 21, 255])})
    ds = ADE20KDataset(root, "train")  # 'train' -> images/training
    assert ds.num_classes == 150 and ds.classes[0] == "wall" and ds.classes[149] == "flag"
    _, lab = ds.load(0)
    np.testing.assert_array_equal(lab[0, :5], [255, 0, 149, 20, 255])


def test_ade20k_out_of_range(tmp_path):
    root = make_ade(tmp_path / "ADE", {"a": _label([1, 151])})
    with pytest.raises(BadSampleError) as e:
        ADE20KDataset(root, "training").load(0)
    assert "151" in str(e.value) and str(root / "annotations" / "training" / "a.png") in str(e.value)


def test_pascal_context_labels_shift_down_one_and_60_is_refused(tmp_path):
    root = make_context(tmp_path / "VOC2010", {"2008_000002": _label([0, 1, 59, 255])}, "val")
    ds = PascalContextDataset(root, "val")
    assert ds.num_classes == 59 and ds.classes[0] == "aeroplane" and ds.classes[58] == "wood"
    _, lab = ds.load(0)
    np.testing.assert_array_equal(lab[0, :4], [255, 0, 58, 255])
    with pytest.raises(BadSampleError, match="60"):
        PascalContextDataset(make_context(tmp_path / "V2", {"x": _label([60])}), "train").load(0)


def test_folder_dataset_and_classes(tmp_path):
    root = make_folder(tmp_path / "mine", {"a": _label([0, 1, 2, 255]), "b": _label([2])})
    ds = FolderDataset(root, "train")
    assert ds.classes == ["sky", "road", "car"] and ds.palette[2] == (80, 40, 7) and len(ds) == 2
    _, lab = ds.load(0)
    np.testing.assert_array_equal(lab[0, :4], [0, 1, 2, 255])
    cfg = DataConfig(dataset="folder", root=str(root))
    assert classes_of(cfg) == (ds.classes, ds.palette)


def test_folder_palette_png_mask_reads_indices(tmp_path):
    from PIL import Image

    root = make_folder(tmp_path / "mine", {"a": _label([0])})
    im = Image.fromarray(_label([0, 1, 2]), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    im.save(root / "masks" / "train" / "a.png")
    _, lab = FolderDataset(root, "train").load(0)
    np.testing.assert_array_equal(lab[0, :3], [0, 1, 2])


def test_folder_dataset_names_the_missing_classes_file_or_images(tmp_path):
    root = tmp_path / "mine"
    (root / "images" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="classes.yaml"):
        FolderDataset(root, "train")
    (root / "classes.yaml").write_text("- sky\n- road\n")
    with pytest.raises(UserError) as e:
        FolderDataset(root, "train")
    assert str(root / "images" / "train") in str(e.value) and "no images" in str(e.value)
    with pytest.raises(UserError, match="split folder not found"):
        FolderDataset(root, "val")
    (root / "classes.yaml").write_text("- {name: sky, color: [1, 2]}\n")
    with pytest.raises(UserError, match="color"):
        classes_of(DataConfig(dataset="folder", root=str(root)))


def test_build_dataset_root_errors(tmp_path):
    with pytest.raises(UserError, match="cpnet data -o"):
        build_dataset(DataConfig(dataset="synthetic", root=str(tmp_path / "nope")), "train", 64, True)
    with pytest.raises(UserError, match="data root .* not found"):
        build_dataset(DataConfig(dataset="cityscapes", root=str(tmp_path / "nope")), "train", 64, True)
    root = make_folder(tmp_path / "mine", {"a": _label([0, 1])})
    with pytest.raises(UserError, match="num_classes=3"):
        build_dataset(DataConfig(dataset="folder", root=str(root)), "train", 64, True, num_classes=8)


def test_build_dataset_yields_normalised_tensors_and_int64_labels(tmp_path):
    root = make_folder(tmp_path / "mine", {"a": _label([0, 1, 2, 255]), "b": _label([1, 2])})
    cfg = DataConfig(dataset="folder", root=str(root))
    train = build_dataset(cfg, "train", 48, True, num_classes=3)
    torch.manual_seed(0)
    x, y = train[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert y.shape == (48, 48) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2, 255}
    ev = build_dataset(cfg, "train", 48, False)
    x, y = ev[0]
    assert x.shape == (3, H, W) and y.shape == (H, W)
    np.testing.assert_array_equal(y[0, :4].numpy(), [0, 1, 2, 255])
    # Eval normalisation: (x - mean) / std with the RGB mean/std.
    img, _ = ev.load(0)
    expect = (img[..., 0].astype(np.float32) - cfg.mean[0]) / cfg.std[0]
    np.testing.assert_allclose(x[0].numpy(), expect, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- bad data


def _bad_tree(tmp_path) -> tuple[Path, dict[str, Path]]:
    """A folder dataset whose samples are: good, unreadable, truncated, wrong size, missing mask, bad label."""
    good = _label([0, 1, 2])
    root = make_folder(tmp_path / "bad", {"0good": good, "1unreadable": good, "2truncated": good,
                                          "3size": good, "4missing": good, "5range": good})
    imgs, masks = root / "images" / "train", root / "masks" / "train"
    (imgs / "1unreadable.png").write_bytes(b"this is not an image")
    data = (imgs / "2truncated.png").read_bytes()
    (imgs / "2truncated.png").write_bytes(data[: len(data) // 2])
    _write(masks / "3size.png", _label([0], h=H + 2))
    (masks / "4missing.png").unlink()
    _write(masks / "5range.png", _label([0, 7]))
    expected = {
        "1unreadable": imgs / "1unreadable.png",
        "2truncated": imgs / "2truncated.png",
        "3size": masks / "3size.png",
        "4missing": masks / "4missing.png",
        "5range": masks / "5range.png",
    }
    return root, expected


def test_bad_data_stop_names_file(tmp_path):
    root, expected = _bad_tree(tmp_path)
    ds = FolderDataset(root, "train", transform=EvalTransform(), on_bad_data="stop")
    assert ds[0] is not None
    stems = [img.stem for img, _ in ds.samples]
    for i, stem in enumerate(stems[1:], start=1):
        with pytest.raises(BadSampleError) as e:
            ds[i]
        assert isinstance(e.value, UserError)
        assert str(expected[stem]) in str(e.value), (stem, str(e.value))
    assert len(ds.check_all()) == 5


def test_bad_data_skip_and_collate(tmp_path):
    root, _ = _bad_tree(tmp_path)
    ds = FolderDataset(root, "train", transform=TrainTransform(16, scale_range=(1.0, 1.0)), on_bad_data="skip")
    items = [ds[i] for i in range(len(ds))]
    assert items[0] is not None and all(it is None for it in items[1:])
    images, labels, n = collate_skip(items)
    assert images.shape == (1, 3, 16, 16) and labels.shape == (1, 16, 16) and n == 5
    assert collate_skip(items[1:3]) == (None, None, 2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_skip)
    assert sum(b[2] for b in loader) == 5


def test_bad_sample_error_from_a_worker_process_stays_one_line(tmp_path):
    # DataLoader workers send the exception to the main process, which re-raises it as exc_type(traceback text)
    root = make_folder(tmp_path / "f", {"a": _label([0, 1, 2])})
    victim = root / "images" / "train" / "a.png"
    victim.write_bytes(b"not an image")
    ds = FolderDataset(root, "train", transform=TrainTransform(16, scale_range=(1.0, 1.0)), on_bad_data="stop")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate_skip)
    with pytest.raises(BadSampleError) as info:
        list(loader)
    assert str(info.value).startswith(str(victim)) and "\n" not in str(info.value)
    assert info.value.path == str(victim)


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("size", [(20, 30), (32, 64), (200, 150)])
def test_train_transform_crop_shape(size):
    h, w = size
    t = TrainTransform(64, scale_range=(0.5, 2.0), cat_max_ratio=0.75)
    img, lab = _image(0, h, w), _label([0, 1, 2], h, w)
    for seed in range(5):
        x, y = t(img, lab, rng=np.random.default_rng(seed))
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert x.dtype == torch.float32 and y.dtype == torch.int64


def test_train_transform_padding_is_ignore():
    t = TrainTransform(64, scale_range=(1.0, 1.0), flip=False, photometric=False)
    x, y = t(_image(0, 20, 30), _label([0, 1], 20, 30), rng=np.random.default_rng(0))
    assert (y[20:, :] == 255).all() and (y[:, 30:] == 255).all()
    assert set(y[:20, :30].unique().tolist()) == {0, 1}
    assert torch.count_nonzero(x[:, 20:, :]) == 0  # padded with the mean colour (0 after normalising)


def mmseg_random_resize(h: int, w: int, scale, ratio: float) -> tuple[int, int]:
    """mmseg's RandomResize(scale, keep_ratio=True) for one sampled ratio, written out: the target scale
    (int(s * ratio) per side), then mmcv's rescale_size (its factor, int(x * f + 0.5) per side)."""
    target = int(scale[0] * ratio), int(scale[1] * ratio)
    max_long_edge, max_short_edge = max(target), min(target)
    scale_factor = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
    return int(h * float(scale_factor) + 0.5), int(w * float(scale_factor) + 0.5)


@pytest.mark.parametrize("dataset,size,base", [
    ("ade20k", (375, 500), (2048, 512)), ("ade20k", (683, 512), (2048, 512)),
    ("pascal_context", (333, 500), (520, 520)), ("cityscapes", (1024, 2048), (2048, 1024)),
    ("folder", (90, 160), (64, 32)),  # folder and synthetic: the model input (32x64) is the base
])
def test_random_resize_is_mmsegs(dataset, size, base):
    from cpnet.data.transforms import base_scale_of, build_transform, random_resize_size

    cfg = DataConfig(dataset=dataset, flip=False, photometric=False, cat_max_ratio=1.0, scale_range=(0.5, 0.75))
    assert base_scale_of(cfg, (32, 64)) == base
    h, w = size
    for ratio in np.random.default_rng(0).uniform(0.5, 2.0, 20):
        assert random_resize_size((h, w), base, ratio) == mmseg_random_resize(h, w, base, ratio)
    if dataset == "folder":
        return
    # through the training transform, with a crop larger than any resized image (nothing is cut off)
    t = build_transform(cfg, (1600, 1600), train=True)
    img, lab = _image(0, h, w), np.zeros((h, w), np.uint8)
    for seed in range(4):
        ratio = float(np.random.default_rng(seed).uniform(0.5, 0.75))  # the transform's first draw
        _, y = t(img, lab, rng=np.random.default_rng(seed))
        valid = (y != 255).nonzero()
        assert (int(valid[:, 0].max()) + 1, int(valid[:, 1].max()) + 1) == mmseg_random_resize(h, w, base, ratio)
    # data.base_scale overrides the dataset's
    assert base_scale_of(DataConfig(dataset="cityscapes", base_scale=(512, 256)), (256, 512)) == (512, 256)


def test_flip_moves_image_and_label_together():
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, :2] = 200
    lab = np.zeros((8, 8), np.uint8)
    lab[:, :2] = 1
    fi, fl = hflip(img, lab)
    assert (fi[:, -2:] == 200).all() and (fl[:, -2:] == 1).all() and (fl[:, :-2] == 0).all()
    # Through the pipeline: wherever label is 1 the image is bright, whether flipped or not.
    t = TrainTransform(8, scale_range=(1.0, 1.0), flip=True, photometric=False, cat_max_ratio=1.0,
                       mean=(0, 0, 0), std=(1, 1, 1))
    flips = set()
    for seed in range(12):
        x, y = t(img, lab, rng=np.random.default_rng(seed))
        assert ((x[0] > 100) == (y == 1)).all()
        flips.add(bool(y[0, -1] == 1))
    assert flips == {True, False}


def test_cat_max_ratio_prefers_mixed_crops():
    lab = np.zeros((64, 256), np.uint8)
    lab[:, 224:] = 1  # class 1 only at the right edge
    img = _image(0, 64, 256)
    t = TrainTransform(64, scale_range=(1.0, 1.0), flip=False, photometric=False, cat_max_ratio=0.75)
    mixed = sum(len(np.unique(t(img, lab, rng=np.random.default_rng(s))[1])) > 1 for s in range(20))
    t1 = TrainTransform(64, scale_range=(1.0, 1.0), flip=False, photometric=False, cat_max_ratio=1.0)
    mixed1 = sum(len(np.unique(t1(img, lab, rng=np.random.default_rng(s))[1])) > 1 for s in range(20))
    assert mixed > mixed1


def test_scale_uses_nearest_for_labels():
    t = TrainTransform(64, scale_range=(1.7, 1.7), flip=False, photometric=True)
    _, y = t(_image(0), _label([0, 3, 5, 255]), rng=np.random.default_rng(1))
    assert set(y.unique().tolist()) <= {0, 3, 5, 255}


def test_photometric_keeps_dtype_and_shape():
    img = _image(0)
    out = photometric_distortion(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8


def test_transform_stream_follows_torch_seed():
    t = TrainTransform(32, scale_range=(0.5, 2.0))
    img, lab = _image(0), _label([0, 1, 2])
    torch.manual_seed(123)
    a = [t(img, lab) for _ in range(3)]
    torch.manual_seed(123)
    b = [t(img, lab) for _ in range(3)]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], a[1][0])


def test_a_seeded_loader_with_workers_yields_the_same_batches_twice(tmp_path):
    root = make_folder(tmp_path / "mine", {f"s{i}": _label([0, 1, 2]) for i in range(4)})
    ds = build_dataset(DataConfig(dataset="folder", root=str(root)), "train", 24, True)

    def run():
        g = torch.Generator().manual_seed(7)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, shuffle=True, generator=g,
                                             collate_fn=collate_skip)
        return [b[0] for b in loader]

    a, b = run(), run()
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
