"""Nothing lost, nothing silently different: no command replaces a file the user made, an output that is
also an input is refused, a full disk is one line with nothing partial under a final name, a run
directory in use is refused, SIGTERM finalises like Ctrl-C, and a tampered input is refused by every
command that reads it. (The pipeline's own cases are in tests/test_pipeline.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpnet import cli
from demo_doubles import stop_a_recording, video_info, write_clip

ROOT = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes: what "nothing changed" compares."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- §1.2 cpnet data


def test_data_refuses_a_folder_holding_the_users_files(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "images" / "train").mkdir(parents=True)
    (folder / "images" / "train" / "photo.png").write_bytes(b"the user's image")
    (folder / "classes.yaml").write_text("- {name: cat, color: [1, 2, 3]}\n")
    before = tree(folder)
    rc, _, err = run(["data", "-o", folder, "--train", "2", "--val", "1", "--size", "32"], capsys)
    assert rc == 2 and "did not make" in one_line(err)
    assert tree(folder) == before
    rc, _, err = run(["data", "-o", folder, "--train", "2", "--val", "1", "--size", "32", "--overwrite"], capsys)
    assert rc == 2 and tree(folder) == before  # --overwrite replaces only a dataset cpnet data made


def test_data_replaces_its_own_dataset_only_with_overwrite(tmp_path, capsys):
    folder = tmp_path / "syn"
    assert run(["data", "-o", folder, "--train", "4", "--val", "2", "--size", "32"], capsys)[0] == 0
    before = tree(folder)
    rc, _, err = run(["data", "-o", folder, "--train", "2", "--val", "1", "--size", "32"], capsys)
    assert rc == 2 and "--overwrite" in one_line(err) and tree(folder) == before
    (folder / "images" / "val" / "notes.txt").write_text("mine")  # one file of the user's among its own
    rc, _, err = run(["data", "-o", folder, "--train", "2", "--val", "1", "--size", "32", "--overwrite"], capsys)
    assert rc == 2 and "notes.txt" in one_line(err)
    (folder / "images" / "val" / "notes.txt").unlink()
    rc, _, err = run(["data", "-o", folder, "--train", "2", "--val", "1", "--size", "32", "--overwrite"], capsys)
    assert rc == 0, err
    assert len(list((folder / "images" / "train").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch or old copy left


# ----------------------------------------------------------------------------- §1.3 outputs that are inputs


def test_an_output_that_is_an_input_or_another_output_is_refused_before_any_work(tiny_onnx, tiny_checkpoint,
                                                                                 tmp_path, capsys):
    video = write_clip(tmp_path / "v.mp4", frames=3, size=(64, 48))
    before = video.read_bytes()
    rc, _, err = run(["demo", tiny_onnx, "--source", video, "--headless", "-o", video], capsys)
    assert rc == 2 and "would overwrite the source" in one_line(err) and video.read_bytes() == before
    out = tmp_path / "out.mp4"
    rc, _, err = run(["demo", tiny_onnx, "--source", video, "--headless", "-o", out, "--json", out], capsys)
    assert rc == 2 and "same file" in one_line(err) and not out.exists()
    rc, _, err = run(["evaluate", tiny_checkpoint, "--json", tiny_checkpoint], capsys)
    assert rc == 2 and "would overwrite the input" in one_line(err)
    report = tmp_path / "report"
    rc, _, err = run(["report", tiny_checkpoint.parent, "-o", report, "--json", report / "report.md"], capsys)
    assert rc == 2 and "same file" in one_line(err) and not report.exists()


def test_the_demo_never_replaces_an_existing_video_or_snapshot_unless_told(tiny_onnx, tmp_path, capsys):
    from demo.webcam import snapshot_path

    clip = write_clip(tmp_path / "v.mp4", frames=3, size=(64, 48))
    theirs = tmp_path / "holiday.mp4"
    theirs.write_bytes(b"the user's own recording")
    rc, _, err = run(["demo", tiny_onnx, "--source", clip, "--headless", "-o", theirs], capsys)
    assert rc == 2 and "pass --overwrite" in one_line(err) and theirs.read_bytes() == b"the user's own recording"
    rc, _, _ = run(["demo", tiny_onnx, "--source", clip, "--headless", "--no-drop", "-o", theirs, "--overwrite"],
                   capsys)
    assert rc == 0 and video_info(theirs)[0] == 3
    # snapshots beside -o are numbered on from what is there: an earlier run's key-s pictures stay
    earlier = snapshot_path(str(theirs), 1)
    earlier.write_bytes(b"an earlier snapshot")
    from demo.webcam import Demo
    from demo.sources import FrameSource, parse_source
    import engines

    with engines.open(tiny_onnx, threads=1) as backend:
        demo = Demo(backend, FrameSource(parse_source(str(clip))), output=str(theirs))
        demo._last_image = np.zeros((8, 8, 3), np.uint8)
        assert demo.snapshot() == snapshot_path(str(theirs), 2)
    assert earlier.read_bytes() == b"an earlier snapshot"


def test_an_output_path_holding_a_file_cpnet_did_not_make_is_refused(tiny_onnx, tiny_checkpoint, tmp_path, capsys):
    """An existing file is replaced only when it can be cpnet's own: an artifact with its manifest, a JSON
    document at a .json path."""
    notes = tmp_path / "model.onnx"
    notes.write_text("not a model: the user's notes")
    log = tmp_path / "eval.json"
    log.write_text("a plain-text log under a .json name")
    before = tree(tmp_path)
    rc, _, err = run(["export", tiny_checkpoint, "-o", notes], capsys)
    assert rc == 2 and "is not a file cpnet made" in one_line(err)
    rc, _, err = run(["evaluate", tiny_checkpoint, "--json", log], capsys)
    assert rc == 2 and "is not JSON" in one_line(err)
    rc, _, err = run(["fp16", tiny_onnx, "-o", notes], capsys)
    assert rc == 2 and "is not a file cpnet made" in one_line(err)
    assert tree(tmp_path) == before


def test_an_output_over_an_artifacts_manifest_or_another_input_is_refused(tiny_onnx, tmp_path, capsys):
    """The manifest beside an artifact is part of it: ``--json model.onnx.json`` would make the file say it is
    something else; the reference of ``cpnet compare`` and the variants of ``cpnet report`` are inputs too; and
    report.json is one of the report's own pages."""
    model = tmp_path / "m.onnx"
    shutil.copy(tiny_onnx, model)
    shutil.copy(str(tiny_onnx) + ".json", str(model) + ".json")
    other = tmp_path / "other.onnx"
    shutil.copy(tiny_onnx, other)
    shutil.copy(str(tiny_onnx) + ".json", str(other) + ".json")
    before = tree(tmp_path)
    rc, _, err = run(["fp16", model, "-o", tmp_path / "m.fp16.onnx", "--json", str(model) + ".json"], capsys)
    assert rc == 2 and "would overwrite the manifest of" in one_line(err)
    rc, _, err = run(["compare", model, other, "--json", other], capsys)
    assert rc == 2 and "would overwrite the reference" in one_line(err)
    rc, _, err = run(["report", model, other, "--json", other], capsys)
    assert rc == 2 and "would overwrite the variant" in one_line(err)
    report = tmp_path / "report"
    rc, _, err = run(["report", model, other, "-o", report, "--json", report / "report.json"], capsys)
    assert rc == 2 and "same file" in one_line(err)
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- §1.4 a full disk

#: Run a cpnet command with a file-size limit (ulimit -f): a write past it fails with EFBIG, as on a full disk.
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from cpnet import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def run_limited(limit: int, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", LIMITED, str(limit), *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_full_disk_data_is_one_line_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "syn"
    r = run_limited(6000, "data", "-o", out, "--train", "8", "--val", "1", "--size", "64")
    assert r.returncode == 2, r.stderr
    assert "file-size limit" in one_line(r.stderr) and str(out) in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing under the final name, no scratch left


def test_full_disk_demo_video_is_refused_not_saved_truncated(tiny_onnx, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=60, size=(64, 48))
    out = tmp_path / "out" / "d.mp4"
    out.parent.mkdir()
    r = run_limited(4000, "demo", tiny_onnx, "-s", clip, "--headless", "--no-drop", "-o", out, "--threads", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not saved" in one_line(r.stderr) and "saved:" not in r.stdout
    assert list(out.parent.iterdir()) == []  # neither a truncated d.mp4 nor its .part file


def test_full_disk_data_clip_is_refused_not_saved_truncated(tmp_path):
    """cpnet data --clip is written as the demo's video is (cpnet.runtime.video.VideoFile): read back before the
    rename, so a full disk leaves neither a truncated clip (4000 bytes, exit 0 before) nor its temporary file."""
    clip = tmp_path / "c.mp4"
    r = run_limited(4000, "data", "--clip", clip, "--clip-frames", "30", "--clip-side", "64")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not saved" in one_line(r.stderr) and "wrote" not in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_full_disk_atomic_write_is_one_line_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"the good old file")
    code = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from cpnet.runtime import atomic_write_bytes
from cpnet.runtime.errors import UserError
try:
    atomic_write_bytes({str(target)!r}, bytes(5000))
except UserError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert "not written: the file-size limit" in r.stdout, r.stdout + r.stderr
    assert target.read_bytes() == b"the good old file" and [p.name for p in tmp_path.iterdir()] == ["best.pt"]


# ----------------------------------------------------------------------------- §2 locks, SIGTERM, .part files

HOLD_LOCK = """
import sys, time
from cpnet.runtime.files import lock_run_dir
with lock_run_dir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_run_directory_in_use_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, _, err = run(["train", "quickstart", "-o", run_dir, "--data-root", tmp_path / "nowhere"], capsys)
        assert rc == 2 and f"in use by process {holder.pid}" in one_line(err)
        rc, _, err = run(["pipeline", "-o", run_dir, "--data", tmp_path / "data"], capsys)
        assert rc == 2 and f"in use by process {holder.pid}" in one_line(err)
        assert not (tmp_path / "data").exists() and sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    # a lock is the kernel's: the killed holder's is gone, and the next user takes it
    from cpnet.runtime.files import lock_run_dir

    with lock_run_dir(run_dir):
        pass


HOLD_LOCK_AND_TRAIN = """
import sys, time
from pathlib import Path
from cpnet.runtime.files import lock_run_dir
with lock_run_dir(sys.argv[1]):
    (Path(sys.argv[1]) / "config.yaml").write_text("its own run")
    (Path(sys.argv[1]) / "tb").mkdir()
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_training_refused_by_the_lock_touches_nothing_of_the_training_holding_it(tmp_path, capsys, monkeypatch):
    """The other training starts after this one looked at the folder (it did not exist) and before this one asks
    for the lock (while its model is built): the refused one must not clear what it did not make."""
    import cpnet.train

    run_dir = tmp_path / "run"
    holders = []
    build = cpnet.train.build_training_model

    def build_while_another_starts(*a, **k):
        holders.append(subprocess.Popen([sys.executable, "-c", HOLD_LOCK_AND_TRAIN, str(run_dir)], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}))
        assert holders[0].stdout.readline().strip() == "held"
        return build(*a, **k)

    monkeypatch.setattr(cpnet.train, "build_training_model", build_while_another_starts)
    try:
        rc, _, err = run(["train", "quickstart", "-o", run_dir, "--data-root", tmp_path / "nowhere"], capsys)
        assert rc == 2 and f"in use by process {holders[0].pid}" in one_line(err)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.yaml", "tb"]
        assert (run_dir / "config.yaml").read_text() == "its own run"
    finally:
        for h in holders:
            h.kill()
            h.wait()


def test_sigterm_finalises_the_demo_video_and_old_part_files_are_removed(tiny_onnx, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".out.mp4.{int(dead.stdout)}.part.mp4"  # what a kill -9 of a demo leaves
    leftover.write_bytes(b"half a video")
    returncode, stdout, stderr, out = stop_a_recording(tiny_onnx, tmp_path, signal.SIGTERM)
    assert returncode == 130, stderr
    assert "interrupted (SIGTERM)" in stdout and "Traceback" not in stderr
    n, w, h = video_info(out)
    assert 0 < n < 150 and (w, h) == (64, 48)
    assert not leftover.exists() and not list(tmp_path.glob(".*part*"))


# ----------------------------------------------------------------------------- §3 tampered inputs


def flipped_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A run directory whose best.pt has one byte changed and its manifest kept."""
    run_dir = tmp_path / "tampered"
    run_dir.mkdir()
    for p in tiny_checkpoint.parent.glob("best.pt*"):
        shutil.copy2(p, run_dir / p.name)
    data = bytearray((run_dir / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run_dir / "best.pt").write_bytes(bytes(data))
    return run_dir


def test_a_tampered_checkpoint_is_refused_by_every_command_that_reads_it(tiny_checkpoint, tiny_data, tmp_path,
                                                                         capsys):
    run_dir = flipped_copy(tiny_checkpoint, tmp_path)
    commands = [["evaluate", run_dir, "--data-root", tiny_data],
                ["export", run_dir, "-o", tmp_path / "m.onnx", "--data-root", tiny_data],
                ["demo", run_dir, "-s", tiny_data / "images" / "val", "--headless", "--max-frames", "1"],
                ["benchmark", run_dir, "--iters", "1"]]
    for argv in commands:
        rc, _, err = run(argv, capsys)
        assert rc == 2 and "does not match its manifest" in one_line(err), (argv, err)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.json").exists()


def test_resume_from_a_tampered_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    from cpnet.checkpoint import load_checkpoint
    from cpnet.runtime.errors import UserError

    run_dir = flipped_copy(tiny_checkpoint, tmp_path)
    (run_dir / "checkpoints").mkdir()
    for p in run_dir.glob("best.pt*"):  # --resume reads the newest iteration checkpoint
        p.rename(run_dir / "checkpoints" / p.name.replace("best.pt", "iter_0000002.pt"))
    with pytest.raises(UserError, match="does not match its manifest"):
        load_checkpoint(run_dir)


def test_a_changed_ranges_file_is_not_reused(tmp_path):
    from quantize.calibrate import NUM_BINS, RangeStats
    from cpnet.runtime.errors import UserError

    n = 3
    stats = RangeStats(names=["a", "b", "c"], lo=np.zeros(n, np.float32), hi=np.ones(n, np.float32),
                       edge=np.ones(n), hist=np.ones((n, NUM_BINS), np.int64), meta={"key": {"parent_sha256": "x"}})
    path = stats.save(tmp_path / "model.calib.npz")
    assert RangeStats.load(path).names == ["a", "b", "c"]
    with np.load(path) as z:  # the same file with one range changed, rewritten as a valid npz
        arrays = {k: z[k] for k in z.files}
    arrays["hi"] = arrays["hi"] * 8
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(UserError, match="does not match its own sha256"):
        RangeStats.load(path)


def test_sensitivity_leaves_the_ranges_file_an_int8_manifest_names(tmp_path):
    from quantize.int8_parent import manifests_naming

    ranges = tmp_path / "model.calib.npz"
    ranges.write_bytes(b"ranges")
    (tmp_path / "model.int8.onnx.json").write_text(json.dumps({"calibration": {"ranges_file": "model.calib.npz"}}))
    (tmp_path / "other.onnx.json").write_text(json.dumps({"calibration": {"ranges_file": "other.calib.npz"}}))
    assert manifests_naming(ranges) == [tmp_path / "model.int8.onnx"]


def test_sha256_covers_external_data(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    from cpnet.runtime.files import artifact_sha256

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, location="big.onnx.data",
              size_threshold=0)
    before = artifact_sha256(path)
    data = bytearray((tmp_path / "big.onnx.data").read_bytes())
    data[100] ^= 1
    (tmp_path / "big.onnx.data").write_bytes(bytes(data))
    assert artifact_sha256(path) != before


def test_data_clip_refuses_an_existing_file_unless_overwrite(tmp_path):
    """cpnet data --clip FILE over a file that exists (perhaps the user's own video) is refused, unchanged."""
    from cpnet import cli

    video = tmp_path / "holiday.mp4"
    video.write_bytes(b"the user's video")
    assert cli.main(["data", "--clip", str(video), "--clip-frames", "2", "--clip-side", "64"]) == 2
    assert video.read_bytes() == b"the user's video"
    assert cli.main(["data", "--clip", str(video), "--clip-frames", "2", "--clip-side", "64", "--overwrite"]) == 0
    assert video.read_bytes() != b"the user's video"
