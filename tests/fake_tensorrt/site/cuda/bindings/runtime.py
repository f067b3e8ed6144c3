"""Fake ``cuda.bindings.runtime`` (tests/fake_tensorrt/cuda.py)."""
from fake_tensorrt import current_world as _w

globals().update({k: v for k, v in vars(_w().modules()["cuda.bindings.runtime"]).items() if not k.startswith("__")})
