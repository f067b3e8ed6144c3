"""Training and evaluation end to end on tiny synthetic data: checkpoints, resume, torchrun, bad data, NaNs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cpnet import evaluate as evaluate_cli
from conftest import error_line
from cpnet import train as train_cli
from cpnet.checkpoint import iter_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# A model small enough for a few CPU iterations per second: half-width ResNet-18, 32x32 input, 4x4 prior.
TINY = ["model.prior_size=4", "model.base_width=16", "model.head_channels=16", "model.aux_channels=8",
        "model.agg_kernel=3", "train.batch_size=4", "train.log_interval=1", "data.num_workers=0",
        "train.warmup_iters=2", "data.scale_range=0.75,1.25"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from cpnet.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, n_train=12, n_val=4, size=48, seed=1)
    return root


def run_train(work, synth, *extra):
    argv = ["quickstart", "--data-root", str(synth), "-o", str(work), "--no-progress", *TINY, *extra]
    return train_cli.main(argv)


def test_train_writes_checkpoints_best_and_tensorboard_then_evaluate(tmp_path, synth, capsys):
    work = tmp_path / "run"
    assert run_train(work, synth, "train.iters=4", "train.ckpt_interval=2", "train.val_interval=2") == 0
    assert [i for i, _ in iter_checkpoints(work)] == [2, 4]
    assert (work / "best.pt").is_file() and (work / "best.pt.json").is_file()
    manifest = json.loads((work / "checkpoints" / "iter_0000004.pt.json").read_text())
    assert manifest["input_size"] == [32, 32] and len(manifest["classes"]) == 8 and manifest["schema"] == 1
    assert any((work / "tb").iterdir())
    ckpt = load_checkpoint(work)
    assert ckpt["path"].endswith("best.pt")
    out = tmp_path / "metrics.json"
    assert evaluate_cli.main([str(work), "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert 0 <= res["mIoU"] <= 100 and len(res["per_class"]) == 8
    assert "mIoU" in capsys.readouterr().out
    # slide + multi-scale + flip also runs
    assert evaluate_cli.main([str(work / "checkpoints" / "iter_0000004.pt"), "--mode", "slide",
                              "--scales", "0.75,1.25", "--flip", "--no-progress"]) == 0


def _params(path):
    return load_checkpoint(path)["model"]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, synth):
    iters = 10
    common = [f"train.iters={iters}", "train.ckpt_interval=2", "train.val_interval=1000", "train.keep_ckpts=10"]
    # uninterrupted
    assert run_train(tmp_path / "full", synth, *common) == 0
    # killed with SIGKILL right after its first checkpoint, then resumed
    work = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cpnet.train", "quickstart", "--data-root", str(synth),
           "-o", str(work), "--no-progress", *TINY, *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not iter_checkpoints(work) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [i for i, _ in iter_checkpoints(work)]
    assert done and done[-1] < iters, f"the run was not interrupted before the end: {done}"
    assert run_train(work, synth, *common, "--resume") == 0
    a = _params(tmp_path / "full" / "checkpoints" / f"iter_{iters:07d}.pt")
    b = _params(work / "checkpoints" / f"iter_{iters:07d}.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_torchrun_two_cpu_processes(tmp_path, synth):
    work = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cpnet.train", "quickstart", "--data-root", str(synth), "-o", str(work),
           "--device", "cpu", "--no-progress", *TINY, "train.iters=3", "train.ckpt_interval=3", "train.val_interval=3"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr  # the log goes to stderr, results to stdout
    ckpt = load_checkpoint(work / "checkpoints" / "iter_0000003.pt")
    # SyncBN state dicts keep BatchNorm2d keys, so a DDP checkpoint loads into a plain model
    from cpnet.models import CPNet
    from cpnet.checkpoint import config_of
    CPNet(config_of(ckpt).model).load_state_dict(ckpt["model"])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_non_finite_loss_stops_with_iteration_and_saves_nothing_bad(tmp_path, synth, capsys):
    work = tmp_path / "nan"
    rc = run_train(work, synth, "train.iters=6", "train.ckpt_interval=1", "train.val_interval=1000",
                   "train.lr=1e30", "train.warmup_iters=0")
    assert rc == 1
    err = capsys.readouterr().err
    line = error_line(err)  # the log goes to stderr too; one error line
    assert "iteration" in line and "non-finite" in line or "not finite" in line
    for _, path in iter_checkpoints(work):
        for v in load_checkpoint(path)["model"].values():
            if v.is_floating_point():
                assert torch.isfinite(v).all()


def test_skip_bad_training_data_counts(tmp_path, synth, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    victim = sorted((data / "images" / "train").iterdir())[0]
    victim.write_bytes(b"not an image")
    assert run_train(tmp_path / "stop", data, "train.iters=4", "train.val_interval=1000") == 2
    assert victim.name in capsys.readouterr().err
    # the same from a DataLoader worker process: still one line naming the file, no traceback
    assert run_train(tmp_path / "stop_w", data, "train.iters=4", "train.val_interval=1000", "data.num_workers=1") == 2
    err = capsys.readouterr().err
    assert victim.name in error_line(err)
    assert run_train(tmp_path / "skip", data, "train.iters=4", "train.val_interval=1000", "--on-bad-data", "skip") == 0
    assert "skipped" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, synth, capsys):
    assert train_cli.main(["nope", "--no-progress"]) == 2
    assert train_cli.main(["quickstart", "--data-root", str(tmp_path / "missing"),
                           "-o", str(tmp_path / "w"), "--no-progress"]) == 2
    assert evaluate_cli.main([str(tmp_path / "missing.pt")]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert evaluate_cli.main([str(bad)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]  # "[stage] ..." are log lines
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines) and "Traceback" not in err


def test_second_run_into_a_run_dir_is_refused_unless_resume_or_overwrite(tmp_path, synth, capsys):
    work = tmp_path / "run"
    assert run_train(work, synth, "train.iters=2", "train.ckpt_interval=2", "train.val_interval=1000") == 0
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_train(work, synth, "train.iters=2", "train.val_interval=1000") == 2
    line = error_line(capsys.readouterr().err)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == before  # nothing touched
    assert run_train(work, synth, "train.iters=3", "train.ckpt_interval=3", "train.val_interval=1000",
                     "--overwrite") == 0
    assert [it for it, _ in iter_checkpoints(work)] == [3]  # only the new run's checkpoints
    assert load_checkpoint(work / "best.pt")["iter"] == 3


def test_nan_learning_rate_is_refused_before_any_work(tmp_path, synth, capsys):
    work = tmp_path / "nan_lr"
    assert run_train(work, synth, "train.lr=nan") == 2
    assert "train.lr" in error_line(capsys.readouterr().err)
    assert not work.exists()


def test_non_finite_weights_never_become_best_pt(tmp_path, synth, monkeypatch):
    import cpnet.evaluate as evaluate_mod

    work = tmp_path / "poisoned"
    real = evaluate_mod.evaluate_model

    def poisoned(model, *a, **k):  # validation runs after the weights went bad
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return real(model, *a, **k)

    monkeypatch.setattr(evaluate_mod, "evaluate_model", poisoned)
    assert run_train(work, synth, "train.iters=2", "train.val_interval=1", "train.ckpt_interval=1000") == 1
    assert not (work / "best.pt").exists()


def test_all_bad_samples_fail_instead_of_training_on_nothing(tmp_path, synth, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    for image in (data / "images").rglob("*.png"):
        image.write_bytes(b"broken")
    rc = run_train(tmp_path / "w", data, "train.iters=50", "train.val_interval=1000", "--on-bad-data", "skip")
    assert rc == 2 and "no usable training sample" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "w" / "best.pt").exists()


def test_rectangular_grid_trains_evaluates_in_slide_mode_and_exports_with_parity(tmp_path, synth, capsys):
    """prior [4, 6]: 32x48 crops in training, 32x48 windows in slide evaluation, a 32x48 ONNX input."""
    from cpnet.export import export_checkpoint
    from cpnet.runtime import read_manifest
    from cpnet.runtime.options import RuntimeOptions

    work = tmp_path / "rect"
    assert run_train(work, synth, "model.prior_size=[4, 6]", "train.iters=2", "train.ckpt_interval=2",
                     "train.val_interval=2") == 0
    assert read_manifest(work / "best.pt")["input_size"] == [32, 48]
    ckpt = load_checkpoint(work)
    assert ckpt["config"]["model"]["prior_size"] == [4, 6]
    out = tmp_path / "slide.json"
    assert evaluate_cli.main([str(work), "--mode", "slide", "--scales", "1,1.5", "--json", str(out),
                              "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "slide" and res["scales"] == [1.0, 1.5] and 0 <= res["mIoU"] <= 100
    path, manifest = export_checkpoint(work, tmp_path / "rect.onnx", runtime=RuntimeOptions(threads=1))
    assert manifest["input_size"] == [32, 48] and manifest["input"]["shape"] == [1, 3, 32, 48]
    assert manifest["export"]["parity"]["max_abs"] <= 1e-3 and manifest["export"]["parity"]["agreement"] >= 0.999
