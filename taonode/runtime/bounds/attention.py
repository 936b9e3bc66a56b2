"""Softmax, fused attention and normalisation (layer, group, batch norm).

Libm terms come from :data:`LIBM`: softmax kernels may use PyTorch's ``exp_u20`` (20 ulp) and
``rsqrt`` is the adopted ``LIBM['rsqrt']`` (4 ulp); docs/bounds.md derives each bound.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taonode.runtime.bounds.core import (
    ATTN_BLOCK,
    FLOOR,
    LIBM,
    U,
    gamma,
    may_overflow,
    rule,
    unconstrained,
)

SOFTMAX_EXP_REL = 2 * LIBM["softmax_exp"].ulp * U
RSQRT_REL = 2 * LIBM["rsqrt"].ulp * U + U
"""rstd = rsqrt(var + eps): the function's error and the rounding of the add."""


def _softmax_weight_error(
    s: Tensor, err_s: Tensor, p: Tensor, dim: int, extra_rel: Tensor | float
) -> Tensor:
    """Absolute error bound of each softmax weight given score errors ``err_s``.

    Computed weight j: ``exp(ŝ_j - m)(1+ε_j)`` normalised by their sum. With
    ``ε_j = 2k·u + 4u·|s_j - m| + extra_rel`` (k = ``LIBM["softmax_exp"].ulp``: libm error;
    rounding of the shifted argument, including an exp2 rescaling):
    ``p̂_j/p_j = (1+α_j)(1+δ)/(1+β)`` with ``|α_j| ≤ expm1(|δs_j| + ε_j)``, ``|δ| ≤ u`` (the
    division) and ``|β| ≤ b₀ + γ_{n+2}(1 + b₀)``, ``b₀ = Σ_l p_l·expm1(|δs_l| + ε_l)`` (the sum),
    so ``Δp_j ≤ p_j(α_j(1+u) + u + β)/(1 − β)`` — exact, no first-order truncation (the old
    ``p_j·expm1(2θ_j)`` was 2× loose). For weights with large ``α_j`` (masked or far-below-max
    scores) the
    direct bound ``p̂_j ≤ exp(s_j - s_L + |δs_j| + ε_j + |δs_L| + 2ε_L + γ_n)`` against the
    top weight ``L`` is used when smaller.
    """
    n = s.shape[dim]
    finite = torch.isfinite(s)
    m = torch.where(finite, s, torch.full_like(s, -math.inf)).amax(dim=dim, keepdim=True)
    shift = torch.where(finite, (s - m).abs(), torch.zeros_like(s))
    eps = SOFTMAX_EXP_REL + 4 * U * shift + extra_rel
    per = torch.where(finite, err_s + eps, torch.zeros_like(s))
    # p̂_j/p_j = (1+α_j)(1+γ)/(1+β) with |α_j| ≤ expm1(per_j), |β| ≤ Σ p_l·expm1(per_l) + γ
    # (the sum's and the division's roundings): |p̂_j/p_j − 1| ≤ (α_j + β)/(1 − β).
    alpha = torch.expm1(per.clamp(max=700.0))
    b0 = (p * alpha).sum(dim=dim, keepdim=True)
    beta = b0 + gamma(n + 2) * (1 + b0)
    rel = (alpha * (1 + U) + U + beta) / (1 - beta).clamp(min=2.0**-60)
    relative = torch.where(beta < 1, p * rel, math.inf)
    top = p.argmax(dim=dim, keepdim=True)
    s_top = torch.gather(s, dim, top)
    per_top = torch.gather(per, dim, top)
    direct = torch.exp((s - s_top + per + 2 * per_top + gamma(n + 2)).clamp(max=700.0)) + p
    out = torch.minimum(relative, direct)
    return torch.where(finite, out, torch.zeros_like(out))


@rule("aten._softmax.default", "aten.softmax.int")
def _softmax(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x, dim = args[0], args[1]
    ref = torch.softmax(x, dim)
    werr = _softmax_weight_error(x, torch.zeros_like(x), ref, dim, 0.0)
    return ref, werr + U * ref.abs() + (x.shape[dim] + 2) * FLOOR


@rule("aten.scaled_dot_product_attention.default")
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
    bound = werr @ va + gamma(s_len + 2) * ((p + werr) @ va) + U * ref.abs() + (s_len + 4) * FLOOR
    # Scores or the unnormalised accumulators Σ e^{s-m}|v| may overflow FP32 in some kernel.
    score_mag = (abs(sc) * (q.abs() @ k.abs().transpose(-1, -2))).amax(dim=-1, keepdim=True)
    acc_mag = va.sum(dim=-2, keepdim=True)
    over = may_overflow(score_mag, gamma(e_dim + 4)) | may_overflow(acc_mag, gamma(s_len + 2))
    return ref, unconstrained(over.expand_as(bound), bound)


# --- normalisation -------------------------------------------------------------------------------
def _norm_bound(
    x: Tensor, dims: tuple[int, ...], eps: float, w: Tensor | None, b: Tensor | None, ref: Tensor
) -> Tensor:
    """Bound for ``(x - μ)/sqrt(var + eps)·w + b`` with statistics over ``dims``.

    * mean of n terms: ``e_μ ≤ γ_{n+1}·mean|x|``;
    * variance by two-pass, Welford or ``E[x²] - μ²`` (all seen in kernels): the last is the
      weakest, ``e_var ≤ 4γ_{4n+8}·mean(x²) + 2e_μ·mean|x-μ| + e_μ²``;
    * rstd = (var+eps)^-½ with ``ε = e_var/(var+eps)``: relative error
      ``ρ = (1-ε)^-½(1 + 2k·u + u) - 1``, k = ``LIBM['rsqrt'].ulp`` (unbounded when ε ≥ 1:
      then B = ∞);
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
    grow = (1 - ratio.clamp(max=0.999)).rsqrt() * (1 + RSQRT_REL) - 1
    rho = torch.where(ratio < 1, grow, math.inf)
    r = (var + eps).rsqrt()
    core = r * (
        e_mu * (1 + rho) + dev.abs() * rho + 6 * U * (x.abs() + mu.abs() + e_mu) * (1 + rho)
    )
    xhat = dev * r
    wa = 1.0 if w is None else w.abs()
    bound = wa * (core + 2 * U * xhat.abs()) + 2 * U * ref.abs() + 8 * FLOOR
    if b is not None:
        bound = bound + 4 * U * b.abs()
    # Σx² (the E[x²] − μ² variant) overflows FP32 before the result does: no claim there.
    sq = n * (x * x).mean(dim=dims, keepdim=True)
    return unconstrained(may_overflow(sq, gamma(n)), torch.nan_to_num(bound, nan=math.inf))


@rule("aten.layer_norm.default")
def _layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    x, shape = args[0], list(args[1])
    w = args[2] if len(args) > 2 else kwargs.get("weight")
    b = args[3] if len(args) > 3 else kwargs.get("bias")
    eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
    ref = F.layer_norm(x, shape, w, b, eps)
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    return ref, _norm_bound(x, dims, eps, w, b, ref)


@rule("aten.group_norm.default")
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


@rule("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")
def _batch_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Inference batch norm with running statistics ``(x - m)·w/sqrt(v+eps) + b``; kernels
    fold it into ``x·α + (b - m·α)``: ``α = w·rsqrt(v + eps)`` carries the rsqrt allowance, the
    add and the product (``RSQRT_REL + u``), each term two more roundings:
    ``B = (RSQRT_REL + 3u)(|x|+|m|)|α| + 3u|b| + 2u|y|`` (the unfolded form, a 2-ulp sqrt and
    division, stays inside). The old ``8u`` assumed a ~2-ulp rsqrt, below the adopted 4 ulp."""
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
    rel = RSQRT_REL + 3 * U
    bound = rel * (x.abs() + rm.abs().reshape(shape)) * alpha.abs().reshape(shape)
    if b is not None:
        bound = bound + 3 * U * b.abs().reshape(shape)
    over = may_overflow((x.abs() + rm.abs().reshape(shape)) * alpha.abs().reshape(shape), rel)
    return ref, unconstrained(over, bound + 2 * U * ref.abs() + 4 * FLOOR)
