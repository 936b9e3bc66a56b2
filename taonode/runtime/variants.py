"""Execution variants: honest FP32 executions that stand in for other hardware and kernels.

Each variant is an :data:`~taonode.runtime.execute.OpExecutor` (``(target, args, kwargs) ->
result``) plus a name; adding one is one small class. All of them compute the *same* function
in FP32 with a different, legitimate evaluation order:

* ``default``      — the ATen kernel as dispatched.
* ``threads2``     — the ATen kernel with 2 intra-op threads (other blockings/reduction splits).
* ``splitk``       — dot products (linear, conv, attention keys) split along the reduction into
  seeded random chunks whose partial results are summed in FP32 (split-K GEMM).
* ``permuted``     — the reduction index permuted (a kernel that visits K in another order).
* ``batch``        — the sample is computed inside a different batch (extra random rows or
  samples prepended, then dropped): batch composition changes GEMM blocking.
* ``decomposed``   — fused ops replaced by their textbook decompositions in FP32: attention as
  matmul/softmax/matmul, layer/group norm by two-pass statistics, GELU/SiLU from erf/exp.

On CUDA, ``default`` is the real device (TF32 off); cuBLAS/cuDNN algorithm choice is reached by
``splitk``/``batch`` shapes.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taonode.runtime.graph import target_name


def _seed_of(*shapes: Any) -> int:
    # crc32, not hash(): str hashes are salted per process and calibration must be repeatable.
    return zlib.crc32(repr(tuple(str(s) for s in shapes)).encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Variant:
    """Base class: the default kernel. Subclasses override :meth:`op`."""

    name: str = "default"

    def op(self, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return None  # None: not handled here, run the default kernel

    def __call__(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = self.op(target_name(target), args, kwargs)
        return target(*args, **kwargs) if out is None else out

    @contextmanager
    def active(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Threads(Variant):
    name: str = "threads2"
    threads: int = 2

    @contextmanager
    def active(self) -> Iterator[None]:
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)


def _chunks(n: int, gen: torch.Generator, max_chunks: int = 4) -> list[tuple[int, int]]:
    if n < 2:
        return [(0, n)]
    k = int(torch.randint(2, min(n, max_chunks) + 1, (1,), generator=gen))
    cuts = sorted(set(torch.randint(1, n, (k - 1,), generator=gen).tolist()))
    edges = [0, *cuts, n]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _linear_parts(x: Tensor, w: Tensor, b: Tensor | None, idx: list[Tensor]) -> Tensor:
    acc: Tensor | None = None
    for part in idx:
        y = F.linear(x[..., part], w[:, part])
        acc = y if acc is None else acc + y
    assert acc is not None
    return acc if b is None else acc + b


def _conv_parts(args: tuple[Any, ...], idx: list[Tensor]) -> Tensor | None:
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    rest = args[3:]
    groups = rest[3] if len(rest) > 3 else 1
    if groups != 1 or w.dim() != 4:
        return None
    acc: Tensor | None = None
    for part in idx:
        y = F.conv2d(x[:, part], w[:, part], None, *rest)
        acc = y if acc is None else acc + y
    assert acc is not None
    return acc if b is None else acc + b[None, :, None, None]


def _attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None, parts: list[Tensor]
) -> Tensor:
    """Attention over key subsets merged flash-decoding style (log-sum-exp rescaling)."""
    sc = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
    outs, maxes, sums = [], [], []
    for p in parts:
        s = (q @ k[..., p, :].transpose(-1, -2)) * sc
        if mask is not None:
            mb = mask.expand(*s.shape[:-1], mask.shape[-1])[..., p]
            s = s.masked_fill(~mb, -math.inf) if mb.dtype == torch.bool else s + mb
        m = s.amax(-1, keepdim=True)
        e = torch.exp(s - m)
        outs.append(e @ v[..., p, :])
        sums.append(e.sum(-1, keepdim=True))
        maxes.append(m)
    m_all = torch.stack(maxes).amax(0)
    num = torch.zeros_like(outs[0])
    den = torch.zeros_like(sums[0])
    for o, s_, m in zip(outs, sums, maxes, strict=True):
        a = torch.exp(m - m_all)
        num = num + o * a
        den = den + s_ * a
    return num / den


SdpaArgs = tuple[Tensor, Tensor, Tensor, Tensor | None, float | None]


def _sdpa_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> SdpaArgs | None:
    q, k, v = args[0], args[1], args[2]
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
    scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
    if causal:
        return None
    return q, k, v, mask, scale


@dataclass(frozen=True)
class SplitK(Variant):
    name: str = "splitk"
    seed: int = 0

    def op(self, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        gen = torch.Generator().manual_seed(
            self.seed + _seed_of(target, *(getattr(a, "shape", a) for a in args))
        )
        if target == "aten.linear.default":
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else None
            idx = [torch.arange(a, c) for a, c in _chunks(w.shape[1], gen)]
            return _linear_parts(x, w, b, idx)
        if target == "aten.conv2d.default":
            idx = [torch.arange(a, c) for a, c in _chunks(args[1].shape[1], gen)]
            return _conv_parts(args, idx)
        if target == "aten.scaled_dot_product_attention.default":
            sa = _sdpa_args(args, kwargs)
            if sa is None:
                return None
            idx = [torch.arange(a, c) for a, c in _chunks(sa[1].shape[-2], gen)]
            return _attention(*sa, idx)
        return None


@dataclass(frozen=True)
class Permuted(Variant):
    name: str = "permuted"
    seed: int = 1

    def op(self, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        gen = torch.Generator().manual_seed(
            self.seed + _seed_of(target, *(getattr(a, "shape", a) for a in args))
        )
        if target == "aten.linear.default":
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else None
            return _linear_parts(x, w, b, [torch.randperm(w.shape[1], generator=gen)])
        if target == "aten.conv2d.default":
            return _conv_parts(args, [torch.randperm(args[1].shape[1], generator=gen)])
        if target == "aten.scaled_dot_product_attention.default":
            sa = _sdpa_args(args, kwargs)
            if sa is None:
                return None
            return _attention(*sa, [torch.randperm(sa[1].shape[-2], generator=gen)])
        if target == "aten.sum.dim_IntList":
            x, dims = args[0], args[1]
            if len(dims) != 1:
                return None
            d = dims[0] % x.dim()
            perm = torch.randperm(x.shape[d], generator=gen)
            return torch.sum(x.index_select(d, perm), *args[1:], **kwargs)
        return None


@dataclass(frozen=True)
class Batch(Variant):
    name: str = "batch"
    extra: int = 3
    seed: int = 2

    def op(self, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        gen = torch.Generator().manual_seed(self.seed)
        if target == "aten.linear.default":
            x = args[0]
            rows = x.reshape(-1, x.shape[-1])
            pad = torch.randn(self.extra, x.shape[-1], generator=gen).to(x)
            y = F.linear(torch.cat([pad, rows]), *args[1:])
            return y[self.extra :].reshape(*x.shape[:-1], y.shape[-1])
        if target == "aten.conv2d.default":
            x = args[0]
            pad = torch.randn(1, *x.shape[1:], generator=gen).to(x)
            return F.conv2d(torch.cat([pad, x]), *args[1:])[1:]
        if target == "aten.scaled_dot_product_attention.default":
            sa = _sdpa_args(args, kwargs)
            if sa is None:
                return None
            q, k, v, mask, scale = sa
            pads = [torch.randn(1, *t.shape[1:], generator=gen).to(t) for t in (q, k, v)]
            m = None
            if mask is not None:
                mb = mask.expand(q.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
                m = torch.cat([torch.zeros_like(mb[:1]), mb])
            q2, k2, v2 = (torch.cat([p, t]) for p, t in zip(pads, (q, k, v), strict=True))
            out = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=m, scale=scale)
            return out[1:]
        return None


@dataclass(frozen=True)
class Decomposed(Variant):
    name: str = "decomposed"

    def op(self, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if target == "aten.scaled_dot_product_attention.default":
            sa = _sdpa_args(args, kwargs)
            if sa is None:
                return None
            q, k, v, mask, scale = sa
            sc = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
            s = (q @ k.transpose(-1, -2)) * sc
            if mask is not None:
                s = s.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s + mask
            return torch.softmax(s, -1) @ v
        if target == "aten.layer_norm.default":
            x, shape = args[0], list(args[1])
            w = args[2] if len(args) > 2 else None
            b = args[3] if len(args) > 3 else None
            eps = args[4] if len(args) > 4 else 1e-5
            dims = tuple(range(x.dim() - len(shape), x.dim()))
            mu = x.mean(dims, keepdim=True)
            var = ((x - mu) ** 2).mean(dims, keepdim=True)
            y = (x - mu) / torch.sqrt(var + eps)
            return y * (1 if w is None else w) + (0 if b is None else b)
        if target == "aten.group_norm.default":
            x, g = args[0], args[1]
            w = args[2] if len(args) > 2 else None
            b = args[3] if len(args) > 3 else None
            eps = args[4] if len(args) > 4 else 1e-5
            xg = x.reshape(x.shape[0], g, -1)
            mu = xg.mean(-1, keepdim=True)
            var = ((xg - mu) ** 2).mean(-1, keepdim=True)
            y = ((xg - mu) / torch.sqrt(var + eps)).reshape(x.shape)
            sh = (1, x.shape[1]) + (1,) * (x.dim() - 2)
            if w is not None:
                y = y * w.reshape(sh)
            if b is not None:
                y = y + b.reshape(sh)
            return y
        if target == "aten.gelu.default" and kwargs.get("approximate", "none") == "none":
            x = args[0]
            return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        if target == "aten.silu.default":
            return args[0] * torch.sigmoid(args[0])
        if target == "aten.linear.default":
            x, w = args[0], args[1]
            y = torch.matmul(x, w.t())
            return y if len(args) < 3 or args[2] is None else y + args[2]
        return None


ALL_VARIANTS: dict[str, Variant] = {
    v.name: v for v in (Variant(), Threads(), SplitK(), Permuted(), Batch(), Decomposed())
}


def get_variants(names: list[str] | tuple[str, ...]) -> list[Variant]:
    unknown = [n for n in names if n not in ALL_VARIANTS]
    if unknown:
        raise KeyError(f"unknown variants {unknown}; known: {sorted(ALL_VARIANTS)}")
    return [ALL_VARIANTS[n] for n in names]
