"""Per-peer gossip hygiene (pure: no libp2p, no IO; the p2p thread calls it).

* :class:`PeerGuard`: a token bucket and an in-flight cap per forwarding peer, checked before
  the library spawns a task for a message, plus a decaying penalty score fed by validation
  failures; a peer whose score crosses ``ban_score`` is banned (the node disconnects it).
* :class:`AcceptedBytes`: what the topic validator accepted, keyed by a hash of the exact
  bytes, so that delivery can refuse anything the validator did not see.
* :class:`LogThrottle`: at most one warning per interval per key, with a count of the rest.

Every map here is bounded: a remote peer must not be able to grow our memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import blake3

T = TypeVar("T")

# Penalty points per validation failure, by rejection reason.  Reasons an honest relay can
# cause (our clock or committee view differs from its view) cost little; forgeries cost a lot.
DEFAULT_PENALTIES: dict[str, float] = {
    "oversize": 10.0,
    "malformed": 10.0,
    "version": 2.0,
    "schema": 10.0,
    "wrong_topic": 10.0,
    "stale": 0.2,
    "future": 0.2,
    "replay": 2.0,
    "bad_signature": 20.0,
    "peer_mismatch": 20.0,
    "not_member": 0.2,
    "not_registered": 0.5,
    "bad_vote_signature": 20.0,
    "unvalidated": 20.0,
    # Small: a relay's rate includes every duplicate it forwards, so an honest one can brush
    # the limit under a burst; a flood (thousands per second) still crosses the line in ~1 s.
    "rate_limited": 0.25,
    "internal": 0.0,
}


@dataclass
class GuardConfig:
    # Per forwarding peer, all topics together, duplicates included (they are counted before
    # the seen cache drops them).  A committee of 21 voters re-broadcasting plus results and
    # records stays far below this (docs/p2p.md); a flood does not.
    rate_per_s: float = 200.0
    burst: float = 1000.0
    # Messages of one peer being validated/forwarded at once (each is a trio task).
    max_inflight_per_peer: int = 64
    max_inflight: int = 2048
    # Score: penalty points decay with this half-life; at ``ban_score`` the peer is banned.
    half_life_s: float = 30.0
    ban_score: float = 100.0
    ban_s: float = 300.0
    max_peers: int = 4096
    penalties: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))


@dataclass
class _PeerState:
    tokens: float
    stamp: float
    penalty: float = 0.0
    penalty_stamp: float = 0.0
    inflight: int = 0
    banned_until: float = 0.0


class PeerGuard:
    """Admission and scoring per remote peer (by peer id string).  Not thread-safe: the p2p
    thread owns it."""

    def __init__(
        self, config: GuardConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or GuardConfig()
        self._clock = clock
        self._peers: OrderedDict[str, _PeerState] = OrderedDict()
        self.inflight = 0

    def _state(self, peer: str, now: float) -> _PeerState:
        st = self._peers.get(peer)
        if st is None:
            st = _PeerState(tokens=self.config.burst, stamp=now, penalty_stamp=now)
            self._peers[peer] = st
            self._evict()
        else:
            self._peers.move_to_end(peer)
        return st

    def _evict(self) -> None:
        # Oldest-touched first, but never a banned peer nor one with tasks in flight (their
        # counters must stay right); beyond twice the bound, evict regardless.
        limit = self.config.max_peers
        if len(self._peers) <= limit:
            return
        now = self._clock()
        for peer in list(self._peers):
            if len(self._peers) <= limit:
                return
            st = self._peers[peer]
            if (st.banned_until <= now and st.inflight == 0) or len(self._peers) > 2 * limit:
                self.inflight -= st.inflight
                del self._peers[peer]

    def admit(self, peer: str) -> str | None:
        """``None`` if the message may be processed (then call :meth:`done`), else why not."""
        cfg, now = self.config, self._clock()
        st = self._state(peer, now)
        if st.banned_until > now:
            return "banned"
        st.tokens = min(cfg.burst, st.tokens + (now - st.stamp) * cfg.rate_per_s)
        st.stamp = now
        if st.tokens < 1.0:
            self._add_penalty(st, cfg.penalties.get("rate_limited", 0.0), now)
            return "rate_limited"
        if st.inflight >= cfg.max_inflight_per_peer or self.inflight >= cfg.max_inflight:
            return "inflight"
        st.tokens -= 1.0
        st.inflight += 1
        self.inflight += 1
        return None

    def done(self, peer: str) -> None:
        st = self._peers.get(peer)
        if st is not None and st.inflight > 0:
            st.inflight -= 1
            self.inflight -= 1

    def _add_penalty(self, st: _PeerState, amount: float, now: float) -> None:
        st.penalty = self._decayed(st, now) + amount
        st.penalty_stamp = now

    def _decayed(self, st: _PeerState, now: float) -> float:
        return st.penalty * math.pow(0.5, (now - st.penalty_stamp) / self.config.half_life_s)

    def penalize(self, peer: str, reason: str) -> bool:
        """Count a failure against ``peer``; ``True`` when this bans it (disconnect it now)."""
        now = self._clock()
        st = self._state(peer, now)
        self._add_penalty(st, self.config.penalties.get(reason, 1.0), now)
        if st.banned_until <= now and st.penalty >= self.config.ban_score:
            st.banned_until = now + self.config.ban_s
            return True
        return False

    def check_ban(self, peer: str) -> bool:
        """Ban a peer whose score crossed the line through rate limiting alone."""
        now = self._clock()
        st = self._peers.get(peer)
        if st is None or st.banned_until > now or self._decayed(st, now) < self.config.ban_score:
            return False
        st.banned_until = now + self.config.ban_s
        return True

    def banned(self, peer: str) -> bool:
        st = self._peers.get(peer)
        return st is not None and st.banned_until > self._clock()

    def score(self, peer: str) -> float:
        """Penalty points now (0 for a well-behaved peer; higher is worse)."""
        st = self._peers.get(peer)
        return 0.0 if st is None else self._decayed(st, self._clock())

    def __len__(self) -> int:
        return len(self._peers)


class AcceptedBytes(Generic[T]):
    """Values the validator produced, keyed by BLAKE3 of the exact bytes it checked.

    Delivery takes the entry for the bytes it is about to deliver; bytes without one were
    never validated (py-libp2p reuses a cached verdict by sender and seqno: issue 12, item 2)
    and are dropped.  Bounded: an entry not taken within ``size`` acceptances is forgotten.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._items: OrderedDict[bytes, T] = OrderedDict()

    @staticmethod
    def key(data: bytes) -> bytes:
        return bytes(blake3.blake3(data).digest())

    def put(self, data: bytes, value: T) -> None:
        self._items[self.key(data)] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def take(self, data: bytes) -> T | None:
        return self._items.pop(self.key(data), None)

    def __len__(self) -> int:
        return len(self._items)


class LogThrottle:
    """At most one line per ``interval_s`` per key; the caller logs the suppressed count."""

    def __init__(
        self,
        interval_s: float = 10.0,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, key: str) -> int | None:
        """The number of suppressed events since the last allowed one, or ``None`` to stay
        quiet now."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return 0 if last is None else last[1]
