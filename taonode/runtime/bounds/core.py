"""Shared constants, the libm accuracy table, the rule registry and rounding helpers.

Everything here is arithmetic fact or a documented assumption (``docs/bounds.md``); the rules
in the sibling modules combine these terms per op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

U = 2.0**-24
"""FP32 unit roundoff: one correct rounding has relative error ≤ u."""
FLOOR = 2.0**-126
"""Absolute loss per rounding near underflow (subnormal results, flush-to-zero hardware)."""
FP64_SLACK = 2.0**-20
"""Relative slack for the FP64 reference's own error (every bound has a magnitude term ≥ 2^20
times that error)."""
OVERFLOW = 2.0**128 * (1 - 2.0**-25)
"""Round-to-nearest sends every real ``|v| ≥ OVERFLOW`` (FLT_MAX plus half an ulp) to ±inf."""
ATTN_BLOCK = 16
"""Online-softmax attention kernels rescale their accumulators at most once per this many keys."""


@dataclass(frozen=True)
class Accuracy:
    """``|f̂(x) − f(x)| ≤ (2·ulp·u + arg·u·|x|)·|f(x)| + abs·u`` for a libm-style function.

    ``ulp``: max error in ulps (k ulp ≤ 2k·u relative); ``arg``: an error growing with the
    argument (CUDA's ``__expf``: ``2 + ⌊1.173|x|⌋`` ulp); ``abs``: an absolute error in units
    of u (polynomial ``erf`` in PyTorch's vectorised CPU code and oneDNN, ``__logf``/``__sinf``).
    Each value is 2× the largest published or measured figure (docs/bounds.md, table).
    """

    ulp: float
    arg: float = 0.0
    abs: float = 0.0


LIBM: dict[str, Accuracy] = {
    "exp": Accuracy(ulp=8, arg=4.7),
    "softmax_exp": Accuracy(ulp=40),
    "log": Accuracy(ulp=8, abs=12),
    "tanh": Accuracy(ulp=8),
    "erf": Accuracy(ulp=8, abs=24),
    "sin": Accuracy(ulp=8, abs=12),
    "cos": Accuracy(ulp=8, abs=12),
    "rsqrt": Accuracy(ulp=4),
    "sqrt": Accuracy(ulp=2),
    "div": Accuracy(ulp=2),
}
"""Adopted accuracy per function: 2 × max over glibc, SLEEF (the variant PyTorch calls), MKL
VML HA/LA, oneDNN (measured), CUDA libdevice and its fast intrinsics, PyTorch's own vector
approximations. Sources and the measurements behind each entry: docs/bounds.md."""

Rule = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Tensor, Tensor]]
RULES: dict[str, Rule] = {}

ERROR_SCALE: dict[str, float] = {}
"""Per-target multiplier on the returned bound. Production never sets it: it exists for the
mutation test (``tests/runtime/test_bounds_mutation.py``), which weakens one rule at a time by
2× and requires some soundness case to notice."""


def gamma(n: int | float) -> float:
    """``γ_n = n·u/(1 − n·u)`` (Higham Thm 3.1): any order of an ``n``-term sum/dot product."""
    nu = n * U
    if nu >= 1:
        return math.inf
    return nu / (1 - nu)


def rule(*targets: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for t in targets:
            RULES[t] = fn
        return fn

    return deco


def zero(ref: Tensor) -> Tensor:
    return torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)


def absval(x: Any) -> Any:
    return x.abs() if isinstance(x, Tensor) else abs(x)


def call(target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    ns, _, overload = target.rpartition(".")
    packet = getattr(torch.ops.aten, ns.removeprefix("aten."))
    return getattr(packet, overload)(*args, **kwargs)


def fl32(s: Any, with_float_tensor: bool = True) -> Any:
    """A Python scalar as kernels use it with an FP32 tensor: a float rounded to FP32 (±inf
    past the range), an integer beyond 2^24 too (``x == 16777217`` compares with 16777216).
    With an integer tensor (``with_float_tensor=False``) integers stay exact (integer
    arithmetic) and floats are still rounded (the result is promoted to FP32)."""
    if isinstance(s, bool):
        return s
    if isinstance(s, float) or (with_float_tensor and isinstance(s, int) and abs(s) > 2**24):
        return float(torch.tensor(float(s), dtype=torch.float64).to(torch.float32))
    return s


def scalar_error(s: Any) -> float:
    """``|s − fl32(s)|`` for a Python scalar operand (0 for representable ones)."""
    if isinstance(s, bool) or not isinstance(s, int | float):
        return 0.0
    r = float(torch.tensor(float(s), dtype=torch.float64).to(torch.float32))
    return 0.0 if math.isinf(r) else abs(float(s) - r)


def tiny(ref: Tensor) -> Tensor:
    """``FLOOR`` where a correctly rounded result may be subnormal or flushed, else 0.

    An exact zero (``x − x``, ``0·y``, ``sin 0``) stays an exact zero in FP32: it gets no slack,
    which matters when a later op multiplies it by a huge constant (``finfo.min`` masks).
    """
    a = ref.abs()
    return torch.where((a > 0) & (a < 2.0**-125), FLOOR, 0.0).to(torch.float64)


def one_rounding(ref: Tensor) -> Tensor:
    """Error of one correct rounding of the exact result ``ref``: 0 when ``ref`` is an FP32
    number (a correctly rounded op returns it exactly), else ``u|ref|``; plus :func:`tiny`."""
    exact = ref == ref.to(torch.float32).to(ref.dtype)
    return torch.where(exact, 0.0, U * ref.abs()).to(torch.float64) + tiny(ref)


def libm_bound(name: str, x: Tensor, y: Tensor) -> Tensor:
    """The :data:`LIBM` allowance for ``y = f(x)`` (exact ``y``)."""
    a = LIBM[name]
    rel = 2 * a.ulp * U + (a.arg * U * x.abs() if a.arg else 0.0)
    return rel * y.abs() + a.abs * U + tiny(y)


def may_overflow(mag: Tensor, slack: float) -> Tensor:
    """Where a partial result bounded by ``mag·(1 + slack)`` can reach FP32 overflow: an honest
    kernel may then return ±inf or NaN (split-K with +inf and −inf partials) for a result the
    FP64 reference finds in range. Such elements get ``B = ∞`` (no theoretical claim)."""
    return mag * (1 + slack) >= OVERFLOW


def unconstrained(mask: Tensor, bound: Tensor) -> Tensor:
    return torch.where(mask, math.inf, bound)
