"""py-libp2p 0.8.1 pubsub, hardened where a remote peer could bypass or exhaust it.

Each override names the library behaviour it replaces (measured; docs/p2p.md):

* **Validation cache** (``Pubsub.validation_cache``): keyed by (origin, seqno) for 300 s while
  the seen cache forgets ids after 120 s, so a replayed seqno with new bytes reused a cached
  "valid" and skipped the topic validator (issue 12, item 2).  Off: the seen cache already
  stops duplicates before validation, so the cache saved work only in the attack case.
* **One task per message**: the read loop spawns ``push_msg`` for every message of an RPC
  without a bound.  ``_is_subscribed_to_msg`` runs synchronously in that loop, before the
  spawn, so the per-peer admission (token bucket, in-flight cap, ban) sits there.
* **Equivocation map**: kept every valid message object until a heartbeat trimmed it to 500;
  here a bounded map of 32-byte fingerprints.
* **Log volume**: the library logs a warning per rate-limited, equivocating or undeliverable
  message; :func:`throttle_library_logs` keeps one line per interval per message template.
"""

from __future__ import annotations

import contextvars
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import blake3
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationCache, ValidationResult

from taonode.p2p.guard import LogThrottle, PeerGuard

# The peer whose pubsub stream the current read loop serves (set per reader task).
_FORWARDER: contextvars.ContextVar[ID | None] = contextvars.ContextVar(
    "taonode_p2p_forwarder", default=None
)

Refused = Callable[[str, str], None]
"""``(peer_id, reason)``: a message was dropped before any task was spawned for it."""


class _NoValidationCache(ValidationCache):
    def get(self, msg_id: bytes) -> ValidationResult | None:
        return None

    def put(self, msg_id: bytes, result: ValidationResult) -> None:
        pass


class GuardedPubsub(Pubsub):
    def __init__(
        self,
        host: Any,
        router: Any,
        *,
        guard: PeerGuard,
        on_refused: Refused,
        library_validation_cache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, router, **kwargs)
        self.guard = guard
        self._on_refused = on_refused
        if not library_validation_cache:
            self.validation_cache = _NoValidationCache()
        # Inbound pubsub streams being read, per peer (a reconnecting peer has two for a while).
        self.readers: dict[ID, int] = {}

    async def continuously_read_stream(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        token = _FORWARDER.set(peer)
        self.readers[peer] = self.readers.get(peer, 0) + 1
        try:
            await super().continuously_read_stream(stream)
        finally:
            _FORWARDER.reset(token)
            left = self.readers.get(peer, 1) - 1
            if left > 0:
                self.readers[peer] = left
            else:
                self.readers.pop(peer, None)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        """The library forgets *all* of a peer's subscriptions when any one of its streams
        fails (a failed write included).  When a peer reconnects during a backlog, the old
        connection's stream fails after the new stream's hello announced them again; the
        library re-opens its own stream but no longer knows the peer's topics, so it sends
        the peer nothing until the peer re-announces (issue 12, item 4: 80 s and more).  While
        another inbound stream of the peer is being read, its announcements stand: keep them."""
        live = self.readers.get(peer_id, 0) > 0
        topics = [t for t, peers in self.peer_topics.items() if peer_id in peers] if live else []
        super()._handle_dead_peer(peer_id)
        if topics and self._peer_is_connected(peer_id):
            for topic in topics:
                self.peer_topics.setdefault(topic, set()).add(peer_id)
            self._peer_subscription_count[peer_id] = len(topics)

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        if not super()._is_subscribed_to_msg(msg):
            return False
        peer = _FORWARDER.get()
        if peer is None:
            return True
        why = self.guard.admit(str(peer))
        if why is None:
            return True
        self._on_refused(str(peer), why)
        return False

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        try:
            if msg_forwarder != self.my_id:
                peer = str(msg_forwarder)
                if self.guard.banned(peer):
                    # Admitted before the ban; the validator's work is not spent on it.
                    self._on_refused(peer, "banned")
                    return
                scorer = getattr(self.router, "scorer", None)
                if scorer is not None and not scorer.allow_publish(
                    msg_forwarder, list(msg.topicIDs)
                ):
                    # The library's own score gate (below publish_threshold) drops these
                    # silently; the same check here, first, so the drop is counted.
                    self._on_refused(peer, "score_gate")
                    return
            await super().push_msg(msg_forwarder, msg)
        finally:
            if msg_forwarder != self.my_id:
                self.guard.done(str(msg_forwarder))


class BoundedGossipSub(GossipSub):
    def __init__(self, *args: Any, equivocation_entries: int = 8192, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._equivocation_entries = equivocation_entries
        self._fingerprints: OrderedDict[bytes, bytes] = OrderedDict()

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        key = bytes(msg.from_id) + bytes(msg.seqno)
        h = blake3.blake3()
        for topic in msg.topicIDs:
            h.update(topic.encode() + b"\x00")
        h.update(b"\x01" + bytes(msg.data))
        fingerprint = h.digest()
        seen = self._fingerprints.get(key)
        if seen is not None:
            if seen == fingerprint:
                return True
            if self.scorer is not None:
                self.scorer.penalize_equivocation(ID(msg.from_id), 100.0)
            return False
        self._fingerprints[key] = fingerprint
        while len(self._fingerprints) > self._equivocation_entries:
            self._fingerprints.popitem(last=False)
        return True


class _ThrottleFilter(logging.Filter):
    def __init__(self, throttle: LogThrottle) -> None:
        super().__init__()
        self.throttle = throttle

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        suppressed = self.throttle.allow(f"{record.name}:{record.msg}")
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} similar lines suppressed)"
            record.args = None
        return True


_THROTTLED = ("libp2p.pubsub.pubsub", "libp2p.pubsub.gossipsub", "libp2p.pubsub.rpc_queue")


def throttle_library_logs(interval_s: float = 10.0) -> None:
    """Idempotent: one shared filter on the library's chatty pubsub loggers."""
    for name in _THROTTLED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ThrottleFilter) for f in logger.filters):
            logger.addFilter(_ThrottleFilter(LogThrottle(interval_s)))
