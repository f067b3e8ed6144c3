"""The fake cuda-python (tests/fake_tensorrt): ``cuda.bindings.runtime`` only."""
