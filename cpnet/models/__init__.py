"""CPNet and its parts. ``build_model(config)`` is the public constructor."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from ..config import Config, ModelConfig, load_config
from .cpnet import CPNet
from .weights import load_backbone_weights

__all__ = ["CPNet", "build_model", "load_backbone_weights", "model_config_of"]


def model_config_of(config: "str | Path | Mapping | Config | ModelConfig") -> ModelConfig:
    """Resolve anything build_model accepts to a ModelConfig.

    A mapping may be a whole config (with a ``model`` section) or just the model section.
    """
    if isinstance(config, ModelConfig):
        return dataclasses.replace(config)
    if isinstance(config, Config):
        return dataclasses.replace(config.model)
    if isinstance(config, Mapping):
        model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
        if config and set(config) <= model_keys:
            config = {"model": dict(config)}
    return load_config(config).model


def build_model(config: "str | Path | Mapping | Config | ModelConfig") -> CPNet:
    """Build a CPNet from a named config (``"ade20k_r50"``), a YAML path, a dict or a config object."""
    return CPNet(model_config_of(config))
