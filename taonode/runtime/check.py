"""Local checks: one op against its theoretical region, and ``locate`` over a claimed trace.

Every op is judged on the trace's *own* inputs for that op (never on a re-executed prefix), so
errors do not accumulate across ops and a fault is blamed on the op where it appears.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from taonode.protocol.votes import Verdict
from taonode.runtime.bounds import OVERFLOW, reference_and_bound
from taonode.runtime.execute import Trace, op_call_fp64, split_outputs
from taonode.runtime.graph import Model, ModelError

# Sorting huge tensors for percentiles is slow; above this many elements we use a
# deterministic strided sample for p99/p99.9 (max and mean stay exact).
_QUANTILE_SAMPLE = 1 << 22


@dataclass(frozen=True)
class ErrorStats:
    """Statistics of ``r = |Y - Y_ref| / B`` over an op's output elements."""

    max: float
    p999: float
    p99: float
    mean: float
    count: int

    @staticmethod
    def of(r: torch.Tensor) -> ErrorStats:
        flat = r.reshape(-1).to(torch.float64)
        if flat.numel() == 0:
            return ErrorStats(0.0, 0.0, 0.0, 0.0, 0)
        finite = torch.nan_to_num(flat, nan=float("inf"))
        sample = (
            finite
            if finite.numel() <= _QUANTILE_SAMPLE
            else finite[:: -(-finite.numel() // _QUANTILE_SAMPLE)]
        )
        ordered = torch.sort(sample).values

        def pct(q: float) -> float:
            return float(ordered[min(ordered.numel() - 1, int(q * ordered.numel()))])

        return ErrorStats(
            max=float(finite.max()),
            p999=pct(0.999),
            p99=pct(0.99),
            mean=float(finite.mean()),
            count=int(flat.numel()),
        )


@dataclass(frozen=True)
class OpCheck:
    index: int
    name: str
    target: str
    verdict: Verdict
    stats: ErrorStats
    reason: str
    worst_output: str
    worst_element: int
    """Flat index of the element with the largest ``r`` in ``worst_output``."""

    @property
    def theoretical_violation(self) -> bool:
        return self.verdict is Verdict.THEORETICAL_VIOLATION


def normalized_error(claimed: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """``r = |Y - Y_ref| / B`` element-wise, with one rule for non-finite values (the same as
    :func:`taonode.runtime.profile.frontier_deviation`'s, so the challenger's excess and the
    committee's verdict agree):

    * equal values, and NaN where ``Y_ref`` is NaN: ``r = 0``;
    * ``B = ∞`` (no theoretical claim): ``r = 0`` whatever the claim, NaN and inf included —
      except that next to a non-finite ``Y_ref`` only a non-finite claim passes;
    * ``+inf`` claimed where ``Y_ref + B ≥`` :data:`OVERFLOW` (an honest FP32 rounding may
      overflow there), ``−inf`` where ``Y_ref − B ≤ −OVERFLOW``: ``r = 0``;
    * any other NaN or inf on either side: ``r = ∞``. A finite claim where every honest
      execution overflows (``|Y_ref| − B ≥ OVERFLOW``) is > ``B`` away and fails by distance.

    Integer outputs must be equal.
    """
    if not ref.is_floating_point():
        y = claimed.to(ref.device)
        eq = y == ref if not y.is_floating_point() else y.to(torch.float64) == ref.double()
        return torch.where(eq, 0.0, math.inf).to(torch.float64)
    y = claimed.to(ref.device, torch.float64)
    refd = ref.to(torch.float64)
    b = bound.to(ref.device, torch.float64)
    same = (y == refd) | (torch.isnan(y) & torch.isnan(refd))
    overflow_ok = (torch.isposinf(y) & (refd + b >= OVERFLOW)) | (
        torch.isneginf(y) & (refd - b <= -OVERFLOW)
    )
    # B = ∞ waives the element; next to a non-finite reference (inf inputs) only a non-finite
    # claim is honest — a finite one would launder an overflow into a chosen value.
    waived = torch.isposinf(b) & (torch.isfinite(refd) | ~torch.isfinite(y))
    ok = same | waived | overflow_ok
    with torch.no_grad():
        r = (y - refd).abs() / b
    return torch.nan_to_num(torch.where(ok, 0.0, r), nan=math.inf, posinf=math.inf)


def check_op(
    model: Model,
    index: int,
    inputs: Mapping[str, torch.Tensor],
    claimed: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
) -> OpCheck:
    """Judge op ``index``'s ``claimed`` outputs given its committed ``inputs`` (theoretical
    region only; :mod:`taonode.runtime.profile` adds the empirical one)."""
    op = model.ops[index]
    missing = set(op.outputs) - set(claimed)
    if missing:
        raise ModelError(f"op {index} claimed outputs lack {sorted(missing)}")
    target, args, kwargs = op_call_fp64(model, index, inputs, device)
    ref, bound = reference_and_bound(target, args, kwargs)
    refs = split_outputs(model, index, ref)
    bounds = split_outputs(model, index, bound) if len(op.outputs) > 1 else {op.name: bound}
    worst: tuple[float, str, int] = (-1.0, op.outputs[0], 0)
    rs: list[torch.Tensor] = []
    reason = ""
    for name in op.outputs:
        y, yr, b = claimed[name], refs[name], bounds[name]
        if tuple(y.shape) != tuple(yr.shape):
            reason = f"{name}: shape {tuple(y.shape)} != {tuple(yr.shape)}"
            rs.append(torch.tensor([float("inf")]))
            worst = (float("inf"), name, 0)
            continue
        if yr.is_floating_point() != y.is_floating_point() or (
            y.is_floating_point() and y.dtype != torch.float32
        ):
            reason = f"{name}: dtype {y.dtype} where float32/{yr.dtype} is expected"
            rs.append(torch.tensor([float("inf")]))
            worst = (float("inf"), name, 0)
            continue
        r = normalized_error(y, yr, b)
        rs.append(r.reshape(-1).cpu())
        if r.numel():
            m, pos = r.reshape(-1).max(dim=0)
            if float(m) > worst[0]:
                worst = (float(m), name, int(pos))
    stats = ErrorStats.of(torch.cat(rs))
    violated = stats.max > 1.0
    if violated and not reason:
        reason = f"{worst[1]}[{worst[2]}]: |Y - Y_ref| is {stats.max:.3g}x the bound"
    return OpCheck(
        index=index,
        name=op.name,
        target=op.target,
        verdict=Verdict.THEORETICAL_VIOLATION if violated else Verdict.WITHIN_TOLERANCE,
        stats=stats,
        reason=reason,
        worst_output=worst[1],
        worst_element=worst[2],
    )


def check_trace(
    model: Model, trace: Trace, device: str | torch.device = "cpu"
) -> tuple[OpCheck, ...]:
    """:func:`check_op` for every op, on the trace's own inputs of each op."""
    return tuple(
        check_op(model, i, trace.op_inputs(model, i), trace.op_outputs(model, i), device)
        for i in range(model.num_ops)
    )


def locate(model: Model, trace: Trace, device: str | torch.device = "cpu") -> list[OpCheck]:
    """Every op whose claimed output leaves the theoretical region (in op order)."""
    return [c for c in check_trace(model, trace, device) if c.theoretical_violation]


def unbounded_ops(model: Model) -> list[str]:
    """Op types of ``model`` without a theoretical bound ("empirical only")."""
    from taonode.runtime.bounds import has_bound

    return sorted({op.target for op in model.ops if not has_bound(op.target)})
