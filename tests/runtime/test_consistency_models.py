"""The leaf/cut rule over the reference models: honest commitments pass at every cut and game
segment; the carry-over tamper of issue 11 is caught at exactly the cut where it happens."""

from __future__ import annotations

import pytest

from taonode.protocol.consistency import leaf_inconsistencies, segment_inconsistencies
from taonode.protocol.manifest import FrontierManifest
from taonode.runtime.commit import commit
from taonode.runtime.digest import tensor_digest
from taonode.runtime.graph import Model
from taonode.runtime.profile import game_segments
from tests.runtime.conftest import MODEL_NAMES, Exported


def manifests_of(model: Model, digests: dict[str, bytes]) -> list[FrontierManifest]:
    return [
        FrontierManifest.from_digests({n: digests[n] for n in names}) for names in model.frontiers
    ]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_frontiers_follow_the_leaf_formula_succeeds(
    exported: dict[str, Exported], name: str
) -> None:
    # S_{a+1} = (S_a − values whose last reader is a) ∪ outputs(a): the identity that lets the
    # digest-only rule stand for the leaf formula.
    model = exported[name].model
    last: dict[str, int] = {}
    for op in model.ops:
        for v in op.inputs:
            last[v] = op.index
    for v in model.outputs:
        last[v] = model.num_ops
    for op in model.ops:
        dropped = {v for v in model.frontiers[op.index] if last.get(v) == op.index}
        expected = (set(model.frontiers[op.index]) - dropped) | set(op.outputs)
        assert set(model.frontiers[op.index + 1]) == expected, (name, op.index)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_honest_manifests_pass_at_every_cut_succeeds(
    exported: dict[str, Exported], name: str
) -> None:
    ex = exported[name]
    model = ex.model
    manifests = manifests_of(model, dict(commit(model, ex.trace).tensor_digests))
    for a in range(model.num_ops):
        assert leaf_inconsistencies(model.frontiers, a, manifests[a], manifests[a + 1]) == []
    for k in (2, 4):
        for lo, hi in game_segments(model.num_ops, k):
            assert (
                segment_inconsistencies(model.frontiers, lo, hi, manifests[lo], manifests[hi]) == []
            ), (name, k, lo, hi)


def test_carry_over_tamper_on_the_transformer_is_caught_at_cut_14_reverts(
    exported: dict[str, Exported],
) -> None:
    ex = exported["transformer"]
    model = ex.model
    assert "add_2" in model.frontiers[13]
    assert "add_2" in model.frontiers[14]
    honest = dict(commit(model, ex.trace).tensor_digests)
    forged = tensor_digest(ex.trace.values["add_2"] * 1.05)
    manifests = manifests_of(model, honest)
    for c in range(14, model.num_ops + 1):
        if "add_2" in model.frontiers[c]:
            entries = dict(manifests[c].entries)
            entries["add_2"] = forged
            manifests[c] = FrontierManifest.from_digests(entries)
    flagged = [
        a
        for a in range(model.num_ops)
        if leaf_inconsistencies(model.frontiers, a, manifests[a], manifests[a + 1])
    ]
    assert flagged == [13]
    (problem,) = leaf_inconsistencies(model.frontiers, 13, manifests[13], manifests[14])
    assert problem.kind == "carried"
    assert problem.cut == 14
    assert "add_2" in problem.detail
    # Every game segment that crosses cut 14 while add_2 is carried sees it as well.
    for lo, hi in game_segments(model.num_ops, 4):
        broken = bool(
            segment_inconsistencies(model.frontiers, lo, hi, manifests[lo], manifests[hi])
        )
        crosses = (
            lo < 14 <= hi and "add_2" in model.frontiers[lo] and "add_2" in model.frontiers[hi]
        )
        assert broken == crosses, (lo, hi)
