"""A node that can be killed abruptly and restarted from its data directory, in-process.

``kill()`` cancels every component's task at once and calls no component's ``stop``: nothing is
flushed, committed or sent that was not already on disk or on chain, as after a SIGKILL. Only
what the operating system would reclaim from a dead process is released (the libp2p host's
sockets and thread, the SQLite handle, the compute threads), so the restarted node can listen
on the same address and open the same store. ``restart()`` builds the node again from the same
spec, exactly as a fresh ``taonode`` process would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from taonode.roles.assemble import RoleNode

_RELEASED_ON_DEATH = ("state", "p2p", "compute")
"""Components holding OS resources a dead process gives back (their stop only releases them)."""


class RestartableNode:
    """A component running one role node, which :meth:`kill` and :meth:`restart` replace."""

    def __init__(self, name: str, build: Callable[[], Awaitable[RoleNode]], node: RoleNode) -> None:
        self.name = name
        self._build = build
        self.node = node
        self.kills = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._alive = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        await self._start_node()

    async def _start_node(self) -> None:
        for component in self.node.components:
            await asyncio.wait_for(component.start(), 60)
        self._tasks = [
            asyncio.create_task(c.run(), name=f"{self.name}:{c.name}") for c in self.node.components
        ]
        self._alive.set()

    async def run(self) -> None:
        # Lives until the devnet stops; a component crash is reported like any component's.
        while not self._stopping:
            await self._alive.wait()
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if all(t.done() and not t.cancelled() for t in self._tasks):
                await asyncio.Event().wait()  # every run() returned: idle until stopped

    async def kill(self) -> None:
        """Die now: every task cancelled, no component stopped beyond releasing OS resources."""
        self._alive.clear()
        # The driver's in-flight actions and the prover's commit tasks are tasks of their own:
        # a dead process runs none of them either.
        stray: list[asyncio.Task[Any]] = list(getattr(self.node.driver, "_inflight", {}).values())
        if self.node.prover is not None:
            stray += list(getattr(self.node.prover, "_background", ()))
        doomed = [*self._tasks, *stray]
        for task in doomed:
            task.cancel()
        if doomed:
            # Bounded: a task that swallows its cancellation must not hang the killer.
            await asyncio.wait(doomed, timeout=10)
        for component in self.node.components:
            if component.name in _RELEASED_ON_DEATH:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(component.stop(), 10)
        self.kills += 1

    async def restart(self) -> None:
        """Start a fresh node from the same data directory and keys."""
        self.node = await self._build()
        await self._start_node()

    async def stop(self) -> None:
        self._stopping = True
        for component in reversed(self.node.components):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(component.stop(), 10)
        for task in self._tasks:
            task.cancel()

    def ready(self) -> bool:
        return self._alive.is_set()
