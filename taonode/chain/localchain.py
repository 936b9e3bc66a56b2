"""What the embedded (py-evm) and anvil chains have in common, and their funded dev keys.

Both chains mine one block per transaction and let the caller mine empty blocks, so block-based
deadlines are deterministic in tests and in the devnet.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from eth_account import Account
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import AsyncWeb3

DEV_BALANCE_WEI = 10**6 * 10**18
"""What each dev key holds at start (1,000,000 ether)."""


def dev_key(index: int) -> bytes:
    """Deterministic dev private key ``index`` (public knowledge: local chains only)."""
    return keccak(b"taonode-dev-key:" + index.to_bytes(4, "big"))


def dev_address(index: int) -> ChecksumAddress:
    address: ChecksumAddress = Account.from_key(dev_key(index)).address
    return address


class LocalChain(Protocol):
    """A local chain: an AsyncWeb3[Any] client, funded dev keys, and block mining."""

    @property
    def w3(self) -> AsyncWeb3[Any]: ...

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> list[bytes]:
        """Funded private keys (``dev_key(0..n-1)``)."""
        ...

    async def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""
        ...

    async def snapshot(self) -> str:
        """Remember the chain state; :meth:`revert` goes back to it."""
        ...

    async def revert(self, snapshot: str) -> None: ...

    async def close(self) -> None: ...


class BlockClock:
    """A component that mines an empty block every interval on a local chain, so block-based
    deadlines advance in wall time (local chains otherwise mine only on transactions)."""

    name = "block-clock"

    def __init__(self, chain: LocalChain, interval_s: float) -> None:
        self.chain = chain
        self.interval_s = interval_s

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.chain.mine(1)

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True
