"""Latency, throughput and memory of CPNet artifacts, one row per artifact, on the same input.

    python -m engines.benchmark runs/quickstart model.onnx model.int8.onnx model.fp16.engine \
        [--iters 50] [--warmup 5] [--batch 1] [--threads T] [--json bench.json] \
        [--backend-options device=cuda,precision=fp16,channels_last=1] [--providers cuda] [--image img.png]

- Latency: wall time of ``infer(batch)`` (host to host, including copies), p50/p90/p99 over
  ``--iters`` after ``--warmup``; throughput = batch / mean latency (images/s). Where the
  backend runs on a GPU, ``gpu_p50_ms`` is the median of CUDA-event time around the model
  (torch.cuda.Event for torch, PyCUDA events around execute_async_v3 for TensorRT).
- Host memory: each artifact runs in its own subprocess (default) and its row reports that
  process's peak RSS (``resource.getrusage(...).ru_maxrss``, so it includes Python and the
  libraries the backend loads) and its RSS after opening the artifact (psutil). With
  ``--in-process`` all artifacts share one process and the row reports the RSS growth (psutil
  samples, peak minus the RSS before opening) instead: honest only for the first artifact.
- Device memory: torch.cuda.max_memory_allocated for torch on CUDA; for a TensorRT engine its
  device_memory_size_v2 (activations) plus the I/O buffers.
- Input: the same seeded random batch for every artifact (``--seed``), or one image
  (``--image``) preprocessed with each artifact's manifest.
- ``--backend-options`` apply to torch artifacts (device, precision fp32|fp16|bf16,
  channels_last); ``--providers`` to ONNX files (cpu, cuda, tensorrt).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # allow `python engines/benchmark.py`
    _root = str(Path(__file__).resolve().parent.parent)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _root
    else:
        sys.path.insert(0, _root)

from cpnet.runtime import UserError, atomic_write_json  # noqa: E402

ROW_MARKER = "BENCHMARK_ROW "
COLUMNS = [("artifact", "artifact", "{}"), ("backend", "backend", "{}"), ("batch", "B", "{}"),
           ("p50_ms", "p50 ms", "{:.2f}"), ("p90_ms", "p90 ms", "{:.2f}"), ("p99_ms", "p99 ms", "{:.2f}"),
           ("throughput_ips", "img/s", "{:.1f}"), ("gpu_p50_ms", "GPU p50 ms", "{:.2f}"),
           ("rss_peak_mib", "peak RSS MiB", "{:.0f}"), ("device_memory_mib", "dev MiB", "{:.1f}")]


def parse_kv(text: str | None) -> dict:
    """'device=cuda,precision=fp16,channels_last=1' -> {'device': 'cuda', 'precision': 'fp16', 'channels_last': True}."""
    out: dict = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise UserError(f"--backend-options: expected key=value, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        low = v.lower()
        if low in ("1", "true", "yes", "on") and k in ("channels_last",):
            out[k] = True
        elif low in ("0", "false", "no", "off") and k in ("channels_last",):
            out[k] = False
        elif v.isdigit():
            out[k] = int(v)
        else:
            out[k] = v
    return out


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def make_input(manifest: dict, batch: int, seed: int = 0, image: str | None = None) -> np.ndarray:
    size = manifest.get("input_size") or [512, 512]
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image:
        import cv2

        from cpnet.runtime.preprocess import preprocess

        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"{image}: cannot read image")
        x = preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), manifest)
        return np.ascontiguousarray(np.repeat(x, batch, axis=0), dtype=np.float32)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, h, w), dtype=np.float32)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss_bytes() -> int | None:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB
    except Exception:
        return None


def options_for(backend: str, args) -> dict:
    opts: dict = {}
    if backend == "torch":
        opts.update(parse_kv(args.backend_options))
        if args.threads:
            opts["threads"] = args.threads
    elif backend == "onnxruntime":
        if args.providers:
            opts["providers"] = args.providers
        if args.threads:
            opts["threads"] = args.threads
    return opts


def bench_one(artifact: str, args, in_process: bool) -> dict:
    """Open one artifact, time it and measure memory; returns a row."""
    import engines

    backend = args.backend or engines.backend_for(artifact)
    rss0 = _rss()
    row: dict = {"artifact": artifact, "backend": backend, "batch": args.batch, "iters": args.iters,
                 "warmup": args.warmup}
    with engines.open(artifact, backend=backend, **options_for(backend, args)) as m:
        row["describe"] = m.describe()
        row["precision"] = m.precision
        x = make_input(m.manifest, args.batch, args.seed, args.image)
        row["input"] = list(x.shape)
        rss_open = _rss()
        peak = rss_open
        for _ in range(args.warmup):
            m.infer(x)
        lat, gpu = [], []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            m.infer(x)
            lat.append((time.perf_counter() - t0) * 1e3)
            if m.last_gpu_ms is not None:
                gpu.append(m.last_gpu_ms)
            peak = max(peak, _rss())
        dev = m.device_memory()
    mean = float(np.mean(lat)) if lat else float("nan")
    row.update({
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
        "mean_ms": mean, "throughput_ips": args.batch / (mean / 1e3) if lat and mean > 0 else float("nan"),
        "gpu_p50_ms": percentile(gpu, 50) if gpu else None,
        "gpu_timing": "cuda events" if gpu else None,
    })
    if in_process:
        row.update({"rss_peak_mib": (peak - rss0) / 2**20, "rss_after_open_mib": (rss_open - rss0) / 2**20,
                    "rss_method": "in-process growth over the RSS before opening (psutil samples)"})
    else:
        pk = _peak_rss_bytes()
        row.update({"rss_peak_mib": (pk if pk is not None else peak) / 2**20, "rss_after_open_mib": rss_open / 2**20,
                    "rss_method": "peak RSS of a fresh subprocess (ru_maxrss), incl. Python and libraries"})
    if dev:
        total = dev.get("total", dev.get("max_allocated"))
        row.update({"device_memory_mib": total / 2**20 if total is not None else None,
                    "device_memory": dev})
    else:
        row["device_memory_mib"] = None
    return row


def _child_argv(artifact: str, args) -> list[str]:
    argv = [sys.executable, "-m", "engines.benchmark", artifact, "--_child",
            "--iters", str(args.iters), "--warmup", str(args.warmup), "--batch", str(args.batch),
            "--seed", str(args.seed)]
    for flag, val in (("--threads", args.threads), ("--backend-options", args.backend_options),
                      ("--providers", args.providers), ("--image", args.image), ("--backend", args.backend)):
        if val:
            argv += [flag, str(val)]
    return argv


def run_subprocess(artifact: str, args) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(_child_argv(artifact, args), capture_output=True, text=True, env=env, cwd=os.getcwd())
    for line in proc.stdout.splitlines():
        if line.startswith(ROW_MARKER):
            return json.loads(line[len(ROW_MARKER):])
    err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return {"artifact": artifact, "error": err[-1] if err else f"exit status {proc.returncode}"}


def format_table(rows: list[dict]) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        try:
            return fmt.format(v)
        except (ValueError, TypeError):
            return str(v)

    table = [[title for _, title, _ in COLUMNS]]
    for r in rows:
        if r.get("error"):
            table.append([r["artifact"], "error: " + r["error"]] + [""] * (len(COLUMNS) - 2))
        else:
            table.append([cell(r, k, f) for k, _, f in COLUMNS])
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(COLUMNS))]
    lines = []
    for j, row in enumerate(table):
        if row and row[1].startswith("error: "):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
            continue
        lines.append("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m engines.benchmark", description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", nargs="+", help="checkpoints / run dirs, ONNX files, engines")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    ap.add_argument("--image", help="benchmark on this image (preprocessed per manifest) instead of random input")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), help="force one backend for all")
    ap.add_argument("--backend-options", help="torch: device=cpu|cuda,precision=fp32|fp16|bf16,channels_last=0|1")
    ap.add_argument("--providers", help="onnxruntime providers: cpu, cuda, tensorrt (comma list)")
    ap.add_argument("--in-process", action="store_true", help="run all artifacts in this process (see RSS note)")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--iters and --batch must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        try:
            row = bench_one(args.artifacts[0], args, in_process=False)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(ROW_MARKER + json.dumps(row, default=str), flush=True)
        return 0
    rows = []
    for a in args.artifacts:
        if args.in_process:
            try:
                rows.append(bench_one(a, args, in_process=True))
            except UserError as e:
                rows.append({"artifact": a, "error": str(e)})
        else:
            rows.append(run_subprocess(a, args))
    print(format_table(rows))
    method = next((r.get("rss_method") for r in rows if r.get("rss_method")), None)
    if method:
        print(f"RSS: {method}")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "args": {k: v for k, v in vars(args).items() if k != "_child"}})
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
