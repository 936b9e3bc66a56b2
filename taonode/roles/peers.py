"""Who is who on the network: chain address → libp2p peer ids.

Learned from signed node records gossiped on the nodes topic (the envelope's chain signature
proves the address) and from the peer records voters register on chain. Each node publishes
its own record at start-up and then periodically, so late joiners learn it too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from taonode.p2p.envelope import NodeRecord, TopicKinds
from taonode.p2p.node import P2PNode, Subscription

log = structlog.get_logger("taonode.peers")


class PeerBook:
    name = "peers"

    def __init__(
        self,
        node: P2PNode,
        record: NodeRecord,
        *,
        announce_s: float = 10.0,
        fast_announces: int = 5,
    ) -> None:
        self.node = node
        self.record = record
        self.announce_s = announce_s
        self.fast_announces = fast_announces
        self._peers: dict[str, list[str]] = {}
        self._sub: Subscription[NodeRecord] | None = None
        self._started = False

    def peers_of(self, address: str) -> Sequence[str]:
        return list(self._peers.get(address.lower(), ()))

    def learn(self, address: str, peer_id: str) -> None:
        known = self._peers.setdefault(address.lower(), [])
        if peer_id not in known:
            known.insert(0, peer_id)
            log.debug("peer learned", address=address, peer=peer_id)

    async def start(self) -> None:
        self._sub = await self.node.subscribe(TopicKinds.NODES, NodeRecord)
        self.learn(str(self.node.signer.address), self.node.peer_id)
        self._started = True

    async def run(self) -> None:
        assert self._sub is not None
        async with asyncio.TaskGroup() as group:
            group.create_task(self._announce())
            async for item in self._sub:
                # The validator recovered ``sender`` from the chain signature; the record's
                # peer id must also be the libp2p peer that originated it.
                if item.body.peer_id == item.peer_id:
                    self.learn(item.sender, item.body.peer_id)

    async def _announce(self) -> None:
        sent = 0
        while True:
            with contextlib.suppress(Exception):
                await self.node.publish(TopicKinds.NODES, self.record)
            sent += 1
            await asyncio.sleep(0.5 if sent < self.fast_announces else self.announce_s)

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        self._started = False

    def ready(self) -> bool:
        return self._started
