"""Interrupted and killed commands never leave a half-written artifact, and their leftovers go on the next run.

Each command runs as a real process and is stopped at seeded random points, by Ctrl-C (SIGINT: exit 130,
one line) or by kill -9 (SIGKILL: nothing can run on the way out). Afterwards every output that exists
must be whole (its manifest's sha256 matches, or it parses), and a clean rerun must succeed and leave no
temporary files behind, in the output folder or in the system's temporary folder.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cpnet.runtime import manifest_path, sha256_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env(tmp: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}


def _whole(path: Path) -> None:
    """An output that exists must be complete."""
    if path.suffix == ".json":
        json.loads(path.read_text())
        return
    m = json.loads(manifest_path(path).read_text())
    assert m["sha256"] == sha256_file(path), f"{path} exists but is not the file its manifest describes"


def _leftovers(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for p in folder.rglob("*"):
            if p.name.endswith(".tmp") or p.name.startswith("cpnet-") or (p.name.startswith(".") and ".onnx." in p.name):
                found.append(str(p))
    return found


def _interrupt(argv, env, delay: float, sig: int) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "cpnet", *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT and proc.returncode == 130:
        lines = [line for line in err.splitlines() if not line.startswith("[")]
        assert lines == ["interrupted"], err
        assert "Traceback" not in err, err
    return proc.returncode, err


def _cases(tiny_checkpoint, tiny_onnx, tiny_data, out: Path):
    model = out / "model.onnx"
    return {
        "export": (["export", str(tiny_checkpoint), "-o", str(model), "--threads", "1", "--num-parity-images", "2"],
                   [model]),
        "fp16": (["fp16", str(tiny_onnx), "-o", str(out / "model.fp16.onnx"), "--num-images", "2", "--threads", "1",
                  "--no-progress"], [out / "model.fp16.onnx"]),
        "int8": (["int8", str(tiny_onnx), "-o", str(out / "model.int8.onnx"), "--num-images", "3", "--threads", "1",
                  "--no-progress", "--recalibrate"], [out / "model.int8.onnx"]),
        "report": (["report", str(tiny_onnx), str(tiny_onnx), "--data", str(tiny_data), "-o", str(out / "report"),
                    "--threads", "1", "--no-progress", "--bootstrap", "50"], [out / "report" / "report.json"]),
        "train": (["train", "quickstart", "--data-root", str(tiny_data), "-o", str(out / "run"), "--no-progress",
                   "model.depth=18", "model.prior_size=4", "model.base_width=16", "model.head_channels=16",
                   "model.aux_channels=8", "model.agg_kernel=3", "train.batch_size=2", "data.num_workers=0",
                   "train.iters=6", "train.ckpt_interval=2", "train.val_interval=3", "train.log_interval=1"],
                  [out / "run" / "best.pt"]),
    }


@pytest.mark.parametrize("command", ["export", "fp16", "int8", "report", "train"])
def test_interrupted_and_killed_commands_leave_whole_outputs_and_no_leftovers(command, tiny_checkpoint, tiny_onnx,
                                                                              tiny_data, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = _env(tmp)
    argv, outputs = _cases(tiny_checkpoint, tiny_onnx, tiny_data, out)[command]
    rng = random.Random(f"{command}-interrupts")
    signals = (signal.SIGINT, signal.SIGKILL)
    for i, sig in enumerate(signals):
        for path in outputs:  # start each round from nothing, so a whole output can only come from this round
            if path.exists():
                path.unlink()
        again = argv + (["--overwrite"] if command == "train" else [])
        rc, err = _interrupt(again, env, rng.uniform(1.0, 4.0), sig)  # after start-up, within the work
        assert rc in (0, 130, -signal.SIGKILL), (command, i, rc, err[-2000:])
        for path in outputs:
            if path.exists():
                _whole(path)
    rerun = argv + (["--resume"] if command == "train" else [])
    r = subprocess.run([sys.executable, "-m", "cpnet", *rerun], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for path in outputs:
        _whole(path)
    assert _leftovers(out, tmp) == []


def test_ctrl_c_that_a_native_library_turns_into_its_own_error_still_exits_130_with_one_line(tmp_path):
    """Ctrl-C landing inside an extension module's initialisation (``import torch`` under load) reaches Python as
    that module's ImportError, not as KeyboardInterrupt; the front door still reports the user's interrupt."""
    script = (
        "import os, signal, sys, time\n"
        "from cpnet import cli\n"
        "cli._terminate_like_interrupt()\n"
        "def work():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "    except KeyboardInterrupt:  # what a C extension's init does with the pending interrupt\n"
        "        raise ImportError('initialization failed') from None\n"
        "sys.exit(cli.guarded(work))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stderr) == (130, "interrupted\n")
    # Without a Ctrl-C the same error is a real failure and keeps its traceback.
    plain = script.replace("os.kill(os.getpid(), signal.SIGINT)", "raise KeyboardInterrupt")
    plain = plain.replace("cli._terminate_like_interrupt()\n", "")
    r = subprocess.run([sys.executable, "-c", plain], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "ImportError: initialization failed" in r.stderr
