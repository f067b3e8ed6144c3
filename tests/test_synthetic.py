"""The synthetic dataset: determinism, folder format, class coverage, and the look-alike design."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpnet.config import load_config
from cpnet.data import FolderDataset, build_dataset, classes_of
from cpnet.data.synthetic import LOOKALIKE_PAIRS, SYNTHETIC_CLASSES, SYNTHETIC_NAMES, generate, make_sample

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "data", n_train=96, n_val=8, size=64, seed=0)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_classes_hold_the_lookalike_pairs():
    assert len(SYNTHETIC_CLASSES) == 8
    assert set(n for pair in LOOKALIKE_PAIRS for n in pair) <= set(SYNTHETIC_NAMES)
    assert ("car", "boat") in LOOKALIKE_PAIRS and ("sand", "water") in LOOKALIKE_PAIRS


def test_synthetic_images_are_byte_identical_per_seed_and_index(tmp_path, synth):
    again = generate(tmp_path / "again", n_train=96, n_val=8, size=64, seed=0)
    assert _tree_bytes(again) == _tree_bytes(synth)
    other = generate(tmp_path / "other", n_train=4, n_val=1, size=64, seed=1)
    assert (other / "images/train/syn_00000.png").read_bytes() != (synth / "images/train/syn_00000.png").read_bytes()
    # Image i does not depend on how many are asked for.
    few = generate(tmp_path / "few", n_train=3, n_val=1, size=64, seed=0)
    assert (few / "masks/train/syn_00002.png").read_bytes() == (synth / "masks/train/syn_00002.png").read_bytes()


def test_regenerate_removes_stale_files(tmp_path):
    out = generate(tmp_path / "d", n_train=5, n_val=2, size=32, seed=0)
    generate(out, n_train=2, n_val=1, size=32, seed=0, overwrite=True)
    assert len(list((out / "images/train").iterdir())) == 2 and len(list((out / "masks/val").iterdir())) == 1


def test_folder_format_and_coverage(synth):
    ds = FolderDataset(synth, "train")
    assert len(ds) == 96 and ds.classes == list(SYNTHETIC_NAMES)
    assert len(FolderDataset(synth, "val")) == 8
    seen = np.zeros(256, np.int64)
    for i in range(len(ds)):
        img, lab = ds.load(i)  # also validates sizes and label range
        assert img.shape == (64, 64, 3) and lab.shape == (64, 64)
        seen += np.bincount(lab.ravel(), minlength=256)
    assert (seen[: len(SYNTHETIC_CLASSES)] > 0).all(), seen[:8]
    assert seen[8:].sum() == 0


def test_quickstart_builds_on_it(synth):
    cfg = load_config("quickstart", [f"data.root={synth}"])
    ds = build_dataset(cfg.data, "train", cfg.crop_size, True, num_classes=cfg.model.num_classes)
    x, y = ds[0]
    assert tuple(x.shape) == (3, *cfg.crop_size)
    assert classes_of(cfg.data)[0] == list(SYNTHETIC_NAMES)


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool) & ~mask


def _appearance_and_context(samples, cls):
    inside, around, around_labels = [], [], []
    for img, lab in samples:
        m = lab == cls
        if not m.any():
            continue
        ring = _ring(m, 3)
        inside.append(img[m].astype(np.float64))
        around.append(img[ring].astype(np.float64))
        around_labels.append(lab[ring])
    return np.concatenate(inside), np.concatenate(around), np.concatenate(around_labels)


def test_lookalikes_differ_only_by_context():
    names = list(SYNTHETIC_NAMES)
    samples = [make_sample(0, "train", i, 96) for i in range(200)]

    car_in, car_ring, car_ctx = _appearance_and_context(samples, names.index("car"))
    boat_in, boat_ring, boat_ctx = _appearance_and_context(samples, names.index("boat"))
    # Same appearance: mean and spread of the pixels agree closely ...
    assert np.abs(car_in.mean(0) - boat_in.mean(0)).max() < 12, (car_in.mean(0), boat_in.mean(0))
    assert np.abs(car_in.std(0) - boat_in.std(0)).max() < 12
    # ... while the surroundings are different: road around cars, water around boats.
    assert np.abs(car_ring.mean(0) - boat_ring.mean(0)).max() > 30, (car_ring.mean(0), boat_ring.mean(0))
    road, water = names.index("road"), names.index("water")
    assert (car_ctx == road).mean() > 0.9 and (boat_ctx == water).mean() > 0.9

    # Shaded sand: sand pixels that look like water (blue dominant) are surrounded by lit sand.
    sand = names.index("sand")
    shaded, water_px, shaded_ctx = [], [], []
    for img, lab in samples:
        bluish = img[..., 2].astype(int) > img[..., 0].astype(int) + 40
        m = (lab == sand) & bluish
        if m.sum() > 20:
            shaded.append(img[m].astype(np.float64))
            shaded_ctx.append(lab[_ring(m, 3)])
        if (lab == water).any():
            water_px.append(img[lab == water].astype(np.float64))
    assert shaded, "no shaded sand in 200 images"
    shaded, water_px, shaded_ctx = np.concatenate(shaded), np.concatenate(water_px), np.concatenate(shaded_ctx)
    assert np.abs(shaded.mean(0) - water_px.mean(0)).max() < 12, (shaded.mean(0), water_px.mean(0))
    assert (shaded_ctx == sand).mean() > 0.9


def test_synthetic_cli_writes_the_dataset_and_refuses_a_bad_size(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "cpnet.data.synthetic", "-o", str(out), "--train", "3",
                        "--val", "2", "--size", "32", "--seed", "5"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "RuntimeWarning" not in r.stderr
    assert len(list((out / "images/train").glob("*.png"))) == 3 and (out / "classes.yaml").is_file()
    r = subprocess.run([sys.executable, "-m", "cpnet.data.synthetic", "-o", str(out), "--size", "8"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--size" in r.stderr
