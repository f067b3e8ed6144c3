"""Fake ``pycuda.autoprimaryctx``: the primary context, pushed in the importing thread only (as PyCUDA's)."""
from fake_tensorrt import current_world as _w
from fake_tensorrt.cuda import autoprimaryctx_init as _init

_init(_w().modules()["pycuda.driver"])
