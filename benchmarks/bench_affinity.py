"""Benchmark: Context Prior head + Affinity Loss, chunked autograd function vs the naive version.

    python benchmarks/bench_affinity.py [--prior 60] [--batch 2] [--iters 5] [--head standin|cpnet]

Variants (2 threads):
  head     the head's prior path alone (no affinity loss), for reference
  chunked  + cpnet.losses.AffinityLoss (row-chunked autograd function on the prior logits)
  naive    + cpnet.losses.affinity_loss_reference (A = one_hot @ one_hot^T, terms written out with
           autograd, F.binary_cross_entropy as in the authors' code, sharing the head's P)

Head ("standin", default): value features V (B, 512, s, s) requiring grad -> 1x1 conv (512 -> N) + BN ->
prior logits (B, N, N) (flatten + transpose, as the model does) -> P = sigmoid -> intra = bmm(P, V)/N,
inter = bmm(1 - P, V)/N -> sum(intra) + sum(inter) + affinity loss -> backward. "cpnet" uses
cpnet.models.heads.ContextPriorHead(in_ch=512) instead (its 3x3 convs add the same large cost to
every variant).

Time: median of --iters forward+backward iterations after one warm-up round; all variants run in one
process (default malloc settings), interleaved round by round, so a fluctuating load on a shared machine
hits them alike.
Peak memory: in a fresh subprocess per variant, peak RSS during its first forward+backward (ru_maxrss) minus its RSS just
before that step. glibc is told to serve every allocation >= 64 KiB with its own mmap
(MALLOC_MMAP_THRESHOLD_=65536, which also disables its dynamic threshold) so freed tensors go back to
the OS at once and RSS follows the live tensor bytes; a calibration allocation checks this.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _labels(batch: int, size: int, num_classes: int, seed: int = 0):
    """Full-resolution label maps made of ~12 Voronoi regions each, a few ignore (255) regions."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(batch):
        k = 12
        cy = torch.randint(0, size, (k,), generator=g)
        cx = torch.randint(0, size, (k,), generator=g)
        cls = torch.randint(0, num_classes, (k,), generator=g)
        cls[torch.rand(k, generator=g) < 0.15] = 255
        d = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
        out.append(cls[d.argmin(0)])
    return torch.stack(out)


def _setup(args):
    """Build the head, labels, the three step functions and the input features."""
    import torch
    import torch.nn as nn

    sys.path.insert(0, str(ROOT))
    from cpnet.losses import AffinityLoss, affinity_loss_reference, downsample_labels

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s, B, C = args.prior, args.batch, 512
    N = s * s

    if args.head == "cpnet":
        from cpnet.models.heads import ContextPriorHead

        head = ContextPriorHead(C, 512, args.classes, s)
        modules = [head]
        head_name = "cpnet.models.heads.ContextPriorHead(in_ch=512, channels=512)"

        def prior_path(v):
            logits, prior_logits, prior = head(v)
            return logits.sum(), prior_logits, prior
    else:
        conv = nn.Conv2d(C, N, 1, bias=False)
        bn = nn.BatchNorm2d(N)
        modules = [conv, bn]
        head_name = "stand-in prior path (features 512ch -> 1x1 conv + BN -> sigmoid -> 2 bmm)"

        def prior_path(v):
            z = bn(conv(v)).flatten(2).transpose(1, 2)          # (B, N, N), row i = pixel i, as the model
            p = torch.sigmoid(z)
            vv = v.flatten(2).transpose(1, 2)                    # (B, N, C)
            intra = torch.bmm(p, vv) / N
            inter = torch.bmm(1.0 - p, vv) / N
            return intra.sum() + inter.sum(), z, p

    labels = _labels(B, 8 * s, args.classes)
    aff = AffinityLoss(args.classes, 255, args.mode, chunk_rows=args.chunk_rows)

    def make_step(variant):
        def step(v):
            v.grad = None
            for m in modules:
                m.zero_grad(set_to_none=True)
            out, z, p = prior_path(v)
            if variant == "chunked":
                out = out + aff(z, labels, prior=p)
            elif variant == "naive":
                small = downsample_labels(labels, (s, s))
                out = out + affinity_loss_reference(z, small, args.classes, 255, args.mode, prior=p)
            del z, p  # as the training loop does: only what backward saved stays alive
            out.backward()
            return float(out.detach())
        return step

    def make_loss_step(variant):
        """The loss alone on fixed logits (the model's transposed layout) and their sigmoid."""
        z = torch.randn(B, N, s, s).mul_(2).flatten(2).transpose(1, 2).requires_grad_()
        small = downsample_labels(labels, (s, s))

        def step(_v=None):
            z.grad = None
            if variant == "chunked":
                loss = aff(z, labels)
            else:
                loss = affinity_loss_reference(z, small, args.classes, 255, args.mode, prior=torch.sigmoid(z))
            loss.backward()
            return float(loss.detach())
        return step

    v = torch.randn(B, C, s, s, requires_grad=True)
    return make_step, make_loss_step, v, head_name, N


def _worker_memory(args) -> dict:
    import torch

    make_step, _, v, head_name, N = _setup(args)
    step = make_step(args.variant)
    # calibration: does RSS see a 64 MiB tensor come and go?
    r0 = _rss_bytes()
    t = torch.ones(16 * 1024 * 1024)
    r1 = _rss_bytes()
    del t
    r2 = _rss_bytes()
    calib = {"alloc_seen_mib": (r1 - r0) / 2**20, "after_free_mib": (r2 - r0) / 2**20}
    rss0 = _rss_bytes()
    loss = step(v)
    peak = _maxrss_bytes() - rss0
    return {"variant": args.variant, "peak_mib": peak / 2**20, "loss": loss, "head": head_name,
            "calib": calib, "N": N, "threads": torch.get_num_threads()}


def _worker_time(args) -> dict:
    """All variants in one process, interleaved round by round (fair under a fluctuating machine load)."""
    make_step, make_loss_step, v, head_name, N = _setup(args)
    steps = {name: make_step(name) for name in args.variants.split(",")}
    for name in ("chunked", "naive"):
        if name in steps:
            steps[f"{name}/loss"] = make_loss_step(name)
    times = {name: [] for name in steps}
    for r in range(args.iters + 1):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(v)
            if r > 0:  # round 0 is the warm-up
                times[name].append(time.perf_counter() - t0)
    return {name: {"time_s": statistics.median(ts), "min_s": min(ts), "times": ts} for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", type=int, default=60, help="prior grid side (N = prior**2)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=150)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (median), after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="class", choices=("class", "mask"))
    ap.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default: ~16 MiB chunks)")
    ap.add_argument("--head", default="cpnet", choices=("standin", "cpnet"))
    ap.add_argument("--variants", default="head,chunked,naive")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--measure-time", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.variant:  # memory worker
        print(json.dumps(_worker_memory(args)))
        return
    if args.measure_time:
        print(json.dumps(_worker_time(args)))
        return

    base = [sys.executable, __file__, "--prior", str(args.prior), "--batch", str(args.batch),
            "--classes", str(args.classes), "--iters", str(args.iters), "--threads", str(args.threads),
            "--mode", args.mode, "--head", args.head, "--variants", args.variants]
    if args.chunk_rows:
        base += ["--chunk-rows", str(args.chunk_rows)]

    def run(extra, env):
        proc = subprocess.run(base + extra, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"benchmark worker {extra} failed (exit {proc.returncode})")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    threads_env = {"OMP_NUM_THREADS": str(args.threads)}
    results = {}
    for variant in args.variants.split(","):
        results[variant] = run(["--variant", variant],
                               dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", **threads_env))
    timing = run(["--measure-time"], dict(os.environ, **threads_env))
    for variant, t in timing.items():
        if variant in results:
            results[variant].update(t)

    any_r = next(iter(results.values()))
    n = any_r["N"]
    print(f"Context Prior head + Affinity Loss, CPU, prior {args.prior}x{args.prior} (N={n}), batch {args.batch}, "
          f"{args.classes} classes, ignore_mode={args.mode!r}, {any_r['threads']} threads, chunk rows "
          f"{args.chunk_rows or 'default (~16 MiB)'}")
    print(f"head: {any_r['head']}")
    print(f"one (B, N, N) float32 map: {args.batch * n * n * 4 / 2**20:.0f} MiB")
    print("memory: peak RSS during the first forward+backward minus RSS before it, fresh process per variant, "
          "MALLOC_MMAP_THRESHOLD_=65536\n"
          f"        (calibration: a 64 MiB tensor showed as {any_r['calib']['alloc_seen_mib']:.0f} MiB, "
          f"{any_r['calib']['after_free_mib']:.0f} MiB left after freeing it)")
    print(f"time: median (and min) of {args.iters} forward+backward iterations after a warm-up round, all variants "
          "in one process, interleaved round by round\n")
    print(f"{'variant':<16}{'median [s]':>12}{'min [s]':>10}{'peak [MiB]':>12}{'over head [MiB]':>17}{'total out':>14}")
    head_peak = results["head"]["peak_mib"] if "head" in results else None
    for name, r in results.items():
        extra = f"{r['peak_mib'] - head_peak:>17.0f}" if head_peak is not None and name != "head" else f"{'-':>17}"
        print(f"{name:<16}{r['time_s']:>12.3f}{r['min_s']:>10.3f}{r['peak_mib']:>12.0f}{extra}{r['loss']:>14.4f}")
    for name in ("chunked/loss", "naive/loss"):
        if name in timing:
            t = timing[name]
            print(f"{name:<16}{t['time_s']:>12.3f}{t['min_s']:>10.3f}{'-':>12}{'-':>17}{'-':>14}")
    print("(x/loss: the loss alone, forward+backward on fixed (B, N, N) logits; naive gets sigmoid(z) computed "
          "inside the timed step)")
    if "chunked" in results and "naive" in results:
        c, nv = results["chunked"], results["naive"]
        mem_ratio = c["peak_mib"] / nv["peak_mib"]
        time_ratio = c["time_s"] / nv["time_s"]
        print(f"\nhead + loss  memory ours/naive: {mem_ratio:.2f}  (target <= 0.70: "
              f"{'met' if mem_ratio <= 0.7 else 'NOT met'})")
        print(f"head + loss  time   ours/naive: {time_ratio:.2f}  (target <= 1.00: "
              f"{'met' if time_ratio <= 1.0 else 'NOT met'}; min/min {c['min_s'] / nv['min_s']:.2f})")
        if "chunked/loss" in timing:
            lc, ln = timing["chunked/loss"], timing["naive/loss"]
            print(f"loss alone   time   ours/naive: {lc['time_s'] / ln['time_s']:.2f}  "
                  f"(min/min {lc['min_s'] / ln['min_s']:.2f})")
        if head_peak is not None:
            mc, mn = c["peak_mib"] - head_peak, nv["peak_mib"] - head_peak
            print(f"loss alone   memory over the head: ours {mc:.0f} MiB, naive {mn:.0f} MiB "
                  f"(ours/naive {mc / mn:.2f})")


if __name__ == "__main__":
    main()
