"""demo.render: colours, the three modes, legend, HUD, and the context-prior view for a fixed point."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cpnet.runtime.draw import colorize, heatmap
from demo.live_loop import View
from demo.render import (Renderer, bgr_lut, cell_of, classes_present, colorize_bgr, draw_prior, prior_grid,
                         prior_row)

PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 200, 0]]
NAMES = ["red", "green", "blue", "olive"]


def _labels():
    lab = np.zeros((12, 16), np.uint8)
    lab[:, 8:] = 1
    lab[:4, :4] = 2
    return lab


def test_colorize_bgr_is_the_runtime_colouriser_in_bgr():
    lab = _labels()
    lab[0, 0] = 255  # ignored: black
    lut = bgr_lut(PALETTE)
    assert (colorize_bgr(lab, lut) == colorize(lab, PALETTE)[:, :, ::-1]).all()


def test_classes_present_largest_first():
    present = classes_present(_labels(), 4)
    assert [c for c, _ in present] == [1, 0, 2]
    assert sum(s for _, s in present) == pytest.approx(1.0)


@pytest.mark.parametrize("mode,width", [("overlay", 64), ("side-by-side", 128), ("mask", 64)])
def test_modes_legend_and_hud(mode, width):
    frame = np.full((48, 64, 3), 90, np.uint8)
    r = Renderer(NAMES, PALETTE, hud_lines=lambda: ["12.0 FPS", "ms infer 3.0"])
    plain = Renderer(NAMES, PALETTE, legend=False)
    img = r.draw(frame, _labels(), None, View(mode=mode, alpha=0.5))
    bare = plain.draw(frame, _labels(), None, View(mode=mode, alpha=0.5, hud=False))
    assert img.shape == (48, width, 3) and bare.shape == img.shape
    assert (img != bare).any()  # legend and HUD drew something
    h, w = bare.shape[:2]
    # away from the text: the class colours (labels at a quarter of the frame's size, enlarged)
    colour_x = w - 2 if mode != "mask" else 60
    expected_bgr = np.array(PALETTE[1][::-1])
    px = bare[40, colour_x].astype(int)
    if mode == "overlay":
        assert np.abs(px - (0.5 * 90 + 0.5 * expected_bgr)).max() <= 1
    else:
        assert (px == expected_bgr).all()
    if mode == "side-by-side":
        assert (bare[40, 10] == 90).all()  # the frame itself on the left


def test_prior_grid_and_cells():
    assert prior_grid(16) == (4, 4) and prior_grid(12, [3, 4]) == (3, 4)
    with pytest.raises(ValueError):
        prior_grid(12)
    assert cell_of((0, 0), (480, 640), (4, 4)) == (0, 0)
    assert cell_of((639, 479), (480, 640), (4, 4)) == (3, 3)
    assert cell_of((500, 150), (480, 640), (4, 4)) == (1, 3)
    assert cell_of((5000, -3), (480, 640), (4, 4)) == (0, 3)  # clamped


def test_prior_row_is_the_row_of_the_pixel_under_the_point():
    n = 16
    p = np.arange(n * n, dtype=np.float32).reshape(n, n) / (n * n)
    row, cell = prior_row(p[None], (500, 150), (480, 640))
    assert cell == (1, 3) and (row.ravel() == p[1 * 4 + 3]).all() and row.shape == (4, 4)


def test_prior_view_draws_exactly_the_row():
    """Mask mode with the prior on: the picture is the row's heat map (one block per cell) plus the marker."""
    rng = np.random.default_rng(0)
    p = rng.random((16, 16)).astype(np.float32)
    frame = np.full((96, 128, 3), 128, np.uint8)
    r = Renderer(NAMES, PALETTE, legend=False)
    point = (80, 60)
    img = r.draw(frame, _labels(), p, View(mode="mask", show_prior=True, point=point, hud=False))
    row, cell = prior_row(p, point, (96, 128))
    assert cell == (2, 2)
    expected = heatmap(row, (96, 128))[:, :, ::-1]
    mask = np.ones((96, 128), bool)
    mask[max(0, point[1] - 12):point[1] + 12, max(0, point[0] - 12):point[0] + 12] = False  # the marker
    assert (img[mask] == expected[mask]).all()
    # the brightest block is the cell the row rates highest
    lum = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(float)
    lum[~mask] = np.nan
    blocks = np.nanmean(lum.reshape(4, 24, 4, 32), axis=(1, 3))
    assert np.unravel_index(np.nanargmax(blocks), blocks.shape) == np.unravel_index(row.argmax(), row.shape)
    # overlay mode: the heat map blended over the frame, no class colours and no legend
    over = Renderer(NAMES, PALETTE).draw(frame, _labels(), p, View(mode="overlay", show_prior=True, point=point,
                                                                   hud=False, alpha=0.5))
    assert (over == draw_prior(frame, row, point, 0.5)).all()
