"""Dot products (linear, matmul, addmm, conv) and reductions (sum, mean, pools, 2-norm).

Each output is an ``n``-term sum: ``γ_n·Σ|terms|`` in any order, blocking, split-K or FMA use
(Higham Thm 3.1). Where ``Σ|terms|`` reaches the FP32 overflow threshold a partial sum may
overflow in some honest order (±inf, or NaN from +inf and −inf partials) although the result is
in range: those elements carry no claim (``B = ∞``, :func:`may_overflow`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taonode.runtime.bounds.core import (
    FLOOR,
    LIBM,
    OVERFLOW,
    U,
    gamma,
    may_overflow,
    rule,
    unconstrained,
)


def _dot(ref: Tensor, mag: Tensor, n: int) -> Tensor:
    g = gamma(n)
    return unconstrained(may_overflow(mag, g), g * mag + n * FLOOR)


@rule("aten.linear.default")
def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """y = x·Wᵀ + b with n = in_features products and the bias: ``γ_{n+1}(|x||W|ᵀ + |b|)``."""
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    ref = F.linear(x, w, b)
    mag = F.linear(x.abs(), w.abs(), None if b is None else b.abs())
    return ref, _dot(ref, mag, w.shape[-1] + (0 if b is None else 1))


@rule("aten.matmul.default", "aten.mm.default", "aten.bmm.default")
def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    a, b = args[0], args[1]
    ref = torch.matmul(a, b)
    return ref, _dot(ref, torch.matmul(a.abs(), b.abs()), a.shape[-1])


@rule("aten.addmm.default")
def _addmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``β·c + α·(a@b)``: the product terms, the bias, the α and β scalings: ``γ_{n+3}``."""
    c, a, b = args[0], args[1], args[2]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    ref = torch.addmm(c, a, b, beta=beta, alpha=alpha)
    mag = abs(beta) * c.abs() + abs(alpha) * (a.abs() @ b.abs())
    extra = 1 + (beta != 1) + (alpha != 1)
    return ref, _dot(ref, mag, a.shape[-1] + extra)


@rule("aten.conv2d.default", "aten.conv1d.default")
def _conv(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Direct/GEMM convolution: each output is a dot product of ``n = C_in/groups·Πkernel``
    terms plus the bias: ``γ_{n+1}(|W| ⊛ |x| + |b|)``."""
    x, w = args[0], args[1]
    rest = list(args[2:])
    b = rest[0] if rest else kwargs.get("bias")
    conv = F.conv2d if w.dim() == 4 else F.conv1d
    extra, kw = rest[1:], {k: v for k, v in kwargs.items() if k != "bias"}
    ref = conv(x, w, b, *extra, **kw)
    mag = conv(x.abs(), w.abs(), None if b is None else b.abs(), *extra, **kw)
    return ref, _dot(ref, mag, math.prod(w.shape[1:]) + (0 if b is None else 1))


def _reduced_count(x: Tensor, ref: Tensor) -> int:
    return max(1, x.numel() // max(1, ref.numel()))


@rule("aten.sum.dim_IntList", "aten.sum.default")
def _sum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Any-order sum of n terms: ``γ_{n−1}·Σ|x|`` (Higham)."""
    x = args[0]
    ref = torch.sum(*args, **kwargs)
    mag = torch.sum(x.abs(), *args[1:], **kwargs)
    n = _reduced_count(x, ref)
    return ref, _dot(ref, mag, max(n - 1, 1))


@rule("aten.mean.dim", "aten.mean.default")
def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Sum then one division (or a product by ``fl(1/n)``: two roundings): ``γ_{n+1}·mean|x|``;
    the sum overflows where ``n·mean|x|`` does."""
    x = args[0]
    ref = torch.mean(*args, **kwargs)
    mag = torch.mean(x.abs(), *args[1:], **kwargs)
    n = _reduced_count(x, ref)
    g = gamma(n + 1)
    return ref, unconstrained(may_overflow(n * mag, g), g * mag + n * FLOOR)


@rule("aten.adaptive_avg_pool2d.default")
def _adaptive_avgpool(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """A mean over each window (at most ``n`` elements): ``γ_{n+1}·pool(|x|)``."""
    x, size = args[0], args[1]
    ref = F.adaptive_avg_pool2d(x, size)
    mag = F.adaptive_avg_pool2d(x.abs(), size)
    oh, ow = (size, size) if isinstance(size, int) else size
    n = (math.ceil(x.shape[-2] / oh) + 1) * (math.ceil(x.shape[-1] / ow) + 1)
    g = gamma(n + 1)
    return ref, unconstrained(may_overflow(n * mag, g), g * mag + n * FLOOR)


@rule("aten.avg_pool2d.default")
def _avgpool(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """A window mean of at most ``n = kh·kw`` elements: ``γ_{n+1}·pool(|x|)``."""
    x, k = args[0], args[1]
    ref = F.avg_pool2d(*args, **kwargs)
    mag = F.avg_pool2d(x.abs(), *args[1:], **kwargs)
    n = k * k if isinstance(k, int) else (k[0] * k[0] if len(k) == 1 else math.prod(k))
    g = gamma(n + 1)
    return ref, unconstrained(may_overflow(n * mag, g), g * mag + n * FLOOR)


@rule("aten.linalg_vector_norm.default")
def _vector_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """2-norm as ``sqrt(Σx²)`` (what PyTorch's CPU and CUDA kernels do; BLAS-nrm2-style
    rescaling is outside, like Winograd): the sum of squares has relative error ``γ_n``, the
    root halves it and adds its own (:data:`LIBM` ``sqrt``): ``(γ_n/2 + 2k·u)(1+u)·|y|``.
    Underflowed squares lose ``≤ n·FLOOR``, i.e. ``≤ √(n·FLOOR)`` after the root; where
    ``Σx²`` overflows FP32 the kernel returns inf although ``|y|`` is in range: no claim."""
    x = args[0]
    order = args[1] if len(args) > 1 else kwargs.get("ord", 2)
    if order != 2:
        raise KeyError("linalg_vector_norm: only ord=2 is bounded")
    ref = torch.linalg.vector_norm(*args, **kwargs)
    n = _reduced_count(x, ref)
    rel = (gamma(n) / 2 + 2 * LIBM["sqrt"].ulp * U) * (1 + U)
    bound = rel * ref.abs() + math.sqrt(n * FLOOR)
    return ref, unconstrained(may_overflow(ref * ref, gamma(n)) | (ref >= OVERFLOW), bound)
