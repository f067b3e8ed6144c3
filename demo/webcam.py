"""Live segmentation: ``cpnet demo MODEL --source SRC`` (or ``python demo/webcam.py MODEL --source SRC``).

    cpnet demo runs/quickstart/export/model.onnx                       # the first camera, in a window
    cpnet demo model.int8-cpu.onnx --source clip.mp4 --headless --no-drop -o out.mp4
    cpnet demo model.fp16.engine --source csi --width 1280 --height 720 --fps 30

The model is any artifact :func:`engines.open` takes (a run directory or checkpoint, an ONNX
file, a TensorRT engine); its manifest gives the preprocessing, the classes and the palette.
The source is a camera index, a video file, a folder of images, an RTSP/HTTP URL, a GStreamer
pipeline or ``csi`` (:mod:`demo.sources`). Capture, inference and drawing run in their own
threads and the window or video writer in this one (:mod:`demo.live_loop`); capture keeps only
the newest frame and counts the ones it drops, ``--no-drop`` processes every frame of a file or
folder instead. The picture (:mod:`demo.render`): overlay, side-by-side or mask, the legend of the
classes in view, a HUD with FPS and milliseconds per stage (and GPU load and board power on a
Jetson, :mod:`demo.tegrastats`), and the context-prior view: for one pixel, its row of the prior
map P (``--show-prior``; needs an artifact exported with ``cpnet export --with-prior``, or a
checkpoint). ``--serve [HOST:]PORT`` serves the live view, its figures and its controls to a browser
(:mod:`demo.serve`); the flicker figures and ``--smooth`` are :mod:`demo.flicker`'s.

Keys (window): q/Esc quit, space pause, m cycle modes, s snapshot (PNG beside the output), p the
prior view, +/- overlay alpha; the mouse picks the prior's pixel. The run ends at the end of a
file, at ``--max-frames``, on q/Esc, on Ctrl-C (the video is finalised first: exit status 130)
or when a lost live source cannot be reopened; a summary (frames shown and dropped, mean FPS,
ms per stage) is printed on stdout, and with ``--json`` written as JSON.

Nothing here imports PyTorch (a checkpoint's torch backend does, when one is opened).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python demo/webcam.py`: import the packages from the repo root
    _root = str(Path(__file__).resolve().parent.parent)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _root  # do not let demo/*.py shadow top-level modules
    else:
        sys.path.insert(0, _root)

from cpnet.runtime.errors import EXIT_INTERRUPTED, EXIT_OK, MissingDependency, Terminated, UserError  # noqa: E402

try:
    import cv2  # noqa: E402
except ImportError as _e:  # a deploy install without its OpenCV extra, or opencv-python without libGL
    _missing = MissingDependency(f"cpnet demo needs OpenCV, which does not import here ({_e}): pip install "
                                 f"'cpnet[desktop]' (with a window; needs Debian's libgl1) or 'cpnet[headless]'; on a "
                                 f"Jetson, JetPack's python3-opencv in a venv made with --system-site-packages")
    if __name__ == "__main__":  # `python demo/webcam.py`: the front door's one line, by hand
        sys.stderr.write(f"error: {_missing}\n")
        sys.exit(_missing.exit_code)
    raise _missing from None
import numpy as np  # noqa: E402

from cpnet.runtime.files import atomic_write_bytes, atomic_write_json, check_output  # noqa: E402
from cpnet.runtime.log import get_logger  # noqa: E402
from cpnet.runtime.video import VideoFile, check_video_suffix  # noqa: E402
from demo.flicker import Temporal, hud_line, summary_lines  # noqa: E402
from demo.live_loop import CLOSED, MODES, TIMEOUT, LiveLoop, Runner, Stats, View, ViewState, check_no_drop  # noqa: E402
from demo.render import Renderer  # noqa: E402
from demo.sources import (DEFAULT_BACKOFF, FrameSource, check_source, opencv_build, parse_source,  # noqa: E402
                          quiet_opencv)
from demo.tegrastats import TegraStats  # noqa: E402

log = get_logger("demo")

WINDOW = "cpnet demo"
STAGE_SHORT = {"capture": "cap", "preprocess": "pre", "infer": "infer", "postprocess": "post", "draw": "draw",
               "output": "out"}
KEYS_HELP = "q/Esc quit, space pause, m mode, s snapshot, p prior, +/- alpha"


# --------------------------------------------------------------------------- options


def parse_point(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        x, y = (int(float(v)) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UserError(f"--prior-point {text!r}: expected X,Y in frame pixels, e.g. 320,240") from None
    if x < 0 or y < 0:
        raise UserError(f"--prior-point {text!r}: pixel coordinates are 0 or more")
    return x, y


def backend_options(kind: str, args) -> dict:
    """The options :func:`engines.open` passes to the backend, from the runtime flags that apply to it."""
    from cpnet.cli.args import backend_options as chosen

    threads, providers = getattr(args, "threads", None), getattr(args, "providers", None)
    if kind in ("torch", "openvino"):
        opts = {"device": getattr(args, "device", "auto")} if kind == "torch" else {}
        if threads:
            opts["threads"] = threads
        return {**opts, **chosen(args)}  # --backend-options (torch: precision; openvino: precision, cache_dir, ...)
    if kind == "onnxruntime":
        opts = {}
        if providers:
            opts["providers"] = providers
        if threads:
            opts["threads"] = threads
        return opts
    if threads or providers:
        log.warning(f"--threads and --providers do not apply to the {kind} backend; ignored")
    if kind == "tensorrt":
        from cpnet.cli.args import runtime_options

        return runtime_options(args).engine_options()
    return {}


def backoff_for(attempts: int) -> tuple[float, ...]:
    """Waits before each reopen attempt: 0.5, 1, 2, 4, 8, 8, ... seconds."""
    return tuple(DEFAULT_BACKOFF[min(i, len(DEFAULT_BACKOFF) - 1)] for i in range(attempts))


# --------------------------------------------------------------------------- output


def snapshot_path(output: str | None, n: int) -> Path:
    if output:
        out = Path(output)
        return out.with_name(f"{out.stem}-snapshot-{n:03d}.png")
    return Path.cwd() / f"cpnet-demo-{time.strftime('%Y%m%d-%H%M%S')}-{n:03d}.png"


def save_png(path: Path, image: np.ndarray) -> Path:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"{path}: could not encode the snapshot")
    atomic_write_bytes(path, data.tobytes())
    return path


# --------------------------------------------------------------------------- the run


def format_summary(s: dict) -> str:
    lines = [f"frames: {s['frames_shown']} shown, {s['frames_dropped']} dropped, {s['frames_captured']} captured; "
             f"mean {s['mean_fps']:.1f} FPS over {s['seconds']:.1f} s ({s['ended']})"]
    ms = "  ".join(f"{stage} {v:.2f}" for stage, v in s["ms_per_stage"].items() if v is not None)
    lines.append(f"ms per frame (mean): {ms}")
    lines.append(f"source: {s['source']}; model: {s['backend']}")
    if s.get("reconnects"):
        lines.append(f"reconnects: {s['reconnects']}")
    if s.get("output"):
        lines.append(f"saved: {s['output']} ({s['output_frames']} frames at {s['output_fps']:g} fps)")
    for p in s.get("snapshots") or []:
        lines.append(f"snapshot: {p}")
    if s.get("flicker"):
        lines.extend(summary_lines(s["flicker"]))
    return "\n".join(lines)


class Demo:
    """One run of the demo; :meth:`run` returns the summary dict. Built by :func:`run` from the parsed flags,
    or directly (tests, benchmarks) with a backend that is already open."""

    def __init__(self, backend, source: FrameSource, *, headless: bool = True, output: str | None = None,
                 no_drop: bool = False, max_frames: int | None = None, fps_cap: float | None = None,
                 view: View | None = None, legend: bool = True, pace: bool = True, smooth: float | None = None,
                 serve: tuple[str, int] | None = None, serve_fps: float | None = None):
        self.backend = backend
        self.source = source
        self.headless = headless
        self.output = output
        self.no_drop = no_drop
        self.max_frames = max_frames
        self.fps_cap = fps_cap
        self.view = ViewState(view or View())
        self.runner = Runner(backend)
        self.stats = Stats()
        self.tegra: TegraStats | None = None
        self.snapshots: list[str] = []
        self.interrupted = False
        self.quit = False
        self._frame_size: tuple[int, int] | None = None
        self._last_image: np.ndarray | None = None
        self._window = False
        self.stopped_by = ""
        self.temporal = Temporal(smooth)
        self.server = None
        if serve is not None:
            from demo.serve import DEFAULT_FPS, DemoServer

            self.server = DemoServer(self, *serve, fps=serve_fps or DEFAULT_FPS)
        prior_info = backend.manifest.get("prior") or {}
        self.renderer = Renderer(backend.classes or [str(i) for i in range(backend.num_classes)],
                                 backend.palette or _grey_palette(backend.num_classes),
                                 hud_lines=self._hud_lines, prior_grid=prior_info.get("grid"), legend=legend)
        pace_fps = None
        if not no_drop and not source.live:
            pace_fps = source.fps or 30.0  # a file read live arrives at its own rate, as from a camera
        self.live_loop = LiveLoop(source, self.runner, backend.manifest, self.renderer, self.view, no_drop=no_drop,
                                 fps_cap=fps_cap, pace_fps=pace_fps, max_frames=max_frames,
                                 temporal=self.temporal)
        fps = source.fps if (source.fps and not source.live) else (fps_cap or source.fps or 30.0)
        self.video = VideoFile(output, fps, hint=f"FFmpeg in this OpenCV: {'YES' if opencv_build().ffmpeg else 'NO'}; "
                                                 f"try .avi") if output else None

    # --- the HUD ---------------------------------------------------------------------------
    def _hud_lines(self) -> list[str]:
        ms = self.stats.recent_ms()
        times = "  ".join(f"{STAGE_SHORT[s]} {v:.1f}" for s, v in ms.items() if v is not None)
        fps = f"{self.stats.fps:5.1f}" if self.stats.shown >= 2 else "  -- "
        lines = [f"{fps} FPS  dropped {self.live_loop.dropped}  {self.backend.describe()}",
                 f"ms  {times}" if times else ""]
        lines.append(hud_line(self.temporal.figures()))
        if self.tegra is not None:
            lines.append(self.tegra.hud())
        return lines

    # --- keys and mouse --------------------------------------------------------------------
    def on_key(self, key: int) -> None:
        if key < 0:
            return
        ch = chr(key & 0xFF).lower() if (key & 0xFF) < 128 else ""
        if ch == "q" or (key & 0xFF) == 27:
            self.quit = True
        elif ch == " ":
            paused = not self.view.get().paused
            self.view.update(paused=paused)
            log.info("paused" if paused else "resumed")
        elif ch == "m":
            self.view.notify(f"mode: {self.view.cycle_mode()}")
        elif ch == "s":
            self.snapshot()
        elif ch == "p":
            self.toggle_prior()
        elif ch in ("+", "="):
            self.view.notify(f"alpha {self.view.nudge_alpha(+0.1):.2f}", 1.5)
        elif ch in ("-", "_"):
            self.view.notify(f"alpha {self.view.nudge_alpha(-0.1):.2f}", 1.5)

    def toggle_prior(self) -> None:
        if not self.runner.has_prior:
            self.view.notify(f"no prior view: {self.runner.why_no_prior}", 5.0)
            return
        on = not self.view.get().show_prior
        self.view.update(show_prior=on)
        log.info("prior view on (the mouse picks the pixel)" if on else "prior view off")

    def on_mouse(self, event, x, y, flags=0, param=None) -> None:
        if event not in (cv2.EVENT_MOUSEMOVE, cv2.EVENT_LBUTTONDOWN) or self._frame_size is None:
            return
        if not self.view.get().show_prior:
            return
        h, w = self._frame_size
        self.view.update(point=(int(x) % w, min(max(int(y), 0), h - 1)))

    def snapshot(self) -> Path | None:
        if self._last_image is None:
            return None
        n = len(self.snapshots) + 1
        while snapshot_path(self.output, n).exists():  # an earlier run's snapshots beside the same -o stay
            n += 1
        path = save_png(snapshot_path(self.output, n), self._last_image)
        self.snapshots.append(str(path))
        self.view.notify(f"snapshot: {path}")
        return path

    # --- the browser's controls (demo.serve) ------------------------------------------------
    def live_stats(self) -> dict:
        """The HUD's figures for ``/stats``."""
        v = self.view.get()
        return {"fps": round(self.stats.fps, 2), "frames_shown": self.stats.shown,
                "frames_dropped": self.live_loop.dropped,
                "ms_per_stage": {k: (round(x, 2) if x is not None else None) for k, x in self.stats.recent_ms().items()},
                "backend": self.backend.describe(), "precision": self.backend.precision,
                "flicker": self.temporal.figures(), "has_prior": self.runner.has_prior,
                "why_no_prior": self.runner.why_no_prior, "stopped": self.quit or self.live_loop.stop_event.is_set(),
                "view": {"mode": v.mode, "alpha": v.alpha, "paused": v.paused, "show_prior": v.show_prior,
                         "point": list(v.point) if v.point else None},
                "board": self.tegra.hud() if self.tegra is not None else None}

    def control(self, request: dict) -> dict:
        """One POST /control: what a window key does (mode, alpha, pause, prior, the prior's pixel, stop)."""
        action = request.get("action")
        if action == "mode":
            if request.get("value") not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}")
            self.view.notify(f"mode: {request['value']}", 1.5)
            self.view.update(mode=request["value"])
        elif action == "alpha":
            self.view.update(alpha=round(min(1.0, max(0.0, float(request.get("value")))), 2))
        elif action == "pause":
            self.view.update(paused=bool(request.get("value", not self.view.get().paused)))
        elif action in ("prior", "point"):
            if not self.runner.has_prior:
                return {"notice": f"no prior view: {self.runner.why_no_prior}"}
            if action == "point":
                h, w = self._frame_size or (0, 0)
                if not (h and w):
                    return {"notice": "no frame yet"}
                x, y = int(request["x"]), int(request["y"])
                self.view.update(show_prior=True, point=(x % w, min(max(y, 0), h - 1)))
            else:
                self.view.update(show_prior=bool(request.get("value", not self.view.get().show_prior)))
        elif action == "stop":
            self.quit = True
            self.stopped_by = "stopped from the browser"
            return {"notice": "stopping"}
        else:
            raise ValueError(f"unknown action {action!r}: mode, alpha, pause, prior, point or stop")
        return {"view": self.live_stats()["view"]}

    def snapshot_png(self) -> bytes | None:
        image = self._last_image
        if image is None:
            return None
        ok, data = cv2.imencode(".png", image)
        return data.tobytes() if ok else None

    # --- the loop --------------------------------------------------------------------------
    def _open_window(self, image: np.ndarray) -> None:
        if not os.environ.get("QT_QPA_FONTDIR") and Path("/usr/share/fonts/truetype").is_dir():
            os.environ["QT_QPA_FONTDIR"] = "/usr/share/fonts/truetype"  # the pip wheel's Qt ships no fonts
        flags = cv2.WINDOW_AUTOSIZE if image.shape[1] <= 1920 else cv2.WINDOW_NORMAL
        cv2.namedWindow(WINDOW, flags | getattr(cv2, "WINDOW_GUI_NORMAL", 0))  # no Qt toolbar over the picture
        cv2.setMouseCallback(WINDOW, self.on_mouse)
        self._window = True
        log.info(f"keys: {KEYS_HELP}")

    def _window_closed(self) -> bool:
        try:
            return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def _show(self, image: np.ndarray) -> None:
        if self.headless:
            return
        if not self._window:
            self._open_window(image)
        cv2.imshow(WINDOW, image)

    def _poll_keys(self, wait_ms: int = 1) -> None:
        if self.headless or not self._window:
            return
        self.on_key(cv2.waitKey(wait_ms))
        if not self.quit and self._window_closed():
            self.quit = True

    def run(self) -> dict:
        started = time.perf_counter()
        ended = ""
        try:
            self.tegra = TegraStats.start_if_available()
            if self.server is not None:
                self.server.start()
                print(self.server.hint(), flush=True)
            self.live_loop.start()
            while not self.quit:
                item = self.live_loop.get(0.01 if self._window else 0.1)
                if item is CLOSED:
                    ended = self.source.ended_because or "end of input"
                    break
                if item is TIMEOUT:
                    self._poll_keys()
                    continue
                self._frame_size = item.frame.image.shape[:2]
                t0 = time.perf_counter()
                if self.video is not None and not item.redraw:
                    self.video.write(item.image)
                self._show(item.image)
                if self.server is not None:
                    self.server.publish(item.image)
                self._last_image = item.image
                if not item.redraw:
                    item.frame.timings["output"] = (time.perf_counter() - t0) * 1000.0
                    self.stats.record(item.frame.timings)
                self._poll_keys()
                if self.max_frames is not None and self.stats.shown >= self.max_frames:
                    ended = f"--max-frames {self.max_frames}"
                    break
            else:
                ended = self.stopped_by or "quit"
            if ended and not self.headless and self._window and not self.quit and not self.source.live \
                    and not ended.startswith("--max-frames"):
                self._hold()
        except KeyboardInterrupt as e:
            self.interrupted = True
            ended = "interrupted (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"
        finally:
            self.live_loop.stop()
            if self.server is not None:
                self.server.close()
            self.live_loop.join(5.0)
            saved = None
            try:
                saved = self.video.close() if self.video is not None else None
            finally:
                self.source.close()
                if self.tegra is not None:
                    self.tegra.stop()
                if self._window:
                    cv2.destroyAllWindows()
                    cv2.waitKey(1)
        return self.summary(ended, time.perf_counter() - started, saved)

    def _hold(self) -> None:
        """End of a file in a window: keep the last picture up until a key or the window is closed."""
        self.view.notify("end of input: any key closes the window", 3600)
        if self._last_image is not None:
            log.info("end of input: any key closes the window")
        while True:
            key = cv2.waitKey(50)
            if key != -1 or self._window_closed():
                return

    def summary(self, ended: str, seconds: float, saved: Path | None) -> dict:
        return {
            "source": self.source.describe(),
            "model": self.backend.path,
            "backend": self.backend.describe(),
            "frames_captured": self.source.frames,
            "frames_shown": self.stats.shown,
            "frames_dropped": self.live_loop.dropped,
            "mean_fps": round(self.stats.mean_fps, 3),
            "seconds": round(seconds, 3),
            "ms_per_stage": {k: (round(v, 3) if v is not None else None) for k, v in self.stats.mean_ms().items()},
            "no_drop": self.no_drop,
            "reconnects": self.source.reconnects,
            "ended": ended or "end of input",
            "output": str(saved) if saved else None,
            "output_frames": self.video.frames if self.video is not None else 0,
            "output_fps": self.video.fps if self.video is not None else None,
            "snapshots": list(self.snapshots),
            "prior": bool(self.view.get().show_prior),
            "flicker": self.temporal.figures(),
            "served": self.server.figures() if self.server is not None else None,
        }


def _grey_palette(n: int) -> list[list[int]]:
    return [[int(v)] * 3 for v in np.linspace(40, 255, max(1, n))]


# --------------------------------------------------------------------------- the command


DESCRIPTION = """Live segmentation of a camera, a video, a folder of images or a stream, with any artifact.

MODEL is a run directory or checkpoint, an ONNX file or a TensorRT engine; its manifest gives the
preprocessing. Capture never waits for the model: the newest frame is processed and the others are
counted as dropped (--no-drop processes every frame of a file or folder). Window keys: q/Esc quit,
space pause, m mode (overlay, side-by-side, mask), s snapshot, p prior view, +/- alpha. A summary
(frames shown and dropped, mean FPS, ms per stage, flicker) ends every run. --serve PORT shows it in a
browser instead (127.0.0.1 unless HOST:PORT; the URL with its token is printed). The window needs an OpenCV
with GUI support (pip install 'cpnet[desktop]'); GStreamer pipelines and csi need a system OpenCV
built with GStreamer (JetPack's)."""

EXAMPLES = """cpnet demo runs/quickstart/export/model.onnx                      # the first camera, in a window
cpnet demo model.int8-cpu.onnx --source clip.mp4 --headless --no-drop -o out.mp4
cpnet demo runs/quickstart --source frames/ --mode side-by-side
cpnet demo model.fp16.engine --source csi --width 1280 --height 720 --fps 30
cpnet demo model.int8.onnx --backend tensorrt --source csi   # builds model.int8.engine on first use
cpnet demo model.onnx --source rtsp://192.168.1.20:8554/cam --fps-cap 15
cpnet demo model.onnx --source clip.mp4 --show-prior --prior-point 320,240 --headless -o prior.mp4
cpnet demo prior.onnx --source 0 --headless --serve 8080             # watch and steer it from a browser
cpnet demo model.int8.onnx --source clip.mp4 --no-drop --headless --smooth 0.5   # flicker with and without
cpnet demo model.int8.onnx --backend openvino --backend-options precision=bf16 --source clip.mp4 --headless"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_input(p, "MODEL",
                       "the artifact: a run directory or checkpoint (.pt), an ONNX file or a TensorRT engine")
    p.add_argument("-s", "--source", default="0", metavar="SRC",
                   help="a camera index (default 0), a video file, a folder of images, an image, an rtsp:// or "
                        "http:// URL, a GStreamer pipeline ('... ! appsink'), or csi[:N] (Jetson CSI camera)")
    cli_args.add_output(p, "save the drawn video here (.mp4, .avi, .mkv, .mov); snapshots (key s) go beside it")
    p.add_argument("--save", dest="output", metavar="PATH", help="the same as -o/--output")
    p.add_argument("--overwrite", action="store_true", help="replace the -o video if the file exists (else refused)")
    g = p.add_argument_group("source")
    g.add_argument("--width", type=cli_args.positive_int, metavar="PX",
                   help="capture width (cameras, csi; csi default 1280)")
    g.add_argument("--height", type=cli_args.positive_int, metavar="PX",
                   help="capture height (cameras, csi; csi default 720)")
    g.add_argument("--fps", type=_positive_float, metavar="F",
                   help="capture rate (cameras, csi: default 30), and the rate a folder is read at without --no-drop")
    g.add_argument("--no-drop", action="store_true",
                   help="process every frame of a file or folder, as fast as the model goes (offline mode)")
    g.add_argument("--reconnect", type=cli_args.non_negative_int, default=len(DEFAULT_BACKOFF), metavar="N",
                   help=f"times to reopen a lost live source, waiting 0.5, 1, 2, 4, 8 s (default {len(DEFAULT_BACKOFF)})")
    g.add_argument("--max-frames", type=cli_args.positive_int, metavar="N", help="stop after showing N frames")
    g.add_argument("--fps-cap", type=_positive_float, metavar="F", help="run the model at most F times per second")
    v = p.add_argument_group("view")
    v.add_argument("--mode", choices=MODES, default="overlay", help="what to draw (default overlay; key m cycles)")
    v.add_argument("--alpha", type=_unit_float, default=0.5, metavar="A",
                   help="opacity of the class colours over the frame, 0 to 1 (default 0.5; keys +/-)")
    v.add_argument("--show-prior", action="store_true",
                   help="show the context prior of one pixel: its row of P (needs an artifact exported with "
                        "--with-prior, or a checkpoint; key p)")
    v.add_argument("--prior-point", metavar="X,Y",
                   help="the pixel whose prior is shown (default: under the mouse, or the frame's centre)")
    v.add_argument("--headless", action="store_true", help="no window (SSH, CI): use with -o to keep the video")
    v.add_argument("--no-hud", action="store_true", help="no FPS/timing text on the picture")
    v.add_argument("--no-legend", action="store_true", help="no legend of the classes in view")
    v.add_argument("--smooth", type=_weight, metavar="A",
                   help="draw an exponential moving average of the class probabilities over frames, A = the new "
                        "frame's weight (e.g. 0.5; reset on a scene cut): less flicker, a little lag")
    w = p.add_argument_group("browser")
    w.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve the live view, its figures and its controls to a browser (127.0.0.1 unless a HOST is "
                        "given; the URL with its token is printed; 0 picks a free port)")
    w.add_argument("--serve-fps", type=_positive_float, metavar="F",
                   help="at most this many frames a second to the browser (default 15)")
    cli_args.add_json(p, "the summary")
    cli_args.add_engine_trust(p)
    cli_args.add_runtime(p, device=True, providers=True)
    from engines.backends import BACKENDS

    cli_args.add_backend(p, tuple(BACKENDS), options_help="torch: precision=fp32|fp16|bf16; openvino: "
                                                          "precision=f32|bf16|f16,performance=latency|throughput,"
                                                          "cache_dir=DIR")


def _positive_float(text: str) -> float:
    import argparse

    from cpnet.cli.args import non_negative_float

    value = non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _weight(text: str) -> float:
    import argparse

    value = _unit_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1, got {text}")
    return value


def _unit_float(text: str) -> float:
    import argparse

    from cpnet.cli.args import non_negative_float

    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def run(args) -> int:
    import engines

    quiet_opencv()
    point = parse_point(args.prior_point)
    serve = None
    if args.serve is not None:
        from demo.serve import parse_serve

        serve = parse_serve(args.serve)
    if point is not None and not args.show_prior:
        log.warning("--prior-point without --show-prior: the prior view starts off (key p turns it on)")
    build = opencv_build()
    spec = parse_source(args.source, args.width, args.height, args.fps)
    check_source(spec, build)
    check_no_drop(spec.live, args.no_drop)
    if not args.headless:
        build.require_window()
    if args.output:
        check_video_suffix(args.output, "-o")
        if os.path.isfile(args.output) and not args.overwrite:  # a recording may be all there is of that scene
            raise UserError(f"{args.output}: exists; pass --overwrite to replace it, or choose another -o")
    for path, what in ((args.output, "video"), (args.json, "summary")):
        if path:
            check_output(path, what=what)
    kind = getattr(args, "backend", None) or engines.backend_for(args.input)
    backend = engines.open(args.input, backend=kind, **backend_options(kind, args))
    try:
        runner = Runner(backend)
        if args.show_prior and not runner.has_prior:
            raise UserError(f"--show-prior: {runner.why_no_prior}")
        h, w = backend.input_size
        backend.infer(np.zeros((1, 3, h, w), np.float32))  # warm-up: first-run allocations stay out of the figures
        source = FrameSource(spec, backoff=backoff_for(args.reconnect))
        log.info(f"{source.describe()} -> {backend.describe()}"
                 + (" [every frame]" if args.no_drop else " [newest frame; others dropped]"))
        view = View(mode=args.mode, alpha=args.alpha, show_prior=args.show_prior, point=point, hud=not args.no_hud)
        demo = Demo(backend, source, headless=args.headless, output=args.output, no_drop=args.no_drop,
                    max_frames=args.max_frames, fps_cap=args.fps_cap, view=view, legend=not args.no_legend,
                    smooth=args.smooth, serve=serve, serve_fps=args.serve_fps)
        summary = demo.run()
    finally:
        backend.close()
    print(format_summary(summary), flush=True)
    if args.json:
        atomic_write_json(args.json, summary)
    if demo.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb(__name__ if __package__ else "demo.webcam", argv)


if __name__ == "__main__":
    sys.exit(main())
