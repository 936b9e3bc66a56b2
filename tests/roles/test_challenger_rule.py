"""The challenger's sub-segment scores follow the leaf/cut rule: a manifest with the wrong
names, or a carried value whose digest changes, is a rule break (infinite excess) found from
manifests alone, and it decides the move."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taonode.protocol.choice import Evidence, SubsegmentScore, choose_subsegment
from taonode.protocol.schedule import cuts
from taonode.roles.challenger import ChallengerService
from taonode.roles.compute import ComputeWorker
from taonode.runtime.execute import run_segment_values
from tests.roles.network import store_frontiers
from tests.roles.rolekit import (
    FAST,
    PROVER,
    Clock,
    Directory,
    Transport,
    Views,
    World,
    blob_store,
    party,
)

pytestmark = pytest.mark.slow


def carry_over(world: World, cut: int = 14, scale: float = 1.05) -> list[dict[str, torch.Tensor]]:
    """add_2 rewritten from ``cut`` on, every later op honest from it (ops < 20 of the world's
    frontiers are honest)."""
    model = world.model
    start = dict(world.frontiers[cut])
    start["add_2"] = start["add_2"] * scale
    later = run_segment_values(model, cut, model.num_ops, start)
    out = []
    for c, names in enumerate(model.frontiers):
        if c < cut:
            out.append(dict(world.frontiers[c]))
        else:
            out.append({n: (start[n] if n in start else later[n]) for n in names})
    return out


async def scores_for(
    tmp: Path,
    world: World,
    frontiers: list[dict[str, torch.Tensor]],
    bounds: list[int],
    compute: ComputeWorker,
) -> list[SubsegmentScore]:
    remote = Transport()
    store = blob_store(tmp / "prover-blobs")
    digests, _ = store_frontiers(store, frontiers)
    remote.stores["prover-peer"] = store
    me = party(
        tmp,
        "challenger",
        world,
        remote,
        Views(Clock()),
        Directory({PROVER: ["prover-peer"]}),
        compute,
    )
    challenger = ChallengerService(me.ctx, me.store, 1.0, retry=FAST)
    return await challenger.score_subsegments(
        world.served, PROVER, bounds, [digests[c] for c in bounds], give_up_block=1_000
    )


async def test_challenger_scores_a_rewritten_carried_value_as_a_rule_break_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    bounds = [12, *cuts(12, 18, 4), 18]
    assert bounds == [12, 13, 15, 16, 18]
    scores = await scores_for(tmp_path, world, carry_over(world), bounds, compute)
    # add_2 is in S_13 and S_15: carried across [13, 15), and its digest changes there.
    assert [s.evidence for s in scores][1] is Evidence.RULE_BREAK
    assert "add_2" in scores[1].detail
    for draw in range(4):
        assert choose_subsegment(scores, draw) == 1


async def test_challenger_scores_extra_manifest_names_as_a_rule_break_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    frontiers = [dict(f) for f in world.frontiers]
    frontiers[12]["smuggled"] = torch.zeros(2)
    bounds = [0, 6, 12, 18, world.model.num_ops]
    scores = await scores_for(tmp_path, world, frontiers, bounds, compute)
    assert [s.evidence for s in scores] == [
        Evidence.MEASURED,
        Evidence.RULE_BREAK,
        Evidence.RULE_BREAK,
        Evidence.MEASURED,
    ]
    assert "extra ['smuggled']" in scores[1].detail
    assert choose_subsegment(scores, 0) == 1


async def test_challenger_scores_an_honest_prefix_as_measured_within_tolerance_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The world's cheat starts at op 20: [0, 18) is honest, no rule break anywhere, and only
    # the last sub-segment deviates.
    bounds = [0, 6, 12, 18, world.model.num_ops]
    scores = await scores_for(tmp_path, world, world.frontiers, bounds, compute)
    assert [s.evidence for s in scores] == [Evidence.MEASURED] * 4
    assert [s.excess <= 1.0 for s in scores] == [True, True, True, False]
