"""The one progress bar: tqdm on a terminal, a plain line every few percent anywhere else.

Every stage that shows progress calls :func:`progress` (never tqdm directly):

    for batch in progress(loader, total=len(loader), desc="eval", unit="img"):
        ...
    bar = progress(total=iters, desc="train", unit="it")
    bar.update(1); bar.set_postfix(loss="0.31"); bar.close()

When the stream (``sys.stderr`` at the call) is a terminal, this is tqdm. When it is
a file or a pipe (``cpnet pipeline``'s step logs, ``> log``, CI) tqdm's carriage-return
frames would pile up into hundreds of kB of half lines, so the bar writes one plain line
instead whenever another :data:`STEP_PERCENT` percent is done, at most one per
:data:`MIN_SECONDS` seconds, and always one at the end::

    train: 35% 525/1500 it [0:45 < 1:23, 11.6 it/s] lr=1.2e-02 loss=0.412

``CPNET_PROGRESS=bar|plain|off`` overrides the choice (``bar`` where a terminal is not
detected but the reader wants frames). tqdm is imported only when a terminal bar is
made, so the deploy side keeps working without it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, TextIO

#: A plain line each time this many more percent are done (and at the end).
STEP_PERCENT = 5
#: ... but not more often than this (fast bars would otherwise print 20 lines in a blink).
MIN_SECONDS = 1.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainBar:
    """tqdm's interface as far as cpnet uses it (iteration, update, set_postfix, set_description, close,
    context manager), writing whole lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, file: TextIO | None = None, disable: bool = False,
                 step_percent: float = STEP_PERCENT, min_seconds: float = MIN_SECONDS):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = initial
        self.file, self.disable = file, disable
        self.step, self.min_seconds = step_percent, min_seconds
        self.postfix = ""
        self._t0 = self._last_t = time.perf_counter()
        self._next_percent = self._mark(initial)
        self._closed = False

    def _mark(self, n: int) -> float:
        if not self.total:
            return float("inf")
        done = 100.0 * n / self.total
        return (int(done // self.step) + 1) * self.step

    def __iter__(self):
        if self.iterable is None:
            raise TypeError("PlainBar made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self):
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable or not self.total:
            return
        now = time.perf_counter()
        if 100.0 * self.n / self.total >= self._next_percent and self.n < self.total \
                and now - self._last_t >= self.min_seconds:
            self._write(now)
            self._next_percent = self._mark(self.n)

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = now - self._t0
        done = self.n - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else 0.0
            text = f"{head}{100.0 * self.n / self.total:3.0f}% {self.n}/{self.total} {self.unit} " \
                   f"[{_clock(elapsed)} < {_clock(left)}, {rate:.1f} {self.unit}/s]"
        else:
            text = f"{head}{self.n} {self.unit} [{_clock(elapsed)}, {rate:.1f} {self.unit}/s]"
        return f"{text} {self.postfix}".rstrip()

    def _write(self, now: float) -> None:
        stream = self.file or sys.stderr
        try:
            stream.write(self.line(now) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed stream must not break the work
            pass
        self._last_t = now

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n > self._start:
            self._write(time.perf_counter())


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def style(stream=None) -> str:
    """``bar`` (tqdm), ``plain`` (whole lines) or ``off`` for ``stream`` (default ``sys.stderr``)."""
    forced = os.environ.get("CPNET_PROGRESS", "").strip().lower()
    if forced in ("bar", "plain", "off"):
        return forced
    return "bar" if is_terminal(stream if stream is not None else sys.stderr) else "plain"


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, disable: bool = False, file: TextIO | None = None):
    """A progress bar over ``iterable`` (or a manual one with ``total``): tqdm on a terminal, plain lines
    otherwise (see the module docstring). ``disable`` keeps the interface and writes nothing."""
    stream = file if file is not None else sys.stderr
    kind = "off" if disable else style(stream)
    if kind == "bar":
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, file=stream)
    return PlainBar(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream, disable=kind == "off")
