"""Committee channel over real hosts: votes to quorum, re-broadcast for late joiners."""

from __future__ import annotations

import asyncio
import os

import pytest

from taonode.p2p.committee import CommitteeChannel
from taonode.p2p.node import P2PNode
from taonode.protocol.votes import Verdict, recover_voter
from tests.p2p.conftest import DOMAIN, NodeFactory


async def _star(make_node: NodeFactory, n: int) -> list[P2PNode]:
    hub = await make_node("hub")
    nodes = [hub] + [await make_node(f"m{i}", bootstrap=(hub.listen_addrs[0],)) for i in range(n)]
    for _ in range(100):
        if len(await hub.peers()) == n:
            break
        await asyncio.sleep(0.05)
    return nodes


async def test_votes_reach_quorum_and_signatures_verify(make_node: NodeFactory) -> None:
    hub, *voters = await _star(make_node, 3)
    dispute = os.urandom(32)
    members = {v.signer.address for v in voters}
    verdicts = [Verdict.EMPIRICAL_VIOLATION, Verdict.EMPIRICAL_VIOLATION, Verdict.WITHIN_TOLERANCE]
    channels = [CommitteeChannel(n) for n in (hub, *voters)]
    for ch in channels:
        await ch.start()
    await asyncio.sleep(2.5)  # two heartbeats (slower under load): the vote topic's mesh forms
    async with channels[0].join(dispute, members) as agg:
        rounds = [ch.join(dispute, members) for ch in channels[1:]]
        for r in rounds:
            await r.__aenter__()
        try:
            await asyncio.gather(*(r.cast(vd) for r, vd in zip(rounds, verdicts, strict=True)))
            result = await agg.collect(quorum=3, timeout_s=25)
            assert result.quorum_reached
            for v in result.signatures():
                assert recover_voter(DOMAIN, dispute, v.verdict, v.signature) == v.voter
            assert result.tally()[Verdict.EMPIRICAL_VIOLATION] == 2
            # Each voter also sees the others (collection on the voter side).
            mine = await rounds[0].collect(quorum=3, timeout_s=25)
            assert set(mine.votes) == members
        finally:
            for r in rounds:
                await r.__aexit__(None, None, None)


async def test_rebroadcast_reaches_a_late_aggregator(make_node: NodeFactory) -> None:
    hub, voter = await _star(make_node, 1)
    dispute = os.urandom(32)
    members = {voter.signer.address}
    async with CommitteeChannel(voter) as ch, ch.join(dispute, members) as rnd:
        await rnd.cast(Verdict.DATA_UNAVAILABLE, rebroadcast_initial_s=0.1)
        await asyncio.sleep(0.3)  # the first publish had nobody to go to
        async with CommitteeChannel(hub) as hub_ch, hub_ch.join(dispute, members) as agg:
            result = await agg.collect(quorum=1, timeout_s=10)
    assert result.quorum_reached
    assert result.votes[voter.signer.address].verdict is Verdict.DATA_UNAVAILABLE


async def test_deadline_returns_partial_and_outsiders_cannot_cast(make_node: NodeFactory) -> None:
    (hub,) = await _star(make_node, 0)
    dispute = os.urandom(32)
    async with CommitteeChannel(hub) as ch, ch.join(dispute, {"0x" + "33" * 20}) as agg:
        result = await agg.collect(quorum=1, timeout_s=0.2)
        assert not result.quorum_reached
        assert result.votes == {}
        with pytest.raises(ValueError, match="not on the committee"):
            await agg.cast(Verdict.WITHIN_TOLERANCE)


async def test_consecutive_rounds_on_the_shared_topic(make_node: NodeFactory) -> None:
    hub, *voters = await _star(make_node, 2)
    members = {v.signer.address for v in voters}
    channels = [CommitteeChannel(n) for n in (hub, *voters)]
    for ch in channels:
        await ch.start()
    await asyncio.sleep(1.2)
    try:
        for _ in range(3):
            dispute = os.urandom(32)
            async with channels[0].join(dispute, members) as agg:
                rounds = [ch.join(dispute, members) for ch in channels[1:]]
                for r in rounds:
                    await r.__aenter__()
                for r in rounds:
                    await r.cast(Verdict.WITHIN_TOLERANCE)
                result = await agg.collect(quorum=2, timeout_s=5)
                for r in rounds:
                    await r.__aexit__(None, None, None)
            assert result.quorum_reached
    finally:
        for ch in channels:
            await ch.stop()
