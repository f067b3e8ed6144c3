"""demo.live_loop: the hand-over mailboxes, frame drops under a slow model, timings, the model runner."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from demo.live_loop import (CLOSED, TIMEOUT, Mailbox, LiveLoop, Runner, Stats, View, ViewState, check_no_drop,
                           labels_from_logits)
from demo.sources import FrameSource, SourceSpec
from demo_doubles import FlakyCamera, ScriptedOpener, SlowModel


def test_mailbox_drop_keeps_the_newest_and_counts():
    box = Mailbox(drop=True)
    for i in range(4):
        assert box.put(i)
    assert box.dropped == 3 and box.get(0) == 3 and box.get(0.01) is TIMEOUT
    box.put(9)
    box.close()
    assert box.get(0) == 9 and box.get(0) is CLOSED and not box.put(10)


def test_mailbox_without_drop_delivers_everything_in_order():
    box = Mailbox(capacity=1)
    got = []

    def consume():
        while (item := box.get(1.0)) is not CLOSED:
            time.sleep(0.002)
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(20):
        assert box.put(i)
    box.close()
    t.join(5)
    assert got == list(range(20)) and box.dropped == 0


def test_stats_means_and_fps():
    s = Stats()
    for i in range(11):
        s.record({"infer": 10.0 + i, "capture": 1.0}, at=100.0 + 0.1 * i)
    assert s.shown == 11 and s.mean_fps == pytest.approx(10.0)
    assert s.mean_ms()["infer"] == pytest.approx(15.0) and s.mean_ms()["draw"] is None
    assert s.fps == pytest.approx(10.0)
    assert 10.0 < s.recent_ms()["infer"] < 20.0


def test_labels_from_logits_is_the_argmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 5, 8, 6)).astype(np.float32)
    labels = labels_from_logits(logits)
    assert labels.dtype == np.uint8 and (labels == logits[0].argmax(0)).all()
    big = labels_from_logits(logits, (16, 12))
    assert big.shape == (16, 12) and (big[::2, ::2] == labels).all()


def test_view_state_versions_and_keys():
    v = ViewState(View(mode="overlay", alpha=0.95))
    assert v.cycle_mode() == "side-by-side" and v.cycle_mode() == "mask" and v.cycle_mode() == "overlay"
    assert v.nudge_alpha(0.1) == 1.0 and v.nudge_alpha(-0.3) == 0.7
    before = v.get().version
    v.update(paused=True)
    assert v.get().version == before + 1 and v.get().paused


def _run(pipeline: LiveLoop) -> list:
    out = []
    pipeline.start()
    while (item := pipeline.get(0.1)) is not CLOSED:
        if item is not TIMEOUT:
            out.append(item)
    pipeline.join()
    return out


def _draw(frame, labels, prior, view):
    return frame


def test_a_slow_model_drops_frames_but_never_stalls_capture():
    model = SlowModel(delay=0.04)
    cam = FlakyCamera(40, period=0.005)  # 200 frames per second, then gone
    src = FrameSource(SourceSpec("camera", 0, "0"), opener=ScriptedOpener([cam]), backoff=())
    pipe = LiveLoop(src, Runner(model), model.manifest, _draw, ViewState())
    t0 = time.perf_counter()
    out = _run(pipe)
    elapsed = time.perf_counter() - t0
    assert src.frames == 40
    assert pipe.dropped > 10 and len(out) + pipe.dropped == 40  # every frame is either shown or counted as dropped
    assert len(out) == model.calls
    assert elapsed < 40 * 0.04  # capture did not wait for the model
    idx = [d.frame.index for d in out]
    assert idx == sorted(idx) and idx[-1] == 39  # the newest frame is processed, the last one too
    for d in out:
        assert set(d.frame.timings) == {"capture", "preprocess", "infer", "postprocess", "draw"}
        assert d.frame.timings["infer"] >= 35.0


def test_no_drop_processes_every_frame_of_a_file():
    model = SlowModel(delay=0.01)
    spec = SourceSpec("file", "fake.mp4", "fake.mp4")
    src = FrameSource(spec, opener=ScriptedOpener([FlakyCamera(15)]))
    pipe = LiveLoop(src, Runner(model), model.manifest, _draw, ViewState(), no_drop=True)
    out = _run(pipe)
    assert [d.frame.index for d in out] == list(range(15)) and pipe.dropped == 0
    with pytest.raises(Exception, match="--no-drop is for a file or folder"):
        check_no_drop(True, True)
    check_no_drop(False, True)


def test_fps_cap_and_max_frames():
    model = SlowModel(delay=0.0)
    src = FrameSource(SourceSpec("file", "f", "f"), opener=ScriptedOpener([FlakyCamera(50)]))
    pipe = LiveLoop(src, Runner(model), model.manifest, _draw, ViewState(), no_drop=True, fps_cap=50.0, max_frames=10)
    t0 = time.perf_counter()
    out = _run(pipe)
    assert len(out) == 10 and src.frames == 10
    assert time.perf_counter() - t0 >= 9 / 50.0 * 0.9


def test_a_worker_error_reaches_the_caller():
    class Broken(SlowModel):
        def infer(self, batch):
            raise ValueError("the model broke")

    model = Broken()
    src = FrameSource(SourceSpec("file", "f", "f"), opener=ScriptedOpener([FlakyCamera(5)]))
    pipe = LiveLoop(src, Runner(model), model.manifest, _draw, ViewState(), no_drop=True)
    with pytest.raises(ValueError, match="the model broke"):
        _run(pipe)


def test_runner_without_a_prior_says_why(tiny_onnx, tiny_prior_onnx):
    from engines.backends.onnxruntime_backend import OnnxModel

    with OnnxModel(tiny_onnx, threads=1) as m:
        r = Runner(m)
        assert not r.has_prior and "--with-prior" in r.why_no_prior
        logits, prior = r.run(np.zeros((1, 3, 32, 32), np.float32), want_prior=True)
        assert logits.shape == (1, 8, 32, 32) and prior is None
    with OnnxModel(tiny_prior_onnx, threads=1) as m:
        r = Runner(m)
        assert r.has_prior
        logits, prior = r.run(np.zeros((1, 3, 32, 32), np.float32), want_prior=True)
        assert logits.shape == (1, 8, 32, 32) and prior.shape == (16, 16)
        assert r.run(np.zeros((1, 3, 32, 32), np.float32))[1] is None  # only when asked for
    r = Runner(SlowModel(0))
    assert not r.has_prior and "has no prior output" in r.why_no_prior
    slow = SlowModel(0)
    slow.manifest["prior"] = {"output": "prior", "grid": [4, 4]}  # an engine built from a --with-prior file
    r = Runner(slow)
    assert not r.has_prior and "the slow backend does not return it" in r.why_no_prior


def test_runner_gives_the_prior_of_a_checkpoint(tiny_checkpoint, tiny_prior_onnx):
    import engines
    from engines.backends.onnxruntime_backend import OnnxModel

    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with engines.open(tiny_checkpoint, device="cpu", threads=1) as tm, OnnxModel(tiny_prior_onnx, threads=1) as om:
        r = Runner(tm)
        assert r.has_prior
        logits, prior = r.run(x, want_prior=True)
        o_logits, o_prior = Runner(om).run(x, want_prior=True)
        assert np.abs(prior - o_prior).max() <= 1e-4 and np.abs(logits - o_logits).max() <= 1e-3
        assert np.abs(logits - tm.infer(x)).max() <= 1e-5


def test_prepare_is_preprocess_bgr_bit_for_bit():
    from cpnet.runtime.preprocess import preprocess_bgr
    from demo.live_loop import prepare

    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    manifest = {"input_size": [96, 128], "mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}
    assert np.array_equal(prepare(frame, manifest), preprocess_bgr(frame, manifest))


def test_a_tensorrt_engine_without_a_prior_output_names_the_with_prior_build_not_a_missing_feature():
    # TensorRT engines return the prior (engines.backends.tensorrt_backend: infer_all, output_names): one
    # without it was built from an ONNX file exported without --with-prior
    from cpnet.runtime.backend import Backend

    class Engine(Backend):
        name, output_names = "tensorrt", ["logits"]

        def __init__(self):
            super().__init__("model.engine", {})

        def infer(self, batch):
            return batch

    r = Runner(Engine())
    assert not r.has_prior and "yet" not in r.why_no_prior
    assert "--with-prior" in r.why_no_prior and "cpnet build" in r.why_no_prior
