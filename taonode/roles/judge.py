"""Acceptance regions as the roles use them: one :class:`Judge` per served model."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from taonode.protocol.votes import Verdict
from taonode.runtime.graph import Model
from taonode.runtime.profile import (
    Profile,
    check_op_with_profile,
    check_profile_model,
    frontier_deviation,
)


class ProfileJudge:
    """Both acceptance regions: the theoretical bound, then the model's calibrated profile.

    Comparisons use the profile's frontier deviation (max |Δ| / max |Y| over a frontier's
    tensors) divided by the calibrated threshold of the segment (``[0, N)`` end to end).
    """

    def __init__(self, model: Model, profile: Profile, k: int, device: str = "cpu") -> None:
        check_profile_model(profile, model)
        self.model = model
        self.profile = profile
        self.k = k
        self.device = device

    def end_to_end_excess(
        self, claimed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> float:
        return frontier_deviation(claimed, own) / self.profile.end_to_end_threshold()

    def segment_excess(
        self, a: int, b: int, claimed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> float:
        return frontier_deviation(claimed, own) / self.profile.segment_threshold(self.k, a, b)

    def op_verdict(
        self, op: int, inputs: Mapping[str, torch.Tensor], claimed: Mapping[str, torch.Tensor]
    ) -> Verdict:
        return check_op_with_profile(
            self.model, op, inputs, claimed, self.profile, self.device
        ).verdict
