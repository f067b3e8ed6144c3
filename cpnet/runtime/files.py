"""Atomic writes, file locks, output places checked before work, scratch folders, hashing: shared by every stage.

Every artifact (checkpoint, ONNX file, engine, report) is written to a
temporary file in the same folder and renamed over the target, so a crash or a
full disk never leaves a half-written file where a good one was. Temporary
files and scratch folders carry the writing process's id; what a killed
process left behind is removed by the next write to the same place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _sweep(folder: Path, pattern: str) -> None:
    """Remove leftovers matching ``pattern`` (``<...>.<pid>.<random>...``) whose writing process is gone."""
    import shutil

    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return
    for leftover in candidates:
        parts = leftover.name.split(".")
        pid = next((int(p) for p in reversed(parts) if p.isdigit()), None)
        if pid is None or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def check_output(path: "str | Path", kind: str = "file", what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written as a ``kind`` ("file" or "dir").

    A path that is a folder where a file is wanted (or the reverse), a parent
    that is a file, or a folder this process may not write in is a one-line
    UserError naming the path and what to do; nothing is created.
    """
    path = Path(path)
    if path.exists():
        if kind == "file" and path.is_dir():
            raise UserError(f"{path}: {what} is an existing folder; give a file path")
        if kind == "dir" and not path.is_dir():
            raise UserError(f"{path}: {what} is an existing file; give a folder path")
    ancestor = path.parent if kind == "file" or not path.exists() else path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{path}: cannot write the {what} there: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write the {what} there: no permission to write in {ancestor}; "
                        f"choose another path")
    return path


@contextlib.contextmanager
def scratch_dir(name: str, near: "str | Path | None" = None) -> Iterator[Path]:
    """A scratch folder, removed on exit: ``cpnet-<name>.<pid>.<random>`` in the system's temporary folder,
    or ``.<name>.<pid>.<random>`` beside ``near`` (to rename results into place on the same file system).
    Leftovers of killed processes are removed when the next one is made."""
    import shutil

    if near is not None:
        parent, prefix = Path(near).parent, f".{name}.{os.getpid()}."
        pattern = f".{name}.*"
    else:
        parent, prefix = Path(tempfile.gettempdir()), f"cpnet-{name}.{os.getpid()}."
        pattern = f"cpnet-{name}.*"
    parent.mkdir(parents=True, exist_ok=True)
    _sweep(parent, pattern)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: "str | Path") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``."""
    target = Path(target)
    check_output(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep(target.parent, f".{target.name}.*.tmp")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise UserError(f"{target}: cannot write it ({e.strerror or e}); choose another path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file owner-only; give it the mode a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def file_lock(path: "str | Path", timeout_s: float = 600.0, what: str = "file") -> Iterator[None]:
    """Hold ``<path>.lock`` exclusively, across processes and threads, for a read-modify-write of ``path``
    (filelock's FileLock: ``flock`` on POSIX). A lock another process holds longer than ``timeout_s`` is a
    one-line UserError naming the lock file; the lock file itself is left in place (removing it could
    let a third process lock a different file of the same name)."""
    from filelock import FileLock, Timeout

    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=timeout_s, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{lock_path}: another process has held the {what}'s lock for {timeout_s:.0f} s; wait for "
                        f"it to finish, or remove the lock file if no cpnet process is running") from None
    try:
        yield
    finally:
        lock.release()


def atomic_write_bytes(target: "str | Path", data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: "str | Path", text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: "str | Path", obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(target: "str | Path", writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` and move the result into place (for torch.save, onnx.save, ...)."""
    with atomic_path(target) as tmp:
        writer(tmp)


def atomic_torch_save(obj: Any, target: "str | Path") -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(target, buf.getvalue())


def sha256_file(path: "str | Path", chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
