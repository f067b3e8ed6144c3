"""A synthetic dataset where context matters, written in the folder format.

``cpnet data -o DIR [--train 400] [--val 100] [--size 128] [--seed 0]``
writes ``DIR/images/{train,val}/syn_NNNNN.png``, ``DIR/masks/{train,val}/syn_NNNNN.png``
(class ids, single channel) and ``DIR/classes.yaml``. The output is a pure
function of the arguments: image ``i`` of a split is drawn from
``np.random.default_rng([seed, split, i])`` and stored as PNG, so two runs with
the same arguments give the same bytes (and image ``i`` does not depend on how
many images are asked for).

Classes (ids in this order)::

    0 sky       easy: smooth blue-white gradient at the top
    1 building  easy: grey/brown blocks with window grids on the skyline
    2 grass     easy: mottled green verges and dunes
    3 road      grey asphalt with lane dashes
    4 water     blue, rippled
    5 car       a vehicle on the road
    6 boat      a vehicle on the water
    7 sand      a beach: lit sand (beige) and shaded sand

Look-alikes (``LOOKALIKE_PAIRS``), as in the paper's figure 1:

* **car / boat**: both are drawn by the same function with the same
  distribution of colours, sizes, shapes and texture; a patch of one cannot be
  told from a patch of the other. Only the surroundings differ: cars sit on
  road (with grass and buildings around), boats on water.
* **sand / water**: shaded sand is drawn with exactly the water appearance
  (same colour distribution and ripple texture); it lies as a blob inside a lit
  beach, while water is the open sea between the horizon and the shore. Only
  the surrounding lit sand tells shaded sand from water.

Scenes: *city* (sky, buildings, grass, road, cars), *coast* (sky, sea, boats,
beach with shaded patches, sometimes a grass dune) and *harbour* (sky,
buildings, a road and the water side by side, cars on one, boats on the other,
so both look-alikes share an image). A mild blur, per-pixel noise and a global
brightness change keep the task from being per-pixel trivial.

``cpnet data --clip clip.mp4`` writes a short video instead (:func:`write_motion_clip`): a slow pan and
zoom over one scene, with fresh sensor noise per frame, so consecutive frames differ a little and
there is no scene cut; the live demo's flicker figures (``demo/flicker.py``) are measured on it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from cpnet.runtime import UserError
from cpnet.runtime.files import check_output
from cpnet.runtime.log import get_logger

log = get_logger("data")

SYNTHETIC_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("sky", (70, 130, 180)),
    ("building", (70, 70, 70)),
    ("grass", (107, 142, 35)),
    ("road", (128, 64, 128)),
    ("water", (0, 110, 255)),
    ("car", (0, 0, 142)),
    ("boat", (255, 130, 0)),
    ("sand", (220, 190, 120)),
)
SYNTHETIC_NAMES = tuple(n for n, _ in SYNTHETIC_CLASSES)
SYNTHETIC_PALETTE = tuple(c for _, c in SYNTHETIC_CLASSES)
LOOKALIKE_PAIRS: tuple[tuple[str, str], ...] = (("car", "boat"), ("sand", "water"))

SKY, BUILDING, GRASS, ROAD, WATER, CAR, BOAT, SAND = range(8)
SPLIT_CODES = {"train": 0, "val": 1, "clip": 2}  # "clip": the motion clip's scene, drawn apart from both splits
GENERATOR_VERSION = 2

# Vehicle body colours (RGB), shared by cars and boats.
_VEHICLE_COLOURS = np.array([
    (200, 40, 35), (230, 230, 225), (235, 190, 40), (35, 35, 40), (60, 90, 160), (120, 125, 130), (30, 110, 60),
], dtype=np.float32)


# --------------------------------------------------------------------------- textures


def _lowfreq(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Smooth noise in about [-1, 1] (a coarse normal grid resized up)."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _jitter(rng, base, amount):
    return np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def _sky(rng, s):
    top = _jitter(rng, (95, 145, 215), 12)
    bottom = _jitter(rng, (180, 210, 238), 10)
    t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t
    return np.broadcast_to(img, (s, s, 3)) + 3 * _lowfreq(rng, s, 4)[..., None]


def _grass(rng, s):
    base = _jitter(rng, (70, 135, 50), 15)
    blotch = _lowfreq(rng, s, 10)[..., None] * np.array([8, 18, 6], np.float32)
    fine = rng.normal(0, 9, (s, s, 1)).astype(np.float32) * np.array([0.6, 1.0, 0.5], np.float32)
    return base + blotch + fine


def _road(rng, s):
    g = rng.uniform(80, 110)
    base = np.array([g, g, g + rng.uniform(0, 8)], np.float32)
    return base + 5 * _lowfreq(rng, s, 8)[..., None] + rng.normal(0, 5, (s, s, 1)).astype(np.float32)


def _water_like(rng, s):
    """The water appearance; shaded sand is drawn with this very function."""
    base = _jitter(rng, (40, 95, 150), 14)
    period = s * rng.uniform(0.04, 0.08)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    wob = 0.3 * np.sin(2 * np.pi * xx / (s * rng.uniform(0.2, 0.4)) + rng.uniform(0, 2 * np.pi))
    ripple = np.sin(2 * np.pi * (yy / period + wob) + rng.uniform(0, 2 * np.pi))
    img = base + (ripple * rng.uniform(8, 14))[..., None] * np.array([0.8, 1.0, 1.0], np.float32)
    return img + 6 * _lowfreq(rng, s, 6)[..., None]


def _lit_sand(rng, s):
    base = _jitter(rng, (208, 186, 138), 10)
    return base + 6 * _lowfreq(rng, s, 8)[..., None] + rng.normal(0, 8, (s, s, 1)).astype(np.float32)


def _paint(img, label, mask, appearance, cls):
    img[mask] = appearance[mask]
    label[mask] = cls


# --------------------------------------------------------------------------- shapes


def _place(rng, label, region_cls, bw, bh, margin, tries=30):
    """Top-left (x, y) of a bw x bh box whose margin-grown box is all ``region_cls``; None if none found."""
    s = label.shape[0]
    for _ in range(tries):
        x = int(rng.integers(margin, max(margin + 1, s - bw - margin)))
        y = int(rng.integers(margin, max(margin + 1, s - bh - margin)))
        y0, y1, x0, x1 = y - margin, y + bh + margin, x - margin, x + bw + margin
        if y0 < 0 or x0 < 0 or y1 > s or x1 > s:
            continue
        if (label[y0:y1, x0:x1] == region_cls).all():
            return x, y
    return None


def _vehicle(rng, img, label, region_cls, cls, s):
    """A car or a boat: the same shapes, colours and texture; only the region it sits in differs."""
    w = int(round(s * rng.uniform(0.18, 0.3)))
    body_h = max(3, int(round(w * rng.uniform(0.3, 0.4))))
    cab_h = max(2, int(round(body_h * rng.uniform(0.5, 0.8))))
    cab_w = max(3, int(round(w * rng.uniform(0.45, 0.6))))
    h = body_h + cab_h
    margin = max(2, int(round(0.3 * w)))
    pos = _place(rng, label, region_cls, w, h, margin)
    if pos is None:
        return False
    x, y = pos
    colour = _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))] + rng.uniform(-12, 12, 3).astype(np.float32)
    shape = np.zeros((s, s), np.uint8)
    cut = max(1, body_h // 3)
    by = y + cab_h
    body = np.array([[x + cut, by], [x + w - 1 - cut, by], [x + w - 1, by + cut], [x + w - 1, by + body_h - 1],
                     [x, by + body_h - 1], [x, by + cut]], np.int32)
    cx = x + int(rng.integers(0, w - cab_w + 1))
    slope = max(1, cab_h // 2)
    cab = np.array([[cx + slope, y], [cx + cab_w - 1 - slope, y], [cx + cab_w - 1, by], [cx, by]], np.int32)
    cv2.fillPoly(shape, [body, cab], 1)
    m = shape.astype(bool)
    texture = colour + rng.normal(0, 6, (s, s, 1)).astype(np.float32)
    texture[by + body_h // 2 : by + body_h // 2 + 1] *= 0.8  # a trim line along the body
    _paint(img, label, m, texture, cls)
    # A dark window strip inside the cabin, part of the object.
    win = np.zeros((s, s), np.uint8)
    wy0, wy1 = y + max(1, cab_h // 4), by - max(1, cab_h // 4)
    if wy1 > wy0:
        cv2.rectangle(win, (cx + slope + 1, wy0), (cx + cab_w - 2 - slope, wy1 - 1), 1, -1)
        wm = win.astype(bool) & m
        img[wm] = np.array([40, 50, 60], np.float32) + rng.normal(0, 5, (int(wm.sum()), 3)).astype(np.float32)
    return True


def _buildings(rng, img, label, s, ground_y):
    x = int(rng.integers(-s // 10, s // 20 + 1))
    while x < s:
        bw = int(round(s * rng.uniform(0.12, 0.28)))
        top = int(round(ground_y - s * rng.uniform(0.12, 0.4)))
        top = max(top, 1)
        if rng.random() < 0.15:  # a gap in the skyline
            x += bw // 2
            continue
        x0, x1 = max(x, 0), min(x + bw, s)
        if x1 > x0 and ground_y > top:
            base = rng.uniform(70, 170)
            tint = np.array([base + rng.uniform(0, 25), base + rng.uniform(-5, 12), base - rng.uniform(0, 15)],
                            np.float32)
            block = tint + rng.normal(0, 4, (ground_y - top, x1 - x0, 3)).astype(np.float32)
            # Window grid.
            step = max(3, int(round(s * rng.uniform(0.035, 0.055))))
            win = max(1, step // 2)
            dark = rng.random() < 0.6
            wc = np.array([45, 50, 65] if dark else [225, 215, 150], np.float32)
            for wy in range(2, ground_y - top - win - 1, step):
                for wx in range(2 + (x0 - x) % step, x1 - x0 - win - 1, step):
                    block[wy : wy + win, wx : wx + win] = wc
            img[top:ground_y, x0:x1] = block
            label[top:ground_y, x0:x1] = BUILDING
        x += bw
    return img, label


def _wavy_boundary(rng, s, y_mean, amp):
    xs = np.arange(s, dtype=np.float32)
    phase, period = rng.uniform(0, 2 * np.pi), s * rng.uniform(0.3, 0.8)
    return y_mean + amp * np.sin(2 * np.pi * xs / period + phase)


def _rows_below(s, boundary):
    yy = np.arange(s, dtype=np.float32)[:, None]
    return yy >= boundary[None, :]


# --------------------------------------------------------------------------- scenes


def _scene_city(rng, img, label, s):
    horizon = int(s * rng.uniform(0.3, 0.42))
    ground = horizon + int(s * rng.uniform(0.04, 0.1))
    _buildings(rng, img, label, s, ground)
    road_top = ground + int(s * rng.uniform(0.06, 0.14))
    label_grass = np.zeros((s, s), bool)
    label_grass[ground:road_top] = True
    _paint(img, label, label_grass, _grass(rng, s), GRASS)
    road = np.zeros((s, s), bool)
    road[road_top:] = True
    if rng.random() < 0.4:  # a grass verge at the bottom
        road &= ~_rows_below(s, _wavy_boundary(rng, s, s * rng.uniform(0.9, 0.97), s * 0.02))
        verge = ~road & (np.arange(s)[:, None] >= road_top)
        _paint(img, label, verge, _grass(rng, s), GRASS)
    road_img = _road(rng, s)
    mid = (road_top + (np.flatnonzero(road.any(1))[-1] if road.any() else s - 1)) // 2
    dash, th = max(3, s // 16), max(1, s // 64)
    off = int(rng.integers(0, 2 * dash))
    for x0 in range(-off, s, 2 * dash):
        road_img[mid - th // 2 : mid - th // 2 + th, max(x0, 0) : max(x0 + dash, 0)] = rng.uniform(190, 225)
    _paint(img, label, road, road_img, ROAD)
    for _ in range(int(rng.integers(2, 5))):
        _vehicle(rng, img, label, ROAD, CAR, s)


def _shaded_patches(rng, img, label, s, n):
    for _ in range(n):
        a = max(3, int(round(s * rng.uniform(0.06, 0.13))))
        b = max(2, int(round(a * rng.uniform(0.45, 0.8))))
        margin = max(3, int(round(0.5 * b)))
        pos = _place(rng, label, SAND, 2 * a, 2 * b, margin)
        if pos is None:
            continue
        x, y = pos
        m = np.zeros((s, s), np.uint8)
        cv2.ellipse(m, (x + a, y + b), (a, b), float(rng.uniform(-15, 15)), 0, 360, 1, -1)
        m = m.astype(bool) & (label == SAND)
        img[m] = _water_like(rng, s)[m]  # shaded sand looks exactly like water; label stays sand


def _scene_coast(rng, img, label, s):
    horizon = int(s * rng.uniform(0.25, 0.4))
    shore = _wavy_boundary(rng, s, horizon + s * rng.uniform(0.2, 0.32), s * rng.uniform(0.01, 0.04))
    sea = np.zeros((s, s), bool)
    sea[horizon:] = True
    beach = _rows_below(s, shore) & sea
    sea &= ~beach
    _paint(img, label, sea, _water_like(rng, s), WATER)
    _paint(img, label, beach, _lit_sand(rng, s), SAND)
    if rng.random() < 0.35:  # a grass dune in a bottom corner
        cx = 0 if rng.random() < 0.5 else s - 1
        dune = np.zeros((s, s), np.uint8)
        cv2.ellipse(dune, (cx, s - 1), (int(s * rng.uniform(0.15, 0.3)), int(s * rng.uniform(0.08, 0.16))),
                    0, 0, 360, 1, -1)
        _paint(img, label, dune.astype(bool) & beach, _grass(rng, s), GRASS)
    if rng.random() < 0.3:  # a few beach houses on the horizon
        _buildings(rng, img, label, s, horizon)
    for _ in range(int(rng.integers(2, 5))):
        _vehicle(rng, img, label, WATER, BOAT, s)
    _shaded_patches(rng, img, label, s, int(rng.integers(1, 3)))


def _scene_harbour(rng, img, label, s):
    horizon = int(s * rng.uniform(0.28, 0.4))
    ground = horizon + int(s * rng.uniform(0.03, 0.08))
    _buildings(rng, img, label, s, ground)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    split = s * rng.uniform(0.38, 0.62) + (yy - ground) * rng.uniform(-0.3, 0.3)
    road_left = rng.random() < 0.5
    below = yy >= ground
    left = xx < split
    road = below & (left if road_left else ~left)
    water = below & ~road
    _paint(img, label, water, _water_like(rng, s), WATER)
    _paint(img, label, road, _road(rng, s), ROAD)
    # A thin quay edge (grass) between them, so neither region touches the other directly.
    edge = below & (np.abs(xx - split) < max(1.0, s / 64))
    _paint(img, label, edge, _grass(rng, s), GRASS)
    for _ in range(int(rng.integers(1, 3))):
        _vehicle(rng, img, label, ROAD, CAR, s)
    for _ in range(int(rng.integers(1, 3))):
        _vehicle(rng, img, label, WATER, BOAT, s)


_SCENES = ((_scene_city, 0.35), (_scene_coast, 0.35), (_scene_harbour, 0.30))


def make_sample(seed: int, split: str, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, uint8 label) pair; a pure function of its arguments."""
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    s = int(size)
    label = np.full((s, s), SKY, np.uint8)
    img = np.ascontiguousarray(_sky(rng, s), dtype=np.float32)
    probs = np.array([p for _, p in _SCENES])
    scene = _SCENES[int(rng.choice(len(_SCENES), p=probs / probs.sum()))][0]
    scene(rng, img, label, s)
    img = img * rng.uniform(0.85, 1.15)  # global illumination
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img = img + rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


# --------------------------------------------------------------------------- the motion clip

#: The motion clip's defaults: 90 frames at 15 fps (6 s).
CLIP_FRAMES = 90
CLIP_FPS = 15.0


def motion_frames(seed: int = 0, size: int = 128, side: int = 512, frames: int = CLIP_FRAMES, noise: float = 2.0):
    """The motion clip's frames (BGR uint8, side x side), one at a time: a slow pan and zoom over one scene.

    The scene is drawn at 1.5 x ``size`` (the training images' side), so a window of 0.6-0.8 of it holds
    textures at about the training scale; the window's centre moves from 40% to 60% of the scene's width
    and its side shrinks from 80% to 60% (a zoom in), sampled with sub-pixel bilinear warps, and each
    frame gets fresh Gaussian noise of ``noise`` grey levels, as a camera's. A pure function of its arguments.
    """
    rgb, _ = make_sample(seed, "clip", 0, int(round(1.5 * size)))
    scene = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    n = scene.shape[0]
    rng = np.random.default_rng([int(seed), SPLIT_CODES["clip"], 1])
    for i in range(frames):
        t = i / max(1, frames - 1)
        window = n * (0.8 - 0.2 * t)
        cx, cy = n * (0.4 + 0.2 * t), n * (0.5 + 0.05 * t)
        k = side / window  # scene pixels -> frame pixels
        m = np.array([[k, 0.0, side / 2 - k * cx], [0.0, k, side / 2 - k * cy]], np.float32)
        frame = cv2.warpAffine(scene, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if noise:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        yield frame


def write_motion_clip(path: "str | Path", seed: int = 0, size: int = 128, side: int = 512,
                      frames: int = CLIP_FRAMES, fps: float = CLIP_FPS) -> Path:
    """:func:`motion_frames` as an mp4 (mp4v) at ``fps``, written as every video is
    (:class:`cpnet.runtime.video.VideoFile`: a temporary name, read back whole, then moved into place)."""
    from cpnet.runtime.video import VideoFile

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise UserError(f"{path}: the motion clip is written as .mp4")
    video = VideoFile(path, fps, hint="no FFmpeg in this OpenCV build?")
    try:
        for frame in motion_frames(seed, size, side, frames):
            video.write(frame)
    except BaseException:
        video.discard()
        raise
    return video.close()


# --------------------------------------------------------------------------- writing


def _encode_png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def classes_yaml_text(header: str = "") -> str:
    entries = [{"name": n, "color": list(c)} for n, c in SYNTHETIC_CLASSES]
    body = "\n".join(f"- {{name: {e['name']}, color: [{', '.join(map(str, e['color']))}]}}" for e in entries)
    assert yaml.safe_load(body) == entries
    return header + body + "\n"


#: What ``cpnet data`` writes in its folder, and nothing else.
_SPLIT_FOLDERS = {f"{kind}/{split}" for kind in ("images", "masks") for split in ("train", "val")}
HEADER_START = "# cpnet synthetic dataset"


def foreign_files(out: Path) -> list[str]:
    """What in ``out`` cpnet data did not make (empty: it is new, empty, or a synthetic dataset and only that)."""
    if not out.is_dir():
        return []
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return []
    try:
        header = (out / "classes.yaml").read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        header = ""
    if not header.startswith(HEADER_START):
        return entries
    foreign = [e for e in entries if e not in ("classes.yaml", "images", "masks")]
    for p in out.rglob("*"):
        rel = p.relative_to(out).as_posix()
        if p.is_dir():
            if rel not in _SPLIT_FOLDERS and rel not in ("images", "masks"):
                foreign.append(rel)
        elif rel != "classes.yaml" and not (p.parent.relative_to(out).as_posix() in _SPLIT_FOLDERS
                                            and p.name.startswith("syn_") and p.suffix == ".png"):
            foreign.append(rel)
    return sorted(set(foreign))


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, a folder that holds anything cpnet data did not make; a synthetic dataset is
    replaced only with ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; give a folder for the dataset")
    foreign = foreign_files(out)
    if foreign:
        raise UserError(f"{out}: holds files cpnet data did not make ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); it writes only into a new or empty folder or over "
                        f"its own dataset: choose another -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        try:
            what = (out / "classes.yaml").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        except (OSError, IndexError):
            what = "a synthetic dataset"
        raise UserError(f"{out}: already holds a dataset ({what}); pass --overwrite to replace it, "
                        f"or choose another -o")


def generate(out: "str | Path", n_train: int = 400, n_val: int = 100, size: int = 128, seed: int = 0,
             progress: bool = False, overwrite: bool = False) -> Path:
    """Write the synthetic dataset to ``out`` in the folder format; return ``out``.

    ``out`` must be new, empty, or (with ``overwrite``) a synthetic dataset and nothing else
    (:func:`check_target`). The dataset is written into a scratch folder beside ``out`` and
    renamed into place whole, so a full disk or a kill leaves no partial image under ``out``.
    """
    from cpnet.runtime.files import disk_full_error, is_disk_full, scratch_dir

    out = Path(out)
    if n_train < 1 or n_val < 0:
        raise UserError(f"--train must be >= 1 and --val >= 0 (got {n_train}, {n_val})")
    if size < 32:
        raise UserError(f"--size must be at least 32 (got {size})")
    check_target(out, overwrite)
    counts = {"train": n_train, "val": n_val}
    try:
        with scratch_dir("data", near=out) as tmp:
            for split, n in counts.items():
                for kind in ("images", "masks"):
                    (tmp / kind / split).mkdir(parents=True)
            for split, n in counts.items():
                for i in range(n):
                    img, lab = make_sample(seed, split, i, size)
                    name = f"syn_{i:05d}.png"
                    (tmp / "images" / split / name).write_bytes(_encode_png(cv2.cvtColor(img, cv2.COLOR_RGB2BGR)))
                    (tmp / "masks" / split / name).write_bytes(_encode_png(lab))
                    if progress and (i + 1) % 100 == 0:
                        log.info(f"{split}: {i + 1}/{n}")
            header = (f"{HEADER_START} v{GENERATOR_VERSION}: seed {seed}, size {size}, "
                      f"train {n_train}, val {n_val}\n# look-alike pairs: "
                      + ", ".join(f"{a}/{b}" for a, b in LOOKALIKE_PAIRS) + "\n")
            (tmp / "classes.yaml").write_text(classes_yaml_text(header), encoding="utf-8")
            _replace_dir(tmp, out)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(out, e) from None
        raise
    return out


def _replace_dir(new: Path, out: Path) -> None:
    """Put the folder ``new`` where ``out`` is: an empty or missing ``out`` in one rename, an old dataset
    (already checked to be one) moved aside first and removed after."""
    import os
    import shutil

    if out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.is_dir():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, out)


DESCRIPTION = """Write the built-in synthetic dataset (a context-dependent street/beach scene) in cpnet's folder format.

Deterministic: the same options give the same bytes. Nothing is downloaded. With --clip FILE it writes
only a short video instead: a slow pan and zoom over one scene, for the live demo and its flicker figures."""

EXAMPLES = """cpnet data                                   # -> data/synthetic (400 train + 100 val, 128 px)
cpnet data -o data/syn256 --size 256 --train 800
cpnet data --clip clip.mp4                   # a 6-second pan and zoom over one scene (512x512, 15 fps)"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_output(p, "output folder (default data/synthetic)")
    p.add_argument("--train", type=cli_args.non_negative_int, default=400, metavar="N", help="training images (default 400)")
    p.add_argument("--val", type=cli_args.non_negative_int, default=100, metavar="N", help="validation images (default 100)")
    p.add_argument("--size", type=cli_args.int_in(32, 4096), default=128, metavar="PIXELS",
                   help="image side in pixels, 32 to 4096 (default 128)")
    p.add_argument("--seed", type=cli_args.non_negative_int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the synthetic dataset already in the folder (a folder holding anything else is "
                        "always refused)")
    c = p.add_argument_group("motion clip")
    c.add_argument("--clip", metavar="FILE.mp4",
                   help="write only a video with a slow pan and zoom over one scene (--size: the scene's scale, as "
                        "the training images'), not the dataset")
    c.add_argument("--clip-side", type=cli_args.positive_int, default=512, metavar="PIXELS",
                   help="the clip's frame side (default 512)")
    c.add_argument("--clip-frames", type=cli_args.positive_int, default=CLIP_FRAMES, metavar="N",
                   help=f"frames in the clip (default {CLIP_FRAMES}, at {CLIP_FPS:g} fps)")


def run(args) -> int:
    if args.clip:
        clip = check_output(args.clip, what="clip")
        if clip.exists() and not args.overwrite:  # it may be the user's own video: never replaced unasked
            raise UserError(f"{clip}: exists; pass --overwrite to replace it with the motion clip, or name another file")
        write_motion_clip(clip, args.seed, args.size, args.clip_side, args.clip_frames)
        print(f"wrote {clip}: {args.clip_frames} frames of {args.clip_side}x{args.clip_side} at {CLIP_FPS:g} fps, "
              f"a slow pan and zoom over one scene")
        return 0
    out = check_output(args.output or "data/synthetic", kind="dir")
    t0 = time.perf_counter()
    generate(out, args.train, args.val, args.size, args.seed, progress=True, overwrite=args.overwrite)
    print(f"wrote {args.train} train + {args.val} val images of {args.size}x{args.size} to {out} "
          f"in {time.perf_counter() - t0:.1f} s (classes: {', '.join(SYNTHETIC_NAMES)})")
    return 0


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb(__name__, argv)


if __name__ == "__main__":
    sys.exit(main())
