"""Activation statistics for INT8 calibration: exact histogram doubling, the range methods, the saved file."""

from __future__ import annotations

import numpy as np
import pytest

from quantize import calibrate


def test_histogram_doubling_is_exact_and_methods_order():
    acc = calibrate._Accumulator()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(5000).astype(np.float32) * s for s in (1, 3, 10)]
    for x in xs:
        acc.update(x, lambda n: None)
    allx = np.concatenate(xs)
    assert acc.hist.sum() == allx.size
    assert acc.lo == allx.min() and acc.hi == allx.max() and acc.edge >= np.abs(allx).max()
    # the doubled histogram equals one built at the final range in one go
    half = calibrate.NUM_BINS // 2
    b = np.clip(np.floor(allx.astype(np.float64) * (half / acc.edge)).astype(np.int64) + half, 0,
                calibrate.NUM_BINS - 1)
    assert np.array_equal(acc.hist, np.bincount(b, minlength=calibrate.NUM_BINS))
    st = calibrate.RangeStats(["t"], np.array([acc.lo], np.float32), np.array([acc.hi], np.float32),
                              np.array([acc.edge]), acc.hist[None])
    amax = float(np.abs(allx).max())
    mm = st.ranges("minmax", True)["t"]
    pc = st.ranges("percentile", True, 99.0)["t"]
    en = st.ranges("entropy", True)["t"]
    assert mm == pytest.approx((-amax, amax))
    assert 0 < pc[1] < amax and pc[1] == pytest.approx(np.percentile(np.abs(allx), 99.0), rel=0.05)
    assert 0 < en[1] <= amax
    lo, hi = st.ranges("minmax", False)["t"]
    assert (lo, hi) == pytest.approx((float(acc.lo), float(acc.hi)))


def test_entropy_range_keeps_an_offset_distribution():
    """A sigmoid-like tensor far from zero must not be clipped to its lower edge (the KL method's blind spot)."""
    acc = calibrate._Accumulator()
    x = np.random.default_rng(1).uniform(0.35, 0.65, 20000).astype(np.float32)
    acc.update(x, lambda n: None)
    st = calibrate.RangeStats(["s"], np.array([acc.lo], np.float32), np.array([acc.hi], np.float32),
                              np.array([acc.edge]), acc.hist[None])
    for sym in (True, False):
        lo, hi = st.ranges("entropy", sym)["s"]
        assert hi >= 0.64


def test_corrupt_ranges_file_is_a_user_error(tmp_path):
    from cpnet.runtime import UserError

    bad = tmp_path / "r.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a cpnet calibration ranges file"):
        calibrate.RangeStats.load(bad)


def test_a_folder_of_label_maps_is_refused_as_calibration_data(tiny_data):
    from cpnet.runtime import UserError
    from quantize.calib_data import resolve_calibration_source

    assert resolve_calibration_source(tiny_data / "images" / "train").paths
    with pytest.raises(UserError, match="look like label maps"):
        resolve_calibration_source(tiny_data / "masks" / "train")
