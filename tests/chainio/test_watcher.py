"""Event watcher: confirmations, cursor resume, typed events, reorgs, RPC outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider

from taonode.chain.watcher import (
    AbiLogDecoder,
    ChainEvent,
    Delivery,
    EventWatcher,
    from_fields,
)
from taonode.store.state import StateStore
from tests.chainio.chains import Anvil, Artifact
from tests.chainio.conftest import Chain, close, deploy, need_anvil


@dataclass(frozen=True)
class Bumped:
    id: int
    by: str
    total: int
    block_number: int
    tx_hash: str
    log_index: int


class Recorder:
    """A subscriber that keeps the set of live events, as a role's state would."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.live: dict[tuple[str, int], Any] = {}

    async def __call__(self, delivery: Delivery[Any]) -> None:
        e = delivery.event
        key = (e.tx_hash, e.log_index)
        if delivery.removed:
            self.log.append(("-", e))
            assert key in self.live, "retracted an event that was never delivered"
            del self.live[key]
        else:
            self.log.append(("+", e))
            self.live[key] = e

    def ids(self) -> list[int]:
        return sorted(e.id for e in self.live.values() if isinstance(e, Bumped))


def make_watcher(
    chain: Chain, artifact: Artifact, store: StateStore, **kw: Any
) -> tuple[EventWatcher, Recorder]:
    decoder = AbiLogDecoder({chain.contract.address: artifact.abi}, {"Bumped": from_fields(Bumped)})
    watcher = EventWatcher(chain.w3, store, decoder, poll_interval_s=0.05, **kw)
    recorder = Recorder()
    watcher.subscribe(recorder)
    return watcher, recorder


async def dev(w3: AsyncWeb3[Any]) -> Any:
    return (await w3.eth.accounts)[0]


async def bump(chain: Chain, ident: int) -> int:
    tx = await chain.contract.functions.bump(ident).transact({"from": await dev(chain.w3)})
    receipt = await chain.w3.eth.wait_for_transaction_receipt(tx)
    return int(receipt["blockNumber"])


async def mine(w3: AsyncWeb3[Any], n: int = 1) -> None:
    for _ in range(n):
        await w3.provider.make_request("evm_mine", [])


async def until(predicate: Callable[[], bool], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not predicate() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a flag
        await asyncio.sleep(0.05)
    return predicate()


async def drain(watcher: EventWatcher) -> None:
    while not await watcher.poll_once():
        pass


async def test_watcher_confirmations_and_resume_succeeds(
    chain: Chain, artifact: Artifact, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    store = StateStore(tmp_path / "state.db")
    watcher, rec = make_watcher(chain, artifact, store, confirmations=2, registry=registry)
    for i in (1, 2, 3):
        await bump(chain, i)
    await chain.contract.functions.note(b"\x01" * 32, "hello").transact(
        {"from": await dev(chain.w3)}
    )
    await drain(watcher)
    # The last two blocks (bump 3, note) are not 2 deep yet.
    assert rec.ids() == [1, 2]
    await mine(chain.w3, 2)
    await drain(watcher)
    assert rec.ids() == [1, 2, 3]
    notes = [e for _, e in rec.log if isinstance(e, ChainEvent)]
    assert [(n.name, n.args["text"]) for n in notes] == [("Noted", "hello")]
    bumped = [e for _, e in rec.log if isinstance(e, Bumped)]
    assert [b.total for b in bumped] == [1, 2, 3]
    sender = await dev(chain.w3)
    assert all(b.by == sender for b in bumped)
    assert (
        registry.get_sample_value(
            "taonode_watcher_events_total", {"watcher": "tao", "event": "Bumped"}
        )
        == 3
    )
    assert registry.get_sample_value("taonode_chain_head_lag_blocks", {"watcher": "tao"}) == 2

    # A new watcher on the same store resumes from the cursor: no repeats, new events only.
    again, rec2 = make_watcher(chain, artifact, store, confirmations=0)
    await drain(again)
    assert rec2.log == []
    await bump(chain, 4)
    await drain(again)
    assert rec2.ids() == [4]
    store.close()


async def test_watcher_reorg_retracts_and_redelivers_succeeds(
    chain: Chain, artifact: Artifact, tmp_path: Path
) -> None:
    store = StateStore(tmp_path / "state.db")
    watcher, rec = make_watcher(chain, artifact, store, confirmations=0)
    await bump(chain, 1)
    snap = (await chain.w3.provider.make_request("evm_snapshot", []))["result"]
    await bump(chain, 2)
    await bump(chain, 3)
    await drain(watcher)
    assert rec.ids() == [1, 2, 3]
    reverted = await chain.w3.provider.make_request("evm_revert", [snap])
    assert "error" not in reverted
    # The new branch: a different transaction where bump 2 was, then one block more.
    await bump(chain, 5)
    await mine(chain.w3, 2)
    rec.log.clear()
    await drain(watcher)
    assert [(sign, e.id) for sign, e in rec.log] == [("-", 3), ("-", 2), ("+", 5)]
    assert rec.ids() == [1, 5]
    # The state store agrees with the subscriber after the rewind.
    delivered = store.delivered_logs("tao")
    assert len(delivered) == 2
    store.close()


async def test_watcher_reorg_shallower_than_confirmations_never_delivers_succeeds(
    chain: Chain, artifact: Artifact, tmp_path: Path
) -> None:
    store = StateStore(tmp_path / "state.db")
    watcher, rec = make_watcher(chain, artifact, store, confirmations=3)
    await bump(chain, 1)
    await mine(chain.w3, 3)
    snap = (await chain.w3.provider.make_request("evm_snapshot", []))["result"]
    await bump(chain, 2)
    await drain(watcher)
    await chain.w3.provider.make_request("evm_revert", [snap])
    await bump(chain, 6)
    await mine(chain.w3, 3)
    await drain(watcher)
    assert [(sign, e.id) for sign, e in rec.log] == [("+", 1), ("+", 6)]
    store.close()


@pytest.mark.slow
@pytest.mark.anvil
async def test_watcher_anvil_down_20s_resumes_without_loss_succeeds(
    artifact: Artifact, tmp_path: Path
) -> None:
    # The one long test: the issue asks for a 20 s outage, longer than the watcher's backoff
    # cap, so recovery after several failed polls at the cap is covered.
    outage_s = 20.0
    need_anvil()
    node = Anvil(tmp_path)
    node.start()
    try:
        w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(node.url))
        contract, signer, key = await deploy(w3, artifact)
        chain = Chain("anvil", w3, node.url, contract, signer, key, node)
        registry = CollectorRegistry()
        store = StateStore(tmp_path / "state.db")
        watcher, rec = make_watcher(
            chain, artifact, store, confirmations=1, registry=registry, backoff_max_s=2.0
        )
        stop = asyncio.Event()
        runner = asyncio.create_task(watcher.run(stop))
        for i in (1, 2):
            await bump(chain, i)
        await bump(chain, 3)  # in the head block: not delivered before the outage
        assert await until(lambda: rec.ids() == [1, 2], 5)
        assert watcher.ready

        node.stop()
        t0 = time.monotonic()
        assert await until(lambda: not watcher.ready, 10)  # /readyz false while the RPC is down
        assert registry.get_sample_value("taonode_chain_rpc_up", {"watcher": "tao"}) == 0
        await asyncio.sleep(outage_s - (time.monotonic() - t0))
        assert not runner.done()  # no crash
        errors = registry.get_sample_value("taonode_watcher_rpc_errors_total", {"watcher": "tao"})
        assert errors is not None
        assert errors >= 2  # each failed poll includes web3's own ~4 s of connection retries
        node.start()

        for i in (4, 5):
            await bump(chain, i)
        await mine(w3, 1)
        assert await until(lambda: rec.ids() == [1, 2, 3, 4, 5], 15)
        assert watcher.ready
        assert [sign for sign, _ in rec.log] == ["+"] * 5  # each exactly once, nothing retracted
        stop.set()
        await runner
        store.close()
        await close(w3)
    finally:
        node.kill()


async def test_watcher_subscriber_failure_redelivers_succeeds(
    chain: Chain, artifact: Artifact, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    store = StateStore(tmp_path / "state.db")
    watcher, rec = make_watcher(
        chain, artifact, store, confirmations=0, registry=registry, backoff_initial_s=0.01
    )
    failures = [1]

    async def flaky(delivery: Delivery[Any]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("role crashed on this event")

    watcher.subscribe(flaky)
    await bump(chain, 1)
    stop = asyncio.Event()
    runner = asyncio.create_task(watcher.run(stop))
    assert await until(lambda: failures[0] == 0 and len(rec.log) == 2, 5)
    stop.set()
    await runner
    # Delivered to the recorder twice (at-least-once); the cursor moved only after success.
    assert [(sign, e.id) for sign, e in rec.log] == [("+", 1), ("+", 1)]
    assert watcher.ready
    assert (
        registry.get_sample_value("taonode_watcher_subscriber_errors_total", {"watcher": "tao"})
        == 1
    )
    cursor = store.get_cursor("tao")
    assert cursor is not None
    assert cursor.block_number == await chain.w3.eth.block_number
    store.close()


async def test_watcher_getlogs_range_limit_shrinks_batch_succeeds(
    chain: Chain, artifact: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web3.exceptions import Web3RPCError

    store = StateStore(tmp_path / "state.db")
    watcher, rec = make_watcher(chain, artifact, store, confirmations=0, batch_blocks=64)
    for i in range(1, 6):
        await bump(chain, i)
    real = chain.w3.eth.get_logs
    spans: list[int] = []

    async def capped(params: Any) -> Any:
        # A provider that refuses ranges over 2 blocks, as public RPCs do at larger sizes.
        span = int(params["toBlock"]) - int(params["fromBlock"]) + 1
        spans.append(span)
        if span > 2:
            raise Web3RPCError("query exceeds max block range 2")
        return await real(params)

    monkeypatch.setattr(chain.w3.eth, "get_logs", capped)
    await drain(watcher)
    assert rec.ids() == [1, 2, 3, 4, 5]
    assert max(spans) > 2
    assert any(s <= 2 for s in spans)
    store.close()


async def test_watcher_prunes_delivered_logs_below_reorg_window_succeeds(
    chain: Chain, artifact: Artifact, tmp_path: Path
) -> None:
    store = StateStore(tmp_path / "state.db")
    watcher, rec = make_watcher(chain, artifact, store, confirmations=0, reorg_window=4)
    await bump(chain, 1)
    await mine(chain.w3, 70)
    await bump(chain, 2)
    await drain(watcher)
    assert rec.ids() == [1, 2]
    # Only the recent event is kept for retraction; the old one is beyond the window.
    assert [d.payload["blockNumber"] for d in store.delivered_logs("tao")] == [
        await chain.w3.eth.block_number
    ]
    store.close()
