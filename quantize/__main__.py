"""python -m quantize fp16|int8|sensitivity ... : make reduced-precision ONNX files from model.onnx.

    python -m quantize fp16 runs/q/export/model.onnx            # -> model.fp16.onnx
    python -m quantize int8 runs/q/export/model.onnx --calib-data data/synthetic
    python -m quantize sensitivity runs/q/export/model.onnx

Each subcommand is its own module (quantize/<name>.py with ``main(argv) -> int``),
imported only when asked for; ``python -m quantize <name> -h`` shows its options.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fp16": ("quantize.fp16", "FP16 weights and compute, FP32 inputs/outputs; drifting nodes kept in FP32"),
    "int8": ("quantize.int8", "INT8 with explicit Q/DQ nodes and scales from calibration images"),
    "sensitivity": ("quantize.sensitivity", "per-layer INT8 sensitivity: which layers to keep in higher precision"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m quantize {" + ",".join(COMMANDS) + "} MODEL.onnx [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "python -m quantize COMMAND -h shows the options of a command."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"error: 'quantize {name}' is not available in this installation ({module_name} is missing)",
                  file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
