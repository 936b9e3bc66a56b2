"""Adversarial soundness cases, one or more per bound rule, shared by the soundness test and the
mutation test (``test_bounds_mutation.py``).

Each case is an honest FP32 evaluation chosen to come close to its rule's bound: tie-rounding
sums in the worst (descending, sequential) order, products landing on ties, conversions of
integers just past 2^24, and libm functions / divisions emulated at the accuracy the libm table
documents (:func:`at_allowance`). Inputs are fixed, so every run sees the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taonode.runtime.bounds.core import LIBM, libm_bound
from tests.runtime.fp32_orders import (
    U,
    at_allowance,
    seq_dot_rows,
    seq_sum,
    sorted_sum,
    tie_factors,
    tie_terms,
)


@dataclass(frozen=True)
class Case:
    target: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    ys: tuple[Tensor, ...]
    label: str


CASES: list[Case] = []


def case(target: str, label: str) -> Callable[[Callable[[], tuple[Any, ...]]], None]:
    def deco(fn: Callable[[], tuple[Any, ...]]) -> None:
        args, kwargs, ys = fn()
        CASES.append(Case(target, args, kwargs, tuple(ys), label))

    return deco


N = 96
A = tie_factors(N)


# --- dot products and reductions: tie sums in descending sequential order ----------------------
@case("aten.linear.default", "tie-dot, bias 0, sequential")
def _linear() -> tuple[Any, ...]:
    x, w, b = A[None], A[None], torch.zeros(1)
    return (x, w, b), {}, [seq_dot_rows(x, w.t()) + b]


@case("aten.mm.default", "tie-dot sequential")
def _mm() -> tuple[Any, ...]:
    return (A[None], A[:, None]), {}, [seq_dot_rows(A[None], A[:, None])]


@case("aten.matmul.default", "tie-dot sequential")
def _matmul() -> tuple[Any, ...]:
    return (A[None], A[:, None]), {}, [seq_dot_rows(A[None], A[:, None])]


@case("aten.bmm.default", "tie-dot sequential")
def _bmm() -> tuple[Any, ...]:
    a, b = A[None, None], A[None, :, None]
    return (a, b), {}, [seq_dot_rows(a[0], b[0])[None]]


@case("aten.addmm.default", "tie-dot, c = 0")
def _addmm() -> tuple[Any, ...]:
    c = torch.zeros(1, 1)
    return (c, A[None], A[:, None]), {}, [c + seq_dot_rows(A[None], A[:, None])]


@case("aten.conv1d.default", "tie-dot as a direct convolution")
def _conv1d() -> tuple[Any, ...]:
    x, w, b = A.view(1, 1, N), A.view(1, 1, N), torch.zeros(1)
    return (x, w, b), {}, [seq_dot_rows(A[None], A[:, None]).view(1, 1, 1)]


@case("aten.conv2d.default", "tie-dot as a direct convolution")
def _conv2d() -> tuple[Any, ...]:
    x, w, b = A.view(1, 1, 1, N), A.view(1, 1, 1, N), torch.zeros(1)
    return (x, w, b), {}, [seq_dot_rows(A[None], A[:, None]).view(1, 1, 1, 1)]


T = tie_terms(N)


@case("aten.sum.dim_IntList", "tie-sum descending")
def _sum() -> tuple[Any, ...]:
    return (T[None], [1]), {}, [seq_sum(T[None], 1)]


@case("aten.sum.default", "tie-sum descending")
def _sum_all() -> tuple[Any, ...]:
    return (T,), {}, [seq_sum(T, 0)]


@case("aten.mean.dim", "tie-sum then divide")
def _mean() -> tuple[Any, ...]:
    return (T[None], [1]), {}, [seq_sum(T[None], 1) / N]


@case("aten.mean.default", "tie-sum then divide")
def _mean_all() -> tuple[Any, ...]:
    return (T,), {}, [seq_sum(T, 0) / N]


P = tie_terms(64).view(1, 1, 8, 8)


@case("aten.avg_pool2d.default", "8x8 window, tie-sum")
def _avgpool() -> tuple[Any, ...]:
    return (P, [8, 8]), {}, [(seq_sum(P.reshape(1, 1, 64), 2) / 64).view(1, 1, 1, 1)]


@case("aten.adaptive_avg_pool2d.default", "8x8 -> 1, tie-sum")
def _adaptive() -> tuple[Any, ...]:
    return (P, [1, 1]), {}, [(seq_sum(P.reshape(1, 1, 64), 2) / 64).view(1, 1, 1, 1)]


@case("aten.linalg_vector_norm.default", "tie squares, sequential")
def _norm() -> tuple[Any, ...]:
    x = tie_factors(256)[None]
    return (x, 2.0, [1]), {}, [torch.sqrt(seq_sum(x * x, 1))]


# --- one rounding: ties ------------------------------------------------------------------------
TIE = torch.tensor([1 + 2.0**-12, -(1 + 2.0**-12), 3 + 2.0**-11])


@case("aten.mul.Tensor", "product on a tie")
def _mul() -> tuple[Any, ...]:
    return (TIE, TIE), {}, [TIE * TIE]


@case("aten.mul.Scalar", "FP32 scalar, product on a tie")
def _mul_s() -> tuple[Any, ...]:
    s = 1 + 2.0**-12
    return (TIE, s), {}, [TIE * s]


ONE = torch.tensor([1.0, 2.0, -4.0])
HALF_ULP = torch.tensor([2.0**-24, 2.0**-23, -(2.0**-22)])


@case("aten.add.Tensor", "sum on a tie")
def _add() -> tuple[Any, ...]:
    return (ONE, HALF_ULP), {}, [ONE + HALF_ULP]


@case("aten.add.Scalar", "scalar sum on a tie")
def _add_s() -> tuple[Any, ...]:
    return (ONE, 2.0**-24), {}, [ONE + 2.0**-24]


@case("aten.sub.Tensor", "difference on a tie")
def _sub() -> tuple[Any, ...]:
    return (ONE, -HALF_ULP), {}, [ONE - (-HALF_ULP)]


@case("aten.sub.Scalar", "scalar difference on a tie")
def _sub_s() -> tuple[Any, ...]:
    return (ONE, -(2.0**-24)), {}, [ONE + 2.0**-24]


@case("aten.rsub.Scalar", "1 - x on a tie")
def _rsub() -> tuple[Any, ...]:
    x = torch.tensor([-(2.0**-24), -(2.0**-24)])
    return (x, 1.0), {}, [1.0 - x]


@case("aten.rsub.Tensor", "y - x on a tie")
def _rsub_t() -> tuple[Any, ...]:
    x = -HALF_ULP
    return (x, ONE), {}, [ONE - x]


BIG = torch.tensor([2**24 + 1, -(2**24 + 1), 2**25 + 2])


@case("aten.to.dtype", "int64 past 2^24 to float32")
def _to() -> tuple[Any, ...]:
    return (BIG, torch.float32), {}, [BIG.to(torch.float32)]


@case("aten._to_copy.default", "int64 past 2^24 to float32")
def _to_copy() -> tuple[Any, ...]:
    return (BIG,), {"dtype": torch.float32}, [BIG.to(torch.float32)]


@case("aten.arange.start", "start + 1 on a tie (2^23 − 0.5 + 1)")
def _arange() -> tuple[Any, ...]:
    start = 2.0**23 - 0.5
    y = torch.tensor(start, dtype=torch.float32) + torch.arange(0, 3, dtype=torch.float32)
    return (start, start + 2.5), {"dtype": torch.float32}, [y]


@case("aten.arange.start_step", "fl32(start) + i·step on a tie")
def _arange_step() -> tuple[Any, ...]:
    start, step = 2.0**23 - 0.5, 1.0
    y = torch.tensor(start, dtype=torch.float32) + torch.arange(0, 3, dtype=torch.float32) * step
    return (start, start + 2.5, step), {"dtype": torch.float32}, [y]


# --- libm functions and division at their documented accuracy ---------------------------------
def _pow2_outputs(f64: Callable[[Tensor], Tensor], inv: Callable[[Tensor], Tensor]) -> Tensor:
    """FP32 arguments whose results lie just above powers of two (where k ulp is 2k·u)."""
    targets = torch.tensor([2.0**e * (1 + 2.0**-20) for e in range(-6, 6)], dtype=torch.float64)
    return inv(targets).float()


def _libm_case(name: str, x: Tensor) -> None:
    f = getattr(torch, name)
    ref = f(x.double())
    allow = libm_bound(name, x.double(), ref)
    ys = [at_allowance(ref, allow, 1.0), at_allowance(ref, allow, -1.0)]
    CASES.append(Case(f"aten.{name}.default", (x,), {}, tuple(ys), "at the libm allowance"))


_libm_case("exp", _pow2_outputs(torch.exp, torch.log))
_libm_case("log", torch.tensor([1.0 + 2.0**-23, 1.5, 3.0, 1e-3, 2.0**20 + 1]))
_libm_case("tanh", torch.tensor([0.55, 0.6, 1e-3, -2.0, 0.0]))
_libm_case("erf", torch.tensor([1e-4, 0.5, 0.48, -1.2, 3.0]))
_libm_case("sin", torch.tensor([0.53, 1e-3, 2.0, -3.0, 100.0]))
_libm_case("cos", torch.tensor([1.05, 1e-3, 2.0, -3.0, 100.0]))
_libm_case("rsqrt", _pow2_outputs(torch.rsqrt, lambda t: t**-2))
_libm_case("sqrt", _pow2_outputs(torch.sqrt, lambda t: t**2))

XS = torch.tensor([-20.0, -3.0, -1e-3, 1e-3, 0.7, 2.5, 9.0])


def _exp_allow(x: Tensor, ref: Tensor) -> Tensor:
    a = LIBM["exp"]
    return (2 * a.ulp * U + a.arg * U * x.abs()) * ref.abs()


@case("aten.sigmoid.default", "exp at its allowance, 2-ulp division")
def _sigmoid() -> tuple[Any, ...]:
    x = XS.double()
    e = torch.exp(-x)
    e_hat = at_allowance(e, _exp_allow(-x, e))
    den = 1 + e_hat
    q = 1 / den.double()
    y = at_allowance(q, 2 * LIBM["div"].ulp * U * q)
    return (XS,), {}, [y]


@case("aten.silu.default", "x / (1 + exp(-x)), exp at its allowance, 2-ulp division")
def _silu() -> tuple[Any, ...]:
    x = XS.double()
    e = torch.exp(-x)
    den = 1 + at_allowance(e, _exp_allow(-x, e))
    q = XS.double() / den.double()
    return (XS,), {}, [at_allowance(q, 2 * LIBM["div"].ulp * U * q.abs())]


@case("aten.div.Tensor", "2-ulp division (div.full.f32)")
def _div() -> tuple[Any, ...]:
    x = torch.tensor([1.0 + 2.0**-20, 3.0, -7.0])
    d = torch.tensor([1.0, 1.5, 3.5])
    q = x.double() / d.double()
    return (x, d), {}, [at_allowance(q, 2 * LIBM["div"].ulp * U * q.abs())]


@case("aten.div.Scalar", "2-ulp division by a scalar")
def _div_s() -> tuple[Any, ...]:
    x = torch.tensor([1.0 + 2.0**-20, 3.0, -7.0])
    q = x.double() / 1.0
    return (x, 1.0), {}, [at_allowance(q, 2 * LIBM["div"].ulp * U * q.abs())]


@case("aten.gelu.default", "erf at its allowance (absolute term), small x")
def _gelu() -> tuple[Any, ...]:
    x = torch.tensor([1e-3, -1e-3, 0.02, 0.3, -0.5, -3.0])
    z = (x * (1 / math.sqrt(2))).double()
    e = torch.erf(z)
    a = LIBM["erf"]
    e_hat = at_allowance(e, 2 * a.ulp * U * e.abs() + a.abs * U)
    return (x,), {}, [x * 0.5 * (1 + e_hat)]


@case("aten.gelu.default", "tanh form, tanh at its allowance")
def _gelu_tanh() -> tuple[Any, ...]:
    x = torch.tensor([-3.0, -2.5, -4.0, 0.3, -0.5])
    c = math.sqrt(2 / math.pi)
    inner = (c * (x + 0.044715 * x**3)).double()
    t = torch.tanh(inner)
    t_hat = at_allowance(t, 2 * LIBM["tanh"].ulp * U * t.abs())
    return (x,), {"approximate": "tanh"}, [0.5 * x * (1 + t_hat)]


# --- softmax, attention, normalisation --------------------------------------------------------
def _softmax_case() -> tuple[Any, ...]:
    z = torch.tensor([[0.0, -0.3, -1.0, -2.0, -4.0, -0.1]])
    e = torch.exp((z - z.max()).double())
    allow = 2 * LIBM["softmax_exp"].ulp * U * e
    hat = torch.cat(
        [at_allowance(e[:, :1], allow[:, :1]), at_allowance(e[:, 1:], allow[:, 1:], -1)], 1
    )
    return (z, 1, False), {}, [hat / seq_sum(hat, 1)[:, None]]


case("aten._softmax.default", "exp at the softmax_exp allowance, opposite signs")(_softmax_case)


@case("aten.softmax.int", "exp at the softmax_exp allowance, opposite signs")
def _softmax_int() -> tuple[Any, ...]:
    args, kwargs, ys = _softmax_case()
    return args[:2], kwargs, ys


def _ex2_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Mean and rstd per row by ``E[x²] − μ²`` with descending sequential sums (the weakest
    variance formula kernels use, in its worst order)."""
    n = x.shape[1]
    mu = sorted_sum(x, 1, True) / n
    var = (sorted_sum(x * x, 1, True) / n - mu * mu).clamp(min=0)
    return mu, torch.rsqrt(var + eps)


_G = torch.Generator().manual_seed(11)
LN_X = (3.0 + torch.randn(3, 97, generator=_G)).float()


@case("aten.layer_norm.default", "large mean, E[x²] − μ² in descending order")
def _layer_norm() -> tuple[Any, ...]:
    n = LN_X.shape[1]
    w, b = torch.rand(n, generator=_G) + 0.5, torch.randn(n, generator=_G)
    mu, r = _ex2_stats(LN_X, 1e-5)
    y = (LN_X - mu[:, None]) * r[:, None] * w + b
    return (LN_X, [n], w, b, 1e-5), {}, [y, F.layer_norm(LN_X, [n], w, b, 1e-5)]


@case("aten.group_norm.default", "large mean, E[x²] − μ² in descending order")
def _group_norm() -> tuple[Any, ...]:
    x = LN_X[:2].reshape(1, 2, 97)
    w, b = torch.rand(2, generator=_G) + 0.5, torch.randn(2, generator=_G)
    mu, r = _ex2_stats(x.reshape(2, 97), 1e-5)
    xn = ((x.reshape(2, 97) - mu[:, None]) * r[:, None]).reshape(1, 2, 97)
    y = xn * w[None, :, None] + b[None, :, None]
    return (x, 2, w, b, 1e-5), {}, [y, F.group_norm(x, 2, w, b, 1e-5)]


def _bn_case() -> tuple[Tensor, ...]:
    x = (torch.randn(2, 3, 5, generator=_G) * 4 + 30).float()
    w, b = torch.rand(3, generator=_G) + 0.5, torch.zeros(3)
    # m = 0: the whole error of α reaches the output (x·Δα, no cancellation against m·Δα).
    rm, rv = torch.zeros(3), (torch.rand(3, generator=_G) + 0.1)
    return x, w, b, rm, rv


def _folded_bn(x: Tensor, w: Tensor, b: Tensor, rm: Tensor, rv: Tensor) -> Tensor:
    """``x·α + (b − m·α)`` with ``rsqrt`` at its allowance (rounded up, to push α high)."""
    v = (rv + 1e-5).double()
    r = v.rsqrt()
    r_hat = at_allowance(r, 2 * LIBM["rsqrt"].ulp * U * r)
    a = w * r_hat
    return x * a[:, None] + (b - rm * a)[:, None]


@case("aten.batch_norm.default", "folded x·α + (b − m·α), rsqrt at its allowance")
def _batch_norm() -> tuple[Any, ...]:
    x, w, b, rm, rv = _bn_case()
    args = (x, w, b, rm, rv, False, 0.1, 1e-5, False)
    return args, {}, [_folded_bn(x, w, b, rm, rv), F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)]


@case("aten._native_batch_norm_legit_no_training.default", "folded, rsqrt at its allowance")
def _batch_norm_legit() -> tuple[Any, ...]:
    x, w, b, rm, rv = _bn_case()
    return (x, w, b, rm, rv, 0.1, 1e-5), {}, [_folded_bn(x, w, b, rm, rv)]


@case("aten.scaled_dot_product_attention.default", "scores by tie-dot, exp at its allowance")
def _sdpa() -> tuple[Any, ...]:
    e = 16
    q = (torch.randn(1, 1, 5, e, generator=_G) * 2).float()
    k = (torch.randn(1, 1, 9, e, generator=_G) * 2).float()
    v = torch.randn(1, 1, 9, e, generator=_G).float()
    s = seq_sum(q.unsqueeze(-2) * k.unsqueeze(-3), -1) * (1 / math.sqrt(e))
    ex = torch.exp((s - s.amax(-1, keepdim=True)).double())
    hat = at_allowance(ex, 2 * LIBM["softmax_exp"].ulp * U * ex)
    p = hat / seq_sum(hat, -1)[..., None]
    y = seq_sum(p.unsqueeze(-1) * v.unsqueeze(-3), -2)
    return (q, k, v), {}, [y, F.scaled_dot_product_attention(q, k, v)]
