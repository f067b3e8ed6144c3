"""GPU load and board power on a Jetson, read from ``tegrastats`` where it is installed (L4T/JetPack).

``tegrastats --interval MS`` prints one line per interval; the fields differ between boards::

    Orin Nano:   ... GR3D_FREQ 12% cpu@48.5C ... VDD_IN 4970mW/4970mW VDD_CPU_GPU_CV 597mW/597mW VDD_SOC 1432mW/1432mW
    AGX Orin:    ... GR3D_FREQ 45%@[305,305] ... VDD_GPU_SOC 2791mW/2791mW VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 3924mW/3924mW
    Xavier NX:   ... GR3D_FREQ 0% ... VDD_IN 4585/4585 VDD_CPU_GPU_CV 612/612 VDD_SOC 1429/1429
    Nano:        ... GR3D_FREQ 0% ... POM_5V_IN 2250/2250 POM_5V_GPU 0/0 POM_5V_CPU 361/361

GPU load is ``GR3D_FREQ``'s percentage. Board power is the input rail where the board has one
(``VDD_IN``, ``POM_5V_IN``); elsewhere (AGX Orin, AGX Xavier) the sum of the rails it lists,
and the HUD says so. Each rail is "now/average" in milliwatts; the HUD shows "now".
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading

INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_line(line: str) -> dict:
    """{"gpu_percent", "power_mw", "power_source", "rails"} from one tegrastats line (absent fields are None)."""
    out: dict = {"gpu_percent": None, "power_mw": None, "power_source": None, "rails": {}}
    m = _GPU.search(line)
    if m:
        out["gpu_percent"] = int(m.group(1))
    rails = {name: int(now) for name, now, _avg in _RAIL.findall(line)}
    out["rails"] = rails
    for name in INPUT_RAILS:
        if name in rails:
            out["power_mw"], out["power_source"] = rails[name], name
            break
    else:
        if rails:
            out["power_mw"], out["power_source"] = sum(rails.values()), "sum of rails"
    return out


def format_hud(stats: dict | None) -> str:
    """'GPU 45%  board 4.97 W (VDD_IN)' for the HUD; empty when there is nothing to show."""
    if not stats:
        return ""
    parts = []
    if stats.get("gpu_percent") is not None:
        parts.append(f"GPU {stats['gpu_percent']}%")
    if stats.get("power_mw") is not None:
        parts.append(f"board {stats['power_mw'] / 1000:.2f} W ({stats['power_source']})")
    return "  ".join(parts)


class TegraStats:
    """Runs ``tegrastats`` in the background and keeps its latest parsed line (:attr:`latest`)."""

    def __init__(self, command: str = "tegrastats", interval_ms: int = 500):
        self.command = command
        self.interval_ms = interval_ms
        self.latest: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start_if_available(cls, command: str = "tegrastats", interval_ms: int = 500) -> "TegraStats | None":
        if shutil.which(command) is None:
            return None
        ts = cls(command, interval_ms)
        try:
            ts.start()
        except OSError:
            return None
        return ts

    def start(self) -> "TegraStats":
        self._proc = subprocess.Popen([self.command, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="demo-tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            parsed = parse_line(line)
            if parsed["gpu_percent"] is not None or parsed["power_mw"] is not None:
                self.latest = parsed

    def hud(self) -> str:
        return format_hud(self.latest)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
