"""What the report measures and gates by: its options, default drift limits and bounds on its inputs."""

from __future__ import annotations

from dataclasses import dataclass


#: mIoU drop allowed by default, in points, by precision (the targets benchmarks/quantize_drift.py had).
DEFAULT_MIOU_DRIFT = {"fp32": 0.01, "fp16": 0.1, "bf16": 0.1, "int8": 0.5}
FALLBACK_MIOU_DRIFT = 0.5
ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")
PRECISION_ORDER = {"fp32": 0, "bf16": 1, "fp16": 2, "int8": 3}


@dataclass(frozen=True)
class ReportOptions:
    """What the report measures and how it gates (the command's flags, minus output and runtime)."""

    data: str | None = None
    data_root: str | None = None
    split: str | None = None
    limit: int | None = None
    mode: str = "deploy"  # deploy | whole | slide
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    max_miou_drift: float | None = None  # None: DEFAULT_MIOU_DRIFT by precision
    max_class_drift: float | None = None
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    worst: int = 4
    warmup: int = 2
    backends: tuple[str, ...] | None = None  # None: every installed backend that runs each variant's file
    backend_options: str | None = None  # KEY=VALUE,...: these options only, instead of every set that applies here

    @property
    def eval_mode(self) -> str:
        """``deploy`` (manifest preprocessing, one call per image), or ``whole``/``slide`` through predict_probs."""
        if self.mode == "deploy" and tuple(self.scales) == (1.0,) and not self.flip:
            return "deploy"
        return "slide" if self.mode == "slide" else "whole"

    def miou_limit(self, precision: str) -> float:
        if self.max_miou_drift is not None:
            return float(self.max_miou_drift)
        return DEFAULT_MIOU_DRIFT.get(str(precision).lower(), FALLBACK_MIOU_DRIFT)


#: Memory one image's class scores may take at its own size (an 8000x8000 image took 58 s and 4.9 GiB).
MAX_IMAGE_BYTES = 2 << 30

#: Bootstrap resamples: each is an (images,) weight row and a confusion matrix per variant; 1e8 exhausted 24 GB.
MAX_BOOTSTRAP = 100_000
