"""Sound element-wise bounds for FP32 execution of each op (DESIGN §3 "Theoretical bounds").

For an op with committed FP32 inputs, ``Y_ref`` is the op evaluated in FP64 on the upcast
inputs (Python scalars rounded to FP32 as the kernel rounds them) and ``B`` a bound such that
*any* honest FP32 execution ``Y`` satisfies ``|Y - Y_ref| <= B`` element-wise, whatever
summation order, blocking, split-K, FMA, vectorisation or libm the kernel chose. ``B`` includes
the ``(1 + 2^-20)`` slack for the FP64 evaluation's own error. Derivations, the libm table and
its sources are in ``docs/bounds.md``.

Non-finite semantics (applied by :func:`taonode.runtime.check.normalized_error`):

* ``B = ∞`` — no theoretical claim (an honest intermediate may overflow): any value passes.
* where ``Y_ref`` is ±inf or NaN, ``B = 0``: the claim must be the same inf / a NaN.
* a claimed ±inf passes where ``Y_ref ± B`` reaches the FP32 overflow threshold
  (:data:`OVERFLOW`); a finite claim where every honest execution overflows fails by distance.

Modules by op family: :mod:`.exact` (data movement, comparisons, conversions),
:mod:`.elementwise` (arithmetic and libm), :mod:`.linalg` (dot products, reductions),
:mod:`.attention` (softmax, attention, normalisation); :mod:`.core` holds the constants.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from taonode.runtime.bounds import attention, elementwise, exact, linalg  # noqa: F401
from taonode.runtime.bounds.core import (
    ATTN_BLOCK,
    ERROR_SCALE,
    FLOOR,
    FP64_SLACK,
    LIBM,
    OVERFLOW,
    RULES,
    Accuracy,
    U,
    gamma,
    scalar_error,
)
from taonode.runtime.bounds.exact import EXACT
from taonode.runtime.graph import target_name

WAIVERS = frozenset(
    {t for t, fn in RULES.items() if fn.__module__ in (linalg.__name__, attention.__name__)}
    - {"aten._softmax.default", "aten.softmax.int"}
    | {
        "aten.gelu.default",
        *(f"aten.{op}.{o}" for op in ("add", "sub", "rsub") for o in ("Tensor", "Scalar")),
    }
)
"""Rules whose ``B = ∞`` (:func:`core.unconstrained`) is a deliberate waiver that must survive
a non-finite reference (inf inputs: an honest result is inf or NaN depending on the order).
There ``normalized_error`` accepts any non-finite claim but no finite one."""

__all__ = [
    "ATTN_BLOCK",
    "ERROR_SCALE",
    "EXACT",
    "FLOOR",
    "FP64_SLACK",
    "LIBM",
    "OVERFLOW",
    "RULES",
    "WAIVERS",
    "Accuracy",
    "U",
    "gamma",
    "has_bound",
    "reference_and_bound",
    "scalar_error",
]


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
        bound = bound * ((1 + FP64_SLACK) * ERROR_SCALE.get(name, 1.0))
        if ref.is_floating_point():
            # A non-finite reference (overflow in FP64 itself, NaN/inf inputs) is matched
            # exactly; a NaN bound (from NaN inputs) means the same. Only rules that waive
            # elements on purpose (an honest intermediate may overflow: inf inputs to a dot
            # product give inf or NaN depending on the order) keep B = ∞ there: elsewhere an
            # infinite B next to an infinite reference (exp(1000)) would accept any claim.
            keep = torch.isfinite(ref) & ~torch.isnan(bound)
            if name in WAIVERS:
                keep = keep | torch.isposinf(bound)
            bound = torch.where(keep, bound, 0.0)
    return ref, bound
