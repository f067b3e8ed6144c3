"""Test doubles for the live demo: a slow model, a camera that fails after k frames, a camera of noise, a
scripted opener, and a generated video clip."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from cpnet.runtime.backend import Backend
from demo.sources import SourceError


class SlowModel(Backend):
    """A backend whose ``infer`` takes ``delay`` seconds; logits: class 1 where the red channel is bright."""

    name = "slow"

    def __init__(self, delay: float = 0.05, size: int = 16, classes=("background", "red", "other")):
        palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]][: len(classes)]
        super().__init__("slow-model", {"input_size": [size, size], "mean": [0, 0, 0], "std": [255, 255, 255],
                                        "classes": list(classes), "palette": palette, "precision": "fp32"})
        self.delay = delay
        self.calls = 0

    def infer(self, batch) -> np.ndarray:
        time.sleep(self.delay)
        self.calls += 1
        x = np.asarray(batch, np.float32)
        logits = np.zeros((x.shape[0], self.num_classes, *x.shape[2:]), np.float32)
        logits[:, 0] = 0.5
        logits[:, 1] = x[:, 0]  # RGB order: channel 0 is red
        return logits

    def describe(self) -> str:
        return f"slow fake ({self.delay * 1000:.0f} ms)"


class FlakyCamera:
    """The ``cv2.VideoCapture`` interface: ``frames_ok`` frames (one every ``period`` s), then only failures."""

    def __init__(self, frames_ok: int, period: float = 0.0, shape=(48, 64), start: int = 0):
        self.frames_ok = frames_ok
        self.period = period
        self.shape = shape
        self.served = 0
        self.start = start
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.released

    def read(self):
        if self.released or self.served >= self.frames_ok:
            return False, None
        if self.period:
            time.sleep(self.period)
        frame = np.zeros((*self.shape, 3), np.uint8)
        frame[:, : (self.start + self.served) % self.shape[1] + 1, 2] = 255  # a red band that grows
        self.served += 1
        return True, frame

    def get(self, prop) -> float:
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.shape[1])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.shape[0])
        return 0.0

    def set(self, prop, value) -> bool:  # noqa: A003 - OpenCV's name
        return True

    def release(self) -> None:
        self.released = True


class NoisyCamera(FlakyCamera):
    """A camera of ``shape`` whose frames are random noise (JPEG-encoded they stay large: a stalled viewer's
    socket buffers fill quickly) with :class:`FlakyCamera`'s growing red band over them."""

    def __init__(self, frames_ok: int = 10**9, period: float = 0.02, shape=(240, 320)):
        super().__init__(frames_ok, period, shape)
        self.rng = np.random.default_rng(0)

    def read(self):
        ok, frame = super().read()
        if ok:
            noise = self.rng.integers(0, 120, frame.shape, dtype=np.uint8)
            frame = np.maximum(frame, noise)
        return ok, frame


class ScriptedOpener:
    """``opener(spec)`` for :class:`demo.sources.FrameSource`: each call takes the next entry of ``script``,
    a capture to return or an exception to raise (a camera that is gone)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def __call__(self, spec):
        self.calls += 1
        if not self.script:
            raise SourceError(f"{spec.label}: cannot open it (the test's camera is gone)")
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def write_clip(path: Path, frames: int = 12, size=(64, 48), fps: float = 30.0) -> Path:
    """A small mp4 (mp4v) with a moving red square on a changing background."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        f = np.full((h, w, 3), (40 + 5 * i % 200, 120, 60), np.uint8)
        x = (4 * i) % max(1, w - 16)
        f[h // 4: h // 4 + 16, x: x + 16] = (0, 0, 255)
        writer.write(f)
    writer.release()
    return path


def video_info(path: Path) -> tuple[int, int, int]:
    """(frames actually decodable, width, height) of a video file."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n, w, h


def stop_a_recording(onnx: Path, tmp_path: Path, sig: int, after_s: float = 1.0):
    """Record a 150-frame clip (5 s read live) with ``demo/webcam.py --headless -o``, send ``sig`` once the
    source is open and ``after_s`` has passed; returns (returncode, stdout, stderr, the output path)."""
    root = Path(__file__).resolve().parents[1]
    long_clip = write_clip(tmp_path / "long.mp4", frames=150, size=(64, 48))
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "demo/webcam.py", str(onnx), "-s", str(long_clip), "--headless",
                             "-o", str(out), "--threads", "1"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stderr.readline().startswith("[demo] ")  # the source is open and the live loop starting
        time.sleep(after_s)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stdout, stderr, out
