"""Sound element-wise bounds for FP32 execution of each op (DESIGN §3 "Theoretical bounds").

For an op with committed FP32 inputs, ``Y_ref`` is the op evaluated in FP64 on the upcast
inputs and ``B`` a bound such that *any* honest FP32 execution ``Y`` satisfies
``|Y - Y_ref| <= B · (1 + 2^-20)`` element-wise, whatever summation order, blocking, split-K or
FMA use the kernel chose. The ``(1 + 2^-20)`` factor absorbs the FP64 evaluation's own error
(every bound carries a magnitude term at least as large as the FP64 error, which is ~2^-29 of
it). Derivations are in ``docs/bounds.md``; constants are named below.

Assumptions (documented, checked by ``tests/runtime/test_bounds_soundness.py`` on the kernels
this host runs):

* ``+ - * /`` and ``sqrt`` are correctly rounded (IEEE-754); ``u = 2^-24``;
  ``γ_n = n·u / (1 - n·u)`` (Higham, Thm 3.1): any order of an ``n``-term sum / dot product.
* Transcendental functions (``exp sin cos tanh sigmoid erf log``) are accurate to
  :data:`LIBM_ULP` ulp (CUDA documents ≤ 2 ulp, SLEEF's u10 ≤ 1 ulp); an error of ``k`` ulp is
  at most ``2k·u`` relative. PyTorch's vectorised CPU ``erf`` inside GELU is a polynomial
  approximation: :data:`GELU_ERF_ULP` is used there.
* Every rounding may additionally lose :data:`FLOOR` in absolute terms (subnormal results,
  flush-to-zero hardware).
* Convolutions are direct or GEMM-based (im2col); Winograd/FFT algorithms are not FP32-exact
  dot products and are outside these bounds (cuDNN must be pinned to GEMM-like algorithms).
* Online-softmax attention kernels rescale their accumulators at most once per
  :data:`ATTN_BLOCK` keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taonode.runtime.graph import target_name

U = 2.0**-24
FLOOR = 2.0**-126
FP64_SLACK = 2.0**-20
LIBM_ULP = 4
GELU_ERF_ULP = 8
ATTN_BLOCK = 16

Rule = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Tensor, Tensor]]
RULES: dict[str, Rule] = {}
EXACT = "exact"


def gamma(n: int | float) -> float:
    nu = n * U
    if nu >= 1:
        return math.inf
    return nu / (1 - nu)


def _rule(*targets: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for t in targets:
            RULES[t] = fn
        return fn

    return deco


def _zero(ref: Tensor) -> Tensor:
    return torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)


def _abs(x: Any) -> Any:
    return x.abs() if isinstance(x, Tensor) else abs(x)


def _mag(ref: Tensor) -> Tensor:
    if ref.is_floating_point():
        return ref.abs().to(torch.float64)
    return _zero(ref)


def _call(target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    ns, _, overload = target.rpartition(".")
    packet = getattr(torch.ops.aten, ns.removeprefix("aten."))
    return getattr(packet, overload)(*args, **kwargs)


def _tiny(ref: Tensor) -> Tensor:
    """``FLOOR`` where a correctly rounded result may be subnormal or flushed, else 0.

    An exact zero (``x - x``, ``0·y``, ``sin 0``) stays an exact zero in FP32: it gets no slack,
    which matters when a later op multiplies it by a huge constant (``finfo.min`` masks).
    """
    a = ref.abs()
    return torch.where((a > 0) & (a < 2.0**-125), FLOOR, 0.0).to(torch.float64)


def _one_rounding(ref: Tensor) -> Tensor:
    """Error of one correct rounding of the exact result ``ref``: 0 when ``ref`` is an FP32
    number (a correctly rounded op returns it exactly), else ``u|ref|``; plus :func:`_tiny`."""
    exact = ref == ref.to(torch.float32).to(ref.dtype)
    return torch.where(exact, 0.0, U * ref.abs()).to(torch.float64) + _tiny(ref)


def scalar_error(s: Any) -> float:
    """``|s - fl32(s)|`` for a Python scalar operand (kernels round it to FP32 first)."""
    if isinstance(s, bool) or not isinstance(s, int | float):
        return 0.0
    return abs(float(s) - float(torch.tensor(float(s), dtype=torch.float32)))


def _bound_scaled(k: float) -> Callable[[str], Rule]:
    """Rule factory ``B = k·u·|Y_ref|`` (+ FLOOR near underflow): correctly rounded and libm
    element-wise ops."""

    def make(target: str) -> Rule:
        def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
            ref = _call(target, args, kwargs)
            if not ref.is_floating_point():
                return ref, _zero(ref)
            return ref, k * U * ref.abs() + _tiny(ref)

        return rule

    return make


# --- exact ops: data movement, selection, max --------------------------------------------------
_EXACT_OPS = (
    "aten.relu.default",
    "aten.max_pool2d.default",
    "aten.embedding.default",
    "aten.cat.default",
    "aten.upsample_nearest2d.vec",
    "aten.upsample_nearest2d.default",
    "aten.where.self",
    "aten.masked_fill.Scalar",
    "aten.zeros_like.default",
    "aten.ones_like.default",
    "aten.stack.default",
    "aten.argmax.default",
    "aten.eq.Scalar",
    "aten.eq.Tensor",
    "aten.lt.Scalar",
    "aten.gt.Scalar",
)
# Metadata ops that stay ops (they feed the graph output) are exact too.
_EXACT_METADATA = (
    "aten.view.default",
    "aten.reshape.default",
    "aten._unsafe_view.default",
    "aten.transpose.int",
    "aten.permute.default",
    "aten.t.default",
    "aten.expand.default",
    "aten.expand_as.default",
    "aten.unsqueeze.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
    "aten.squeeze.default",
    "aten.flatten.using_ints",
    "aten.unflatten.int",
    "aten.select.int",
    "aten.slice.Tensor",
    "aten.narrow.default",
    "aten.contiguous.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.clone.default",
)


def _exact_rule(target: str) -> Rule:
    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = _call(target, args, kwargs)
        return ref, _zero(ref)

    return rule


for _t in _EXACT_OPS + _EXACT_METADATA:
    RULES[_t] = _exact_rule(_t)

# --- correctly rounded element-wise ops and libm functions ------------------------------------
# Python scalars are rounded to FP32 before the kernel uses them: one more u per scalar.


def _single_rounding(target: str) -> Rule:
    """Conversions and clamps: one correct rounding of the exact value (:func:`_one_rounding`:
    exact for integers below 2^24, FP32 values and FP32-representable scalars)."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = _call(target, args, kwargs)
        if not ref.is_floating_point():
            return ref, _zero(ref)
        return ref, _one_rounding(ref)

    return rule


for _t in (
    "aten.to.dtype",
    "aten._to_copy.default",
    "aten.clamp.default",
    "aten.clamp_min.default",
    "aten.clamp_max.default",
):
    RULES[_t] = _single_rounding(_t)
RULES["aten.arange.default"] = _bound_scaled(2)("aten.arange.default")
RULES["aten.arange.start"] = _bound_scaled(2)("aten.arange.start")
RULES["aten.arange.start_step"] = _bound_scaled(3)("aten.arange.start_step")
RULES["aten.sqrt.default"] = _bound_scaled(1)("aten.sqrt.default")
RULES["aten.rsqrt.default"] = _bound_scaled(2 * LIBM_ULP)("aten.rsqrt.default")
for _name in ("exp", "sin", "cos", "tanh", "sigmoid", "erf", "log"):
    RULES[f"aten.{_name}.default"] = _bound_scaled(2 * LIBM_ULP)(f"aten.{_name}.default")


def _mul(target: str) -> Rule:
    """One rounding (:func:`_one_rounding`), plus the FP32 rounding of a Python scalar factor:
    ``|x|·|s - fl(s)|``."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = _call(target, args, kwargs)
        if not ref.is_floating_point():
            return ref, _zero(ref)
        a, b = args[0], args[1]
        bound = _one_rounding(ref)
        if not isinstance(b, Tensor):
            bound = bound + _abs(a) * scalar_error(b) * (1 + U)
        return ref, bound

    return rule


RULES["aten.mul.Tensor"] = _mul("aten.mul.Tensor")
RULES["aten.mul.Scalar"] = _mul("aten.mul.Scalar")
# Division by a scalar is often multiplication by its FP32 reciprocal: 3 roundings.
RULES["aten.div.Tensor"] = _bound_scaled(3)("aten.div.Tensor")
RULES["aten.div.Scalar"] = _bound_scaled(3)("aten.div.Scalar")


@_rule("aten.silu.default")
def _silu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """silu(x) = x / (1 + exp(-x)): exp (2·LIBM_ULP·u relative, damped by e/(1+e)), the add and
    the division (or a reciprocal and a product): ``(2·LIBM_ULP + 3)·u·|y|``. Below x = -87
    ``exp(-x)`` overflows FP32 and kernels return -0: the whole (tiny, < 2^-120) value is lost."""
    x = args[0]
    ref = F.silu(x)
    bound = (2 * LIBM_ULP + 3) * U * ref.abs() + 2 * _tiny(ref)
    return ref, torch.where(x < -87.0, ref.abs() + bound, bound)


def _addsub(target: str, sign: float) -> Rule:
    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = _call(target, args, kwargs)
        if not ref.is_floating_point():
            return ref, _zero(ref)
        a, b = args[0], args[1]
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        # One rounding (an exact zero stays exact: Sterbenz), the rounding of alpha·b when
        # alpha != 1 (or fused: the bound still holds), and scalars' own rounding to FP32.
        bound = _one_rounding(ref)
        if alpha != 1:
            bound = bound + U * _abs(alpha) * _abs(b) + scalar_error(alpha) * _abs(b)
        if not isinstance(b, Tensor):
            bound = bound + _abs(alpha) * scalar_error(b)
        if not isinstance(a, Tensor):
            bound = bound + scalar_error(a)
        return ref, bound * (1 + 2 * U)

    return rule


for _t in ("aten.add.Tensor", "aten.add.Scalar"):
    RULES[_t] = _addsub(_t, 1.0)
for _t in ("aten.sub.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar", "aten.rsub.Tensor"):
    RULES[_t] = _addsub(_t, -1.0)


@_rule("aten.gelu.default")
def _gelu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """GELU. erf form: y = x/2·(1 + erf(x/√2)). With erf's absolute error
    ``e ≤ 2k·u·|erf(z)|`` plus the argument rounding ``u|z|·erf'(z)``, the (1 + erf) add and
    two products: ``B = |x|/2·(e + u|1+erf| + u|z|·erf'(z)) + 3u|y|``. tanh form: the same with
    tanh and the inner cubic's rounding (5 roundings of a sum of 2 positive terms)."""
    x = args[0]
    approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
    ref = F.gelu(x, approximate=approx)
    if approx == "tanh":
        c = math.sqrt(2 / math.pi)
        inner = c * (x + 0.044715 * x**3)
        t = torch.tanh(inner)
        d_inner = 6 * U * c * (x.abs() + 0.044715 * x.abs() ** 3)
        inner_err = 4 * LIBM_ULP * U * t.abs() + U * (1 + t).abs() + (1 - t * t) * d_inner
    else:
        z = x / math.sqrt(2)
        e = torch.erf(z)
        deriv = 2 / math.sqrt(math.pi) * torch.exp(-z * z)
        inner_err = 2 * GELU_ERF_ULP * U * e.abs() + U * (1 + e).abs() + 2 * U * z.abs() * deriv
    bound = 0.5 * x.abs() * inner_err + 3 * U * ref.abs() + 3 * FLOOR
    return ref, bound


# --- dot products: linear / matmul / conv --------------------------------------------------------
@_rule("aten.linear.default")
def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """y = x·Wᵀ + b with n = in_features products and the bias: ``γ_{n+1}(|x||W|ᵀ + |b|)``."""
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    ref = F.linear(x, w, b)
    mag = F.linear(x.abs(), w.abs(), None if b is None else b.abs())
    n = w.shape[-1] + 1
    return ref, gamma(n) * mag + n * FLOOR


@_rule("aten.matmul.default", "aten.mm.default", "aten.bmm.default")
def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    a, b = args[0], args[1]
    ref = torch.matmul(a, b)
    n = a.shape[-1]
    return ref, gamma(n) * torch.matmul(a.abs(), b.abs()) + n * FLOOR


@_rule("aten.addmm.default")
def _addmm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    c, a, b = args[0], args[1], args[2]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    ref = torch.addmm(c, a, b, beta=beta, alpha=alpha)
    n = a.shape[-1] + 3  # the product terms, the bias, the alpha and beta scalings
    mag = abs(beta) * c.abs() + abs(alpha) * (a.abs() @ b.abs())
    return ref, gamma(n) * mag + n * FLOOR


@_rule("aten.conv2d.default", "aten.conv1d.default")
def _conv(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Direct/GEMM convolution: each output is a dot product of ``n = C_in/groups·Πkernel``
    terms plus the bias: ``γ_{n+1}(|W| ⊛ |x| + |b|)``."""
    x, w = args[0], args[1]
    rest = list(args[2:])
    b = rest[0] if rest else kwargs.get("bias")
    conv = F.conv2d if w.dim() == 4 else F.conv1d
    extra = rest[1:]
    ref = conv(x, w, b, *extra, **{k: v for k, v in kwargs.items() if k != "bias"})
    mag = conv(
        x.abs(),
        w.abs(),
        None if b is None else b.abs(),
        *extra,
        **{k: v for k, v in kwargs.items() if k != "bias"},
    )
    n = math.prod(w.shape[1:]) + 1
    return ref, gamma(n) * mag + n * FLOOR


# --- reductions ----------------------------------------------------------------------------------
def _reduced_count(x: Tensor, ref: Tensor) -> int:
    return max(1, x.numel() // max(1, ref.numel()))


@_rule("aten.sum.dim_IntList", "aten.sum.default")
def _sum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Any-order sum of n terms: ``γ_{n-1}·Σ|x|`` (we use γ_n)."""
    x = args[0]
    ref = torch.sum(*args, **kwargs)
    mag = torch.sum(x.abs(), *args[1:], **kwargs)
    n = _reduced_count(x, ref)
    return ref, gamma(n) * mag + n * FLOOR


@_rule("aten.mean.dim", "aten.mean.default")
def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Sum then one division: ``γ_{n+1}·mean|x|``."""
    x = args[0]
    ref = torch.mean(*args, **kwargs)
    mag = torch.mean(x.abs(), *args[1:], **kwargs)
    n = _reduced_count(x, ref)
    return ref, gamma(n + 1) * mag + n * FLOOR


@_rule("aten.adaptive_avg_pool2d.default")
def _adaptive_avgpool(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """A mean over each window (at most ``n`` elements): ``γ_{n+1}·pool(|x|)``."""
    x, size = args[0], args[1]
    ref = F.adaptive_avg_pool2d(x, size)
    mag = F.adaptive_avg_pool2d(x.abs(), size)
    oh, ow = (size, size) if isinstance(size, int) else size
    n = (math.ceil(x.shape[-2] / oh) + 1) * (math.ceil(x.shape[-1] / ow) + 1)
    return ref, gamma(n + 1) * mag + n * FLOOR


@_rule("aten.avg_pool2d.default")
def _avgpool(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x, k = args[0], args[1]
    ref = F.avg_pool2d(*args, **kwargs)
    mag = F.avg_pool2d(x.abs(), *args[1:], **kwargs)
    n = k * k if isinstance(k, int) else math.prod(k)
    return ref, gamma(n + 1) * mag + n * FLOOR


@_rule("aten.linalg_vector_norm.default")
def _vector_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """2-norm: the sum of squares has relative error γ_n (possibly computed with scaling, as
    BLAS nrm2 does: count 2n+4 roundings), the square root halves it and adds u. Underflowed
    squares lose ≤ n·FLOOR in the sum, i.e. ≤ sqrt(n·FLOOR) after the root."""
    x = args[0]
    order = args[1] if len(args) > 1 else kwargs.get("ord", 2)
    if order != 2:
        raise KeyError("linalg_vector_norm: only ord=2 is bounded")
    ref = torch.linalg.vector_norm(*args, **kwargs)
    n = _reduced_count(x, ref)
    return ref, gamma(2 * n + 4) * ref.abs() + math.sqrt(n * FLOOR)


def _softmax_weight_error(
    s: Tensor, err_s: Tensor, p: Tensor, dim: int, extra_rel: Tensor | float
) -> Tensor:
    """Absolute error bound of each softmax weight given score errors ``err_s``.

    Computed weight j: ``exp(ŝ_j - m)(1+ε_j)`` normalised by their sum. With
    ``ε_j = 2k·u + 4u·|s_j - m| + extra_rel`` (libm error, rounding of the shifted argument,
    including an exp2 rescaling), the first-order relative error of ``p_j`` is
    ``θ_j = |δs_j| + ε_j + Σ_l p_l(|δs_l| + ε_l) + γ_n``; ``p_j·(exp(2θ_j) - 1)`` covers the
    higher orders. For weights with large ``θ_j`` (masked or far-below-max scores) the
    direct bound ``p̂_j ≤ exp(s_j - s_L + |δs_j| + ε_j + |δs_L| + 2ε_L + γ_n)`` against the
    top weight ``L`` is used when smaller.
    """
    n = s.shape[dim]
    finite = torch.isfinite(s)
    m = torch.where(finite, s, torch.full_like(s, -math.inf)).amax(dim=dim, keepdim=True)
    shift = torch.where(finite, (s - m).abs(), torch.zeros_like(s))
    eps = 2 * LIBM_ULP * U + 4 * U * shift + extra_rel
    per = torch.where(finite, err_s + eps, torch.zeros_like(s))
    # The softmax perturbation term Σ_l p_l·per_l: masked entries have p_l = 0 exactly.
    weighted = (p * per).sum(dim=dim, keepdim=True)
    theta = per + weighted + gamma(n + 2)
    relative = p * torch.expm1((2 * theta).clamp(max=700.0))
    top = p.argmax(dim=dim, keepdim=True)
    s_top = torch.gather(s, dim, top)
    per_top = torch.gather(per, dim, top)
    direct = torch.exp((s - s_top + per + 2 * per_top + gamma(n + 2)).clamp(max=700.0)) + p
    out = torch.minimum(relative, direct)
    return torch.where(finite, out, torch.zeros_like(out))


@_rule("aten._softmax.default", "aten.softmax.int")
def _softmax(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x, dim = args[0], args[1]
    ref = torch.softmax(x, dim)
    werr = _softmax_weight_error(x, torch.zeros_like(x), ref, dim, 0.0)
    return ref, werr + U * ref.abs() + (x.shape[dim] + 2) * FLOOR


@_rule("aten.scaled_dot_product_attention.default")
def _sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Fused attention ``softmax(s·QKᵀ + M)·V`` as one leaf (math, flash or memory-efficient).

    * scores: a dot product of E terms plus up to 4 scalings by (the root of) the scale, and the
      mask add: ``δs ≤ γ_{E+4}·|s|·|Q||K|ᵀ + u·|s·QKᵀ + M|``;
    * softmax weights: :func:`_softmax_weight_error`; online-softmax rescalings (≤ S/ATTN_BLOCK of
      them) add ``8u`` each per weight (their argument errors telescope into the shift term);
    * output: ``Σ_j Δp_j |v_j| + γ_{S+2}·Σ_j (p_j + Δp_j)|v_j| + u|O|``.
    """
    q, k, v = args[0], args[1], args[2]
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    dropout = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
    causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
    scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
    if dropout:
        raise KeyError("scaled_dot_product_attention with dropout is not bounded")
    if kwargs.get("enable_gqa", False):
        raise KeyError("scaled_dot_product_attention with GQA is not bounded")
    e_dim, s_len = q.shape[-1], k.shape[-2]
    sc = scale if scale is not None else 1 / math.sqrt(e_dim)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=sc)
    s = sc * (q @ k.transpose(-1, -2))
    err_s = gamma(e_dim + 4) * abs(sc) * (q.abs() @ k.abs().transpose(-1, -2))
    if causal:
        keep = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, -math.inf)
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, -math.inf)
        else:
            s = s + mask
            err_s = err_s + U * s.abs()
    err_s = torch.where(torch.isfinite(s), err_s, torch.zeros_like(err_s)) + FLOOR
    p = torch.softmax(s, dim=-1)
    rescales = math.ceil(s_len / ATTN_BLOCK)
    werr = _softmax_weight_error(s, err_s, p, -1, rescales * 8 * U)
    va = v.abs()
    bound = werr @ va + gamma(s_len + 2) * ((p + werr) @ va)
    return ref, bound + U * ref.abs() + (s_len + 4) * FLOOR


# --- normalisation -------------------------------------------------------------------------------
def _norm_bound(
    x: Tensor, dims: tuple[int, ...], eps: float, w: Tensor | None, b: Tensor | None, ref: Tensor
) -> Tensor:
    """Bound for ``(x - μ)/sqrt(var + eps)·w + b`` with statistics over ``dims``.

    * mean of n terms: ``e_μ ≤ γ_{n+1}·mean|x|``;
    * variance by two-pass, Welford or ``E[x²] - μ²`` (all seen in kernels): the last is the
      weakest, ``e_var ≤ 4γ_{4n+8}·mean(x²) + 2e_μ·mean|x-μ| + e_μ²``;
    * rstd = (var+eps)^-½ with ``ε = e_var/(var+eps)``: relative error
      ``ρ = (1-ε)^-½(1+6u) - 1`` (unbounded when ε ≥ 1: then B = ∞);
    * output, in either form ``(x-μ)·r·w + b`` or ``x·(r·w) + (b - μ·r·w)``:
      ``|w|·r·(e_μ(1+ρ) + |x-μ|ρ + 6u(|x|+|μ|+e_μ)(1+ρ)) + 2u|x̂ w| + 4u|b| + 2u|y|``.
    """
    n = 1
    for d in dims:
        n *= x.shape[d]
    mu = x.mean(dim=dims, keepdim=True)
    dev = x - mu
    var = (dev * dev).mean(dim=dims, keepdim=True)
    e_mu = gamma(n + 1) * x.abs().mean(dim=dims, keepdim=True) + FLOOR
    e_var = (
        4 * gamma(4 * n + 8) * (x * x).mean(dim=dims, keepdim=True)
        + 2 * e_mu * dev.abs().mean(dim=dims, keepdim=True)
        + e_mu * e_mu
        + n * FLOOR
    )
    ratio = e_var / (var + eps)
    rho = torch.where(ratio < 1, (1 - ratio.clamp(max=0.999)).rsqrt() * (1 + 6 * U) - 1, math.inf)
    r = (var + eps).rsqrt()
    core = r * (
        e_mu * (1 + rho) + dev.abs() * rho + 6 * U * (x.abs() + mu.abs() + e_mu) * (1 + rho)
    )
    xhat = dev * r
    wa = 1.0 if w is None else w.abs()
    bound = wa * (core + 2 * U * xhat.abs()) + 2 * U * ref.abs() + 8 * FLOOR
    if b is not None:
        bound = bound + 4 * U * b.abs()
    return torch.nan_to_num(bound, nan=math.inf)


@_rule("aten.layer_norm.default")
def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x, shape = args[0], list(args[1])
    w = args[2] if len(args) > 2 else kwargs.get("weight")
    b = args[3] if len(args) > 3 else kwargs.get("bias")
    eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
    ref = F.layer_norm(x, shape, w, b, eps)
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    return ref, _norm_bound(x, dims, eps, w, b, ref)


@_rule("aten.group_norm.default")
def _group_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x, groups = args[0], args[1]
    w = args[2] if len(args) > 2 else kwargs.get("weight")
    b = args[3] if len(args) > 3 else kwargs.get("bias")
    eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
    ref = torch.group_norm(x, groups, w, b, eps)
    nb, c = x.shape[0], x.shape[1]
    xg = x.reshape(nb, groups, -1)
    cshape = (1, c) + (1,) * (x.dim() - 2)
    refg = ref.reshape(nb, groups, -1)

    def per_channel(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        return t.reshape(cshape).expand_as(x).reshape(nb, groups, -1)

    bound = _norm_bound(xg, (2,), eps, per_channel(w), per_channel(b), refg)
    return ref, bound.reshape(x.shape)


@_rule("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")
def _batch_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Inference batch norm with running statistics ``(x - m)·w/sqrt(v+eps) + b``; kernels
    fold it into ``x·α + (b - m·α)``: ``α`` carries 4u, each term 2 more roundings:
    ``B = 8u(|x|+|m|)|α| + 3u|b| + 2u|y|``."""
    x, w, b = args[0], args[1], args[2]
    if len(args) >= 9:  # batch_norm.default
        rm, rv, training, eps = args[3], args[4], args[5], args[7]
    else:  # _native_batch_norm_legit_no_training(input, w, b, rm, rv, momentum, eps)
        rm, rv, training, eps = args[3], args[4], False, args[6]
    if training:
        raise KeyError("batch_norm in training mode is not bounded")
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    alpha = (rv + eps).rsqrt() * (1.0 if w is None else w)
    ref = F.batch_norm(x, rm, rv, w, b, False, 0.0, eps)
    bound = 8 * U * (x.abs() + rm.abs().reshape(shape)) * alpha.abs().reshape(shape)
    if b is not None:
        bound = bound + 3 * U * b.abs().reshape(shape)
    return ref, bound + 2 * U * ref.abs() + 4 * FLOOR


def has_bound(target: str) -> bool:
    return target in RULES


def reference_and_bound(
    target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Tensor, Tensor]:
    """``(Y_ref, B)`` for op ``target`` on FP64 ``args`` (B already includes the FP64 slack)."""
    name = target if isinstance(target, str) else target_name(target)
    rule = RULES.get(name)
    if rule is None:
        raise KeyError(f"no theoretical bound for {name} (empirical only)")
    with torch.no_grad():
        ref, bound = rule(args, kwargs)
    return ref, bound * (1 + FP64_SLACK)
