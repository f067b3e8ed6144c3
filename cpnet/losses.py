"""Losses: cross-entropy (plain and OHEM) and the Context Prior Affinity Loss.

Affinity Loss (CPNet, Yu et al. CVPR 2020; the authors' ``AffinityLoss`` + ``CPHead``)
-----------------------------------------------------------------------------------
The labels are resized (nearest) to the prior grid (h x w, N = h*w pixels), and the
ideal affinity is ``A_ij = [y_i == y_j]``. With ``P = sigmoid(Z)`` the (B, N, N) prior
map (row i = pixel i, column j = prior channel j) the loss is::

    L = BCE(P, A)                                    mean over all B*N*N entries
      + mean_rows c(precision_i) + c(recall_i) + c(specificity_i)

    precision_i   = sum_j P_ij A'_ij / sum_j P_ij
    recall_i      = sum_j P_ij A'_ij / sum_j A'_ij
    specificity_i = sum_j (1 - P_ij)(1 - A_ij) / sum_j (1 - A_ij)

where ``A'`` is ``A`` with its diagonal zeroed, a denominator that is not > 0 is
replaced by 1, and ``c(t) = -max(log t, -100)``: the authors write each global term
as ``F.binary_cross_entropy(term, ones)``, which is ``-log(term)`` with PyTorch's
clamp of the log at -100. So a row whose term is 0 (a pixel alone in its class has
recall 0 and precision 0; a one-class image has specificity 0) costs exactly 100 and
gets no gradient from that term, as in the authors' code.

Ignore label, two modes (``ignore_mode``):

* ``"class"`` (the authors' code): the ignore label is one more class (they map 255 to
  ``num_classes``), so ignored pixels share a class with each other; every pixel is
  counted.
* ``"mask"``: ignored pixels drop out of everything: their rows are not counted in the
  row means, their columns are excluded from every sum over j (numerators and
  denominators alike), and the unary BCE is a mean over the valid x valid entries.
  Means are taken over the whole batch (sum over images / total number of valid rows,
  resp. valid pairs). A batch without any valid pixel gives a loss of 0 (and zero
  gradient).

:class:`AffinityLoss` computes the loss and its gradient with a custom autograd
function, in row chunks, from the prior *logits* and the N labels: no N x N tensor is
built except one chunk at a time (and the N x N gradient that autograd needs), and
nothing N x N is saved for backward but the logits, which autograd keeps alive anyway.
:func:`affinity_loss_reference` writes the terms out with autograd, as the authors do
(one-hot matrix product for A, ``F.binary_cross_entropy``); it is the baseline for
``benchmarks/bench_affinity.py`` and a cross-check in the tests.

Gradient of the chunked function (s_ij = p_ij (1 - p_ij), sums over valid j only)::

    dL/dz_ij = (p_ij - A_ij) / n_pairs
             + s_ij / n_rows * ( fp_i / S_P,i - (fp_i + fr_i) A'_ij / S_PA,i + fs_i (1 - A_ij) / S_PN,i )

with ``S_P = sum_j p``, ``S_PA = sum_j p A'``, ``S_PN = sum_j (1-p)(1-A)`` and ``f*_i`` = 1 when the
term is not clamped (log term > -100), else 0: the exact derivative of the clamped
forward. (PyTorch's ``binary_cross_entropy`` backward, used by the reference, computes
``(t - 1) / max(t (1 - t), 1e-12)`` instead of ``-1/t``; the two agree for
1e-12 < t < 1 - 1e-12. They differ at t == 1 exactly, where the reference's gradient is 0
and ours is the true -1 * dt/dz, and for t < 1e-12, where the reference caps 1/t at 1e12.)
Written as ``-1/t * dt/dz`` per term, the precision/recall/specificity parts reduce to
``s_ij A'_ij / S_PA`` etc., which are bounded by 1, so they stay finite for tiny terms.

Numerics: the unary term uses the stable BCE-with-logits form ``softplus(z) - A z``, and
``1 - p`` is computed as ``sigmoid(-z)``. The authors' ``F.binary_cross_entropy(sigmoid(z), A)``
and ``1 - P`` agree with this until P rounds to exactly 1 or 0: in float32 from z > ~17 (an
entry with A = 0 then costs them a flat 100 with zero gradient; here it costs softplus(z) ~ z
with gradient ~1) or z < ~-88. Ordinary logits never get there; the reference keeps the
authors' form.
float16 / bfloat16 logits are computed in float32; the loss is returned in float32
and the gradient in the logits' dtype. float64 logits are computed in float64.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "downsample_labels",
    "ideal_affinity",
    "affinity_loss",
    "affinity_loss_reference",
    "AffinityLoss",
    "CrossEntropy",
    "OhemCrossEntropy",
    "ohem_keep_mask",
    "CPNetLoss",
    "build_loss",
]

_LOG_CLAMP = -100.0  # PyTorch's binary_cross_entropy clamps log(x) at -100
_IGNORE_MODES = ("class", "mask")
_DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024


# ----------------------------------------------------------------------------- labels / ideal affinity


def _pair(size: "int | Sequence[int]") -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def downsample_labels(labels: torch.Tensor, size: "int | Sequence[int]") -> torch.Tensor:
    """Nearest resize of (B, H, W) integer labels to the prior grid ``size`` = (h, w) (or an int).

    As the authors do: ``F.interpolate(labels.float(), size, mode="nearest")`` then back to
    long. PyTorch's legacy "nearest" picks source index ``floor(dst * H / h)`` (no
    half-pixel offset): for H = 8h it takes the top-left pixel of each 8x8 cell. The
    float round trip is exact for label values below 2**24 (255 included).
    Returns a LongTensor (B, h, w).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    h, w = _pair(size)
    if tuple(labels.shape[1:]) == (h, w):
        return labels.long()
    small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")
    return small[:, 0].long()


def _check_mode(ignore_mode: str) -> None:
    if ignore_mode not in _IGNORE_MODES:
        raise ValueError(f"ignore_mode must be one of {_IGNORE_MODES}, got {ignore_mode!r}")


def _flat_labels(labels_small: torch.Tensor, n: int | None = None) -> torch.Tensor:
    y = labels_small.reshape(labels_small.shape[0], -1).long()
    if n is not None and y.shape[1] != n:
        raise ValueError(f"labels have {y.shape[1]} pixels but the prior map has N = {n}")
    return y


def _check_label_range(y: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    bad = (y != ignore_index) & ((y < 0) | (y >= num_classes))
    if bool(bad.any()):
        v = int(y[bad][0])
        raise ValueError(f"label value {v} is outside [0, {num_classes}) and is not the ignore index {ignore_index}")


def ideal_affinity(labels_small: torch.Tensor, num_classes: int, ignore_index: int = 255,
                   ignore_mode: str = "class", return_valid: bool = False):
    """Ideal affinity map ``A_ij = [y_i == y_j]`` as a bool (B, N, N) tensor (tests, visualisation).

    ``labels_small``: (B, h, w) or (B, N) labels on the prior grid (row-major).
    ``"class"``: the ignore label is one more class (the authors map it to ``num_classes``),
    so ignored pixels match each other. ``"mask"``: rows and columns of ignored pixels are
    all False; pass ``return_valid=True`` to also get the (B, N) bool mask of the pixels that
    count (all True in "class" mode). Built by comparing labels, never a float matrix product.
    """
    _check_mode(ignore_mode)
    y = _flat_labels(labels_small)
    _check_label_range(y, num_classes, ignore_index)
    a = y[:, :, None] == y[:, None, :]
    if ignore_mode == "mask":
        valid = y != ignore_index
        a &= valid[:, :, None] & valid[:, None, :]
    else:
        valid = torch.ones_like(y, dtype=torch.bool)
    return (a, valid) if return_valid else a


# ----------------------------------------------------------------------------- chunked affinity loss


def default_chunk_rows(n: int, bytes_per_chunk: int = _DEFAULT_CHUNK_BYTES, itemsize: int = 4) -> int:
    """Rows per chunk so that one (rows, N) chunk in the compute dtype is about ``bytes_per_chunk``."""
    return max(1, min(n, bytes_per_chunk // max(1, n * itemsize)))


class _Layout:
    """How one image's (N, N) logits are walked in row chunks.

    ``rowmajor``: chunk = z[r0:r1, :] of shape (c, N), sums over dim 1.
    transposed (the model's ``flatten(2).transpose(1, 2)`` view, stride(-2) == 1): the chunk
    is taken from ``z.t()[:, r0:r1]`` of shape (N, c), whose rows are contiguous, and the sums
    go over dim 0. Either way no transposing copy is made.
    """

    def __init__(self, zb: torch.Tensor):
        self.rowmajor = not (zb.stride(-1) != 1 and zb.stride(-2) == 1)
        self.jdim = 1 if self.rowmajor else 0

    def chunk(self, zb: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        return zb[r0:r1, :] if self.rowmajor else zb.t()[:, r0:r1]

    def row(self, v: torch.Tensor) -> torch.Tensor:  # per-row vector (c,) -> broadcastable
        return v[:, None] if self.rowmajor else v[None, :]

    def col(self, v: torch.Tensor) -> torch.Tensor:  # per-column vector (N,) -> broadcastable
        return v[None, :] if self.rowmajor else v[:, None]

    def diag(self, x: torch.Tensor, r0: int):
        """Index of the diagonal entries (i, i) of chunk rows r0.. inside the chunk tensor."""
        c = x.shape[0] if self.rowmajor else x.shape[1]
        k = torch.arange(c, device=x.device)
        return (k, k + r0) if self.rowmajor else (k + r0, k)


def _prepare_labels(y: torch.Tensor, ignore_index: int, ignore_mode: str):
    """Column labels, row labels, valid mask, per-row counts for one batch.

    Returns ``ycol`` (B, N), ``yrow`` (B, N) (equal in "class" mode; in "mask" mode invalid
    pixels get sentinels that match nothing), ``valid`` (B, N) bool, ``n_same`` (B, N): number of
    valid j with y_j == y_i (the diagonal included), ``n_valid`` (B,).
    """
    B, N = y.shape
    # Compact ids 0..K-1 (sorted unique values); sentinels -1 / -2 cannot collide.
    uniq, ids = torch.unique(y, return_inverse=True)
    ids = ids.reshape(B, N)
    if ignore_mode == "mask":
        valid = y != ignore_index
        ycol = torch.where(valid, ids, torch.full_like(ids, -1))
        yrow = torch.where(valid, ids, torch.full_like(ids, -2))
    else:
        valid = torch.ones_like(y, dtype=torch.bool)
        ycol = yrow = ids
    K = uniq.numel()
    counts = torch.zeros(B, K + 1, dtype=torch.long, device=y.device)
    counts.scatter_add_(1, torch.where(valid, ids, torch.full_like(ids, K)), torch.ones_like(ids))
    n_same = torch.gather(counts, 1, ids) * valid
    n_valid = valid.sum(1)
    return ycol, yrow, valid, n_same, n_valid


def _clamped_nlog(t: torch.Tensor):
    """c(t) = -max(log t, -100) and the flag 'not clamped' (where the derivative is -1/t)."""
    lt = torch.log(t)
    ok = lt > _LOG_CLAMP
    return -torch.clamp(lt, min=_LOG_CLAMP), ok


class _AffinityLossFn(torch.autograd.Function):
    """Affinity loss from prior logits (B, N, N) and flat labels (B, N), in row chunks."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, ignore_index: int, ignore_mode: str,
                chunk_rows: int | None, prior: torch.Tensor | None = None):
        cdtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        B, N, _ = z.shape
        rows = chunk_rows or default_chunk_rows(N, itemsize=torch.finfo(cdtype).bits // 8)
        rows = max(1, min(int(rows), N))
        mask_mode = ignore_mode == "mask"
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            ycol, yrow, valid, n_same, n_valid = _prepare_labels(y, ignore_index, ignore_mode)
            vf = valid.to(cdtype)
            n_rows = n_valid.sum()
            n_pairs = (n_valid * n_valid).sum()
            inv_rows = torch.where(n_rows > 0, 1.0 / n_rows.clamp(min=1).to(cdtype), torch.zeros((), dtype=cdtype,
                                                                                                device=z.device))
            inv_pairs = torch.where(n_pairs > 0, 1.0 / n_pairs.clamp(min=1).to(cdtype),
                                    torch.zeros((), dtype=cdtype, device=z.device))
            # counts: S_A = sum_j A'_ij, S_N = sum_j (1 - A_ij), valid j only
            s_a = (n_same - 1).clamp(min=0).to(cdtype)
            s_n = (n_valid[:, None] - n_same).to(cdtype)

            unary = torch.zeros((), dtype=cdtype, device=z.device)
            s_p = torch.empty(B, N, dtype=cdtype, device=z.device)
            s_pa = torch.empty_like(s_p)
            s_pn = torch.empty_like(s_p)
            for b in range(B):
                zb = z[b]
                lay = _Layout(zb)
                jd = lay.jdim
                yc = lay.col(ycol[b])
                vcol = lay.col(vf[b])
                for r0 in range(0, N, rows):
                    r1 = min(N, r0 + rows)
                    zc = lay.chunk(zb, r0, r1).to(cdtype)
                    a = lay.row(yrow[b, r0:r1]) == yc                   # A (diagonal included), valid j only
                    # unary: sum_j m_j softplus(z) - sum_j A z  (BCE with logits, summed)
                    sp = F.softplus(zc, beta=1.0, threshold=20.0 if cdtype == torch.float32 else 40.0)
                    if mask_mode:
                        sp_rows = (sp * vcol).sum(jd)
                        unary += (sp_rows * vf[b, r0:r1]).sum()
                    else:
                        unary += sp.sum()
                    unary -= torch.where(a, zc, 0.0).sum()
                    # specificity numerator: sum_j m_j (1 - p)(1 - A), with 1 - p = exp(-softplus(z))
                    q = sp.neg_().exp_()
                    q.masked_fill_(a, 0.0)
                    if mask_mode:
                        q.mul_(vcol)
                    s_pn[b, r0:r1] = q.sum(jd)
                    del q, sp
                    # precision / recall: A' = A without the diagonal
                    a[lay.diag(a, r0)] = False
                    p = torch.sigmoid(zc)
                    if mask_mode:
                        p.mul_(vcol)
                    s_p[b, r0:r1] = p.sum(jd)
                    p.mul_(a)
                    s_pa[b, r0:r1] = p.sum(jd)
                    del p, a, zc

            alpha, beta, gamma, global_rows = _global_coeffs(s_p, s_pa, s_pn, s_a, s_n, valid, inv_rows)
            loss = unary * inv_pairs + global_rows.sum() * inv_rows

        # Backward needs only p = sigmoid(z). Where the caller hands over P itself (the head keeps it
        # alive for its own backward anyway), save that instead of z, so z can be freed after the
        # forward pass: one N x N map less at the peak of training.
        ctx.from_prior = (prior is not None and prior.shape == z.shape and prior.dtype == z.dtype
                          and prior.stride() == z.stride())
        ctx.save_for_backward(prior if ctx.from_prior else z, ycol, yrow, vf, alpha, beta, gamma, inv_pairs)
        ctx.z_meta = (z.shape, z.stride(), z.dtype, z.device)
        ctx.rows = rows
        ctx.cdtype = cdtype
        ctx.mask_mode = mask_mode
        return loss.to(torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        z, ycol, yrow, vf, alpha, beta, gamma, inv_pairs = ctx.saved_tensors  # z is P when from_prior
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        cdtype, rows, mask_mode, from_prior = ctx.cdtype, ctx.rows, ctx.mask_mode, ctx.from_prior
        B, N, _ = z.shape
        shape, stride, dtype, device = ctx.z_meta
        grad = torch.empty_strided(shape, stride, dtype=dtype, device=device)  # z's strides (a transposed view stays so)
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            g = gout.to(cdtype)
            u = (vf * (inv_pairs * g))            # unary coefficient per row (0 for ignored rows)
            a_co = (alpha + gamma) * g            # s * (alpha + gamma) everywhere ...
            b_co = (beta + gamma) * g             # ... minus s * (beta + gamma) where A
            d_co = beta * g                       # diagonal: A' is 0 there, so add s * beta back
            for b in range(B):
                zb = z[b]
                gb = grad[b]
                lay = _Layout(zb)
                yc = lay.col(ycol[b])
                vcol = lay.col(vf[b])
                for r0 in range(0, N, rows):
                    r1 = min(N, r0 + rows)
                    zc = lay.chunk(zb, r0, r1).to(cdtype)
                    a = lay.row(yrow[b, r0:r1]) == yc
                    if from_prior:
                        p = zc.clone()
                        s = (1.0 - zc).mul_(zc)                     # p (1 - p) from P, as autograd would
                    else:
                        p = torch.sigmoid(zc)
                        s = torch.sigmoid(-zc).mul_(p)              # p (1 - p), accurate near p = 1
                    ur = lay.row(u[b, r0:r1])
                    # G = u p + s (alpha + gamma) - A (u + s (beta + gamma))
                    out = torch.addcmul(p.mul_(ur), s, lay.row(a_co[b, r0:r1]))
                    sub = torch.addcmul(ur.expand_as(s), s, lay.row(b_co[b, r0:r1]))
                    out.sub_(sub.mul_(a))
                    del sub
                    di = lay.diag(out, r0)
                    out[di] += s[di] * d_co[b, r0:r1]
                    if mask_mode:
                        out.mul_(vcol)
                    lay.chunk(gb, r0, r1).copy_(out)
                    del out, s, p, a, zc
        return grad, None, None, None, None, None


def _global_coeffs(s_p, s_pa, s_pn, s_a, s_n, valid, inv_rows):
    """Global terms per row and the per-row gradient coefficients (already divided by n_rows).

    alpha = f_prec / S_P, beta = (f_prec + f_rec) / S_PA, gamma = f_spec / S_PN, where f = 1 when
    the term's log is above the -100 clamp. For an unclamped term S_PA > 0 (resp. S_PN > 0), and
    S_P >= S_PA > 0, so the divisions are safe; clamped terms contribute 0.
    """
    one = torch.ones((), dtype=s_p.dtype, device=s_p.device)
    den_p = torch.where(s_p > 0, s_p, one)
    den_a = torch.where(s_a > 0, s_a, one)
    den_n = torch.where(s_n > 0, s_n, one)
    c_prec, f_prec = _clamped_nlog(s_pa / den_p)
    c_rec, f_rec = _clamped_nlog(s_pa / den_a)
    c_spec, f_spec = _clamped_nlog(s_pn / den_n)
    zero = torch.zeros((), dtype=s_p.dtype, device=s_p.device)
    global_rows = torch.where(valid, c_prec + c_rec + c_spec, zero)
    fp = (f_prec & valid).to(s_p.dtype)
    fr = (f_rec & valid).to(s_p.dtype)
    fs = (f_spec & valid).to(s_p.dtype)
    alpha = torch.where(fp > 0, fp / den_p, zero) * inv_rows
    beta = torch.where(fp + fr > 0, (fp + fr) / torch.where(s_pa > 0, s_pa, one), zero) * inv_rows
    gamma = torch.where(fs > 0, fs / torch.where(s_pn > 0, s_pn, one), zero) * inv_rows
    return alpha, beta, gamma, global_rows


def affinity_loss(prior_logits: torch.Tensor, labels_small: torch.Tensor, ignore_index: int = 255,
                  ignore_mode: str = "class", chunk_rows: int | None = None,
                  prior: torch.Tensor | None = None) -> torch.Tensor:
    """Chunked Affinity Loss from prior logits (B, N, N) and labels on the prior grid ((B, h, w) or (B, N)).

    Labels are compared as values: in "class" mode the ignore label is simply one more value
    (equivalent to the authors' mapping of 255 to ``num_classes``). ``chunk_rows``: rows of the
    N x N map per chunk (default: a chunk of about 16 MiB in the compute dtype). ``prior``: the
    model's P = sigmoid(prior_logits), if it has it; backward then reads p from P (which the head
    keeps for its own backward) instead of keeping the logits alive. No gradient flows into ``prior``.
    """
    _check_mode(ignore_mode)
    if prior_logits.dim() != 3 or prior_logits.shape[1] != prior_logits.shape[2]:
        raise ValueError(f"prior_logits must be (B, N, N), got shape {tuple(prior_logits.shape)}")
    if not prior_logits.is_floating_point():
        raise TypeError(f"prior_logits must be a floating point tensor, got {prior_logits.dtype}")
    y = _flat_labels(labels_small, prior_logits.shape[1]).to(prior_logits.device)
    if y.shape[0] != prior_logits.shape[0]:
        raise ValueError(f"batch sizes differ: prior_logits {prior_logits.shape[0]}, labels {y.shape[0]}")
    if prior is not None:
        prior = prior.detach()
    return _AffinityLossFn.apply(prior_logits, y, int(ignore_index), ignore_mode, chunk_rows, prior)


def _grid_of(n: int, prior_size) -> tuple[int, int]:
    if prior_size is not None:
        h, w = _pair(prior_size)
        if h * w != n:
            raise ValueError(f"prior grid {h}x{w} does not match N = {n}")
        return h, w
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"N = {n} is not a square; pass the prior grid size explicitly")
    return s, s


class AffinityLoss(nn.Module):
    """The Context Prior Affinity Loss, chunked (see the module docstring for the exact semantics).

    ``forward(prior_logits (B, N, N), labels (B, H, W) at full resolution, prior_size=None)``:
    the labels are resized (nearest) to the prior grid, ``prior_size`` (int or (h, w)) or
    sqrt(N) x sqrt(N) when not given. Returns a scalar.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, ignore_mode: str = "class",
                 chunk_rows: int | None = None, prior_size: "int | Sequence[int] | None" = None):
        super().__init__()
        _check_mode(ignore_mode)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.ignore_mode = ignore_mode
        self.chunk_rows = chunk_rows
        self.prior_size = prior_size

    def forward(self, prior_logits: torch.Tensor, labels: torch.Tensor,
                prior_size: "int | Sequence[int] | None" = None, prior: torch.Tensor | None = None) -> torch.Tensor:
        grid = _grid_of(prior_logits.shape[-1], prior_size if prior_size is not None else self.prior_size)
        small = downsample_labels(labels, grid)
        return affinity_loss(prior_logits, small, self.ignore_index, self.ignore_mode, self.chunk_rows, prior)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"ignore_mode={self.ignore_mode!r}, chunk_rows={self.chunk_rows}")


def affinity_loss_reference(prior_logits: torch.Tensor, labels_small: torch.Tensor, num_classes: int,
                            ignore_index: int = 255, ignore_mode: str = "class",
                            prior: torch.Tensor | None = None) -> torch.Tensor:
    """The naive Affinity Loss, term by term with autograd, as the authors write it.

    A = one_hot @ one_hot^T (float, ignore label mapped to class ``num_classes``),
    ``F.binary_cross_entropy`` for the unary term and for each global term against ones.
    ``prior``: P = sigmoid(prior_logits) if the caller already has it (the head does);
    otherwise it is computed here. Keeps several N x N tensors alive for backward: this is
    the memory/time baseline, and a cross-check of :class:`AffinityLoss`.
    """
    _check_mode(ignore_mode)
    B, N, _ = prior_logits.shape
    P = torch.sigmoid(prior_logits) if prior is None else prior
    y = _flat_labels(labels_small, N).to(P.device)
    _check_label_range(y, num_classes, ignore_index)
    valid = y != ignore_index
    y_map = torch.where(valid, y, torch.full_like(y, num_classes))
    one_hot = F.one_hot(y_map, num_classes + 1).to(P.dtype)
    if ignore_mode == "mask":
        one_hot = one_hot[..., :num_classes]          # ignored pixels: all-zero rows
        m = valid.to(P.dtype)
    else:
        m = torch.ones_like(y, dtype=P.dtype)
    A = torch.bmm(one_hot, one_hot.transpose(1, 2))
    mcol = m[:, None, :]
    eye = torch.eye(N, dtype=P.dtype, device=P.device)
    Ad = A * (1 - eye)

    unary = F.binary_cross_entropy(P, A, reduction="none")
    if ignore_mode == "mask":
        pair_w = m[:, :, None] * mcol
        unary = (unary * pair_w).sum() / pair_w.sum().clamp(min=1)
    else:
        unary = unary.mean()

    def bce_one(t):
        return F.binary_cross_entropy(t, torch.ones_like(t), reduction="none")

    num = torch.sum(P * Ad, dim=2)
    den = torch.sum(P * mcol, dim=2)
    precision = num / den.masked_fill(~(den > 0), 1)
    den = torch.sum(Ad, dim=2)
    recall = num / den.masked_fill(~(den > 0), 1)
    spec_num = torch.sum((1 - P) * (1 - A) * mcol, dim=2)
    den = torch.sum((1 - A) * mcol, dim=2)
    spec = spec_num / den.masked_fill(~(den > 0), 1)
    rows = bce_one(precision) + bce_one(recall) + bce_one(spec)
    glob = (rows * m).sum() / m.sum().clamp(min=1)
    return unary + glob


# ----------------------------------------------------------------------------- cross-entropy


def _resize_to(logits: torch.Tensor, size) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class CrossEntropy(nn.Module):
    """Cross-entropy over the valid pixels (mean), ignore index 255 by default.

    A batch with no valid pixel gives 0 (instead of F.cross_entropy's NaN), with zero gradient.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        # sum / count instead of reduction="mean": the same value, 0 (not NaN) without valid pixels,
        # and no host synchronisation
        n_valid = (labels != self.ignore_index).sum().clamp(min=1)
        return F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="sum") / n_valid


@torch.no_grad()
def ohem_keep_mask(logits: torch.Tensor, labels: torch.Tensor, thresh: float, min_kept: int,
                   ignore_index: int = 255) -> torch.Tensor:
    """Pixels OHEM keeps: valid pixels whose softmax probability of the true class is <= threshold.

    threshold = max(thresh, k-th smallest true-class probability) with k = min(min_kept * B,
    number of valid pixels): at least ``min_kept`` pixels per image of the batch are kept (as
    mmseg's ``OHEMPixelSampler``, whose ``min_kept`` counts per image; the comparison is <= as in
    the authors' earlier TorchSeg ``ProbOhemCrossEntropy2d``, so thresh=1 keeps everything).
    """
    labels = labels.long()
    valid = labels != ignore_index
    keep = torch.zeros_like(valid)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return keep
    prob = F.softmax(logits.float(), dim=1)
    tgt = torch.where(valid, labels, torch.zeros_like(labels))
    p_true = prob.gather(1, tgt[:, None])[:, 0]
    pv = p_true[valid]
    threshold = torch.tensor(float(thresh), dtype=pv.dtype, device=pv.device)
    k = min(int(min_kept) * labels.shape[0], n_valid)
    if k > 0:
        kth = torch.kthvalue(pv, k).values
        threshold = torch.maximum(threshold, kth)
    keep = valid & (p_true <= threshold)
    return keep


class OhemCrossEntropy(nn.Module):
    """Online hard example mining cross-entropy (mean over the kept pixels); see :func:`ohem_keep_mask`."""

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000, ignore_index: int = 255):
        super().__init__()
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        keep = ohem_keep_mask(logits, labels, self.thresh, self.min_kept, self.ignore_index)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        target = torch.where(keep, labels, torch.full_like(labels, self.ignore_index))
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)


# ----------------------------------------------------------------------------- CPNet total loss


class CPNetLoss(nn.Module):
    """main CE (OHEM if configured) + aux_weight * aux CE + affinity_weight * Affinity Loss.

    ``forward(outputs, labels)`` with the model's train-mode dict (``out``, optional ``aux``,
    optional ``prior_logits``) and (B, H, W) labels returns ``(total, terms)``: ``terms`` holds the
    unweighted, detached ``main`` and, when present, ``aux`` and ``affinity``. Logits of another
    size than the labels are resized (bilinear, align_corners=False) to the label size first.
    """

    def __init__(self, loss_cfg, num_classes: int, ignore_index: int = 255,
                 prior_size: "int | Sequence[int] | None" = None, chunk_rows: int | None = None):
        super().__init__()
        self.aux_weight = float(loss_cfg.aux_weight)
        self.affinity_weight = float(loss_cfg.affinity_weight)
        if loss_cfg.ohem:
            self.ce = OhemCrossEntropy(loss_cfg.ohem_thresh, loss_cfg.ohem_min_kept, ignore_index)
        else:
            self.ce = CrossEntropy(ignore_index)
        self.affinity = AffinityLoss(num_classes, ignore_index, loss_cfg.affinity_ignore, chunk_rows, prior_size)

    def forward(self, outputs: dict, labels: torch.Tensor):
        size = labels.shape[-2:]
        main = self.ce(_resize_to(outputs["out"], size), labels)
        total = main
        terms = {"main": main.detach()}
        if outputs.get("aux") is not None:
            aux = self.ce(_resize_to(outputs["aux"], size), labels)
            total = total + self.aux_weight * aux
            terms["aux"] = aux.detach()
        if outputs.get("prior_logits") is not None:
            aff = self.affinity(outputs["prior_logits"], labels, prior=outputs.get("prior"))
            total = total + self.affinity_weight * aff
            terms["affinity"] = aff.detach()
        return total, terms


def build_loss(cfg) -> CPNetLoss:
    """The training criterion for a :class:`cpnet.config.Config`."""
    return CPNetLoss(cfg.loss, cfg.model.num_classes, cfg.data.ignore_index, prior_size=cfg.model.prior_size)
