"""Event watcher: follows contracts from a stored cursor, with confirmations and reorg handling.

Polling with ``eth_getLogs`` over block ranges (works on every RPC, HTTP included; a
subscription would only lower latency, and still needs this path to catch up after an outage).

Delivery is at-least-once and in chain order. A block is delivered once it is ``confirmations``
blocks below the head; the cursor (block number + hash) advances in the state store only after
every subscriber has handled the batch, so a crash or an RPC outage re-delivers, never skips.
Subscribers must therefore be idempotent (key on ``(tx_hash, log_index)``); retractions are
at-least-once too (a subscriber that fails mid-retraction sees the retraction again).

Reorgs: each poll first checks that the cursor block's hash is still on the chain. If not, it
walks back over the blocks it delivered events from (their hashes are stored) to the newest one
still on the chain, *retracts* every event above it (newest first, ``Delivery.removed=True``),
rewinds the cursor there and rescans, which re-delivers whatever the new chain holds. With
``confirmations`` deeper than any reorg this never fires; with 0 it is the normal path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, TypeVar, cast

import structlog
from eth_utils.abi import event_abi_to_log_topic
from hexbytes import HexBytes
from prometheus_client import CollectorRegistry, Counter, Gauge
from web3 import AsyncWeb3
from web3._utils.events import get_event_data
from web3.exceptions import Web3RPCError

from taonode.chain.contract import ContractBinding, Event
from taonode.store.state import Cursor, DeliveredLog, StateStore

log = structlog.get_logger(__name__)

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


@dataclass(frozen=True)
class ChainEvent:
    """A decoded log with where it sits on the chain (the default typed event)."""

    name: str
    address: str
    args: Mapping[str, Any]
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class Delivery(Generic[E]):
    event: E
    removed: bool = False
    """True: a reorg took this event off the chain; undo what its delivery did."""
    raw: Mapping[str, Any] | None = None
    """The log as JSON-safe data (what a subscriber stores to decode the event again later)."""


class LogDecoder(Protocol[E_co]):
    """Turns a raw log (JSON-shaped mapping) into a typed event, or None to skip it."""

    @property
    def addresses(self) -> Sequence[str]: ...

    @property
    def topics(self) -> Sequence[str]: ...

    def __call__(self, raw: Mapping[str, Any]) -> E_co | None: ...


def from_fields(cls: type[E]) -> Callable[[ChainEvent], E]:
    """Build a dataclass from an event: its fields are filled from the event's arguments and
    from ``block_number``, ``tx_hash``, ``log_index``, ``address``, ``block_hash``, by name."""
    names = {f.name for f in fields(cast(Any, cls))}

    def build(event: ChainEvent) -> E:
        values: dict[str, Any] = {
            "block_number": event.block_number,
            "block_hash": event.block_hash,
            "tx_hash": event.tx_hash,
            "log_index": event.log_index,
            "address": event.address,
            **event.args,
        }
        return cls(**{k: v for k, v in values.items() if k in names})

    return build


class AbiLogDecoder(Generic[E]):
    """Decodes the events of some contracts (address → ABI) into typed events.

    ``types`` maps an event name to a factory (e.g. ``from_fields(CommitPosted)``); events
    without one are delivered as :class:`ChainEvent`.
    """

    def __init__(
        self,
        contracts: Mapping[str, Sequence[Mapping[str, Any]]],
        types: Mapping[str, Callable[[ChainEvent], E]] | None = None,
    ) -> None:
        self._abis: dict[tuple[str, str], Any] = {}
        topics: set[str] = set()
        for address, abi in contracts.items():
            for item in abi:
                if item.get("type") != "event" or item.get("anonymous"):
                    continue
                topic = "0x" + event_abi_to_log_topic(cast(Any, item)).hex()
                self._abis[(address.lower(), topic)] = item
                topics.add(topic)
        self.addresses = [AsyncWeb3.to_checksum_address(a) for a in contracts]
        self.topics = sorted(topics)
        self._types = dict(types or {})

    def __call__(self, raw: Mapping[str, Any]) -> E | ChainEvent | None:
        topics = raw.get("topics") or []
        if not topics:
            return None
        abi = self._abis.get((str(raw["address"]).lower(), _hex(topics[0])))
        if abi is None:
            return None
        entry = get_event_data(AsyncWeb3().codec, abi, cast(Any, _as_log(raw)))
        event = ChainEvent(
            name=entry["event"],
            address=AsyncWeb3.to_checksum_address(raw["address"]),
            args=dict(entry["args"]),
            block_number=int(raw["blockNumber"]),
            block_hash=_hex(raw["blockHash"]),
            tx_hash=_hex(raw["transactionHash"]),
            log_index=int(raw["logIndex"]),
        )
        factory = self._types.get(event.name)
        return factory(event) if factory else event


class BindingLogDecoder:
    """Decodes logs of deployed bindings into their generated event dataclasses.

    ``BindingLogDecoder([contracts.stakes, contracts.coordinator])`` delivers e.g.
    ``taonode.chain.bindings.coordinator.ResultCommitted`` instances.
    """

    def __init__(self, bindings: Sequence[ContractBinding]) -> None:
        self._events: dict[tuple[str, str], type[Event]] = {}
        for binding in bindings:
            for topic, cls in binding.EVENTS.items():
                self._events[(binding.address.lower(), "0x" + topic.hex())] = cls
        self.addresses = [b.address for b in bindings]
        self.topics = sorted({t for _, t in self._events})

    def __call__(self, raw: Mapping[str, Any]) -> Event | None:
        topics = raw.get("topics") or []
        if not topics:
            return None
        cls = self._events.get((str(raw["address"]).lower(), _hex(topics[0])))
        return None if cls is None else cls.decode(cast(Any, _as_log(raw)))


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text if text.startswith("0x") else "0x" + text


def _as_log(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stored (JSON) log back into the shape web3's decoder expects."""
    return {
        "address": AsyncWeb3.to_checksum_address(raw["address"]),
        "topics": [HexBytes(t) for t in raw["topics"]],
        "data": HexBytes(raw["data"]),
        "blockNumber": int(raw["blockNumber"]),
        "blockHash": HexBytes(raw["blockHash"]),
        "transactionHash": HexBytes(raw["transactionHash"]),
        "transactionIndex": int(raw.get("transactionIndex", 0)),
        "logIndex": int(raw["logIndex"]),
    }


def _raw(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An RPC log as JSON-safe data (stored so a retraction can decode it again)."""
    return {
        "address": str(entry["address"]),
        "topics": [_hex(t) for t in entry["topics"]],
        "data": _hex(entry["data"]),
        "blockNumber": int(entry["blockNumber"]),
        "blockHash": _hex(entry["blockHash"]),
        "transactionHash": _hex(entry["transactionHash"]),
        "transactionIndex": int(entry.get("transactionIndex", 0)),
        "logIndex": int(entry["logIndex"]),
    }


@dataclass
class WatcherMetrics:
    head: Gauge
    block: Gauge
    lag: Gauge
    ready: Gauge
    events: Counter
    retracted: Counter
    reorgs: Counter
    rpc_errors: Counter
    subscriber_errors: Counter


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, WatcherMetrics] = weakref.WeakKeyDictionary()


def watcher_metrics(registry: CollectorRegistry) -> WatcherMetrics:
    if registry not in _METRICS:
        w = ["watcher"]
        _METRICS[registry] = WatcherMetrics(
            head=Gauge("taonode_chain_head", "Latest block number seen", w, registry=registry),
            block=Gauge(
                "taonode_watcher_block", "Last block delivered (cursor)", w, registry=registry
            ),
            lag=Gauge(
                "taonode_chain_head_lag_blocks",
                "Head minus cursor, in blocks",
                w,
                registry=registry,
            ),
            ready=Gauge(
                "taonode_chain_rpc_up",
                "1 when the watcher's last poll succeeded",
                w,
                registry=registry,
            ),
            events=Counter(
                "taonode_watcher_events",
                "Events delivered",
                ["watcher", "event"],
                registry=registry,
            ),
            retracted=Counter(
                "taonode_watcher_retracted",
                "Events retracted by reorgs",
                ["watcher", "event"],
                registry=registry,
            ),
            reorgs=Counter("taonode_watcher_reorgs", "Reorgs handled", w, registry=registry),
            rpc_errors=Counter(
                "taonode_watcher_rpc_errors", "Failed polls (RPC errors)", w, registry=registry
            ),
            subscriber_errors=Counter(
                "taonode_watcher_subscriber_errors",
                "Batches a subscriber failed on (re-delivered)",
                w,
                registry=registry,
            ),
        )
    return _METRICS[registry]


Subscriber = Callable[[Delivery[Any]], Awaitable[None]]

# How RPC providers word "this eth_getLogs query is too large" (geth, erigon, alchemy, infura…).
_RANGE_ERRORS = ("range", "too many", "more than", "limit", "too large", "exceed")


class SubscriberError(Exception):
    """A subscriber raised: the batch is re-delivered after a backoff (at-least-once)."""


class EventWatcher:
    def __init__(
        self,
        w3: AsyncWeb3[Any],
        store: StateStore,
        decoder: LogDecoder[Any],
        *,
        name: str = "tao",
        start_block: int = 0,
        confirmations: int = 2,
        batch_blocks: int = 2000,
        reorg_window: int = 256,
        poll_interval_s: float = 1.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.w3 = w3
        self.store = store
        self.decoder = decoder
        self.name = name
        self.start_block = start_block
        self.confirmations = max(0, confirmations)
        self.batch_blocks = batch_blocks
        self._batch = batch_blocks
        self._pruned_at = -1
        self.reorg_window = reorg_window
        self.poll_interval_s = poll_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._subscribers: list[Subscriber] = []
        self._ready = False
        self._caught_up = False
        m = watcher_metrics(registry if registry is not None else CollectorRegistry())
        self._m = m
        self._m_head = m.head.labels(name)
        self._m_block = m.block.labels(name)
        self._m_lag = m.lag.labels(name)
        self._m_ready = m.ready.labels(name)
        self._m_reorgs = m.reorgs.labels(name)
        self._m_rpc = m.rpc_errors.labels(name)
        self._m_sub_errors = m.subscriber_errors.labels(name)
        self._log = log.bind(watcher=name)

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    @property
    def ready(self) -> bool:
        """False while the RPC is failing (``/readyz``)."""
        return self._ready

    @property
    def caught_up(self) -> bool:
        """True once the last poll delivered everything up to ``head - confirmations``."""
        return self._caught_up

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._log.info("watcher_ready" if ready else "watcher_not_ready")
        self._ready = ready
        self._m_ready.set(1 if ready else 0)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop``; RPC failures back off exponentially and never end the loop."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                caught_up = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except SubscriberError as exc:
                # Not the RPC's fault: stay ready, retry the batch after a backoff.
                failures += 1
                self._m_sub_errors.inc()
                self._log.error("watcher_subscriber_failed", error=repr(exc.__cause__))
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failures - 1))
            except Exception as exc:  # an RPC down or flapping: retry, never crash
                failures += 1
                self._m_rpc.inc()
                self._set_ready(False)
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failures - 1))
                delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
                self._log.warning("watcher_poll_failed", error=repr(exc), retry_in=delay)
            else:
                failures = 0
                self._set_ready(True)
                delay = 0 if not caught_up else self.poll_interval_s
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _block_hash(self, number: int) -> str | None:
        block = await self.w3.eth.get_block(number)
        return None if block is None else _hex(block["hash"])

    async def poll_once(self) -> bool:
        """One step: handle a reorg if any, deliver one batch. True when caught up."""
        head = int(await self.w3.eth.block_number)
        self._m_head.set(head)
        cursor = await self.store.run(self.store.get_cursor, self.name)
        if cursor is not None and cursor.block_number >= 0:
            on_chain = None
            if cursor.block_number <= head:
                on_chain = await self._block_hash(cursor.block_number)
            if on_chain != cursor.block_hash:
                await self._handle_reorg(cursor, head)
                return False
        done = cursor.block_number if cursor else self.start_block - 1
        target = head - self.confirmations
        self._m_lag.set(max(0, head - done))
        if done >= target:
            self._caught_up = True
            return True
        first, last = done + 1, min(target, done + self._batch)
        last_hash = await self._block_hash(last)
        try:
            logs = await self.w3.eth.get_logs(
                {
                    "fromBlock": first,
                    "toBlock": last,
                    "address": cast(Any, list(self.decoder.addresses)),
                    "topics": cast(Any, [list(self.decoder.topics)]),
                }
            )
        except Web3RPCError as exc:
            # Public RPCs cap eth_getLogs by range or result count: halve and retry (and keep
            # the smaller batch: a provider's limit does not change).
            text = str(exc).lower()
            if self._batch > 1 and any(m in text for m in _RANGE_ERRORS):
                self._batch = max(1, self._batch // 2)
                self._log.info("watcher_batch_shrunk", batch_blocks=self._batch)
                return False
            raise
        if last_hash is None or await self._block_hash(last) != last_hash:
            return False  # the chain moved under the query: retry from the same cursor
        raws = sorted((_raw(e) for e in logs), key=lambda r: (r["blockNumber"], r["logIndex"]))
        if any(r["blockNumber"] == last and r["blockHash"] != last_hash for r in raws):
            return False
        delivered: list[DeliveredLog] = []
        for raw in raws:
            event = self.decoder(raw)
            if event is None:
                continue
            await self._deliver(Delivery(event, raw=raw))
            self._m.events.labels(self.name, _event_name(event)).inc()
            delivered.append(
                DeliveredLog(raw["blockNumber"], raw["blockHash"], raw["logIndex"], raw)
            )
        await self.store.run(
            self.store.advance_cursor, Cursor(self.name, last, last_hash), delivered
        )
        if last - self._pruned_at >= 64:
            # This is only the reorg journal: keep what a reorg within the window can undo.
            # Subscribers keep what they need for longer themselves (the protocol driver's job
            # events live until each job is closed).
            await self.store.run(self.store.prune_delivered, self.name, last - self.reorg_window)
            self._pruned_at = last
        self._m_block.set(last)
        self._m_lag.set(max(0, head - last))
        self._caught_up = last >= target
        return self._caught_up

    async def _deliver(self, delivery: Delivery[Any]) -> None:
        for callback in self._subscribers:
            try:
                await callback(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise SubscriberError(f"{callback!r} failed on {delivery!r}") from exc

    async def _handle_reorg(self, cursor: Cursor, head: int) -> None:
        self._m_reorgs.inc()
        self._caught_up = False
        delivered = await self.store.run(
            self.store.delivered_logs, self.name, cursor.block_number - self.reorg_window
        )
        blocks = sorted({(d.block_number, d.block_hash) for d in delivered}, reverse=True)
        ancestor: Cursor | None = None
        for number, block_hash in blocks:
            if number <= head and await self._block_hash(number) == block_hash:
                ancestor = Cursor(self.name, number, block_hash)
                break
        if ancestor is None:
            # Nothing we delivered survived: assume blocks below the window are final.
            number = max(self.start_block - 1, cursor.block_number - self.reorg_window, -1)
            number = min(number, head)
            found = await self._block_hash(number) if number >= 0 else None
            ancestor = Cursor(self.name, number, found or "0x")
        retract = [d for d in delivered if d.block_number > ancestor.block_number]
        self._log.warning(
            "watcher_reorg",
            old_cursor=cursor.block_number,
            ancestor=ancestor.block_number,
            retracted=len(retract),
        )
        for d in reversed(retract):
            event = self.decoder(d.payload)
            if event is None:
                continue
            await self._deliver(Delivery(event, removed=True, raw=d.payload))
            self._m.retracted.labels(self.name, _event_name(event)).inc()
        await self.store.run(self.store.rewind_cursor, ancestor)
        self._m_block.set(ancestor.block_number)


def _event_name(event: Any) -> str:
    return event.name if isinstance(event, ChainEvent) else type(event).__name__
