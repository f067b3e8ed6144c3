"""The per-version name lists (``names/trt-<major.minor>.json``, made by ``extract_names.py`` from NVIDIA's wheels)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

NAMES = Path(__file__).resolve().parent / "names"

#: the versions a test may ask for, each with the list it takes its names from. 11.4.1 is JetPack 7.2's
#: (Jetson only, not on PyPI): it takes 11.4.0's list.
VERSIONS = {"10.3.0": "10.3", "10.16.1": "10.16", "11.4.0": "11.4", "11.4.1": "11.4"}


def list_for(version: str) -> str:
    key = VERSIONS.get(version) or ".".join(version.split(".")[:2])
    if not (NAMES / f"trt-{key}.json").is_file():
        raise ValueError(f"no TensorRT name list for {version}: there are {', '.join(sorted(VERSIONS))}")
    return key


@functools.lru_cache(maxsize=None)
def load_names(version: str) -> dict:
    return json.loads((NAMES / f"trt-{list_for(version)}.json").read_text())
