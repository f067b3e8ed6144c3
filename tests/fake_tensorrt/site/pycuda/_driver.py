"""Fake ``pycuda._driver``: the error classes."""
from fake_tensorrt import current_world as _w

globals().update({k: v for k, v in vars(_w().modules()["pycuda._driver"]).items() if not k.startswith("__")})
