"""One logger per stage, one format: ``[stage] message`` on stderr, figures and tables on stdout.

Library code logs diagnostics with ``log = get_logger("export")`` and never
prints them; the front door calls :func:`setup` once. Commands print their
results (tables, the paths they wrote) on stdout, so ``cpnet VERB > file``
keeps the results and the terminal keeps the progress.
"""

from __future__ import annotations

import logging
import sys

ROOT = "cpnet"


class _StageFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stage = record.name[len(ROOT) + 1:] if record.name.startswith(ROOT + ".") else record.name
        prefix = f"[{stage}] " if stage and stage != ROOT else ""
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{prefix}{level}{record.getMessage()}"


class _Handler(logging.Handler):
    """Writes to the current sys.stderr (not the one of when it was made), through tqdm when it is
    there, so a log line never tears a progress bar apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            try:
                from tqdm import tqdm
            except ImportError:
                sys.stderr.write(line + "\n")
            else:
                tqdm.write(line, file=sys.stderr)
        except Exception:
            self.handleError(record)


def get_logger(stage: str) -> logging.Logger:
    """The logger of a stage (``train``, ``export``, ``int8``, ``engines``...): ``cpnet.<stage>``."""
    return logging.getLogger(f"{ROOT}.{stage}")


def setup(verbose: bool = False, quiet: bool = False) -> None:
    """Send every cpnet logger to stderr as ``[stage] message`` (idempotent)."""
    root = logging.getLogger(ROOT)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not any(getattr(h, "_cpnet", False) for h in root.handlers):
        handler = _Handler()
        handler.setFormatter(_StageFormatter())
        handler._cpnet = True  # type: ignore[attr-defined]
        root.addHandler(handler)
