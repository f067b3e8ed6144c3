"""The live loop: capture, inference and drawing each in their own thread; the display/writer in the caller's.

    capture thread ──► [newest frame] ──► inference thread ──► [1] ──► drawing thread ──► [2] ──► caller
    (read, preprocess)  drops counted     (infer)                      (postprocess, draw)        (imshow / writer)

A slow stage never stalls capture: the capture thread writes into a one-frame mailbox and
replaces a frame nobody took yet, counting it as dropped, so inference always starts on the
newest frame. With ``no_drop`` (a file or folder, offline) the mailbox is a short blocking
queue instead and every frame is processed. A file read live (without ``no_drop``) is paced
at its own frame rate, as a camera would deliver it.

Preprocessing runs in the capture thread, so the inference thread does nothing but run
the model: on two cores the model has one to itself. The stages hand each frame's timings along (milliseconds per stage: capture, preprocess,
infer, postprocess, draw; the caller adds output), and :class:`Stats` sums them where the
frames come out. OpenCV and ONNX Runtime release the GIL in their heavy calls, so on two
cores inference runs on one while capture, drawing and writing share the other.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import cv2
import numpy as np

from cpnet.runtime.errors import UserError
from cpnet.runtime.log import get_logger
from cpnet.runtime.preprocess import input_size_of, preprocess_bgr

log = get_logger("demo")

STAGES = ("capture", "preprocess", "infer", "postprocess", "draw", "output")
MODES = ("overlay", "side-by-side", "mask")


class _Signal:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSED = _Signal("CLOSED")    # the mailbox was closed and is empty: the stream is over
TIMEOUT = _Signal("TIMEOUT")  # nothing arrived in time


class Mailbox:
    """A hand-over between two threads.

    ``drop=True``: one slot; ``put`` replaces an item nobody took yet and counts it in
    ``dropped`` (capture never waits). ``drop=False``: a queue of ``capacity`` where ``put``
    waits for room (every item is processed). ``close()`` wakes everyone: ``put`` then
    returns False and ``get`` returns :data:`CLOSED` once the items are taken.
    """

    def __init__(self, capacity: int = 1, drop: bool = False):
        self.capacity = 1 if drop else max(1, int(capacity))
        self.drop = drop
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item) -> bool:
        with self._cond:
            if self.drop:
                if self._closed:
                    return False
                if self._items:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity and not self._closed:
                    self._cond.wait(0.1)
                if self._closed:
                    return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    return CLOSED
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return TIMEOUT
                self._cond.wait(left if left is not None else 0.1)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


# --------------------------------------------------------------------------- what travels between the stages


@dataclass
class Frame:
    index: int                 # 0-based number of the frame read from the source
    image: np.ndarray          # BGR uint8, as OpenCV delivers it
    timings: dict = field(default_factory=dict)  # stage -> ms
    x: np.ndarray | None = None  # the model input (1, 3, H, W), made in the capture thread


def prepare(frame_bgr: np.ndarray, manifest: dict) -> np.ndarray:
    """:func:`preprocess_bgr`, resizing first: the channel swap and the normalisation then touch the model's
    H x W pixels, not the frame's. Bit-identical (the resize treats each channel alike)."""
    h, w = input_size_of(manifest)
    if frame_bgr.shape[:2] != (h, w):
        frame_bgr = cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    return preprocess_bgr(frame_bgr, manifest)


@dataclass
class Result:
    frame: Frame
    logits: np.ndarray         # (1, C, h, w) at the model's output size
    prior: np.ndarray | None   # (N, N) rows of P, where asked for and the model has it


@dataclass
class Drawn:
    frame: Frame
    image: np.ndarray          # what to show / write (BGR)
    labels: np.ndarray         # (h, w) class per pixel of the model's output (the frame resized to it)
    redraw: bool = False       # a paused frame drawn again after a view change (not a new frame)


@dataclass
class View:
    """What the viewer chose (keys and flags); the drawing thread reads a copy per frame."""

    mode: str = "overlay"
    alpha: float = 0.5
    show_prior: bool = False
    point: tuple[int, int] | None = None   # frame pixel (x, y) whose prior row is shown
    paused: bool = False
    hud: bool = True
    notice: str = ""
    notice_until: float = 0.0
    version: int = 0


class ViewState:
    """The shared, lock-protected :class:`View`; every change bumps ``version`` so a paused frame is redrawn."""

    def __init__(self, view: View | None = None):
        self._view = view or View()
        self._lock = threading.Lock()

    def get(self) -> View:
        with self._lock:
            return replace(self._view)

    def update(self, **changes) -> View:
        with self._lock:
            self._view = replace(self._view, version=self._view.version + 1, **changes)
            return replace(self._view)

    def notify(self, text: str, seconds: float = 3.0) -> None:
        log.info(text)
        self.update(notice=text, notice_until=time.monotonic() + seconds)

    def cycle_mode(self) -> str:
        v = self.get()
        mode = MODES[(MODES.index(v.mode) + 1) % len(MODES)] if v.mode in MODES else MODES[0]
        self.update(mode=mode)
        return mode

    def nudge_alpha(self, step: float) -> float:
        alpha = round(min(1.0, max(0.0, self.get().alpha + step)), 2)
        self.update(alpha=alpha)
        return alpha


# --------------------------------------------------------------------------- the model


def labels_from_logits(logits: np.ndarray, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """(1, C, h, w) logits -> uint8 labels: the argmax at the model's output size (h, w), or resized (nearest)
    to ``out_size`` (H, W) when given.

    :func:`cpnet.runtime.preprocess.postprocess` resizes the C logit planes to the frame first
    (the evaluation path: boundaries placed at full resolution); at 640x480 with 19 classes
    that costs tens of milliseconds on one core, more than the model. The live view takes the
    argmax where the model made its decision; the renderer colours that label map and enlarges
    the colours (nearest): the same classes, with boundaries on the model's output grid.
    """
    x = np.asarray(logits)
    x = x[0] if x.ndim == 4 else x
    chw = np.ascontiguousarray(x.transpose(1, 2, 0))  # argmax over a contiguous last axis is the fast one
    labels = chw.argmax(-1).astype(np.uint8 if x.shape[0] <= 256 else np.int32)
    if out_size is not None:
        h, w = (int(v) for v in out_size)
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return labels


class Runner:
    """Logits, and the context prior P where the artifact has it, from any :func:`engines.open` backend.

    ``has_prior`` says whether P can be had; ``why_no_prior`` says, in one line, why not.
    Backends that name their outputs (``output_names``, ``infer_all``: ONNX Runtime, and any
    backend that adds them) give P from an output named ``prior`` (``cpnet export --with-prior``).
    A PyTorch checkpoint gives P from the eval-mode model's own head (``forward_head``).
    """

    def __init__(self, backend):
        self.backend = backend
        self.has_prior = False
        self.why_no_prior = ""
        self._torch_model = None
        name = getattr(backend, "name", "")
        path = getattr(backend, "path", "the model")
        if name == "torch" and getattr(backend, "model", None) is not None:
            model = backend.model
            head = getattr(getattr(model, "cfg", None), "head", None)
            if head == "cpnet":
                self._torch_model = model
                self.has_prior = True
            else:
                self.why_no_prior = f"{path}: this model's head is {head!r}, which has no context prior"
            return
        outputs = list(getattr(backend, "output_names", None) or [])
        from cpnet.runtime.backend import Backend

        names_outputs = type(backend).infer_all is not Backend.infer_all
        if "prior" in outputs and names_outputs:
            self.has_prior = True
        elif (getattr(backend, "manifest", None) or {}).get("prior"):
            self.why_no_prior = (f"{path}: the model has a prior output but the {name} backend does not return it "
                                 f"yet; use the ONNX file it was built from, or the checkpoint")
        elif name == "tensorrt":  # the engine returns the prior when its ONNX file has one: this one's had none
            self.why_no_prior = (f"{path} has no prior output: build the engine from an ONNX file exported with "
                                 f"`cpnet export RUN_DIR --with-prior` (cpnet build FILE), or use the checkpoint")
        else:
            self.why_no_prior = (f"{path} has no prior output: export it with `cpnet export RUN_DIR --with-prior` "
                                 f"(FP16 and INT8 files made from that file keep it)")

    def run(self, x: np.ndarray, want_prior: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (1, C, h, w), rows of P (N, N) or None) for a preprocessed (1, 3, H, W) batch."""
        if not (want_prior and self.has_prior):
            return self.backend.infer(x), None
        if self._torch_model is not None:
            return self._torch_run(x)
        out = self.backend.infer_all(x)
        logits = out.get("logits")
        if logits is None:
            logits = next(v for k, v in out.items() if k != "prior")
        return np.asarray(logits, np.float32), np.asarray(out["prior"], np.float32)[0]

    def _torch_run(self, x: np.ndarray):
        import torch  # only reached with the torch backend, which has imported it already
        import torch.nn.functional as F

        model, backend = self._torch_model, self.backend
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(backend.device)
        with torch.inference_mode():
            _, c4 = model.forward_features(t)
            logits, _, prior = model.forward_head(c4)
            logits = F.interpolate(logits, size=t.shape[-2:], mode="bilinear", align_corners=False)
        return logits.float().cpu().numpy(), prior[0].float().cpu().numpy()


# --------------------------------------------------------------------------- timings


class Stats:
    """Per-stage milliseconds (means for the summary, smoothed values for the HUD) and frames per second."""

    def __init__(self, smoothing: float = 0.1, window_s: float = 1.0):
        self.sums = {s: 0.0 for s in STAGES}
        self.counts = {s: 0 for s in STAGES}
        self.recent = {s: None for s in STAGES}
        self.smoothing = smoothing
        self.window_s = window_s
        self.shown = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._times: collections.deque = collections.deque(maxlen=240)

    def record(self, timings: dict, at: float | None = None) -> None:
        at = time.perf_counter() if at is None else at
        for stage, ms in timings.items():
            if stage not in self.sums or ms is None:
                continue
            self.sums[stage] += ms
            self.counts[stage] += 1
            prev = self.recent[stage]
            self.recent[stage] = ms if prev is None else prev + self.smoothing * (ms - prev)
        self.shown += 1
        self.first_at = at if self.first_at is None else self.first_at
        self.last_at = at
        self._times.append(at)

    @property
    def fps(self) -> float:
        """Frames per second over the last ``window_s`` seconds (the HUD's)."""
        times = tuple(self._times)  # one copy: the browser's /stats threads read while the main thread records
        if len(times) < 2:
            return 0.0
        last = times[-1]
        recent = [t for t in times if last - t <= self.window_s]
        if len(recent) < 2:
            recent = list(times[-2:])
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    @property
    def mean_fps(self) -> float:
        """(frames - 1) / (time from the first to the last frame out): the steady rate, start-up excluded."""
        if self.shown < 2 or self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return (self.shown - 1) / (self.last_at - self.first_at)

    def mean_ms(self) -> dict:
        return {s: (self.sums[s] / self.counts[s] if self.counts[s] else None) for s in STAGES}

    def recent_ms(self) -> dict:
        return dict(self.recent)


# --------------------------------------------------------------------------- the threads


class LiveLoop:
    """Runs the capture, inference and drawing threads; the caller takes :class:`Drawn` frames with :meth:`get`.

    ``draw(frame_bgr, labels, prior_rows, view) -> image`` is the drawing function (see
    :class:`demo.render.Renderer`). ``no_drop``: process every frame (files and folders).
    ``fps_cap``: at most this many inferences per second. ``pace_fps``: for a file or folder read
    live, deliver frames at this rate as a camera would. ``max_frames``: with ``no_drop``,
    capture stops after this many frames (live, the caller stops after it has shown them).
    ``temporal(frame_bgr, logits) -> labels``: where given (:class:`demo.flicker.Temporal`), the drawing
    thread's label maps come from it (flicker measured, probabilities smoothed) instead of the plain argmax.
    """

    def __init__(self, source, runner: Runner, manifest: dict, draw: Callable, view: ViewState,
                 no_drop: bool = False, fps_cap: float | None = None, pace_fps: float | None = None,
                 max_frames: int | None = None, temporal: Callable | None = None):
        self.source = source
        self.temporal = temporal
        self.runner = runner
        self.manifest = manifest
        self.draw = draw
        self.view = view
        self.no_drop = no_drop
        self.fps_cap = fps_cap
        self.pace_fps = pace_fps
        self.max_frames = max_frames
        self.stop_event = getattr(source, "stop", None) or threading.Event()
        self.frames_in = Mailbox(capacity=4, drop=not no_drop)
        self.results = Mailbox(capacity=1)
        self.drawn = Mailbox(capacity=2)
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._guard, args=(fn,), name=f"demo-{name}", daemon=True)
                         for name, fn in (("capture", self._capture), ("infer", self._infer), ("draw", self._draw))]

    # --- control ---------------------------------------------------------------------------
    def start(self) -> "LiveLoop":
        for t in self._threads:
            t.start()
        return self

    def get(self, timeout: float | None = None):
        """The next :class:`Drawn`, :data:`TIMEOUT`, or :data:`CLOSED` at the end; a worker's error is raised here."""
        item = self.drawn.get(timeout)
        if item is CLOSED or self.errors:
            self.join(1.0)
            if self.errors:
                raise self.errors[0]
        return item

    def stop(self) -> None:
        self.stop_event.set()
        for box in (self.frames_in, self.results, self.drawn):
            box.close()

    def join(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    @property
    def dropped(self) -> int:
        return self.frames_in.dropped

    def _guard(self, fn) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
            if not self.stop_event.is_set():
                self.errors.append(e)
            self.stop()

    # --- capture ---------------------------------------------------------------------------
    def _capture(self) -> None:
        src, out = self.source, self.frames_in
        index = 0
        started = time.perf_counter()
        try:
            while not self.stop_event.is_set():
                if self.view.get().paused:
                    if src.live:
                        src.read()  # keep the camera's buffer fresh; a paused view drops nothing it shows
                    else:
                        self.stop_event.wait(0.02)
                    continue
                if self.no_drop and self.max_frames is not None and index >= self.max_frames:
                    break
                if self.pace_fps and not src.live:
                    due = started + index / self.pace_fps
                    delay = due - time.perf_counter()
                    if delay > 0 and self.stop_event.wait(delay):
                        break
                t0 = time.perf_counter()
                image = src.read()
                t1 = time.perf_counter()
                if image is None:
                    break
                x = prepare(image, self.manifest)
                t2 = time.perf_counter()
                frame = Frame(index, image, {"capture": (t1 - t0) * 1000.0, "preprocess": (t2 - t1) * 1000.0}, x)
                if not out.put(frame):
                    break
                index += 1
        finally:
            out.close()

    # --- inference -------------------------------------------------------------------------
    def _infer(self) -> None:
        inbox, out = self.frames_in, self.results
        min_interval = 1.0 / self.fps_cap if self.fps_cap else 0.0
        last_start = 0.0
        try:
            while True:
                item = inbox.get(0.1)
                if item is CLOSED:
                    break
                if item is TIMEOUT:
                    if self.stop_event.is_set():
                        break
                    continue
                if min_interval:
                    wait = last_start + min_interval - time.perf_counter()
                    if wait > 0 and self.stop_event.wait(wait):
                        break
                    last_start = time.perf_counter()
                want_prior = self.view.get().show_prior
                x = item.x if item.x is not None else prepare(item.image, self.manifest)
                item.x = None  # the input is not needed any more
                t1 = time.perf_counter()
                logits, prior = self.runner.run(x, want_prior)
                item.timings["infer"] = (time.perf_counter() - t1) * 1000.0
                if not out.put(Result(item, logits, prior)):
                    break
        finally:
            out.close()

    # --- drawing ---------------------------------------------------------------------------
    def _draw(self) -> None:
        inbox, out = self.results, self.drawn
        last: tuple[Result, np.ndarray] | None = None
        drawn_version = -1
        try:
            while True:
                item = inbox.get(0.05)
                if item is CLOSED:
                    break
                if item is TIMEOUT:
                    if self.stop_event.is_set():
                        break
                    view = self.view.get()
                    if view.paused and last is not None and view.version != drawn_version:
                        result, labels = last
                        if view.show_prior and result.prior is None and self.runner.has_prior:
                            x = prepare(result.frame.image, self.manifest)  # paused: ask the model for P
                            result.logits, result.prior = self.runner.run(x, True)
                        image = self.draw(result.frame.image, labels, result.prior, view)
                        drawn_version = view.version
                        out.put(Drawn(result.frame, image, labels, redraw=True))
                    continue
                view = self.view.get()
                t0 = time.perf_counter()
                labels = (labels_from_logits(item.logits) if self.temporal is None
                          else self.temporal(item.frame.image, item.logits))
                t1 = time.perf_counter()
                image = self.draw(item.frame.image, labels, item.prior, view)
                t2 = time.perf_counter()
                drawn_version = view.version
                item.frame.timings["postprocess"] = (t1 - t0) * 1000.0
                item.frame.timings["draw"] = (t2 - t1) * 1000.0
                last = (item, labels)
                if not out.put(Drawn(item.frame, image, labels)):
                    break
        finally:
            out.close()


def check_no_drop(source_live: bool, no_drop: bool) -> None:
    if no_drop and source_live:
        raise UserError("--no-drop is for a file or folder source: a live source cannot wait for a slow model "
                        "(without it, the newest frame is processed and the others are counted as dropped)")
