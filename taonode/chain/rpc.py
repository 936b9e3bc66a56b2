"""HTTP RPC clients that survive cancelled requests.

web3 8.0.0's ``HTTPSessionManager`` guards its session cache with one process-wide
``threading.Lock`` that each request acquires through a thread pool; a request cancelled while
that acquisition is pending leaks the lock, and every later request in the process hangs
(reproduced in ``tests/chain/test_rpc.py``). A node cancels requests routinely (shutdown, a
crashed component, timeouts), so its providers use :class:`LoopSessionManager` instead: one
``aiohttp`` session per event loop and endpoint, no lock (an event loop is single-threaded).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, ClientTimeout
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3._utils.http_session_manager import HTTPSessionManager


class LoopSessionManager(HTTPSessionManager):
    def __init__(self) -> None:
        super().__init__()
        self._loop_sessions: dict[tuple[int, str], ClientSession] = {}

    async def async_cache_and_return_session(
        self,
        endpoint_uri: Any,
        session: ClientSession | None = None,
        request_timeout: ClientTimeout | None = None,
    ) -> ClientSession:
        key = (id(asyncio.get_running_loop()), str(endpoint_uri))
        cached = self._loop_sessions.get(key)
        if cached is None or cached.closed:
            cached = session if session is not None else ClientSession(raise_for_status=True)
            self._loop_sessions[key] = cached
        return cached

    async def close(self) -> None:
        sessions, self._loop_sessions = list(self._loop_sessions.values()), {}
        for session in sessions:
            await session.close()


def install_loop_sessions(w3: AsyncWeb3[Any]) -> LoopSessionManager:
    """Give ``w3``'s HTTP provider a :class:`LoopSessionManager` (returned, to close later)."""
    provider = w3.provider
    if not isinstance(provider, AsyncHTTPProvider):
        raise TypeError("only HTTP providers use a session manager")
    manager = LoopSessionManager()
    provider._request_session_manager = manager  # web3 exposes no setter for it
    return manager


def http_web3(url: str, timeout_s: float = 10.0) -> AsyncWeb3[Any]:
    """An ``AsyncWeb3`` over HTTP whose requests may be cancelled safely."""
    w3 = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": ClientTimeout(timeout_s)}))
    install_loop_sessions(w3)
    return w3
