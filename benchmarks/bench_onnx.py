"""Benchmark: latency of PyTorch eager FP32 against ONNX Runtime FP32 / FP16 / INT8 (both flavours) on the CPU.

    python benchmarks/bench_onnx.py                                   # quickstart, edge_r18_256x512, ade20k_r50
    python benchmarks/bench_onnx.py --configs edge_r18_256x512 --runs 30

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
Target: the INT8 cpu flavour at least 4.5x faster than eager on edge_r18_256x512
and ade20k_r50. ade20k_r50 (480x480, 150 classes) takes several minutes on 2
cores: INT8 calibration and the FP16 conversion run the model too.
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

DEFAULT_CONFIGS = ("quickstart", "edge_r18_256x512", "ade20k_r50")
TARGET_SPEEDUP = 4.5
TARGET_CONFIGS = ("edge_r18_256x512", "ade20k_r50")


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


def make_variants(config: str, work: Path, calib_dir: Path, num_calib: int, threads: int, log=print) -> dict:
    """Export and quantize one config; return {variant: onnx path} plus the eager model."""
    from cpnet.export import export_checkpoint
    from cpnet.runtime.options import CalibrationOptions, RuntimeOptions
    from quantize.logit_drift import DriftLimitExceeded
    from quantize.fp16 import convert_fp16
    from quantize.int8 import quantize_int8

    ckpt, model, cfg = random_checkpoint(config, work)
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


def bench_config(config: str, work: Path, calib_dir: Path, num_calib: int, threads: int, warmup: int, runs: int,
                 variants: dict | None = None, log=print) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    if variants is None:
        variants = make_variants(config, work, calib_dir, num_calib, threads, log)
    cfg, model = variants["cfg"], variants["model"]
    h, w = cfg.crop_size
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    xt = torch.from_numpy(x)
    runners = {}

    def eager():
        with torch.inference_mode():
            model(xt)

    runners["torch_eager_fp32"] = eager
    for name, path in variants["paths"].items():
        sess = ort_session(path, threads)
        iname = sess.get_inputs()[0].name
        runners[name] = (lambda sess=sess, iname=iname: sess.run(None, {iname: x}))
    load0 = load_avg()
    times = time_variants(runners, warmup, runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"config": config, "input": f"{h}x{w}", "median_s": med, "load": (load0, load_avg()),
            "runs": runs, "threads": threads}


def print_table(result: dict) -> bool:
    med = result["median_s"]
    base = med["torch_eager_fp32"]
    print(f"\n{result['config']} ({result['input']}, {result['threads']} threads, median of "
          f"{result['runs']} runs, load {result['load'][0]:.2f} -> {result['load'][1]:.2f})")
    print(f"  {'variant':<22} {'median ms':>10} {'speed-up vs eager':>18}")
    for k, v in med.items():
        print(f"  {k:<22} {1000 * v:>10.1f} {base / v:>17.2f}x")
    sp = base / med["ort_int8_cpu"]
    ok = sp >= TARGET_SPEEDUP
    if result["config"] in TARGET_CONFIGS:
        print(f"  target: INT8 cpu flavour >= {TARGET_SPEEDUP}x eager: {sp:.2f}x -> {'PASS' if ok else 'FAIL'}")
    return ok or result["config"] not in TARGET_CONFIGS


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

        print(f"machine: {machine_line(machine_info(gemm=True, threads=args.threads))}")
        print(f"calibration images: {calib_dir}; weights are random (latency only); load {load_avg():.2f}")
        for config in configs:
            print(f"[{config}] preparing (export, fp16, int8 x2) ...", flush=True)
            res = bench_config(config, work, calib_dir, args.calib_images, args.threads, args.warmup, args.runs)
            all_ok &= print_table(res)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
