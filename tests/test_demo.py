"""cpnet demo (demo/webcam.py) end to end: files, folders, drops, reconnection, the prior view, Ctrl-C, the window
under Xvfb, and the deploy side without PyTorch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpnet import cli
from cpnet.runtime.draw import heatmap
from cpnet.runtime.preprocess import preprocess_bgr
from demo import webcam
from demo.live_loop import View
from demo.render import prior_row
from demo.sources import FrameSource, SourceSpec, opencv_build, parse_source
from demo_doubles import FlakyCamera, ScriptedOpener, SlowModel, stop_a_recording, video_info, write_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=12, size=(64, 48))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for i in range(5):
        size = (48, 64) if i != 3 else (60, 80)  # one image of another size: resized to the video's
        cv2.imwrite(str(d / f"frame_{i:02d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    (d / "notes.txt").write_text("not an image")
    return d


def run_cli(argv, capsys):
    rc = cli.main(["demo", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_file_source_no_drop_saves_every_frame(tiny_onnx, clip, tmp_path, capsys):
    out, js = tmp_path / "out.mp4", tmp_path / "summary.json"
    rc, stdout, err = run_cli([tiny_onnx, "--source", clip, "--headless", "--no-drop", "-o", out, "--json", js,
                               "--threads", "1"], capsys)
    assert rc == 0, err
    assert video_info(out) == (12, 64, 48)  # the input's frame count and resolution
    s = json.loads(js.read_text())
    assert s["frames_shown"] == 12 and s["frames_captured"] == 12 and s["frames_dropped"] == 0
    assert s["output_frames"] == 12 and s["output_fps"] == pytest.approx(30.0) and s["ended"] == "end of input"
    assert all(s["ms_per_stage"][k] is not None for k in ("capture", "preprocess", "infer", "postprocess", "draw",
                                                         "output"))
    assert s["mean_fps"] > 0 and "onnxruntime" in s["backend"]
    assert stdout.startswith("frames: 12 shown, 0 dropped, 12 captured; mean ")
    assert "ms per frame (mean): capture" in stdout and f"saved: {out} (12 frames at 30 fps)" in stdout
    assert not list(tmp_path.glob(".*"))  # no temporary video left


def test_image_folder_source_plays_every_image_into_the_saved_video(tiny_onnx, folder, tmp_path, capsys):
    out = tmp_path / "f.avi"
    rc, stdout, err = run_cli([tiny_onnx, "-s", folder, "--headless", "--no-drop", "--save", out, "--mode",
                               "side-by-side", "--threads", "1"], capsys)
    assert rc == 0, err
    assert video_info(out) == (5, 128, 48)
    assert "frames: 5 shown, 0 dropped, 5 captured" in stdout


def test_max_frames_and_live_read_file(tiny_onnx, clip, tmp_path, capsys):
    rc, stdout, err = run_cli([tiny_onnx, "-s", clip, "--headless", "--max-frames", "4", "--threads", "1"], capsys)
    assert rc == 0, err
    assert "frames: 4 shown" in stdout and "(--max-frames 4)" in stdout


def _demo(backend, source, **kw) -> webcam.Demo:
    return webcam.Demo(backend, source, headless=True, **kw)


def test_slow_model_drops_frames_of_a_file_read_live(clip):
    model = SlowModel(delay=0.1)
    src = FrameSource(parse_source(str(clip)))  # 12 frames at 30 fps: one every 33 ms
    summary = _demo(model, src).run()
    assert summary["frames_captured"] == 12
    assert summary["frames_dropped"] >= 3
    assert summary["frames_shown"] + summary["frames_dropped"] == 12
    assert summary["ms_per_stage"]["infer"] >= 95
    # the same model with --no-drop: every frame, nothing dropped
    summary = _demo(SlowModel(delay=0.02), FrameSource(parse_source(str(clip))), no_drop=True).run()
    assert summary["frames_shown"] == 12 and summary["frames_dropped"] == 0


def test_camera_lost_mid_stream_is_reopened_and_the_demo_ends_cleanly(tmp_path):
    opener = ScriptedOpener([FlakyCamera(5, period=0.01), FlakyCamera(4, period=0.01, start=5)])
    src = FrameSource(SourceSpec("camera", 0, "0"), opener=opener, backoff=(0.05, 0.05))
    out = tmp_path / "cam.mp4"
    summary = _demo(SlowModel(delay=0.001), src, output=str(out)).run()
    assert summary["reconnects"] == 1 and summary["frames_captured"] == 9
    assert "gave up after 2 reopen attempt(s)" in summary["ended"]
    assert summary["frames_shown"] + summary["frames_dropped"] == 9
    assert video_info(out)[0] == summary["frames_shown"]


def test_prior_overlay_for_a_fixed_point(tiny_prior_onnx, tmp_path):
    """The highlighted region is the row of P the model returns for the cell under the point."""
    from engines.backends.onnxruntime_backend import OnnxModel

    frame = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    point = (100, 20)
    with OnnxModel(tiny_prior_onnx, threads=1) as m:
        p = m.infer_all(preprocess_bgr(frame, m.manifest))["prior"]
        demo = _demo(m, FrameSource(parse_source(str(tmp_path / "f.png"))), no_drop=True,
                     view=View(mode="mask", show_prior=True, point=point, hud=False), legend=False)
        summary = demo.run()
    assert summary["frames_shown"] == 1 and summary["prior"]
    row, cell = prior_row(p, point, (96, 128), m.manifest["prior"]["grid"])
    assert cell == (0, 3)
    expected = heatmap(row, (96, 128))[:, :, ::-1]
    keep = np.ones((96, 128), bool)
    keep[:34, 88:112] = False  # the marker around (100, 20)
    assert (demo._last_image[keep] == expected[keep]).all()


def test_show_prior_without_a_prior_output_says_so(tiny_onnx, clip, capsys):
    rc, _, err = run_cli([tiny_onnx, "-s", clip, "--headless", "--show-prior"], capsys)
    lines = [ln for ln in err.splitlines() if not ln.startswith("[")]
    assert rc == 2 and len(lines) == 1
    assert "has no prior output" in lines[0] and "cpnet export RUN_DIR --with-prior" in lines[0]


def test_keys_switch_mode_alpha_pause_and_save_a_snapshot(tiny_onnx, clip, tmp_path):
    import engines

    with engines.open(tiny_onnx, threads=1) as m:
        demo = _demo(m, FrameSource(parse_source(str(clip))), no_drop=True, max_frames=3,
                     output=str(tmp_path / "o.mp4"))
        demo.run()
        demo.on_key(ord("m"))
        assert demo.view.get().mode == "side-by-side"
        demo.on_key(ord("+"))
        assert demo.view.get().alpha == pytest.approx(0.6)
        demo.on_key(ord("-"))
        demo.on_key(ord("-"))
        assert demo.view.get().alpha == pytest.approx(0.4)
        demo.on_key(ord("p"))  # this file has no prior: a notice, the view stays off
        assert not demo.view.get().show_prior and "no prior view" in demo.view.get().notice
        demo.on_key(ord(" "))
        assert demo.view.get().paused
        demo.on_key(ord("s"))
        snap = tmp_path / "o-snapshot-001.png"
        assert demo.snapshots == [str(snap)] and cv2.imread(str(snap)).shape == (48, 64, 3)
        demo.on_key(27)
        assert demo.quit


@pytest.mark.parametrize("argv,words", [
    (["-s", "0", "--no-drop", "--headless"], "--no-drop is for a file or folder"),
    (["-s", "{clip}", "--headless", "-o", "{tmp}/out.gif"], "the video must be"),
    (["-s", "{clip}", "--headless", "--show-prior", "--prior-point", "12"], "--prior-point"),
    (["-s", "nothing_here.mp4", "--headless"], "nothing_here.mp4: no such file or folder"),
    (["-s", "csi", "--headless"], "GStreamer"),
])
def test_user_mistakes_are_one_line(argv, words, tiny_onnx, clip, tmp_path, capsys):
    if words == "GStreamer" and opencv_build().gstreamer:
        pytest.skip("this OpenCV has GStreamer: csi would be tried for real")
    argv = [a.replace("{clip}", str(clip)).replace("{tmp}", str(tmp_path)) for a in argv]
    rc, _, err = run_cli([tiny_onnx, *argv], capsys)
    lines = [ln for ln in err.splitlines() if not ln.startswith("[")]
    assert rc == 2 and len(lines) == 1 and words in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_window_needs_a_display_and_a_gui_build(tiny_onnx, clip, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc, _, err = run_cli([tiny_onnx, "-s", clip], capsys)
    assert rc == 2
    assert ("GUI: NONE" in err and "cpnet[desktop]" in err) or "no display" in err


def test_ctrl_c_finalises_the_video(tiny_onnx, tmp_path):
    returncode, stdout, stderr, out = stop_a_recording(tiny_onnx, tmp_path, signal.SIGINT)
    assert returncode == 130, stderr
    assert "interrupted (Ctrl-C)" in stdout and "Traceback" not in stderr
    n, w, h = video_info(out)
    assert 0 < n < 150 and (w, h) == (64, 48) and f"saved: {out} ({n} frames" in stdout


# --------------------------------------------------------------------------- the window, under Xvfb


def _xvfb_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "Xvfb is Linux-only"
    for tool, pkg in (("Xvfb", "xvfb"), ("xdotool", "xdotool")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install {pkg}; .ci/run installs it)"
    if not opencv_build().has_window:
        return f"{opencv_build().describe()} has no window support (pip install 'cpnet[desktop]')"
    return None


def _screenshot(display: str, path: Path) -> np.ndarray:
    """The whole X screen as BGR: xwd's dump (TrueColor ZPixmap, 24 or 32 bits per pixel), decoded here."""
    raw = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, timeout=30,
                         check=True).stdout
    header = np.frombuffer(raw[:100], ">u4")
    header_size, width, height, byte_order, bpp, bytes_per_line = (int(header[i]) for i in (0, 4, 5, 7, 11, 12))
    ncolors = int(header[19])
    assert bpp in (24, 32) and byte_order == 0, f"expected a little-endian 24/32-bit X screen, got {bpp} bits"
    start = header_size + 12 * ncolors
    pixels = np.frombuffer(raw[start:start + bytes_per_line * height], np.uint8).reshape(height, bytes_per_line)
    step = bpp // 8
    img = np.ascontiguousarray(pixels[:, : width * step].reshape(height, width, step)[:, :, :3])  # B, G, R(, X)
    cv2.imwrite(str(path), img)
    return img


@pytest.mark.skipif(_xvfb_reason() is not None, reason=str(_xvfb_reason()))
def test_the_window_shows_frames_switches_mode_and_snapshots_under_xvfb(tiny_onnx, tmp_path):
    if shutil.which("xwd") is None:
        pytest.skip("xwd is not installed (Debian: apt-get install x11-apps)")
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    demo = None
    try:
        display = ":" + xvfb.stdout.readline().strip()
        env = {**os.environ, "DISPLAY": display, "QT_LOGGING_RULES": "*=false"}
        clip = write_clip(tmp_path / "w.mp4", frames=300, size=(160, 120))  # 10 s read live
        out = tmp_path / "w.mp4.out.mp4"
        demo = subprocess.Popen([sys.executable, "demo/webcam.py", str(tiny_onnx), "-s", str(clip), "-o", str(out),
                                 "--threads", "1", "--json", str(tmp_path / "s.json")], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        win, deadline = [], time.monotonic() + 60  # a loaded machine can take a while to map the window
        while not win and demo.poll() is None and time.monotonic() < deadline:
            win = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "cpnet demo"], env=env,
                                 capture_output=True, text=True, timeout=30).stdout.split()
            time.sleep(0.3)
        if not win:
            demo.kill()
            raise AssertionError(f"the demo's window did not appear: {demo.communicate()[1][-1500:]}")

        def key(k):
            subprocess.run(["xdotool", "windowfocus", "--sync", win[0], "key", k], env=env, check=True, timeout=30)
            time.sleep(0.4)

        time.sleep(1.0)
        key("m")  # side-by-side: the window doubles its width
        key("s")  # a snapshot beside the output
        deadline = time.monotonic() + 20  # the resized window repaints on its next frame: late on a busy machine
        shot = _screenshot(display, tmp_path / "screenshot.png")
        while shot.std() <= 10 and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            shot = _screenshot(display, tmp_path / "screenshot.png")
        key("q")
        stdout, stderr = demo.communicate(timeout=60)
    finally:
        if demo is not None and demo.poll() is None:
            demo.kill()
        xvfb.terminate()
        xvfb.wait(10)
    assert demo.returncode == 0, stderr
    assert (tmp_path / "screenshot.png").is_file()
    # something was drawn: the screen is not one colour, and the window's area holds the frame's colours
    assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 20
    snaps = sorted(tmp_path.glob("w.mp4.out-snapshot-*.png"))
    assert len(snaps) == 1 and cv2.imread(str(snaps[0])).shape == (120, 320, 3)
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["ended"] == "quit" and s["frames_shown"] > 0 and s["snapshots"] == [str(snaps[0])]


# --------------------------------------------------------------------------- the deploy side, without PyTorch


def test_deploy_side_works_where_torch_cannot_be_imported(tiny_onnx, clip, tmp_path):
    shadow = tmp_path / "shadow"
    for name in ("torch", "tensorboard"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (blocked by the test)\", name=\"{name}\")\n")
    env = {**os.environ, "PYTHONPATH": str(shadow)}

    def run(*argv):
        r = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 0, (argv, r.stderr[-2000:])
        assert "blocked by the test" not in r.stderr, argv
        return r.stdout

    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr  # the shadow works
    out = tmp_path / "o.mp4"
    assert "frames: 3 shown" in run("demo/webcam.py", tiny_onnx, "-s", clip, "--headless", "--no-drop",
                                    "--max-frames", "3", "-o", out)
    assert video_info(out)[0] == 3
    assert "frames: 2 shown" in run("-m", "cpnet", "demo", tiny_onnx, "-s", clip, "--headless", "--max-frames", "2")
    assert "OK" in run("-m", "cpnet", "check", tiny_onnx)
    assert "onnxruntime" in run("-m", "cpnet", "benchmark", tiny_onnx, "--iters", "2", "--warmup", "1")
    assert "examples:" in run("engines/build_engine.py", "--help")


def test_without_opencv_the_demo_says_which_extra_to_install(tmp_path):
    shadow = tmp_path / "shadow" / "cv2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('libGL.so.1: cannot open shared object file')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    for argv in (["demo/webcam.py", "m.onnx"], ["-m", "cpnet", "demo", "m.onnx"]):
        r = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 3 and len(lines) == 1, r.stderr
        assert "cpnet[desktop]" in lines[0] and "cpnet[headless]" in lines[0] and "libgl1" in lines[0]


def test_output_places_are_checked_before_the_model_opens(tiny_onnx, clip, tmp_path, capsys):
    (tmp_path / "taken.mp4").mkdir()
    rc, _, err = run_cli([tiny_onnx, "-s", clip, "--headless", "-o", tmp_path / "taken.mp4"], capsys)
    assert rc == 2 and "existing folder" in err and len(err.strip().splitlines()) == 1
