"""Print parameters and FLOPs of named configs, after a real forward pass on a random batch.

    cpnet summary                     # every named config
    cpnet summary ade20k_r50 cityscapes_r101 --forward full

FLOPs are counted with PyTorch's own FlopCounterMode on the ``meta`` device at
the config's full input size (so a 768x768 ResNet-101 costs no compute); one
FLOP is a multiply or an add, so GFLOP = 2 x GMAC. Only the inference graph is
counted (no auxiliary head, as the paper reports it).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import hw_text, load_config, named_configs
from .models import CPNet


def count_params(model: CPNet) -> tuple[int, int]:
    """(inference parameters, training parameters); inference leaves out the auxiliary head."""
    total = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for p in model.aux_head.parameters()) if model.aux_head is not None else 0
    return total - aux, total


def count_flops(model_cfg, size: "int | tuple[int, int] | None" = None) -> int:
    """FLOPs of one eval-mode forward at ``size`` (H, W) (default: the config's input), counted on the meta device."""
    size = size or model_cfg.input_size
    h, w = (size, size) if isinstance(size, int) else size
    with torch.device("meta"):
        model = CPNet(model_cfg).eval()
        x = torch.empty(1, 3, h, w)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def summarize(name: str, forward: str = "reduced") -> dict:
    cfg = load_config(name)
    model = CPNet(cfg.model).eval()
    infer_params, train_params = count_params(model)
    flops = count_flops(cfg.model)
    # A real forward proves the config builds and runs; at full size it also gives a CPU latency.
    # The reduced forward keeps the grid's aspect with 8 cells on the short side.
    ph, pw = cfg.model.prior_size
    small = (8, max(1, round(8 * pw / ph))) if ph <= pw else (max(1, round(8 * ph / pw)), 8)
    fcfg = cfg.model if forward == "full" else dataclasses.replace(cfg.model, prior_size=small)
    fmodel = model if forward == "full" else CPNet(fcfg).eval()
    x = torch.randn(1, 3, *fcfg.input_size)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = fmodel(x)
    dt = time.perf_counter() - t0
    assert y.shape == (1, cfg.model.num_classes, *fcfg.input_size), y.shape
    return {
        "name": name,
        "depth": cfg.model.depth,
        "head": cfg.model.head,
        "input": list(cfg.model.input_size),
        "prior": list(cfg.model.prior_size),
        "classes": cfg.model.num_classes,
        "params_infer_m": infer_params / 1e6,
        "params_train_m": train_params / 1e6,
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "forward_input": list(fcfg.input_size),
        "forward_s": dt,
    }


DESCRIPTION = """Parameters and FLOPs of named configs (or YAML files), after a real forward pass on a random batch.

FLOPs are counted at the config's full input on PyTorch's meta device (no compute); one FLOP is
a multiply or an add (GFLOP = 2 x GMAC); the auxiliary head is left out, as the paper counts."""

EXAMPLES = """cpnet summary                                   # every named config
cpnet summary ade20k_r50 cityscapes_r101 --forward full --json sizes.json"""


def add_arguments(p) -> None:
    from .cli import args as cli_args

    cli_args.add_input(p, "CONFIG", "named configs or YAML files (default: every named config)", nargs="*")
    p.add_argument("--forward", choices=["reduced", "full"], default="reduced",
                   help="run the check forward at the full input or at a small one, 8 prior cells on the short "
                        "side (default)")
    cli_args.add_json(p, "the rows")


def run(args) -> int:
    from .runtime import atomic_write_json
    from .runtime.files import check_output

    if args.json:
        check_output(args.json)
    torch.manual_seed(0)
    names = args.input or named_configs()
    header = (f"{'config':<22}{'backbone':>9}{'input':>10}{'prior':>8}{'params (M)':>12}{'+aux (M)':>10}{'GFLOP':>9}"
              f"{'GMAC':>9}{'fwd':>18}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in names:
        r = summarize(name, args.forward)
        rows.append(r)
        fwd = f"{r['forward_s'] * 1000:.0f} ms@{hw_text(r['forward_input'])}"
        print(f"{r['name']:<22}{'R' + str(r['depth']):>9}{hw_text(r['input']):>10}{hw_text(r['prior']):>8}"
              f"{r['params_infer_m']:>12.2f}{r['params_train_m']:>10.2f}{r['gflops']:>9.1f}{r['gmacs']:>9.1f}{fwd:>18}")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


def main(argv=None) -> int:
    from .cli import run_verb

    return run_verb(__name__, argv)


if __name__ == "__main__":
    sys.exit(main())
