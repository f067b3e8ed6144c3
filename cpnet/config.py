"""Configuration: dataclasses with defaults, named YAML files in the package, `key.sub=value` overrides.

A config is resolved in three layers, each overriding the one before:
the dataclass defaults below, a YAML file (a named config shipped in
``cpnet/configs`` or a user's path), then command-line ``key.sub=value`` pairs.
"""

from __future__ import annotations

import dataclasses
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
    prior_size: int = 60  # side of the prior grid; the model input is 8 * prior_size
    head_channels: int = 512
    agg_kernel: int = 11
    aux: bool = True
    aux_channels: int = 256
    dropout: float = 0.1

    @property
    def input_size(self) -> int:
        return 8 * self.prior_size


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # cityscapes | ade20k | pascal_context | folder | synthetic
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = 255
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
    def crop_size(self) -> int:
        """Training crops, evaluation windows and the exported input all equal 8 x the prior grid."""
        return self.model.input_size

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))


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
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def _coerce(value: Any, target_type: Any, where: str) -> Any:
    origin = getattr(target_type, "__origin__", None)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            value = [yaml.safe_load(v) for v in value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
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
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if target_type is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if target_type is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e30" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
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
    names = [f.name for f in dataclasses.fields(obj)]
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


def validate(cfg: Config) -> None:
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {', '.join(map(str, choices))}")
    positive = [("model", "num_classes"), ("model", "prior_size"), ("model", "head_channels"),
                ("model", "base_width"), ("train", "batch_size"), ("train", "accum_steps"), ("train", "iters")]
    for section, key in positive:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{section}.{key} must be positive")
    lo, hi = cfg.data.scale_range
    if not 0 < lo <= hi:
        raise ConfigError(f"data.scale_range={cfg.data.scale_range} must satisfy 0 < low <= high")
