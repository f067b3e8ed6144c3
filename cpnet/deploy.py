"""The deploy graph: an eval-mode CPNet rewritten into fewer, cheaper ops, with the same logits.

``DeployCPNet(model)`` copies a trained :class:`~cpnet.models.CPNet` (the
original is not touched) and returns logits (B, C, H, W) at the input size
from ``forward(x)``: no auxiliary head, no dropout, and no prior-map output
unless ``with_prior=True`` (then ``(logits, P)``, P as the model's own
``prior``: (B, N, N), row i = prior-grid pixel i, the live demo's prior view). Each
rewrite is a separate function whose docstring gives its algebra; all are
exact in real arithmetic and differ from the eval-mode model only by float
rounding (the tests hold them to 1e-5 of the logits' scale):

``aggregation_bn``   :func:`fold_aggregation_bn`: the BN after the two summed
                     depthwise paths goes into the last conv of each path.
``conv_bn``          :func:`fold_conv_bn_pairs`: every conv directly followed
                     by a BN (backbone, reductions, prior conv, bottleneck) becomes
                     one conv with a bias.
``inverse_n``        :func:`fold_inverse_n`: the 1/N of the context averages
                     goes into the intra/inter 1x1 convs (``inverse_n="conv"``);
                     or, with ``inverse_n="prior"`` (the default),
                     :func:`fold_inverse_n_into_prior` applies it to P before
                     the matmul, which keeps the matmul's output within FP16's
                     range for large prior grids (recorded as ``inverse_n_prior``):
                     with the fold into the convs, the column sum of V reaches
                     N x |V| (62,680 at a 48x48 grid, near FP16's 65,504), so
                     the N x N matmul would have to stay in FP32.
``inter_from_sum``   :func:`use_inter_from_sum`: inter-class context from the
                     column sum of V minus the intra-class context, one N x N
                     matmul instead of two.
``transpose_free``   (structural, always on for the cpnet head) the context is
                     computed as V^T P^T, i.e. directly on the (C, N) and (N, N)
                     layouts the convs produce, so no transposes are exported.

Heads ``agg`` and ``fcn`` (the ablation models) take the rewrites that apply
to them (``aggregation_bn`` and ``conv_bn``; ``conv_bn`` only).
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .models.cpnet import CPNet
from .models.heads import AggregationModule, ContextPriorHead
from .models.resnet import BasicBlock, Bottleneck, ResNet

ALL_REWRITES = ("aggregation_bn", "conv_bn", "inverse_n", "inter_from_sum")
INVERSE_N_PLACES = ("conv", "prior")  # where "inverse_n" puts the 1/N: into the 1x1 convs, or onto P


# --------------------------------------------------------------------------- BN folding


def _bn_scale_shift(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (s, t) with bn(y) = s * y + t in eval mode, in float64."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    s = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.double()
    t = -mean * s
    if bn.bias is not None:
        t = t + bn.bias.double()
    return s, t


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """Fold an eval-mode BN into the conv before it, in place; the BN must then be dropped.

    bn(W * x + b) = s * (W * x + b) + t with s = gamma / sqrt(var + eps) and
    t = beta - mean * s per output channel, so W' = s[o] * W[o] and
    b' = s * b + t give one conv with the same output.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm that tracks no running statistics")
    s, t = _bn_scale_shift(bn)
    w = conv.weight.double() * s.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = t if conv.bias is None else conv.bias.double() * s + t
    conv.weight.copy_(w.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(b.to(conv.bias.dtype))
    return conv


_NAMED_PAIRS = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    ResNet: (("conv1", "bn1"),),  # the v1b stem
}


def fold_conv_bn_pairs(module: nn.Module) -> int:
    """Fold every BN that directly follows a conv, in place; return how many were folded.

    Pairs are found structurally: adjacent (Conv2d, BN) children of a plain
    ``nn.Sequential`` (ResNet stems, downsample branches, ``ConvBNReLU``), and
    the named pairs of the ResNet blocks (``conv1``/``bn1`` ...) and the Context
    Prior head (``prior_conv``/``prior_bn``), whose forward applies the BN to the
    conv's output and nothing else. Each fold is :func:`fold_conv_bn`; the BN is
    replaced by ``nn.Identity``. The aggregation module's BN (after a sum) is
    left to :func:`fold_aggregation_bn`.
    """
    count = 0
    for m in list(module.modules()):
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
            names = list(m._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = m._modules[a], m._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm):
                    fold_conv_bn(conv, bn)
                    m._modules[b] = nn.Identity()
                    count += 1
        pairs = next((p for cls, p in _NAMED_PAIRS.items() if type(m) is cls), ())
        if isinstance(m, (ContextPriorHead, DeployContextPriorHead)):
            pairs = (("prior_conv", "prior_bn"),)
        for conv_name, bn_name in pairs:
            conv, bn = getattr(m, conv_name, None), getattr(m, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm):
                fold_conv_bn(conv, bn)
                setattr(m, bn_name, nn.Identity())
                count += 1
    return count


@torch.no_grad()
def fold_aggregation_bn(agg: AggregationModule) -> AggregationModule:
    """Fold the aggregation module's BN into the last depthwise conv of each path, in place.

    The module computes relu(norm(x1 + x2)) with x1 = path1_b(path1_a(y)) and
    x2 = path2_b(path2_a(y)). In eval mode norm(z) = s * z + t per channel
    (s = gamma / sqrt(var + eps), t = beta - mean * s), so

        norm(x1 + x2) = (s * x1 + t) + (s * x2).

    ``path1_b`` and ``path2_b`` are depthwise (one filter per channel c), so
    s[c] * path_b(u)[c] is path_b with its filter c scaled by s[c]: both get
    W' = s[c] * W[c]; ``path1_b`` also gets the bias t (plus s * its old bias,
    if it had one; ``path2_b`` keeps s * its own), and ``norm`` becomes Identity.

    The biases of the authors' model (all four depthwise convs, mmcv's ``bias="auto"``)
    need nothing more: path_b(u) = W * u + b, so s * path_b(u) = (s W) * u + s b, and
    the biases of ``path1_a``/``path2_a`` act before path_b and stay as they are (with
    zero padding they are not a constant after path_b, so they cannot be moved into t).
    """
    if not isinstance(agg.norm, _BatchNorm):
        return agg  # already folded
    s, t = _bn_scale_shift(agg.norm)
    for conv, shift in ((agg.path1_b, t), (agg.path2_b, None)):
        if conv.groups != conv.out_channels or conv.weight.shape[0] != s.numel():
            raise ValueError("fold_aggregation_bn expects depthwise convs with one filter per BN channel")
        w = conv.weight.double() * s.view(-1, 1, 1, 1)
        b = torch.zeros_like(s) if conv.bias is None else conv.bias.double() * s
        if shift is not None:
            b = b + shift
        conv.weight.copy_(w.to(conv.weight.dtype))
        if shift is None and conv.bias is None:
            continue
        if conv.bias is None:
            conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.copy_(b.to(conv.bias.dtype))
    agg.norm = nn.Identity()
    return agg


# --------------------------------------------------------------------------- the Context Prior head


class DeployContextPriorHead(nn.Module):
    """The Context Prior head for inference: logits only, context computed without transposes.

    With V the aggregated features as (C, N) (``value`` reshaped, N = h*w) and
    the prior conv's output reshaped to (N, N) = P^T (row j = prior channel j,
    column i = pixel i), the head's intra-class context (P V / N)^T is
    ``V @ P^T / N`` (C, N), already in the layout of a (C, h, w) feature map.
    ``context_scale`` is the 1/N still to apply (1 once :func:`fold_inverse_n`
    moved it into the convs); ``inter_from_sum`` selects the one-matmul form of
    the inter-class context (:func:`use_inter_from_sum`).
    """

    def __init__(self, head: ContextPriorHead):
        super().__init__()
        self.prior_size = tuple(int(v) for v in head.prior_size)  # (h, w)
        self.prior_channels = int(head.prior_channels)
        self.channels = int(head.prior_conv.in_channels)
        self.aggregation = head.aggregation
        self.prior_conv = head.prior_conv
        self.prior_bn = head.prior_bn
        self.intra_conv = head.intra_conv
        self.inter_conv = head.inter_conv
        self.bottleneck = head.bottleneck
        self.classifier = head.classifier
        self.context_scale = 1.0 / self.prior_channels
        self.prior_scale = 1.0
        self.inter_from_sum = False
        self.return_prior = False

    def forward(self, x: torch.Tensor):
        """Logits (B, classes, h, w); with ``return_prior``, ``(logits, P)`` where P (B, N, N) is the
        sigmoid prior with row i = pixel i (the training head's ``prior``; P^T transposed once)."""
        s, n, c = self.prior_size, self.prior_channels, self.channels
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()) and tuple(x.shape[-2:]) != s:
            raise ValueError(f"the Context Prior head needs a {s[0]}x{s[1]} feature map, got {tuple(x.shape[-2:])}: "
                             f"the input must be {8 * s[0]}x{8 * s[1]}")
        value = self.aggregation(x)                                         # (B, C, h, w)
        v = value.reshape(-1, c, n)                                         # V^T: (B, C, N)
        prior_t = torch.sigmoid(self.prior_bn(self.prior_conv(value))).reshape(-1, n, n)  # P^T: (B, N, N_pix)
        prior = prior_t.transpose(1, 2) if self.return_prior else None      # P: (B, N_pix, N), before any 1/N
        if self.prior_scale != 1.0:
            prior_t = prior_t * self.prior_scale                            # P / N (fold_inverse_n_into_prior)
        intra = torch.matmul(v, prior_t)                                    # (P V)^T: (B, C, N_pix)
        if self.inter_from_sum:                                             # ((1 - P) V)^T
            total = v.sum(dim=2, keepdim=True) if self.prior_scale == 1.0 else v.mean(dim=2, keepdim=True)
            inter = total - intra
        else:
            inter = torch.matmul(v, (1.0 if self.prior_scale == 1.0 else self.prior_scale) - prior_t)
        if self.context_scale != 1.0:
            intra = intra * self.context_scale
            inter = inter * self.context_scale
        intra = self.intra_conv(intra.reshape(-1, c, *s))
        inter = self.inter_conv(inter.reshape(-1, c, *s))
        out = self.bottleneck(torch.cat([x, intra, inter], dim=1))
        logits = self.classifier(out)
        return (logits, prior) if prior is not None else logits


@torch.no_grad()
def fold_inverse_n(head: DeployContextPriorHead) -> DeployContextPriorHead:
    """Move the 1/N of the context averages into the intra/inter 1x1 convs, in place.

    intra = conv(P V / N): the conv is linear before its BN (and any bias is
    added after the weights), so conv(z / N) = (W / N) * z + b. Dividing the
    weights of ``intra_conv.conv`` and ``inter_conv.conv`` by N removes the two
    divisions from the graph; the BN/ReLU after them are unchanged.
    """
    if head.context_scale == 1.0:
        return head
    for block in (head.intra_conv, head.inter_conv):
        conv = block.conv if hasattr(block, "conv") else block[0]
        conv.weight.mul_(head.context_scale)
    head.context_scale = 1.0
    return head


def fold_inverse_n_into_prior(head: DeployContextPriorHead) -> DeployContextPriorHead:
    """Apply the 1/N of the context averages to P before the matmul instead (the FP16-safe placement).

    P V / N = (P / N) V and (1 - P) V / N = mean(V) - (P / N) V. This is not a
    weight fold: it keeps one elementwise Mul on the (N, N) map after the
    sigmoid (TensorRT fuses it into the sigmoid's kernel), and removes the two
    divisions after the matmuls. Unlike :func:`fold_inverse_n` the matmul's
    output and the column sum stay at the scale of V: with the 1/N folded into
    the convs they reach N x |V|, which passes FP16's largest value (65504)
    once N is in the thousands (60x60 or 96x96 prior grids), so an FP16 engine
    would have to keep the matmul in FP32.
    """
    if head.context_scale == 1.0:
        return head
    head.prior_scale = head.context_scale
    head.context_scale = 1.0
    return head


def use_inter_from_sum(head: DeployContextPriorHead) -> DeployContextPriorHead:
    """Compute the inter-class context from the intra-class one: one N x N matmul instead of two.

    (1 - P) V = 1 1^T V - P V: row i of 1 1^T V is the column sum of V over
    all N pixels, the same for every i. So with the 1/N folded into the convs
    (:func:`fold_inverse_n`), inter = colsum(V) - P V; without it,
    inter = mean(V) - P V / N, i.e. (1 - P) V / N = colsum(V) / N - P V / N.
    A (C, N) x (N, N) matmul becomes a sum over N and a broadcast subtraction
    (with :func:`fold_inverse_n_into_prior`: mean(V) - (P / N) V, a mean over N).
    """
    head.inter_from_sum = True
    return head


# --------------------------------------------------------------------------- the deploy model


class DeployCPNet(nn.Module):
    """The deploy graph of a CPNet: ``forward(x)`` -> logits (B, num_classes, H, W) at the input size.

    ``rewrites``: which of :data:`ALL_REWRITES` to apply (those that do not
    apply to the model's head are skipped); ``self.rewrites`` lists what was
    applied. ``input_size`` (H, W) fixes the output size as constants in an
    exported graph; by default it is 8 x the prior grid for the cpnet head (its
    only input size) and the input's own size for ``agg``/``fcn``. ``inverse_n``:
    ``"conv"`` (:func:`fold_inverse_n`) or ``"prior"`` (:func:`fold_inverse_n_into_prior`).
    ``with_prior`` (cpnet head only): ``forward`` returns ``(logits, P)``, P the sigmoid prior
    map (B, N, N) as the eval-mode model's head computes it, row i = pixel i of the prior grid
    (row-major); the logits are unchanged.
    """

    def __init__(self, model: CPNet, rewrites: Iterable[str] = ALL_REWRITES,
                 input_size: Sequence[int] | int | None = None, inverse_n: str = "prior", with_prior: bool = False):
        super().__init__()
        rewrites = tuple(rewrites)
        unknown = set(rewrites) - set(ALL_REWRITES)
        if unknown:
            raise ValueError(f"unknown rewrites {sorted(unknown)}; known: {', '.join(ALL_REWRITES)}")
        if inverse_n not in INVERSE_N_PLACES:
            raise ValueError(f"inverse_n must be one of {', '.join(INVERSE_N_PLACES)}, got {inverse_n!r}")
        model = copy.deepcopy(model).float().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.cfg = model.cfg
        self.head_type = model.cfg.head
        self.num_classes = model.cfg.num_classes
        self.backbone = model.backbone
        head = model.decode_head
        applied: list[str] = []
        if self.head_type == "cpnet":
            head = DeployContextPriorHead(head)
            applied.append("transpose_free")
        elif hasattr(head, "dropout"):
            head.dropout = nn.Identity()  # eval-mode dropout is the identity
        self.head = head
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        if input_size is None and self.head_type == "cpnet":
            input_size = model.input_size
        self.input_size = tuple(int(v) for v in input_size) if input_size is not None else None

        agg = getattr(head, "aggregation", None)
        if "aggregation_bn" in rewrites and isinstance(agg, AggregationModule):
            fold_aggregation_bn(agg)
            applied.append("aggregation_bn")
        if "conv_bn" in rewrites:
            if fold_conv_bn_pairs(self) > 0:
                applied.append("conv_bn")
        if isinstance(head, DeployContextPriorHead):
            if "inverse_n" in rewrites and inverse_n == "conv":
                fold_inverse_n(head)
                applied.append("inverse_n")
            elif "inverse_n" in rewrites:
                fold_inverse_n_into_prior(head)
                applied.append("inverse_n_prior")
            if "inter_from_sum" in rewrites:
                use_inter_from_sum(head)
                applied.append("inter_from_sum")
        if with_prior:
            if not isinstance(head, DeployContextPriorHead):
                raise ValueError(f"with_prior: the {self.head_type!r} head has no context prior (only the cpnet head)")
            head.return_prior = True
        self.with_prior = bool(with_prior)
        self.rewrites = applied
        self.eval()

    def forward(self, x: torch.Tensor):
        if (self.input_size is not None and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())
                and tuple(x.shape[-2:]) != self.input_size):
            raise ValueError(f"this deploy model takes {self.input_size[0]}x{self.input_size[1]} inputs, "
                             f"got {tuple(x.shape[-2:])}")
        _, c4 = self.backbone(x)
        logits = self.head(c4)
        prior = None
        if self.with_prior:
            logits, prior = logits
        size = self.input_size if self.input_size is not None else x.shape[-2:]
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return (logits, prior) if prior is not None else logits
