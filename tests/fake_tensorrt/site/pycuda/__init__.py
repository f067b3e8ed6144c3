"""The fake PyCUDA (tests/fake_tensorrt)."""
VERSION = (2024, 1)
