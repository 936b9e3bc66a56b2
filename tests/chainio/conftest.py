"""Fixtures for the chain adapters: a compiled test contract on eth-tester and on anvil."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from eth_account import Account
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.providers import AsyncHTTPProvider
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.types import Wei

from taonode.signer import LocalSigner
from tests.chainio.chains import ANVIL, SOLC, Anvil, Artifact, EthTesterRPC, compile_fixture

BACKENDS = ["eth_tester", pytest.param("anvil", marks=pytest.mark.anvil)]


@pytest.fixture(scope="session")
def artifact() -> Artifact:
    if not SOLC.exists():
        pytest.skip("contracts/node_modules missing: run `npm ci` in contracts/")
    return compile_fixture()


def need_anvil() -> None:
    if not ANVIL.exists():
        pytest.skip("anvil missing: run `npm ci` in contracts/")


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    need_anvil()
    node = Anvil(tmp_path)
    node.start()
    try:
        yield node
    finally:
        node.kill()


@pytest.fixture
def eth_tester_rpc() -> Iterator[EthTesterRPC]:
    rpc = EthTesterRPC()
    try:
        yield rpc
    finally:
        rpc.close()


@dataclass
class Chain:
    name: str
    w3: AsyncWeb3[Any]
    url: str | None
    contract: AsyncContract
    signer: LocalSigner
    key: bytes
    anvil: Anvil | None = None


async def deploy(
    w3: AsyncWeb3[Any], artifact: Artifact
) -> tuple[AsyncContract, LocalSigner, bytes]:
    """Deploy the fixture from a dev account and fund a fresh key for the code under test."""
    dev = (await w3.eth.accounts)[0]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = await factory.constructor().transact({"from": dev})
    receipt = await w3.eth.wait_for_transaction_receipt(tx)
    contract = cast(
        AsyncContract, w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
    )
    key = bytes(Account.create().key)
    signer = LocalSigner(key)
    fund = await w3.eth.send_transaction({"from": dev, "to": signer.address, "value": Wei(10**20)})
    await w3.eth.wait_for_transaction_receipt(fund)
    return contract, signer, key


async def close(w3: AsyncWeb3[Any]) -> None:
    """Close an HTTP provider's aiohttp session (eth-tester has none)."""
    if isinstance(w3.provider, AsyncHTTPProvider):
        await w3.provider.disconnect()


@pytest.fixture(params=BACKENDS)
async def chain(
    request: pytest.FixtureRequest, artifact: Artifact, tmp_path: Path
) -> AsyncIterator[Chain]:
    """The embedded chain (in-process eth-tester) or anvil, the test contract deployed."""
    node: Anvil | None = None
    if request.param == "anvil":
        need_anvil()
        node = Anvil(tmp_path)
        node.start()
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
    else:
        w3 = AsyncWeb3(AsyncEthereumTesterProvider())
    try:
        contract, signer, key = await deploy(w3, artifact)
        yield Chain(request.param, w3, node.url if node else None, contract, signer, key, node)
    finally:
        await close(w3)
        if node is not None:
            node.kill()


@pytest.fixture(params=BACKENDS)
async def rpc_chain(
    request: pytest.FixtureRequest, artifact: Artifact, tmp_path: Path
) -> AsyncIterator[Chain]:
    """Like ``chain``, but always behind an HTTP URL a child process can reach."""
    node: Anvil | None = None
    bridge: EthTesterRPC | None = None
    if request.param == "anvil":
        need_anvil()
        node = Anvil(tmp_path)
        node.start()
        url = node.url
    else:
        bridge = EthTesterRPC()
        url = bridge.url
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        contract, signer, key = await deploy(w3, artifact)
        yield Chain(request.param, w3, url, contract, signer, key, node)
    finally:
        await close(w3)
        if node is not None:
            node.kill()
        if bridge is not None:
            bridge.close()
