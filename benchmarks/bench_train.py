"""Benchmark: training throughput (images/s) and peak memory of a config on this machine.

    python benchmarks/bench_train.py                      # quickstart, CPU, batch from the config
    python benchmarks/bench_train.py --config edge_r18_256x512 --batch 4 --iters 10 --device cuda --amp bf16

Times full training steps (forward, the CPNet loss with the Affinity Loss,
backward, SGD step) on batches of the synthetic dataset (generated into a temp
folder when --data is missing), after --warmup steps. Data loading is excluded
(batches are prepared first), so the figure is the model's own training speed;
`cpnet.train` logs the end-to-end figure (train/images_per_s in TensorBoard).
Peak memory: the process's peak RSS (ru_maxrss) on the CPU, and
torch.cuda.max_memory_allocated on a GPU.

    python benchmarks/bench_train.py --profile 5          # what bounds a step: torch.profiler over 5 steps

--profile N records N timed steps with torch.profiler (CPU activity) and prints
the top operators by self CPU time, then the step's self time split into
kinds: GEMM/convolution (forward and backward), elementwise and normalisation,
data movement (copies, cat, indexing) and the rest; and the time in each phase
(forward, loss, backward, optimizer).
Batches are prepared before the loop either way, so data loading is not in it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="quickstart")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--batch", type=int, help="default: the config's train.batch_size")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="CUDA autocast dtype")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps with torch.profiler")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    from cpnet.config import load_config
    from cpnet.data import build_dataset
    from cpnet.losses import build_loss
    from cpnet.models import CPNet

    from cpnet.runtime.machine import machine_info, machine_line

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = machine_info(gemm=True, threads=args.threads)
    print(f"machine: {machine_line(info)}")
    cfg = load_config(args.config, args.overrides)
    batch = args.batch or cfg.train.batch_size
    data = Path(args.data)
    tmp = None
    if not (data / "classes.yaml").exists():
        from cpnet.data.synthetic import generate
        tmp = tempfile.TemporaryDirectory()
        data = Path(tmp.name)
        generate(data, n_train=max(batch, 16), n_val=1, size=max(128, *cfg.crop_size), seed=0)
    cfg.data.root = str(data)
    if cfg.data.dataset != "synthetic":
        cfg.data.dataset = "synthetic"
    ds = build_dataset(cfg.data, "train", cfg.crop_size, train=True, num_classes=cfg.model.num_classes)
    samples = [ds[i % len(ds)] for i in range(batch)]
    images = torch.stack([s[0] for s in samples])
    labels = torch.stack([s[1] for s in samples])

    device = torch.device(args.device)
    model = CPNet(cfg.model).to(device).train()
    criterion = build_loss(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=cfg.train.weight_decay)
    images, labels = images.to(device), labels.to(device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)

    from torch.profiler import record_function  # labels the phases in --profile; a no-op otherwise

    def step():
        with record_function("phase: forward"), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(images)
        with record_function("phase: loss"):
            total, _ = criterion({k: v.float() for k, v in out.items()}, labels)
        with record_function("phase: backward"):
            scaler.scale(total).backward()
        with record_function("phase: optimizer"):
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"config {cfg.name}: R{cfg.model.depth} {cfg.model.head}, input {cfg.crop_size[0]}x{cfg.crop_size[1]}, batch {batch}, "
          f"device {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
          f"{args.threads} threads, amp {args.amp if amp else 'off'}")
    print(f"training step: median {med * 1000:.1f} ms over {args.iters} steps -> {batch / med:.1f} images/s")
    print(f"peak host memory (RSS): {peak_rss:.0f} MiB")
    if device.type == "cuda":
        print(f"peak device memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    if args.profile:
        profile(step, sync, args.profile)
    if tmp is not None:
        tmp.cleanup()
    return 0


#: Operator kinds by name (aten:: prefix removed); the first list that matches an operator's name wins.
KINDS = {
    "GEMM / convolution": ("conv", "mm", "bmm", "addmm", "matmul", "linear", "baddbmm"),
    "normalisation": ("batch_norm", "native_batch_norm"),
    "data movement": ("copy_", "cat", "index", "gather", "scatter", "clone", "contiguous", "_to_copy",
                      "fill_", "zero_", "zeros", "empty", "pad", "constant_pad", "upsample", "stack"),
}


def _kind(name: str) -> str:
    op = name.removeprefix("aten::")
    for kind, words in KINDS.items():
        if any(w in op for w in words):
            return kind
    return "elementwise, reductions and the rest"


def profile(step, sync, steps: int) -> None:
    """Profile ``steps`` training steps; print the top operators by self CPU time and the share of each kind."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
            sync()
    phases = [e for e in prof.key_averages() if e.key.startswith("phase: ")]
    averages = [e for e in prof.key_averages() if e.self_cpu_time_total > 0 and not e.key.startswith("phase: ")]
    total = sum(e.self_cpu_time_total for e in averages)
    print(f"\nprofile of {steps} steps: {total / 1e3 / steps:.1f} ms self CPU time per step")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print("by phase (wall time inside each phase, children included):")
    for e in sorted(phases, key=lambda e: -e.cpu_time_total):
        print(f"  {e.key.removeprefix('phase: '):<40} {e.cpu_time_total / 1e3 / steps:8.1f} ms/step")
    print("by kind of operator (self time):")
    shares: dict[str, float] = {}
    for e in averages:
        shares[_kind(e.key)] = shares.get(_kind(e.key), 0.0) + e.self_cpu_time_total
    for kind, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<40} {t / 1e3 / steps:8.1f} ms/step  {100 * t / total:5.1f}%")


if __name__ == "__main__":
    sys.exit(main())
