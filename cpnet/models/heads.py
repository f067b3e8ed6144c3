"""Segmentation heads: the Context Prior head, its ablations, and the FCN head.

Module names are part of the interface (checkpoints, BN folding at export):
``ConvBNReLU`` is a Sequential of ``conv``, ``bn``, ``relu``; the aggregation
module has ``reduce``, ``path1_a``, ``path1_b``, ``path2_a``, ``path2_b``,
``norm``; the Context Prior head has ``aggregation``, ``prior_conv``,
``prior_bn``, ``intra_conv``, ``inter_conv``, ``bottleneck``, ``dropout``,
``classifier``.

In the authors' code (``decode_head/cp_head.py`` of yu-changqian/ContextPrior, on
mmseg) the same modules are ``aggregation.reduce_conv`` (conv/bn), ``t1``, ``t2``
(= ``path1_a``, ``path1_b``), ``p1``, ``p2`` (= ``path2_a``, ``path2_b``), ``norm``,
``prior_conv.conv/bn``, ``intra_conv``, ``inter_conv``, ``bottleneck`` and
``conv_seg``; :mod:`cpnet.convert` maps one naming onto the other.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """conv (no bias) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, dilation: int = 1):
        if padding is None:
            padding = (kernel_size // 2) * dilation
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, bias=False),
            bn=nn.BatchNorm2d(out_ch),
            relu=nn.ReLU(inplace=True),
        ))


class AggregationModule(nn.Module):
    """3x3 conv-BN-ReLU reduction, then two depthwise fully separable paths
    (k x 1 then 1 x k) and (1 x k then k x 1), summed, BN, ReLU.

    ``bias`` (default, as the authors'): the four depthwise convs carry a bias. They are
    mmcv ``ConvModule``s with ``norm_cfg=None``, so mmcv's ``bias="auto"`` gives them
    one. With zero padding the biases of the first conv of each path are not a
    constant after the second conv (near the borders they meet a truncated kernel),
    so the BN that follows does not absorb them: with and without biases the module
    is not the same function. ``bias=False`` builds the bias-free variant (checkpoints
    made before the biases were added).
    """

    def __init__(self, in_ch: int, out_ch: int, k: int = 11, bias: bool = True):
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"aggregation kernel must be a positive odd number, got {k}")
        p = k // 2

        def dw(kh: int, kw: int, ph: int, pw: int) -> nn.Conv2d:
            conv = nn.Conv2d(out_ch, out_ch, (kh, kw), padding=(ph, pw), groups=out_ch, bias=False)
            if bias:  # added after construction: zero (as mmcv's init) and no draw from the RNG, so a seed
                # gives the same weights as the bias-free model
                conv.bias = nn.Parameter(torch.zeros(out_ch))
            return conv

        self.reduce = ConvBNReLU(in_ch, out_ch, 3)
        self.path1_a = dw(k, 1, p, 0)
        self.path1_b = dw(1, k, 0, p)
        self.path2_a = dw(1, k, 0, p)
        self.path2_b = dw(k, 1, p, 0)
        self.norm = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        x1 = self.path1_b(self.path1_a(x))
        x2 = self.path2_b(self.path2_a(x))
        return self.relu(self.norm(x1 + x2))


class ContextPriorHead(nn.Module):
    """The Context Prior layer (Yu et al., CVPR 2020) followed by the classifier.

    ``forward(x)`` returns ``(logits, prior_logits, P)`` with logits at the
    feature resolution, ``prior_logits`` the pre-sigmoid prior map and
    ``P = sigmoid(prior_logits)``, both (B, N, N) with N = h * w for the prior
    grid ``prior_size`` = (h, w) (an int is a square, as the authors' ``_pair``)
    and row i belonging to pixel i (row-major over the grid).
    """

    def __init__(self, in_ch: int, channels: int, num_classes: int, prior_size: "int | tuple[int, int]",
                 k: int = 11, dropout: float = 0.1, agg_bias: bool = True):
        super().__init__()
        self.prior_size = _pair(prior_size)
        self.prior_channels = self.prior_size[0] * self.prior_size[1]
        n = self.prior_channels
        self.aggregation = AggregationModule(in_ch, channels, k, agg_bias)
        self.prior_conv = nn.Conv2d(channels, n, 1, bias=False)
        self.prior_bn = nn.BatchNorm2d(n)
        self.intra_conv = ConvBNReLU(channels, channels, 1)
        self.inter_conv = ConvBNReLU(channels, channels, 1)
        self.bottleneck = ConvBNReLU(in_ch + 2 * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        _init_head(self)

    def check_size(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are fixed by the example input; avoid tracer warnings
            return
        h, w = x.shape[-2:]
        sh, sw = self.prior_size
        if (int(h), int(w)) != (sh, sw):
            raise ValueError(
                f"the Context Prior head needs a {sh}x{sw} feature map (prior_size={sh}x{sw}), got {int(h)}x{int(w)}: "
                f"the input must be 8 x the prior grid = {8 * sh}x{8 * sw}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.check_size(x)
        s, n = self.prior_size, self.prior_channels
        value = self.aggregation(x)                                   # (B, C, h, w)
        prior_logits = self.prior_bn(self.prior_conv(value))          # (B, N, h, w)
        prior_logits = prior_logits.flatten(2).transpose(1, 2)        # (B, N_pix, N): row i = pixel i
        prior = torch.sigmoid(prior_logits)
        v = value.flatten(2).transpose(1, 2)                          # (B, N, C)
        pv = torch.bmm(prior, v)
        intra = pv / n
        # (1 - P) V = colsum(V) - P V: one N x N matmul instead of two, and no (1 - P) map kept for
        # backward (N x N floats per image: 340 MB at Cityscapes' 96 x 96 grid)
        inter = (v.sum(1, keepdim=True) - pv) / n
        intra = intra.transpose(1, 2).unflatten(2, s)                 # (B, C, h, w)
        inter = inter.transpose(1, 2).unflatten(2, s)
        intra = self.intra_conv(intra)
        inter = self.inter_conv(inter)
        out = self.bottleneck(torch.cat([x, intra, inter], dim=1))
        logits = self.classifier(self.dropout(out))
        return logits, prior_logits, prior


class AggHead(nn.Module):
    """Ablation: the aggregation module without the prior: concat[x, value] -> 3x3 conv-BN-ReLU -> classifier."""

    def __init__(self, in_ch: int, channels: int, num_classes: int, k: int = 11, dropout: float = 0.1,
                 agg_bias: bool = True):
        super().__init__()
        self.aggregation = AggregationModule(in_ch, channels, k, agg_bias)
        self.bottleneck = ConvBNReLU(in_ch + channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        _init_head(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.aggregation(x)
        out = self.bottleneck(torch.cat([x, value], dim=1))
        return self.classifier(self.dropout(out))


class FCNHead(nn.Module):
    """3x3 conv-BN-ReLU -> dropout -> 1x1 classifier (auxiliary head, and the dilated-FCN baseline)."""

    def __init__(self, in_ch: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        _init_head(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _init_head(head: nn.Module) -> None:
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            if m.groups > 1:  # depthwise: keep PyTorch's default weights (fan_in = k), a BN follows
                if m.bias is not None:
                    nn.init.zeros_(m.bias)  # mmcv's ConvModule starts its biases at 0
                continue
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    clf = getattr(head, "classifier", None)
    if isinstance(clf, nn.Conv2d):  # as mmseg's conv_seg
        nn.init.normal_(clf.weight, std=0.01)
        nn.init.zeros_(clf.bias)
