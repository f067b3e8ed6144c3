"""The front door: every verb's help, one user mistake per verb, the exit-code table, torch-free deploy imports."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from cpnet import cli
from cpnet.runtime import errors
from no_torch import BLOCK_TORCH

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's --help and usage errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_top_level_help_lists_every_verb_and_the_exit_codes(capsys):
    rc, out, _ = run_cli(["--help"], capsys)
    assert rc == 0
    for verb in cli.VERBS:
        line = next(line for line in out.splitlines() if line.strip().startswith(verb + " "))
        assert "unavailable" not in line, line
    for code in errors.EXIT_CODES:
        assert f"  {code} " in out
    assert run_cli([], capsys)[0] == 2  # nothing asked: usage, and a user-error code


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_verb_help_has_description_example_and_help_for_every_flag(verb, capsys):
    rc, out, err = run_cli([verb, "--help"], capsys)
    assert rc == 0, err
    assert f"cpnet {verb}" in out and "examples:" in out
    parser = cli.build_parser(cli._module(cli.VERBS[verb]), f"cpnet {verb}")
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or any(o.startswith("--_") for o in action.option_strings):
            continue  # help itself, and internal flags a command passes to its own child processes
        assert action.help and action.help != argparse.SUPPRESS, f"cpnet {verb}: {action.dest} has no help text"


# One user mistake per verb: (argv with {tmp} for a scratch folder, what the error line must name).
MISTAKES = {
    "data": (["data", "-o", "{tmp}/d", "--size", "0"], "--size"),
    "summary": (["summary", "no_such_config"], "no_such_config"),
    "convert": (["convert", "{tmp}/missing.pth", "--config", "quickstart", "-o", "{tmp}/run"], "missing.pth"),
    "train": (["train", "no_such_config", "-o", "{tmp}/run"], "no_such_config"),
    "evaluate": (["evaluate", "{tmp}/missing.pt"], "missing.pt"),
    "export": (["export", "{tmp}/missing.pt"], "missing.pt"),
    "fp16": (["fp16", "{tmp}/missing.onnx"], "missing.onnx"),
    "int8": (["int8", "{tmp}/missing.onnx"], "missing.onnx"),
    "sensitivity": (["sensitivity", "{tmp}/missing.onnx"], "missing.onnx"),
    "report": (["report", "{tmp}/missing.onnx", "{tmp}/other.onnx", "--data", "{tmp}"], "missing.onnx"),
    "check": (["check", "{tmp}/missing.onnx"], "missing.onnx"),
    "build": (["build", "{tmp}/missing.onnx"], "missing.onnx"),
    "inspect": (["inspect", "{tmp}/missing.onnx"], "missing.onnx"),
    "compare": (["compare", "{tmp}/missing.onnx", "{tmp}/other.onnx", "--layers"], "missing.onnx"),
    "benchmark": (["benchmark", "{tmp}/missing.onnx"], "missing.onnx"),
    "demo": (["demo", "{tmp}/missing.onnx", "--source", "{tmp}/missing.mp4", "--headless"], "missing"),
    "pipeline": (["pipeline", "--from", "no_such_step"], "no_such_step"),
    "doctor": (["doctor", "{tmp}/missing.onnx"], "missing.onnx"),
}


def test_every_verb_has_a_mistake_case():
    assert set(cli.VERBS) <= set(MISTAKES), f"add a case for {set(cli.VERBS) - set(MISTAKES)}"


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_user_mistake_is_one_line_exit_2_no_traceback(verb, tmp_path, capsys):
    argv, named = MISTAKES[verb]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc, _, err = run_cli(argv, capsys)
    assert rc == errors.EXIT_USER_ERROR, err
    lines = [line for line in err.splitlines() if not line.startswith("[")]  # "[stage] ..." lines are the log
    assert len(lines) == 1 and "Traceback" not in err, err
    assert named in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed command left files behind"


def test_unknown_verb_and_flag_get_close_match_suggestions(capsys):
    rc, _, err = run_cli(["exprot", "x.pt"], capsys)
    assert rc == 2 and "did you mean 'export'?" in err and len(err.splitlines()) == 1
    rc, _, err = run_cli(["fp16", "model.onnx", "--keep-flaot", "a"], capsys)
    assert rc == 2 and "did you mean --keep-float?" in err and len(err.splitlines()) == 1


def test_each_error_kind_maps_to_its_documented_exit_code():
    assert errors.UserError("x").exit_code == 2
    assert errors.CheckFailed("x").exit_code == 1
    assert errors.MissingDependency("x").exit_code == 3
    assert errors.exit_code_of(KeyboardInterrupt()) == 130
    from cpnet.config import ConfigError
    from cpnet.export import ParityError

    assert issubclass(ConfigError, errors.UserError) and issubclass(ParityError, errors.CheckFailed)


def test_ctrl_c_is_130_and_one_line(monkeypatch, capsys):
    from cpnet.data import synthetic

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", interrupted)
    rc, _, err = run_cli(["data", "-o", "nowhere"], capsys)
    assert rc == 130 and err.strip() == "interrupted"


def test_python_m_forms_share_the_parsers():
    for argv in (["-m", "cpnet", "export", "--help"], ["-m", "cpnet.export", "--help"],
                 ["-m", "quantize", "fp16", "--help"], ["engines/build_engine.py", "--help"]):
        r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (argv, r.stderr)
        assert "examples:" in r.stdout, argv


DEPLOY_SIDE = BLOCK_TORCH + """
import numpy as np
import cpnet.runtime, cpnet.runtime.ort, cpnet.runtime.preprocess, cpnet.runtime.metrics, cpnet.runtime.compare
import cpnet.runtime.draw, cpnet.runtime.backend, cpnet.runtime.device, cpnet.cli, cpnet.cli.args
import engines
m = engines.open(sys.argv[1], threads=1)
labels = m.segment(np.zeros((20, 30, 3), np.uint8))
assert labels.shape == (20, 30), labels.shape
assert "torch" not in sys.modules
print("ok")
"""


def test_deploy_side_runs_without_torch(tiny_onnx):
    r = subprocess.run([sys.executable, "-c", DEPLOY_SIDE, str(tiny_onnx)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


NO_TORCH_TRAIN = BLOCK_TORCH + """
from cpnet.cli import main
sys.exit(main(["train", "quickstart"]))
"""


def test_a_training_verb_on_a_deploy_install_names_the_extra():
    r = subprocess.run([sys.executable, "-c", NO_TORCH_TRAIN], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == errors.EXIT_MISSING_DEPENDENCY, r.stderr
    assert r.stderr.strip().splitlines() == ["error: cpnet train needs torch, which this installation lacks: "
                                             "pip install -e '.[train]'"]


def test_keep_float_is_split_once_and_auto_is_the_search_only_where_the_verb_offers_it():
    from cpnet.cli import args as cli_args

    for auto in (False, True):
        p = argparse.ArgumentParser()
        cli_args.add_keep_float(p, "INT8", auto=auto)
        assert cli_args.keep_float_options(p.parse_args([]), auto=auto)["keep_float"] == ()
        parsed = cli_args.keep_float_options(p.parse_args(["--keep-float", " /a/Conv, auto,,/b/MatMul "]), auto=auto)
        if auto:
            assert parsed == {"keep_float": ("/a/Conv", "/b/MatMul"), "auto_keep_float": True}
        else:  # cpnet fp16 has no search: 'auto' is a node name, refused as unknown by the graph check
            assert parsed == {"keep_float": ("/a/Conv", "auto", "/b/MatMul")}
