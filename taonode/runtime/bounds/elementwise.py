"""Element-wise arithmetic (``+ − × ÷`` with tensors or Python scalars) and libm functions.

Scalars: the FP32 program rounds a Python float to FP32 before using it (:func:`fl32`), and the
reference does the same, so the exact result is that of the FP32 operands and one rounding of
it is the whole error. A kernel may instead keep the scalar in double (CPU ``arange``-style
accumulation, some fused kernels): :func:`_scalar_view` adds the distance between the two
readings and that reading's own rounding. The rounding term is kept even when the FP64 result
happens to be an FP32 number: the old rule dropped it whenever ``x·0.1`` in FP64 was
representable, while the FP32 program computes ``x·fl32(0.1)`` and rounds (r up to 2 on 1,600
of 17,798 constructed cases, issue 11).
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
    RULES,
    Rule,
    U,
    absval,
    call,
    fl32,
    libm_bound,
    one_rounding,
    rule,
    tiny,
    unconstrained,
    zero,
)


def _fp32_scalars(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    floating = any(isinstance(a, Tensor) and a.is_floating_point() for a in args)
    return tuple(fl32(a, floating) for a in args)


def _scalar_view(ref: Tensor, ref_face: Tensor, bound: Tensor) -> Tensor:
    """Add the reading of a kernel that keeps Python scalars at full precision: its exact
    result ``ref_face`` differs from ``ref`` by Δ, and it rounds that once more."""
    delta = (ref_face - ref).abs()
    return bound + torch.where(delta > 0, delta * (1 + 2 * U) + U * ref_face.abs(), 0.0)


def _has_scalar(args: tuple[Any, ...]) -> bool:
    floating = any(isinstance(a, Tensor) and a.is_floating_point() for a in args)
    return any(
        isinstance(a, int | float) and not isinstance(a, bool) and fl32(a, floating) != a
        for a in args
    )


def _mul(target: str) -> Rule:
    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = call(target, _fp32_scalars(args, kwargs), kwargs)
        if not ref.is_floating_point():
            return ref, zero(ref)
        bound = one_rounding(ref)
        if _has_scalar(args):
            bound = _scalar_view(ref, call(target, args, kwargs), bound)
        return ref, bound

    return fn


for _t in ("aten.mul.Tensor", "aten.mul.Scalar"):
    RULES[_t] = _mul(_t)


def _div(target: str) -> Rule:
    """``x/y``: ``2·LIBM['div'].ulp·u|y|`` covers IEEE division, ``x·fl(1/y)`` (kernels divide
    by a scalar so: two roundings), and 2-ulp approximate division (Triton's ``div.full.f32``,
    CUDA without ``-prec-div``). A scalar divisor whose FP32 reciprocal overflows (subnormal
    divisor) leaves no claim."""

    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = call(target, _fp32_scalars(args, kwargs), kwargs)
        if not ref.is_floating_point():
            return ref, zero(ref)
        bound = 2 * LIBM["div"].ulp * U * ref.abs() + 2 * tiny(ref)
        if _has_scalar(args):
            bound = _scalar_view(ref, call(target, args, kwargs), bound)
        d = args[1]
        if (
            not isinstance(d, Tensor)
            and fl32(float(d)) != 0
            and abs(1 / fl32(float(d))) >= OVERFLOW
        ):
            bound = torch.full_like(bound, math.inf)
        return ref, bound

    return fn


for _t in ("aten.div.Tensor", "aten.div.Scalar"):
    RULES[_t] = _div(_t)


def _addsub(target: str) -> Rule:
    """One rounding of the sum (an exact zero stays exact: Sterbenz), the rounding of
    ``alpha·b`` when ``alpha ≠ 1`` (fused or not), scalars rounded to FP32 (+ their
    full-precision reading). ``rsub(x, other, alpha) = other − alpha·x``."""
    alpha_on_first = "rsub" in target

    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        fargs = _fp32_scalars(args[:2], kwargs)
        floating = any(isinstance(a, Tensor) and a.is_floating_point() for a in args[:2])
        fkw = {**kwargs, "alpha": fl32(alpha, floating)} if "alpha" in kwargs else kwargs
        fargs = fargs + tuple(fl32(a, floating) for a in args[2:])
        ref = call(target, fargs, fkw)
        if not ref.is_floating_point():
            return ref, zero(ref)
        bound = one_rounding(ref)
        scaled = fargs[0] if alpha_on_first else fargs[1]
        if alpha != 1:
            ab = absval(fl32(alpha, floating)) * absval(scaled)
            bound = bound + U * ab
            if isinstance(ab, Tensor):
                bound = unconstrained(ab >= OVERFLOW, bound)
        if _has_scalar(args[:2]) or _has_scalar((alpha,)):
            bound = _scalar_view(ref, call(target, args, kwargs), bound)
        return ref, bound * (1 + 2 * U)

    return fn


for _t in (
    "aten.add.Tensor",
    "aten.add.Scalar",
    "aten.sub.Tensor",
    "aten.sub.Scalar",
    "aten.rsub.Scalar",
    "aten.rsub.Tensor",
):
    RULES[_t] = _addsub(_t)


def _libm(name: str) -> Rule:
    target = f"aten.{name}.default"

    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = call(target, args, kwargs)
        return ref, libm_bound(name, args[0], ref)

    return fn


for _name in ("exp", "log", "tanh", "erf", "sin", "cos", "rsqrt", "sqrt"):
    RULES[f"aten.{_name}.default"] = _libm(_name)


def _exp_rel(x: Tensor) -> Tensor:
    """Relative error of ``exp(−x)`` in a sigmoid/silu (argument ``−x``, same magnitude)."""
    a = LIBM["exp"]
    return 2 * a.ulp * U + a.arg * U * x.abs()


@rule("aten.sigmoid.default")
def _sigmoid(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``1/(1 + e^{−x})``: exp's error damped by ``e/(1+e) ≤ 1``, the add and the division."""
    x = args[0]
    ref = torch.sigmoid(x)
    rel = _exp_rel(x) + (2 * LIBM["div"].ulp + 1) * U
    return ref, rel * ref.abs() + 2 * tiny(ref)


@rule("aten.silu.default")
def _silu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """silu(x) = x/(1 + e^{−x}) or x·sigmoid(x): the sigmoid's error and one more rounding.
    Below x = −87 ``e^{−x}`` overflows FP32 and kernels return −0: the whole (< 2^-120) value is
    lost there."""
    x = args[0]
    ref = F.silu(x)
    rel = _exp_rel(x) + (2 * LIBM["div"].ulp + 2) * U
    bound = rel * ref.abs() + 2 * tiny(ref)
    return ref, torch.where(x < -87.0, ref.abs() + bound, bound)


@rule("aten.gelu.default")
def _gelu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """GELU. erf form ``y = x/2·(1 + erf(z))``, ``z = x·fl(1/√2)``: erf's error
    (:data:`LIBM` ``erf``: relative *and* absolute — PyTorch's vectorised CPU GELU and oneDNN
    evaluate erf by a polynomial whose error is absolute, ~10u, which relative terms cannot
    cover near ``erf(z) ≈ 0``: an honest MiniLM trace hit r = 1.9 there), the rounding of z
    propagated by ``erf'(z)``, the ``1 + erf`` add, all scaled by ``|x|/2``; then two products:
    ``+ 3u|y|``. tanh form: the same with tanh and the inner cubic's rounding. ``x·(1+erf)``
    overflows FP32 for ``|x| ≥ FLT_MAX/2``: no claim there."""
    x = args[0]
    approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
    ref = F.gelu(x, approximate=approx)
    if approx == "tanh":
        c = math.sqrt(2 / math.pi)
        inner = c * (x + 0.044715 * x**3)
        t = torch.tanh(inner)
        d_inner = 6 * U * c * (x.abs() + 0.044715 * x.abs() ** 3)
        t_err = 2 * LIBM["tanh"].ulp * U * t.abs() + LIBM["tanh"].abs * U
        inner_err = t_err + U * (1 + t).abs() + (1 - t * t) * d_inner
    else:
        z = x / math.sqrt(2)
        e = torch.erf(z)
        deriv = 2 / math.sqrt(math.pi) * torch.exp(-z * z)
        e_err = 2 * LIBM["erf"].ulp * U * e.abs() + LIBM["erf"].abs * U
        inner_err = e_err + U * (1 + e).abs() + 2 * U * z.abs() * deriv
    bound = 0.5 * x.abs() * inner_err + 3 * U * ref.abs() + 3 * FLOOR
    return ref, unconstrained(2 * x.abs() >= OVERFLOW, bound)
