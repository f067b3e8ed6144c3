"""The small option records library functions take instead of long keyword lists.

The front door's argument groups (:mod:`cpnet.cli.args`) build these from the
command line, so a flag is defined once and every command reads it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how a model runs: ``device`` (auto|cpu|cuda|cuda:N, for torch), ``threads`` (CPU
    intra-op threads; None = the library's choice), ``providers`` (ONNX Runtime providers or the aliases
    cpu, cuda, tensorrt; empty = CPU), ``progress`` (progress bars on a terminal); for TensorRT engines,
    ``trust_engine`` (open one without a manifest) and ``allow_host_code`` (let a version-compatible engine
    run its host code), each only on the user's word; ``engine_cache``: the folder where engines built from
    ONNX files on first use are kept (None: beside each ONNX file)."""

    device: str = "auto"
    threads: int | None = None
    providers: tuple[str, ...] = ()
    progress: bool = True
    trust_engine: bool = False
    allow_host_code: bool = False
    engine_cache: str | None = None

    def engine_options(self) -> dict:
        """The ``engines.open`` keywords for a TensorRT engine that these options set."""
        opts: dict = {k: True for k in ("trust_engine", "allow_host_code") if getattr(self, k)}
        if self.engine_cache:
            opts["engine_cache"] = self.engine_cache
        return opts


@dataclass(frozen=True)
class CalibrationOptions:
    """Which images calibrate or check a reduced-precision model: ``data`` (a folder of images or a
    config name/YAML), ``data_root`` (the dataset root for a config), ``num_images`` and ``seed``."""

    data: str | None = None
    data_root: str | None = None
    num_images: int = 32
    seed: int = 0


#: option values read as booleans (the rest: whole numbers as int, anything else as text)
BOOLEAN_OPTIONS = ("channels_last", "profile")


def parse_backend_options(text: str | None, what: str = "--backend-options") -> dict:
    """``--backend-options`` and row keys' options, parsed one way:
    'precision=bf16,threads=2,channels_last=1' -> {'precision': 'bf16', 'threads': 2, 'channels_last': True}."""
    from .errors import UserError

    out: dict = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise UserError(f"{what}: expected key=value, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        low = v.lower()
        if k in BOOLEAN_OPTIONS and low in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            out[k] = low in ("1", "true", "yes", "on")
        elif v.isdigit():
            out[k] = int(v)
        else:
            out[k] = v
    return out
