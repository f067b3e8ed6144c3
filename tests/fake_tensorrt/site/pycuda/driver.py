"""Fake ``pycuda.driver`` (tests/fake_tensorrt/cuda.py)."""
from fake_tensorrt import current_world as _w

globals().update({k: v for k, v in vars(_w().modules()["pycuda.driver"]).items() if not k.startswith("__")})
