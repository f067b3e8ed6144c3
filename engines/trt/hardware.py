"""What this machine is, as the TensorRT layer needs it: the GPU (name, compute capability), Jetson or not, the
default builder workspace.

Callers elsewhere in the package call :func:`is_jetson` through this module (``hardware.is_jetson()``), so a
test that sets it (``tests/conftest.py``'s fake TensorRT) sets it for all of them.
"""

from __future__ import annotations

import platform

DEFAULT_WORKSPACE_MIB_JETSON = 1024
DEFAULT_WORKSPACE_MIB_DESKTOP = 4096
AMPERE_CC = (8, 0)
TURING_CC = (7, 5)


def is_jetson() -> bool:
    """A Jetson by its L4T files (:mod:`cpnet.runtime.jetson`) or a Tegra kernel."""
    from cpnet.runtime.jetson import is_jetson as l4t_present

    return l4t_present() or "tegra" in platform.release().lower()


def default_workspace_mib() -> int:
    """1 GiB on Jetson (its builds run out of shared memory without a cap), 4 GiB on desktop GPUs."""
    return DEFAULT_WORKSPACE_MIB_JETSON if is_jetson() else DEFAULT_WORKSPACE_MIB_DESKTOP


def compute_capability(gpu: dict | None) -> tuple[int, int] | None:
    """(8, 7) from a :func:`gpu_info` record's "8.7"; None where it has none."""
    try:
        major, minor = str((gpu or {})["compute_capability"]).split(".")
        return int(major), int(minor)
    except Exception:
        return None


def gpu_info(device: int = 0) -> dict | None:
    """Name and compute capability of a CUDA device, from pycuda, cuda-python or torch.cuda (first found).

    Returns {"name", "compute_capability": "8.7", "source"} or None when no source sees a GPU.
    """
    try:  # PyCUDA driver API: Device.name(), Device.compute_capability()
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > device:
            d = cuda.Device(device)
            major, minor = d.compute_capability()
            return {"name": d.name(), "compute_capability": f"{major}.{minor}", "source": "pycuda"}
    except Exception:
        pass
    try:  # cuda-python runtime bindings: cudaGetDeviceProperties -> (err, prop)
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, prop = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
            return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}", "source": "cuda-python"}
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > device:
            major, minor = torch.cuda.get_device_capability(device)
            return {"name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
                    "source": "torch.cuda"}
    except Exception:
        pass
    return None

