"""ONNX Runtime backend: any of the ONNX files (FP32, FP16, INT8 either flavour).

A thin wrapper over ``cpnet.onnx_runtime.OnnxModel`` (which reads the manifest,
checks the file's sha256 and resolves providers). Options: ``providers`` ("cpu" |
"cuda" | "tensorrt", a comma list, or ORT provider names; default: the CPU
provider), ``threads`` (intra-op threads). A provider that this onnxruntime build
lacks is refused with one line naming what is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpnet.io import UserError

from ..base import Backend, as_numpy_batch


def provider_list(providers) -> list[str] | None:
    """'cuda,cpu' or a list -> a list (aliases are resolved and checked by cpnet.onnx_runtime)."""
    if providers is None or providers == "":
        return None
    if isinstance(providers, str):
        return [p.strip() for p in providers.split(",") if p.strip()]
    return list(providers)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: "str | Path", providers=None, threads: int | None = None, **unknown):
        if unknown:
            raise UserError(f"onnxruntime backend: unknown option(s) {', '.join(sorted(unknown))} "
                            f"(known: providers, threads)")
        from cpnet.onnx_runtime import OnnxModel

        self._model = OnnxModel(str(path), providers=provider_list(providers), threads=threads)
        super().__init__(str(path), self._model.manifest)
        self.providers = list(self._model.providers)

    def infer(self, batch) -> np.ndarray:
        out = self._model.infer(as_numpy_batch(batch))
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> str:
        short = ",".join(p.replace("ExecutionProvider", "") for p in self.providers)
        return f"onnxruntime ({short}, {self.precision})"

    def close(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None:
            try:
                model.close()
            finally:
                self._model = None
        super().close()
