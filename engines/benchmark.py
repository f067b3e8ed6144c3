"""Latency, throughput and memory of CPNet artifacts, one row per artifact, on the same input.

    cpnet benchmark runs/quickstart model.onnx model.int8.onnx model.fp16.engine \
        [--iters 50] [--warmup 5] [--batch 1] [--threads T] [--json bench.json] [--device cuda] \
        [--backend-options precision=fp16,channels_last=1] [--providers cuda] [--cuda-graph] [--image img.png]
    python -m engines.benchmark ...                                  (the same parser)

- Latency: wall time of ``infer(batch)`` (host to host, including copies), p50/p90/p99 over
  ``--iters`` after ``--warmup``; throughput = batch / mean latency (images/s). Where the
  backend runs on a GPU, ``gpu_p50_ms`` is the median of CUDA-event time around the model
  (torch.cuda.Event for torch, PyCUDA events around execute_async_v3 for TensorRT).
- ``--cuda-graph``: TensorRT engines replay their execution as a CUDA graph (captured during the
  warm-up, as trtexec's --useCudaGraph does; an engine that cannot be captured runs without one,
  and its row says so).
- Host memory: each artifact runs in its own subprocess (default) and its row reports that
  process's peak RSS (``resource.getrusage(...).ru_maxrss``, so it includes Python and the
  libraries the backend loads) and its RSS after opening the artifact (psutil). With
  ``--in-process`` all artifacts share one process and the row reports the RSS growth (psutil
  samples, peak minus the RSS before opening) instead: honest only for the first artifact.
- Device memory: torch.cuda.max_memory_allocated for torch on CUDA; for a TensorRT engine its
  device_memory_size_v2 (activations) plus the I/O buffers.
- Input: the same seeded random batch for every artifact (``--seed``), or one image
  (``--image``) preprocessed with each artifact's manifest.
- ``--device`` applies to torch artifacts, ``--backend-options`` to torch (precision fp32|fp16|bf16,
  channels_last) and openvino (``--backend openvino``: precision f32|bf16|f16, performance, device,
  cache_dir; the row says what the compiled model runs as, read back); ``--providers`` to ONNX files on
  onnxruntime (cpu, cuda, tensorrt); ``--cuda-graph``,
  ``--trust-engine`` and ``--allow-host-code`` to engines; ``--backend tensorrt`` on an ONNX file builds its
  engine on first use (``engines.engine_cache``).
- Each row carries its key (:class:`engines.backends.row_key.RowKey`: artifact, backend, options), as the
  drift report's rows do.
- A path that does not exist is a user error (exit 2, nothing run); an artifact that exists but
  cannot be opened or run becomes an error row, and the command then exits 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # allow `python engines/benchmark.py`
    _root = str(Path(__file__).resolve().parent.parent)
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _root
    else:
        sys.path.insert(0, _root)

from cpnet.runtime import CheckFailed, CpnetError, MissingDependency, UserError, atomic_write_json  # noqa: E402
from cpnet.runtime.files import check_output, utf8_path  # noqa: E402
from cpnet.runtime.errors import first_line  # noqa: E402
from cpnet.runtime.options import RuntimeOptions, parse_backend_options  # noqa: E402

ROW_MARKER = "BENCHMARK_ROW "
COLUMNS = [("artifact", "artifact", "{}"), ("backend", "backend", "{}"), ("runs_as", "runs as", "{}"), ("batch", "B", "{}"),
           ("p50_ms", "p50 ms", "{:.2f}"), ("p90_ms", "p90 ms", "{:.2f}"), ("p99_ms", "p99 ms", "{:.2f}"),
           ("throughput_ips", "img/s", "{:.1f}"), ("gpu_p50_ms", "GPU p50 ms", "{:.2f}"),
           ("rss_peak_mib", "peak RSS MiB", "{:.0f}"), ("device_memory_mib", "dev MiB", "{:.1f}")]


parse_kv = parse_backend_options  # the one parser of --backend-options (cpnet.runtime.options)


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def make_input(manifest: dict, batch: int, seed: int = 0, image: str | None = None) -> np.ndarray:
    size = manifest.get("input_size") or [512, 512]
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image:
        import cv2

        from cpnet.runtime.preprocess import preprocess

        bgr = cv2.imread(utf8_path(image, "image"), cv2.IMREAD_COLOR)
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


@dataclass(frozen=True)
class BenchmarkOptions:
    """What to measure: ``iters`` timed runs after ``warmup``, ``batch`` images of the seeded random input
    (``seed``) or of ``image``; ``backend`` forces one backend; ``backend_options`` (torch:
    precision, channels_last as "key=value,..."); engines: ``cuda_graph`` (``trust_engine`` and
    ``allow_host_code`` are RuntimeOptions); ``in_process``: all artifacts in this process instead of one
    subprocess each."""

    iters: int = 50
    warmup: int = 5
    batch: int = 1
    seed: int = 0
    image: str | None = None
    backend: str | None = None
    backend_options: str | None = None
    cuda_graph: bool = False
    in_process: bool = False


def options_for(backend: str, options: BenchmarkOptions, runtime: RuntimeOptions = RuntimeOptions()) -> dict:
    """The keyword options ``engines.open`` gets for one backend."""
    opts: dict = {}
    if backend == "torch":
        opts.update(parse_kv(options.backend_options))
        if runtime.device and runtime.device != "auto":
            opts.setdefault("device", runtime.device)
        if runtime.threads:
            opts["threads"] = runtime.threads
    elif backend == "openvino":
        opts.update(parse_kv(options.backend_options))
        if runtime.threads:
            opts["threads"] = runtime.threads
    elif backend == "onnxruntime":
        if runtime.providers:
            opts["providers"] = ",".join(runtime.providers)
        if runtime.threads:
            opts["threads"] = runtime.threads
    elif backend == "tensorrt":
        if options.cuda_graph:
            opts["cuda_graph"] = True
        opts.update(runtime.engine_options())
    return opts


def bench_one(artifact: str, options: BenchmarkOptions, runtime: RuntimeOptions = RuntimeOptions(),
              in_process: bool = True) -> dict:
    """Open one artifact, time it and measure memory; returns a row."""
    import engines

    o = options
    backend = o.backend or engines.backend_for(artifact)
    rss0 = _rss()
    from engines.backends.row_key import RowKey

    row: dict = {"artifact": artifact, "backend": backend, "batch": o.batch, "iters": o.iters, "warmup": o.warmup,
                 "key": str(RowKey(Path(artifact).name, backend, parse_kv(o.backend_options)
                                   if backend in ("torch", "openvino") else {}))}
    with engines.open(artifact, backend=backend, **options_for(backend, o, runtime)) as m:
        row["describe"] = m.describe()
        row["precision"] = m.precision
        row["runs_as"] = getattr(m, "runs_as", None)
        x = make_input(m.manifest, o.batch, o.seed, o.image)
        row["input"] = list(x.shape)
        rss_open = _rss()
        peak = rss_open
        for _ in range(o.warmup):
            m.infer(x)
        lat, gpu = [], []
        for _ in range(o.iters):
            t0 = time.perf_counter()
            m.infer(x)
            lat.append((time.perf_counter() - t0) * 1e3)
            if m.last_gpu_ms is not None:
                gpu.append(m.last_gpu_ms)
            peak = max(peak, _rss())
        dev = m.device_memory()
        if backend == "tensorrt" and o.cuda_graph:
            row["cuda_graph"] = bool(getattr(m, "cuda_graph_active", False))
    mean = float(np.mean(lat)) if lat else float("nan")
    row.update({
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
        "mean_ms": mean, "throughput_ips": o.batch / (mean / 1e3) if lat and mean > 0 else float("nan"),
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


def _child_argv(artifact: str, options: BenchmarkOptions, runtime: RuntimeOptions = RuntimeOptions()) -> list[str]:
    o = options
    argv = [sys.executable, "-m", "engines.benchmark", artifact, "--_child",
            "--iters", str(o.iters), "--warmup", str(o.warmup), "--batch", str(o.batch), "--seed", str(o.seed)]
    for flag, val in (("--threads", runtime.threads), ("--backend-options", o.backend_options),
                      ("--providers", ",".join(runtime.providers)), ("--image", o.image), ("--backend", o.backend),
                      ("--device", runtime.device if runtime.device != "auto" else None),
                      ("--engine-cache", runtime.engine_cache)):
        if val:
            argv += [flag, str(val)]
    for flag, on in (("--cuda-graph", o.cuda_graph), ("--trust-engine", runtime.trust_engine),
                     ("--allow-host-code", runtime.allow_host_code)):
        if on:
            argv.append(flag)
    return argv


def run_benchmark(artifacts: list[str], options: BenchmarkOptions = BenchmarkOptions(),
                  runtime: RuntimeOptions = RuntimeOptions()) -> list[dict]:
    """One row per artifact; an artifact that cannot be opened or run becomes a row with an ``error``."""
    rows = []
    for a in artifacts:
        if options.in_process:
            try:
                rows.append(bench_one(a, options, runtime, in_process=True))
            except CpnetError as e:
                rows.append({"artifact": a, "error": first_line(e, 2000), "exit_code": e.exit_code})
        else:
            rows.append(run_subprocess(a, options, runtime))
    return rows


def run_subprocess(artifact: str, options: BenchmarkOptions, runtime: RuntimeOptions = RuntimeOptions()) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(_child_argv(artifact, options, runtime), capture_output=True, text=True, env=env, cwd=os.getcwd())
    for line in proc.stdout.splitlines():
        if line.startswith(ROW_MARKER):
            return json.loads(line[len(ROW_MARKER):])
    err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return {"artifact": artifact, "error": err[-1].removeprefix("error: ") if err else f"exit status {proc.returncode}",
            "exit_code": proc.returncode}


def format_table(rows: list[dict]) -> str:
    def cell(row, key, fmt):
        v = row.get(key)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        try:
            return fmt.format(v)
        except (ValueError, TypeError):
            return str(v)

    # a failing row says "failed [n]" in its place and its error goes below the table, on a line of its own: the
    # error's length (337 characters in one report) must not widen every column
    table, notes = [[title for _, title, _ in COLUMNS]], []
    for r in rows:
        if r.get("error"):
            notes.append(f"[{len(notes) + 1}] {r['artifact']}: {r['error']}")
            table.append([r["artifact"], f"failed [{len(notes)}]"])
        else:
            table.append([cell(r, k, f) for k, _, f in COLUMNS])
    widths = [max(len(row[i]) for row in table if i < len(row) and len(row) == len(COLUMNS))
              for i in range(len(COLUMNS))]
    lines = []
    for j, row in enumerate(table):
        if len(row) < len(COLUMNS):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
            continue
        lines.append("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + ([""] + notes if notes else []))


DESCRIPTION = """Latency, throughput and memory of checkpoints, ONNX files and engines, one row each, on the same input.

Each artifact runs in its own process (peak RSS per row); GPU rows add CUDA-event time and
device memory. --cuda-graph replays TensorRT engines as CUDA graphs."""

EXAMPLES = """cpnet benchmark runs/quickstart model.onnx model.int8.onnx --threads 2 --json bench.json
cpnet benchmark model.fp16.engine model.int8.engine --iters 200 --cuda-graph
cpnet benchmark model.int8.onnx --backend tensorrt --engine-cache ~/.cache/cpnet   # builds on first use
cpnet benchmark runs/quickstart --device cuda --backend-options precision=fp16,channels_last=1"""


def add_arguments(p) -> None:
    from cpnet.cli import args as cli_args

    cli_args.add_input(p, "ARTIFACT", "checkpoints / run dirs, ONNX files, engines", nargs="+")
    p.add_argument("--iters", type=cli_args.positive_int, default=50, help="timed runs per artifact (default 50)")
    p.add_argument("--warmup", type=cli_args.non_negative_int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--batch", type=cli_args.positive_int, default=1, help="images per run (default 1)")
    p.add_argument("--seed", type=cli_args.non_negative_int, default=0, help="seed of the random input (default 0)")
    p.add_argument("--image", help="benchmark on this image (preprocessed per manifest) instead of random input")
    cli_args.add_json(p, "the rows and the arguments")
    from engines.backends import BACKENDS

    cli_args.add_backend(p, tuple(BACKENDS), options_help="torch: precision=fp32|fp16|bf16,channels_last=0|1; "
                                                          "openvino: precision=f32|bf16|f16,"
                                                          "performance=latency|throughput,device=CPU,cache_dir=DIR")
    p.add_argument("--in-process", action="store_true", help="run all artifacts in this process (see RSS note)")
    g = p.add_argument_group("engines")
    g.add_argument("--cuda-graph", action="store_true",
                   help="replay each TensorRT engine's execution as a CUDA graph (needs cuda-python)")
    cli_args.add_engine_trust(p)
    cli_args.add_runtime(p, device=True, providers=True)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)


def options_from(args) -> BenchmarkOptions:
    return BenchmarkOptions(iters=args.iters, warmup=args.warmup, batch=args.batch, seed=args.seed, image=args.image,
                            backend=args.backend, backend_options=args.backend_options, cuda_graph=args.cuda_graph,
                            in_process=args.in_process)


def run(args) -> int:
    from cpnet.cli.args import runtime_options

    options, runtime = options_from(args), runtime_options(args)
    if args.json:
        check_output(args.json)
    parse_kv(options.backend_options)  # a malformed --backend-options is a user error before any work
    artifacts = list(args.input)
    missing = [a for a in artifacts if not Path(a).exists()]
    if missing:  # a user mistake: nothing is run (an artifact that exists but fails becomes an error row)
        raise UserError(f"no such file or directory: {', '.join(missing)}")
    if not args.backend:
        import engines

        for a in artifacts:
            engines.backend_for(a)  # an unknown file type is a user error before any work
    if args._child:
        row = bench_one(artifacts[0], options, runtime, in_process=False)
        print(ROW_MARKER + json.dumps(row, default=str), flush=True)
        return 0
    from cpnet.runtime.machine import machine_info, machine_line

    machine = machine_info(gemm=True, threads=runtime.threads)  # before the runs, with the machine idle
    rows = run_benchmark(artifacts, options, runtime)
    print(f"machine: {machine_line(machine)}")
    print(format_table(rows))
    method = next((r.get("rss_method") for r in rows if r.get("rss_method")), None)
    if method:
        print(f"RSS: {method}")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "options": asdict(options), "runtime": asdict(runtime),
                                      "machine": machine})
    failed = [r for r in rows if r.get("error")]
    if failed:
        # the exit code says why, when every failure says the same thing (2: the user's file, 3: no TensorRT)
        codes = {r.get("exit_code") for r in failed}
        kind = {2: UserError, 3: MissingDependency}.get(codes.pop(), CheckFailed) if len(codes) == 1 else CheckFailed
        raise kind(f"{len(failed)} of {len(rows)} artifact(s) could not be benchmarked: "
                   f"{'; '.join(r['artifact'] + ': ' + r['error'] for r in failed)}")
    return 0


def main(argv=None) -> int:
    from cpnet.cli import run_verb

    return run_verb("engines.benchmark", argv)


if __name__ == "__main__":
    sys.exit(main())
