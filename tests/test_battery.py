"""A hostile but ordinary user: one table of mistakes, each class of them for every command.

Classes (the columns of the issue that asked for this battery):
- ``output``: an output place that cannot be written (an existing folder where a file goes, a path under a
  file, a file where a folder goes), refused before any work;
- ``option``: a value the type allows but the meaning does not;
- ``artifact``: an input that lies or is malformed (wrong manifest, garbage, wrong kind);
- ``security``: an input that must not be trusted (a tampered file whose sha256 differs from its manifest,
  a pickle that would run code);
- ``bound``: a value with no upper bound that would hang or exhaust memory (scales, bootstrap resamples, opset);
- ``degenerate``: data the command cannot give a meaning to (every mask pixel ignored, a class file in a
  legacy encoding, an ignore label that is a class id), and exit codes that say whose fault it is (a tampered
  variant in the report is the user's, 2, not a missing dependency's 3);
- ``path``: a file name that is not UTF-8 (bytes of a legacy encoding, ``b"\\xff\\xfe.mp4"``), given as an
  argument or found inside a folder: OpenCV crashed on it (a segfault) and UTF-8 files could not hold it;
  refused naming the file and saying to rename it;
- ``work``: every case also checks that nothing in the working folder was created or changed, so a failed
  command never costs earlier work.

Each case asserts the exit code from the front door's table, one line on stderr, no traceback.
Commands with no input artifact (data, summary, train) have no ``artifact`` case of that kind; theirs
are in the ``option`` column (a config is their input).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cpnet import cli
from cpnet.runtime import manifest_path

CASES = [
    # data
    ("data", "output", ["data", "-o", "{file}"], 2, "existing file"),
    ("data", "option", ["data", "-o", "{w}/d", "--train", "-1"], 2, "--train"),
    ("data", "bound", ["data", "-o", "{w}/d", "--size", "1000000"], 2, "--size"),
    # summary
    ("summary", "output", ["summary", "quickstart", "--json", "{dir}"], 2, "existing folder"),
    ("summary", "option", ["summary", "quickstart", "--forward", "huge"], 2, "--forward"),
    ("summary", "artifact", ["summary", "{latin_yaml}"], 2, "UTF-8"),
    # train
    ("train", "output", ["train", "quickstart", "-o", "{under_file}", "--data-root", "{data}"], 2, "is a file"),
    ("train", "option", ["train", "quickstart", "-o", "{w}/run", "--data-root", "{data}", "train.lr=nan"], 2,
     "train.lr"),
    ("train", "artifact", ["train", "{latin_yaml}", "-o", "{w}/run"], 2, "UTF-8"),
    ("train", "security", ["train", "quickstart", "-o", "{w}/run", "--data-root", "{data}",
                           "--init-backbone", "{evil_pt}"], 2, "evil.pt"),
    ("train", "degenerate", ["train", "quickstart", "-o", "{w}/run", "--data-root", "{data}", "data.ignore_index=0"],
     2, "data.ignore_index"),
    # evaluate
    ("evaluate", "output", ["evaluate", "{ckpt}", "--json", "{dir}"], 2, "existing folder"),
    ("evaluate", "option", ["evaluate", "{ckpt}", "--scales", "0,1"], 2, "--scales"),
    ("evaluate", "artifact", ["evaluate", "{onnx}"], 2, "model.onnx"),
    ("evaluate", "security", ["evaluate", "{evil_pt}"], 2, "evil.pt"),
    ("evaluate", "bound", ["evaluate", "{ckpt}", "--scales", "50"], 2, "--scales"),
    ("evaluate", "degenerate", ["evaluate", "{ckpt}", "--data-root", "{ignored_data}", "--no-progress"], 2, "no labelled pixel"),
    ("evaluate", "degenerate", ["evaluate", "{ckpt}", "--data-root", "{cp1252_data}", "--no-progress"], 2, "classes.yaml"),
    ("train", "degenerate", ["train", "quickstart", "-o", "{w}/run", "--data-root", "{cp1252_data}", "train.iters=1"],
     2, "classes.yaml"),
    ("train", "degenerate", ["train", "quickstart", "-o", "{w}/run", "--data-root", "{unreadable_data}",
                             "--on-bad-data", "skip", "train.iters=2", "--no-progress"], 2, "no usable training sample"),
    ("report", "degenerate", ["report", "{onnx}", "{onnx}", "--data", "{cp1252_data}", "-o", "{w}/r", "--bootstrap", "0",
                              "--no-progress"], 2, "classes.yaml"),
    # export
    ("export", "output", ["export", "{ckpt}", "-o", "{under_file}"], 2, "is a file"),
    ("export", "option", ["export", "{ckpt}", "--atol", "nan"], 2, "--atol"),
    ("export", "artifact", ["export", "{onnx}"], 2, "model.onnx"),
    ("export", "security", ["export", "{evil_pt}"], 2, "evil.pt"),
    ("export", "bound", ["export", "{ckpt}", "--opset", "5"], 2, "--opset"),
    # fp16
    ("fp16", "output", ["fp16", "{onnx}", "-o", "{dir}"], 2, "existing folder"),
    ("fp16", "option", ["fp16", "{onnx}", "--max-disagreement", "150"], 2, "--max-disagreement"),
    ("fp16", "artifact", ["fp16", "{bad_manifest_onnx}"], 2, "std"),
    ("fp16", "security", ["fp16", "{tampered_onnx}"], 2, "sha256"),
    ("fp16", "degenerate", ["fp16", "{wrong_size_onnx}"], 2, "disagrees with the graph"),
    ("int8", "degenerate", ["int8", "{wrong_classes_onnx}"], 2, "output channels"),
    ("sensitivity", "degenerate", ["sensitivity", "{wrong_size_onnx}"], 2, "input_size"),
    # int8
    ("int8", "output", ["int8", "{onnx}", "-o", "{under_file}"], 2, "is a file"),
    ("int8", "option", ["int8", "{onnx}", "--num-images", "0"], 2, "--num-images"),
    ("int8", "artifact", ["int8", "{bad_manifest_onnx}"], 2, "std"),
    ("int8", "security", ["int8", "{tampered_onnx}"], 2, "sha256"),
    # sensitivity
    ("sensitivity", "output", ["sensitivity", "{onnx}", "--json", "{dir}"], 2, "existing folder"),
    ("sensitivity", "option", ["sensitivity", "{onnx}", "--eval-images", "0"], 2, "--eval-images"),
    ("sensitivity", "artifact", ["sensitivity", "{bad_manifest_onnx}"], 2, "std"),
    ("sensitivity", "security", ["sensitivity", "{tampered_onnx}"], 2, "sha256"),
    # report
    ("report", "output", ["report", "{onnx}", "{onnx}", "--data", "{data}", "-o", "{file}"], 2, "existing file"),
    ("report", "option", ["report", "{onnx}", "{onnx}", "--data", "{data}", "--max-miou-drift", "-1"], 2,
     "--max-miou-drift"),
    ("report", "artifact", ["report", "{bad_manifest_onnx}", "{onnx}", "--data", "{data}", "-o", "{w}/r"], 2, "std"),
    ("report", "security", ["report", "{tampered_onnx}", "{onnx}", "--data", "{data}", "-o", "{w}/r"], 2, "sha256"),
    ("report", "degenerate", ["report", "{onnx}", "{onnx}", "--data", "{ignored_data}", "-o", "{elsewhere}/i",
                              "--no-progress"], 2, "no labelled pixel"),
    ("report", "bound", ["report", "{onnx}", "{onnx}", "--data", "{data}", "--bootstrap", "100000000"], 2,
     "--bootstrap"),
    ("report", "degenerate", ["report", "{onnx}", "{tampered_onnx}", "--data", "{data}", "-o", "{elsewhere}/r",
                              "--bootstrap", "0", "--no-progress"], 2, "not run: tampered"),
    # check
    ("check", "output", ["check", "{onnx}", "--json", "{dir}"], 2, "existing folder"),
    ("check", "option", ["check", "{onnx}", "--trt-version", "ten"], 2, "--trt-version"),
    ("check", "artifact", ["check", "{garbage_onnx}"], 2, "garbage.onnx"),
    ("check", "security", ["check", "{traversal_onnx}"], 2, "traversal.onnx"),
    # build
    ("build", "output", ["build", "{onnx}", "-o", "{dir}"], 2, "a_folder"),
    ("build", "option", ["build", "{onnx}", "--workspace", "-5"], 2, "--workspace"),
    ("build", "artifact", ["build", "{bad_manifest_onnx}"], 2, "std"),
    ("build", "security", ["build", "{tampered_onnx}"], 2, "sha256"),
    # inspect
    ("inspect", "output", ["inspect", "{onnx}", "--json", "{dir}"], 2, "existing folder"),
    ("inspect", "option", ["inspect", "{latin_yaml}"], 2, "reads ONNX files"),
    ("inspect", "artifact", ["inspect", "{garbage_onnx}"], 2, "garbage.onnx"),
    ("inspect", "security", ["inspect", "{traversal_onnx}"], 2, "traversal.onnx"),
    # compare
    ("compare", "output", ["compare", "{onnx}", "{onnx}", "--json", "{dir}"], 2, "existing folder"),
    ("compare", "option", ["compare", "{onnx}", "{onnx}", "--max-layer-error", "nan"], 2, "--max-layer-error"),
    ("compare", "artifact", ["compare", "{bad_manifest_onnx}", "{onnx}", "--layers"], 2, "std"),
    ("compare", "security", ["compare", "{onnx}", "{tampered_onnx}", "--layers"], 2, "sha256"),
    # benchmark
    ("benchmark", "output", ["benchmark", "{onnx}", "--json", "{dir}", "--in-process"], 2, "existing folder"),
    ("benchmark", "option", ["benchmark", "{onnx}", "--iters", "0", "--in-process"], 2, "--iters"),
    ("benchmark", "artifact", ["benchmark", "{bad_manifest_onnx}", "--in-process"], 2, "std"),
    ("benchmark", "security", ["benchmark", "{fake_engine}", "--in-process"], 2, "model.engine"),
    # demo
    ("demo", "output", ["demo", "{onnx}", "-s", "{data}/images/val", "--headless", "--save", "{dir}"], 2,
     "a_folder"),
    ("demo", "option", ["demo", "{onnx}", "-s", "{data}/images/val", "--headless", "--alpha", "2"], 2, "--alpha"),
    ("demo", "artifact", ["demo", "{bad_manifest_onnx}", "-s", "{data}/images/val", "--headless"], 2, "std"),
    ("demo", "security", ["demo", "{tampered_onnx}", "-s", "{data}/images/val", "--headless"], 2, "sha256"),
    # file names that are not UTF-8 (segfaults and tracebacks before)
    ("demo", "path", ["demo", "{onnx}", "-s", "{badname_folder}", "--headless"], 2, "\\xff\\xfe.png: the image name"),
    ("demo", "path", ["demo", "{onnx}", "-s", "{data}/images/val", "--headless", "-o", "{w}/{bad}.mp4"], 2,
     "rename it"),
    ("data", "path", ["data", "--clip", "{w}/{bad}.mp4", "--clip-frames", "2", "--clip-side", "64"], 2, "rename it"),
    ("train", "path", ["train", "quickstart", "-o", "{w}/run{bad}", "--data-root", "{data}", "train.iters=1"], 2,
     "rename it"),
    ("report", "path", ["report", "{onnx}", "{onnx}", "--data", "{data}", "-o", "{w}/r{bad}", "--bootstrap", "0"], 2,
     "rename it"),
]


class Evil:
    def __reduce__(self):  # would run a shell command if unpickled
        import os

        return (os.system, ("echo pwned > /tmp/cpnet-battery-pwned",))


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_onnx, tiny_checkpoint, tiny_data):
    root = tmp_path_factory.mktemp("battery")
    p = {"data": str(tiny_data), "ckpt": str(tiny_checkpoint)}
    inputs = root / "inputs"
    inputs.mkdir()
    onnx = inputs / "model.onnx"
    shutil.copy(tiny_onnx, onnx)
    shutil.copy(manifest_path(tiny_onnx), manifest_path(onnx))
    p["onnx"] = str(onnx)
    m = json.loads(manifest_path(onnx).read_text())

    def with_manifest(name, data: bytes, **changes):
        path = inputs / name
        path.write_bytes(data)
        manifest_path(path).write_text(json.dumps({**m, **changes}))
        return str(path)

    raw = onnx.read_bytes()
    p["bad_manifest_onnx"] = with_manifest("badman.onnx", raw, std=[0.0, 57.1, 57.4])
    p["tampered_onnx"] = with_manifest("tampered.onnx", raw[:-64] + bytes(64))
    p["wrong_size_onnx"] = with_manifest("wrongsize.onnx", raw, input_size=[64, 64])
    p["wrong_classes_onnx"] = with_manifest("wrongclasses.onnx", raw, classes=m["classes"][:-1],
                                            palette=m["palette"][:-1])
    garbage = b"\x08\x07garbage" * 40
    p["garbage_onnx"] = with_manifest("garbage.onnx", garbage, sha256=hashlib.sha256(garbage).hexdigest())
    p["traversal_onnx"] = _traversal_model(inputs)
    evil = inputs / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Evil(), "config": {}}))
    p["evil_pt"] = str(evil)
    engine = inputs / "model.engine"
    engine.write_bytes(b"\x00" * 256)  # an engine with no manifest: native code nobody vouched for
    p["fake_engine"] = str(engine)
    latin = inputs / "latin.yaml"
    latin.write_bytes("model: {depth: 18}  # caf\xe9\n".encode("latin-1"))
    p["latin_yaml"] = str(latin)
    ignored = root / "ignored"  # every mask pixel is the ignore label
    shutil.copytree(p["data"], ignored)
    for mask in ignored.glob("masks/*/*.png"):
        cv2.imwrite(str(mask), np.full_like(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED), 255))
    p["ignored_data"] = str(ignored)
    cp1252 = root / "cp1252"  # a classes file saved by a legacy Windows editor
    shutil.copytree(p["data"], cp1252)
    text = (cp1252 / "classes.yaml").read_text(encoding="utf-8").replace("sky", "ciel d\u2019\xe9t\xe9")
    (cp1252 / "classes.yaml").write_bytes(text.encode("cp1252"))
    p["cp1252_data"] = str(cp1252)
    unreadable = root / "unreadable"  # every training image unreadable (--on-bad-data skip skips them all)
    shutil.copytree(p["data"], unreadable)
    for image in unreadable.glob("images/train/*.png"):
        image.write_bytes(b"not an image")
    p["unreadable_data"] = str(unreadable)
    p["bad"] = os.fsdecode(b"\xff\xfe")  # as Linux hands Python a name in a legacy encoding: lone surrogates
    badname = root / "badname"
    badname.mkdir()
    shutil.copy(next(Path(p["data"]).glob("images/val/*.png")), badname / f"{p['bad']}.png")
    p["badname_folder"] = str(badname)
    p["elsewhere"] = str(root / "elsewhere")
    w = root / "work"
    w.mkdir()
    (w / "a_folder").mkdir()
    (w / "a_file").write_text("keep me")
    p.update(w=str(w), dir=str(w / "a_folder"), file=str(w / "a_file"), under_file=str(w / "a_file" / "out.onnx"))
    return p


def _traversal_model(folder: Path) -> str:
    """An ONNX file whose external data points outside its folder (../../etc/passwd)."""
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "4")):
        t.external_data.add(key=k, value=v)
    g = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=[t])
    path = folder / "traversal.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    return str(path)


def _snapshot(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in folder.rglob("*")}


@pytest.mark.parametrize("verb,kind,argv,code,named", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_mistake_is_one_line_with_its_exit_code_and_changes_no_file(verb, kind, argv, code, named, places, capsys):
    assert_one_line_mistake(argv, code, named, places, capsys)


def assert_one_line_mistake(argv, code, named, places, capsys):
    argv = [a.format(**places) for a in argv]
    work = Path(places["w"])
    before = _snapshot(work)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    # "[stage] ..." are log lines, "gate: ..." the drift gate's findings (results, on stderr by design)
    lines = [line for line in err.splitlines() if not line.startswith(("[", "gate: "))]
    assert rc == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert named in lines[0], lines[0]
    assert _snapshot(work) == before, "a failed command created or changed files"
    assert not Path("/tmp/cpnet-battery-pwned").exists()


def test_every_command_has_every_class_that_applies():
    have = {(verb, kind) for verb, kind, *_ in CASES}
    for verb in cli.VERBS:
        kinds = {"output", "option"} | ({"artifact", "security"} if verb not in ("data", "summary") else set())
        if verb == "summary":
            kinds.add("artifact")
        missing = {k for k in kinds if (verb, k) not in have}
        # doctor reports a tampered or foreign artifact as a finding (exit 1, tests/test_doctor.py), not a mistake
        assert not missing or verb not in {c[0] for c in CASES} and verb in ("pipeline", "convert", "doctor"), (
            verb, missing)


def test_engines_open_api_mistakes_are_one_line_user_errors(tiny_onnx, tiny_checkpoint):
    """The library door (engines.open): threads out of range, a 0x0 image, a batch of the wrong size and a
    closed model are each a one-line UserError naming what to do, for every backend here."""
    import numpy as np

    import engines
    from cpnet.runtime.errors import UserError

    with pytest.raises(UserError, match="threads=-1"):
        engines.open(tiny_onnx, threads=-1)
    for path in (tiny_onnx, tiny_checkpoint):
        model = engines.open(path)
        h, w = model.input_size
        with pytest.raises(UserError, match=r"\(h, w, 3\)"):
            model.segment(np.zeros((0, 0, 3), np.uint8))
        with pytest.raises(UserError, match="resize it"):
            model.infer(np.zeros((1, 3, h + 1, w), np.float32))
        model.close()
        with pytest.raises(UserError, match="was closed"):
            model.infer(np.zeros((1, 3, h, w), np.float32))


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="X11 sockets are probed on Linux")
def test_a_demo_window_with_a_stale_display_is_one_line_not_a_qt_abort(places, monkeypatch, capsys):
    """DISPLAY names an X server that is gone (a stale :99 in a shell, a stopped Xvfb): Qt aborted the process
    (SIGABRT) at the first imshow; now one line saying to run with --headless, before any work."""
    n = next(n for n in range(99, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    monkeypatch.setenv("DISPLAY", f":{n}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert_one_line_mistake(["demo", "{onnx}", "-s", "{data}/images/val"], 2, "--headless", places, capsys)


def test_a_report_image_over_the_memory_bound_is_one_line(places, monkeypatch, capsys):
    """One image whose class scores at full size would pass the report's per-image bound (2 GiB: an 8000x8000
    image took 58 s and 4.9 GiB) is refused naming it, before any model runs on it. The bound is lowered to
    100 kB so that the tiny data set's 48x48 images (8 classes: 147 kB of scores) stand for such an image."""
    from engines.report import options

    monkeypatch.setattr(options, "MAX_IMAGE_BYTES", 100_000)
    assert_one_line_mistake(["report", "{onnx}", "{onnx}", "--data", "{data}", "-o", "{w}/r", "--bootstrap", "0",
                             "--no-progress"], 2, "resize such images first", places, capsys)
