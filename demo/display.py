"""Whether a window can be opened here, found out before OpenCV tries: Qt aborts the whole process
(``qt.qpa.xcb: could not connect to display``, SIGABRT) when it cannot reach its display, which no
``try`` can catch. So the display server named by the environment is probed with a short socket
connection first:

- X11 (``DISPLAY=[host]:N[.S]``): a local display is the socket ``/tmp/.X11-unix/XN`` (Linux also
  binds it in the abstract namespace); ``host:N`` is TCP port 6000 + N on that host (``ssh -X``
  forwards ``localhost:10``).
- Wayland (``WAYLAND_DISPLAY``, an absolute socket path or a name under ``XDG_RUNTIME_DIR``).

OpenCV's pip wheels build their window with Qt on the ``xcb`` (X11) platform, so they need X even on a
Wayland desktop (XWayland); ``QT_QPA_PLATFORM`` chooses another (``wayland``, ``offscreen``, ...). GTK
builds (JetPack's OpenCV) take either. A server that accepts the connection but refuses its
authorization is not detected (that is Qt's message then); a stale ``DISPLAY`` with nobody listening is.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Mapping

TIMEOUT_S = 1.0


def _connect(family: int, address, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when something listens at ``address``; else why not (the OS's words)."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(address)
        return None
    except OSError as e:
        return e.strerror or type(e).__name__


def x11_problem(display: str | None) -> str | None:
    if not display:
        return "DISPLAY is unset"
    host, sep, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not sep or not number.isdigit():
        return f"DISPLAY={display} is not of the form [host]:N[.S]"
    if host.startswith("/"):  # a launchd socket path (macOS XQuartz): the path is the socket
        why = _connect(socket.AF_UNIX, display)
        return None if why is None else f"DISPLAY={display}: nothing listens there ({why})"
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        if sys.platform.startswith("linux") and _connect(socket.AF_UNIX, "\0" + path) is None:
            return None
        why = _connect(socket.AF_UNIX, path)
        return None if why is None else f"DISPLAY={display} but no X server answers there ({path}: {why})"
    port = 6000 + int(number)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"DISPLAY={display}: cannot resolve {host} ({e.strerror or e})"
    why = "no address"
    for family, _, _, _, address in infos:
        why = _connect(family, address)
        if why is None:
            return None
    return f"DISPLAY={display} but no X server answers there ({host} port {port}: {why})"


def wayland_problem(name: str | None, runtime_dir: str | None) -> str | None:
    if not name:
        return "WAYLAND_DISPLAY is unset"
    path = name if name.startswith("/") else os.path.join(runtime_dir or "", name)
    if not name.startswith("/") and not runtime_dir:
        return f"WAYLAND_DISPLAY={name} but XDG_RUNTIME_DIR is unset"
    why = _connect(socket.AF_UNIX, path)
    return None if why is None else f"WAYLAND_DISPLAY={name} but no compositor answers there ({path}: {why})"


def display_problem(gui: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why a window of this OpenCV GUI (``QT5``, ``GTK3``, ...) cannot open here, or None when it can (or when
    this platform's windows need no display server: Windows, macOS's Cocoa)."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    x11 = lambda: x11_problem(env.get("DISPLAY"))  # noqa: E731
    wayland = lambda: wayland_problem(env.get("WAYLAND_DISPLAY"), env.get("XDG_RUNTIME_DIR"))  # noqa: E731
    if gui.upper().startswith("QT"):
        platforms = [p.split(":")[0].strip() for p in env.get("QT_QPA_PLATFORM", "xcb").split(";") if p.strip()]
        problems = []
        for platform in platforms or ["xcb"]:  # Qt tries them in order
            if platform == "xcb":
                why = x11()
            elif platform.startswith("wayland"):
                why = wayland()
            else:  # offscreen, vnc, eglfs, ...: Qt needs no display server we could probe
                return None
            if why is None:
                return None
            problems.append(why)
        return "; ".join(problems) + (" (the Qt in this OpenCV draws on X11: QT_QPA_PLATFORM=xcb)"
                                      if platforms in ([], ["xcb"]) and env.get("WAYLAND_DISPLAY") else "")
    if gui.upper().startswith("GTK"):
        why_x, why_w = x11(), wayland()
        return None if why_x is None or why_w is None else f"{why_x}; {why_w}"
    return None
