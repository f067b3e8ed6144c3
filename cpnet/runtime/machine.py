"""What machine a figure was measured on: CPU model, SIMD flags, cores, GPU (torch-free).

Every latency the project reports carries this line, because the right artifact
depends on the machine: ONNX Runtime's INT8 kernels are several times faster
than FP32 on a CPU with VNNI and no faster on one without.

    >>> machine_line(machine_info())
    'AMD EPYC (family 25 model 17), x86_64, 2 cores; SIMD avx2 fma avx512f avx512bw avx512_vnni avx512_bf16; no GPU; load average 0.3'

Sources: ``/proc/cpuinfo`` (model name, flags), ``os.sched_getaffinity`` for the
cores this process may use, ``nvidia-smi`` for GPUs (no CUDA library is loaded),
``os.getloadavg`` for how busy the machine was (a latency measured while other
work shares the cores is inflated, and its ranking may be too).
Elsewhere it falls back on :mod:`platform`.

The flags say which kernels can run, not how fast: machines of one kind differ by 4x
from day to day. :func:`gemm_gflops` measures the FP32 GEMM rate (PyTorch's when it is
installed, NumPy's otherwise), which training and inference times scale with;
``machine_info(gemm=True)`` adds it and :func:`machine_line` shows it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

#: The SIMD flags that decide which kernels run, in the order they are listed (x86, then Arm).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
              "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")
#: Of those, the ones the line names (sse4_2/avx/f16c/avx512vl are implied on any CPU that has the rest).
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
               "amx_bf16", "amx_int8", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")


def _cpuinfo() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return {}
    out: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if out.get("flags"):  # the first processor block is enough
                break
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu family", "model", "flags", "features", "hardware", "cpu part") and key not in out:
            out[key] = value.strip()
    return out


def gpus() -> list[str]:
    """Names of the NVIDIA GPUs ``nvidia-smi`` lists (empty without one); never loads CUDA."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def gemm_gflops(threads: int | None = None, n: int = 1024, seconds: float = 0.3) -> tuple[float, str]:
    """(GFLOP/s, what measured it): the best of a few timed n x n FP32 matrix products (2 n^3 FLOP each) through
    torch.matmul on ``threads`` threads when PyTorch is installed, else numpy.matmul (its BLAS's own threads)."""
    import numpy as np

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        a, b, matmul = torch.randn(n, n), torch.randn(n, n), torch.matmul
        what = f"torch.matmul {n}x{n}, {torch.get_num_threads()} threads"
    else:
        rng = np.random.default_rng(0)
        a, b, matmul = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32), np.matmul
        what = f"numpy.matmul {n}x{n}"
    try:
        for _ in range(2):
            matmul(a, b)
        best, end = 0.0, time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            for _ in range(3):
                matmul(a, b)
            best = max(best, 3 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
            if time.perf_counter() > end:
                return best, what
    finally:
        if torch is not None:
            torch.set_num_threads(old)


def machine_info(gemm: bool = False, threads: int | None = None) -> dict:
    """CPU model, architecture, cores (all and usable by this process), SIMD flags present, GPUs; with ``gemm``,
    the FP32 GEMM rate on ``threads`` threads (:func:`gemm_gflops`, 0.3 s)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    model = info.get("model name") or info.get("hardware") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        model = f"{model} (family {info['cpu family']} model {info['model']})"
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    rate = gemm_gflops(threads) if gemm else None
    return {
        **({"gemm_gflops": round(rate[0], 1), "gemm": rate[1]} if rate else {}),
        "cpu": model,
        "arch": platform.machine(),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "simd": [f for f in SIMD_FLAGS if f in flags],
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        # 1, 5 and 15 minute load averages now: above the core count, other work shared the CPU with the figures
        "load_average": load,
    }


def machine_line(info: dict | None = None) -> str:
    """One line for a table caption: CPU, architecture, cores, the SIMD flags that matter, GPU."""
    info = info or machine_info()
    cores = f"{info['cores']} cores"
    if info.get("usable_cores") and info["usable_cores"] != info["cores"]:
        cores += f" ({info['usable_cores']} usable)"
    shown = [f for f in SHOWN_FLAGS if f in info.get("simd", [])]
    if info.get("arch", "").lower() in ("x86_64", "amd64") and not any("vnni" in f or "amx" in f for f in shown):
        shown.append("no VNNI")
    simd = f"SIMD {' '.join(shown)}" if shown else "SIMD flags unknown"
    gpu = ", ".join(info.get("gpus") or []) or "no GPU"
    line = f"{info['cpu']}, {info.get('arch') or '?'}, {cores}; {simd}; {gpu}"
    if info.get("gemm_gflops"):
        line += f"; FP32 GEMM {info['gemm_gflops']:.0f} GFLOP/s ({info.get('gemm', 'matmul')})"
    if info.get("load_average"):
        line += f"; load average {info['load_average'][0]:.1f}"
    return line


def busy(info: dict) -> bool:
    """Whether other work shared the CPU: a 1-minute load average above the usable cores (+0.5 for our own)."""
    load = info.get("load_average")
    return bool(load) and load[0] > (info.get("usable_cores") or info.get("cores") or 1) + 0.5
