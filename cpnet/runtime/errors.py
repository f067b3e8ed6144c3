"""One exception root and one exit-code table for every cpnet command.

Library code raises; only the front door (:mod:`cpnet.cli`) turns an exception
into an exit code and one line on stderr:

====  ==========================  =============================================
code  exception                   meaning
====  ==========================  =============================================
0     (none)                      done
1     :class:`CheckFailed`        a check or gate failed (parity, drift, lint)
2     :class:`UserError`          a mistake the user can fix (path, option, file)
3     :class:`MissingDependency`  an optional dependency is absent (TensorRT, CUDA)
130   KeyboardInterrupt           interrupted (Ctrl-C)
====  ==========================  =============================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_CHECK_FAILED: "a check or gate failed",
    EXIT_USER_ERROR: "a mistake the user can fix (bad path, option or file)",
    EXIT_MISSING_DEPENDENCY: "an optional dependency is missing (TensorRT, PyCUDA, CUDA)",
    EXIT_INTERRUPTED: "interrupted",
}


class CpnetError(Exception):
    """Root of every error cpnet reports as one line; ``exit_code`` comes from the table above."""

    exit_code = EXIT_USER_ERROR


class UserError(CpnetError):
    """A mistake the user can fix (bad path, bad file, bad option): shown as one line, no traceback."""

    exit_code = EXIT_USER_ERROR


class CheckFailed(CpnetError):
    """A check or gate did not pass (export parity, FP16/INT8 disagreement, drift gate, pre-flight lint)."""

    exit_code = EXIT_CHECK_FAILED


class MissingDependency(CpnetError):
    """An optional dependency (TensorRT, PyCUDA, a CUDA device) that this command needs is absent."""

    exit_code = EXIT_MISSING_DEPENDENCY


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be (the front door installs it), so both end a command the same way:
    outputs finalised or removed, exit 130."""


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first non-empty line of an exception's text (library errors can be pages long)."""
    text = str(e).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    return line[:limit]


def exit_code_of(e: BaseException) -> int:
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return int(getattr(e, "exit_code", EXIT_USER_ERROR))
