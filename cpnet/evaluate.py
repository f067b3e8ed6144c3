"""Evaluate a checkpoint: mIoU, per-class IoU, pixel accuracy and mean accuracy.

    cpnet evaluate runs/quickstart
    cpnet evaluate runs/ade/best.pt --data-root data/ade/ADEChallengeData2016 --json ade_ms.json
    cpnet evaluate runs/ade/best.pt --scales 1 --no-flip          # single scale

CHECKPOINT_OR_RUN_DIR is a checkpoint file or a run directory (its best.pt, else
the newest checkpoint). Data, classes and model come from the checkpoint's own
config; --data-root points at the data on this machine. The mode, test scales and
flip are the config's ``eval`` section unless a flag overrides them; how windows,
scales and flips are combined is mmseg's (:mod:`cpnet.inference`).
"""

from __future__ import annotations

import copy
import sys
import time

import torch

from .config import Config
from .inference import predict_image, predict_probs, torch_infer_fn
from .runtime import UserError, atomic_write_json
from .runtime.log import get_logger
from .runtime.metrics import ConfusionMatrix, format_table

log = get_logger("evaluate")


@torch.no_grad()
def evaluate_model(model, dataset, cfg: Config, device="cpu", rank: int = 0, world: int = 1,
                   mode: str | None = None, scales=None, flip: bool | None = None, progress: bool = True,
                   infer=None) -> dict:
    """Confusion-matrix metrics of ``model`` (or of any ``infer`` callable) over ``dataset``.

    ``mode``, ``scales``, ``flip``: default the config's ``eval`` section. Each image is read as uint8 and
    resized per scale as a deployed model's input is (:func:`cpnet.inference.predict_image`), so whole mode
    at scale 1 without flip is the deployed model's preprocessing and postprocessing. Under
    torch.distributed each rank takes every world-th image and the matrices are summed.
    """
    mode = mode or cfg.eval.mode
    scales = tuple(scales) if scales is not None else tuple(cfg.eval.scales)
    flip = cfg.eval.flip if flip is None else flip
    if infer is None:
        model.eval()
        infer = torch_infer_fn(model, device)
    num_classes = cfg.model.num_classes
    cm = ConfusionMatrix(num_classes, cfg.data.ignore_index)
    indices = list(range(rank, len(dataset), world))
    raw = hasattr(dataset, "transform")
    if raw:  # the uint8 image as loaded: every scale is resized and normalised from it
        from .data.transforms import RawTransform

        dataset = copy.copy(dataset)
        dataset.transform = RawTransform()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=None,
                                         num_workers=min(cfg.data.num_workers, 2))
    it = loader
    if progress and rank == 0:
        from .runtime.progress import progress as bar
        it = bar(loader, total=len(indices), desc="eval", unit="img")
    base_scale = eval_base_scale(cfg)  # the same for every image
    skipped = 0
    noted = False  # whether the first image's aspect was checked against the input's (whole mode)
    t0 = time.perf_counter()
    for sample in it:
        if sample is None:
            skipped += 1
            continue
        image, label = sample
        if mode == "whole" and rank == 0 and not noted:
            from .runtime.preprocess import aspect_note

            noted = True
            note = aspect_note(tuple(label.shape[-2:]), cfg.crop_size)
            if note:
                log.warning(note)
        if raw:
            probs = predict_image(image.numpy(), infer, cfg.crop_size, num_classes, cfg.data.mean, cfg.data.std,
                                  mode=mode, scales=scales, flip=flip, overlap=cfg.eval.slide_overlap,
                                  base_scale=base_scale)
        else:  # a dataset that hands out normalised tensors
            probs = predict_probs(image.unsqueeze(0), infer, cfg.crop_size, num_classes, mode=mode, scales=scales,
                                  flip=flip, overlap=cfg.eval.slide_overlap, base_scale=base_scale)
        cm.update(probs.argmax(1)[0], label)
    cm.all_reduce()
    if world == 1 and len(dataset) and skipped == len(dataset):
        raise UserError(f"no usable evaluation sample: all {skipped} were skipped as bad data; fix the data")
    if world == 1 and int(cm.mat.sum()) == 0 and len(dataset) > skipped:
        raise UserError(f"no labelled pixel in {len(dataset) - skipped} evaluation image(s): every mask pixel is "
                        f"data.ignore_index ({cfg.data.ignore_index}) or out of range, so mIoU is undefined; check "
                        f"the masks (class ids 0 to {num_classes - 1})")
    result = cm.compute(list(getattr(dataset, "classes", [])) or None)
    result.update({"mode": mode, "scales": list(scales), "flip": flip, "images": len(dataset) - skipped if world == 1 else None,
                   "skipped": skipped, "seconds": time.perf_counter() - t0})
    return result


@torch.no_grad()
def prior_row_heatmap(model, x: torch.Tensor, pixel: tuple[int, int] | None = None):
    """Heat map (H, W, 3) of one row of the prior map P: which pixels the model thinks share ``pixel``'s class.

    Returns None for models without a Context Prior head.
    """
    from .runtime.draw import heatmap

    head = getattr(model, "decode_head", None)
    if head is None or not hasattr(head, "prior_conv"):
        return None
    was_training = model.training
    model.eval()
    _, c4 = model.backbone(x[:1])
    _, _, P = head(c4)
    model.train(was_training)
    gh, gw = model.cfg.prior_size
    py, px = pixel or (gh // 2, gw // 2)
    row = P[0, py * gw + px].reshape(gh, gw).float().cpu().numpy()
    heat = heatmap(row, size=tuple(x.shape[-2:]))
    sy, sx = x.shape[-2] // gh, x.shape[-1] // gw
    heat[py * sy:(py + 1) * sy, px * sx:(px + 1) * sx] = (0, 255, 0)  # mark the query pixel
    return heat


def eval_base_scale(cfg: Config):
    """Slide mode's base scale (long, short): the data's base scale, as mmseg's test Resize (training's too)."""
    from .data.transforms import base_scale_of

    return base_scale_of(cfg.data, cfg.crop_size)


def describe(mode: str, scales, flip: bool) -> str:
    """``slide, scales 0.5/1/1.5, flip`` in words, for logs."""
    return f"{mode}, scale{'s' if len(scales) > 1 else ''} {'/'.join(f'{s:g}' for s in scales)}, " \
           f"{'flip' if flip else 'no flip'}"


#: Test-time scales: mmseg's configs use 6 (0.5 to 1.75); scale 50 of a 2048x1024 frame is 100k x 51k pixels.
MAX_SCALES, MAX_SCALE = 8, 4.0


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--scales {text!r}: give comma-separated numbers, e.g. 0.5,0.75,1,1.5") from None
    if not scales or any(s <= 0 for s in scales):
        raise UserError(f"--scales {text!r}: scales must be positive")
    if len(scales) > MAX_SCALES or max(scales) > MAX_SCALE:
        raise UserError(f"--scales {text!r}: at most {MAX_SCALES} scales of at most {MAX_SCALE:g} (each scale is a "
                        f"pass over every image, and its area grows with the square; mmseg's go to 1.75)")
    return scales


DESCRIPTION = """Evaluate a checkpoint: mIoU, per-class IoU, pixel accuracy and mean accuracy.

Data, classes and model come from the checkpoint's own config; --data-root points at the
data on this machine."""

EXAMPLES = """cpnet evaluate runs/quickstart
cpnet evaluate runs/ade/best.pt --data-root data/ade/ADEChallengeData2016   # the config's test scales and flip
cpnet evaluate runs/ade/best.pt --scales 1 --no-flip                       # single scale"""


def add_arguments(p) -> None:
    from .cli import args as cli_args

    cli_args.add_input(p, "CHECKPOINT|RUN_DIR", "a checkpoint, or a run directory (its best.pt, else the newest checkpoint)")
    cli_args.add_data_root(p, "on this machine (default: the one in the checkpoint's config)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the config's val split)")
    p.add_argument("--mode", choices=["whole", "slide"], help="whole image or sliding window (default: the config's eval.mode)")
    p.add_argument("--scales", metavar="S,S,...",
                   help="comma-separated test scales, e.g. 0.5,0.75,1,1.5,1.75 (default: the config's eval.scales)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_const", const=True, default=None,
                      help="add horizontally flipped inputs (default: the config's eval.flip)")
    flip.add_argument("--no-flip", dest="flip", action="store_const", const=False,
                      help="no flipped inputs, whatever the config says")
    p.add_argument("--on-bad-data", choices=["stop", "skip"],
                   help="what an unreadable image or mask does: stop with its name (default) or skip it")
    cli_args.add_json(p, "the metrics")
    cli_args.add_runtime(p, device=True)


def run(args) -> int:
    from .checkpoint import load_model
    from .data import build_dataset
    from .runtime.device import resolve_device
    from .runtime.files import check_output

    if args.json:
        check_output(args.json)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg, ckpt = load_model(args.input, device)
    if args.data_root:
        cfg.data.root = args.data_root
    if args.on_bad_data:
        cfg.data.on_bad_data = args.on_bad_data
    scales = parse_scales(args.scales) if args.scales else tuple(cfg.eval.scales)
    flip = cfg.eval.flip if args.flip is None else args.flip
    split = args.split or cfg.data.val_split
    dataset = build_dataset(cfg.data, split, cfg.crop_size, train=False, num_classes=cfg.model.num_classes)
    result = evaluate_model(model, dataset, cfg, device, mode=args.mode, scales=scales, flip=flip,
                            progress=not args.no_progress)
    result["checkpoint"] = ckpt["path"]
    result["split"] = split
    print(format_table(result))
    given = [f for f, v in (("--mode", args.mode), ("--scales", args.scales),
                            ("--flip" if args.flip else "--no-flip", args.flip)) if v is not None]
    source = "flags " + ", ".join(given) + " over the config" if given else "the config's eval section"
    print(f"{result['images']} images, mode {result['mode']}, scales {result['scales']}, flip {result['flip']} "
          f"({source})"
          + (f", {result['skipped']} skipped (bad data)" if result["skipped"] else ""))
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    from .cli import run_verb

    return run_verb(__name__, argv)


if __name__ == "__main__":
    sys.exit(main())
