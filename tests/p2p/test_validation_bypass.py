"""Issue 12, item 2: py-libp2p caches a validation verdict by (origin, seqno) for 300 s while
its seen cache forgets the id after 120 s, so a replayed seqno with new bytes skipped the
topic validator.  Here the TTLs are seconds; the attacker is a real second libp2p host."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from libp2p.peer.id import ID

from taonode.p2p.envelope import ResultAnnouncement, TopicKinds, VoteMessage, seal
from taonode.p2p.node import GossipConfig, P2PNode
from taonode.signer import LocalSigner
from tests.p2p.conftest import NodeFactory, metric
from tests.p2p.hostile import message_id, pubsub_message, raw_publish

RESULTS, VOTES = TopicKinds.RESULTS, TopicKinds.VOTES
SENDER_AT = 1 + 1 + 8 + 16  # envelope header: version, kind, timestamp, nonce, then sender


def _result(n: int) -> ResultAnnouncement:
    return ResultAnnouncement(
        job_id=n.to_bytes(32, "big"),
        model_id=b"\x02" * 32,
        profile_id=b"\x03" * 32,
        input_digest=b"\x04" * 32,
        output_digest=b"\x05" * 32,
        trace_root=b"\x06" * 32,
        n_ops=n,
    )


async def _wait(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not pred():
        if loop.time() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def _connected(victim: P2PNode, attacker: P2PNode) -> None:
    async def both() -> bool:
        return attacker.peer_id in await victim.peers()

    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not await both():
        assert loop.time() < end, "hosts did not connect"
        await asyncio.sleep(0.02)
    # The attacker writes on its pubsub stream to the victim: wait until it has one.
    await _wait(lambda: ID.from_base58(victim.peer_id) in attacker._pubsub.peers)


@pytest.mark.parametrize("library_cache", [False, True], ids=["cache-off", "cache-on"])
async def test_replayed_seqno_with_new_bytes_after_seen_expiry_is_not_delivered(
    make_node: NodeFactory, library_cache: bool
) -> None:
    """cache-off: the default; the validator runs again and refuses the forgery.
    cache-on: the library's verdict cache is back (as in 0.8.1), and delivery's binding to the
    accepted bytes alone refuses it."""
    gossip = GossipConfig(seen_ttl_s=1, seen_sweep_s=1, library_validation_cache=library_cache)
    victim = await make_node("victim", gossip=gossip)
    attacker = await make_node("attacker", bootstrap=(victim.listen_addrs[0],))
    member = LocalSigner(os.urandom(32))  # a committee member, not online
    dispute = os.urandom(32)
    victim.set_committee(dispute, {member.address})
    results = await victim.subscribe(RESULTS)
    votes = await victim.subscribe(VOTES, VoteMessage)
    await _connected(victim, attacker)

    seqno = os.urandom(8)
    valid = pubsub_message(attacker, RESULTS, seal(attacker.signer, RESULTS, _result(1)), seqno)
    await raw_publish(attacker, victim.peer_id, [valid])
    assert (await results.get(10)).body == _result(1)
    mid = message_id(victim, valid)
    # The seen cache forgets the id (read without touching: ``has`` would refresh it).
    await _wait(lambda: mid not in victim._pubsub.seen_messages.cache)

    # The same seqno, new bytes: a "vote by the member" with junk signatures.
    forged = bytearray(seal(attacker.signer, VOTES, VoteMessage(dispute, 1, b"\x01" * 65)))
    forged[SENDER_AT : SENDER_AT + 20] = bytes.fromhex(member.address[2:])
    replay = pubsub_message(attacker, VOTES, bytes(forged), seqno)
    # Then an honest message with a fresh seqno on the same stream: once it is delivered, the
    # forgery before it has been processed (one stream is read in order).
    after = pubsub_message(
        attacker, RESULTS, seal(attacker.signer, RESULTS, _result(2)), os.urandom(8)
    )
    await raw_publish(attacker, victim.peer_id, [replay])
    await raw_publish(attacker, victim.peer_id, [after])
    assert (await results.get(10)).body == _result(2)
    reason = "unvalidated" if library_cache else "bad_signature"
    await _wait(lambda: metric(victim, "taonode_p2p_rejected_total", reason=reason) == 1)
    assert votes.queue.empty()
    assert metric(victim, "taonode_p2p_messages_in_total", kind="VoteMessage") == 0
    assert not victim.guard.banned(attacker.peer_id)  # two failures are not a flood
