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
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    from cpnet.config import load_config
    from cpnet.data import build_dataset
    from cpnet.losses import build_loss
    from cpnet.models import CPNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(images)
        total, _ = criterion({k: v.float() for k, v in out.items()}, labels)
        scaler.scale(total).backward()
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
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
