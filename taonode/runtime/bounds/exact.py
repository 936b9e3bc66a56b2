"""Exact ops (data movement, selection, comparisons, max) and single-rounding conversions.

A Python scalar in these ops (``masked_fill``'s value, ``lt``'s threshold, ``clamp``'s limits)
is rounded to FP32 by the kernel before use when the tensor operand is floating: the FP64
reference uses that rounded value (:func:`fl32`), so an honest op stays exact. Taking the scalar
at face value made an honest ``masked_fill(x, m, −1e30)`` or ``eq(x, 0.1)`` a "violation" of
1e308 × its zero bound (issue 11, item 7): a prover could be slashed for the FP32 program's
own semantics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from taonode.runtime.bounds.core import RULES, Rule, U, call, fl32, one_rounding, rule, tiny, zero

_EXACT_OPS = (
    "aten.relu.default",
    "aten.max_pool2d.default",
    "aten.embedding.default",
    "aten.cat.default",
    "aten.upsample_nearest2d.vec",
    "aten.upsample_nearest2d.default",
    "aten.where.self",
    "aten.zeros_like.default",
    "aten.ones_like.default",
    "aten.stack.default",
    "aten.argmax.default",
    "aten.eq.Tensor",
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
EXACT = frozenset(_EXACT_OPS + _EXACT_METADATA)
"""Targets whose bound is identically 0 (nothing to weaken in the mutation test)."""


def _scalars_as_fp32(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Round Python float operands to FP32 when the first operand is a floating tensor (an
    integer tensor compared with a float is promoted to the default dtype, FP32, by both the
    FP32 program and the reference, so nothing to do there)."""
    first = args[0] if args else None
    if not (isinstance(first, Tensor) and first.is_floating_point()):
        return args
    return tuple(fl32(a) for a in args)


def _exact_rule(target: str) -> Rule:
    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ref = call(target, _scalars_as_fp32(args, kwargs), kwargs)
        return ref, zero(ref)

    return fn


for _t in _EXACT_OPS + _EXACT_METADATA:
    RULES[_t] = _exact_rule(_t)

SCALAR_EXACT = (
    "aten.masked_fill.Scalar",
    "aten.eq.Scalar",
    "aten.ne.Scalar",
    "aten.lt.Scalar",
    "aten.le.Scalar",
    "aten.gt.Scalar",
    "aten.ge.Scalar",
)
for _t in SCALAR_EXACT:
    RULES[_t] = _exact_rule(_t)
EXACT = EXACT | frozenset(SCALAR_EXACT)


def _single_rounding(target: str) -> Rule:
    """Conversions and clamps: one correct rounding of the exact value (:func:`one_rounding`:
    0 for integers below 2^24, FP32 values and clamps to FP32-rounded limits)."""

    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        floating = bool(args) and isinstance(args[0], Tensor) and args[0].is_floating_point()
        kw = {k: fl32(v, floating) for k, v in kwargs.items()}
        ref = call(target, _scalars_as_fp32(args, kwargs), kw)
        if not ref.is_floating_point():
            return ref, zero(ref)
        return ref, one_rounding(ref)

    return fn


for _t in (
    "aten.to.dtype",
    "aten._to_copy.default",
    "aten.clamp.default",
    "aten.clamp_min.default",
    "aten.clamp_max.default",
):
    RULES[_t] = _single_rounding(_t)


@rule("aten.arange.default")
def _arange_end(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``0, 1, …``: integers, exact below 2^24 (one rounding above)."""
    ref = call("aten.arange.default", args, kwargs)
    return ref, (one_rounding(ref) if ref.is_floating_point() else zero(ref))


def _arange(target: str) -> Rule:
    """``start + i·step``. The length is the double computation's (PyTorch computes it on the
    host in double for every device). Kernels evaluate ``fl32(start) + i·fl32(step)`` in FP32
    (CUDA: the product and the sum rounded) or ``start + i·step`` in double, rounded once
    (CPU): the reference is the former exactly, the latter enters by :func:`_scalar_view`."""

    def fn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        face = call(target, args, kwargs)
        if not face.is_floating_point():
            return face, zero(face)
        start = float(args[0])
        step = float(args[2]) if len(args) > 2 else 1.0
        i = torch.arange(face.numel(), dtype=face.dtype, device=face.device)
        prod = i * fl32(step)
        ref = fl32(start) + prod
        # An exact FP32 product leaves one rounding (exactness kept); else both roundings.
        exact_prod = prod == prod.to(torch.float32).to(prod.dtype)
        both = U * prod.abs() + U * (1 + U) * ref.abs() + tiny(ref)
        bound = torch.where(exact_prod, one_rounding(ref), both)
        return ref, _scalar_view(ref, face, bound)

    return fn


RULES["aten.arange.start"] = _arange("aten.arange.start")
RULES["aten.arange.start_step"] = _arange("aten.arange.start_step")


def _scalar_view(ref: Tensor, ref_face: Tensor, bound: Tensor) -> Tensor:
    """A kernel keeping the scalars in double: its exact result differs by Δ and it rounds
    once more (same as :func:`taonode.runtime.bounds.elementwise._scalar_view`)."""
    delta = (ref_face - ref).abs()
    return bound + torch.where(delta > 0, delta * (1 + 2 * U) + U * ref_face.abs(), 0.0)
