"""Benchmark: ``cpnet demo --serve`` under 20 browser-like viewers, on loopback only.

    python benchmarks/bench_serve.py                          # edge_r18_256x512, INT8 cpu flavour, 20 viewers
    python benchmarks/bench_serve.py --viewers 20 --phase-seconds 10

The model and the clip are bench_demo.py's: a random-weight edge_r18_256x512 (speed does not depend on
the weights) quantized to the cpu INT8 flavour, on a generated 640x480 clip at 30 fps. The demo runs in
its own process, as on a Jetson with the browsers elsewhere: ``cpnet demo MODEL --source clip --headless
--threads 1 --serve 127.0.0.1:0`` (the file read live, at its own rate: the newest frame is processed,
the others dropped, so the demo runs as fast as the model). Three phases of ``--phase-seconds`` each:

1. no viewer;
2. ``--viewers`` viewers reading ``/stream.mjpg`` as fast as they can, and one more that asks for the
   stream and never reads it (a stalled browser), plus one polling ``/stats`` twice a second as the page does;
3. no viewer again.

Figures: the demo's FPS in each phase (frames shown, from ``/stats``, over the phase's wall time), the
frames each reading viewer received against the frames encoded in phase 2, and the demo process's RSS
(psutil) at the start of phase 2 and the end of phase 3.

Targets: FPS with viewers at least 90% of the mean FPS without (phases 1 and 3, the same run); every reading
viewer gets at least 90% of the frames encoded while the stalled one sits there; RSS grows by less than
20 MB. Every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_demo import calibration_frames, load_avg, make_artifacts, make_clip  # noqa: E402

LOOPBACK = "127.0.0.1"
FPS_TARGET = 0.90
DELIVERY_TARGET = 0.90
RSS_GROWTH_MB = 20.0
BOUNDARY = b"--cpnetframe\r\n"


class Viewer(threading.Thread):
    """Reads /stream.mjpg as fast as it can and counts the parts; ``stall`` asks for it and never reads."""

    def __init__(self, port: int, token: str, stall: bool = False):
        super().__init__(daemon=True)
        self.port, self.token, self.stall = port, token, stall
        self.parts = 0
        self.error: str | None = None
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if stall:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((LOOPBACK, port))
        self.sock.sendall(f"GET /stream.mjpg?token={token} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode())

    def run(self) -> None:
        if self.stall:
            self.stop.wait()
            return
        self.sock.settimeout(1.0)
        tail = b""
        try:
            while not self.stop.is_set():
                try:
                    chunk = self.sock.recv(1 << 16)
                except socket.timeout:
                    continue
                if not chunk:
                    self.error = "the stream ended"
                    return
                data = tail + chunk
                self.parts += data.count(BOUNDARY)
                tail = data[-(len(BOUNDARY) - 1):]
        except OSError as e:
            self.error = repr(e)

    def close(self) -> None:
        self.stop.set()
        self.join(3)
        self.sock.close()


def get_stats(port: int, token: str) -> dict:
    c = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    c.request("GET", f"/stats?token={token}")
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def start_demo(model: Path, clip: Path) -> tuple[subprocess.Popen, int, str]:
    argv = [sys.executable, "-m", "cpnet", "demo", str(model), "--source", str(clip), "--headless", "--threads", "1",
            "--serve", f"{LOOPBACK}:0", "-q"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the demo did not print its URL: {line!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the rest
    return proc, int(m.group(1)), m.group(2)


def phase(port: int, token: str, seconds: float) -> dict:
    s0, t0 = get_stats(port, token), time.perf_counter()
    time.sleep(seconds)
    s1, t1 = get_stats(port, token), time.perf_counter()
    return {"fps": (s1["frames_shown"] - s0["frames_shown"]) / (t1 - t0),
            "encoded": s1["server"]["frames_encoded"] - s0["server"]["frames_encoded"],
            "dropped": s1["frames_dropped"] - s0["frames_dropped"], "viewers": s1["server"]["viewers"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="edge_r18_256x512")
    p.add_argument("--viewers", type=int, default=20)
    p.add_argument("--phase-seconds", type=float, default=10.0)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_demo"), help="where models and the clip are kept")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    import psutil

    from cpnet.runtime.machine import machine_info, machine_line

    work = Path(args.work)
    seconds = 3 * args.phase_seconds + 30  # the clip outlasts the three phases and the start
    clip = make_clip(work / f"clip_{int(seconds)}s_640x480.mp4", seconds)
    model = make_artifacts(args.config, work, calibration_frames(clip, work / "calib"))
    print(f"machine: {machine_line(machine_info(gemm=True))}")
    print(f"model: {model} (random weights, INT8 cpu flavour); clip: {clip} (640x480, 30 fps, read live)")
    load0 = load_avg()
    proc, port, token = start_demo(model, clip)
    rss = psutil.Process(proc.pid)
    try:
        time.sleep(3.0)  # start-up: the first frames, the model warm
        alone = phase(port, token, args.phase_seconds)
        rss_before = rss.memory_info().rss
        viewers = [Viewer(port, token) for _ in range(args.viewers)]
        stalled = Viewer(port, token, stall=True)
        for v in [*viewers, stalled]:
            v.start()
        poll_stop = threading.Event()

        def poll():  # the page's own /stats polling
            while not poll_stop.wait(0.5):
                get_stats(port, token)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(0.5)
        start_parts = [v.parts for v in viewers]
        watched = phase(port, token, args.phase_seconds)
        got = [v.parts - s for v, s in zip(viewers, start_parts)]
        poll_stop.set()
        for v in [*viewers, stalled]:
            v.close()
        time.sleep(0.5)
        again = phase(port, token, args.phase_seconds)
        rss_after = rss.memory_info().rss
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    load1 = load_avg()
    base = (alone["fps"] + again["fps"]) / 2
    ratio = watched["fps"] / base if base else 0.0
    delivery = min(got) / watched["encoded"] if watched["encoded"] else 0.0
    growth = (rss_after - rss_before) / 2**20
    errors = [v.error for v in viewers if v.error]
    print(f"1-minute load average: {load0:.2f} before, {load1:.2f} after (a shared machine: figures are noisy)")
    print(f"demo FPS: {alone['fps']:.2f} without viewers, {watched['fps']:.2f} with {args.viewers} viewers + 1 stalled "
          f"+ /stats polling, {again['fps']:.2f} without again: {ratio:.0%} of the mean without "
          f"(target >= {FPS_TARGET:.0%}: {'met' if ratio >= FPS_TARGET else 'NOT met'})")
    print(f"frames encoded with viewers: {watched['encoded']} ({watched['encoded'] / args.phase_seconds:.1f}/s, once "
          f"each for all viewers); frames per reading viewer: min {min(got)}, max {max(got)}: the slowest got "
          f"{delivery:.0%} (target >= {DELIVERY_TARGET:.0%}: {'met' if delivery >= DELIVERY_TARGET else 'NOT met'}); "
          f"viewer errors: {len(errors)}")
    print(f"demo RSS: {rss_before / 2**20:.1f} MB before the viewers, {rss_after / 2**20:.1f} MB after them and "
          f"{args.phase_seconds:g} s more: {growth:+.1f} MB (target < {RSS_GROWTH_MB:g} MB: "
          f"{'met' if growth < RSS_GROWTH_MB else 'NOT met'})")
    ok = ratio >= FPS_TARGET and delivery >= DELIVERY_TARGET and growth < RSS_GROWTH_MB and not errors
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine_line(machine_info(gemm=True)), "phases": {"alone": alone, "watched": watched, "again": again},
            "ratio": ratio, "frames_per_viewer": got, "delivery": delivery, "rss_mb": [rss_before / 2**20,
                                                                                       rss_after / 2**20],
            "load": [load0, load1], "errors": errors}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
