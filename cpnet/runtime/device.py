"""The one resolver for ``--device auto|cpu|cuda|cuda:N`` (PyTorch is imported only when called)."""

from __future__ import annotations

from .errors import UserError


def resolve_device(name: str = "auto", local_rank: int | None = None):
    """A ``torch.device``: ``auto`` is CUDA when this PyTorch sees a GPU, else the CPU.

    ``cuda`` without a GPU is a one-line UserError (not an assertion from deep in
    PyTorch). ``local_rank`` picks the GPU of a torchrun process for ``auto``/``cuda``.
    """
    import torch

    text = str(name or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but this PyTorch sees no CUDA GPU "
                            f"(no GPU, or a CPU-only build); use --device cpu")
        index = device.index if device.index is not None else (local_rank or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", index)
    return device
