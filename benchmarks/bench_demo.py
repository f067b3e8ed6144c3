"""Benchmark: the live demo's end-to-end FPS against the same model's inference-only FPS, on the CPU.

    python benchmarks/bench_demo.py                                  # edge_r18_256x512, INT8 cpu flavour
    python benchmarks/bench_demo.py --configs quickstart edge_r18_256x512 --seconds 30
    python benchmarks/bench_demo.py --backend openvino --backend-options precision=bf16   # one row only

Per config: a model with RANDOM weights (speed does not depend on the weight
values) is exported (``cpnet export``, parity on random inputs) and quantized to
the ``cpu`` INT8 flavour (``cpnet int8 --flavour cpu``), calibrated on 32 frames
of the clip. The clip is generated: ``--seconds`` of 640x480 at 30 fps (moving
shapes over a textured background), written as mp4 (mp4v).

- Rows: the INT8 cpu file on ONNX Runtime and, where OpenVINO is installed, on OpenVINO with the
  lowest precision hint this CPU runs (bf16 with AMX or AVX512_BF16, else f32), each keyed as the drift
  report keys it (``model.int8-cpu.onnx@openvino[precision=bf16]``); ``--backend`` and
  ``--backend-options`` (the flags cpnet demo takes) time one row instead, e.g. the one the report
  recommends.
- Inference only: ``engines.open(MODEL, backend, threads=1, **options).infer`` on preprocessed frames of
  the clip, back to back; FPS = 1 / mean latency (after a warm-up). One ONNX Runtime intra-op thread
  and one inter-op thread; OpenVINO ``INFERENCE_NUM_THREADS`` 1.
- End to end: ``cpnet demo MODEL --source clip --headless --no-drop --threads 1``
  (every frame of the clip: read and decode, preprocess, infer, argmax, colour,
  legend and HUD; the same threads, the same backend and options), with and without ``-o`` (mp4
  encoding in the output thread); FPS = the demo's own mean FPS ((frames - 1) /
  time from the first frame out to the last).
- Threads: ONNX Runtime 1 intra-op + 1 inter-op; the demo's capture, inference
  and drawing threads plus the main (writer) thread, on the machine's cores
  (2 on the project's machine: one for inference, one for the rest).

Target: end-to-end FPS at least 90% of inference-only FPS for edge_r18_256x512.
Inference-only is timed before and after the demo runs and the mean taken; the
1-minute load average is printed (a shared machine's other work shows there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET = 0.90
TARGET_CONFIGS = ("edge_r18_256x512",)


def load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def make_clip(path: Path, seconds: float, size=(640, 480), fps: float = 30.0) -> Path:
    """A generated clip: a textured background (a slow pan) and shapes that move and change colour."""
    import cv2
    import numpy as np

    if path.exists():
        return path
    w, h = size
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (h, 2 * w, 3), dtype=np.uint8), (0, 0), 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(int(round(seconds * fps))):
        x0 = (2 * i) % w
        frame = np.ascontiguousarray(texture[:, x0:x0 + w])
        frame[: h // 3] = (frame[: h // 3] // 2 + np.array([110, 80, 40], np.uint8))  # a sky band
        cx = int((0.5 + 0.4 * np.sin(i / 40)) * w)
        cv2.rectangle(frame, (cx - 80, h // 2), (cx + 80, h // 2 + 90), (30, 30, 200), -1)
        cv2.circle(frame, (w - cx, h // 3 + 40), 50, (20, 190, 230), -1)
        cv2.rectangle(frame, (0, h - 60), (w, h), (70, 70, 70), -1)
        writer.write(frame)
    writer.release()
    os.replace(tmp, path)
    return path


def calibration_frames(clip: Path, out: Path, num: int = 32) -> Path:
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    if len(list(out.glob("*.png"))) >= num:
        return out
    cap = cv2.VideoCapture(str(clip))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    step = max(1, total // num)
    i = n = 0
    while n < num:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            cv2.imwrite(str(out / f"frame_{n:03d}.png"), frame)
            n += 1
        i += 1
    cap.release()
    return out


def make_artifacts(config: str, work: Path, calib: Path, log=print) -> Path:
    """model.int8-cpu.onnx of a random-weight model of ``config`` (made once, then reused)."""
    out = work / config
    int8 = out / "model.int8-cpu.onnx"
    if int8.exists():
        return int8
    import torch

    from cpnet.checkpoint import save_checkpoint
    from cpnet.config import load_config
    from cpnet.export import ExportOptions, export_checkpoint
    from cpnet.models import CPNet
    from cpnet.runtime.options import RuntimeOptions

    cfg = load_config(config)
    torch.manual_seed(0)
    model = CPNet(cfg.model).eval()
    n = cfg.model.num_classes
    classes = [f"class{i}" for i in range(n)]
    palette = [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(n)]
    ckpt = out / "random.pt"
    out.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "iter": 0, "classes": classes, "palette": palette}
    save_checkpoint(ckpt, state, cfg, classes, palette)
    t = time.perf_counter()
    fp32, _ = export_checkpoint(ckpt, out / "model.onnx", ExportOptions(parity="random", num_parity_images=1),
                                RuntimeOptions(threads=1))
    log(f"  {config}: export {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cpnet", "int8", str(fp32), "--flavour", "cpu", "--calib-data", str(calib),
                    "--num-images", "32", "--eval-images", "2", "--no-progress", "-q", "-o", str(int8)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    log(f"  {config}: int8 (cpu flavour) {time.perf_counter() - t:.1f} s")
    return int8


def rows_to_time(backend: str | None, options: dict) -> list[tuple[str, dict]]:
    """(backend, options) of each row: the one asked for, else ONNX Runtime and OpenVINO's lowest hint here."""
    if backend:
        return [(backend, options)]
    from engines.backends.openvino_backend import installed, precisions_here

    rows = [("onnxruntime", {})]
    if installed():
        hints = precisions_here("CPU")
        rows.append(("openvino", {"precision": "bf16" if "bf16" in hints else hints[-1]}))
    return rows


def inference_only(model_path: Path, clip: Path, backend: str = "onnxruntime", options: dict | None = None,
                   warmup: int = 10, runs: int = 100) -> dict:
    """FPS of the backend's infer alone (one thread) on preprocessed frames of the clip."""
    import cv2

    import engines
    from cpnet.runtime.preprocess import preprocess_bgr

    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < 20:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    with engines.open(model_path, backend=backend, threads=1, **(options or {})) as m:
        xs = [preprocess_bgr(f, m.manifest) for f in frames]
        for i in range(warmup):
            m.infer(xs[i % len(xs)])
        times = []
        for i in range(runs):
            t = time.perf_counter()
            m.infer(xs[i % len(xs)])
            times.append(time.perf_counter() - t)
    mean = statistics.fmean(times)
    return {"fps": 1.0 / mean, "mean_ms": 1000 * mean, "p50_ms": 1000 * statistics.median(times)}


def end_to_end(model_path: Path, clip: Path, save: Path | None, flags: list[str] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "summary.json"
        argv = [sys.executable, "-m", "cpnet", "demo", str(model_path), *flags, "--source", str(clip), "--headless",
                "--no-drop", "--threads", "1", "--json", str(js), "-q"]
        if save is not None:
            argv += ["-o", str(save), "--overwrite"]  # the benchmark's own recording, made again per row
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return json.loads(js.read_text())


def bench_config(config: str, work: Path, clip: Path, backend: str = "onnxruntime", options: dict | None = None,
                 log=print) -> dict:
    from engines.backends.row_key import RowKey

    model_path = make_artifacts(config, work, calibration_frames(clip, work / "calib"), log)
    key = RowKey(model_path.name, backend, options or {})
    before = inference_only(model_path, clip, backend, options)
    plain = end_to_end(model_path, clip, None, key.flags())
    saved = end_to_end(model_path, clip, work / config / f"demo_{backend}.mp4", key.flags())
    after = inference_only(model_path, clip, backend, options)
    infer_fps = (before["fps"] + after["fps"]) / 2
    return {"config": config, "key": str(key), "model": str(model_path), "infer_fps": infer_fps,
            "infer_fps_runs": [before, after], "demo": plain, "demo_saved": saved,
            "ratio": plain["mean_fps"] / infer_fps, "ratio_saved": saved["mean_fps"] / infer_fps}


def print_rows(rows: list[dict]) -> bool:
    ok = True
    print(f"{'config':<17} {'row':<46} {'infer-only FPS':>14} {'demo FPS':>9} {'ratio':>6} {'demo+save FPS':>14} "
          f"{'ratio':>6}  demo ms per frame (capture / pre / infer / post / draw / output)")
    for r in rows:
        ms = r["demo"]["ms_per_stage"]
        stages = " / ".join(f"{ms[k]:.1f}" for k in ("capture", "preprocess", "infer", "postprocess", "draw", "output"))
        print(f"{r['config']:<17} {r['key']:<46} {r['infer_fps']:>14.1f} {r['demo']['mean_fps']:>9.1f} {r['ratio']:>6.0%} "
              f"{r['demo_saved']['mean_fps']:>14.1f} {r['ratio_saved']:>6.0%}  {stages}")
        if r["config"] in TARGET_CONFIGS:
            ok &= r["ratio"] >= TARGET
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(TARGET_CONFIGS), help="named configs (default edge_r18_256x512)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the generated 640x480 clip (default 30)")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_demo"), help="where models and the clip are kept")
    p.add_argument("--json", help="also write the figures here")
    from cpnet.cli import args as cli_args
    from engines.backends import BACKENDS

    cli_args.add_backend(p, tuple(BACKENDS), options_help="openvino: precision=f32|bf16|f16")
    args = p.parse_args(argv)
    from cpnet.runtime.machine import machine_line

    work = Path(args.work)
    clip = make_clip(work / f"clip_{int(args.seconds)}s_640x480.mp4", args.seconds)
    print(f"machine: {machine_line()}")
    print(f"clip: {clip} ({args.seconds:g} s, 640x480, 30 fps); ONNX Runtime: 1 intra-op + 1 inter-op thread, "
          f"OpenVINO 1 inference thread; demo: capture, inference, drawing + main (writer) threads")
    load0 = load_avg()
    rows = [bench_config(c, work, clip, backend, options) for c in args.configs
            for backend, options in rows_to_time(args.backend, cli_args.backend_options(args))]
    load1 = load_avg()
    print(f"1-minute load average: {load0:.2f} before, {load1:.2f} after")
    ok = print_rows(rows)
    measured = any(r["config"] in TARGET_CONFIGS for r in rows)
    print(f"target: demo FPS >= {TARGET:.0%} of inference-only FPS on {', '.join(TARGET_CONFIGS)}: "
          f"{('met' if ok else 'NOT met') if measured else 'not measured in this run (no such config)'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load": [load0, load1]}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
