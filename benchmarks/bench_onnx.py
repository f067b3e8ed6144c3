"""Benchmark: latency of PyTorch eager FP32 against ONNX Runtime FP32 / FP16 / INT8 (both flavours) and OpenVINO
(f32 and, where the CPU runs them, bf16 / f16 hints, on model.onnx and both INT8 files) on the CPU, the same files.

    python benchmarks/bench_onnx.py                       # quickstart, edge_r18_256x512, edge_r18_288x512
    python benchmarks/bench_onnx.py --configs edge_r18_256x512 --runs 30
    python benchmarks/bench_onnx.py --configs quickstart --checkpoint runs/quickstart   # the trained quickstart
    python benchmarks/bench_onnx.py --configs edge_r18_288x512 --profile               # + where the time goes

Per config: a model with RANDOM weights (latency does not depend on the weight
values; accuracy is the drift report's job, cpnet report) is saved as a checkpoint and
exported with cpnet.export (parity on random inputs); FP16 comes from
quantize.fp16, INT8 from quantize.int8 in the ``tensorrt`` and ``cpu``
flavours, calibrated on real-looking images: the synthetic dataset's training
images (data/synthetic, or generated into the work folder when missing) at the
config's input size -- INT8 ranges from random inputs would not be
representative.

Timing: one image (1, 3, S, S) at the config's input size, 2 threads
(``torch.set_num_threads(2)``; ORT ``intra_op_num_threads=2``, one inter-op
thread, sequential execution, all graph optimizations); the median of --runs
(>= 20) runs, taken in two rounds of blocks (each block after --warmup untimed
runs) so a change of load from other processes on a shared machine hits every
variant alike; the 1-minute load average is printed before and after. "Eager" is the trained model as it is
(``CPNet`` in eval mode, BN not folded, under ``torch.inference_mode``).
OpenVINO rows (``ov_*``) go through the openvino backend (engines.open(path, backend="openvino",
precision=..., threads=...)), which sets the precision hint and reads back what the compiled model runs;
the table's "runs as" column is that value. Each row also gives its argmax agreement with ORT FP32 on
the timed input (label-free: the edge configs have no data here and random weights).

Targets, chosen from the CPU flags read at run time, on the fastest row other than ORT FP16 (the
drift report's job is to say whether it passes; here its agreement is printed beside it):
AMX (amx_int8/amx_bf16): >= 8x eager on the edge configs, >= 6x on quickstart; AVX-512 VNNI or AVX-VNNI
without AMX: >= 4.5x on the edge configs (the INT8 kernels' gain); neither: no target (reported only).
ade20k_r50 (480x480, 150 classes) takes several minutes on 2 cores: INT8 calibration and the FP16
conversion run the model too.

``--profile``: where the time goes, per config: ONNX Runtime's per-node profile of the INT8 cpu file
(summed by operator type) and OpenVINO's performance counters (PERF_COUNT) of its fastest row (summed by
layer type and the kernel it chose), the top lines of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_CONFIGS = ("quickstart", "edge_r18_256x512", "edge_r18_288x512")
EDGE_CONFIGS = ("edge_r18_256x512", "edge_r18_288x512", "ade20k_r50")


def target_for(config: str, flags: set[str]) -> tuple[float | None, str]:
    """(speed-up over eager FP32 the fastest row must reach, why) for this CPU's flags; None: no target here."""
    if {"amx_int8", "amx_bf16"} & flags:
        return (8.0 if config in EDGE_CONFIGS else 6.0), "AMX"
    if {"avx512_vnni", "avx_vnni"} & flags:
        return (4.5 if config in EDGE_CONFIGS else None), "VNNI without AMX"
    return None, "no VNNI, no AMX"


def load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def synthetic_images(data_root: Path | None, work: Path, num: int) -> Path:
    """A folder of synthetic training images: data_root's if it holds the dataset, else generated into ``work``."""
    if data_root is not None and (data_root / "images" / "train").is_dir():
        return data_root / "images" / "train"
    from cpnet.data.synthetic import generate

    out = work / "synthetic"
    if not (out / "images" / "train").is_dir():
        generate(out, n_train=max(num, 8), n_val=1, size=128, seed=0)
    return out / "images" / "train"


def trained_checkpoint(run: Path):
    """(checkpoint path, eval-mode CPNet, config) of a trained run directory."""
    from cpnet.checkpoint import resolve_checkpoint
    from engines.backends.torch_backend import TorchBackend

    ckpt = resolve_checkpoint(run)
    with TorchBackend(ckpt, device="cpu") as m:
        from cpnet.config import from_dict

        return ckpt, m.model.eval(), from_dict(m.manifest["config"])


def random_checkpoint(config: str, work: Path, seed: int = 0):
    """(checkpoint path, eval-mode CPNet) with random weights for a named config."""
    import torch

    from cpnet.checkpoint import save_checkpoint
    from cpnet.config import load_config
    from cpnet.models import CPNet

    cfg = load_config(config)
    torch.manual_seed(seed)
    model = CPNet(cfg.model).eval()
    n = cfg.model.num_classes
    classes = [f"class{i}" for i in range(n)]
    palette = [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(n)]
    path = work / config / "random.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "iter": 0, "classes": classes, "palette": palette}
    save_checkpoint(path, state, cfg, classes, palette)
    return path, model, cfg


def make_variants(config: str, work: Path, calib_dir: Path, num_calib: int, threads: int, log=print,
                  checkpoint: Path | None = None) -> dict:
    """Export and quantize one config (random weights, or ``checkpoint``'s); return {variant: onnx path} plus the
    eager model."""
    from cpnet.export import export_checkpoint
    from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
    from quantize.logit_drift import DriftLimitExceeded
    from quantize.fp16 import convert_fp16
    from quantize.int8 import quantize_int8

    ckpt, model, cfg = trained_checkpoint(checkpoint) if checkpoint else random_checkpoint(config, work)
    out = work / config
    t = time.perf_counter()
    onnx_path, _ = export_checkpoint(ckpt, out / "model.onnx", parity="random", num_parity_images=1,
                                     runtime=RuntimeOptions(threads=threads))
    log(f"  export {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    runtime = RuntimeOptions(threads=threads, progress=False)
    try:
        fp16_path, _ = convert_fp16(onnx_path, out / "model.fp16.onnx", max_rounds=0, runtime=runtime,
                                    calibration=CalibrationOptions(data=str(calib_dir), num_images=2))
    except DriftLimitExceeded as e:  # random weights: the file is what is timed (accuracy is cpnet report's)
        fp16_path = e.path
    log(f"  fp16 {time.perf_counter() - t:.1f} s")
    paths = {"ort_fp32": onnx_path, "ort_fp16": fp16_path}
    for flavour in ("tensorrt", "cpu"):
        t = time.perf_counter()
        dst = out / ("model.int8.onnx" if flavour == "tensorrt" else "model.int8-cpu.onnx")
        quantize_int8(onnx_path, dst, calibration=CalibrationOptions(data=str(calib_dir), num_images=num_calib),
                      runtime=runtime, flavour=flavour)
        paths[f"ort_int8_{flavour}"] = dst
        log(f"  int8 {flavour} {time.perf_counter() - t:.1f} s")
    return {"paths": paths, "model": model, "cfg": cfg}


def ort_session(path: Path, threads: int):
    from cpnet.runtime.ort import make_session

    return make_session(path, threads=threads)


def time_variants(runners: dict, warmup: int, runs: int, rounds: int = 2) -> dict[str, list[float]]:
    """Block timing: each variant runs ``warmup`` untimed then its share of ``runs`` timed runs back to back;
    the variants take turns for ``rounds`` rounds (so a change of load hits them alike).

    Not interleaved run by run: ORT's intra-op threads spin for a while after each run (as do
    OpenMP's), which would steal the two cores from whichever variant runs next.
    """
    times = {k: [] for k in runners}
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    for n in per_round:
        for k, fn in runners.items():
            for _ in range(warmup):
                fn()
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return times


def openvino_rows(paths: dict, threads: int) -> dict:
    """{row: (file, engines.open options)} of the OpenVINO rows this CPU runs: f32 on model.onnx, each other hint
    the CPU runs on model.onnx, and both INT8 files with the fastest hint (their float layers)."""
    from engines.backends.openvino_backend import installed, precisions_here

    if not installed():
        return {}
    hints = precisions_here("CPU")
    low = "bf16" if "bf16" in hints else hints[-1]
    rows = {f"ov_{p}": (paths["ort_fp32"], p) for p in hints}
    rows[f"ov_int8_tensorrt_{low}"] = (paths["ort_int8_tensorrt"], low)
    rows[f"ov_int8_cpu_{low}"] = (paths["ort_int8_cpu"], low)
    return {k: (f, {"precision": p, "threads": threads}) for k, (f, p) in rows.items()}


def bench_config(config: str, work: Path, calib_dir: Path, num_calib: int, threads: int, warmup: int, runs: int,
                 variants: dict | None = None, log=print, checkpoint: Path | None = None) -> dict:
    import numpy as np
    import torch

    import engines

    torch.set_num_threads(threads)
    if variants is None:
        variants = make_variants(config, work, calib_dir, num_calib, threads, log, checkpoint)
    cfg, model = variants["cfg"], variants["model"]
    h, w = cfg.crop_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    xt = torch.from_numpy(x)
    runners = {}

    def eager():
        with torch.inference_mode():
            model(xt)

    runners["torch_eager_fp32"] = eager
    labels, runs_as, opened = {}, {}, []
    for name, path in variants["paths"].items():
        sess = ort_session(path, threads)
        iname = sess.get_inputs()[0].name
        runners[name] = (lambda sess=sess, iname=iname: sess.run(None, {iname: x}))
        labels[name] = np.asarray(sess.run(None, {iname: x})[0]).argmax(1)
        runs_as[name] = "onnxruntime"
    for name, (path, options) in openvino_rows(variants["paths"], threads).items():
        m = engines.open(path, backend="openvino", **options)
        opened.append(m)
        runners[name] = (lambda m=m: m.infer(x))
        labels[name] = m.infer(x).argmax(1)
        runs_as[name] = f"openvino, runs as {m.runs_as}"
    load0 = load_avg()
    times = time_variants(runners, warmup, runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    agreement = {k: float((v == labels["ort_fp32"]).mean()) for k, v in labels.items()}
    for m in opened:
        m.close()
    return {"config": config, "input": f"{h}x{w}", "median_s": med, "load": (load0, load_avg()),
            "runs": runs, "threads": threads, "agreement": agreement, "runs_as": runs_as, "paths": variants["paths"],
            "trained": checkpoint is not None}


def profile_config(result: dict, threads: int, runs: int, work: Path, top: int = 8) -> None:
    """Where the time goes: ORT's per-node profile of the INT8 cpu file, OpenVINO's counters of its fastest row."""
    import json
    from collections import defaultdict

    import numpy as np

    import engines
    from cpnet.runtime.ort import make_session

    path = result["paths"]["ort_int8_cpu"]
    h, w = (int(v) for v in result["input"].split("x"))
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    sess = make_session(path, threads=threads, profile_prefix=str(work / f"ort_profile_{result['config']}"))
    iname = sess.get_inputs()[0].name
    for _ in range(runs):
        sess.run(None, {iname: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"].get("op_name", "?")] += e["dur"] / 1000 / runs
    total = sum(by_op.values())
    print(f"  profile: ONNX Runtime, {Path(path).name}, per run (sum of node kernel times {total:.1f} ms):")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {op:<28} {ms:8.2f} ms {100 * ms / max(total, 1e-9):5.1f}%")
    ov = [k for k in result["median_s"] if k.startswith("ov_")]
    if not ov:
        return
    best = min(ov, key=lambda k: result["median_s"][k])
    precision = best.rsplit("_", 1)[-1]
    ov_path = result["paths"]["ort_int8_cpu" if "int8_cpu" in best else
                              "ort_int8_tensorrt" if "int8_tensorrt" in best else "ort_fp32"]
    with engines.open(ov_path, backend="openvino", precision=precision, threads=threads, profile=True) as m:
        by_kind: dict = defaultdict(float)
        for _ in range(runs):
            m.infer(x)
            for layer in m.profile():
                by_kind[(layer["type"], layer["exec_type"])] += layer["us"] / 1000 / runs
    total = sum(by_kind.values())
    print(f"  profile: OpenVINO {best} ({Path(ov_path).name}), per run (sum of layer times {total:.1f} ms):")
    for (kind, exec_type), ms in sorted(by_kind.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {kind:<18} {exec_type:<28} {ms:8.2f} ms {100 * ms / max(total, 1e-9):5.1f}%")


def print_table(result: dict, flags: set[str]) -> bool:
    med = result["median_s"]
    base = med["torch_eager_fp32"]
    print(f"\n{result['config']} ({result['input']}, {'trained' if result['trained'] else 'random'} weights, "
          f"{result['threads']} threads, median of {result['runs']} runs, load {result['load'][0]:.2f} -> "
          f"{result['load'][1]:.2f})")
    print(f"  {'row':<24} {'runs as':<26} {'median ms':>10} {'vs eager':>9} {'agreement':>10}")
    for k, v in med.items():
        agree = result["agreement"].get(k)
        print(f"  {k:<24} {result['runs_as'].get(k, 'torch'):<26} {1000 * v:>10.2f} {base / v:>8.2f}x "
              f"{'-' if agree is None else format(100 * agree, '.2f') + '%':>10}")
    candidates = {k: v for k, v in med.items() if k not in ("torch_eager_fp32", "ort_fp16")}
    fastest = min(candidates, key=candidates.get)
    sp = base / candidates[fastest]
    target, why = target_for(result["config"], flags)
    if target is None:
        print(f"  target: none on this CPU ({why}); fastest row {fastest}: {sp:.2f}x eager")
        return True
    ok = sp >= target
    print(f"  target ({why}): fastest row >= {target}x eager: {fastest} {sp:.2f}x "
          f"(agreement {100 * result['agreement'][fastest]:.2f}%) -> {'PASS' if ok else 'MISSED'}")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated config names")
    p.add_argument("--runs", type=int, default=20, help="timed runs per variant (at least 20; default 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per variant (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads for PyTorch and ORT (default 2)")
    p.add_argument("--calib-images", type=int, default=32, help="INT8 calibration images (default 32)")
    p.add_argument("--data-root", default=str(ROOT / "data" / "synthetic"),
                   help="synthetic dataset (generated into the work folder if missing)")
    p.add_argument("--work", default=None, help="work folder (default: a temporary folder, removed afterwards)")
    p.add_argument("--checkpoint", default=None, metavar="RUN",
                   help="a trained run directory or checkpoint for the (single) config instead of random weights")
    p.add_argument("--profile", action="store_true",
                   help="also print ORT's per-node profile of the INT8 cpu file and OpenVINO's perf counters")
    args = p.parse_args(argv)
    if args.runs < 20:
        p.error("--runs must be at least 20")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="cpnet-bench-onnx-")
        work = Path(tmp)
    all_ok = True
    try:
        calib_dir = synthetic_images(Path(args.data_root) if args.data_root else None, work, args.calib_images)
        from cpnet.runtime.machine import machine_info, machine_line

        info = machine_info(gemm=True, threads=args.threads)
        flags = set(info.get("simd") or ())
        print(f"machine: {machine_line(info)}")
        if len(configs) > 1 and args.checkpoint:
            p.error("--checkpoint goes with one config")
        print(f"calibration images: {calib_dir}; weights are random (latency only); load {load_avg():.2f}")
        for config in configs:
            print(f"[{config}] preparing (export, fp16, int8 x2) ...", flush=True)
            res = bench_config(config, work, calib_dir, args.calib_images, args.threads, args.warmup, args.runs,
                               checkpoint=Path(args.checkpoint) if args.checkpoint else None)
            all_ok &= print_table(res, flags)
            if args.profile:
                profile_config(res, args.threads, args.runs, work)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
