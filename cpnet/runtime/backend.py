"""The one small interface every backend implements (in the spirit of Polygraphy's runners).

    with engines.open("model.int8.engine") as m:      # or a checkpoint, a run dir, an ONNX file
        logits = m.infer(batch)                         # (N, 3, H, W) float32 -> (N, C, H, W) float32
        labels = m.segment(image_rgb)                   # (h, w, 3) uint8 RGB -> (h, w) label map

Pre- and post-processing live in ``cpnet.runtime.preprocess`` and are driven by the
artifact's manifest (input size, mean/std, classes, palette), so every backend
segments an image the same way.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Backend(abc.ABC):
    """An opened artifact that turns preprocessed NCHW float32 batches into logits."""

    #: short backend name: "torch", "onnxruntime" or "tensorrt"
    name: str = "base"

    @classmethod
    def refuse_unknown(cls, unknown: dict, known) -> None:
        """Options a backend does not take are a one-line UserError naming the ones it does."""
        if unknown:
            from .errors import UserError

            raise UserError(f"{cls.name} backend: unknown option(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(known)})")

    def __init__(self, path: str, manifest: dict | None):
        self.path = str(path)
        self.manifest: dict = dict(manifest or {})
        self.closed = False
        #: GPU time of the last infer() in milliseconds (CUDA events), where the backend runs on a GPU
        self.last_gpu_ms: float | None = None

    # --- manifest-driven properties ------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model input."""
        from .preprocess import input_size_of

        return input_size_of(self.manifest)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("classes") or [])

    @property
    def palette(self) -> list[list[int]]:
        return [list(map(int, c)) for c in (self.manifest.get("palette") or [])]

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    @property
    def num_classes(self) -> int:
        classes = self.manifest.get("classes")
        if classes:
            return len(classes)
        return int((self.manifest.get("output") or {}).get("classes") or 0)

    # --- inference -----------------------------------------------------------------------
    @abc.abstractmethod
    def infer(self, batch: Any) -> np.ndarray:
        """Logits (N, C, H, W) float32 for a preprocessed (N, 3, H, W) float32 batch (numpy or torch)."""

    @property
    def output_names(self) -> list[str]:
        """Names of the model's outputs, the logits first (``prior`` follows in files exported with --with-prior)."""
        return ["logits"]

    def infer_all(self, batch: Any) -> dict[str, np.ndarray]:
        """Every output of the model by name, as float32 numpy; backends with more outputs than the logits
        override it (the context prior ``prior`` of ``cpnet export --with-prior``)."""
        return {"logits": self.infer(batch)}

    def __call__(self, batch: Any):
        """An ``InferFn`` for cpnet.inference: torch in, torch out (numpy in, numpy out)."""
        if hasattr(batch, "detach"):  # a torch tensor, without importing torch on the deploy side
            import torch

            return torch.from_numpy(self.infer(batch.detach().cpu().numpy()))
        return self.infer(batch)

    def checked_batch(self, batch: Any) -> np.ndarray:
        """``batch`` as a float32 NCHW array, refused in one line when this backend is closed or the batch is not
        of the model's input size (what every backend's ``infer`` takes)."""
        from .errors import UserError

        if self.closed:
            raise UserError(f"{self.path}: the model was closed; open it again (engines.open) to run it")
        x = as_numpy_batch(batch)
        if self.manifest.get("input_size") and tuple(x.shape[2:]) != self.input_size:
            raise UserError(f"{self.path}: a batch of {x.shape[3]}x{x.shape[2]} for a model input of "
                            f"{self.input_size[1]}x{self.input_size[0]}; resize it (segment() does, from an image)")
        return x

    def segment(self, image_rgb: np.ndarray) -> np.ndarray:
        """Label map (h, w) for an RGB uint8 image (h, w, 3), pre/post-processed as the manifest says."""
        from .errors import UserError
        from .preprocess import postprocess, preprocess

        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or 0 in image_rgb.shape:
            raise UserError(f"segment() takes an RGB image (h, w, 3) with h, w >= 1, got shape {image_rgb.shape}")
        x = preprocess(image_rgb, self.manifest)
        logits = self.infer(x)
        return postprocess(logits, tuple(image_rgb.shape[:2]))

    def device_memory(self) -> dict | None:
        """Device memory this backend holds (bytes), for the benchmark; None on the CPU."""
        return None

    def describe(self) -> str:
        return f"{self.name}:{self.path}"

    # --- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort; close() is idempotent
        try:
            if not self.closed:
                self.close()
        except Exception:
            pass


def as_numpy_batch(batch: Any) -> np.ndarray:
    """A contiguous float32 NCHW numpy array from numpy or torch input (a single CHW image gets N=1)."""
    if hasattr(batch, "detach"):  # a torch tensor
        batch = batch.detach().cpu().float().numpy()
    arr = np.asarray(batch)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=np.float32)
