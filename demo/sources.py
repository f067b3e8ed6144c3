"""Where the frames come from: one string names the source, one class reads it.

``parse_source(text)`` turns the ``--source`` string into a :class:`SourceSpec`:

=========================  ===========  =====================================================
``--source``               kind         opened with
=========================  ===========  =====================================================
``0``, ``1``, ...          camera       ``cv2.VideoCapture(index)`` (+ ``--width/--height/--fps``)
``clip.mp4``               file         ``cv2.VideoCapture(path)`` (FFmpeg in the PyPI wheels)
``frames/`` (a folder)     folder       ``cv2.imread`` on its images, in name order
``photo.jpg``              image        ``cv2.imread`` (a folder of one)
``rtsp://``, ``http://``   url          ``cv2.VideoCapture(url, cv2.CAP_FFMPEG)``
``a ! b ! appsink``        gstreamer    ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``
``csi``, ``csi:1``         csi          a ``nvarguscamerasrc`` pipeline (Jetson CSI camera)
=========================  ===========  =====================================================

Cameras, URLs, pipelines and ``csi`` are *live*: :class:`FrameSource` reopens them with
backoff when they stop delivering frames (a camera unplugged, a stream that drops), and
ends cleanly after the last attempt. Files and folders end at their last frame.

:class:`OpenCVBuild` says what the running OpenCV can do (window, GStreamer, FFmpeg) and
which package it came from, so a source or a window it cannot serve is refused at the
start with one line saying what it needs.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from cpnet.runtime.errors import UserError
from cpnet.runtime.files import utf8_path
from cpnet.runtime.log import get_logger
from demo.display import display_problem

log = get_logger("demo")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
LIVE_KINDS = ("camera", "url", "gstreamer", "csi")
#: seconds to wait before each attempt to reopen a lost live source
DEFAULT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
OPENCV_WHEELS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


class SourceError(UserError):
    """A source that cannot be opened or read (exit status 2, one line saying what was tried)."""


# --------------------------------------------------------------------------- the OpenCV build


@dataclass(frozen=True)
class OpenCVBuild:
    """What this OpenCV can do, from ``cv2.getBuildInformation()`` and the installed packages."""

    version: str
    gui: str            # "NONE" for the headless wheels, else QT5 / GTK3 / WIN32UI / COCOA ...
    gstreamer: bool
    ffmpeg: bool
    packages: tuple[str, ...] = ()  # the pip packages that install cv2 ("name version"), empty for a system build
    v4l2: bool = False  # Video4Linux: camera indices on Linux (cv2.CAP_V4L2)

    @property
    def has_window(self) -> bool:
        return self.gui.upper() not in ("NONE", "NO", "")

    def describe(self) -> str:
        if not self.packages:
            where = f"OpenCV {self.version}, not from pip (a system build, e.g. JetPack's or Debian's)"
        else:
            where = f"OpenCV {self.version} from {' + '.join(self.packages)}"
        return where

    def require_window(self) -> None:
        if not self.has_window:
            raise UserError(f"a window needs an OpenCV with GUI support and {self.describe()} has none (GUI: NONE): "
                            f"pip uninstall -y opencv-python-headless && pip install 'cpnet[desktop]' (the "
                            f"opencv-python wheel, which needs Debian's libgl1), or run with --headless -o out.mp4")
        if len(self.packages) > 1:
            log.warning(f"{' and '.join(self.packages)} are both installed and overwrite each other's cv2; keep one: "
                        f"pip uninstall -y {' '.join(p.split()[0] for p in self.packages)} && "
                        f"pip install 'cpnet[desktop]'")
        problem = display_problem(self.gui)  # Qt aborts the process when its display cannot be reached
        if problem:
            raise UserError(f"no display to open a window on ({problem}): run with --headless (-o out.mp4 keeps "
                            f"the video, --serve PORT shows it in a browser), or fix DISPLAY (ssh -X)")

    def require_gstreamer(self, what: str) -> None:
        if not self.gstreamer:
            raise UserError(f"{what} needs an OpenCV built with GStreamer and {self.describe()} has none (the PyPI "
                            f"wheels never have it): use the system OpenCV (on a Jetson JetPack's python3-opencv, "
                            f"in a venv made with --system-site-packages and no opencv wheel installed)")


def parse_build_information(text: str) -> dict:
    """{"gui", "gstreamer", "ffmpeg", "v4l2"} from ``cv2.getBuildInformation()`` (OpenCV 4.x and 5.x layouts)."""
    lines = text.splitlines()
    gui = ""
    gstreamer = ffmpeg = v4l2 = False
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(":")
        key, value = key.strip(), value.strip()
        if key == "GUI" and not gui:
            gui = value.split()[0] if value else ""
            if not gui:  # 4.x before 4.6: "GUI:" then one line per toolkit
                for sub in lines[i + 1:i + 8]:
                    k, _, v = sub.strip().partition(":")
                    if k.strip() in ("QT", "GTK+", "GTK+ 3.x", "GTK+ 2.x", "Win32 UI", "Cocoa") and \
                            v.strip().upper().startswith("YES"):
                        gui = k.strip().upper().replace("+", "").replace(" ", "")
                        break
                gui = gui or "NONE"
        elif key == "GStreamer":
            gstreamer = value.upper().startswith("YES")
        elif key == "FFMPEG":
            ffmpeg = value.upper().startswith("YES")
        elif key in ("v4l/v4l2", "V4L/V4L2", "V4L2"):
            v4l2 = value.upper().startswith("YES")
    return {"gui": gui or "NONE", "gstreamer": gstreamer, "ffmpeg": ffmpeg, "v4l2": v4l2}


def opencv_build() -> OpenCVBuild:
    info = parse_build_information(cv2.getBuildInformation())
    packages = []
    for name in OPENCV_WHEELS:
        try:
            packages.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return OpenCVBuild(version=cv2.__version__, packages=tuple(packages), **info)


def quiet_opencv() -> None:
    """OpenCV's and FFmpeg's own warnings (a camera index that does not exist, a refused connection...) would
    repeat what our one line says; the user's own settings of these variables win."""
    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg is first used
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except Exception:  # noqa: BLE001 - older builds have no cv2.utils.logging
        pass


# --------------------------------------------------------------------------- what a source string means


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--source``: ``kind`` (camera, file, folder, image, url, gstreamer, csi), ``target`` (the
    index, path, URL or pipeline handed to OpenCV), the capture size/rate asked for, ``images`` for a folder."""

    kind: str
    target: "int | str"
    text: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    images: tuple[str, ...] = field(default=(), repr=False)

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS

    @property
    def label(self) -> str:
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "csi":
            return f"CSI camera {self.text}"
        if self.kind == "gstreamer":
            return "GStreamer pipeline"
        if self.kind == "url":
            return _redact(str(self.target))
        return str(self.target)


def _redact(url: str) -> str:
    """rtsp://user:password@host/... -> rtsp://user:***@host/... (URLs end up in logs)."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30,
                 flip: int = 0) -> str:
    """The GStreamer pipeline of a Jetson CSI camera (Argus, via ``nvarguscamerasrc``) delivering BGR frames.

    NVMM NV12 from the ISP, converted by ``nvvidconv`` (the VIC) to BGRx in system memory, then
    ``videoconvert`` to BGR for OpenCV; ``appsink drop=true max-buffers=1`` keeps only the newest frame,
    so a slow consumer never builds up latency.
    """
    rate = f"{int(round(fps))}/1"
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, framerate=(fraction){rate}, "
            f"format=(string)NV12 ! nvvidconv flip-method={flip} ! "
            f"video/x-raw, width=(int){width}, height=(int){height}, format=(string)BGRx ! "
            f"videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")


def list_images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_source(text: "str | int", width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> SourceSpec:
    """What ``--source`` names; a string that names nothing is one :class:`SourceError` line."""
    text = str(text).strip()
    opts = dict(width=width, height=height, fps=fps)
    if not text:
        raise SourceError("--source is empty: give a camera index, a video file, a folder of images, a URL, "
                          "a GStreamer pipeline or csi")
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", int(text), text, **opts)
    m = re.fullmatch(r"csi(?::(\d+))?", text, re.IGNORECASE)
    if m:
        sensor = int(m.group(1) or 0)
        pipeline = csi_pipeline(sensor, width or 1280, height or 720, fps or 30)
        return SourceSpec("csi", pipeline, text, **opts)
    if text.lower().startswith("gst:"):
        return SourceSpec("gstreamer", text[4:].strip(), text, **opts)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in URL_SCHEMES:
        return SourceSpec("url", text, text, **opts)
    if "!" in text and not Path(text).exists():
        return SourceSpec("gstreamer", text, text, **opts)
    path = Path(text).expanduser()
    if path.is_dir():
        images = [utf8_path(image, "image") for image in list_images(path)]  # refused before any work
        if not images:
            raise SourceError(f"{path}: a folder with no images in it (looked for {', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("folder", str(path), text, images=tuple(images), **opts)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return SourceSpec("image", str(path), text, images=(str(path),), **opts)
        return SourceSpec("file", str(path), text, **opts)
    if scheme:
        raise SourceError(f"{text}: unknown URL scheme {scheme!r} (known: {', '.join(URL_SCHEMES)})")
    raise SourceError(f"{text}: no such file or folder, and not a camera index (0, 1, ...), a URL (rtsp://, http://), "
                      f"a GStreamer pipeline (with '!') or csi")


# --------------------------------------------------------------------------- opening


def camera_indices() -> list[int] | None:
    """Camera indices present on this machine (Linux: /dev/video*), or None where they cannot be listed cheaply."""
    if not sys.platform.startswith("linux"):
        return None
    from cpnet.runtime.jetson import cameras  # the one /dev/video* probe (cpnet doctor lists the same)

    return [int(dev[len("/dev/video"):]) for dev in cameras()]


def _describe_indices(indices: list[int] | None) -> str:
    if indices is None:
        return "this system does not list its cameras; try other indices"
    if not indices:
        return "no camera found (/dev/video* is empty)"
    return f"cameras present: {', '.join(str(i) for i in indices)} (/dev/video*)"


class FolderCapture:
    """The ``cv2.VideoCapture`` interface over a list of image files (``read()`` -> (ok, BGR frame))."""

    def __init__(self, images: Sequence[str], fps: float | None = None):
        self.images = list(images)
        self.position = 0
        self.unreadable = 0
        self.fps = fps

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.position < len(self.images) or not self.images

    def read(self):
        while self.position < len(self.images):
            path = self.images[self.position]
            self.position += 1
            frame = cv2.imread(utf8_path(path, "image"), cv2.IMREAD_COLOR)
            if frame is not None:
                return True, frame
            self.unreadable += 1
            log.warning(f"{path}: not a readable image; skipped")
        return False, None

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(len(self.images))
        if prop == cv2.CAP_PROP_FPS:
            return float(self.fps or 0.0)
        return 0.0

    def set(self, prop: int, value: float) -> bool:  # noqa: A003 - OpenCV's name
        return False

    def release(self) -> None:
        self.position = len(self.images)


def open_capture(spec: SourceSpec):
    """An opened capture (``cv2.VideoCapture`` or :class:`FolderCapture`) for a spec; one line when it fails."""
    if spec.kind in ("folder", "image"):
        return FolderCapture(spec.images, spec.fps)
    if spec.kind == "camera":
        cap = cv2.VideoCapture(int(spec.target))
        tried = f"cv2.VideoCapture({spec.target})"
    elif spec.kind == "url":
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG)
        tried = f"cv2.VideoCapture({spec.label!r}, cv2.CAP_FFMPEG)"
    elif spec.kind in ("gstreamer", "csi"):
        cap = cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
        tried = f"cv2.VideoCapture(<pipeline>, cv2.CAP_GSTREAMER) with: {spec.target}"
    else:
        cap = cv2.VideoCapture(utf8_path(spec.target, "video"))
        tried = f"cv2.VideoCapture({str(spec.target)!r})"
    if not cap.isOpened():
        cap.release()
        if spec.kind == "camera":
            raise SourceError(f"camera {spec.target}: cannot open it (tried {tried}); "
                              f"{_describe_indices(camera_indices())}")
        if spec.kind == "file":
            raise SourceError(f"{spec.target}: cannot read it as a video (tried {tried}; "
                              f"FFmpeg in this OpenCV: {'YES' if opencv_build().ffmpeg else 'NO'})")
        if spec.kind == "csi":
            raise SourceError(f"{spec.label}: cannot open it (tried {tried}); is nvargus-daemon running "
                              f"(sudo systemctl restart nvargus-daemon) and the camera connected?")
        raise SourceError(f"{spec.label}: cannot open it (tried {tried})")
    if spec.kind == "camera":
        if spec.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
        if spec.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
        if spec.fps:
            cap.set(cv2.CAP_PROP_FPS, spec.fps)
    if spec.live:
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of stale ones (where supported)
    return cap


def check_source(spec: SourceSpec, build: OpenCVBuild | None = None) -> None:
    """Refuse at the start what this OpenCV cannot open (GStreamer and csi sources without GStreamer)."""
    if spec.kind in ("gstreamer", "csi"):
        (build or opencv_build()).require_gstreamer(f"--source {spec.text!r} ({'CSI camera' if spec.kind == 'csi' else 'a GStreamer pipeline'})")


# --------------------------------------------------------------------------- reading, with reconnection


class FrameSource:
    """Frames from a spec, one ``read()`` at a time; a lost live source is reopened with backoff.

    ``opener(spec)`` makes the capture (default :func:`open_capture`; tests pass a double).
    ``backoff``: the waits (seconds) before each reopen attempt; after the last one ``read()``
    returns None and the stream ends. ``stop``: an event that cuts a wait short (quit, Ctrl-C).
    Counters: ``frames`` read, ``reconnects`` that succeeded, ``lost`` times the source went away.
    """

    def __init__(self, spec: SourceSpec, opener: Callable[[SourceSpec], object] = open_capture,
                 backoff: Sequence[float] = DEFAULT_BACKOFF, stop: threading.Event | None = None):
        self.spec = spec
        self.opener = opener
        self.backoff = tuple(backoff)
        self.stop = stop or threading.Event()
        self.frames = 0
        self.reconnects = 0
        self.lost = 0
        self.ended_because = ""
        self.cap = opener(spec)
        self._description = self._describe()

    @property
    def live(self) -> bool:
        return self.spec.live

    @property
    def fps(self) -> float | None:
        """The source's frame rate where it says one (a file's, a camera's), else --fps, else None."""
        value = 0.0
        if self.cap is not None:
            try:
                value = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
            except Exception:  # noqa: BLE001
                value = 0.0
        if 0.5 < value < 1000:
            return value
        return self.spec.fps

    @property
    def frame_count(self) -> int | None:
        if self.live or self.cap is None:
            return None
        try:
            n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        except Exception:  # noqa: BLE001
            n = 0
        return n if n > 0 else None

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None at the end (file over, or a live source that could not be reopened)."""
        attempts = 0  # reopen attempts since the last good frame: a source that opens but never delivers still ends
        while not self.stop.is_set():
            ok, frame = (False, None) if self.cap is None else self.cap.read()
            if ok and frame is not None:
                self.frames += 1
                return frame
            if not self.live:
                self.ended_because = "end of input"
                return None
            if attempts == 0:
                self.lost += 1
            if attempts >= len(self.backoff):
                self.ended_because = (f"{self.spec.label} lost after {self.frames} frame(s); gave up after "
                                      f"{len(self.backoff)} reopen attempt(s)")
                log.error(self.ended_because)
                self._release()
                return None
            attempts += 1
            if not self._reopen(attempts):
                return None
        self.ended_because = self.ended_because or "stopped"
        return None

    def _reopen(self, attempt: int) -> bool:
        """Wait the attempt's backoff, then try to open the source again; False when stopped meanwhile."""
        self._release()
        label, wait = self.spec.label, self.backoff[attempt - 1]
        log.warning(f"{label}: no frame after {self.frames} frame(s); reopening in {wait:g} s "
                    f"(attempt {attempt}/{len(self.backoff)})")
        if self.stop.wait(wait):
            self.ended_because = "stopped"
            return False
        try:
            self.cap = self.opener(self.spec)
        except UserError as e:
            log.warning(f"{label}: {e}")
            return True  # the next read() finds no capture and tries again
        self.reconnects += 1
        log.info(f"{label}: reopened (reconnect {self.reconnects})")
        return True

    def _release(self) -> None:
        if self.cap is not None:
            try:
                self.cap.release()
            except Exception:  # noqa: BLE001
                pass
        self.cap = None

    def close(self) -> None:
        self._release()

    def describe(self) -> str:
        """'clip.mp4 (file, 640x480, 30 fps, 900 frames)', as it was when opened."""
        return self._description

    def _describe(self) -> str:
        parts = [f"{self.spec.label} ({self.spec.kind}"]
        if self.cap is not None and self.spec.kind not in ("folder", "image"):
            try:
                w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
                if w and h:
                    parts.append(f", {w}x{h}")
            except Exception:  # noqa: BLE001
                pass
        if self.fps:
            parts.append(f", {self.fps:g} fps")
        if self.frame_count:
            parts.append(f", {self.frame_count} frames")
        return "".join(parts) + ")"
