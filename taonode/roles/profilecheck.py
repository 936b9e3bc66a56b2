"""The prover's guard against answering with a profile the chain no longer accepts.

``commitResult`` reverts ``ProfileMismatch`` when the committed profile id is not the model's
active profile on chain. A prover that kept answering after ``model add`` changed the profile
would hand out 200s for jobs that can never be committed (issue 13). Before each answer the
served profile id is compared with the chain's, read once per head block per model (a job
costs no extra RPC call within a block); on a mismatch the job is refused with a message that
says how to fix it. The check only asks "which profile is active now", so it holds whether a
profile change takes effect at once or after an on-chain delay.

A change that lands in the last block before a commit still reverts it (the cache is one
block old at most): that job is then reported ``failed``, never left ``committing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("taonode.prover")


class ProfileChanged(Exception):
    """The chain's active profile for the model is not the one this node serves."""


class ChainUnavailable(Exception):
    """The active profile could not be read and nothing was read before."""


class ActiveProfiles:
    def __init__(
        self, active_profile: Callable[[bytes], Awaitable[bytes]], head: Callable[[], int]
    ) -> None:
        self._read = active_profile
        self._head = head
        self._cache: dict[bytes, tuple[int, bytes]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}

    async def active(self, model_id: bytes) -> bytes:
        head = self._head()
        cached = self._cache.get(model_id)
        if cached is not None and cached[0] == head:
            return cached[1]
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:  # one read per model and block, however many requests wait
            cached = self._cache.get(model_id)
            if cached is not None and cached[0] == head:
                return cached[1]
            try:
                profile_id = await self._read(model_id)
            except Exception as exc:
                if cached is None:
                    raise ChainUnavailable(f"cannot read the model's profile: {exc!r}") from exc
                return cached[1]  # the RPC is flapping: the last block's answer stands
            self._cache[model_id] = (head, profile_id)
            return profile_id

    async def check(self, model_id: bytes, served_profile_id: bytes) -> None:
        active = await self.active(model_id)
        if active != served_profile_id:
            raise ProfileChanged(
                f"model 0x{model_id.hex()}: this node serves profile 0x{served_profile_id.hex()}"
                f" but the chain's active profile is 0x{active.hex()}; add the new profile with"
                " `taonode model add` and restart the node"
            )
