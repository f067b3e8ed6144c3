"""Flicker, measured and smoothed (demo/flicker.py): the label-change rates, the EMA of the probabilities, and
their place in cpnet demo's summary; the motion clip they are measured on (cpnet data --clip)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpnet import cli
from cpnet.data.synthetic import CLIP_FRAMES, motion_frames
from demo.flicker import CUT_THRESHOLD, FlickerMeter, ProbabilitySmoother, Temporal, grey_at, softmax
from demo_doubles import video_info


def test_change_rate_overall_and_where_the_input_was_still():
    m = FlickerMeter(still_threshold=5)
    grey = np.zeros((4, 4), np.float32)
    labels = np.zeros((4, 4), np.uint8)
    m.update(labels, grey)
    assert m.figures()["change_pct"] is None  # one frame: nothing to compare yet
    moved = grey.copy()
    moved[:, :2] = 100  # the left half of the input changed, the right half did not
    flipped = labels.copy()
    flipped[0, :] = 1   # 4 pixels change class: 2 where the input moved, 2 where it was still
    m.update(flipped, moved)
    f = m.figures()
    assert f["change_pct"] == pytest.approx(100 * 4 / 16)
    assert f["still_change_pct"] == pytest.approx(100 * 2 / 8)
    m.update(flipped, moved)  # nothing changes: the mean over the two pairs halves
    f = m.figures()
    assert f["pairs"] == 2 and f["change_pct"] == pytest.approx(100 * 2 / 16, abs=1e-3)
    assert f["still_change_pct"] == pytest.approx(100 * 2 / 24, abs=1e-3)


def test_a_scene_cut_is_not_counted():
    t = Temporal()
    frame = np.zeros((8, 8, 3), np.uint8)
    logits = np.zeros((1, 2, 8, 8), np.float32)
    t(frame, logits)
    other = logits.copy()
    other[:, 1] = 1.0  # every pixel changes class ...
    t(np.full_like(frame, 255), other)  # ... on a frame that is another scene
    f = t.figures()["raw"]
    assert f["pairs"] == 0 and f["scene_cuts"] == 1 and f["change_pct"] is None
    t(np.full_like(frame, 255), logits)  # the same scene, every pixel changes back: counted
    assert t.figures()["raw"]["change_pct"] == pytest.approx(100.0)


def test_the_smoother_is_an_ema_of_the_probabilities_and_resets():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 1, 3, 4, 5)).astype(np.float32)
    s = ProbabilitySmoother(0.25)
    assert np.allclose(s(a), softmax(a))
    assert np.allclose(s(b), 0.25 * softmax(b) + 0.75 * softmax(a), atol=1e-6)
    s.reset()
    assert np.allclose(s(b), softmax(b))
    assert np.allclose(ProbabilitySmoother(1.0)(b), softmax(b))
    with pytest.raises(ValueError):
        ProbabilitySmoother(0.0)


def test_smoothing_lowers_the_flicker_of_a_noisy_near_tie():
    """A still input whose two classes are almost tied: noise flips the argmax from frame to frame, the EMA does
    not follow every flip. Both rates come out of the same run."""
    rng = np.random.default_rng(1)
    frame = np.full((16, 16, 3), 90, np.uint8)
    t = Temporal(smooth=0.2)
    for _ in range(40):
        logits = np.zeros((1, 2, 16, 16), np.float32)
        logits[:, 1] = 0.2 + rng.normal(0, 0.5, (16, 16))
        t(frame, logits)
    f = t.figures()
    raw, smoothed = f["raw"]["still_change_pct"], f["smoothed"]["still_change_pct"]
    assert raw > 20 and smoothed < raw / 2, (raw, smoothed)
    assert f["raw"]["change_pct"] == pytest.approx(raw)  # a still input: every pixel is "still"
    assert f["smooth"] == 0.2 and f["smooth_ms_per_frame"] >= 0


def test_motion_clip_moves_slowly_without_a_cut(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert cli.main(["data", "--clip", str(out), "--size", "32", "--clip-side", "96", "--clip-frames", "20"]) == 0
    assert "20 frames of 96x96" in capsys.readouterr().out
    assert video_info(out) == (20, 96, 96)
    frames = list(motion_frames(size=32, side=96, frames=20))
    again = list(motion_frames(size=32, side=96, frames=20))
    assert all((a == b).all() for a, b in zip(frames, again))  # a pure function of its arguments
    greys = [grey_at(f, (24, 24)) for f in frames]
    steps = [float(np.abs(b - a).mean()) for a, b in zip(greys, greys[1:])]
    assert 0 < max(steps) < CUT_THRESHOLD / 4  # every frame moves a little: no scene cut
    assert float(np.abs(greys[-1] - greys[0]).mean()) > max(steps)  # and the moves add up
    assert CLIP_FRAMES >= 60  # the pipeline's clip is long enough to measure flicker on (4 s at 15 fps)


def test_demo_summary_reports_flicker_with_and_without_smoothing(tiny_onnx, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    assert cli.main(["data", "--clip", str(clip), "--size", "32", "--clip-side", "64", "--clip-frames", "12"]) == 0
    js = tmp_path / "s.json"
    rc = cli.main(["demo", str(tiny_onnx), "-s", str(clip), "--headless", "--no-drop", "--smooth", "0.5",
                   "--json", str(js), "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    s = json.loads(js.read_text())["flicker"]
    assert s["raw"]["pairs"] == 11 and s["smoothed"]["pairs"] == 11 and s["smooth"] == 0.5
    assert 0 <= s["raw"]["change_pct"] <= 100 and s["smooth_ms_per_frame"] is not None
    assert "flicker: " in out and "flicker with --smooth 0.5: " in out and "ms per frame" in out


@pytest.mark.parametrize("value", ["0", "1.5", "x"])
def test_smooth_weight_out_of_range_is_a_usage_error(value, tiny_onnx, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", str(tiny_onnx), "--headless", "--smooth", value])
    assert e.value.code == 2 and "--smooth" in capsys.readouterr().err
