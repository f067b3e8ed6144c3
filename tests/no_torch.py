"""A Python prelude that makes ``import torch`` fail as on a deploy install, for tests that run code in a child
process (``python -c BLOCK_TORCH + script``) to prove it needs no PyTorch."""

BLOCK_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked: this code must run without it)", name="torch")

sys.meta_path.insert(0, NoTorch())
"""
