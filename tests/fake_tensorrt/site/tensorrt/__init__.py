"""The fake TensorRT (tests/fake_tensorrt): this module takes the current fake world's names."""
from fake_tensorrt import current_world as _w

globals().update({k: v for k, v in vars(_w().modules()["tensorrt"]).items() if not k.startswith("__")})
__version__ = _w().version
