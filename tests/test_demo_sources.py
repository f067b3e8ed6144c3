"""demo.sources: what a --source string means, what this OpenCV can do, and reopening a lost live source."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from cpnet.runtime.errors import UserError
from demo.sources import (FolderCapture, FrameSource, OpenCVBuild, SourceError, SourceSpec, check_source, csi_pipeline,
                          open_capture, opencv_build, parse_build_information, parse_source, quiet_opencv)
from demo.display import _connect
from demo_doubles import FlakyCamera, ScriptedOpener, write_clip

BUILD_5 = """
  Video I/O:
    FFMPEG:                      YES
      avcodec:                   YES (61.19.101)
    GStreamer:                   NO
    v4l/v4l2:                    YES (linux/videodev2.h)
  GUI:                           NONE
"""
BUILD_4_GTK = """
  GUI:
    GTK+:                        YES (ver 3.24.33)
      GThread :                  YES (ver 2.72.4)
  Video I/O:
    FFMPEG:                      NO
    GStreamer:                   YES (1.20.3)
"""
BUILD_QT = """
  GUI:                           QT5
    QT:                          YES (ver 5.15.19 )
  Video I/O:
    GStreamer:                   NO
"""


def test_parse_build_information_layouts():
    assert parse_build_information(BUILD_5) == {"gui": "NONE", "gstreamer": False, "ffmpeg": True, "v4l2": True}
    assert parse_build_information(BUILD_4_GTK) == {"gui": "GTK", "gstreamer": True, "ffmpeg": False, "v4l2": False}
    assert parse_build_information(BUILD_QT)["gui"] == "QT5"
    running = opencv_build()
    assert running.version == cv2.__version__ and isinstance(running.has_window, bool)


def test_build_refusals_say_what_is_needed(monkeypatch):
    headless = OpenCVBuild("5.0.0", gui="NONE", gstreamer=False, ffmpeg=True,
                           packages=("opencv-python-headless 5.0.0.93",))
    with pytest.raises(UserError) as e:
        headless.require_window()
    msg = str(e.value)
    assert "\n" not in msg and "opencv-python-headless 5.0.0.93" in msg and "cpnet[desktop]" in msg
    assert "--headless" in msg
    with pytest.raises(UserError) as e:
        headless.require_gstreamer("--source 'csi'")
    assert "GStreamer" in str(e.value) and "JetPack" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="GStreamer"):
        check_source(parse_source("csi"), headless)
    with pytest.raises(UserError, match="GStreamer"):
        check_source(parse_source("videotestsrc ! videoconvert ! appsink"), headless)
    check_source(parse_source("csi"), OpenCVBuild("4.8.0", gui="GTK3", gstreamer=True, ffmpeg=True))  # JetPack's
    window = OpenCVBuild("5.0.0", gui="QT5", gstreamer=False, ffmpeg=True, packages=("opencv-python 5.0.0.93",))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if __import__("sys").platform.startswith("linux"):
        with pytest.raises(UserError, match="no display"):
            window.require_window()
    with socket.socket() as x_server:  # a display that answers: TCP port 6000 + N on localhost
        x_server.bind(("127.0.0.1", 0))
        x_server.listen()
        monkeypatch.setenv("DISPLAY", f"127.0.0.1:{x_server.getsockname()[1] - 6000}")
        window.require_window()
    assert "system build" in OpenCVBuild("4.8.0", "GTK3", True, True).describe()


def test_each_source_text_parses_to_its_kind_with_credentials_masked(tmp_path):
    assert parse_source("0") == SourceSpec("camera", 0, "0")
    assert parse_source(2, width=640).target == 2
    csi = parse_source("csi")
    assert csi.kind == "csi" and csi.live and "nvarguscamerasrc sensor-id=0" in csi.target
    assert "width=(int)1280" in csi.target and "framerate=(fraction)30/1" in csi.target
    csi1 = parse_source("csi:1", width=1920, height=1080, fps=60)
    assert "sensor-id=1" in csi1.target and "width=(int)1920" in csi1.target and "60/1" in csi1.target
    assert csi1.target.endswith("appsink drop=true max-buffers=1 sync=false")
    assert csi_pipeline(0, 640, 480, 15).count("640") == 2
    url = parse_source("rtsp://admin:secret@10.0.0.2:554/stream1")
    assert url.kind == "url" and url.live and "secret" not in url.label and "admin:***@" in url.label
    assert parse_source("http://10.0.0.2:8080/video").kind == "url"
    gst = parse_source("videotestsrc ! videoconvert ! appsink")
    assert gst.kind == "gstreamer" and gst.live
    assert parse_source("gst: v4l2src ! appsink").target == "v4l2src ! appsink"
    clip = write_clip(tmp_path / "c.mp4", frames=2)
    assert parse_source(str(clip)).kind == "file" and not parse_source(str(clip)).live
    (tmp_path / "imgs").mkdir()
    for i in (2, 1):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    folder = parse_source(str(tmp_path / "imgs"))
    assert folder.kind == "folder" and [p[-5:] for p in folder.images] == ["1.png", "2.png"]
    assert parse_source(str(tmp_path / "imgs" / "1.png")).kind == "image"
    (tmp_path / "empty").mkdir()
    for bad, words in (("nope.mp4", "no such file"), (str(tmp_path / "empty"), "no images"), ("", "empty"),
                       ("ftp://x/y", "unknown URL scheme")):
        with pytest.raises(SourceError) as e:
            parse_source(bad)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_open_failures_are_one_line(tmp_path):
    quiet_opencv()
    with pytest.raises(SourceError) as e:
        open_capture(parse_source("63"))
    msg = str(e.value)
    assert msg.startswith("camera 63: cannot open it (tried cv2.VideoCapture(63))") and "\n" not in msg
    assert "camera found" in msg or "cameras present" in msg or "list its cameras" in msg
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot read it as a video"):
        open_capture(parse_source(str(bad)))
    with pytest.raises(SourceError, match="cannot open it"):
        open_capture(parse_source("rtsp://127.0.0.1:9/none"))


def test_file_and_folder_sources_end_at_their_last_frame(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", frames=5)
    src = FrameSource(parse_source(str(clip)))
    assert src.fps == pytest.approx(30.0) and src.frame_count == 5 and "64x48" in src.describe()
    frames = [src.read() for _ in range(7)]
    assert sum(f is not None for f in frames) == 5 and src.ended_because == "end of input" and src.reconnects == 0
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), np.full((10, 12, 3), i, np.uint8))
    (tmp_path / "imgs" / "9.png").write_bytes(b"garbage")  # skipped with a warning
    src = FrameSource(parse_source(str(tmp_path / "imgs"), fps=5))
    got = []
    while (f := src.read()) is not None:
        got.append(int(f[0, 0, 0]))
    assert got == [0, 1, 2] and src.fps == 5 and src.frame_count == 4
    cap = FolderCapture([str(tmp_path / "imgs" / "9.png")])
    assert cap.read() == (False, None) and cap.unreadable == 1


def test_lost_camera_is_reopened_with_backoff_then_given_up():
    spec = SourceSpec("camera", 0, "0")
    opener = ScriptedOpener([FlakyCamera(3), FlakyCamera(4), SourceError("camera 0: gone"),
                             SourceError("camera 0: gone")])
    src = FrameSource(spec, opener=opener, backoff=(0.01, 0.02))
    t0 = time.monotonic()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert len(frames) == 7 and src.frames == 7
    assert src.reconnects == 1 and src.lost == 2 and opener.calls == 4
    assert "gave up after 2 reopen attempt(s)" in src.ended_because and "lost after 7 frame(s)" in src.ended_because
    assert time.monotonic() - t0 < 2.0


def test_a_camera_that_opens_but_never_delivers_still_ends():
    opener = ScriptedOpener([FlakyCamera(2)] + [FlakyCamera(0) for _ in range(5)])
    src = FrameSource(SourceSpec("camera", 0, "0"), opener=opener, backoff=(0.0, 0.0, 0.0))
    n = 0
    while src.read() is not None:
        n += 1
    assert n == 2 and "gave up after 3" in src.ended_because and opener.calls == 4


def test_stop_cuts_the_backoff_short():
    stop = threading.Event()
    src = FrameSource(SourceSpec("camera", 0, "0"), opener=ScriptedOpener([FlakyCamera(1)]), backoff=(30.0,), stop=stop)
    assert src.read() is not None
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert src.read() is None and time.monotonic() - t0 < 5 and src.ended_because == "stopped"


def _free_display_number() -> int:
    """An X display number nobody serves here (no socket, abstract or in /tmp/.X11-unix)."""
    for n in range(99, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and _connect(socket.AF_UNIX, f"\0/tmp/.X11-unix/X{n}"):
            return n
    pytest.skip("every display number from 99 to 199 is served here")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 and Wayland sockets are probed on Linux")
def test_a_stale_display_is_found_before_qt_can_abort(tmp_path):
    from demo.display import display_problem

    n = _free_display_number()
    why = display_problem("QT5", {"DISPLAY": f":{n}"})
    assert why and f"DISPLAY=:{n}" in why and f"/tmp/.X11-unix/X{n}" in why
    assert "DISPLAY is unset" in display_problem("QT5", {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/x"})
    assert display_problem("QT5", {"QT_QPA_PLATFORM": "offscreen"}) is None  # Qt draws without a server
    assert display_problem("NONE", {}) is None  # no window toolkit: the GUI check says so, not this one
    compositor = socket.socket(socket.AF_UNIX)  # a Wayland socket that answers
    compositor.bind(str(tmp_path / "wayland-1"))
    compositor.listen()
    try:
        wayland = {"WAYLAND_DISPLAY": "wayland-1", "XDG_RUNTIME_DIR": str(tmp_path)}
        assert display_problem("GTK3", {**wayland, "DISPLAY": f":{n}"}) is None  # GTK takes either
        assert display_problem("QT5", {**wayland, "QT_QPA_PLATFORM": "wayland"}) is None
        assert "no compositor" in display_problem("QT5", {"WAYLAND_DISPLAY": "gone", "XDG_RUNTIME_DIR": str(tmp_path),
                                                          "QT_QPA_PLATFORM": "wayland"})
        assert "QT_QPA_PLATFORM=xcb" in display_problem("QT5", wayland)  # the wheel's Qt needs X, even here
    finally:
        compositor.close()
