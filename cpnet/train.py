"""Train CPNet: one process (CPU or one GPU), or many GPUs / nodes / CPU processes through torchrun.

    cpnet train quickstart --data-root data/synthetic -o runs/quickstart
    torchrun --nproc_per_node 4 -m cpnet.train ade20k_r50 --init-backbone resnet50_v1c.pth
    cpnet train quickstart -o runs/quickstart --resume
    cpnet train quickstart train.iters=500 train.lr=0.01   # key.sub=value overrides

The run directory holds config.yaml, checkpoints/iter_*.pt (+ manifests),
best.pt (by validation mIoU), tb/ (TensorBoard) and val_*.json.

Reproducibility: the order of samples is one global stream (a fresh permutation
per epoch, seeded by train.seed) cut into global batches, and each sample's
augmentation is seeded by its position in that stream. So a resumed run sees
exactly the samples and augmentations an uninterrupted one would, whatever the
number of workers, and the model's own randomness (dropout) is restored from the
checkpoint's RNG state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import yaml

from .checkpoint import config_of, iter_checkpoints, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, check_memory, hw_text, load_config
from .runtime import CheckFailed, CpnetError, UserError, atomic_write_json, atomic_write_text, manifest_path
from .runtime.device import resolve_device
from .runtime.files import RUN_LOCK, check_output, lock_run_dir
from .runtime.log import get_logger
from .losses import build_loss

log = get_logger("train")


# ----------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device_arg: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_arg, local_rank)
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, device)


def all_true(flag: bool, d: Dist) -> bool:
    if not d.enabled:
        return flag
    t = torch.tensor([0 if flag else 1], device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return int(t.item()) == 0


# ----------------------------------------------------------------------------- data order


class GlobalStreamSampler(torch.utils.data.Sampler):
    """Yields this rank's micro-batches from one global sample stream, starting at a given step.

    Step k of the stream is global batch k: positions [k*B, (k+1)*B) of the
    concatenated per-epoch permutations; rank r takes its slice. Each item is
    (dataset index, sample seed), the seed being derived from the position.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, start_step: int, total_steps: int):
        self.n, self.gb, self.rank, self.world = n, global_batch, rank, world
        self.local = global_batch // world
        self.seed, self.start, self.total = seed, start_step, total_steps
        self._perm_epoch, self._perm = -1, None

    def _index(self, pos: int) -> int:
        epoch, off = divmod(pos, self.n)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
        return self._perm[off]

    def __iter__(self):
        for step in range(self.start, self.total):
            first = step * self.gb + self.rank * self.local
            yield [(self._index(p), (self.seed << 32) + p) for p in range(first, first + self.local)]

    def __len__(self):
        return max(0, self.total - self.start)


class SeededSamples(torch.utils.data.Dataset):
    """Seeds every RNG an augmentation may use from the sample's stream position, then loads it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        # fork the RNGs so that, when loading runs in the main process, the model's stream is untouched
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % (2 ** 32))
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


# ----------------------------------------------------------------------------- schedule


def poly_lambda(cfg: Config):
    t = cfg.train

    def factor(it: int) -> float:
        poly = (1 - min(it, t.iters) / t.iters) ** t.poly_power
        lr = (t.lr - t.min_lr) * poly + t.min_lr
        if t.warmup_iters and it < t.warmup_iters:
            k = (1 - it / t.warmup_iters) * (1 - t.warmup_ratio)
            lr = lr * (1 - k)
        return lr / t.lr

    return factor


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- main loop


class NonFiniteLoss(CheckFailed):
    """The loss became NaN or infinite: training stops (exit 1) and keeps the last good checkpoint."""


def build_config(args) -> Config:
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.on_bad_data:
        overrides.append(f"data.on_bad_data={args.on_bad_data}")
    cfg = load_config(args.input, overrides)
    check_memory(cfg, training=True)
    return cfg


def make_loaders(cfg: Config, d: Dist, start_step: int):
    from .data import build_dataset, collate_skip

    train_set = build_dataset(cfg.data, cfg.data.train_split, cfg.crop_size, train=True,
                              num_classes=cfg.model.num_classes)
    val_set = build_dataset(cfg.data, cfg.data.val_split, cfg.crop_size, train=False,
                            num_classes=cfg.model.num_classes)
    global_micro = cfg.train.batch_size // cfg.train.accum_steps
    if cfg.train.batch_size % (cfg.train.accum_steps * d.world):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must divide by accum_steps x processes "
                          f"= {cfg.train.accum_steps} x {d.world}")
    total_micro = cfg.train.iters * cfg.train.accum_steps
    sampler = GlobalStreamSampler(len(train_set), global_micro, d.rank, d.world, cfg.train.seed,
                                  start_step * cfg.train.accum_steps, total_micro)
    workers = cfg.data.num_workers
    train_loader = torch.utils.data.DataLoader(
        SeededSamples(train_set), batch_sampler=sampler, num_workers=workers, collate_fn=collate_skip,
        pin_memory=d.device.type == "cuda", persistent_workers=False,
        # its own generator: creating an iterator must not draw from the global RNG, or a resumed
        # run's dropout stream would be shifted by one draw
        generator=torch.Generator().manual_seed(cfg.train.seed),
        prefetch_factor=4 if workers > 0 else None)
    return train_set, val_set, train_loader


def build_training_model(cfg: Config, d: Dist, init_backbone: str | None):
    from .models import CPNet, load_backbone_weights

    model = CPNet(cfg.model)
    if init_backbone:
        report = load_backbone_weights(model, init_backbone)
        if d.main:
            log.info(f"backbone: loaded {report['loaded']} tensors from {init_backbone}")
    if d.enabled and cfg.train.sync_bn:
        from .sync_bn import convert_sync_batchnorm
        model = convert_sync_batchnorm(model, d.device)
    model.to(d.device)
    return model


RUN_FILES = ("config.yaml", "best.pt", "best.pt.json", "checkpoints", "tb")


def held_run(work_dir: Path) -> list[str]:
    """The files of an earlier run in ``work_dir`` (empty when it holds none)."""
    if not work_dir.is_dir():
        return []
    found = [name for name in RUN_FILES if (work_dir / name).exists()]
    return found + sorted(p.name for p in work_dir.glob("val_*.json"))


def refuse_mixed_run(work_dir: Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse, with nothing touched, to mix two runs in one folder; the earlier run's files (to continue or remove)."""
    check_output(work_dir, kind="dir", what="run directory")
    held = held_run(work_dir)
    if held and not resume and not overwrite:
        raise UserError(f"{work_dir}: already holds a run ({', '.join(held[:3])}...); pass --resume to continue it "
                        f"or --overwrite to delete its files and start again, or choose another -o")
    return held


def prepare_run_dir(work_dir: Path, resume: bool, overwrite: bool, d: Dist) -> None:
    """Refuse to mix two runs in one folder: an earlier run is continued (--resume) or removed (--overwrite)."""
    held = refuse_mixed_run(work_dir, resume, overwrite)
    if held and overwrite and not resume and d.main:
        import shutil

        for name in held:
            target = work_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        log.warning(f"--overwrite: removed the earlier run's files from {work_dir}")
    if d.enabled:
        dist.barrier()


# ----------------------------------------------------------------------------- one run: resume / step / validate
# Cut as torchvision's references/segmentation (train_one_epoch, evaluate): named phases that take what they use.


@dataclasses.dataclass
class Run:
    """What the phases of one training run share: its objects, where it writes, and the best mIoU so far."""
    cfg: Config
    work_dir: Path
    d: Dist
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    best_miou: float = -1.0
    classes: list = dataclasses.field(default_factory=list)
    palette: list = dataclasses.field(default_factory=list)
    writer: object = None  # TensorBoard's SummaryWriter, on the main process only

    def state(self, it: int) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}, "iter": it, "rng": rng_state(),
            "best_miou": self.best_miou, "config": self.cfg.to_dict(), "classes": list(self.classes),
            "palette": [list(map(int, c)) for c in self.palette],
        }

    def require_finite(self, it: int) -> None:
        """Nothing non-finite is ever written as a checkpoint (best.pt included)."""
        bad = [n for n, t in self.model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise NonFiniteLoss(f"weights became non-finite by iteration {it} (first: {bad[0]}); "
                                f"checkpoint not written. Lower train.lr or resume from the last good checkpoint")

    def checkpoint(self, it: int) -> None:
        if not self.d.main:
            return
        self.require_finite(it)
        save_checkpoint(self.work_dir / "checkpoints" / f"iter_{it:07d}.pt", self.state(it), self.cfg, self.classes,
                        self.palette)
        for _, old in iter_checkpoints(self.work_dir)[:-self.cfg.train.keep_ckpts]:
            old.unlink(missing_ok=True)
            manifest_path(old).unlink(missing_ok=True)


def resume_run(run: Run) -> int:
    """Load the newest checkpoint of ``run.work_dir`` into the run (weights, optimizer, scheduler, scaler, RNG,
    best mIoU); the iteration to go on from (0 when there is none)."""
    cfg, d = run.cfg, run.d
    ckpt_path = latest_checkpoint(run.work_dir)
    if ckpt_path is None:
        if d.main:
            log.warning(f"--resume: no checkpoint in {run.work_dir / 'checkpoints'}, starting from iteration 0")
        return 0
    ckpt = load_checkpoint(ckpt_path)
    lacking = [k for k in ("optimizer", "scheduler", "rng", "iter") if k not in ckpt]
    if lacking:
        raise UserError(f"{ckpt_path}: cannot resume from it: it holds no {', '.join(lacking)} (a weights-only "
                        f"checkpoint); start a new run with -o elsewhere instead")
    theirs = config_of(ckpt).to_dict()["model"]
    if theirs != cfg.to_dict()["model"]:
        differ = sorted(k for k, v in cfg.to_dict()["model"].items() if theirs.get(k) != v)
        raise UserError(f"{ckpt_path}: was trained with another model config (model.{', model.'.join(differ)} "
                        f"differ: {', '.join(f'{theirs.get(k)!r}' for k in differ)} in the checkpoint); "
                        f"use another run directory (-o) or the same config")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if "scaler" in ckpt and ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    start_iter, run.best_miou = int(ckpt["iter"]), float(ckpt.get("best_miou", -1.0))
    if d.main:
        log.info(f"resumed from {ckpt_path} at iteration {start_iter}")
        if start_iter >= cfg.train.iters:
            log.warning(f"--resume: the run already did {start_iter} iterations and train.iters is "
                        f"{cfg.train.iters}: nothing left to train (raise train.iters to go on)")
    return start_iter


def forward_backward(run: Run, ddp_model: nn.Module, criterion, images, labels, amp_dtype, sync: bool,
                     it: int) -> dict:
    """One micro-batch: forward, loss (refused when not finite on any process), backward scaled by 1/accum_steps;
    ``sync`` False skips DDP's gradient all-reduce (not the last micro-batch of a step). The loss terms."""
    d = run.d
    sync_ctx = ddp_model.no_sync() if (d.enabled and not sync) else contextlib.nullcontext()
    with sync_ctx:
        with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = ddp_model(images)
        outputs = {k: v.float() for k, v in outputs.items()}
        total, terms = criterion(outputs, labels)
        finite = all_true(bool(torch.isfinite(total)), d)
        if not finite:
            raise NonFiniteLoss(f"loss is not finite at iteration {it + 1} "
                                f"({', '.join(f'{k}={float(v):.4g}' for k, v in terms.items())}); "
                                f"nothing was saved for this iteration. Lower train.lr, or try train.amp=bf16/off")
        del outputs  # drop the logits and P here: backward keeps what it needs, nothing more
        run.scaler.scale(total / run.cfg.train.accum_steps).backward()
    return terms


def optimizer_step(run: Run) -> None:
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()


def log_training(run: Run, it: int, sums: dict, ips: float, bar) -> None:
    """The mean loss terms since the last log, the learning rate and throughput: TensorBoard and the bar (or a
    log line when there is no bar)."""
    cfg, writer = run.cfg, run.writer
    lr = run.optimizer.param_groups[0]["lr"]
    n = cfg.train.log_interval if it % cfg.train.log_interval == 0 else it % cfg.train.log_interval
    for k, v in sums.items():
        writer.add_scalar(f"loss/{k}", v / n, it)
    writer.add_scalar("train/lr", lr, it)
    writer.add_scalar("train/images_per_s", ips, it)
    post = {k: f"{v / n:.3f}" for k, v in sums.items()}
    if bar is not None:
        bar.set_postfix(lr=f"{lr:.2e}", img_s=f"{ips:.1f}", **post)
    else:
        log.info(f"iter {it}/{cfg.train.iters} lr {lr:.2e} {ips:.1f} img/s " +
                 " ".join(f"{k} {v}" for k, v in post.items()))


def validate(run: Run, it: int, val_set, val_setting: str) -> dict:
    """Validation at one scale without flip (cheap; it picks best.pt): every process evaluates its share, the
    main one logs, writes val_<it>.json and, on a new best mIoU, best.pt."""
    from .evaluate import evaluate_model, prior_row_heatmap
    from .runtime.draw import colorize
    from .runtime.preprocess import denormalize

    cfg, d, model, writer = run.cfg, run.d, run.model, run.writer
    model.eval()
    result = evaluate_model(model, val_set, cfg, d.device, rank=d.rank, world=d.world, scales=(1.0,), flip=False,
                            progress=False)
    if d.main:
        miou = result["mIoU"]
        writer.add_scalar("val/mIoU", miou, it)
        writer.add_scalar("val/aAcc", result["aAcc"], it)
        _log_images(writer, model, val_set, cfg, d.device, it, colorize, denormalize, prior_row_heatmap)
        atomic_write_json(run.work_dir / f"val_{it:07d}.json", result)
        improved = miou > run.best_miou
        if improved:
            run.require_finite(it)
            run.best_miou = miou
            save_checkpoint(run.work_dir / "best.pt", run.state(it), cfg, run.classes, run.palette)
        msg = (f"val iter {it}/{cfg.train.iters} ({val_setting})  mIoU {miou:.2f}  aAcc {result['aAcc']:.2f}  "
               f"mAcc {result['mAcc']:.2f}  best {run.best_miou:.2f}{'  (new best, saved best.pt)' if improved else ''}")
        log.info(msg)
    model.train()
    return result


def train_loop(run: Run, ddp_model: nn.Module, criterion, loader, train_set, val_set, start_iter: int, amp_dtype,
               val_setting: str, bar) -> dict:
    """From ``start_iter`` to train.iters: accumulate micro-batches into steps, log, validate and checkpoint at
    their intervals. What the run did: iterations, best and last validation, samples skipped."""
    cfg, d = run.cfg, run.d
    accum = cfg.train.accum_steps
    skipped, it, micro = 0, start_iter, 0
    t_last, imgs_since = time.perf_counter(), 0
    sums, last_val = {}, None
    empty_streak = 0  # consecutive batches with no usable sample, on any process
    for images, labels, n_bad in loader:
        skipped += n_bad
        empty_streak = empty_streak + 1 if all_true(images is None, d) else 0
        if empty_streak * cfg.train.batch_size >= max(len(train_set), cfg.train.batch_size):
            raise UserError(f"no usable training sample in a whole epoch ({skipped} skipped as bad data under "
                            f"{cfg.data.root}); fix the data or check data.root")
        if images is not None:
            images = images.to(d.device, non_blocking=True)
            labels = labels.to(d.device, non_blocking=True)
            terms = forward_backward(run, ddp_model, criterion, images, labels, amp_dtype,
                                     sync=not (micro + 1) % accum, it=it)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / accum
            imgs_since += images.shape[0] * d.world
        micro += 1
        if micro % accum:
            continue
        optimizer_step(run)
        it += 1
        if bar is not None:
            bar.update(1)
        if it % cfg.train.log_interval == 0 or it == cfg.train.iters:
            now = time.perf_counter()
            if d.main:
                log_training(run, it, sums, imgs_since / max(now - t_last, 1e-9), bar)
            sums, t_last, imgs_since = {}, now, 0
        if it % cfg.train.val_interval == 0 or it == cfg.train.iters:
            last_val = validate(run, it, val_set, val_setting)
        if it % cfg.train.ckpt_interval == 0 or it == cfg.train.iters:
            run.checkpoint(it)
        if it % cfg.train.val_interval == 0 or it % cfg.train.ckpt_interval == 0:
            t_last = time.perf_counter()  # throughput counts training only, not validation or saving
    return {"iter": it, "best_miou": run.best_miou, "last_val": last_val, "skipped": skipped,
            "trained": it - start_iter}


def train(cfg: Config, work_dir: Path, resume: bool, init_backbone: str | None, d: Dist, progress: bool = True,
          claim: Callable[[], None] | None = None) -> dict:
    """Train into ``work_dir``. ``claim``: called once the model is built (a bad backbone file fails before the
    run directory is touched) to lock the run directory and clear it (--overwrite)."""
    from .evaluate import describe

    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    model = build_training_model(cfg, d, init_backbone)  # a bad backbone file fails before the run dir exists
    if claim is not None:
        claim()
    work_dir.mkdir(parents=True, exist_ok=True)
    criterion = build_loss(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(cfg))
    cuda = d.device.type == "cuda"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp) if cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    run = Run(cfg, work_dir, d, model, optimizer, scheduler, scaler)
    start_iter = resume_run(run) if resume else 0

    train_set, val_set, loader = make_loaders(cfg, d, start_iter)
    run.classes, run.palette = train_set.classes, train_set.palette
    if d.main:
        atomic_write_text(work_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if cuda else None) if d.enabled else model
    if d.main:
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(str(work_dir / "tb"), purge_step=start_iter or None)

    # Validation during training runs at one scale without flip (cheap; it picks best.pt); it says so, and
    # cpnet evaluate uses the config's test scales and flip.
    val_setting = describe(cfg.eval.mode, (1.0,), False)
    if d.main:
        test_setting = describe(cfg.eval.mode, tuple(cfg.eval.scales), cfg.eval.flip)
        log.info(f"validation: {val_setting}" + ("" if test_setting == val_setting else
                                                 f" (the config's test setting, {test_setting}, is cpnet evaluate's)"))

    model.train()
    bar = None
    if d.main and progress:
        from .runtime.progress import progress as progress_bar
        bar = progress_bar(total=cfg.train.iters, initial=start_iter, desc="train", unit="it")
    result = train_loop(run, ddp_model, criterion, loader, train_set, val_set, start_iter, amp_dtype, val_setting, bar)
    if bar is not None:
        bar.close()
    if run.writer is not None:
        run.writer.close()
    if result["skipped"] and d.main:
        log.warning(f"skipped {result['skipped']} bad training samples (--on-bad-data skip)")
    return result


@torch.no_grad()
def _log_images(writer, model, val_set, cfg, device, it, colorize, denormalize, prior_row_heatmap):
    sample = val_set[0]
    if sample is None:
        return
    image, label = sample
    x = image.unsqueeze(0).to(device)
    import torch.nn.functional as F
    S = tuple(cfg.crop_size)
    xin = F.interpolate(x, size=S, mode="bilinear", align_corners=False) if tuple(x.shape[-2:]) != S else x
    logits = model(xin)
    pred = logits.argmax(1)[0].cpu()
    lab = F.interpolate(label[None, None].float(), size=S, mode="nearest")[0, 0].long()
    palette = val_set.palette
    picture = denormalize(xin[0].detach().float().cpu().numpy(), cfg.data.mean, cfg.data.std)
    writer.add_image("val/input", picture, it, dataformats="HWC")
    writer.add_image("val/prediction", colorize(pred.numpy(), palette), it, dataformats="HWC")
    writer.add_image("val/ground_truth", colorize(lab.numpy(), palette), it, dataformats="HWC")
    heat = prior_row_heatmap(model, xin)
    if heat is not None:
        writer.add_image("val/prior_row_center", heat, it, dataformats="HWC")


DESCRIPTION = """Train a CPNet: on the CPU, one GPU, or many GPUs / nodes / CPU processes through torchrun.

The run directory holds config.yaml, checkpoints/iter_*.pt (+ manifests), best.pt (by
validation mIoU), tb/ (TensorBoard) and val_*.json; --resume continues where a run stopped,
seeing exactly the samples and augmentations an uninterrupted run would."""

EXAMPLES = """cpnet train quickstart --data-root data/synthetic -o runs/quickstart
cpnet train quickstart -o runs/quickstart --resume
cpnet train quickstart train.iters=500 train.lr=0.01     # key.sub=value config overrides
torchrun --nproc_per_node 4 -m cpnet.train ade20k_r50 --init-backbone resnet50_v1c.pth"""


def add_arguments(p) -> None:
    from .cli import args as cli_args

    cli_args.add_input(p, "CONFIG",
                       "a named config (quickstart, ade20k_r50, ...; cpnet summary lists them) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.iters=500")
    cli_args.add_output(p, "run directory (default runs/<config name>)")
    cli_args.add_data_root(p, "on this machine (overrides data.root)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run directory")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's checkpoints, logs and config in the run directory and start again")
    p.add_argument("--init-backbone", metavar="FILE",
                   help="ImageNet backbone weights (a local file; mmcv V1c or torchvision V1b naming)")
    p.add_argument("--on-bad-data", choices=["stop", "skip"],
                   help="what an unreadable image or mask does: stop with its name (default) or skip it")
    cli_args.add_runtime(p, device=True)


def warn_old_torch() -> None:
    """torch before 2.6 has a known bypass of torch.load(weights_only=True); JetPack's own builds may be older."""
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split("a")[0].split(".")[:2] if p.isdigit())
    if version < (2, 6):
        log.warning(f"PyTorch {torch.__version__} predates 2.6, which fixed a bypass of torch.load(weights_only=True): "
                    f"load only checkpoints you made yourself")


@dataclasses.dataclass
class Claim:
    """What this training found in its run directory once it held the lock (None: it has not claimed it)."""
    before: "set[str] | None" = None
    made_dir: bool = False


@contextlib.contextmanager
def undone_on_error(work_dir: Path, claim: Claim, d: Dist):
    """A training that fails before saving a checkpoint (a classes file it cannot read, no usable sample) leaves
    the run directory as it found it: the config.yaml, tb/ and .lock it made are removed, and the folder too when
    it made it. Only once it holds the lock: a training refused because another holds the folder touches nothing
    of the other's. Once a checkpoint exists the run is kept (--resume continues it); Ctrl-C keeps everything."""
    try:
        yield
    except CpnetError:
        if d.main and claim.before is not None and work_dir.is_dir() and not (work_dir / "best.pt").exists() and \
                not any((work_dir / "checkpoints").glob("*.pt")):
            import shutil

            for name in set(os.listdir(work_dir)) - claim.before:
                target = work_dir / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            if claim.made_dir:
                with contextlib.suppress(OSError):
                    work_dir.rmdir()
        raise


def run(args) -> int:
    warn_old_torch()
    try:
        cfg = build_config(args)
        d = setup_distributed(args.device)
        work_dir = Path(args.output or Path("runs") / cfg.name)
        if d.main:
            log.info(f"config {cfg.name}: R{cfg.model.depth} {cfg.model.head} head, input {hw_text(cfg.crop_size)}, "
                     f"prior {hw_text(cfg.model.prior_size)}, {cfg.train.iters} iters, "
                     f"batch {cfg.train.batch_size}, {d.world} process(es) on {d.device.type}; run dir {work_dir}")
        if args.resume and args.overwrite:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        refuse_mixed_run(work_dir, args.resume, args.overwrite)  # before any work, nothing touched
        claimed = Claim()
        with contextlib.ExitStack() as held, undone_on_error(work_dir, claimed, d):
            def claim() -> None:
                # one training (or pipeline) writes into a run directory at a time; rank 0 holds the lock for all
                if d.main:
                    made_dir, lock_there = not work_dir.is_dir(), (work_dir / RUN_LOCK).exists()
                    held.enter_context(lock_run_dir(work_dir))
                    # what is here now, under the lock, is not this training's to remove (the lock file only if
                    # this training made it)
                    claimed.before = set(os.listdir(work_dir)) - (set() if lock_there else {RUN_LOCK})
                    claimed.made_dir = made_dir
                prepare_run_dir(work_dir, args.resume, args.overwrite, d)

            if d.device.type == "cpu":
                torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // d.world))
            result = train(cfg, work_dir, args.resume, args.init_backbone, d, progress=not args.no_progress,
                           claim=claim)
            if d.enabled:
                # rank 0 may still be writing checkpoints and TensorBoard: tear the process group down together,
                # or gloo can abort a rank that leaves while its peer still holds the connection
                dist.barrier()
        if d.main:
            note = "" if result["trained"] or not args.resume else (
                f" (none trained now: --resume found {result['iter']} already done, train.iters {cfg.train.iters})")
            print(f"done: {result['iter']} iterations{note}, best val mIoU {result['best_miou']:.2f}; "
                  f"checkpoints in {work_dir}")
        return 0
    except KeyboardInterrupt:
        log.warning("resume with --resume (the newest checkpoint is kept)")
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(argv=None) -> int:
    from .cli import run_verb

    return run_verb("cpnet.train", argv)


if __name__ == "__main__":
    sys.exit(main())
