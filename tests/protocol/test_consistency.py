"""The leaf/cut rule and the sub-segment choice on synthetic frontiers (the reference models
are in tests/runtime/test_consistency_models.py)."""

from __future__ import annotations

import math

import pytest
from eth_hash.auto import keccak

from taonode.protocol.choice import Evidence, SubsegmentScore, choose_subsegment
from taonode.protocol.consistency import (
    CutError,
    carried_values,
    leaf_inconsistencies,
    manifest_names_problem,
    produced_values,
    segment_inconsistencies,
)
from taonode.protocol.manifest import FrontierManifest

# x -> op0 -> h ; op1(h) -> y ; op2(x, y) -> z   (x is a residual carried across cuts 1 and 2)
FRONTIERS = (("x",), ("h", "x"), ("x", "y"), ("z",))


def d(label: str) -> bytes:
    return bytes(keccak(label.encode()))


def manifest(**digests: bytes) -> FrontierManifest:
    return FrontierManifest.from_digests(dict(digests))


HONEST = [
    manifest(x=d("x")),
    manifest(h=d("h"), x=d("x")),
    manifest(x=d("x"), y=d("y")),
    manifest(z=d("z")),
]


def test_consistency_honest_manifests_pass_at_every_leaf_and_segment_succeeds() -> None:
    for a in range(3):
        assert leaf_inconsistencies(FRONTIERS, a, HONEST[a], HONEST[a + 1]) == []
    for lo in range(4):
        for hi in range(lo, 4):
            assert segment_inconsistencies(FRONTIERS, lo, hi, HONEST[lo], HONEST[hi]) == []


def test_consistency_carried_and_produced_values_partition_the_end_frontier_succeeds() -> None:
    assert carried_values(FRONTIERS, 1, 2) == ("x",)
    assert produced_values(FRONTIERS, 1, 2) == ("y",)
    assert carried_values(FRONTIERS, 0, 2) == ("x",)
    assert produced_values(FRONTIERS, 0, 3) == ("z",)
    assert carried_values(FRONTIERS, 2, 3) == ()


def test_consistency_tampered_carried_value_is_flagged_at_its_cut_reverts() -> None:
    # The carry-over tamper: x rewritten between cut 1 and cut 2, op 1 itself honest.
    tampered = manifest(x=d("x*1.05"), y=d("y"))
    problems = leaf_inconsistencies(FRONTIERS, 1, HONEST[1], tampered)
    assert [(p.cut, p.kind) for p in problems] == [(2, "carried")]
    assert "x is carried across [1, 2)" in problems[0].detail
    # The whole segment [0, 2) sees it too, and the leaf after it (both tampered) does not.
    assert segment_inconsistencies(FRONTIERS, 0, 2, HONEST[0], tampered)
    assert leaf_inconsistencies(FRONTIERS, 0, HONEST[0], HONEST[1]) == []


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (manifest(x=d("x"), y=d("y"), extra=d("e")), "extra ['extra']"),
        (manifest(y=d("y")), "missing ['x']"),
        (manifest(x=d("x"), y=d("y"), h=d("h")), "extra ['h']"),
        (manifest(), "missing ['x', 'y']"),
    ],
)
def test_consistency_wrong_manifest_names_reverts(bad: FrontierManifest, fragment: str) -> None:
    problem = manifest_names_problem(FRONTIERS, 2, bad)
    assert problem is not None
    assert problem.kind == "names"
    assert fragment in problem.detail
    # Checked at both ends of a leaf, before any carry comparison.
    assert [p.kind for p in leaf_inconsistencies(FRONTIERS, 1, HONEST[1], bad)] == ["names"]
    assert [p.cut for p in leaf_inconsistencies(FRONTIERS, 2, bad, HONEST[3])] == [2]


def test_consistency_extra_copy_of_a_carried_name_cannot_hide_a_rewrite_reverts() -> None:
    # Duplicates are impossible in a decoded manifest; a renamed copy is an extra name.
    smuggled = manifest(x=d("x*1.05"), x_orig=d("x"), y=d("y"))
    assert leaf_inconsistencies(FRONTIERS, 1, HONEST[1], smuggled)


def test_consistency_segment_outside_the_model_reverts() -> None:
    with pytest.raises(CutError):
        leaf_inconsistencies(FRONTIERS, 3, HONEST[3], HONEST[3])
    with pytest.raises(CutError):
        carried_values(FRONTIERS, 2, 1)


def test_choice_rule_break_beats_any_measured_excess_succeeds() -> None:
    scores = [
        SubsegmentScore.measured(1e9),
        SubsegmentScore.rule_break("carried"),
        SubsegmentScore.rule_break("names"),
    ]
    assert choose_subsegment(scores, draw=0) == 1


def test_choice_measured_deviation_beats_withheld_frontier_succeeds() -> None:
    # A withheld frontier (both neighbours unavailable) cannot pull the challenger away from a
    # sub-segment it has seen deviate, whatever the draw.
    scores = [
        SubsegmentScore.measured(0.1),
        SubsegmentScore.unavailable("cut 2"),
        SubsegmentScore.unavailable("cut 2"),
        SubsegmentScore.measured(30.0),
    ]
    for draw in range(8):
        assert choose_subsegment(scores, draw) == 3


def test_choice_only_unavailable_evidence_uses_the_draw_succeeds() -> None:
    scores = [
        SubsegmentScore.measured(0.5),
        SubsegmentScore.unavailable("cut 2"),
        SubsegmentScore.unavailable("cut 2"),
    ]
    assert {choose_subsegment(scores, draw) for draw in range(4)} == {1, 2}


def test_choice_all_within_tolerance_picks_the_largest_leftmost_succeeds() -> None:
    scores = [SubsegmentScore.measured(0.5), SubsegmentScore.measured(0.7)]
    assert choose_subsegment(scores, 0) == 1
    assert choose_subsegment([SubsegmentScore.measured(0.7)] * 3, 5) == 0
    nan = SubsegmentScore.measured(math.nan)
    assert nan.evidence is Evidence.MEASURED
    assert nan.excess == math.inf
    with pytest.raises(ValueError, match="no sub-segments"):
        choose_subsegment([], 0)
