"""cpnet pipeline on a tiny config: every step end to end, then every step fresh; --only, --from, --list;
a failing step names its log and stops; a drift gate that trips does not stop, and the run exits 1."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cpnet import cli
from cpnet.data.synthetic import CLIP_FRAMES
from pipeline import steps

# A ResNet-18 at base width 16 with a 16-channel head on a 4x4 prior grid: 32x32 inputs (tests/conftest.py).
TINY = ["model.prior_size=4", "model.base_width=16", "model.head_channels=16", "model.aux_channels=8",
        "model.agg_kernel=3", "train.batch_size=4", "train.iters=2", "train.val_interval=2", "train.ckpt_interval=2",
        "train.warmup_iters=1", "data.num_workers=0", "data.scale_range=0.75,1.25"]


def argv(root: Path, *extra: str) -> list[str]:
    return ["pipeline", "-o", str(root / "run"), "--data", str(root / "data"), "--train-images", "6",
            "--val-images", "4", "--image-size", "32", "--calib-images", "2", "--threads", "2", *TINY, *extra]


def pipeline(root: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv(root, *extra))
    return rc, out.getvalue(), err.getvalue()


def step_lines(err: str) -> dict[str, str]:
    """The pipeline's last line per step: {name: text after 'i/n name: '}."""
    found = {}
    for line in err.splitlines():
        m = re.match(r"^\[pipeline\] (?:warning: )?\s*\d+/\d+ (\S+): (.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def mtimes(run: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((run / "logs").glob("*.log"))}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return root, *pipeline(root)


def test_every_step_runs_end_to_end_and_the_end_screen_says_where_everything_is(first):
    root, rc, out, err = first
    run = root / "run"
    assert rc == 0, err
    lines = step_lines(err)
    assert list(lines) == list(steps.STEP_NAMES)
    for name in steps.STEP_NAMES:
        if name == "engines":
            assert lines[name].startswith("skipped: ") or lines[name].startswith("done"), lines[name]
        else:
            assert lines[name].startswith("done in "), (name, lines[name])
            assert (run / "logs" / f"{name}.log").is_file() and (run / "stamps" / f"{name}.json").is_file()
    # the GEMM rate first, one line about engines where TensorRT is missing
    first_lines = [ln for ln in err.splitlines() if ln.startswith("[pipeline]")][:3]
    assert any("GFLOP/s" in ln for ln in first_lines)
    if lines["engines"].startswith("skipped"):
        assert sum("skipped:" in ln for ln in err.splitlines()) == 1
    # every artifact
    plan_files = ["best.pt", "eval.json", "export/model.onnx", "export/model.fp16.onnx", "export/model.int8.onnx",
                  "export/model.int8-cpu.onnx", "check/trt10.json", "check/trt11.json", "report/report.html",
                  "report/report.json", "demo/clip.mp4", "demo/demo.mp4", "demo/demo.json", "pipeline.txt"]
    for rel in plan_files:
        assert (run / rel).is_file(), rel
    demo = json.loads((run / "demo" / "demo.json").read_text())
    # the synthetic run's clip is the motion clip (a pan and zoom over one scene): every frame shown, no scene cut
    assert demo["frames_shown"] == CLIP_FRAMES
    assert demo["flicker"]["raw"]["pairs"] == CLIP_FRAMES - 1 and demo["flicker"]["raw"]["scene_cuts"] == 0
    # the end screen: paths, a row per variant, the evaluation, demo FPS, what to run next, step times
    report = json.loads((run / "report" / "report.json").read_text())
    from engines.backends import backends_for, row_options

    openvino = len(row_options("openvino")) if "openvino" in backends_for("m.onnx") else 0
    assert len(report["rows"]) == 5 + 4 * openvino  # the checkpoint, then 4 files on ORT (and OpenVINO per hint)
    for row in report["rows"]:
        assert row["name"][:44] in out
    # the demo ran the recommended row: its file, on its backend, with its options
    rec = report["recommendation"]
    assert demo["model"] == rec["path"] and demo["backend"].startswith(rec["backend"])
    assert f"recommended on this machine: {rec['key']}" in out
    for text in ("where everything is", str(run / "report" / "report.html"), "cpnet evaluate: mIoU", "car ",
                 "demo: ", "FPS", "xdg-open" , "cpnet demo ", "step times", "train ", "GEMM"):
        assert text in out, text
    assert (run / "pipeline.txt").read_text().strip() == out.strip()
    # progress in the logs is whole lines, not carriage-return frames
    train_log = (run / "logs" / "train.log").read_text()
    assert "\r" not in train_log and "train: 100% 2/2 it" in train_log


def test_a_second_run_skips_every_step(first):
    root, rc, _, _ = first
    assert rc == 0
    before = mtimes(root / "run")
    rc, out, err = pipeline(root)
    assert rc == 0, err
    lines = step_lines(err)
    assert all(text.startswith("fresh, skipped") for name, text in lines.items() if name != "engines"), lines
    assert mtimes(root / "run") == before
    assert "cpnet evaluate: mIoU" in out and "fresh (" in out


def test_list_only_and_from(first):
    root = first[0]
    rc, out, _ = pipeline(root, "--list")
    assert rc == 0 and [ln.split()[0] for ln in out.splitlines()] == list(steps.STEP_NAMES)
    assert "fresh" in out.splitlines()[0]

    before = mtimes(root / "run")
    rc, _, err = pipeline(root, "--only", "evaluate")
    assert rc == 0, err
    after = mtimes(root / "run")
    assert [n for n in after if after[n] != before[n]] == ["evaluate.log"]
    assert list(step_lines(err)) == ["evaluate"]

    rc, _, err = pipeline(root, "--from", "check-trt11")
    assert rc == 0, err
    assert list(step_lines(err)) == ["check-trt11", "engines", "report", "demo"]
    changed = mtimes(root / "run")
    assert {n for n in changed if changed[n] != after[n]} == {"check-trt11.log", "report.log", "demo.log"}

    # a changed option reruns that step and, through the files it rewrites, the ones after it
    rc, out, _ = pipeline(root, "--list", "--calib-images", "3")
    assert rc == 0
    states = dict(line.split(None, 1) for line in out.splitlines())
    assert states["fp16"].startswith("would run: its options changed") and states["export"] == "fresh"


def test_a_drift_gate_that_trips_does_not_stop_the_pipeline_which_exits_1(first, monkeypatch):
    import engines.report.report

    root = first[0]
    monkeypatch.setattr(engines.report.report, "exit_code", lambda report: 1)
    demo_before = (root / "run" / "logs" / "demo.log").stat().st_mtime_ns
    rc, out, err = pipeline(root, "--from", "report")
    assert rc == 1, err
    lines = step_lines(err)
    assert lines["report"].startswith("gate failed") and "report.log" in lines["report"]
    assert lines["demo"].startswith("done in ")  # it went on
    assert (root / "run" / "logs" / "demo.log").stat().st_mtime_ns > demo_before
    assert "a gate failed (exit 1)" in out
    monkeypatch.undo()
    rc, _, err = pipeline(root)  # the report is fresh, and its gate still fails the run
    assert rc == 1 and "its gate failed then" in step_lines(err)["report"]


def test_a_failing_step_names_itself_and_its_log_and_stops(first, monkeypatch):
    import quantize.int8
    from cpnet.runtime.errors import CheckFailed

    root = first[0]

    def broken(*a, **k):
        raise CheckFailed("calibration went wrong on purpose")

    monkeypatch.setattr(quantize.int8, "quantize_int8", broken)
    before = mtimes(root / "run")
    rc, out, err = pipeline(root, "--from", "int8-cpu")
    assert rc == 1
    log = root / "run" / "logs" / "int8-cpu.log"
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: step int8-cpu failed (exit 1): calibration went wrong on purpose")
    assert str(log) in last
    assert "calibration went wrong on purpose" in log.read_text()
    assert list(step_lines(err)) == ["int8-cpu"]  # stopped: nothing after it ran
    after = mtimes(root / "run")
    assert {n for n in after if after[n] != before[n]} == {"int8-cpu.log"}
    stamp = json.loads((root / "run" / "stamps" / "int8-cpu.json").read_text())
    assert stamp["rc"] == 1  # the pipeline's own output, and not fresh: the next run does it again
    assert "stopped at int8-cpu (exit 1)" in out


def test_mistakes_are_one_line_exit_2_before_any_work(tmp_path, capsys):
    rc = cli.main(["pipeline", "--only", "export", "-o", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and "step export needs" in err and "cpnet pipeline --from train" in err, err
    assert len([ln for ln in err.splitlines() if not ln.startswith("[")]) == 1
    rc = cli.main(["pipeline", "ade20k_r50", "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "--config ade20k_r50" in err
    with pytest.raises(SystemExit) as e:  # argparse's usage errors exit 2 from the parser
        cli.main(["pipeline", "--only", "train", "--from", "data"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- nothing lost (issue 27)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_the_pipeline_did_not_make_is_refused_not_deleted(first, tmp_path, make_tiny_checkpoint, capsys):
    root = first[0]
    run = tmp_path / "run"
    make_tiny_checkpoint(run)  # best.pt and its manifest, as cpnet train leaves them
    before = tree(run)
    options = argv(root)[argv(root).index("--data"):]
    rc = cli.main(["pipeline", "-o", str(run), "--only", "train", *options])
    err = capsys.readouterr().err
    assert rc == 2 and "the pipeline did not make" in err and "--overwrite" in err, err
    assert tree(run) == before and sorted(p.name for p in run.iterdir()) == sorted(before)


def test_a_dataset_the_pipeline_did_not_make_is_refused_not_rewritten(tmp_path, tiny_data, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)  # 6 + 4 images of 48 px: not the set these options ask for
    before = tree(data)
    rc = cli.main(["pipeline", "-o", str(tmp_path / "run"), "--data", str(data), "--only", "data", "--train-images",
                   "6", "--val-images", "4", "--image-size", "32", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err, err
    assert tree(data) == before and not (tmp_path / "run").exists()


def test_a_damaged_artifact_with_its_time_kept_is_not_fresh(first):
    root = first[0]
    onnx = root / "run" / "export" / "model.onnx"
    original, st = onnx.read_bytes(), onnx.stat()
    try:
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        onnx.write_bytes(bytes(damaged))
        os.utime(onnx, ns=(st.st_atime_ns, st.st_mtime_ns))
        rc, out, _ = pipeline(root, "--list")
        states = dict(line.split(None, 1) for line in out.splitlines())
        assert rc == 0 and "does not match its manifest's sha256" in states["export"], states
        assert "does not match its manifest's sha256" in states["fp16"]  # it reads the damaged file
    finally:
        onnx.write_bytes(original)
        os.utime(onnx, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_interrupted_training_is_resumed_not_restarted(first):
    root = first[0]
    run = root / "run"
    stamp_path = run / "stamps" / "train.json"
    stamp = json.loads(stamp_path.read_text())
    checkpoints = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    best = (run / "best.pt").read_bytes()
    stamp.update(rc=None)  # what a kill -9 during training leaves (Ctrl-C leaves rc 130)
    stamp_path.write_text(json.dumps(stamp))
    rc, _, err = pipeline(root, "--only", "train")
    assert rc == 0, err
    log = (run / "logs" / "train.log").read_text()
    assert "--resume" in log.splitlines()[0] and "--overwrite" not in log.splitlines()[0]
    assert "resumed from" in log and "nothing left to train" in log and "none trained now" in log
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == checkpoints
    assert (run / "best.pt").read_bytes() == best
    assert json.loads(stamp_path.read_text())["rc"] == 0
