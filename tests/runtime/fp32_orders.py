"""Alternative honest FP32 evaluation orders, used by the soundness suite and calibration.

Every function here computes the op in FP32 arithmetic only (each intermediate rounded to
FP32), in a different summation order than the default kernel: sequential, pairwise, split-K
with random chunking, permuted reduction order, unbatched. They stand in for other kernels and
hardware.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor


def seq_sum(terms: Tensor, dim: int) -> Tensor:
    """Left-to-right FP32 sum along ``dim`` (no FMA: terms are already rounded)."""
    terms = terms.movedim(dim, 0)
    acc = terms[0].clone()
    for i in range(1, terms.shape[0]):
        acc = acc + terms[i]
    return acc


def pairwise_sum(terms: Tensor, dim: int) -> Tensor:
    t = terms.movedim(dim, 0)
    while t.shape[0] > 1:
        if t.shape[0] % 2:
            t = torch.cat([t, torch.zeros_like(t[:1])])
        t = t[0::2] + t[1::2]
    out: Tensor = t[0]
    return out


def chunked_sum(terms: Tensor, dim: int, g: torch.Generator) -> Tensor:
    """Split-K: random chunk boundaries, default-kernel partial sums, random merge order."""
    t = terms.movedim(dim, 0)
    n = t.shape[0]
    k = int(torch.randint(1, max(2, min(n, 9)), (1,), generator=g))
    cuts = sorted(set(torch.randint(1, max(2, n), (k,), generator=g).tolist()) - {0, n})
    edges = [0, *cuts, n]
    parts = [t[a:b].sum(dim=0) for a, b in itertools.pairwise(edges) if b > a]
    order = torch.randperm(len(parts), generator=g).tolist()
    acc: Tensor = parts[order[0]]
    for i in order[1:]:
        acc = acc + parts[i]
    return acc


def matmul_orders(a: Tensor, b: Tensor, g: torch.Generator) -> list[Tensor]:
    """``a @ b`` (a: (..., M, K), b: (K, N)) in several FP32 orders."""
    k = a.shape[-1]
    prods = a.unsqueeze(-1) * b  # (..., M, K, N), each product rounded
    perm = torch.randperm(k, generator=g)
    out = [
        a @ b,
        seq_sum(prods, -2),
        pairwise_sum(prods, -2),
        chunked_sum(prods, -2, g),
        a[..., perm] @ b[perm],
        seq_sum(prods[..., perm, :], -2),
    ]
    out.append(sorted_sum(prods, -2, True))  # descending magnitude, sequential
    out.append(sorted_sum(prods, -2, False))
    out.append(blocked_sum(prods, -2, g))
    # split-K with default-kernel partial GEMMs
    cut = int(torch.randint(1, max(2, k), (1,), generator=g)) if k > 1 else k
    out.append(a[..., :cut] @ b[:cut] + a[..., cut:] @ b[cut:])
    # unbatched: one row at a time
    rows = a.reshape(-1, a.shape[-2], k)
    out.append(
        torch.stack(
            [torch.cat([r[i : i + 1] @ b for i in range(r.shape[0])]) for r in rows]
        ).reshape(out[0].shape)
    )
    return out


def round_mantissa(x: Tensor, bits: int) -> Tensor:
    """Round FP32 ``x`` to ``bits`` explicit mantissa bits (TF32: 10), nearest-even-ish."""
    drop = 23 - bits
    i = x.contiguous().view(torch.int32)
    half = 1 << (drop - 1)
    r = (i + half) & ~((1 << drop) - 1)
    return r.view(torch.float32)


def log_uniform(shape: tuple[int, ...], g: torch.Generator, decades: float) -> Tensor:
    """Random signs and magnitudes spread over ``decades`` decades (per element)."""
    mag = torch.pow(10.0, (torch.rand(shape, generator=g) * 2 - 1) * decades / 2)
    return (torch.randn(shape, generator=g) * mag).to(torch.float32)


def scale_of(g: torch.Generator, decades: int = 30) -> float:
    return math.pow(10.0, float(torch.randint(-decades // 2, decades // 2 + 1, (1,), generator=g)))


# --- adversarial orders and inputs -------------------------------------------------------------
U = 2.0**-24


def sorted_sum(terms: Tensor, dim: int, descending: bool) -> Tensor:
    """Sequential sum after sorting each fibre by magnitude (descending: every small term is
    rounded against the large partial sum; ascending: the classic accurate order)."""
    t = terms.movedim(dim, -1)
    idx = t.abs().argsort(dim=-1, descending=descending)
    return seq_sum(torch.gather(t, -1, idx), -1)


def alternating(shape: tuple[int, ...], g: torch.Generator, decades: float) -> Tensor:
    """Magnitudes over ``decades`` with strictly alternating signs (heavy cancellation)."""
    x = log_uniform(shape, g, decades).abs()
    sign = torch.ones(shape[-1])
    sign[1::2] = -1
    return x * sign


def blocked_sum(terms: Tensor, dim: int, g: torch.Generator) -> Tensor:
    """Blocked: random block size, default-kernel block sums merged pairwise (a GPU tree)."""
    t = terms.movedim(dim, 0)
    n = t.shape[0]
    blk = int(torch.randint(1, max(2, n), (1,), generator=g))
    parts = torch.stack([t[a : a + blk].sum(dim=0) for a in range(0, n, blk)])
    return pairwise_sum(parts, 0)


def tie_terms(n: int) -> Tensor:
    """``[1, u, u, …]``: in descending sequential order every ``partial + u`` is a tie that
    rounds to even (down), so the FP32 sum loses ``(n−1)·u`` — the worst case of ``γ_{n−1}``."""
    x = torch.full((n,), U)
    x[0] = 1.0
    return x


def tie_factors(n: int) -> Tensor:
    """``[1, 2^-12, 2^-12, …]``: exact squares / products ``[1, u, u, …]`` (see tie_terms)."""
    x = torch.full((n,), 2.0**-12)
    x[0] = 1.0
    return x


def seq_dot_rows(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (a: (M, K), b: (K, N)) with each output accumulated left to right in FP32."""
    return seq_sum(a.unsqueeze(-1) * b, -2)


def at_allowance(ref: Tensor, allowance: Tensor, sign: float = 1.0) -> Tensor:
    """The FP32 result of an implementation that errs by (just under) ``allowance`` in the
    direction ``sign``: the float nearest ``ref + sign·0.999·allowance``, stepped back toward
    ``ref`` if rounding took it past the allowance. Stands in for a libm at its documented
    worst accuracy (glibc, SLEEF, VML, CUDA intrinsics, PyTorch's polynomials)."""
    ref = ref.double()
    y = (ref + sign * 0.999 * allowance).float()
    past = (y.double() - ref).abs() > allowance
    return torch.where(past, torch.nextafter(y, ref.float()), y)
