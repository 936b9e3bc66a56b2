"""A restarted node rebuilds every open job from its own store, however old the job is.

The real watcher, feed, state store and driver on anvil with real contracts: a job committed
and challenged more than 256 blocks before the restart (the watcher's reorg journal is pruned
to 256 blocks) is still in view after the restart, with its dispute; a job closed long ago is
forgotten. Before issue 13's fix the restart read only the pruned journal and crashed on the
first event of the forgotten job (``CommitteeDrawn for an unknown job``).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from web3 import AsyncWeb3

from taonode.chain.anvil import AnvilChain
from taonode.chain.bindings.coordinator import TaoCoordinator
from taonode.chain.watcher import BindingLogDecoder, EventWatcher
from taonode.protocol.dispute import ResultStatus
from taonode.roles.adapters import WatcherFeed
from taonode.roles.driver import ProtocolDriver
from taonode.roles.metrics import RoleMetrics
from taonode.store.state import StateStore
from tests.chain.helpers import CHALLENGER, TEST_PARAMS, Trace, h, make_env, with_params

PARAMS = with_params(TEST_PARAMS, challengeWindow=400, moveTimeout=600)
OLD, OPEN = h("closed long ago"), h("open for 300 blocks")


async def _follow(
    store: StateStore, w3: AsyncWeb3[Any], coordinator: TaoCoordinator, until: int
) -> ProtocolDriver:
    """Run watcher + driver until the driver is caught up with block ``until``."""
    decoder = BindingLogDecoder([coordinator])
    watcher = EventWatcher(
        w3, store, decoder, name="coordinator", confirmations=0, poll_interval_s=0.05
    )
    feed = WatcherFeed(watcher, store, decoder, 0.05)
    driver = ProtocolDriver(
        feed, [], {}, RoleMetrics(CollectorRegistry()), move_timeout=PARAMS.moveTimeout
    )
    await driver.start()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(watcher.run(stop)), asyncio.create_task(driver.run())]
    try:
        for _ in range(1200):  # 60 s at most
            if driver.ready() and driver.state.head >= until:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"driver not caught up with block {until}")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return driver


@pytest.mark.anvil
async def test_restart_after_300_blocks_recovers_open_job_and_dispute_succeeds(
    tmp_path: Path,
) -> None:
    chain = await AnvilChain.start(num_keys=8)
    try:
        env = await make_env(chain, PARAMS)
        await env.register_model()
        await env.commit(OLD, Trace.honest(16, "old"))
        await env.mine(PARAMS.challengeWindow + 1)
        await env.c.coordinator.finalize(OLD)
        await env.commit(OPEN, Trace.honest(16, "open"))
        await env.as_(CHALLENGER).coordinator.challenge(OPEN, value=PARAMS.challengerBond)
        opened_at = await env.block()
        await env.mine(300)
        head = await env.block()
        assert head - opened_at >= 300

        store = StateStore(tmp_path / "state.sqlite")
        first = await _follow(store, chain.w3, env.c.coordinator, head)
        assert first.state.views[OPEN].status is ResultStatus.DISPUTED
        # The watcher's own journal now spans only the reorg window: the open job's events
        # are below it (the restart must not depend on it).
        journal = store.delivered_logs("coordinator")
        assert all(entry.block_number > opened_at for entry in journal)
        # The job closed ~300 blocks ago was forgotten while following (kept: the open one).
        assert OLD not in first.state.views
        assert {e.payload["topics"][1] for e in store.job_events("coordinator")} == {
            "0x" + OPEN.hex()
        }
        store.close()

        # "Restart": a fresh store object on the same file, a fresh driver; its views come
        # from the store before the watcher has delivered anything.
        store = StateStore(tmp_path / "state.sqlite")
        feed_decoder = BindingLogDecoder([env.c.coordinator])
        watcher = EventWatcher(chain.w3, store, feed_decoder, name="coordinator")
        restarted = ProtocolDriver(
            WatcherFeed(watcher, store, feed_decoder, 0.05),
            [],
            {},
            RoleMetrics(CollectorRegistry()),
            move_timeout=PARAMS.moveTimeout,
        )
        await restarted.start()
        view = restarted.state.views.get(OPEN)
        assert view is not None
        assert view.status is ResultStatus.DISPUTED
        assert view.dispute is not None
        assert view.dispute.challenger == env.addr(CHALLENGER)
        assert OLD not in restarted.state.views  # closed long ago: forgotten
        store.close()

        # The restarted node follows the open job on: the chain's next move reaches it.
        store = StateStore(tmp_path / "state.sqlite")
        await env.mine(1)
        again = await _follow(store, chain.w3, env.c.coordinator, head + 1)
        assert again.state.views[OPEN].status is ResultStatus.DISPUTED
        store.close()
    finally:
        await chain.close()
