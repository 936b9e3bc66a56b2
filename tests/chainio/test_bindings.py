"""The journaled sender and the watcher under the generated TAO bindings (both chains)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taonode.chain.anvil import AnvilChain
from taonode.chain.bindings.stake_registry import NodeRegistered
from taonode.chain.deploy import Contracts, DeployParams, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import LocalChain
from taonode.chain.sender import FeePolicy, TxSender
from taonode.chain.tx import ContractRevert, DirectTransactor
from taonode.chain.watcher import BindingLogDecoder, Delivery, EventWatcher
from taonode.signer import LocalSigner
from taonode.store.state import StateStore, TxStatus


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
async def local_chain(request: pytest.FixtureRequest) -> AsyncIterator[LocalChain]:
    chain: LocalChain
    if request.param == "embedded":
        chain = EmbeddedChain(num_keys=2)
    else:
        chain = await AnvilChain.start(num_keys=2)
    try:
        yield chain
    finally:
        await chain.close()


async def test_keyed_transactor_register_once_and_watch_succeeds(
    local_chain: LocalChain, tmp_path: Path
) -> None:
    w3 = local_chain.w3
    params = DeployParams()
    deployment = await deploy(w3, DirectTransactor(w3, LocalSigner(local_chain.keys[0])), params)
    contracts = Contracts.connect(w3, deployment)
    store = StateStore(tmp_path / "state.db")
    signer = LocalSigner(local_chain.keys[1])
    sender = TxSender(w3, signer, store, fees=FeePolicy(max_fee_cap=10**12), poll_interval_s=0.02)
    await sender.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(sender.run(stop))

    stakes = contracts.stakes.with_transactor(sender.transactor("register:me"))
    addrs = ["/ip4/127.0.0.1/tcp/4001"]
    receipt = await stakes.register(b"peer-1", addrs, value=params.minStake)
    assert receipt["status"] == 1
    # Asking again under the same key returns the same transaction; nothing new is sent.
    again = await stakes.register(b"peer-1", addrs, value=params.minStake)
    assert again["transactionHash"] == receipt["transactionHash"]
    assert await w3.eth.get_transaction_count(signer.address) == 1
    record = store.journal_get("register:me")
    assert record is not None
    assert record.status is TxStatus.CONFIRMED
    assert record.kind == "StakeRegistry.register"

    # A new key for the same call: simulation reverts with the registry's custom error.
    second = contracts.stakes.with_transactor(sender.transactor("register:again"))
    with pytest.raises(ContractRevert) as info:
        await second.register(b"peer-1", addrs, value=params.minStake)
    assert info.value.name == "AlreadyRegistered"
    assert store.journal_get("register:again") is None
    stop.set()
    await runner

    events: list[Any] = []

    async def collect(delivery: Delivery[Any]) -> None:
        events.append(delivery.event)

    watcher = EventWatcher(
        w3,
        store,
        BindingLogDecoder([contracts.stakes, contracts.coordinator]),
        start_block=deployment.block,
        confirmations=0,
    )
    watcher.subscribe(collect)
    while not await watcher.poll_once():
        pass
    registered = [e for e in events if isinstance(e, NodeRegistered)]
    assert [(e.node, e.peer_id, e.addrs, e.stake) for e in registered] == [
        (signer.address, b"peer-1", addrs, params.minStake)
    ]
    store.close()
