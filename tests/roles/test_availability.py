"""Withheld data never decides a sub-segment or a vote by itself (issue 11, items 4 and 6).

The real ChallengerService / VoterService / ProfileJudge / JobData against the reference
transformer; the network and the clock are replaced at their boundaries (``rolekit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from taonode.protocol.choice import Evidence, choose_subsegment
from taonode.protocol.votes import Verdict
from taonode.roles.challenger import ChallengerService
from taonode.roles.compute import ComputeWorker
from taonode.store.blobs import BlobStore
from tests.roles.rolekit import (
    FAST,
    FORGED_OP,
    PROVER,
    Clock,
    Directory,
    Transport,
    Views,
    World,
    adjudicate,
    party,
    prover_store,
)

pytestmark = pytest.mark.slow


async def test_brief_withholding_does_not_steer_the_challenger_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The prover answers BUSY for the frontier at cut 18 (end of the honest [12, 18), start of
    # the deviating [18, 24)) the first 5 times, then serves it.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    bounds = [0, 6, 12, 18, world.model.num_ops]
    remote.busy[digests[18]] = 5
    clock = Clock()
    me = party(
        tmp_path,
        "challenger",
        world,
        remote,
        Views(clock),
        Directory({PROVER: ["prover-peer"]}),
        compute,
    )
    challenger = ChallengerService(me.ctx, me.store, 1.0, retry=FAST)
    scores = await challenger.score_subsegments(
        world.served, PROVER, bounds, [digests[c] for c in bounds], give_up_block=10_000
    )
    assert remote.requests[digests[18]] == 6  # withheld five times, then fetched
    assert [s.evidence for s in scores] == [Evidence.MEASURED] * 4
    assert [s.excess > 1.0 for s in scores] == [False, False, False, True]
    for draw in range(4):
        assert choose_subsegment(scores, draw) == 3


async def test_withholding_for_the_whole_window_leaves_only_unavailable_scores_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # Control for the test above: had the challenger given up at once (deadline reached), the
    # two sub-segments around the withheld cut would be unmeasurable.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    remote.busy[digests[18]] = -1
    bounds = [0, 6, 12, 18, world.model.num_ops]
    me = party(
        tmp_path,
        "challenger",
        world,
        remote,
        Views(Clock()),
        Directory({PROVER: ["prover-peer"]}),
        compute,
    )
    challenger = ChallengerService(me.ctx, me.store, 1.0, retry=FAST)
    scores = await challenger.score_subsegments(
        world.served, PROVER, bounds, [digests[c] for c in bounds], give_up_block=20
    )
    assert remote.requests[digests[18]] > 1  # retried until the give-up block
    assert [s.evidence for s in scores] == [
        Evidence.MEASURED,
        Evidence.MEASURED,
        Evidence.UNAVAILABLE,
        Evidence.UNAVAILABLE,
    ]
    assert choose_subsegment(scores, 0) in (2, 3)


async def test_one_busy_reply_does_not_make_a_voter_vote_unavailable_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # An honest leaf (op 5); every blob the voter needs answers BUSY once, then is served.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    op = world.model.ops[5]
    for d in (digests[5], digests[6]):
        remote.busy[d] = 1
    verdict, _ = await adjudicate(tmp_path, world, remote, digests, 5, compute)
    assert verdict is Verdict.WITHIN_TOLERANCE, op
    assert remote.requests[digests[5]] == 2


async def test_prover_withholding_the_leaf_from_every_member_is_voted_unavailable_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    remote.refuse.add("prover-peer")
    verdict, _ = await adjudicate(tmp_path, world, remote, digests, FORGED_OP, compute)
    assert verdict is Verdict.DATA_UNAVAILABLE
    # Decided only after retrying up to the give-up block (deadline 100 - margin 10).
    assert remote.requests[digests[FORGED_OP]] > 5


async def test_prover_serving_only_some_members_gains_nothing_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The prover serves member A only; member B fetches the leaf data from A (which serves
    # what it fetched) and reaches the same verdict on the forged op.
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    verdict_a, a = await adjudicate(tmp_path, world, remote, digests, FORGED_OP, compute, "a")
    assert verdict_a.slashes_prover
    assert verdict_a is not Verdict.DATA_UNAVAILABLE
    remote.stores["a-peer"] = cast(BlobStore, a.ctx.data.local)
    remote.refuse.add("prover-peer")
    verdict_b, _ = await adjudicate(
        tmp_path,
        world,
        remote,
        digests,
        FORGED_OP,
        compute,
        "b",
        peers={PROVER: ["prover-peer"], a.address: ["a-peer"]},
        committee=[a.address],
    )
    assert verdict_b is verdict_a
