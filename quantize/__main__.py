"""python -m quantize COMMAND ... : the ``cpnet`` verbs made in this package (fp16, int8, sensitivity, ...).

    python -m quantize fp16 runs/q/export/model.onnx            # the same as: cpnet fp16 ...
    python -m quantize int8 runs/q/export/model.onnx --calib-data data/synthetic
    python -m quantize sensitivity runs/q/export/model.onnx

The commands are the ``cpnet`` verbs whose module is in this package (the table
:data:`cpnet.cli.VERBS`); each runs through :func:`cpnet.cli.run_verb`, so its
flags, help, error lines and exit codes are the same as ``cpnet VERB``'s.
"""

from __future__ import annotations

import sys

from cpnet.cli import VERBS, dispatch, summary_of
from cpnet.runtime.errors import EXIT_OK, EXIT_USER_ERROR

PROG = "python -m quantize"
COMMANDS = {verb: module for verb, module in VERBS.items() if module.startswith(__package__ + ".")}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} {{{','.join(COMMANDS)}}} MODEL.onnx [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary_of(module)}" for name, module in COMMANDS.items()]
    lines += ["", f"{PROG} COMMAND --help shows what a command does, an example and every flag "
                  f"(the same as cpnet COMMAND)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return EXIT_OK if argv else EXIT_USER_ERROR
    return dispatch(COMMANDS, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
