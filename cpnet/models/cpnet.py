"""CPNet: a dilated ResNet (output stride 8) + the Context Prior head (+ an auxiliary FCN head on stage 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cpnet.config import ModelConfig

from .heads import AggHead, ContextPriorHead, FCNHead
from .resnet import ResNet

HEADS = ("cpnet", "agg", "fcn")


class CPNet(nn.Module):
    """Context Prior Network.

    ``forward(x)``: in eval mode, the logits upsampled to the input size,
    (B, num_classes, H, W); the auxiliary head is not run. In train mode, a dict:
    ``out`` (main logits at input size), ``aux`` (auxiliary logits at input size,
    only when ``cfg.aux``), and for head ``"cpnet"`` ``prior`` (P, (B, N, N),
    after the sigmoid) and ``prior_logits`` (before it).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.head not in HEADS:
            raise ValueError(f"model.head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
        self.cfg = cfg
        self.backbone = ResNet(depth=cfg.depth, stem=cfg.stem, base_width=cfg.base_width)
        c3, c4 = self.backbone.out_channels
        if cfg.head == "cpnet":
            self.decode_head = ContextPriorHead(c4, cfg.head_channels, cfg.num_classes, cfg.prior_size,
                                                cfg.agg_kernel, cfg.dropout, cfg.agg_bias)
        elif cfg.head == "agg":
            self.decode_head = AggHead(c4, cfg.head_channels, cfg.num_classes, cfg.agg_kernel, cfg.dropout,
                                       cfg.agg_bias)
        else:
            self.decode_head = FCNHead(c4, cfg.head_channels, cfg.num_classes, cfg.dropout)
        self.aux_head = FCNHead(c3, cfg.aux_channels, cfg.num_classes, cfg.dropout) if cfg.aux else None

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the input the model is built for: 8 x the prior grid (h, w)."""
        return self.cfg.input_size

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are fixed by the example input; avoid tracer warnings
            return
        if x.dim() != 4:
            raise ValueError(f"CPNet takes a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        if self.cfg.head == "cpnet":
            h, w = (int(v) for v in x.shape[-2:])
            (sh, sw), (ph, pw) = self.input_size, self.cfg.prior_size
            if (h, w) != (sh, sw):
                raise ValueError(f"this model (prior grid {ph}x{pw}) takes {sh}x{sw} inputs "
                                 f"(8 x the prior grid), got {h}x{w}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features (c3, c4) at 1/8 of the input size."""
        return self.backbone(x)

    def forward_head(self, c4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Main head at feature resolution: (logits, prior_logits, prior); the last two are None unless head is cpnet."""
        if self.cfg.head == "cpnet":
            return self.decode_head(c4)
        return self.decode_head(c4), None, None

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        size = x.shape[-2:]
        c3, c4 = self.forward_features(x)
        logits, prior_logits, prior = self.forward_head(c4)
        out = _resize(logits, size)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux_head is not None:
            result["aux"] = _resize(self.aux_head(c3), size)
        if prior is not None:
            result["prior"] = prior
            result["prior_logits"] = prior_logits
        return result


def _resize(t: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)
