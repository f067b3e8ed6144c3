"""Dilated ResNet backbones (output stride 8) for CPNet.

Two stems, named exactly as the checkpoints they load:

* ``"v1c"`` (mmcv / mmseg ``ResNetV1c``): a deep stem of three 3x3 convs
  (w/2, w/2, w channels) in ``self.stem`` (keys ``stem.0`` ... ``stem.7``);
* ``"v1b"`` (torchvision): one 7x7 conv ``conv1`` + ``bn1``.

Stages are ``layer1`` ... ``layer4`` with blocks ``conv1/bn1/conv2/bn2(/conv3/bn3)``
and ``downsample = Sequential(conv1x1, BN)``, as in torchvision and mmcv, so
their state dicts load without renaming. Strides go on the 3x3 conv ("pytorch"
style, ResNet v1.5). There is no classifier (``fc``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

ARCH = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STEMS = ("v1c", "v1b")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Dilated ResNet returning ``(c3, c4)``, the stage-3 and stage-4 features."""

    def __init__(self, depth: int = 50, stem: str = "v1c", base_width: int = 64,
                 strides: Sequence[int] = (1, 2, 1, 1), dilations: Sequence[int] = (1, 1, 2, 4),
                 contract_dilation: bool = True, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 zero_init_residual: bool = True):
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCH)}, got {depth}")
        if stem not in STEMS:
            raise ValueError(f"ResNet stem must be one of {STEMS}, got {stem!r}")
        if base_width < 2 or base_width % 2:
            raise ValueError(f"ResNet base_width must be an even number >= 2, got {base_width}")
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError("ResNet needs 4 strides and 4 dilations, one per stage")
        kind, blocks = ARCH[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.stem_type = stem
        self.base_width = base_width

        w = base_width
        if stem == "v1c":
            self.stem = nn.Sequential(
                conv3x3(3, w // 2, stride=2), norm_layer(w // 2), nn.ReLU(inplace=True),
                conv3x3(w // 2, w // 2), norm_layer(w // 2), nn.ReLU(inplace=True),
                conv3x3(w // 2, w), norm_layer(w), nn.ReLU(inplace=True),
            )
        else:
            self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(w)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        inplanes = w
        widths = [w * m for m in (1, 2, 4, 8)]
        for i, (planes, n, s, d) in enumerate(zip(widths, blocks, strides, dilations)):
            layer, inplanes = self._make_layer(block, inplanes, planes, n, s, d, contract_dilation, norm_layer)
            self.add_module(f"layer{i + 1}", layer)
        self.out_channels = (widths[2] * block.expansion, widths[3] * block.expansion)
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_layer(block, inplanes: int, planes: int, n: int, stride: int, dilation: int,
                    contract_dilation: bool, norm_layer) -> tuple[nn.Sequential, int]:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(inplanes, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        first_dilation = dilation // 2 if (contract_dilation and dilation > 1) else dilation
        layers = [block(inplanes, planes, stride, first_dilation, downsample, norm_layer)]
        inplanes = planes * block.expansion
        layers += [block(inplanes, planes, 1, dilation, None, norm_layer) for _ in range(1, n)]
        return nn.Sequential(*layers), inplanes

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # the last BN of each residual branch starts at 0 (mmseg's default)
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                    getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                if last is not None and getattr(last, "weight", None) is not None:
                    nn.init.zeros_(last.weight)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem_type == "v1c":
            x = self.stem(x)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.forward_stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        return c3, c4
