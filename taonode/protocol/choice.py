"""The challenger's pick among the sub-segments of a disputed segment (pure).

Each sub-segment ``[lo, hi)`` gets one score from what the challenger could establish:

* ``RULE_BREAK``: the manifests at ``lo`` and ``hi`` break the leaf/cut rule
  (:mod:`taonode.protocol.consistency`): a wrong name set or a carried value whose digest
  changes. Provable from the prover's own commitments, so it is "infinite excess".
* ``MEASURED``: re-executed from the prover's ``S_lo``; ``excess`` = deviation of the prover's
  produced values at ``hi`` ÷ the segment's calibrated threshold (> 1: outside tolerance).
* ``UNAVAILABLE``: a manifest or tensor at ``lo`` or ``hi`` could not be fetched for the whole
  decision window (retries until the move deadline minus a margin).

Order (attacks named): a rule break first (leftmost), because the committee must then vote a
violation whatever the tensors say. Then a measured excess > 1, because it is evidence from data
the prover served: a prover that withholds the frontier ending an *honest* sub-segment cannot
pull the challenger away from a sub-segment it has already seen deviate (issue 11, item 4).
Only with no such evidence does missing data decide, and then the challenger picks among the
unavailable sub-segments with a draw the prover cannot predict: a frontier withheld for the
whole window makes both sub-segments around it unmeasurable, and a fixed choice ("the one
ending at the withheld cut") would let the prover withhold exactly the cut in front of its
deviation and walk the game into the honest neighbour every time. With the draw, withholding
for a whole window wins at best half the time and otherwise ends in a leaf the committee finds
unavailable or deviating (``docs/availability.md``). Last, the largest measured excess.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass


class Evidence(enum.Enum):
    MEASURED = "measured"
    UNAVAILABLE = "unavailable"
    RULE_BREAK = "rule_break"


@dataclass(frozen=True)
class SubsegmentScore:
    evidence: Evidence
    excess: float = 0.0
    """Measured excess (``MEASURED`` only); ``inf`` for the other two, for logs."""
    detail: str = ""

    @classmethod
    def measured(cls, excess: float) -> SubsegmentScore:
        # A NaN excess (nothing should produce one) must never look smaller than a number.
        return cls(Evidence.MEASURED, math.inf if math.isnan(excess) else excess)

    @classmethod
    def unavailable(cls, detail: str) -> SubsegmentScore:
        return cls(Evidence.UNAVAILABLE, math.inf, detail)

    @classmethod
    def rule_break(cls, detail: str) -> SubsegmentScore:
        return cls(Evidence.RULE_BREAK, math.inf, detail)


def choose_subsegment(scores: Sequence[SubsegmentScore], draw: int) -> int:
    """The index of the sub-segment to descend into (see the module docstring).

    ``draw`` is an integer the prover cannot predict (the challenger's signature over the job
    and round, hashed); it is used only to choose among unavailable sub-segments.
    """
    if not scores:
        raise ValueError("no sub-segments to choose from")
    breaks = [j for j, s in enumerate(scores) if s.evidence is Evidence.RULE_BREAK]
    if breaks:
        return breaks[0]
    measured = [j for j, s in enumerate(scores) if s.evidence is Evidence.MEASURED]
    deviating = [j for j in measured if scores[j].excess > 1.0]
    if deviating:
        return max(deviating, key=lambda j: (scores[j].excess, -j))
    missing = [j for j, s in enumerate(scores) if s.evidence is Evidence.UNAVAILABLE]
    if missing:
        return missing[draw % len(missing)]
    return max(measured, key=lambda j: (scores[j].excess, -j))
