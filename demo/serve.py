"""Watch and steer the live demo from a browser: ``cpnet demo MODEL --serve [HOST:]PORT``.

    GET  /                 the page (demo/assets/index.html and app.js)
    GET  /stream.mjpg      the drawn frames as MJPEG (multipart/x-mixed-replace: any browser's <img>)
    GET  /stats            the HUD figures as JSON (the page polls it twice a second)
    GET  /snapshot.png     the last drawn frame, as a download
    POST /control          {"action": "mode" | "alpha" | "pause" | "prior" | "point" | "stop", ...}

The standard library's :class:`http.server.ThreadingHTTPServer` (a thread per connection) is all it
takes: no TLS, STUN or codecs to set up, and nothing to install on a Jetson.

Safe by default: it listens on 127.0.0.1 unless another address is asked for, and every request must
carry the random token printed in the URL (``?token=``; the page's answer sets it as a cookie, because
``<img>`` and ``fetch`` cannot add headers), on loopback too: any web page the user has open could
otherwise reach a loopback server (CSRF, DNS rebinding). The ``Host`` header must name this server (an
IP address, ``localhost`` or this machine's name: a rebound DNS name is refused), a POST's ``Origin``
must too, and the cookie is ``SameSite=Strict``. Without the token: 401. Only the routes above exist:
no directory listing, no file but the page's own two assets.

Viewers never slow the pipeline: :meth:`DemoServer.publish` (the demo's main thread, once per drawn
frame) only keeps a reference to the newest frame. One encoder thread JPEG-encodes it, at most
``fps`` times a second and only while someone watches, once for all viewers; each viewer's thread
sends the newest encoding it has not sent yet, so a slow viewer skips frames and a stalled socket
blocks only its own thread (until the socket timeout closes it). A disconnect raises nothing.
"""

from __future__ import annotations

import hmac
import http.server
import ipaddress
import json
import secrets
import socket
import threading
import time
from http import HTTPStatus
from importlib import resources
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from cpnet.runtime.errors import UserError
from cpnet.runtime.log import get_logger

log = get_logger("demo")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_FPS = 15.0
JPEG_QUALITY = 80
COOKIE = "cpnet_demo_token"  # + "_PORT": cookies are not kept apart by port, two demos on one host would clash
BOUNDARY = "cpnetframe"
#: Seconds a viewer's socket may block on a send before it is closed (a stalled viewer).
SEND_TIMEOUT_S = 10.0
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8")}


def parse_serve(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); the host defaults to loopback."""
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise UserError(f"--serve {text!r}: expected [HOST:]PORT with a port from 0 to 65535, e.g. 8080 or 0.0.0.0:8080")
    return host, number


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


class Frames:
    """The newest drawn frame and its one JPEG encoding, handed from the demo to the viewers."""

    def __init__(self, fps: float = DEFAULT_FPS, quality: int = JPEG_QUALITY):
        self.interval = 1.0 / fps if fps else 0.0
        self.quality = int(quality)
        self.cond = threading.Condition()
        self.image: np.ndarray | None = None
        self.image_seq = 0
        self.jpeg: bytes | None = None
        self.jpeg_seq = 0
        self.encoded = 0
        self.viewers = 0
        self.closed = False

    def publish(self, image: np.ndarray) -> None:
        with self.cond:
            self.image = image
            self.image_seq += 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def encode_loop(self) -> None:
        """The encoder thread: the newest frame, at most once per interval, only while someone watches."""
        done_seq, last = 0, 0.0
        while True:
            with self.cond:
                while not self.closed and (self.viewers == 0 or self.image_seq == done_seq):
                    self.cond.wait(0.5)
                if self.closed:
                    return
                wait = last + self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.cond:
                image, seq = self.image, self.image_seq
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            last, done_seq = time.monotonic(), seq
            if ok:
                with self.cond:
                    self.jpeg, self.jpeg_seq = data.tobytes(), self.jpeg_seq + 1
                    self.encoded += 1
                    self.cond.notify_all()

    def next_jpeg(self, after: int, timeout: float = 1.0) -> tuple[bytes | None, int]:
        """The newest encoding newer than ``after`` (waiting up to ``timeout``), and its number."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.jpeg_seq > after, timeout)
            if self.closed or self.jpeg_seq <= after:
                return None, after
            return self.jpeg, self.jpeg_seq


class Controls(Protocol):
    """What the page can ask of the demo; :class:`demo.webcam.Demo` provides it."""

    def live_stats(self) -> dict: ...                # the HUD figures
    def control(self, request: dict) -> dict: ...    # {"action": ...} -> the new state; ValueError if bad
    def snapshot_png(self) -> bytes | None: ...      # the last drawn frame, or None before the first


class DemoServer:
    """The HTTP server: :meth:`start`, :meth:`publish` each drawn frame, :meth:`close` at the end."""

    def __init__(self, controls: Controls, host: str = DEFAULT_HOST, port: int = 0, fps: float = DEFAULT_FPS,
                 token: str | None = None, send_timeout: float = SEND_TIMEOUT_S):
        self.controls = controls
        self.token = token or secrets.token_urlsafe(18)
        self.frames = Frames(fps)
        self.send_timeout = float(send_timeout)
        self.requests = 0
        self.refused = 0
        self.assets = {route: (resources.files("demo").joinpath("assets", name).read_bytes(), kind)
                       for route, (name, kind) in ASSETS.items()}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        handler = type("Handler", (_Handler,), {"server_obj": self, "timeout": self.send_timeout})
        server_class = type("Server", (_Server,), {"address_family": family})
        try:
            self.httpd = server_class((host, port), handler)
        except OSError as e:
            raise UserError(f"--serve {host}:{port}: cannot listen there ({e.strerror or e})") from None
        self.host, self.port = host, self.httpd.server_address[1]
        self.cookie = f"{COOKIE}_{self.port}"
        self.allowed_hosts = self._allowed_hosts()
        self._threads: list[threading.Thread] = []

    def _allowed_hosts(self) -> set[str]:
        names = {"localhost", "127.0.0.1", "::1", self.host}
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(name.lower())
        return names

    def host_ok(self, header: str | None) -> bool:
        """Does a ``Host`` (or ``Origin`` netloc) name this server: an IP address or a name of this machine? A name
        a DNS-rebinding page could point here is anything else. The port is not compared: through
        ``ssh -L 9000:127.0.0.1:8080`` the browser says 127.0.0.1:9000."""
        if not header:
            return False
        name = (urlsplit(f"//{header}").hostname or "").lower()
        if _is_ip(name):
            return _is_loopback(name) or not _is_loopback(self.host)  # beyond loopback only when bound beyond it
        return name in self.allowed_hosts

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/?token={self.token}"

    def hint(self) -> str:
        """The lines printed at start: the URL and, for loopback, the SSH tunnel that reaches it from a laptop."""
        lines = [f"serving the demo at {self.url}"]
        if _is_loopback(self.host):
            lines.append(f"from another machine: ssh -L {self.port}:127.0.0.1:{self.port} user@{socket.gethostname()}"
                         f"  then open http://127.0.0.1:{self.port}/?token={self.token}")
        else:
            lines.append(f"listening on {self.host}: anyone who can reach this port and has the token can watch "
                         f"and steer the demo")
        return "\n".join(lines)

    def start(self) -> "DemoServer":
        for name, target in (("serve", self.httpd.serve_forever), ("encode", self.frames.encode_loop)):
            t = threading.Thread(target=target, name=f"demo-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def publish(self, image: np.ndarray) -> None:
        self.frames.publish(image)

    def close(self) -> None:
        self.frames.close()
        if self._threads:
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(2.0)

    def figures(self) -> dict:
        return {"viewers": self.frames.viewers, "frames_encoded": self.frames.encoded, "requests": self.requests,
                "refused": self.refused}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a viewer's thread never keeps the demo from ending

    def handle_error(self, request, client_address) -> None:
        """A request that failed (a viewer gone mid-request, a bug): one log line, never a traceback on the demo's
        terminal, and the demo goes on."""
        import sys

        log.debug(f"request from {client_address[0]} failed: {sys.exc_info()[1]!r}")


class _Handler(http.server.BaseHTTPRequestHandler):
    server_obj: DemoServer
    protocol_version = "HTTP/1.1"
    server_version = "cpnet-demo"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name; requests are not logged
        pass

    # --- the gate ---------------------------------------------------------------------------
    def _token(self) -> tuple[str | None, bool]:
        """(the token the request carries, whether it came in the query)."""
        query = parse_qs(urlsplit(self.path).query).get("token")
        if query:
            return query[0], True
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.server_obj.cookie:
                return value, False
        return None, False

    def _allowed(self) -> bool:
        srv = self.server_obj
        srv.requests += 1
        if not srv.host_ok(self.headers.get("Host")):
            srv.refused += 1
            self._plain(HTTPStatus.FORBIDDEN, "the Host header does not name this server\n")
            return False
        origin = self.headers.get("Origin")
        if self.command == "POST" and origin is not None and not srv.host_ok(urlsplit(origin).netloc):
            srv.refused += 1
            self._plain(HTTPStatus.FORBIDDEN, "a request from another site\n")
            return False
        token, self._from_query = self._token()
        if token is None or not hmac.compare_digest(token.encode(), srv.token.encode()):
            srv.refused += 1
            self._plain(HTTPStatus.UNAUTHORIZED, "open the URL with the token the demo printed (?token=...)\n")
            return False
        return True

    # --- answers ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, kind: str, extra: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the viewer went away
            self.close_connection = True

    def _plain(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _json(self, obj, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):  # noqa: N802 - the base class's name
        if not self._allowed():
            return
        route = urlsplit(self.path).path
        srv = self.server_obj
        if route in srv.assets:
            body, kind = srv.assets[route]
            extra = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self' "
                                                "'unsafe-inline'", "X-Frame-Options": "DENY"}
            if self._from_query:
                extra["Set-Cookie"] = f"{srv.cookie}={srv.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(HTTPStatus.OK, body, kind, extra)
        elif route == "/stream.mjpg":
            self._stream()
        elif route == "/stats":
            stats = dict(srv.controls.live_stats())
            stats["server"] = srv.figures()
            self._json(stats)
        elif route == "/snapshot.png":
            png = srv.controls.snapshot_png()
            if png is None:
                self._plain(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet\n")
            else:
                name = f"cpnet-demo-{time.strftime('%Y%m%d-%H%M%S')}.png"
                self._send(HTTPStatus.OK, png, "image/png", {"Content-Disposition": f'attachment; filename="{name}"'})
        else:
            self._plain(HTTPStatus.NOT_FOUND, "not found\n")

    def do_POST(self):  # noqa: N802
        if not self._allowed():
            return
        if urlsplit(self.path).path != "/control":
            self._plain(HTTPStatus.NOT_FOUND, "not found\n")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= 4096:
                raise ValueError("a JSON body of at most 4096 bytes is expected")
            request = json.loads(self.rfile.read(length))
            if not isinstance(request, dict):
                raise ValueError("a JSON object is expected")
            self._json(self.server_obj.controls.control(request))
        except (ValueError, TypeError, KeyError) as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)

    def _stream(self) -> None:
        frames = self.server_obj.frames
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
        except OSError:
            return
        self.close_connection = True
        with frames.cond:
            frames.viewers += 1
            frames.cond.notify_all()
        seq = 0
        try:
            while True:
                jpeg, seq = frames.next_jpeg(seq)
                if frames.closed:
                    break
                if jpeg is None:
                    continue
                self.wfile.write(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
        except OSError:  # the viewer closed the page, or stalled past the send timeout
            pass
        finally:
            with frames.cond:
                frames.viewers -= 1
