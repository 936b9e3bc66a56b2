"""Soundness of the theoretical bounds: honest FP32 evaluations in many orders stay inside,
low-precision (bf16, fp16, TF32-style) evaluations land outside.

Inputs: hypothesis draws seeds, sizes (odd ones included) and the magnitude spread (up to 30
decades); every evaluation order is FP32-only (see fp32_orders.py).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from taonode.runtime.bounds import RULES, reference_and_bound
from taonode.runtime.check import normalized_error
from tests.runtime.fp32_orders import (
    alternating,
    blocked_sum,
    chunked_sum,
    log_uniform,
    matmul_orders,
    pairwise_sum,
    round_mantissa,
    scale_of,
    seq_sum,
    sorted_sum,
)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
aten = torch.ops.aten


def up(x: Any) -> Any:
    if isinstance(x, Tensor) and x.dtype == torch.float32:
        return x.double()
    if isinstance(x, list | tuple):
        return type(x)(up(v) for v in x)
    return x


def r_max(target: str, args: tuple[Any, ...], kwargs: dict[str, Any], y: Tensor) -> float:
    ref, bound = reference_and_bound(target, up(args), up(kwargs))
    assert y.shape == ref.shape, (y.shape, ref.shape)
    return float(normalized_error(y.float(), ref, bound).max())


def assert_inside(
    target: str, args: tuple[Any, ...], kwargs: dict[str, Any], ys: list[Tensor]
) -> None:
    for i, y in enumerate(ys):
        r = r_max(target, args, kwargs, y)
        assert r <= 1.0, f"{target}: evaluation order {i} leaves the bound (r = {r})"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


seeds = st.integers(0, 2**31 - 1)
odd_sizes = st.integers(1, 37)


@SETTINGS
@given(seeds, odd_sizes, st.integers(1, 97), odd_sizes, st.integers(0, 24))
def test_linear_bound_sound_succeeds(seed: int, m: int, k: int, n: int, decades: int) -> None:
    g = gen(seed)
    # Up to ~48 decades across x, w, b, yet no product overflows FP32 (an inf is not honest).
    x = log_uniform((m, k), g, decades) * scale_of(g, 10)
    w = log_uniform((n, k), g, decades)
    b = log_uniform((n,), g, decades) * scale_of(g, 10)
    ys = [y + b for y in matmul_orders(x, w.t().contiguous(), g)]
    ys += [F.linear(x, w, b), b + x @ w.t(), torch.addmm(b, x, w.t())]
    # bias first, then a sequential accumulation
    acc = b.expand(m, n).clone()
    for i in range(k):
        acc = acc + x[:, i : i + 1] * w[:, i]
    ys.append(acc)
    assert_inside("aten.linear.default", (x, w, b), {}, ys)


@SETTINGS
@given(
    seeds,
    st.integers(1, 3),
    st.integers(1, 7),
    st.integers(3, 11),
    st.sampled_from([1, 3]),
    st.sampled_from([1, 2]),
    st.integers(0, 20),
)
def test_conv2d_bound_sound_succeeds(
    seed: int, nb: int, cin: int, hw: int, ks: int, stride: int, decades: int
) -> None:
    g = gen(seed)
    groups = 1 if cin % 2 else 2 if cin > 1 else 1
    cout = 2 * groups
    x = log_uniform((nb, cin, hw, hw), g, decades) * scale_of(g, 10)
    w = log_uniform((cout, cin // groups, ks, ks), g, decades)
    b = log_uniform((cout,), g, decades)
    args = (x, w, b, [stride, stride], [ks // 2, ks // 2], [1, 1], groups)
    ys = [
        F.conv2d(*args),
        F.conv2d(x.to(memory_format=torch.channels_last), w, b, *args[3:]),
        torch.cat([F.conv2d(x[i : i + 1], *args[1:]) for i in range(nb)]),
    ]
    if groups == 1:
        # im2col + GEMM in other orders
        cols = F.unfold(x, ks, padding=ks // 2, stride=stride)  # (nb, cin*ks*ks, L)
        oh = (hw + 2 * (ks // 2) - ks) // stride + 1
        wm = w.reshape(cout, -1).t().contiguous()
        for y in matmul_orders(cols.transpose(1, 2), wm, g)[1:5]:
            ys.append((y + b).transpose(1, 2).reshape(nb, cout, oh, oh))
    assert_inside("aten.conv2d.default", args, {}, ys)


@SETTINGS
@given(seeds, st.integers(1, 9), st.integers(1, 200), st.integers(0, 40), st.booleans())
def test_sum_mean_bound_sound_succeeds(
    seed: int, rows: int, n: int, decades: int, alternate: bool
) -> None:
    g = gen(seed)
    x = (alternating if alternate else log_uniform)((rows, n), g, decades) * scale_of(g)
    sums = [
        sorted_sum(x, 1, True),
        sorted_sum(x, 1, False),
        blocked_sum(x, 1, g),
        x.sum(1),
        seq_sum(x, 1),
        pairwise_sum(x, 1),
        chunked_sum(x, 1, g),
        x[:, torch.randperm(n, generator=g)].sum(1),
        torch.stack([r.sum() for r in x]),
    ]
    assert_inside("aten.sum.dim_IntList", (x, [1]), {}, sums)
    assert_inside("aten.mean.dim", (x, [1]), {}, [x.mean(1)] + [s / n for s in sums])


def _norm_variants(x: Tensor, eps: float, g: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """(mean, rstd) per row of x (rows, n) by two-pass, Welford, E[x²]-μ², permuted."""
    n = x.shape[1]
    out = []
    mu = seq_sum(x, 1) / n
    var = seq_sum((x - mu[:, None]) ** 2, 1) / n
    out.append((mu, torch.rsqrt(var + eps)))
    # Welford, sequential
    m = torch.zeros(x.shape[0])
    m2 = torch.zeros(x.shape[0])
    for i in range(n):
        d = x[:, i] - m
        m = m + d / (i + 1)
        m2 = m2 + d * (x[:, i] - m)
    out.append((m, 1 / torch.sqrt(m2 / n + eps)))
    # E[x²] - μ² with pairwise sums
    mu2 = pairwise_sum(x, 1) / n
    ex2 = pairwise_sum(x * x, 1) / n
    out.append((mu2, torch.rsqrt(torch.clamp(ex2 - mu2 * mu2, min=0) + eps)))
    p = torch.randperm(n, generator=g)
    mu3 = chunked_sum(x[:, p], 1, g) / n
    var3 = chunked_sum((x[:, p] - mu3[:, None]) ** 2, 1, g) / n
    out.append((mu3, torch.rsqrt(var3 + eps)))
    return out


@SETTINGS
@given(seeds, st.integers(1, 7), st.integers(2, 129), st.integers(0, 12), st.floats(-6, 6))
def test_layer_norm_bound_sound_succeeds(
    seed: int, rows: int, n: int, decades: int, offset_exp: float
) -> None:
    g = gen(seed)
    scale = scale_of(g, 20)
    x = (log_uniform((rows, n), g, decades) + 10.0**offset_exp) * scale
    x = x.float()
    w = log_uniform((n,), g, 4)
    b = log_uniform((n,), g, 4)
    eps = 1e-5 * scale * scale if scale < 1e17 else 1e-5
    eps = float(torch.tensor(eps, dtype=torch.float32))
    ys = [
        F.layer_norm(x, [n], w, b, eps),
        torch.cat([F.layer_norm(r[None], [n], w, b, eps) for r in x]),
    ]
    for mu, rstd in _norm_variants(x, eps, g):
        ys.append((x - mu[:, None]) * rstd[:, None] * w + b)
        s = rstd[:, None] * w
        ys.append(x * s + (b - mu[:, None] * s))
    assert_inside("aten.layer_norm.default", (x, [n], w, b, eps), {}, ys)


@SETTINGS
@given(
    seeds,
    st.integers(1, 3),
    st.sampled_from([1, 2, 4]),
    st.integers(1, 3),
    st.integers(2, 9),
    st.integers(0, 10),
)
def test_group_norm_bound_sound_succeeds(
    seed: int, nb: int, groups: int, cpg: int, hw: int, decades: int
) -> None:
    g = gen(seed)
    c = groups * cpg
    x = (log_uniform((nb, c, hw, hw), g, decades) + 3.0) * scale_of(g, 12)
    w = log_uniform((c,), g, 2)
    b = log_uniform((c,), g, 2)
    eps = 1e-5
    ys = [
        F.group_norm(x, groups, w, b, eps),
        F.group_norm(x.to(memory_format=torch.channels_last), groups, w, b, eps),
    ]
    xg = x.reshape(nb * groups, -1)
    for mu, rstd in _norm_variants(xg, eps, g):
        xn = ((xg - mu[:, None]) * rstd[:, None]).reshape(x.shape)
        ys.append(xn * w[None, :, None, None] + b[None, :, None, None])
    assert_inside("aten.group_norm.default", (x, groups, w, b, eps), {}, ys)


@SETTINGS
@given(seeds, st.integers(1, 3), st.integers(1, 8), st.integers(1, 6), st.integers(0, 8))
def test_batch_norm_bound_sound_succeeds(seed: int, nb: int, c: int, hw: int, decades: int) -> None:
    g = gen(seed)
    x = log_uniform((nb, c, hw, hw), g, decades) * scale_of(g, 10)
    w, b = log_uniform((c,), g, 2), log_uniform((c,), g, 2)
    rm = log_uniform((c,), g, 4)
    rv = torch.rand(c, generator=g) * 10 + 0.01
    eps = 1e-5
    sh = (1, c, 1, 1)
    alpha = w / torch.sqrt(rv + eps)
    ys = [
        F.batch_norm(x, rm, rv, w, b, False, 0.1, eps),
        (x - rm.view(sh)) / torch.sqrt(rv.view(sh) + eps) * w.view(sh) + b.view(sh),
        x * alpha.view(sh) + (b - rm * alpha).view(sh),
    ]
    assert_inside("aten.batch_norm.default", (x, w, b, rm, rv, False, 0.1, eps, False), {}, ys)


def _attention_orders(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, g: torch.Generator
) -> list[Tensor]:
    e = q.shape[-1]
    scale = 1 / math.sqrt(e)
    ys = [F.scaled_dot_product_attention(q, k, v, attn_mask=mask)]
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ys.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    ys.append(torch.softmax(s, -1) @ v)
    # Online softmax over key blocks of a random size >= 16 (flash-style), sequential.
    blk = int(torch.randint(16, 40, (1,), generator=g))
    m = torch.full((*s.shape[:-1], 1), -math.inf)
    acc = torch.zeros((*q.shape[:-1], v.shape[-1]))
    den = torch.zeros((*s.shape[:-1], 1))
    for a in range(0, s.shape[-1], blk):
        sb = s[..., a : a + blk]
        m_new = torch.maximum(m, sb.amax(-1, keepdim=True))
        alpha = torch.exp(m - m_new)
        p = torch.exp(sb - m_new)
        acc = acc * alpha + p @ v[..., a : a + blk, :]
        den = den * alpha + p.sum(-1, keepdim=True)
        m = m_new
    ys.append(acc / den)
    # Permuted keys (with the mask permuted alike).
    perm = torch.randperm(k.shape[-2], generator=g)
    pm = None if mask is None else mask[..., perm]
    ys.append(F.scaled_dot_product_attention(q, k[..., perm, :], v[..., perm, :], attn_mask=pm))
    return ys


@SETTINGS
@given(
    seeds,
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 40),
    st.integers(1, 70),
    st.sampled_from([4, 8, 13, 32]),
    st.booleans(),
    st.integers(0, 6),
)
def test_sdpa_bound_sound_succeeds(
    seed: int, nb: int, h: int, lq: int, lk: int, e: int, masked: bool, decades: int
) -> None:
    g = gen(seed)
    sc = scale_of(g, 4)
    q = log_uniform((nb, h, lq, e), g, decades) * sc
    k = log_uniform((nb, h, lk, e), g, decades)
    v = log_uniform((nb, h, lk, e), g, decades) * scale_of(g, 10)
    mask = None
    if masked:
        keep = torch.rand(nb, 1, 1, lk, generator=g) < 0.7
        keep[..., 0] = True
        mask = (
            torch.where(keep, 0.0, torch.finfo(torch.float32).min)
            .expand(nb, 1, lq, lk)
            .contiguous()
        )
    ys = _attention_orders(q, k, v, mask, g)
    assert_inside("aten.scaled_dot_product_attention.default", (q, k, v, mask), {}, ys)


@SETTINGS
@given(seeds, st.integers(1, 300), st.integers(0, 8))
def test_elementwise_bounds_sound_succeeds(seed: int, n: int, decades: int) -> None:
    g = gen(seed)
    x = log_uniform((n,), g, decades) * scale_of(g, 4)
    xs = x.clamp(-80, 80)
    y = log_uniform((n,), g, decades)
    import numpy as np

    xn, yn = x.numpy(), y.numpy()
    t = torch.from_numpy
    s = 1 / math.sqrt(2)
    cases: list[tuple[str, tuple[Any, ...], dict[str, Any], list[Tensor]]] = [
        (
            "aten.gelu.default",
            (x,),
            {},
            [
                F.gelu(x),
                x * 0.5 * (1 + torch.erf(x * s)),
                0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
            ],
        ),
        ("aten.gelu.default", (x,), {"approximate": "tanh"}, [F.gelu(x, approximate="tanh")]),
        ("aten.silu.default", (x,), {}, [F.silu(x), x * torch.sigmoid(x), x / (1 + torch.exp(-x))]),
        ("aten.exp.default", (xs,), {}, [torch.exp(xs), t(np.exp(xs.numpy()))]),
        ("aten.sin.default", (x,), {}, [torch.sin(x), t(np.sin(xn))]),
        ("aten.cos.default", (x,), {}, [torch.cos(x), t(np.cos(xn))]),
        ("aten.tanh.default", (x,), {}, [torch.tanh(x), t(np.tanh(xn))]),
        ("aten.sigmoid.default", (x,), {}, [torch.sigmoid(x), 1 / (1 + torch.exp(-x))]),
        ("aten.add.Tensor", (x, y), {}, [x + y, t(xn + yn)]),
        ("aten.sub.Tensor", (x, y), {}, [x - y, t(xn - yn)]),
        ("aten.mul.Tensor", (x, y), {}, [x * y, t(xn * yn)]),
        ("aten.mul.Tensor", (x, 0.1), {}, [x * 0.1, t(xn * np.float32(0.1))]),
        ("aten.div.Tensor", (x, y), {}, [x / y, x * (1 / y)]),
        ("aten.div.Tensor", (x, 3.0), {}, [x / 3.0, x * float(np.float32(1 / 3.0))]),
        ("aten.rsub.Scalar", (x, 1.0), {}, [1.0 - x]),
        ("aten.clamp.default", (x, 1e-9), {}, [torch.clamp(x, min=1e-9)]),
        ("aten.relu.default", (x,), {}, [F.relu(x), torch.clamp(x, min=0)]),
    ]
    for target, args, kwargs, ys in cases:
        assert_inside(target, args, kwargs, ys)


@SETTINGS
@given(seeds, st.integers(1, 5), st.integers(1, 300), st.integers(0, 20))
def test_vector_norm_and_softmax_bounds_sound_succeeds(
    seed: int, rows: int, n: int, decades: int
) -> None:
    g = gen(seed)
    # Magnitudes up to 1e15: squares stay finite in FP32 (overflow is not an honest result).
    x = log_uniform((rows, n), g, decades) * scale_of(g, 10)
    ys = [
        torch.linalg.vector_norm(x, 2, dim=1),
        torch.sqrt(seq_sum(x * x, 1)),
        torch.sqrt(pairwise_sum(x * x, 1)),
    ]
    assert_inside("aten.linalg_vector_norm.default", (x, 2.0, [1]), {}, ys)
    z = log_uniform((rows, n), g, min(decades, 4))
    e = torch.exp(z - z.amax(1, keepdim=True))
    ys = [torch.softmax(z, 1), e / seq_sum(e, 1)[:, None], e * (1 / pairwise_sum(e, 1))[:, None]]
    assert_inside("aten._softmax.default", (z, 1, False), {}, ys)


@SETTINGS
@given(seeds, st.integers(1, 3), st.integers(1, 5), st.integers(1, 13))
def test_pooling_bounds_sound_succeeds(seed: int, nb: int, c: int, hw: int) -> None:
    g = gen(seed)
    x = log_uniform((nb, c, hw, hw), g, 10)
    flat = x.reshape(nb, c, -1)
    ys = [
        F.adaptive_avg_pool2d(x, 1),
        (seq_sum(flat, 2) / (hw * hw))[..., None, None],
        (pairwise_sum(flat, 2) / (hw * hw))[..., None, None],
    ]
    assert_inside("aten.adaptive_avg_pool2d.default", (x, [1, 1]), {}, ys)
    if hw >= 2:
        assert_inside("aten.max_pool2d.default", (x, [2, 2]), {}, [F.max_pool2d(x, 2)])


# --- negative tests: low precision must land outside ---------------------------------------


def _lowp_linear(x: Tensor, w: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    return F.linear(x.to(dtype), w.to(dtype), b.to(dtype)).float()


def test_linear_bound_low_precision_reverts() -> None:
    g = gen(3)
    x, w, b = (
        torch.randn(16, 256, generator=g),
        torch.randn(64, 256, generator=g) * 0.05,
        torch.randn(64, generator=g),
    )
    args = (x, w, b)
    for dtype in (torch.bfloat16, torch.float16):
        assert r_max("aten.linear.default", args, {}, _lowp_linear(x, w, b, dtype)) > 1, dtype
    tf32 = F.linear(round_mantissa(x, 10), round_mantissa(w, 10), b)
    assert r_max("aten.linear.default", args, {}, tf32) > 1
    assert r_max("aten.linear.default", args, {}, F.linear(x, w, b)) <= 1


def test_conv_norm_attention_low_precision_reverts() -> None:
    g = gen(4)
    x = torch.randn(2, 8, 12, 12, generator=g)
    w, b = torch.randn(8, 8, 3, 3, generator=g) * 0.1, torch.randn(8, generator=g)
    cargs = (x, w, b, [1, 1], [1, 1])
    tf32 = F.conv2d(round_mantissa(x, 10), round_mantissa(w, 10), b, 1, 1)
    assert r_max("aten.conv2d.default", cargs, {}, tf32) > 1
    assert (
        r_max(
            "aten.conv2d.default", cargs, {}, F.conv2d(x.half(), w.half(), b.half(), 1, 1).float()
        )
        > 1
    )
    h = torch.randn(4, 64, generator=g) * 3 + 1
    lw, lb = torch.rand(64, generator=g) + 0.5, torch.randn(64, generator=g)
    largs = (h, [64], lw, lb, 1e-5)
    assert (
        r_max(
            "aten.layer_norm.default",
            largs,
            {},
            F.layer_norm(h.bfloat16(), [64], lw.bfloat16(), lb.bfloat16()).float(),
        )
        > 1
    )
    q, k, v = (torch.randn(1, 2, 24, 16, generator=g) for _ in range(3))
    low = F.scaled_dot_product_attention(q.half(), k.half(), v.half()).float()
    assert r_max("aten.scaled_dot_product_attention.default", (q, k, v), {}, low) > 1
    gl = F.gelu(h.bfloat16()).float()
    assert r_max("aten.gelu.default", (h,), {}, gl) > 1
    assert r_max("aten.gelu.default", (h,), {}, F.gelu(h, approximate="tanh")) > 1


def test_every_rule_has_a_soundness_case_succeeds() -> None:
    # Every rule has an adversarial case (test_bounds_mutation.py); the families here add
    # randomised shapes, magnitudes and orders on top.
    from taonode.runtime.bounds import EXACT
    from tests.runtime.bound_cases import CASES
    from tests.runtime.test_bounds_mutation import ZERO_BOUND

    assert set(RULES) - EXACT - ZERO_BOUND <= {c.target for c in CASES}


@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_model_sized_shapes_sound_succeeds(seed: int) -> None:
    """The shapes the reference models and MiniLM really use (hypothesis favours small ones)."""
    g = gen(seed)
    x = log_uniform((16, 1536), g, 8)
    w = log_uniform((384, 1536), g, 4) * 0.02
    b = log_uniform((384,), g, 2)
    ys = [F.linear(x, w, b), *(y + b for y in matmul_orders(x, w.t().contiguous(), g)[2:5])]
    assert_inside("aten.linear.default", (x, w, b), {}, ys)
    q, k, v = (log_uniform((2, 12, 128, 32), g, 4) for _ in range(3))
    keep = torch.arange(128)[None, :] < torch.tensor([128, 77])[:, None]
    mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    ys = _attention_orders(q, k, v, mask.expand(2, 1, 128, 128).contiguous(), g)
    assert_inside("aten.scaled_dot_product_attention.default", (q, k, v, mask), {}, ys)
    h = log_uniform((8, 1024), g, 6) + 50.0
    lw, lb = log_uniform((1024,), g, 2), log_uniform((1024,), g, 2)
    ys = [F.layer_norm(h, [1024], lw, lb, 1e-12)]
    ys += [(h - mu[:, None]) * r[:, None] * lw + lb for mu, r in _norm_variants(h, 1e-12, g)]
    assert_inside("aten.layer_norm.default", (h, [1024], lw, lb, 1e-12), {}, ys)
    c = log_uniform((2, 64, 9, 9), g, 6)
    cw, cb = log_uniform((32, 64, 3, 3), g, 4), log_uniform((32,), g, 2)
    args = (c, cw, cb, [1, 1], [1, 1])
    ys = [F.conv2d(*args), F.conv2d(c.to(memory_format=torch.channels_last), *args[1:])]
    assert_inside("aten.conv2d.default", args, {}, ys)


def test_exact_results_get_no_slack_reverts() -> None:
    """Exactly representable results (1 - 1, int -> float, x·1.0) admit no deviation: a
    ``finfo.min`` mask multiplies any slack there into a huge score shift (found by the
    bound-aware adversary)."""
    m = torch.tensor([1, 1, 0])
    assert r_max("aten.to.dtype", (m, torch.float32), {}, torch.tensor([1.0, 1 - 2**-24, 0.0])) > 1
    one = torch.tensor([1.0, 1.0, 0.0])
    assert r_max("aten.rsub.Scalar", (one, 1.0), {}, torch.tensor([2.0**-30, 0.0, 1.0])) > 1
    assert r_max("aten.rsub.Scalar", (one, 1.0), {}, torch.tensor([0.0, 0.0, 1.0])) == 0
    fmin = torch.finfo(torch.float32).min
    z = torch.tensor([0.0, 1.0])
    assert r_max("aten.mul.Tensor", (z, fmin), {}, torch.tensor([-(2.0**-126), fmin])) > 1
