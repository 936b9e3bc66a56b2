"""The p2p adapter: a py-libp2p host in its own trio thread, behind a typed asyncio API.

Why a thread and not a child process: see ``docs/p2p.md`` (measured event-loop lag).  In short,
a thread keeps blob payloads zero-copy and the API in one process; the heavy per-message work
(ECDSA recovery of the chain signature) runs in this thread, not on the asyncio loop.

Crossing threads: asyncio → trio via ``TrioToken.run_sync_soon`` (starts a task in the bridge's
nursery), trio → asyncio via ``loop.call_soon_threadsafe``.  Nothing else is shared, apart from
the validator's committee table (atomic dict assignment) and the metrics (thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import multiaddr
import structlog
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIP_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as GOSSIP_V11
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service
from prometheus_client import CollectorRegistry

from taonode.p2p import blob as blobproto
from taonode.p2p.envelope import (
    Envelope,
    EnvelopeError,
    Message,
    Registered,
    Rejection,
    Validator,
    ValidatorConfig,
    message_name,
    seal,
)
from taonode.p2p.gossip import BoundedGossipSub, GuardedPubsub, throttle_library_logs
from taonode.p2p.guard import AcceptedBytes, GuardConfig, LogThrottle, PeerGuard
from taonode.p2p.identity import load_or_create, peer_id_of
from taonode.p2p.metrics import P2PMetrics
from taonode.protocol.votes import VoteDomain
from taonode.signer import Signer

T = TypeVar("T")
M = TypeVar("M")
_FRAME = struct.Struct(">BI")


class P2PError(RuntimeError):
    """The p2p layer failed or is not running."""


class RequestError(P2PError):
    """A request/response exchange failed (remote error, timeout, protocol not supported)."""


@dataclass
class GossipConfig:
    """GossipSub tuning (see docs/p2p.md for the reasons)."""

    degree: int = 6
    degree_low: int = 4
    # Above the usual 12: when a mesh is over D_high the heartbeat PRUNEs, the pruned peer
    # re-GRAFTs at its next heartbeat and 0.8.1's GRAFT-flood check PRUNEs it again; with 22
    # peers on one topic and D_high=12 the mesh thrashed (measured, docs/p2p.md).
    degree_high: int = 24
    # 1 s instead of the library's 120 s: mesh repair and IHAVE gossip must act within a vote
    # round; adaptive gossip off because it stretches the heartbeat (notes, pitfall 3).
    heartbeat_s: int = 1
    # The library drops >10 msg/s per peer per topic (own publishes included) silently.
    max_msgs_per_topic_per_s: float = 200.0
    # v1.2 (IDONTWANT) costs an extra control message per publish for ~1 KB messages that
    # gain nothing from it; we speak v1.1 and v1.0 (js-libp2p speaks both).
    protocols: tuple[str, ...] = (str(GOSSIP_V11), str(GOSSIP_V10))
    # Seen-message cache: a message id is ignored for this long after it was first seen.
    seen_ttl_s: int = 120
    seen_sweep_s: int = 60
    # py-libp2p's validation-result cache outlives the seen cache and lets a replayed seqno
    # with new bytes skip the validator (docs/p2p.md); off unless a test turns it on.
    library_validation_cache: bool = False
    max_inbound_rpc_bytes: int = 4 * 1024 * 1024
    # The library's peer score: finite thresholds (all default to -inf).  Invalid messages
    # (P4) and protocol misbehaviour (P5) count against a peer; our own penalty score
    # (taonode.p2p.guard) enters as the application score (P6).  An honest peer scores 0.
    publish_threshold: float = -50.0
    gossip_threshold: float = -20.0
    graylist_threshold: float = -80.0
    equivocation_entries: int = 8192


@dataclass
class P2PConfig:
    key_file: Path
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    gossip: GossipConfig = field(default_factory=GossipConfig)
    validation: ValidatorConfig = field(default_factory=ValidatorConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    # Validated-but-not-yet-delivered envelopes, keyed by their bytes.
    accepted_entries: int = 8192
    # At most one warning line per interval for rejected envelopes (the rest at debug).
    reject_warn_interval_s: float = 10.0
    vote_domain: VoteDomain | None = None
    # Blob transfer limits (serving: slots per peer, a minimum rate; see blob.ServeLimits).
    max_blob_bytes: int = 256 * 1024 * 1024
    blob_idle_timeout_s: float = 10.0
    blob_timeout_s: float = 60.0
    max_concurrent_fetches: int = 4
    max_concurrent_serves: int = 8
    max_serves_per_peer: int = 2
    blob_min_rate_bps: float = 1024 * 1024
    blob_grace_s: float = 10.0
    # Generic request/response limits.
    max_request_bytes: int = 1024 * 1024
    request_timeout_s: float = 10.0
    # Per-subscription delivery queue; overflow is counted and dropped (gossip is lossy anyway).
    delivery_queue: int = 4096
    redial_initial_s: float = 0.5
    redial_max_s: float = 30.0
    start_timeout_s: float = 15.0
    stop_timeout_s: float = 5.0


@dataclass(frozen=True)
class Received(Generic[M]):
    """A validated inbound envelope: ``sender`` is the recovered chain address."""

    topic: str
    sender: str
    peer_id: str
    body: M
    timestamp_ms: int
    raw: bytes


@dataclass(frozen=True)
class PeerEvent:
    peer_id: str
    connected: bool


_CLOSED = object()


class Subscription(Generic[M]):
    """Async iterator over validated messages of one topic (and optionally one message type)."""

    def __init__(self, node: P2PNode, topic: str, kind: type[M] | None, maxsize: int) -> None:
        self._node = node
        self.topic = topic
        self._kind = kind
        self.queue: asyncio.Queue[Received[Any] | object] = asyncio.Queue(maxsize)

    def _accepts(self, item: Received[Any]) -> bool:
        return self._kind is None or isinstance(item.body, self._kind)

    def __aiter__(self) -> AsyncIterator[Received[M]]:
        return self

    async def __anext__(self) -> Received[M]:
        item = await self.queue.get()
        if item is _CLOSED:
            self.queue.put_nowait(_CLOSED)  # later readers stop too
            raise StopAsyncIteration
        assert isinstance(item, Received)
        return item

    async def get(self, timeout_s: float | None = None) -> Received[M]:
        return await asyncio.wait_for(self.__anext__(), timeout_s)

    def close(self) -> None:
        self._node._detach(self)

    def _close_queue(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSED)


class _Notifee(INotifee):
    def __init__(self, on_change: Callable[[str, bool], None]) -> None:
        self._on_change = on_change

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        self._on_change(str(conn.muxed_conn.peer_id), True)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._on_change(str(conn.muxed_conn.peer_id), False)

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass


RequestHandler = Callable[[str, bytes], Awaitable[bytes]]


class P2PNode:
    """The node's p2p adapter.

    ``start()`` runs the libp2p host in a thread named ``p2p-trio`` and returns once it listens;
    ``stop()`` tears it down within ``stop_timeout_s`` and joins the thread.  A crash on the trio
    side fails every pending call with :class:`P2PError` and completes :meth:`wait_failed`.
    """

    def __init__(
        self,
        config: P2PConfig,
        signer: Signer,
        registry: CollectorRegistry,
        *,
        blob_source: blobproto.BlobSource | None = None,
        blob_verifier: blobproto.Verifier = blobproto.blake3_verifier,
        is_registered: Registered | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.registry = registry
        self.metrics = P2PMetrics(registry)
        self.validator = Validator(
            config.validation, vote_domain=config.vote_domain, is_registered=is_registered
        )
        self.guard = PeerGuard(config.guard)
        self._accepted: AcceptedBytes[Envelope] = AcceptedBytes(config.accepted_entries)
        self._reject_log = LogThrottle(config.reject_warn_interval_s)
        self._reject_counts: dict[str, int] = {}
        throttle_library_logs()
        self._blob_source = blob_source
        self.metrics.blob_serving.set_function(lambda: self._serve_slots.active)
        self._blob_verifier = blob_verifier
        self._key_pair = load_or_create(config.key_file)
        self.peer_id = peer_id_of(self._key_pair)
        self.log = structlog.get_logger("taonode.p2p").bind(peer=self.peer_id)
        self.listen_addrs: list[str] = []
        self._subs: dict[str, list[Subscription[Any]]] = {}
        self._peer_listeners: list[asyncio.Queue[PeerEvent]] = []
        self._handlers: dict[str, RequestHandler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._tasks: trio.Nursery | None = None
        self._stop_evt: trio.Event | None = None
        self._failed: asyncio.Future[None] | None = None
        self._stopped: asyncio.Event | None = None
        self._host: Any = None
        self._pubsub: Any = None
        self._fetch_limit: trio.Semaphore | None = None
        self._serve_slots = blobproto.ServeSlots(
            blobproto.ServeLimits(
                slots=config.max_concurrent_serves,
                per_peer=config.max_serves_per_peer,
                idle_s=config.blob_idle_timeout_s,
                min_rate_bps=config.blob_min_rate_bps,
                grace_s=config.blob_grace_s,
            )
        )
        self._connected: set[str] = set()

    # ------------------------------------------------------------------ lifecycle (asyncio)

    async def start(self) -> None:
        if self._thread is not None:
            raise P2PError("already started")
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._failed = self._loop.create_future()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="p2p-trio", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.config.start_timeout_s)
        except BaseException:
            await self.stop()
            raise
        self.log.info("p2p started", addrs=self.listen_addrs)

    async def stop(self) -> None:
        """Orderly, time-bounded shutdown; idempotent.  Raises P2PError if the thread hangs."""
        thread = self._thread
        if thread is None:
            return
        token, evt = self._token, self._stop_evt
        if token is not None and evt is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(evt.set)
        assert self._stopped is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), self.config.stop_timeout_s)
        thread.join(timeout=1.0)  # the thread only has its last few statements left
        for subs in self._subs.values():
            for s in subs:
                s._close_queue()
        self._subs.clear()
        self._thread = None
        if thread.is_alive():
            raise P2PError("p2p thread did not stop in time")
        self.log.info("p2p stopped")

    async def wait_failed(self) -> None:
        """Completes (raising the cause) only if the trio side dies while not being stopped."""
        assert self._failed is not None, "start() first"
        await asyncio.shield(self._failed)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ public API (asyncio)

    async def publish(self, topic: str, msg: Message) -> bytes:
        """Sign ``msg`` with the chain key and gossip it; returns the envelope bytes."""
        data = seal(self.signer, topic, msg)
        await self.publish_bytes(topic, data)
        self.metrics.messages_out.labels(message_name(msg.KIND)).inc()
        return data

    async def publish_bytes(self, topic: str, data: bytes) -> None:
        """Gossip pre-built envelope bytes as they are (relaying, tests).  Not validated here."""

        async def go() -> None:
            await self._pubsub.publish(topic, data)

        await self._call(go)

    @overload
    async def subscribe(self, topic: str) -> Subscription[Message]: ...
    @overload
    async def subscribe(self, topic: str, kind: type[M]) -> Subscription[M]: ...

    async def subscribe(self, topic: str, kind: type[Any] | None = None) -> Subscription[Any]:
        """Join ``topic``; the iterator yields validated envelopes (of type ``kind`` if given)."""
        sub: Subscription[Any] = Subscription(self, topic, kind, self.config.delivery_queue)
        first = topic not in self._subs
        self._subs.setdefault(topic, []).append(sub)
        if first:
            try:
                await self._call(lambda: self._t_join(topic))
            except BaseException:
                self._subs.pop(topic, None)
                raise
        return sub

    def _detach(self, sub: Subscription[Any]) -> None:
        subs = self._subs.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
        sub._close_queue()
        if not subs and sub.topic in self._subs:
            del self._subs[sub.topic]
            token = self._token
            if token is not None and self.running:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._t_spawn, self._t_leave, sub.topic)

    async def peers(self) -> list[str]:
        return await self._call(self._t_peers)

    async def connect(self, addr: str, timeout_s: float = 10.0) -> str:
        """Dial a ``/ip4/…/tcp/…/p2p/<id>`` address once; returns the peer id."""

        async def go() -> str:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            with trio.fail_after(timeout_s):
                await self._host.connect(info)
            return str(info.peer_id)

        return await self._call(go)

    def peer_events(self, maxsize: int = 256) -> asyncio.Queue[PeerEvent]:
        """A queue of connect/disconnect events from now on."""
        q: asyncio.Queue[PeerEvent] = asyncio.Queue(maxsize)
        self._peer_listeners.append(q)
        return q

    def set_registered(self, is_registered: Registered | None) -> None:
        """Install (or replace) the registered-key predicate; see :data:`Registered`."""
        self.validator.is_registered = is_registered

    def set_committee(self, dispute_id: bytes, members: frozenset[str] | set[str]) -> None:
        """Membership for the dispute's vote topic: only these addresses may vote."""
        self.validator.set_committee(dispute_id, frozenset(members))

    def drop_committee(self, dispute_id: bytes) -> None:
        self.validator.drop_committee(dispute_id)

    async def fetch_blob(
        self, peer_id: str, digest: bytes, *, max_bytes: int | None = None
    ) -> bytes:
        """Fetch and verify a blob; raises :class:`~taonode.p2p.blob.BlobError` subclasses."""
        limit = self.config.max_blob_bytes if max_bytes is None else max_bytes
        t0 = time.perf_counter()
        try:
            payload = await self._call(lambda: self._t_fetch(peer_id, digest, limit))
        except blobproto.BlobError as e:
            self.metrics.blob_failures.labels(e.reason).inc()
            raise
        self.metrics.blob_seconds.observe(time.perf_counter() - t0)
        self.metrics.blob_bytes.labels("in").inc(len(payload))
        return payload

    def set_handler(self, protocol: str, handler: RequestHandler) -> None:
        """Serve ``protocol`` with an asyncio handler ``(peer_id, request) -> response``."""
        self._handlers[protocol] = handler
        if self.running:
            token = self._token
            assert token is not None
            token.run_sync_soon(self._t_register_handler, protocol)

    async def request(
        self, peer_id: str, protocol: str, data: bytes, timeout_s: float | None = None
    ) -> bytes:
        """One request/response exchange on a fresh stream."""
        t = self.config.request_timeout_s if timeout_s is None else timeout_s
        return await self._call(lambda: self._t_request(peer_id, protocol, data, t))

    # ------------------------------------------------------------------ bridge internals

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` as a task in the trio thread and await its result in asyncio."""
        loop, token = self._loop, self._token
        if loop is None or token is None or not self.running:
            raise P2PError("p2p node is not running")
        fut: asyncio.Future[T] = loop.create_future()
        scope_box: list[trio.CancelScope] = []

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        async def runner() -> None:
            done = False
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                try:
                    result = await fn()
                    loop.call_soon_threadsafe(settle, True, result)
                    done = True
                except Exception as e:
                    loop.call_soon_threadsafe(settle, False, _surface(e))
                    done = True
                finally:
                    if not done:
                        with contextlib.suppress(RuntimeError):
                            loop.call_soon_threadsafe(
                                settle, False, P2PError("p2p call cancelled (shutting down)")
                            )

        def start() -> None:
            if self._tasks is None:
                loop.call_soon_threadsafe(settle, False, P2PError("p2p node is stopping"))
                return
            self._tasks.start_soon(runner)

        try:
            token.run_sync_soon(start)
        except trio.RunFinishedError:
            raise P2PError("p2p node is not running") from None
        try:
            return await fut
        except asyncio.CancelledError:
            if scope_box:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(scope_box[0].cancel)
            raise

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed at interpreter exit
                loop.call_soon_threadsafe(fn, *args)

    def _thread_main(self, ready: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            trio.run(self._t_main, ready)
        except BaseException as e:
            error = e
        finally:
            self._token = None
            self._tasks = None

        def finish() -> None:
            if not ready.done():
                ready.set_exception(P2PError(f"p2p failed to start: {error!r}"))
            failed = self._failed
            if error is not None and failed is not None and not failed.done():
                failed.set_exception(P2PError(f"p2p thread died: {error!r}"))
            for subs in self._subs.values():
                for s in subs:
                    s._close_queue()
            if self._stopped is not None:
                self._stopped.set()

        if error is not None:
            self.log.error("p2p thread died", error=repr(error))
        self._post(finish)

    # ------------------------------------------------------------------ trio side

    async def _t_main(self, ready: asyncio.Future[None]) -> None:
        cfg = self.config
        kp = self._key_pair
        listen = [multiaddr.Multiaddr(a) for a in cfg.listen]
        # Noise only: the library also offers PLAINTEXT, SECIO and TLS unless told otherwise.
        sec = {NOISE_ID: NoiseTransport(kp, noise_privkey=new_x25519().private_key)}
        host = new_host(key_pair=kp, sec_opt=sec, muxer_preference="YAMUX", listen_addrs=listen)
        g = cfg.gossip
        guard = self.guard
        score = ScoreParams(
            p4_invalid_messages=TopicScoreParams(weight=1.0, cap=100.0, decay=0.9),
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_decay=0.9,
            p6_appl_slack_weight=1.0,
            app_specific_score_fn=lambda peer: -guard.score(str(peer)),
            publish_threshold=g.publish_threshold,
            gossip_threshold=g.gossip_threshold,
            graylist_threshold=g.graylist_threshold,
        )
        router = BoundedGossipSub(
            [TProtocol(p) for p in g.protocols],
            degree=g.degree,
            degree_low=g.degree_low,
            degree_high=g.degree_high,
            heartbeat_interval=g.heartbeat_s,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=g.max_msgs_per_topic_per_s,
            # IP diversity is meaningless on one host (tests, devnet) and needs peer scoring.
            eclipse_protection_enabled=False,
            score_params=score,
            equivocation_entries=g.equivocation_entries,
        )
        pubsub = GuardedPubsub(
            host,
            router,
            guard=guard,
            on_refused=self._t_refused,
            library_validation_cache=g.library_validation_cache,
            seen_ttl=g.seen_ttl_s,
            sweep_interval=g.seen_sweep_s,
            max_inbound_rpc_size=g.max_inbound_rpc_bytes,
        )
        self._host, self._pubsub = host, pubsub
        self._fetch_limit = trio.Semaphore(cfg.max_concurrent_fetches)
        self._stop_evt = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        try:
            # Pubsub must be running before the host accepts streams (notes, pitfall 1).
            async with (
                background_trio_service(pubsub),
                background_trio_service(router),
                host.run(listen),
                trio.open_nursery() as tasks,
            ):
                self._tasks = tasks
                host.get_network().register_notifee(_Notifee(self._t_peer_change))
                host.set_stream_handler(TProtocol(blobproto.PROTOCOL), self._t_serve_blob)
                for proto in list(self._handlers):
                    self._t_register_handler(proto)
                for topic in list(self._subs):
                    await self._t_join(topic)
                for addr in cfg.bootstrap:
                    tasks.start_soon(self._t_redial, addr)
                self.listen_addrs = [str(a) for a in host.get_addrs()]
                self._post(_resolve, ready)
                await self._stop_evt.wait()
                self._tasks = None
                tasks.cancel_scope.cancel()
        finally:
            # The seen-message cache runs a plain OS thread; without this it outlives us
            # (notes, pitfall 9).
            pubsub.seen_messages.stop()

    def _t_spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tasks is not None:
            self._tasks.start_soon(fn, *args)

    async def _t_peers(self) -> list[str]:
        return [str(p) for p in self._host.get_connected_peers()]

    def _t_peer_change(self, peer: str, connected: bool) -> None:
        if connected and self.guard.banned(peer):
            self._t_spawn(self._t_disconnect, peer)  # a banned peer that dialled back in
            return
        if connected:
            self._connected.add(peer)
        else:
            # A peer can hold several connections; it is gone when none is left.
            still = any(str(p) == peer for p in self._host.get_connected_peers())
            if still:
                return
            self._connected.discard(peer)
        self.metrics.peers.set(len(self._connected))
        self._post(self._emit_peer_event, PeerEvent(peer, connected))

    def _emit_peer_event(self, ev: PeerEvent) -> None:
        for q in self._peer_listeners:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(ev)

    async def _t_redial(self, addr: str) -> None:
        """Keep a bootstrap peer connected (the library forgets it after 3 failed dials)."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        backoff = self.config.redial_initial_s
        log = self.log.bind(bootstrap=str(info.peer_id))
        while True:
            if info.peer_id in self._host.get_connected_peers():
                backoff = self.config.redial_initial_s
                await trio.sleep(1.0)
                continue
            try:
                # The swarm refuses, for 60 s, to dial a peer whose addresses all failed once;
                # a bootstrap peer that restarts must be redialled on our schedule instead.
                network = self._host.get_network()
                if hasattr(network, "unblock_peer"):
                    network.unblock_peer(info.peer_id)
                self._host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
                with trio.fail_after(10):
                    await self._host.connect(info)
                self.metrics.dials.labels("ok").inc()
                log.info("bootstrap connected")
                backoff = self.config.redial_initial_s
            except Exception as e:
                self.metrics.dials.labels("failed").inc()
                log.debug("bootstrap dial failed", error=repr(e), retry_in=backoff)
                # Full jitter keeps restarted peers from redialling in lockstep.
                await trio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311
                backoff = min(backoff * 2, self.config.redial_max_s)

    async def _t_join(self, topic: str) -> None:
        pubsub = self._pubsub

        def validate(forwarder: ID, msg: Any) -> bool:
            origin = str(ID(msg.from_id))
            if origin == self.peer_id:
                return True  # our own publish: built and signed here
            data = bytes(msg.data)
            try:
                env = self.validator.validate(topic, data, origin_peer=origin)
            except EnvelopeError as e:
                self._t_reject(str(forwarder), e.reason.value, topic=topic, origin=origin)
                return False
            except Exception as e:  # never let a validator bug kill the pubsub task
                self._t_reject(str(forwarder), Rejection.INTERNAL.value, error=repr(e))
                return False
            # Delivery hands out only these exact bytes (see _t_pump).
            self._accepted.put(data, env)
            return True

        pubsub.set_topic_validator(topic, validate, False)
        sub = await pubsub.subscribe(topic)
        self._t_spawn(self._t_pump, topic, sub)

    async def _t_leave(self, topic: str) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.unsubscribe(topic)
        self._pubsub.remove_topic_validator(topic)

    def _t_reject(self, peer: str, reason: str, **fields: Any) -> None:
        """Count, penalize and log a refused message: debug per message, and at most one
        warning per interval with the counts (10,000 hostile messages are a few lines)."""
        self.metrics.rejected.labels(reason).inc()
        self._reject_counts[reason] = self._reject_counts.get(reason, 0) + 1
        self.log.debug("envelope rejected", reason=reason, forwarder=peer, **fields)
        if self._reject_log.allow("rejected") is not None:
            counts, self._reject_counts = self._reject_counts, {}
            self.log.warning("envelopes rejected", counts=counts, last_forwarder=peer)
        if reason != Rejection.INTERNAL.value and self.guard.penalize(peer, reason):
            self._t_ban(peer)

    def _t_refused(self, peer: str, reason: str) -> None:
        """A message dropped by admission control, before any task was spawned for it."""
        self.metrics.rejected.labels(reason).inc()
        if reason == "rate_limited" and self.guard.check_ban(peer):
            self._t_ban(peer)

    def _t_ban(self, peer: str) -> None:
        self.metrics.bans.inc()
        if self._reject_log.allow(f"ban:{peer}") is not None:
            self.log.warning(
                "peer banned",
                peer_id=peer,
                score=round(self.guard.score(peer), 1),
                ban_s=self.config.guard.ban_s,
            )
        self._t_spawn(self._t_disconnect, peer)

    async def _t_disconnect(self, peer: str) -> None:
        with contextlib.suppress(Exception):
            await self._host.disconnect(ID.from_base58(peer))

    async def _t_pump(self, topic: str, sub: Any) -> None:
        async for msg in sub:
            origin = str(ID(msg.from_id))
            if origin == self.peer_id:
                continue  # py-libp2p hands our own publishes back to us
            # Only bytes the validator accepted are delivered: the library may hand us a
            # message whose validation it skipped (a cached verdict for the same seqno).
            env = self._accepted.take(bytes(msg.data))
            if env is None:
                self._t_reject(str(origin), "unvalidated", topic=topic)
                continue
            item: Received[Any] = Received(
                topic=topic,
                sender=env.sender,
                peer_id=origin,
                body=env.body,
                timestamp_ms=env.timestamp_ms,
                raw=bytes(msg.data),
            )
            self.metrics.messages_in.labels(message_name(env.kind)).inc()
            self._post(self._deliver, topic, item)

    def _deliver(self, topic: str, item: Received[Any]) -> None:
        for s in self._subs.get(topic, []):
            if not s._accepts(item):
                continue
            try:
                s.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.metrics.dropped.inc()

    async def _t_serve_blob(self, stream: Any) -> None:
        peer = str(stream.muxed_conn.peer_id)
        m = self.metrics
        try:
            if self._blob_source is None:
                await stream.write(struct.pack(">BQ", blobproto.NOT_FOUND, 0))
                m.blob_served.labels("not_found").inc()
                return
            # A source may answer per asking peer (``for_peer``): who asks is part of serving.
            source = self._blob_source
            for_peer = getattr(source, "for_peer", None)
            if for_peer is not None:
                source = for_peer(peer)
            out = await blobproto.serve(stream, peer, source, self._serve_slots)
            m.blob_served.labels(out.outcome).inc()
            m.blob_bytes.labels("out").inc(out.sent)
        except Exception as e:
            reason = e.reason if isinstance(e, blobproto.BlobError) else "error"
            m.blob_served.labels(reason).inc()
            self.log.debug("blob serve failed", peer_id=peer, error=repr(e))
            with contextlib.suppress(Exception):
                await stream.reset()
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    async def _t_fetch(self, peer_id: str, digest: bytes, limit: int) -> bytes:
        assert self._fetch_limit is not None
        async with self._fetch_limit:
            try:
                with trio.fail_after(self.config.blob_timeout_s):
                    stream = await self._host.new_stream(
                        ID.from_base58(peer_id), [TProtocol(blobproto.PROTOCOL)]
                    )
                    try:
                        return await blobproto.fetch(
                            stream,
                            digest,
                            limit,
                            self._blob_verifier,
                            self.config.blob_idle_timeout_s,
                        )
                    finally:
                        with contextlib.suppress(Exception):
                            await stream.close()
            except trio.TooSlowError as e:
                raise blobproto.BlobTimeout(digest.hex()) from e
            except blobproto.BlobError:
                raise
            except Exception as e:
                raise blobproto.BlobError(f"fetch from {peer_id} failed: {e!r}") from e

    def _t_register_handler(self, protocol: str) -> None:
        async def handle(stream: Any) -> None:
            await self._t_serve_request(protocol, stream)

        self._host.set_stream_handler(TProtocol(protocol), handle)

    async def _t_serve_request(self, protocol: str, stream: Any) -> None:
        loop, token = self._loop, trio.lowlevel.current_trio_token()
        assert loop is not None
        peer = str(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(self.config.request_timeout_s):
                hdr = await blobproto.read_exactly(stream, _FRAME.size, 5.0)
                _, n = _FRAME.unpack(hdr)
                if n > self.config.max_request_bytes:
                    raise RequestError("request too large")
                data = await blobproto.read_exactly(stream, n, 5.0)
                handler = self._handlers[protocol]
                cf = asyncio.run_coroutine_threadsafe(_as_coro(handler(peer, data)), loop)
                done = trio.Event()
                cf.add_done_callback(lambda _: token.run_sync_soon(done.set))
                try:
                    await done.wait()
                finally:
                    cf.cancel()
                try:
                    out, status = cf.result(), 0
                except Exception as e:
                    out, status = repr(e).encode()[:4096], 1
            await stream.write(_FRAME.pack(status, len(out)) + out)
        except Exception as e:
            self.log.info("request handler failed", protocol=protocol, error=repr(e))
            with contextlib.suppress(Exception):
                await stream.reset()
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    async def _t_request(self, peer_id: str, protocol: str, data: bytes, timeout_s: float) -> bytes:
        timeout = timeout_s
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
                try:
                    await stream.write(_FRAME.pack(0, len(data)) + data)
                    status, n = _FRAME.unpack(
                        await blobproto.read_exactly(stream, _FRAME.size, timeout)
                    )
                    if n > self.config.max_request_bytes:
                        raise RequestError("response too large")
                    out = await blobproto.read_exactly(stream, n, timeout)
                finally:
                    with contextlib.suppress(Exception):
                        await stream.close()
        except trio.TooSlowError as e:
            raise RequestError(f"{protocol} to {peer_id}: timeout") from e
        except RequestError:
            raise
        except Exception as e:
            raise RequestError(f"{protocol} to {peer_id}: {e!r}") from e
        if status != 0:
            raise RequestError(
                f"{protocol} handler error at {peer_id}: {out.decode(errors='replace')}"
            )
        return out


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


def _surface(e: Exception) -> Exception:
    """Exceptions cross the thread as they are; trio-specific ones become P2PError."""
    if isinstance(e, trio.TooSlowError):
        return P2PError("timed out in the p2p thread")
    if isinstance(e, (trio.Cancelled, trio.RunFinishedError)):
        return P2PError(repr(e))
    return e
