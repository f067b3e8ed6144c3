"""Which TensorRT builds DLA engines, on which platform, and how: one table, from NVIDIA's pages.

Sources (NVIDIA TensorRT documentation, read with the project's search tool):

- "Working with DLA", 11.4.1 and 11.5.0: DLA on Jetson AGX Orin with JetPack 7.2.2+ through TensorRT
  11.4.1 ("GPU fallback behaves as it did in TensorRT 10.x"); Windows on ARM in beta, "there is no GPU
  fallback, so every layer must be DLA-capable, and batch size is 1"; Jetson Orin on JetPack 6.x stays on
  TensorRT 10.x and "TensorRT 10.7 was the last 10.x release that supported DLA"; "DLA was unavailable in
  TensorRT 11.0 through 11.3 ... TensorRT 11.4.0 supported DLA only on Windows on ARM"; 11.5.0 drops
  JetPack (Orin's DLA stays on 11.4.1) and keeps Windows on ARM.
- "TensorRT 11.4.1 Release Notes", Key Features: DLA for JetPack, and "Strongly typed networks for DLA":
  precision from the network's tensor types, not the per-precision builder flags.
- "Strongly Typed Networks for DLA" (11.3.0, 11.4.1): BuilderFlag FP16/INT8 and the precision-constraint
  flags were removed in 11.0; on 11.x precision comes from the tensor types (the FP16/INT8 files).
- "Building and Launching the Loadable" (10.x text, kept as reference in 11.3.0): trtexec
  ``--useDLACore=0 --fp16 --allowGPUFallback``; "DLA support is currently limited to networks running in
  FP16 and INT8 mode", set by the builder flags. No 10.x page found says strongly typed networks run on
  DLA, so 10.x DLA builds are weakly typed with the FP16 flag, plus INT8 for an explicitly quantized
  (Q/DQ) file, as ``trtexec --useDLACore --int8 --fp16 --allowGPUFallback`` builds it.
- "DLA Runtime Configuration" / "GPU Fallback Mode": with GPU fallback, layers DLA cannot run "silently
  fall back to GPU execution ... Verify DLA layer assignments in the engine inspector output": what
  :mod:`engines.layers.placement` does after every build.

Not confirmed by search: the 10.0 lower bound (the issue's "10.0-10.7"; JetPack 6 ships 10.3, the
version the project tests).
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from cpnet.runtime import UserError

from .versions import parse_version


@dataclass(frozen=True)
class DlaPath:
    """How a TensorRT version builds for DLA: weakly typed with precision builder flags (10.x) or strongly
    typed (11.x); whether layers DLA cannot run may fall back to the GPU."""

    name: str
    strongly_typed: bool
    gpu_fallback: bool
    note: str


TEN = DlaPath("10.x", strongly_typed=False, gpu_fallback=True,
              note="weakly typed network, BuilderFlag FP16 (+ INT8 for a Q/DQ file), GPU fallback "
                   "(trtexec --useDLACore --int8 --fp16 --allowGPUFallback)")
ORIN_11 = DlaPath("11.4.1", strongly_typed=True, gpu_fallback=True,
                  note="strongly typed network (precision from the file), GPU fallback")
WOA = DlaPath("windows-on-arm", strongly_typed=True, gpu_fallback=False,
              note="strongly typed network, no GPU fallback (beta; every layer must run on DLA, batch 1)")

#: (first version, first version past the range, platform, path); platform "linux" is JetPack's
SUPPORT = (
    ((10, 0), (10, 8), "linux", TEN),                  # JetPack 6 (10.3); 10.7 was the last 10.x with DLA
    ((11, 4, 1), (11, 4, 2), "linux", ORIN_11),        # Jetson AGX Orin, JetPack 7.2.2+
    ((11, 4, 0), (12,), "windows-arm", WOA),           # 11.4.0 Windows on ARM only; 11.4.1, 11.5 keep it
)

HAVE_DLA = ("TensorRT 10.0-10.7 (JetPack 6: 10.3), 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+, "
            "and 11.4.0+ on Windows on ARM (beta, no GPU fallback)")


def host_platform() -> str:
    """"windows-arm" on Windows on ARM, else "linux" (JetPack, or a machine without DLA cores)."""
    if _platform.system() == "Windows" and _platform.machine().lower() in ("arm64", "aarch64"):
        return "windows-arm"
    return "linux"


def dla_path(trt_version: str, platform: str | None = None) -> DlaPath:
    """The documented DLA build path of this TensorRT on this platform; a UserError naming the versions
    that have DLA where it has none."""
    plat = platform or host_platform()
    v = parse_version(trt_version)[:3]
    for lo, hi, where, path in SUPPORT:
        if where == plat and lo <= v < hi:
            return path
    where = "Windows on ARM" if plat == "windows-arm" else "Linux/JetPack"
    raise UserError(f"TensorRT {trt_version} has no DLA on {where}; DLA engines build with {HAVE_DLA}")
