"""Configuration: dataclasses with defaults, named YAML files in the package, `key.sub=value` overrides.

A config is resolved in three layers, each overriding the one before:
the dataclass defaults below, a YAML file (a named config shipped in
``cpnet/configs`` or a user's path), then command-line ``key.sub=value`` pairs.
"""

from __future__ import annotations

import dataclasses
import math
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .runtime.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class ConfigError(UserError, ValueError):
    """A user mistake in a config file or override; its message is shown as one line."""


@dataclass
class ModelConfig:
    # head: "cpnet" (full Context Prior layer), "agg" (aggregation module, no prior),
    # "fcn" (dilated FCN head). The last two exist for the ablation.
    head: str = "cpnet"
    depth: int = 50  # 18, 34, 50, 101
    stem: str = "v1c"  # "v1c": deep 3x(3x3) stem (mmcv); "v1b": 7x7 stem (torchvision)
    base_width: int = 64  # channels of the first stage; 64 is the standard ResNet
    num_classes: int = 150
    # the prior grid (h, w): an int for a square grid or [h, w] (the authors take it through _pair);
    # the model input is 8h x 8w. Stored as (h, w).
    prior_size: tuple[int, int] = field(default=(60, 60), metadata={"pair": True})
    head_channels: int = 512
    agg_kernel: int = 11
    # the aggregation module's four depthwise convs carry biases, as the authors' (mmcv ConvModule,
    # bias="auto" without a norm); false only for checkpoints made before they were added
    agg_bias: bool = True
    aux: bool = True
    aux_channels: int = 256
    dropout: float = 0.1

    def __post_init__(self):
        if isinstance(self.prior_size, int) and not isinstance(self.prior_size, bool):
            self.prior_size = (self.prior_size, self.prior_size)  # ModelConfig(prior_size=64) in code

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model input: 8 x the prior grid."""
        h, w = self.prior_size
        return 8 * h, 8 * w

    @property
    def prior_cells(self) -> int:
        """N = h * w, the prior map's side (it is N x N)."""
        h, w = self.prior_size
        return h * w


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # cityscapes | ade20k | pascal_context | folder | synthetic
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = 255
    # random resize as mmseg's RandomResize: the base scale (long, short) times a ratio from scale_range, aspect
    # kept. base_scale empty: the dataset's base in mmseg's configs (ADE20K 2048x512, PASCAL-Context 520x520,
    # Cityscapes 2048x1024), the model input for folder and synthetic data. Slide evaluation's base too.
    base_scale: tuple[int, ...] = ()
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = True
    cat_max_ratio: float = 0.75  # crop retries until no class fills more than this (mmseg's default)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB, 0-255
    std: tuple[float, float, float] = IMAGENET_STD
    num_workers: int = 2
    on_bad_data: str = "stop"  # stop | skip


@dataclass
class LossConfig:
    aux_weight: float = 0.4
    affinity_weight: float = 1.0
    affinity_ignore: str = "class"  # "class": 255 is one more class (authors' code); "mask": ignored pixels drop out
    ohem: bool = False
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100000


@dataclass
class TrainConfig:
    iters: int = 80000
    batch_size: int = 16  # total over all processes
    accum_steps: int = 1
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    min_lr: float = 1e-4
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    amp: str = "bf16"  # bf16 | fp16 | off (CUDA only; the CPU always trains in FP32)
    seed: int = 0
    log_interval: int = 10
    val_interval: int = 4000
    ckpt_interval: int = 4000
    keep_ckpts: int = 3
    sync_bn: bool = True


@dataclass
class EvalConfig:
    mode: str = "whole"  # whole | slide
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    slide_overlap: float = 1 / 3


@dataclass
class Config:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def crop_size(self) -> tuple[int, int]:
        """(H, W): training crops, evaluation windows and the exported input all equal 8 x the prior grid."""
        return self.model.input_size

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))


def hw_text(size) -> str:
    """``(h, w)`` (or an int) as ``"hxw"``, for messages and tables."""
    h, w = (size, size) if isinstance(size, int) else size
    return f"{h}x{w}"


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def _short(value: Any, limit: int = 60) -> str:
    """A repr for an error line, cut short (a YAML of nested aliases can print as megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _coerce(value: Any, target_type: Any, where: str) -> Any:
    origin = getattr(target_type, "__origin__", None)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            value = [yaml.safe_load(v) for v in value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        args = target_type.__args__
        elem = args[0]
        if len(args) > 1 and args[1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, elem, where) for v in value)
    if target_type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true or false, got {_short(value)}")
    if target_type is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
        return int(value)
    if target_type is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e30" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_short(value)}")
        return float(value)
    if target_type is str:
        if value is None:
            return ""
        return str(value)
    return value


def _resolved_types(cls) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _apply(obj: Any, updates: Mapping[str, Any], prefix: str = "") -> None:
    types = _resolved_types(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    names = list(fields)
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            extra = f" (did you mean '{prefix}{hint[0]}'?)" if hint else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{where}'{extra}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{where}' is a section; give its keys, e.g. {where}.<key>=value")
            _apply(current, value, prefix=f"{where}.")
        else:
            if fields[key].metadata.get("pair") and (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                     or isinstance(value, str) and "," not in value):
                value = [value, value]  # one number: a square (h = w)
            setattr(obj, key, _coerce(value, types[key], where))


def parse_overrides(pairs: Iterable[str]) -> dict:
    """Turn ``["train.lr=0.01", "model.aux=false"]`` into a nested dict (values parsed as YAML scalars)."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' must look like key.sub=value")
        key, raw = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override '{pair}' has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}' conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def load_config(source: "str | Path | Mapping | Config | None" = None, overrides: Iterable[str] = ()) -> Config:
    """Build a Config from a named config, a YAML path, a dict, or a Config, then apply overrides."""
    if isinstance(source, Config):
        cfg = from_dict(source.to_dict())
    else:
        cfg = Config()
        if source is None:
            pass
        elif isinstance(source, Mapping):
            _apply(cfg, dict(source))
        else:
            text = str(source)
            path = Path(text)
            if text in named_configs():
                data = _read_yaml(CONFIG_DIR / f"{text}.yaml")
                data.setdefault("name", text)
            elif path.suffix in (".yaml", ".yml") or path.exists():
                if not path.exists():
                    raise ConfigError(f"{path}: config file not found")
                data = _read_yaml(path)
                data.setdefault("name", path.stem)
            else:
                hint = difflib.get_close_matches(text, named_configs(), n=1)
                extra = f"; did you mean '{hint[0]}'?" if hint else f"; named configs: {', '.join(named_configs())}"
                raise ConfigError(f"'{text}' is neither a named config nor a YAML file{extra}")
            _apply(cfg, data)
    overrides = list(overrides)
    if overrides:
        _apply(cfg, parse_overrides(overrides))
    validate(cfg)
    return cfg


def from_dict(data: Mapping) -> Config:
    cfg = Config()
    _apply(cfg, dict(data))
    return cfg


_CHOICES = {
    ("model", "head"): ("cpnet", "agg", "fcn"),
    ("model", "depth"): (18, 34, 50, 101),
    ("model", "stem"): ("v1c", "v1b"),
    ("data", "dataset"): ("cityscapes", "ade20k", "pascal_context", "folder", "synthetic"),
    ("data", "on_bad_data"): ("stop", "skip"),
    ("loss", "affinity_ignore"): ("class", "mask"),
    ("train", "amp"): ("bf16", "fp16", "off"),
    ("eval", "mode"): ("whole", "slide"),
}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# (section, key) -> (test, allowed range in words): every value checked by meaning, in one place
_RANGES = {
    ("model", "num_classes"): (lambda v: 1 <= v <= 65535, "1 to 65535"),
    ("model", "prior_size"): (lambda v: all(x >= 1 for x in v), "1 or more, as one number or [h, w]"),
    ("model", "head_channels"): (lambda v: v >= 1, "1 or more"),
    ("model", "base_width"): (lambda v: v >= 2 and v % 2 == 0, "an even number, 2 or more (the deep stem halves it)"),
    ("model", "agg_kernel"): (lambda v: v >= 1 and v % 2 == 1, "an odd number, 1 or more (it keeps the grid size)"),
    ("model", "aux_channels"): (lambda v: v >= 1, "1 or more"),
    ("model", "dropout"): (lambda v: _finite(v) and 0 <= v < 1, "0 to below 1"),
    ("data", "ignore_index"): (lambda v: 0 <= v <= 255, "0 to 255"),
    ("data", "cat_max_ratio"): (lambda v: _finite(v) and 0 < v <= 1, "above 0 up to 1"),
    ("data", "num_workers"): (lambda v: v >= 0, "0 or more"),
    ("loss", "aux_weight"): (lambda v: _finite(v) and v >= 0, "a finite number, 0 or more"),
    ("loss", "affinity_weight"): (lambda v: _finite(v) and v >= 0, "a finite number, 0 or more"),
    ("loss", "ohem_thresh"): (lambda v: _finite(v) and 0 < v <= 1, "above 0 up to 1"),
    ("loss", "ohem_min_kept"): (lambda v: v >= 0, "0 or more"),
    ("train", "iters"): (lambda v: v >= 1, "1 or more"),
    ("train", "batch_size"): (lambda v: v >= 1, "1 or more"),
    ("train", "accum_steps"): (lambda v: v >= 1, "1 or more"),
    ("train", "lr"): (lambda v: _finite(v) and v > 0, "a finite number above 0"),
    ("train", "momentum"): (lambda v: _finite(v) and 0 <= v < 1, "0 to below 1"),
    ("train", "weight_decay"): (lambda v: _finite(v) and v >= 0, "a finite number, 0 or more"),
    ("train", "poly_power"): (lambda v: _finite(v) and v >= 0, "a finite number, 0 or more"),
    ("train", "min_lr"): (lambda v: _finite(v) and v >= 0, "a finite number, 0 or more"),
    ("train", "warmup_iters"): (lambda v: v >= 0, "0 or more"),
    ("train", "warmup_ratio"): (lambda v: _finite(v) and 0 <= v <= 1, "0 to 1"),
    ("train", "seed"): (lambda v: v >= 0, "0 or more"),
    ("train", "log_interval"): (lambda v: v >= 1, "1 or more"),
    ("train", "val_interval"): (lambda v: v >= 1, "1 or more"),
    ("train", "ckpt_interval"): (lambda v: v >= 1, "1 or more"),
    ("train", "keep_ckpts"): (lambda v: v >= 1, "1 or more (resume needs a checkpoint)"),
    ("eval", "slide_overlap"): (lambda v: _finite(v) and 0 <= v < 1, "0 to below 1"),
}


def prior_memory_bytes(cfg: Config, training: bool = True) -> int:
    """A floor for the memory the prior grid alone asks: the prior conv's FP32 weights (to build the model)
    and, for training, their gradient and optimizer buffer and, per image of the batch, the N x N prior map,
    its gradient and the affinity target."""
    n = cfg.model.prior_cells
    weights = n * cfg.model.head_channels * 4
    if not training:
        return int(weights)
    return int(weights * 3 + cfg.train.batch_size * n * n * 4 * 3)


def machine_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - no estimate is better than a crash here
        return 0


def check_memory(cfg: Config, training: bool = True, memory_bytes: int | None = None) -> None:
    """Refuse, with the figures, a prior grid whose maps (training) or weights (building) cannot fit."""
    memory_bytes = machine_memory_bytes() if memory_bytes is None else memory_bytes
    need = prior_memory_bytes(cfg, training)
    if memory_bytes and need > memory_bytes:
        what = f"with train.batch_size={cfg.train.batch_size} needs at least" if training else "needs at least"
        raise ConfigError(f"model.prior_size={hw_text(cfg.model.prior_size)} (a {cfg.model.prior_cells}-cell grid) {what} "
                          f"{need / 2**30:.1f} GiB for the prior {'maps' if training else 'conv'} alone, more than "
                          f"this machine's {memory_bytes / 2**30:.1f} GiB; use a smaller grid"
                          + (" or batch" if training else ""))


def validate(cfg: Config, memory_bytes: int | None = None) -> None:
    """Refuse values the types allow but the meaning does not, naming the key and the allowed range;
    and a model too large to build on this machine (``memory_bytes``, default: what psutil tells)."""
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {', '.join(map(str, choices))}")
    for (section, key), (ok, allowed) in _RANGES.items():
        value = getattr(getattr(cfg, section), key)
        if not ok(value):
            shown = value
            if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1] and key == "prior_size":
                shown = value[0]  # as the user most likely wrote it
            raise ConfigError(f"{section}.{key}={_short(shown)} is out of range: allowed {allowed}")
    if cfg.data.ignore_index < cfg.model.num_classes:
        raise ConfigError(f"data.ignore_index={cfg.data.ignore_index} is a class id (model.num_classes="
                          f"{cfg.model.num_classes}: ids 0 to {cfg.model.num_classes - 1}); the label that marks "
                          f"unlabelled pixels must be above them, usually 255")
    base = cfg.data.base_scale
    if base and not (len(base) == 2 and all(v >= 1 for v in base)):
        raise ConfigError(f"data.base_scale={_short(list(base))} must be empty (the dataset's) or two whole numbers "
                          f"of 1 or more, [long, short]")
    lo, hi = cfg.data.scale_range
    if not (_finite(lo) and _finite(hi) and 0 < lo <= hi):
        raise ConfigError(f"data.scale_range={cfg.data.scale_range} must satisfy 0 < low <= high (finite)")
    if not all(_finite(v) for v in cfg.data.mean):
        raise ConfigError(f"data.mean={_short(cfg.data.mean)} must be three finite numbers (RGB, 0-255)")
    if not all(_finite(v) and v > 0 for v in cfg.data.std):
        raise ConfigError(f"data.std={_short(cfg.data.std)} must be three finite numbers above 0 (RGB, 0-255)")
    if not cfg.eval.scales or not all(_finite(v) and v > 0 for v in cfg.eval.scales):
        raise ConfigError(f"eval.scales={_short(cfg.eval.scales)} must be one or more finite numbers above 0")
    check_memory(cfg, training=False, memory_bytes=memory_bytes)
