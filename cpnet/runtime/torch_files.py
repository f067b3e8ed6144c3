"""Reading PyTorch files safely: tensors and plain values only, one-line errors (torch imported when called).

Shared by checkpoints (:mod:`cpnet.checkpoint`) and pretrained backbone weights (:mod:`cpnet.models.weights`),
so both refuse the same files the same way.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


def safe_torch_load(path: "str | Path", map_location="cpu", hint: str = "") -> object:
    """``torch.load(weights_only=True)`` with one-line errors; a file holding objects that would run code
    when unpickled is refused, and the line says so and which object (what PyTorch's message buries)."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "pickle protocol 4" chatter before the real error
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        detail = next((ln.strip() for ln in text.splitlines()
                       if ln.strip().startswith(("Unsupported", "WeightsUnpickler error: U", "Trying to load"))), "")
        detail = detail.removeprefix("WeightsUnpickler error: ")
        raise UserError(f"{path}: refused: it holds Python objects that could run code when loaded, and only "
                        f"tensors and plain values are loaded (weights_only=True){': ' + detail[:120] if detail else ''}; "
                        f"load only files you trust, or re-save just the tensors "
                        f"(torch.save(model.state_dict(), path))") from None
    except Exception as e:  # torch raises several types for truncated / foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot load it as a PyTorch file ({first[:200]})" + (f"; {hint}" if hint else "")) from None
