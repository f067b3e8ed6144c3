"""PyTorch backend: a checkpoint (or run directory) run eagerly.

Options: ``device`` ("auto" | "cpu" | "cuda" | "cuda:N"), ``precision`` ("fp32" |
"fp16" | "bf16"; autocast), ``channels_last`` (bool), ``threads`` (CPU intra-op
threads). On the CPU, FP16 is refused (no autocast kernels worth measuring) and
BF16 warns when the CPU has no native BF16 (it then runs emulated, slowly).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from cpnet.runtime import UserError

from cpnet.runtime.backend import Backend

PRECISIONS = ("fp32", "fp16", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN reports native BF16 on this CPU (AVX512-BF16 / AMX); private torch helpers, so guarded."""
    import torch

    for probe in (lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                  lambda: torch.cpu._is_avx512_bf16_supported()):
        try:
            return bool(probe())
        except Exception:
            continue
    return False


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: "str | Path", device: str = "auto", precision: str = "fp32",
                 channels_last: bool = False, threads: int | None = None, **unknown):
        self.refuse_unknown(unknown, ("device", "precision", "channels_last", "threads"))
        import torch

        from cpnet.checkpoint import checkpoint_manifest, load_model, resolve_checkpoint
        from cpnet.runtime.device import resolve_device

        precision = str(precision).lower()
        if precision not in PRECISIONS:
            raise UserError(f"torch backend: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        dev = resolve_device(device)
        if dev.type == "cpu" and precision == "fp16":
            raise UserError("torch backend: fp16 autocast needs CUDA; on the CPU use precision=bf16 or fp32")
        if dev.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
            warnings.warn("this CPU has no native BF16 (AVX512-BF16/AMX): bf16 autocast runs emulated and slowly",
                          stacklevel=2)
        if threads:
            torch.set_num_threads(int(threads))

        ckpt_path = resolve_checkpoint(path)
        # The checkpoint is the authority on itself: its manifest is rebuilt from it (a manifest beside it that
        # names other bytes is refused by load_checkpoint, the one check every command shares).
        model, cfg, ckpt = load_model(ckpt_path, dev)
        sha = ckpt["sha256"]
        manifest = checkpoint_manifest(ckpt_path, cfg, ckpt.get("classes") or [str(i) for i in range(cfg.model.num_classes)],
                                       ckpt.get("palette") or [], ckpt.get("iter"), sha256=sha)
        super().__init__(str(ckpt_path), manifest)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.device = dev
        self.precision_mode = precision
        self.channels_last = bool(channels_last)
        self._torch = torch
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    @property
    def precision(self) -> str:
        return self.precision_mode

    def _autocast(self):
        if self._dtype is None:
            return contextlib.nullcontext()
        return self._torch.autocast(self.device.type, dtype=self._dtype)

    def infer(self, batch) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(self.checked_batch(batch)).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cuda = self.device.type == "cuda"
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        with torch.inference_mode(), self._autocast():
            out = self.model(x)
        if cuda:
            end.record()
            end.synchronize()
            self.last_gpu_ms = float(start.elapsed_time(end))
        return out.float().cpu().numpy()

    def device_memory(self) -> dict | None:
        if self.device.type != "cuda":
            return None
        torch = self._torch
        return {"max_allocated": int(torch.cuda.max_memory_allocated(self.device)),
                "source": "torch.cuda.max_memory_allocated"}

    def describe(self) -> str:
        cl = ", channels_last" if self.channels_last else ""
        return f"torch ({self.device}, {self.precision_mode}{cl})"

    def close(self) -> None:
        if getattr(self, "model", None) is not None:
            self.model = None
            if getattr(self, "device", None) is not None and self.device.type == "cuda":
                self._torch.cuda.empty_cache()
        super().close()
