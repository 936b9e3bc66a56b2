"""What a hostile libp2p peer does that the node's own API never would: raw pubsub frames
with chosen sequence numbers, written straight onto its stream to the victim.

The attacker is a real py-libp2p host (a :class:`P2PNode`); only its publish path is bypassed.
"""

from __future__ import annotations

from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from taonode.p2p.node import P2PNode


def pubsub_message(node: P2PNode, topic: str, data: bytes, seqno: bytes) -> rpc_pb2.Message:
    """A message signed by ``node``'s libp2p key (strict signing), with our seqno."""
    ps = node._pubsub
    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=ps.my_id.to_bytes(), seqno=seqno)
    msg.signature = ps.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = ps.host.get_public_key().serialize()
    return msg


async def raw_publish(node: P2PNode, victim: str, msgs: list[rpc_pb2.Message]) -> None:
    """Write one RPC carrying ``msgs`` on ``node``'s pubsub stream to ``victim``."""

    async def go() -> None:
        stream = node._pubsub.peers[ID.from_base58(victim)]
        ok = await node._pubsub.write_msg(stream, rpc_pb2.RPC(publish=msgs))
        assert ok, "pubsub stream to the victim is closed"

    await node._call(go)


def message_id(node: P2PNode, msg: rpc_pb2.Message) -> bytes:
    return bytes(node._pubsub._msg_id_constructor(msg))
