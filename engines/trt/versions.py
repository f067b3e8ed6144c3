"""TensorRT version numbers and which release runs which engine (pure Python).

Version compatibility ("Engine Compatibility", 10.x and 11.x docs; 11.4 support matrix): a plan built with
``BuilderFlag.VERSION_COMPATIBLE`` runs on the same or a newer release of its major, and a TensorRT 10
version-compatible plan also runs on a TensorRT 11 runtime; no other cross-major combination. Any other plan
runs only on the release that built it (:func:`same_version`).
"""

from __future__ import annotations

import re


def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); non-numeric tails are dropped ('11.0.0b1' -> (11, 0, 0))."""
    parts = []
    for p in str(version).split("."):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def major_of(version: str) -> int:
    v = parse_version(version)
    return v[0] if v else 0


def same_version(a: str, b: str) -> bool:
    """Engines are tied to the exact TensorRT release: compare major.minor.patch (and build where both have it)."""
    va, vb = parse_version(a), parse_version(b)
    n = max(3, min(len(va), len(vb)))
    return (va + (0,) * 4)[:n] == (vb + (0,) * 4)[:n]


def version_compatible_runs(built: str, running: str) -> bool:
    """Whether a version-compatible plan built by ``built`` runs on ``running``, as NVIDIA documents it.

    "Engine Compatibility" (10.x, 11.x) and the 11.4 support matrix: the same or a newer release of the
    same major; across majors only TensorRT 10 -> 11 (and 8.6+ -> 10, outside this project's range).
    """
    vb, vr = parse_version(built), parse_version(running)
    if not vb or not vr:
        return False
    if vb[0] == vr[0]:
        return vr >= vb
    return (vb[0], vr[0]) == (10, 11) or (vb[0] == 8 and vb >= (8, 6) and vr[0] == 10)
