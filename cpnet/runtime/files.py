"""Atomic writes, file locks, output places checked before work, scratch folders, hashing: shared by every stage.

Every artifact (checkpoint, ONNX file, engine, report) is written to a
temporary file in the same folder and renamed over the target, so a crash or a
full disk never leaves a half-written file where a good one was. Temporary
files and scratch folders carry the writing process's id; what a killed
process left behind is removed by the next write to the same place. A write that
runs out of room (a full disk, a quota, ``ulimit -f``) is one line naming the file
(exit 2), with nothing left under its name. Also here: the check that no output of a
command is one of its inputs, the lock file that keeps two commands out of one
run directory, and :func:`utf8_path`, the one way a path becomes the text OpenCV and
cpnet's UTF-8 files are given.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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


def sweep(folder: Path, pattern: str) -> None:
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


def utf8_path(path: "str | bytes | os.PathLike", what: str = "file") -> str:
    """``path`` as the text OpenCV (``imread``, ``VideoCapture``, ``VideoWriter``), TensorBoard and cpnet's own
    UTF-8 files (reports, manifests, configs) are given; a name that is not valid UTF-8 is a one-line UserError.

    A Linux file name is bytes; Python carries bytes that are not UTF-8 (a name made in Latin-1 or cp1252,
    ``b"\\xff\\xfe.mp4"``) as lone surrogates, which OpenCV's binding cannot convert (the process dies with a
    segfault) and no UTF-8 text can hold (a UnicodeEncodeError traceback). Such a name is refused, shown with its
    bytes escaped, and the user told to rename it.
    """
    text = os.fsdecode(os.fspath(path))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise UserError(f"{shown}: the {what} name is not valid UTF-8 (bytes of another encoding, which OpenCV and "
                        f"cpnet's UTF-8 files cannot hold); rename it with a UTF-8 name") from None
    return text


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
    sweep(parent, pattern)
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
        sweep(target.parent, f".{target.name}.*.tmp")
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
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(target, e) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


# ----------------------------------------------------------------------------- a full disk

#: errno values that mean "no room": a full disk, a quota, a file-size limit (ulimit -f).
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL


def disk_full_error(target: "str | Path", e: OSError) -> UserError:
    """The one line for a write that ran out of room; nothing was left under ``target``'s name."""
    why = {errno.EFBIG: "the file-size limit (ulimit -f) was reached"}.get(e.errno, "the disk is full")
    return UserError(f"{target}: not written: {why} ({e.strerror or e}); free some space (or raise the limit) "
                     f"and run again")


# ----------------------------------------------------------------------------- outputs that are inputs


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_distinct(inputs: "Iterable[tuple[str, str | Path | None]]",
                   outputs: "Iterable[tuple[str, str | Path | None]]") -> None:
    """Refuse, before any work, an output that is also an input or another output of the same command.

    ``inputs`` and ``outputs`` are (what, path) pairs; None paths are ignored. One line naming both.
    """
    ins = [(w, Path(p)) for w, p in inputs if p]
    outs = [(w, Path(p)) for w, p in outputs if p]
    for i, (what, out) in enumerate(outs):
        for other_what, inp in ins:
            if _same(out, inp):
                raise UserError(f"{out}: the {what} would overwrite the {other_what}; choose another output path")
        for other_what, other in outs[:i]:
            if _same(out, other):
                raise UserError(f"{out}: the {what} and the {other_what} are the same file; give them different paths")


# ----------------------------------------------------------------------------- locks

_held_locks: dict[tuple[str, int], int] = {}  # (lock file, thread) this process holds -> depth


def _lock_holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "another process"
    pid, _, command = text.partition(" ")
    return f"process {pid} ({command})" if pid.isdigit() and command else (f"process {pid}" if pid.isdigit()
                                                                           else "another process")


@contextlib.contextmanager
def lock_file(path: "str | Path", what: str = "this folder", timeout_s: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block: the one lock
    of the project (run directories, the TensorRT timing cache, the engine cache).

    ``fcntl.flock`` on the file: the kernel drops it when the holder exits, kill -9 included, so a stale
    lock never blocks and the file can stay in place. ``timeout_s`` 0 does not wait: a lock held elsewhere
    is a one-line UserError naming the holder (its pid and command line, which it writes into the file);
    otherwise it waits up to ``timeout_s`` and then says how long it waited. The same thread taking it a
    second time passes (the pipeline runs verbs in process); another thread of this process waits like
    another process (flock holds per open file, and each taker opens its own).
    """
    import fcntl
    import sys
    import threading
    import time

    path = Path(path)
    key = (os.path.abspath(path), threading.get_ident())
    if key in _held_locks:
        _held_locks[key] += 1
        try:
            yield path
        finally:
            _held_locks[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if timeout_s <= 0:
                    raise UserError(f"{path.parent}: {what} is in use by {_lock_holder(path)}; wait for it to "
                                    f"finish or use another folder") from None
                if time.monotonic() >= deadline:
                    raise UserError(f"{path}: {_lock_holder(path)} has held the {what}'s lock for {timeout_s:.0f} s; "
                                    f"wait for it to finish") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv)[:200]}\n".encode("utf-8", "replace"))
        _held_locks[key] = 1
        try:
            yield path
        finally:
            del _held_locks[key]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def file_lock(path: "str | Path", timeout_s: float = 600.0, what: str = "file"):
    """The lock for a read-modify-write of the file ``path``: :func:`lock_file` on ``<path>.lock``, waiting up
    to ``timeout_s`` (another build merging its timings into the same cache finishes in seconds)."""
    return lock_file(Path(str(path) + ".lock"), what, timeout_s=timeout_s)


#: The lock file of a run directory (cpnet train, cpnet pipeline).
RUN_LOCK = ".lock"


def lock_run_dir(run_dir: "str | Path"):
    """The run directory's lock: one train or pipeline at a time writes into it."""
    return lock_file(Path(run_dir) / RUN_LOCK, "the run directory")


def external_data_files(onnx_path: "str | Path") -> list[str]:
    """The external data files an ONNX model's tensors live in (relative to its folder; models over 2 GB)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    found = set()
    for t in onnx.external_data_helper._get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            found.update(e.value for e in t.external_data if e.key == "location")
    return sorted(found)


def artifact_sha256(path: "str | Path") -> str:
    """The sha256 a manifest records for an artifact: of the file, and for an ONNX model whose tensors live in
    external data files, of those too (each by name), so a changed ``.data`` file is caught like a changed model.
    Without external data it is the file's plain sha256."""
    path = Path(path)
    digest = sha256_file(path)
    if path.suffix.lower() != ".onnx":
        return digest
    try:
        extra = external_data_files(path)
    except Exception:  # noqa: BLE001 - not parseable as ONNX: its plain digest (the reader says what is wrong)
        return digest
    if not extra:
        return digest
    h = hashlib.sha256(digest.encode())
    for name in extra:
        data = path.parent / name
        if not data.is_file():
            raise UserError(f"{path}: its external data file {name} is missing beside it; copy it with the model")
        h.update(f"\n{name}\n{sha256_file(data)}".encode())
    return h.hexdigest()
