"""How a measured row is keyed everywhere (the drift report, the benchmark, the demo, the pipeline): the artifact,
the backend that runs it and the backend options that change what runs.

    key = RowKey("model.int8.onnx", "openvino", {"precision": "bf16"})
    str(key)                                   # 'model.int8.onnx@openvino[precision=bf16]'
    RowKey.parse(str(key)) == key              # True: the string form is stable and reads back
    key.open_options()                         # {'precision': 'bf16'}: what engines.open(path, backend, ...) takes
    key.flags()                                # ['--backend', 'openvino', '--backend-options', 'precision=bf16']

The string form sorts the options by name, so the same row has the same key in every report and on every
machine; ``artifact`` is the report's short name for the file (its path is kept beside the key in the row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cpnet.runtime.errors import UserError
from cpnet.runtime.options import parse_backend_options as parse_options

_KEY = re.compile(r"^(?P<artifact>.+?)@(?P<backend>[A-Za-z0-9_]+)(?:\[(?P<options>[^\]]*)\])?$")


@dataclass(frozen=True)
class RowKey:
    artifact: str
    backend: str
    options: tuple[tuple[str, str], ...] = ()

    def __init__(self, artifact: str, backend: str, options=()):
        items = options.items() if isinstance(options, dict) else options
        object.__setattr__(self, "artifact", str(artifact))
        object.__setattr__(self, "backend", str(backend))
        object.__setattr__(self, "options", tuple(sorted((str(k), _text(v)) for k, v in items)))

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.artifact}@{self.backend}" + (f"[{opts}]" if opts else "")

    @classmethod
    def parse(cls, text: str) -> "RowKey":
        m = _KEY.match(str(text).strip())
        if not m:
            raise UserError(f"{text!r}: not a row key (ARTIFACT@BACKEND[KEY=VALUE,...], e.g. "
                            f"model.int8.onnx@openvino[precision=bf16])")
        return cls(m["artifact"], m["backend"], parse_options(m["options"] or "", what=f"row key {text!r}"))

    def open_options(self) -> dict:
        """The options as engines.open takes them (numbers as numbers)."""
        return parse_options(",".join(f"{k}={v}" for k, v in self.options))

    def flags(self) -> list[str]:
        """The command-line flags that choose this row's backend and options (cpnet demo, cpnet benchmark)."""
        out = ["--backend", self.backend]
        if self.options:
            out += ["--backend-options", ",".join(f"{k}={v}" for k, v in self.options)]
        return out


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
