"""The stake registry's node list, mirrored in memory: the p2p layer's ``is_registered``.

The p2p validator asks, for every vote envelope, whether its sender is a registered (staked)
node — an unstaked key could otherwise fill the committee channel's early-vote buffer for free
(issue 12, item 4).  It asks in the p2p thread and must not wait on the chain, so this keeps a
frozenset of addresses, replaced atomically, and polls ``StakeRegistry.nodeCount`` for new
entries (``nodeAt`` is append-only, indices 1..nodeCount).  A node that registered since the
last poll is refused until the next one; votes are re-broadcast, so the cost is a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog

log = structlog.get_logger("taonode.registered")


class _Stakes(Protocol):
    async def node_count(self) -> int: ...

    async def node_at(self, arg0: int) -> str: ...


class RegisteredKeys:
    name = "registered"

    def __init__(self, stakes: _Stakes, *, poll_interval_s: float = 1.0) -> None:
        self._stakes = stakes
        self.poll_interval_s = poll_interval_s
        self._known: frozenset[str] = frozenset()
        self._count = 0
        self._loaded = False

    def __call__(self, address: str) -> bool:
        """Thread-safe: one read of an immutable set."""
        return address.lower() in self._known

    def __len__(self) -> int:
        return len(self._known)

    async def refresh(self) -> None:
        count = await self._stakes.node_count()
        if count > self._count:
            new = [await self._stakes.node_at(i) for i in range(self._count + 1, count + 1)]
            self._known = self._known | {a.lower() for a in new}
            self._count = count
            log.debug("registered nodes", count=count)
        self._loaded = True

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception as e:  # the chain may come up later: the poll loop catches up
            log.warning("stake registry not readable yet", error=repr(e))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            with contextlib.suppress(Exception):
                await self.refresh()

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return self._loaded
