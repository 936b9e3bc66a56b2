"""Acceptance regions as the roles use them: one :class:`Judge` per served model."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from taonode.protocol.votes import Verdict
from taonode.runtime.check import check_op
from taonode.runtime.graph import Model


def _relative_excess(
    claimed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], rtol: float
) -> float:
    """max over tensors of ``max|c - o| / (rtol · max|o| + tiny)``; ∞ on a shape/dtype or
    non-finite mismatch, or a missing tensor."""
    worst = 0.0
    for name, mine in own.items():
        theirs = claimed.get(name)
        if theirs is None or theirs.shape != mine.shape or theirs.dtype != mine.dtype:
            return float("inf")
        if not mine.is_floating_point():
            if not torch.equal(theirs, mine):
                return float("inf")
            continue
        a, b = theirs.to(torch.float64), mine.to(torch.float64)
        if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
            return float("inf")
        finite = torch.isfinite(b)
        if not finite.any():
            continue
        diff = (a[finite] - b[finite]).abs().max().item()
        scale = b[finite].abs().max().item()
        worst = max(worst, diff / (rtol * scale + 1e-30))
    return worst


class TheoreticalJudge:
    """Op verdicts from the sound theoretical bound; end-to-end and segment comparisons with a
    relative tolerance ``rtol`` on the largest output magnitude.

    Used where no calibrated profile is loaded: the op verdict is sound (never slashes an
    honest FP32 execution), the comparisons only guide the challenger.
    """

    def __init__(self, model: Model, rtol: float = 1e-4, device: str = "cpu") -> None:
        self.model = model
        self.rtol = rtol
        self.device = device

    def end_to_end_excess(
        self, claimed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> float:
        return _relative_excess(claimed, own, self.rtol)

    def segment_excess(
        self, a: int, b: int, claimed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> float:
        return _relative_excess(claimed, own, self.rtol)

    def op_verdict(
        self, op: int, inputs: Mapping[str, torch.Tensor], claimed: Mapping[str, torch.Tensor]
    ) -> Verdict:
        return check_op(self.model, op, inputs, claimed, self.device).verdict
