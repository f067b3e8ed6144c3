"""What a Jetson says about itself in its files: the L4T and JetPack release, the board, the power mode.

Every probe takes ``root`` (default ``/``) and reads only files under it, so a test lays out a JetPack 6
tree in a temporary folder and the probes read it as they would read the real one. Nothing here runs a
program or loads a library (``nvpmodel -q`` would need root on some releases; its files do not).

Where JetPack 6 keeps each fact:

- ``etc/nv_tegra_release``: ``# R36 (release), REVISION: 3.0, GCID: ..., BOARD: generic, EABI: aarch64, ...``
  (L4T 36.3.0);
- ``var/lib/dpkg/status``: the ``nvidia-l4t-core`` package (``36.3.0-20240506102626``) and, where the SDK
  metapackage is installed, ``nvidia-jetpack`` (``6.0+b106``), plus cuDNN's and TensorRT's packages;
- ``proc/device-tree/model``: the board (``NVIDIA Jetson Orin Nano Developer Kit``, NUL-terminated);
- ``etc/nvpmodel.conf``: the power modes (``< POWER_MODEL ID=0 NAME=MAXN >``) and the default
  (``< PM_CONFIG DEFAULT=2 >``); ``var/lib/nvpmodel/status``: the mode in force (``pmode:0002 ...``).
"""

from __future__ import annotations

import re
from pathlib import Path

#: L4T release -> JetPack release, for machines without the nvidia-jetpack package (NVIDIA's JetPack archive)
JETPACK_OF_L4T = {"36.4.4": "6.2.1", "36.4.3": "6.2", "36.4.0": "6.1", "36.3.0": "6.0", "36.2.0": "6.0 DP",
                  "35.6.1": "5.1.5", "35.6.0": "5.1.4", "35.5.0": "5.1.3", "35.4.1": "5.1.2", "35.3.1": "5.1.1"}


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace")
    except OSError:
        return None


def dpkg_versions(root: "str | Path" = "/", names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed Debian packages -> version, from ``var/lib/dpkg/status`` (only ``names`` when given)."""
    text = _read(Path(root), "var/lib/dpkg/status") or ""
    out: dict[str, str] = {}
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", block, flags=re.M))
        name, version = fields.get("Package"), fields.get("Version")
        if not name or not version or "installed" not in fields.get("Status", "").split():
            continue
        if names is None or name in names:
            out[name] = version
    return out


def l4t_release(root: "str | Path" = "/") -> str | None:
    """'36.3.0' from ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 3.0``), else from the
    ``nvidia-l4t-core`` package's version; None when neither is there."""
    text = _read(Path(root), "etc/nv_tegra_release")
    if text:
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
        if m:
            rev = m.group(2).split(".")
            return ".".join([m.group(1)] + (rev + ["0"])[:2])
    core = dpkg_versions(root, ("nvidia-l4t-core",)).get("nvidia-l4t-core")
    if core:
        m = re.match(r"(\d+\.\d+(?:\.\d+)?)", core)
        return m.group(1) if m else None
    return None


def is_jetson(root: "str | Path" = "/") -> bool:
    return l4t_release(root) is not None


def power_mode(root: "str | Path" = "/") -> dict | None:
    """{"id", "name", "source"} of the nvpmodel mode in force (else the configured default); None where unreadable."""
    root = Path(root)
    conf = _read(root, "etc/nvpmodel.conf")
    if conf is None:
        return None
    names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)}
    status = _read(root, "var/lib/nvpmodel/status") or ""
    m = re.search(r"pmode:(\d+)", status)
    source = "var/lib/nvpmodel/status"
    if not m:
        m = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", conf)
        source = "etc/nvpmodel.conf default"
    if not m:
        return None
    mode = int(m.group(1))
    return {"id": mode, "name": names.get(mode), "source": source}


def jetson_info(root: "str | Path" = "/") -> dict | None:
    """The board, L4T and JetPack releases and the power mode; None when this is not a Jetson."""
    release = l4t_release(root)
    if release is None:
        return None
    pkgs = dpkg_versions(root, ("nvidia-l4t-core", "nvidia-jetpack"))
    jetpack = pkgs.get("nvidia-jetpack")
    jetpack = jetpack.split("+")[0] if jetpack else JETPACK_OF_L4T.get(release)
    model = _read(Path(root), "proc/device-tree/model")
    return {"model": model.strip("\x00\n ") if model else None, "l4t": release,
            "l4t_core_package": pkgs.get("nvidia-l4t-core"), "jetpack": jetpack, "power_mode": power_mode(root)}


def cameras(root: "str | Path" = "/") -> list[str]:
    """The V4L2 devices (``dev/video*``) under ``root``, in index order."""
    found = [p for p in Path(root, "dev").glob("video*") if re.fullmatch(r"video\d+", p.name)]
    return [f"/dev/{p.name}" for p in sorted(found, key=lambda p: int(p.name[5:]))]
