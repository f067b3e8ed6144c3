"""cpnet demo --serve (demo/serve.py): the token, the Host check, the routes, the controls, viewers that never slow
the demo (a stalled one included), and the page in real headless Chromium. Every connection goes to 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from cpnet.runtime.errors import UserError
from demo import webcam
from demo.serve import BOUNDARY, COOKIE, parse_serve
from demo.sources import FrameSource, SourceSpec
from demo_doubles import FlakyCamera, NoisyCamera, ScriptedOpener, SlowModel

LOOPBACK = "127.0.0.1"


def camera(cam) -> FrameSource:
    return FrameSource(SourceSpec("camera", 0, "0"), opener=ScriptedOpener([cam]), backoff=())


class Running:
    """A demo on a live camera double, served on loopback, run in a thread until the test ends."""

    def __init__(self, backend, cam, send_timeout: float | None = None, **kw):
        self.demo = webcam.Demo(backend, camera(cam), headless=True, serve=(LOOPBACK, 0), **kw)
        if send_timeout is not None:
            self.demo.server.send_timeout = send_timeout
            self.demo.server.httpd.RequestHandlerClass.timeout = send_timeout
        self.summary: dict = {}
        self.thread = threading.Thread(target=lambda: self.summary.update(self.demo.run()), daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        deadline = time.monotonic() + 20
        while self.demo.stats.shown < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.demo.stats.shown >= 3, "the demo did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.demo.quit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the demo did not stop"

    @property
    def port(self) -> int:
        return self.demo.server.port

    @property
    def token(self) -> str:
        return self.demo.server.token

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                token: bool | str = True):
        h = dict(headers or {})
        if token is True:
            h.setdefault("Cookie", f"{self.demo.server.cookie}={self.token}")
        elif isinstance(token, str):
            path += ("&" if "?" in path else "?") + f"token={token}"
        c = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.status, dict(r.getheaders()), r.read()
        c.close()
        return out


def test_serve_address_defaults_to_loopback_and_refuses_bad_ones():
    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_serve("[::1]:0") == ("::1", 0)
    for bad in ("http", "1:2:x", "70000", "-1"):
        with pytest.raises(UserError, match="--serve"):
            parse_serve(bad)


def test_token_host_and_routes():
    with Running(SlowModel(delay=0.005), FlakyCamera(10**9, period=0.02)) as r:
        # no token, a wrong one: 401; the token in the query: the page, and a cookie for what the page loads next
        assert r.request("GET", "/", token=False)[0] == 401
        assert r.request("GET", "/stats", token="nope")[0] == 401
        assert r.request("GET", "/stream.mjpg", token=False)[0] == 401
        status, headers, body = r.request("GET", "/", token=r.token)
        assert status == 200 and b'src="/stream.mjpg"' in body
        assert f"{COOKIE}_{r.port}={r.token}" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        # the cookie alone is enough; the Host must name this server (a rebound DNS name is refused)
        assert r.request("GET", "/app.js")[0] == 200
        assert r.request("GET", "/", headers={"Host": f"attacker.example:{r.port}"})[0] == 403
        assert r.request("GET", "/", headers={"Host": "attacker.example"})[0] == 403
        assert r.request("GET", "/", headers={"Host": f"localhost:{r.port}"})[0] == 200
        assert r.request("GET", "/", headers={"Host": "127.0.0.1:9000"})[0] == 200  # through ssh -L 9000:...:PORT
        # nothing but the page's own routes: no listing, no files
        for path in ("/assets/", "/../serve.py", "/index.html", "/demo/serve.py", "/etc/passwd"):
            assert r.request("GET", path)[0] == 404, path
        stats = json.loads(r.request("GET", "/stats")[2])
        assert stats["frames_shown"] >= 3 and "slow fake" in stats["backend"] and stats["precision"] == "fp32"
        assert set(stats["ms_per_stage"]) == set(webcam.STAGE_SHORT) and stats["flicker"]["raw"]["pairs"] >= 1
        status, headers, png = r.request("GET", "/snapshot.png")
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n" and "attachment" in headers["Content-Disposition"]
        assert r.demo.server.figures()["refused"] == 5


def test_controls_steer_the_view_and_stop_the_demo():
    with Running(SlowModel(delay=0.005), FlakyCamera(10**9, period=0.02)) as r:
        assert r.request("POST", "/control", {"action": "mode", "value": "mask"})[0] == 200
        assert r.request("POST", "/control", {"action": "alpha", "value": 0.8})[0] == 200
        assert r.request("POST", "/control", {"action": "pause", "value": True})[0] == 200
        v = r.demo.view.get()
        assert (v.mode, v.alpha, v.paused) == ("mask", 0.8, True)
        assert r.request("POST", "/control", {"action": "pause", "value": False})[0] == 200
        assert r.request("POST", "/control", {"action": "mode", "value": "nope"})[0] == 400
        assert r.request("POST", "/control", {"action": "explode"})[0] == 400
        # this model has no prior: the answer says why, the view is unchanged
        answer = json.loads(r.request("POST", "/control", {"action": "point", "x": 3, "y": 4})[2])
        assert "no prior view" in answer["notice"] and not r.demo.view.get().show_prior
        # a POST from another site's page is refused even with the cookie (CSRF)
        assert r.request("POST", "/control", {"action": "stop"}, {"Origin": "http://evil.example"})[0] == 403
        assert r.request("POST", "/control", {"action": "stop"}, token=False)[0] == 401
        assert not r.demo.quit
        assert r.request("POST", "/control", {"action": "stop"}, {"Origin": f"http://127.0.0.1:{r.port}"})[0] == 200
        r.thread.join(10)
        assert r.summary["ended"] == "stopped from the browser"
    with pytest.raises(OSError):  # the server is gone with the demo
        socket.create_connection((LOOPBACK, r.port), timeout=2).close()


def read_parts(sock: socket.socket, n: int, timeout: float = 10.0) -> list[bytes]:
    """The first ``n`` JPEG parts of an MJPEG response on ``sock``."""
    sock.settimeout(timeout)
    data, parts = b"", []
    marker = b"--" + BOUNDARY.encode() + b"\r\n"
    while len(parts) < n:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended"
        data += chunk
        while True:
            start = data.find(marker)
            head_end = data.find(b"\r\n\r\n", start)
            if start < 0 or head_end < 0:
                break
            length = int(data[start:head_end].split(b"Content-Length: ")[1].split(b"\r\n")[0])
            if len(data) < head_end + 4 + length:
                break
            parts.append(data[head_end + 4: head_end + 4 + length])
            data = data[head_end + 4 + length:]
    return parts


def open_stream(r: Running, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect((LOOPBACK, r.port))
    s.sendall(f"GET /stream.mjpg?token={r.token} HTTP/1.1\r\nHost: 127.0.0.1:{r.port}\r\n\r\n".encode())
    return s


def test_viewers_share_one_encoding_and_a_stalled_viewer_stalls_no_one():
    with Running(SlowModel(delay=0.005), NoisyCamera(period=0.02), send_timeout=1.0, serve_fps=15) as r:
        frames = r.demo.server.frames
        assert frames.encoded == 0  # nobody watches: nothing is encoded
        stalled = open_stream(r, rcvbuf=4096)  # asks for the stream, never reads it
        viewers = [open_stream(r) for _ in range(3)]
        got = [read_parts(v, 10) for v in viewers]
        for parts in got:
            image = cv2.imdecode(np.frombuffer(parts[-1], np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape == (240, 320, 3)
        # every viewer got 10 frames, but each frame was encoded once for all of them
        assert frames.encoded < sum(len(p) for p in got)
        # the stalled viewer's socket fills up; the others and the demo go on, and it is closed after the timeout
        shown = r.demo.stats.shown
        t0 = time.monotonic()
        for v in viewers:
            read_parts(v, 20)
        assert time.monotonic() - t0 < 8  # 20 frames at 15 per second, not held up by the stalled socket
        assert r.demo.stats.shown > shown + 20
        deadline = time.monotonic() + 10
        while frames.viewers > 3 and time.monotonic() < deadline:
            for v in viewers:
                read_parts(v, 1)
        assert frames.viewers == 3, "the stalled viewer was not let go"
        for v in viewers[:2]:
            v.close()  # a disconnect raises nothing
        read_parts(viewers[2], 5)
        stalled.close()
        viewers[2].close()
    assert r.summary["ended"] == "quit" and r.summary["served"]["frames_encoded"] >= 20


def test_the_stream_is_capped_at_serve_fps():
    """A camera at about 100 frames a second, served at 5: the encoder never goes faster than asked (an upper bound;
    a busy machine only makes it slower)."""
    with Running(SlowModel(delay=0.0), FlakyCamera(10**9, period=0.01), serve_fps=5) as r:
        viewer = open_stream(r)
        read_parts(viewer, 2)
        frames = r.demo.server.frames
        n0, shown0, t0 = frames.encoded, r.demo.stats.shown, time.monotonic()
        read_parts(viewer, 8)
        n1, shown1, elapsed = frames.encoded, r.demo.stats.shown, time.monotonic() - t0
        viewer.close()
        assert n1 - n0 <= 5 * elapsed + 2
        assert shown1 - shown0 > n1 - n0  # the demo itself is not capped: frames in between are not encoded


# --------------------------------------------------------------------------- the page in headless Chromium

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=900,700")


def _browser_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[dev]')"
    for name in ("chromium", "chromedriver"):
        if shutil.which(name) is None:
            return f"{name} is not on PATH (Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
    return None


@pytest.mark.slow
def test_the_page_in_headless_chromium(tiny_prior_onnx, tmp_path):
    reason = _browser_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from engines.backends.onnxruntime_backend import OnnxModel

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    # the Debian chromedriver, never one Selenium Manager would download
    service = Service(executable_path=shutil.which("chromedriver"), log_output=str(tmp_path / "chromedriver.log"))
    with OnnxModel(tiny_prior_onnx, threads=1) as model:
        running = Running(model, FlakyCamera(10**9, period=0.03, shape=(96, 128)))
        drawn_priors = []  # (the point, the prior rows) of each frame the drawing thread drew with a prior
        draw = running.demo.live_loop.draw

        def spy(frame, labels, prior, view):
            if prior is not None and view.show_prior:
                drawn_priors.append((view.point, prior))
            return draw(frame, labels, prior, view)

        running.demo.live_loop.draw = spy
        with running as r:
            _drive(r, drawn_priors, options, service)


def _drive(r: Running, drawn_priors: list, options, service) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"http://{LOOPBACK}:{r.port}/?token={r.token}")
        wait = WebDriverWait(driver, 30)
        view = driver.find_element(By.ID, "view")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", view) > 0)
        assert driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                     view) == [128, 96]
        # the live view moves: two screenshots a second apart differ
        first = view.screenshot_as_png
        time.sleep(1.0)
        second = view.screenshot_as_png
        a, b = (cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in (first, second))
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 1.0
        # /stats reaches the page and keeps updating it
        table = driver.find_element(By.ID, "stats")
        wait.until(lambda d: "frames" in table.text)
        before = table.text
        wait.until(lambda d: table.text != before)
        assert "flicker" in table.text and "onnxruntime" in table.text
        # a click on the picture shows that pixel's context-prior row
        assert not r.demo.view.get().show_prior
        box = view.rect
        ActionChains(driver).move_to_element_with_offset(view, int(box["width"] * 0.3) - box["width"] // 2,
                                                         int(box["height"] * 0.25) - box["height"] // 2).click()\
            .perform()
        wait.until(lambda d: r.demo.view.get().show_prior)
        x, y = r.demo.view.get().point
        assert abs(x - 0.3 * 128) <= 2 and abs(y - 0.25 * 96) <= 2
        wait.until(lambda d: "prior of" in table.text)
        # and the frames drawn from then on are that pixel's prior view: the model's P rows, for that point
        wait.until(lambda d: drawn_priors)
        point, prior = drawn_priors[-1]
        assert point == (x, y) and prior.shape == (16, 16)
        # without the token the same browser gets 401
        driver.delete_all_cookies()
        driver.get(f"http://{LOOPBACK}:{r.port}/stats")
        assert "open the URL with the token" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


class _Controls:
    def live_stats(self) -> dict:
        return {"fps": 0.0}

    def control(self, request: dict) -> dict:
        return {}

    def snapshot_png(self):
        return None


def test_beyond_loopback_only_when_asked_and_still_with_the_token():
    """Bound to 0.0.0.0 (asked for): an IP address in Host is accepted, the token still required, and the hint says
    who can reach it. The test connects to 127.0.0.1 only."""
    from demo.serve import DemoServer

    server = DemoServer(_Controls(), "0.0.0.0", 0).start()
    try:
        assert "listening on 0.0.0.0" in server.hint() and "ssh -L" not in server.hint()
        for host, token, status in (("10.1.2.3", True, 200), ("10.1.2.3", False, 401), ("evil.example", True, 403)):
            c = http.client.HTTPConnection(LOOPBACK, server.port, timeout=10)
            c.request("GET", "/stats" + (f"?token={server.token}" if token else ""),
                      headers={"Host": f"{host}:{server.port}"})
            assert c.getresponse().status == status, host
            c.close()
    finally:
        server.close()
    loop = DemoServer(_Controls())
    try:
        assert loop.host == "127.0.0.1" and f"ssh -L {loop.port}:127.0.0.1:{loop.port}" in loop.hint()
        assert not loop.host_ok(f"10.1.2.3:{loop.port}")  # only loopback reaches it: another address is refused
    finally:
        loop.close()


def test_cpnet_demo_serve_prints_the_url_and_the_tunnel(tiny_onnx, tmp_path, capsys):
    from cpnet import cli
    from demo_doubles import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=6)
    rc = cli.main(["demo", str(tiny_onnx), "-s", str(clip), "--headless", "--no-drop", "--serve", "127.0.0.1:0",
                   "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "serving the demo at http://127.0.0.1:" in out and "?token=" in out and "ssh -L " in out
    assert "frames: 6 shown" in out
    rc = cli.main(["demo", str(tiny_onnx), "-s", str(clip), "--headless", "--serve", "localhost:http"])
    err = capsys.readouterr().err
    assert rc == 2 and "--serve 'localhost:http'" in err and "Traceback" not in err
