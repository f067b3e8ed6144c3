"""The accuracy-drift report (engines/report/report.py, engines/report/pages.py): gate, intervals, per-class IoU,
not-run rows, and the HTML as a browser renders it."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpnet.cli import main as cpnet
from cpnet.runtime import read_manifest, sha256_file, write_manifest
from cpnet.runtime.backend import Backend
from engines.report import measure, pages, statistics, verdict
from engines.report import report as rp
from engines.report import rows as report_rows

COMMON = ["--no-progress", "--threads", "1", "--bootstrap", "200"]


def copy_onnx(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.name + ".json"), dst.with_name(dst.name + ".json"))
    return dst


def damage_onnx(src: Path, dst: Path, cls: int) -> Path:
    """A copy whose classifier always favours class ``cls`` (its bias raised by 1000), with a manifest to match."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    manifest = read_manifest(src)
    n_classes = len(manifest["classes"])
    inits = {i.name: i for i in model.graph.initializer}
    patched = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[1] in inits and node.input[2] in inits:
            if numpy_helper.to_array(inits[node.input[1]]).shape[0] == n_classes:
                bias = numpy_helper.to_array(inits[node.input[2]]).copy()
                bias[cls] += 1000.0
                inits[node.input[2]].CopyFrom(numpy_helper.from_array(bias, node.input[2]))
                patched += 1
    assert patched, "no classifier conv found to damage"
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    manifest.pop("schema")
    manifest["sha256"] = sha256_file(dst)  # a consistent file: it opens, and only its accuracy is wrong
    write_manifest(dst, manifest)
    return dst


@pytest.fixture(scope="module")
def artifacts(tiny_onnx, tiny_data, tmp_path_factory):
    """The reference (tiny FP32 ONNX), an identical copy, and a damaged copy that predicts the rarest class."""
    from cpnet.data import FolderDataset

    folder = tmp_path_factory.mktemp("report_models")
    ds = FolderDataset(tiny_data, "val")
    pixels = sum(np.bincount(ds.load(i)[1].ravel(), minlength=256)[: ds.num_classes] for i in range(len(ds)))
    return {"reference": copy_onnx(tiny_onnx, folder / "model.onnx"),
            "identical": copy_onnx(tiny_onnx, folder / "same" / "identical.onnx"),
            "damaged": damage_onnx(tiny_onnx, folder / "damaged.onnx", int(np.argmin(pixels))),
            "data": tiny_data}


@pytest.fixture(scope="module")
def failing_report(artifacts, tmp_path_factory):
    """cpnet report REF identical damaged: (exit code, stderr, report folder)."""
    out = tmp_path_factory.mktemp("report_fail")
    a = artifacts
    proc_err = []

    class Capture:
        def write(self, s):
            proc_err.append(s)

        def flush(self):
            pass

    old = sys.stderr
    sys.stderr = Capture()
    try:
        code = cpnet(["report", str(a["reference"]), str(a["identical"]), str(a["damaged"]), "--data", str(a["data"]),
                      "-o", str(out), "--backend", "onnxruntime", *COMMON])  # one row per file: the gate's test
    finally:
        sys.stderr = old
    return code, "".join(proc_err), out


def openvino_precisions() -> list[str]:
    """The OpenVINO rows the report adds for an ONNX file here (none without OpenVINO)."""
    from engines.backends import backends_for, row_options

    return [o["precision"] for o in row_options("openvino")] if "openvino" in backends_for("m.onnx") else []


def load(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_gate_trips_on_a_damaged_variant_and_names_it(failing_report):
    code, err, out = failing_report
    assert code == 1
    rep = load(out)
    rows = {r["name"]: r for r in rep["rows"]}
    ref = rows["model.onnx"]
    assert ref["mIoU"] > 1.0  # the damaged file can only lose against a reference that gets something right
    assert rows["damaged.onnx"]["status"] == "fail"
    assert rows["damaged.onnx"]["miou_drift"] < -0.5
    assert rows["identical.onnx"]["status"] == "pass"
    gate_lines = [ln for ln in err.splitlines() if ln.startswith("gate: ")]
    assert gate_lines and all("damaged.onnx" in ln for ln in gate_lines), err
    assert "mIoU drift -" in gate_lines[0] and "fp32 limit" in gate_lines[0]
    assert err.strip().splitlines()[-1].startswith("error: drift gate failed")
    # the report is written even when the gate fails, and the recommendation skips the offender
    for name in ("report.html", "report.md", "report.json", "drift_per_class.png", "latency_vs_miou.png",
                 "confusion_damaged.onnx.png", "worst_damaged.onnx.png"):
        assert (out / name).is_file(), name
    assert rep["recommendation"]["name"] != "damaged.onnx"
    assert "damaged.onnx" in rep["recommendation"]["line"]  # named as not eligible
    assert rep["kind"] == "report" and rep["schema"] == 1
    worst = rows["damaged.onnx"]["worst"]
    assert worst and worst[0]["disagreement"] >= worst[-1]["disagreement"] > 0
    assert Path(worst[0]["file"]).is_file()


def test_identical_variant_has_a_zero_interval_and_passes(failing_report):
    _, _, out = failing_report
    rows = {r["name"]: r for r in load(out)["rows"]}
    same = rows["identical.onnx"]
    assert same["miou_drift"] == 0.0
    assert same["miou_drift_ci"] == [0.0, 0.0]
    assert all(ci in (None, [0.0, 0.0]) for ci in same["class_drift_ci"].values())
    assert any(ci == [0.0, 0.0] for ci in same["class_drift_ci"].values())
    assert same["agreement"] == 100.0
    assert not (out / "worst_identical.onnx.png").exists()  # nothing differs, nothing to show
    # a different variant's interval is not degenerate and holds its point estimate
    bad = rows["damaged.onnx"]
    lo, hi = bad["miou_drift_ci"]
    assert lo < hi and lo <= bad["miou_drift"] <= hi


def test_gate_passes_on_a_run_dir_and_its_exported_files(artifacts, tiny_data, make_tiny_checkpoint, tmp_path, capsys):
    """Only the run dir given: its checkpoint is the reference and its export/ files the variants."""
    run = tmp_path / "run"
    make_tiny_checkpoint(run)
    copy_onnx(artifacts["reference"], run / "export" / "model.onnx")
    # FP32 ONNX against PyTorch: parity-checked at export; 1 point leaves room for a pixel flipped by rounding
    code = cpnet(["report", str(run), "--max-miou-drift", "1", *COMMON])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert printed.startswith("Recommended on this machine: ")
    assert "| artifact |" in printed
    rep = load(run / "report")
    openvino = [f"model.onnx@openvino[precision={p}]" for p in openvino_precisions()]
    assert [r["name"] for r in rep["rows"]] == ["run/best.pt", "model.onnx", *openvino]
    assert [r["backend"] for r in rep["rows"]] == ["torch", "onnxruntime"] + ["openvino"] * len(openvino)
    assert [r["key"] for r in rep["rows"][:2]] == ["run/best.pt@torch", "model.onnx@onnxruntime"]
    assert rep["recommendation"]["key"] in [r["key"] for r in rep["rows"]]
    assert rep["gate"]["passed"] is True
    assert rep["machine"]["cores"] >= 1 and rep["machine_line"] in (run / "report" / "report.md").read_text()
    assert all(r["latency_ms"] > 0 and r["size_bytes"] > 0 for r in rep["rows"])
    assert rep["rows"][1]["parent_sha256"] and rep["rows"][1]["precision"] == "fp32"


def test_a_variant_that_cannot_be_opened_is_a_not_run_row(artifacts, tmp_path, capsys):
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"not an engine")
    no_manifest = tmp_path / "orphan.onnx"
    shutil.copy(artifacts["reference"], no_manifest)
    out = tmp_path / "rep"
    code = cpnet(["report", str(artifacts["reference"]), str(artifacts["identical"]), str(engine), str(no_manifest),
                  "--data", str(artifacts["data"]), "-o", str(out), *COMMON])
    err = capsys.readouterr().err
    assert code == 2, err  # files given that cannot be opened: a user mistake (2), not a missing dependency (3)
    rows = {r["name"]: r for r in load(out)["rows"]}
    assert rows["model.int8.engine"]["status"] == "not run"
    assert rows["orphan.onnx"]["status"] == "not run" and "manifest" in rows["orphan.onnx"]["reason"]
    assert rows["identical.onnx"]["status"] == "pass"
    assert "gate: model.int8.engine: not run" in err
    # an output that cannot be a folder is refused before any work, and nothing is written
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert cpnet(["report", str(artifacts["reference"]), str(artifacts["identical"]), "--data", str(artifacts["data"]),
                  "-o", str(taken), *COMMON]) == 2
    assert "existing file" in capsys.readouterr().err and taken.read_text() == "x"
    assert "NOT RUN" in (out / "report.md").read_text()
    assert load(out)["gate"]["passed"] is False


def test_slide_and_multi_scale_modes_run_through_predict_probs(artifacts, tmp_path, capsys):
    out = tmp_path / "rep"
    code = cpnet(["report", str(artifacts["reference"]), str(artifacts["identical"]), "--data", str(artifacts["data"]),
                  "--mode", "slide", "--scales", "0.75,1", "--flip", "--limit", "2", "--worst", "0", "-o", str(out),
                  *COMMON])
    assert code == 0, capsys.readouterr().err
    rep = load(out)
    assert rep["evaluation"]["mode"] == "slide" and rep["evaluation"]["flip"] is True
    assert rep["data"]["images"] == 2
    assert rep["rows"][1]["miou_drift_ci"] == [0.0, 0.0]


def test_a_bad_image_is_skipped_for_every_artifact_and_named(artifacts, tmp_path, capsys):
    data = shutil.copytree(artifacts["data"], tmp_path / "data")
    victim = sorted((data / "images" / "val").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:100])  # cut short
    out = tmp_path / "rep"
    code = cpnet(["report", str(artifacts["reference"]), str(artifacts["identical"]), "--data", str(data),
                  "--limit", "2", "-o", str(out), *COMMON])
    assert code == 0, capsys.readouterr().err
    rep = load(out)
    assert rep["data"]["images"] == 2 and len(rep["data"]["skipped"]) == 1
    assert victim.name in rep["data"]["skipped"][0]
    assert victim.name not in " ".join(rep["data"]["files"])


# --------------------------------------------------------------------------- per-class IoU, brute force


class FakeDataset:
    """Label maps given in memory; each image's pixels hold its index, so the fake model knows which it sees."""

    ignore_index = 255

    def __init__(self, labels: list[np.ndarray], num_classes: int):
        self.labels = labels
        self.classes = [f"c{i}" for i in range(num_classes)]
        self.palette = [(i * 40, 255 - i * 40, 100) for i in range(num_classes)]

    def __len__(self):
        return len(self.labels)

    def load(self, i):
        h, w = self.labels[i].shape
        return np.full((h, w, 3), i, np.uint8), self.labels[i]

    def sample_path(self, i):
        return Path(f"img_{i}.png")


class FakeModel(Backend):
    """Returns one-hot logits of fixed label maps: a backend whose predictions are known exactly."""

    name = "fake"

    def __init__(self, preds: list[np.ndarray], num_classes: int):
        h, w = preds[0].shape
        super().__init__("fake", {"input_size": [h, w], "mean": [0, 0, 0], "std": [1, 1, 1],
                                  "classes": [f"c{i}" for i in range(num_classes)]})
        self.preds, self.c = preds, num_classes

    def infer(self, batch):
        pred = self.preds[int(round(float(np.asarray(batch)[0, 0, 0, 0])))]
        return np.eye(self.c, dtype=np.float32)[pred].transpose(2, 0, 1)[None]


def brute_force_iou(preds, labels, c, ignore=255):
    out = []
    for k in range(c):
        tp = fp = fn = 0
        for p, g in zip(preds, labels):
            for y in range(g.shape[0]):
                for x in range(g.shape[1]):
                    if g[y, x] == ignore:
                        continue
                    tp += p[y, x] == k and g[y, x] == k
                    fp += p[y, x] == k and g[y, x] != k
                    fn += p[y, x] != k and g[y, x] == k
        out.append(None if tp + fp + fn == 0 else 100.0 * tp / (tp + fp + fn))
    return out


def test_per_class_iou_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    c, n = 4, 5
    labels = [rng.integers(0, c - 1, (6, 7)).astype(np.uint8) for _ in range(n)]  # class 3 never in ground truth
    for g in labels:
        g[rng.random(g.shape) < 0.15] = 255
    ref_preds = [np.where(rng.random(g.shape) < 0.7, np.minimum(g, c - 1), rng.integers(0, c, g.shape)).astype(np.uint8)
                 for g in labels]
    var_preds = [np.where(rng.random(g.shape) < 0.9, p, rng.integers(0, c, p.shape)).astype(np.uint8) for p in ref_preds]
    ds = FakeDataset(labels, c)
    opts = rp.ReportOptions(warmup=0, worst=2)
    idx = list(range(n))
    ref_pass, packed = measure.run_pass(FakeModel(ref_preds, c), "ref", ds, idx, opts, None, False, keep_predictions=True)
    var_pass, _ = measure.run_pass(FakeModel(var_preds, c), "var", ds, idx, opts, packed, False)

    for p, preds in ((ref_pass, ref_preds), (var_pass, var_preds)):
        brute = brute_force_iou(preds, labels, c)
        got = rp._metrics(p, ds.classes)["per_class"]
        for k in range(c):
            assert (got[f"c{k}"] is None) == (brute[k] is None)
            if brute[k] is not None:
                assert got[f"c{k}"] == pytest.approx(brute[k], abs=1e-9)
        # the bootstrap's vectorised IoU over all images once equals the confusion-matrix one
        miou, iou = statistics.bootstrap_stats(p.counts, np.ones((1, n)))
        present = [b for b in brute if b is not None]
        assert miou[0] == pytest.approx(np.mean(present), abs=1e-9)
        np.testing.assert_allclose(iou[0], [np.nan if b is None else b for b in brute], atol=1e-9)

    # agreement and the worst images against the reference, by hand
    differ = [float((a != b).mean()) for a, b in zip(ref_preds, var_preds)]
    assert var_pass.same.sum() == sum(int((a == b).sum()) for a, b in zip(ref_preds, var_preds))
    assert [k for _, k, _ in var_pass.worst] == sorted(range(n), key=lambda k: (-differ[k], k))[:2]
    assert [d for d, _, _ in var_pass.worst] == pytest.approx(sorted(differ, reverse=True)[:2])
    assert np.array_equal(pages.unpack_labels(packed[3]), ref_preds[3])


def test_bootstrap_is_paired_and_degenerate_for_equal_counts():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 50, (12, 3, 5))
    counts[:, 0] = np.minimum(counts[:, 0], np.minimum(counts[:, 1], counts[:, 2]))  # tp <= gt, pred
    w = statistics.resample_weights(12, 300, seed=0)
    assert w.shape == (300, 12) and np.all(w.sum(1) == 12)
    a, ia = statistics.bootstrap_stats(counts, w)
    b, ib = statistics.bootstrap_stats(counts.copy(), w)
    assert statistics.interval(b - a, 0.95) == [0.0, 0.0]
    assert statistics.interval(np.full(4, np.nan), 0.95) is None
    lo, hi = statistics.interval(np.arange(101.0), 0.95)
    assert (lo, hi) == pytest.approx((2.5, 97.5))


def test_limits_by_precision_and_override():
    assert rp.ReportOptions().miou_limit("fp16") == 0.1
    assert rp.ReportOptions().miou_limit("int8") == 0.5
    assert rp.ReportOptions().miou_limit("fp32") == 0.01
    assert rp.ReportOptions(max_miou_drift=2.0).miou_limit("int8") == 2.0
    assert rp.ReportOptions().eval_mode == "deploy"
    assert rp.ReportOptions(flip=True).eval_mode == "whole"
    assert rp.ReportOptions(mode="slide").eval_mode == "slide"


def test_python_m_form_and_front_door_list_the_verb():
    out = subprocess.run([sys.executable, "-m", "engines.report.report", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--max-miou-drift POINTS" in out.stdout and "--max-class-drift" in out.stdout
    assert "cpnet report runs/quickstart" in out.stdout
    assert out.stdout.startswith("usage: python -m engines.report.report ")
    assert cpnet(["report", "/no/such/run"]) == 2


# --------------------------------------------------------------------------- the page in a browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var res = {
    rows: document.querySelectorAll("table#headline tbody tr").length,
    classes: document.querySelectorAll("table#classes tbody tr").length,
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    files: imgs.map(function (i) { return i.getAttribute("data-file"); }),
    external: Array.prototype.slice.call(document.querySelectorAll("[src]")).filter(function (e) {
      return !/^data:/.test(e.getAttribute("src")); }).length
  };
  var pre = document.createElement("pre");
  pre.id = "cpnet-check";
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_headless_chromium(failing_report, tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    _, _, out = failing_report
    page = out / "report.html"
    flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]

    shot = out / "report.screenshot.png"
    r = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    # the same page plus a script that writes what the browser loaded into the DOM, read back with --dump-dom
    probe = out / "report.check.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    r = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    probe.unlink()
    m = re.search(r'<pre id="cpnet-check">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no check result in the DOM (rc {r.returncode}): {r.stderr[-2000:]}"
    res = json.loads(html.unescape(m.group(1)))
    rep = load(out)
    pngs = sorted(p.name for p in out.glob("*.png") if p != shot)
    assert res["rows"] == len(rep["rows"]) == 3
    assert res["classes"] == len(rep["classes"])
    assert res["images"] == len(pngs) and sorted(res["files"]) == pngs
    assert res["loaded"] == res["images"], res
    assert res["external"] == 0  # self-contained: every image is a data: URI


def test_machine_line_names_cpu_simd_cores_gpu_and_load():
    from cpnet.runtime.machine import busy, machine_info, machine_line

    info = {"cpu": "Some CPU", "arch": "x86_64", "cores": 2, "usable_cores": 2, "simd": ["sse4_2", "avx2", "fma"],
            "gpus": [], "load_average": [0.2, 0.1, 0.1]}
    assert machine_line(info) == "Some CPU, x86_64, 2 cores; SIMD avx2 fma no VNNI; no GPU; load average 0.2"
    vnni = machine_line({**info, "simd": ["avx2", "avx512f", "avx512_vnni"], "gpus": ["NVIDIA H200"]})
    assert "avx512f avx512_vnni; NVIDIA H200" in vnni and "no VNNI" not in vnni
    assert not busy(info) and busy({**info, "load_average": [6.0, 5.0, 5.0]})
    here = machine_info()
    assert here["cores"] >= 1 and here["cpu"] and machine_line(here)
    gemm = machine_line({**info, "gemm_gflops": 142.4, "gemm": "torch.matmul 1024x1024, 2 threads"})
    assert gemm.endswith("no GPU; FP32 GEMM 142 GFLOP/s (torch.matmul 1024x1024, 2 threads); load average 0.2")


def test_gemm_rate_with_torch_and_without(monkeypatch):
    """The GEMM rate that goes with every figure: torch.matmul on the given threads, numpy.matmul on a deploy
    install without torch."""
    import sys

    import torch

    from cpnet.runtime.machine import gemm_gflops, machine_info

    threads = torch.get_num_threads()
    rate, what = gemm_gflops(threads=1, n=256, seconds=0.05)
    assert rate > 0.1 and what == "torch.matmul 256x256, 1 threads"
    assert torch.get_num_threads() == threads  # restored
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    rate, what = gemm_gflops(n=256, seconds=0.05)
    assert rate > 0.1 and what.startswith("numpy.matmul")
    info = machine_info(gemm=True)
    assert info["gemm_gflops"] > 0 and info["gemm"].startswith("numpy.matmul")


# --------------------------------------------------------------------------- rows, keys and the recommendation

from engines.backends.onnxruntime_backend import OnnxModel  # noqa: E402


class _Timed(OnnxModel):
    """The onnxruntime backend made slower by ``DELAY_S`` per call; ``WRONG`` shifts every pixel's class."""

    DELAY_S = 0.0
    WRONG = False

    def __init__(self, path, **options):
        super().__init__(path, **options)

    def infer(self, batch):
        import time

        time.sleep(self.DELAY_S)
        logits = super().infer(batch)
        return np.roll(logits, 1, axis=1) if self.WRONG else logits


class FastWrong(_Timed):
    name, WRONG = "fastwrong", True


class Quick(_Timed):
    name, DELAY_S = "quick", 0.01


class Slow(_Timed):
    name, DELAY_S = "slow", 0.05


def test_recommendation_is_the_fastest_passing_row_never_a_failing_one(artifacts, tmp_path, monkeypatch, capsys):
    """Three fake backends run the same file: the fastest predicts wrongly (fails the gate), then a quick and a
    slow one that predict as the reference; the quick one is recommended, by its row key."""
    import engines.backends as registry

    for name, cls in (("fastwrong", "FastWrong"), ("quick", "Quick"), ("slow", "Slow")):
        monkeypatch.setitem(registry.BACKENDS, name, ("test_report", cls))
    monkeypatch.setattr(registry, "backends_for", lambda path: ["slow", "fastwrong", "quick"])
    monkeypatch.setattr(registry, "backend_for", lambda path: "slow")  # the reference runs slow too
    out = tmp_path / "rep"
    code = cpnet(["report", str(artifacts["reference"]), str(artifacts["identical"]), "--data", str(artifacts["data"]),
                  "-o", str(out), "--worst", "0", *COMMON])
    # the wrong one fails the drift limit, on a runtime the report added on its own: shown, not recommended, and
    # not the command's failure (exit_code below: it is when the user asked for that backend)
    assert code == 0, capsys.readouterr().err
    rep = load(out)
    assert rep["gate"]["not_gated"] == ["identical.onnx@fastwrong", "identical.onnx@quick"]
    rows = {r["key"]: r for r in rep["rows"]}
    assert set(rows) == {"model.onnx@slow", "identical.onnx@slow", "identical.onnx@fastwrong",
                         "identical.onnx@quick"}
    assert rows["identical.onnx@fastwrong"]["status"] == "fail"
    assert rows["identical.onnx@fastwrong"]["latency_ms"] < rows["identical.onnx@quick"]["latency_ms"]
    assert rows["identical.onnx@quick"]["latency_ms"] < rows["identical.onnx@slow"]["latency_ms"]
    rec = rep["recommendation"]
    assert rec["key"] == "identical.onnx@quick" and rec["backend"] == "quick"
    assert "identical.onnx on quick" in rec["line"] and f"over {rep['data']['images']} repetitions" in rec["line"]
    assert "identical.onnx@fastwrong" in rec["line"]  # named as not eligible


def _row(name, ms, iqr, drift=0.0, status="pass", role="variant"):
    return {"name": name, "key": name, "role": role, "status": status, "latency_ms": ms, "latency_iqr_ms": iqr,
            "latency_p25_ms": ms - iqr / 2, "latency_p75_ms": ms + iqr / 2, "miou_drift": drift,
            "precision": "int8", "limit": 0.5, "backend": "openvino", "latency_images": 20}


def test_ties_are_the_measured_spread_not_a_fixed_factor():
    ref = _row("ref", 10.0, 0.5, role="reference", status="reference")
    # 2.0 and 2.3 ms with spreads of 0.4 ms: their interquartile ranges overlap, a tie settled by the smaller drift
    rec = verdict.recommend([ref, _row("a", 2.0, 0.4, drift=-0.3), _row("b", 2.3, 0.4, drift=-0.1)], "m")
    assert rec["key"] == "b" and rec["ties"] == ["a"] and rec["spread_ms"] == 0.4
    # the same medians with spreads of 0.05 ms: no tie, the fastest wins (a fixed 5% would have tied 2.0 and 2.05)
    rec = verdict.recommend([ref, _row("a", 2.0, 0.05, drift=-0.3), _row("b", 2.3, 0.05, drift=-0.1)], "m")
    assert rec["key"] == "a" and rec["ties"] == []
    # a slow row that is also noisy (the reference on a busy machine) does not tie with a fast, steady one
    noisy_ref = _row("ref", 500.0, 480.0, role="reference", status="reference")
    rec = verdict.recommend([noisy_ref, _row("a", 34.0, 3.0, drift=0.2)], "m")
    assert rec["key"] == "a" and rec["ties"] == []
    # a failing row is never recommended, however fast
    rec = verdict.recommend([ref, _row("x", 0.1, 0.0, drift=-9, status="fail"), _row("b", 2.3, 0.1)], "m")
    assert rec["key"] == "b"


def test_row_keys_read_back_and_give_the_flags():
    from engines.backends.row_key import RowKey

    key = RowKey("model.int8.onnx", "openvino", {"precision": "bf16", "threads": 2})
    assert str(key) == "model.int8.onnx@openvino[precision=bf16,threads=2]"
    assert RowKey.parse(str(key)) == key and RowKey.parse("model.onnx@onnxruntime") == RowKey("model.onnx",
                                                                                               "onnxruntime")
    assert key.open_options() == {"precision": "bf16", "threads": 2}
    assert key.flags() == ["--backend", "openvino", "--backend-options", "precision=bf16,threads=2"]
    with pytest.raises(rp.UserError, match="not a row key"):
        RowKey.parse("model.onnx")


def test_openvino_bf16_on_an_fp32_file_is_gated_as_bf16():
    assert report_rows.effective_precision("fp32", "bf16") == "bf16"
    assert report_rows.effective_precision("fp32", "f32") == "fp32"
    assert report_rows.effective_precision("int8", "bf16") == "int8"  # the INT8 file's limit stays INT8's
    assert report_rows.effective_precision("fp16", "f32") == "fp16"


def test_a_row_the_user_asked_for_fails_the_command_one_the_report_added_does_not():
    failing = {"name": "m.int8.onnx@openvino", "role": "variant", "status": "fail"}
    asked = {"gate": {"offenders": ["m.int8.onnx@openvino: mIoU drift ..."], "not_run": []},
             "rows": [{**failing, "gated": True}]}
    assert verdict.exit_code(asked) == 1
    added = {"gate": {"offenders": [], "not_run": []}, "rows": [{**failing, "gated": False}]}
    assert verdict.exit_code(added) == 0
