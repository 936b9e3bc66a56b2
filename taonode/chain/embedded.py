"""The embedded chain: an in-process EVM (eth-tester + py-evm), nothing else to install.

``AsyncEthereumTesterProvider`` runs each request synchronously on the event loop (it blocks the
loop for the whole call): fine for tests and the single-process devnet, not for concurrency.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_keys.datatypes import PrivateKey
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import generate_genesis_state_for_keys
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from taonode.chain.localchain import DEV_BALANCE_WEI, dev_key


class EmbeddedChain:
    """An in-process chain with ``num_keys`` funded dev keys (``dev_key(0..num_keys-1)``)."""

    name = "embedded"

    def __init__(self, num_keys: int = 20, *, fund: Sequence[bytes] = ()) -> None:
        """``fund``: further private keys to fund at genesis (e.g. a keystore's key)."""
        self._keys = [dev_key(i) for i in range(num_keys)]
        genesis_state = generate_genesis_state_for_keys(
            [PrivateKey(k) for k in [*self._keys, *fund]],
            overrides={"balance": DEV_BALANCE_WEI},
        )
        backend = PyEVMBackend(genesis_state=genesis_state)
        self.tester: Any = EthereumTester(backend=backend)
        provider = AsyncEthereumTesterProvider()
        provider.ethereum_tester = self.tester  # the provider makes its own; use ours
        self._w3 = AsyncWeb3(provider)
        # eth_call without "from" would run as eth-tester's own (unfunded) default account
        self._w3.eth.default_account = Account.from_key([*self._keys, *fund][0]).address

    @property
    def w3(self) -> AsyncWeb3[Any]:
        return self._w3

    @property
    def keys(self) -> list[bytes]:
        return list(self._keys)

    async def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            self.tester.mine_blocks(blocks)

    async def snapshot(self) -> str:
        return str(self.tester.take_snapshot())

    async def revert(self, snapshot: str) -> None:
        self.tester.revert_to_snapshot(int(snapshot))

    async def close(self) -> None:
        """Nothing to release (kept for symmetry with :class:`~taonode.chain.anvil.AnvilChain`)."""

    async def __aenter__(self) -> EmbeddedChain:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
