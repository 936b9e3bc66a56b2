"""Issue 12, item 4: a peer that reconnects while the old connection is still registered must
not be forgotten.  The race is staged with two real hosts: the peer opens a second pubsub
stream and announces its subscriptions on it (as a new connection does), then the node's
stream to the peer dies while still listed; the node must recover and keep sending."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from libp2p.peer.id import ID
from libp2p.utils import encode_varint_prefixed

from taonode.p2p.envelope import ResultAnnouncement, TopicKinds
from taonode.p2p.gossip import GuardedPubsub
from taonode.p2p.node import P2PNode
from tests.p2p.conftest import NodeFactory

TOPIC = TopicKinds.RESULTS


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


async def _until(pred: Callable[[], bool], timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not pred():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def _second_stream_with_hello(peer: P2PNode, node: P2PNode) -> None:
    async def go() -> None:
        ps = peer._pubsub
        stream = await peer._host.new_stream(ID.from_base58(node.peer_id), list(ps.protocols))
        await stream.write(encode_varint_prefixed(ps.get_hello_packet().SerializeToString()))

    await peer._call(go)


async def _kill_outbound_stream(node: P2PNode, peer: P2PNode) -> None:
    """The node's stream to the peer dies (its connection went away) while the node still
    lists it: what a reconnect during a backlog leaves behind."""

    async def go() -> None:
        await node._pubsub.peers[ID.from_base58(peer.peer_id)].reset()

    await node._call(go)


async def test_old_stream_failing_after_a_new_hello_does_not_forget_the_peer(
    make_node: NodeFactory,
) -> None:
    node = await make_node("node")
    peer = await make_node("peer", bootstrap=(node.listen_addrs[0],))
    sub = await peer.subscribe(TOPIC)
    await node.subscribe(TOPIC)
    ps = node._pubsub
    assert isinstance(ps, GuardedPubsub)
    pid = ID.from_base58(peer.peer_id)
    await _until(lambda: pid in ps.peer_topics.get(TOPIC, set()) and ps.readers.get(pid) == 1)

    await _second_stream_with_hello(peer, node)  # the new connection's hello
    await _until(lambda: ps.readers.get(pid) == 2)
    await _kill_outbound_stream(node, peer)

    # The next write fails; the node must re-open a stream on the live connection and keep
    # the peer's subscriptions (re-announced on the new stream), so delivery resumes.
    async def delivered() -> bool:
        await node.publish(TOPIC, _result(1))
        try:
            await sub.get(1.0)
        except TimeoutError:
            return False
        return True

    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while not await delivered():
        assert loop.time() < end, "the node never sent to the reconnected peer again"
    assert pid in ps.peer_topics.get(TOPIC, set())
