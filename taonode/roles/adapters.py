"""Glue between the role services and the chain adapters: the journaling sender as a
:class:`KeyedSender`, and the event watcher as the driver's :class:`EventFeed`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from taonode.chain.contract import Event
from taonode.chain.sender import SimulationReverted, TxSender
from taonode.chain.tx import TxRequest
from taonode.chain.watcher import BindingLogDecoder, Delivery, EventWatcher
from taonode.roles.driver import FeedBatch, Settled
from taonode.store.state import DeliveredLog, StateStore, TxRecord, TxStatus

# Reverts that only mean "too early": the same action succeeds on a later block.
RETRY_LATER = frozenset({"WindowOpen", "DeadlineNotPassed", "SeedNotReady", "VotingOpen"})


class TxNotConfirmed(RuntimeError):
    pass


class SenderAdapter:
    """At most one transaction per key; a revert that means "the chain moved on" settles the
    action, one that means "not yet" leaves it to be retried on a later head."""

    def __init__(self, sender: TxSender, timeout_s: float = 120.0) -> None:
        self.sender = sender
        self.timeout_s = timeout_s

    @property
    def address(self) -> str:
        return str(self.sender.address)

    async def submit(self, key: str, tx: TxRequest) -> TxRecord:
        try:
            await self.sender.send(
                key, to=tx.to, data=tx.data, value=tx.value, gas=tx.gas, kind=key.split(":")[0]
            )
        except SimulationReverted as exc:
            name = exc.revert.name
            if name in RETRY_LATER:
                raise
            raise Settled(f"{key}: {name}{exc.revert.args!r}") from exc
        async with asyncio.timeout(self.timeout_s):
            record = await self.sender.wait(key)
        if record.status is not TxStatus.CONFIRMED:
            raise Settled(f"{key}: transaction {record.status.value}: {record.error}")
        return record


class WatcherFeed:
    """The driver's event feed over the watcher: deliveries, retractions and the chain head.

    Every event of a job is kept in the state store (``job_events``) before the watcher's
    cursor moves past it, until the driver says the job is closed: a restart rebuilds the
    views from there plus the watcher's catch-up scan from its cursor, whatever the age of the
    jobs (the watcher's own log is pruned to the reorg window).
    """

    def __init__(
        self,
        watcher: EventWatcher,
        store: StateStore,
        decoder: BindingLogDecoder,
        poll_interval_s: float,
    ) -> None:
        self.watcher = watcher
        self.store = store
        self.decoder = decoder
        self.poll_interval_s = poll_interval_s
        self._queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
        self._head = 0
        watcher.subscribe(self._on_delivery)

    async def _on_delivery(self, delivery: Delivery[Any]) -> None:
        event = delivery.event
        if not isinstance(event, Event):
            return
        job_id = getattr(event, "job_id", None)
        if isinstance(job_id, bytes) and delivery.raw is not None:
            name = self.watcher.name
            if delivery.removed:
                await self.store.run(
                    self.store.drop_job_event, name, event.block_number, event.log_index
                )
            else:
                raw = delivery.raw
                entry = DeliveredLog(
                    int(raw["blockNumber"]), str(raw["blockHash"]), int(raw["logIndex"]), raw
                )
                await self.store.run(self.store.put_job_event, name, job_id.hex(), entry)
        self._head = max(self._head, event.block_number)
        if delivery.removed:
            await self._queue.put(FeedBatch(self._head, retracted=[event]))
        else:
            await self._queue.put(FeedBatch(self._head, events=[event]))

    async def history(self) -> list[Event]:
        kept = await self.store.run(self.store.job_events, self.watcher.name)
        out: list[Event] = []
        for entry in kept:
            event = self.decoder(entry.payload)
            if event is not None:
                out.append(event)
        return out

    @property
    def caught_up(self) -> bool:
        return self.watcher.caught_up

    async def forget(self, job_ids: Sequence[bytes]) -> None:
        await self.store.run(self.store.forget_jobs, self.watcher.name, [j.hex() for j in job_ids])

    async def next_batch(self) -> FeedBatch:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._queue.get(), self.poll_interval_s)
        with contextlib.suppress(Exception):
            # The head moves deadlines even when no event arrives; an RPC error keeps the last.
            self._head = max(self._head, int(await self.watcher.w3.eth.block_number))
        return FeedBatch(self._head)
