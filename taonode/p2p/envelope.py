"""Signed, versioned application envelopes and their validation (pure: no libp2p, no IO).

Wire layout (version 1, all integers big-endian)::

    version u8 | kind u8 | timestamp_ms u64 | nonce 16B | sender 20B | body_len u32 | body | sig 65B

``body`` is canonical JSON (sorted keys, no spaces, bytes as ``0x`` hex) of one of the message
dataclasses below.  ``sig`` is an EIP-191 ``personal_sign`` by the node's *chain* key over
``keccak256(DOMAIN ‖ topic ‖ 0x00 ‖ everything before sig)``, so an envelope is bound to its topic
(no cross-topic replay) and to a staked address, on top of libp2p's own per-peer signing.
A vote additionally carries the EIP-712 ``Vote`` signature the dispute contract verifies.
"""

from __future__ import annotations

import enum
import json
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar, get_type_hints

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from taonode.protocol.votes import Verdict, VoteDomain, typed_vote
from taonode.signer import Signer

VERSION = 1
SIGNING_DOMAIN = b"taonode/p2p/envelope/v1"
_HEADER = struct.Struct(">BBQ16s20sI")
SIG_LEN = 65
MIN_LEN = _HEADER.size + SIG_LEN


class Rejection(enum.StrEnum):
    """Why an envelope was refused; each value is a metrics label."""

    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    VERSION = "version"
    SCHEMA = "schema"
    WRONG_TOPIC = "wrong_topic"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    BAD_SIGNATURE = "bad_signature"
    PEER_MISMATCH = "peer_mismatch"
    NOT_MEMBER = "not_member"
    NOT_REGISTERED = "not_registered"
    BAD_VOTE_SIGNATURE = "bad_vote_signature"
    INTERNAL = "internal"


class EnvelopeError(ValueError):
    def __init__(self, reason: Rejection, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


def _bytes32(name: str, value: bytes) -> None:
    if len(value) != 32:
        raise EnvelopeError(Rejection.SCHEMA, f"{name} must be 32 bytes")


# --------------------------------------------------------------------------------------------
# Message bodies.  Field types are limited to int, str, bool, bytes and tuples of str/bytes so the
# generic codec below can check them strictly (exact key set, exact JSON types).


@dataclass(frozen=True)
class NodeRecord:
    """Binds a chain address (the envelope sender) to a libp2p peer id, with what it offers."""

    KIND: ClassVar[int] = 1
    peer_id: str
    roles: tuple[str, ...]
    devices: tuple[str, ...]
    models: tuple[bytes, ...]
    addrs: tuple[str, ...]

    def __post_init__(self) -> None:
        for m in self.models:
            _bytes32("model", m)


@dataclass(frozen=True)
class ResultAnnouncement:
    """A prover's commitment to a job result, announced off chain ahead of confirmation."""

    KIND: ClassVar[int] = 2
    job_id: bytes
    model_id: bytes
    profile_id: bytes
    input_digest: bytes
    output_digest: bytes
    trace_root: bytes
    n_ops: int

    def __post_init__(self) -> None:
        for f in ("job_id", "model_id", "profile_id", "input_digest", "output_digest"):
            _bytes32(f, getattr(self, f))
        _bytes32("trace_root", self.trace_root)
        if self.n_ops < 0:
            raise EnvelopeError(Rejection.SCHEMA, "n_ops < 0")


@dataclass(frozen=True)
class DisputeNotice:
    """Dispute/committee coordination: a leaf was reached and this committee was drawn."""

    KIND: ClassVar[int] = 3
    dispute_id: bytes
    job_id: bytes
    op_index: int
    members: tuple[str, ...]
    deadline: int

    def __post_init__(self) -> None:
        _bytes32("dispute_id", self.dispute_id)
        _bytes32("job_id", self.job_id)


@dataclass(frozen=True)
class VoteMessage:
    """A committee member's vote: the EIP-712 signature the contract checks, gossiped."""

    KIND: ClassVar[int] = 4
    dispute_id: bytes
    verdict: int
    vote_signature: bytes

    def __post_init__(self) -> None:
        _bytes32("dispute_id", self.dispute_id)
        if self.verdict not in {int(v) for v in Verdict}:
            raise EnvelopeError(Rejection.SCHEMA, "unknown verdict")
        if len(self.vote_signature) != SIG_LEN:
            raise EnvelopeError(Rejection.SCHEMA, "vote signature must be 65 bytes")


Message = NodeRecord | ResultAnnouncement | DisputeNotice | VoteMessage
M = TypeVar("M", NodeRecord, ResultAnnouncement, DisputeNotice, VoteMessage)
MESSAGE_TYPES: dict[int, type[Message]] = {
    t.KIND: t for t in (NodeRecord, ResultAnnouncement, DisputeNotice, VoteMessage)
}


def _encode_value(v: object) -> object:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, tuple):
        return [_encode_value(x) for x in v]
    return v


def _decode_value(hint: object, v: object, name: str) -> object:
    if hint is bool:
        if not isinstance(v, bool):
            raise EnvelopeError(Rejection.SCHEMA, f"{name}: expected bool")
        return v
    if hint is int:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**256:
            raise EnvelopeError(Rejection.SCHEMA, f"{name}: expected uint")
        return v
    if hint is str:
        if not isinstance(v, str) or len(v) > 1024:
            raise EnvelopeError(Rejection.SCHEMA, f"{name}: expected str")
        return v
    if hint is bytes:
        if not isinstance(v, str) or not v.startswith("0x"):
            raise EnvelopeError(Rejection.SCHEMA, f"{name}: expected 0x hex")
        try:
            return bytes.fromhex(v[2:])
        except ValueError as e:
            raise EnvelopeError(Rejection.SCHEMA, f"{name}: bad hex") from e
    if hint == tuple[str, ...] or hint == tuple[bytes, ...]:
        inner = str if hint == tuple[str, ...] else bytes
        if not isinstance(v, list) or len(v) > 256:
            raise EnvelopeError(Rejection.SCHEMA, f"{name}: expected list")
        return tuple(_decode_value(inner, x, name) for x in v)
    raise TypeError(f"unsupported field type {hint!r}")  # a bug in a message definition


def encode_body(msg: Message) -> bytes:
    obj = {f.name: _encode_value(getattr(msg, f.name)) for f in fields(msg)}
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def decode_body(kind: int, body: bytes) -> Message:
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise EnvelopeError(Rejection.SCHEMA, f"unknown kind {kind}")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise EnvelopeError(Rejection.SCHEMA, "body is not JSON") from e
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    if not isinstance(obj, dict) or set(obj) != names:
        raise EnvelopeError(Rejection.SCHEMA, f"{cls.__name__}: wrong field set")
    kwargs: dict[str, Any] = {n: _decode_value(hints[n], obj[n], n) for n in names}
    try:
        return cls(**kwargs)
    except EnvelopeError:
        raise
    except (TypeError, ValueError) as e:
        raise EnvelopeError(Rejection.SCHEMA, str(e)) from e


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope.  ``sender`` is only trustworthy after :meth:`Validator.validate`."""

    kind: int
    timestamp_ms: int
    nonce: bytes
    sender: str
    body: Message
    body_bytes: bytes
    signature: bytes

    @property
    def signed_prefix(self) -> bytes:
        return _HEADER.pack(
            VERSION,
            self.kind,
            self.timestamp_ms,
            self.nonce,
            bytes.fromhex(self.sender[2:]),
            len(self.body_bytes),
        ) + bytes(self.body_bytes)


def signing_digest(topic: str, prefix: bytes) -> bytes:
    return keccak(SIGNING_DOMAIN + topic.encode() + b"\x00" + prefix)


def seal(
    signer: Signer,
    topic: str,
    msg: Message,
    *,
    now_ms: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encode and sign ``msg`` for ``topic`` with the node's chain key."""
    body = encode_body(msg)
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    prefix = _HEADER.pack(
        VERSION,
        msg.KIND,
        ts,
        nonce if nonce is not None else os.urandom(16),
        bytes.fromhex(signer.address[2:]),
        len(body),
    )
    prefix += body
    sig = signer.sign_message(encode_defunct(primitive=signing_digest(topic, prefix)))
    return prefix + sig


def parse(data: bytes) -> Envelope:
    """Structural decode only (no signature, freshness or membership checks)."""
    if len(data) < MIN_LEN:
        raise EnvelopeError(Rejection.MALFORMED, "too short")
    version, kind, ts, nonce, sender, body_len = _HEADER.unpack_from(data)
    if version != VERSION:
        raise EnvelopeError(Rejection.VERSION, f"version {version}")
    if _HEADER.size + body_len + SIG_LEN != len(data):
        raise EnvelopeError(Rejection.MALFORMED, "length mismatch")
    body_bytes = data[_HEADER.size : _HEADER.size + body_len]
    body = decode_body(kind, body_bytes)
    return Envelope(
        kind=kind,
        timestamp_ms=ts,
        nonce=nonce,
        sender=to_checksum_address(sender),
        body=body,
        body_bytes=body_bytes,
        signature=data[-SIG_LEN:],
    )


def sign_vote_with(
    signer: Signer, domain: VoteDomain, dispute_id: bytes, verdict: Verdict
) -> bytes:
    """EIP-712 vote signature through the :class:`Signer` interface (no raw key needed)."""
    typed = typed_vote(domain, dispute_id, verdict)
    return signer.sign_message(encode_typed_data(full_message=typed))


def recover_vote(domain: VoteDomain, vote: VoteMessage) -> str:
    typed = typed_vote(domain, vote.dispute_id, Verdict(vote.verdict))
    message = encode_typed_data(full_message=typed)
    return str(Account.recover_message(message, signature=vote.vote_signature))


# --------------------------------------------------------------------------------------------


class TopicKinds:
    """Which message kinds a topic carries; the validator rejects the rest as ``wrong_topic``."""

    NODES = "/tao/1/nodes"
    RESULTS = "/tao/1/results"
    DISPUTES = "/tao/1/disputes"
    # One long-lived topic for all disputes' votes, joined by every voter at start-up: a
    # per-dispute topic must first build its mesh, which took seconds with 21 voters on a
    # loaded 2-core host (measured; docs/p2p.md), and leaving topics churned GRAFT/PRUNE.
    VOTES = "/tao/1/votes"

    @staticmethod
    def allowed(topic: str) -> frozenset[int]:
        if topic == TopicKinds.NODES:
            return frozenset({NodeRecord.KIND})
        if topic == TopicKinds.RESULTS:
            return frozenset({ResultAnnouncement.KIND})
        if topic == TopicKinds.DISPUTES:
            return frozenset({DisputeNotice.KIND})
        if topic == TopicKinds.VOTES:
            return frozenset({VoteMessage.KIND})
        # Application-defined topics (e.g. interop tests) accept any known kind.
        return frozenset(MESSAGE_TYPES)


@dataclass
class ValidatorConfig:
    max_bytes: int = 64 * 1024
    freshness_s: float = 120.0
    max_future_s: float = 10.0
    replay_cache_size: int = 200_000
    # Kinds whose sender must pass the ``is_registered`` predicate (when one is set): votes
    # and node records.  Stops an unstaked key from filling the committee channel's
    # early-vote buffer or binding addresses to peer ids for free.
    registered_kinds: frozenset[int] = frozenset({NodeRecord.KIND, VoteMessage.KIND})


Registered = Callable[[str], bool]
"""``is_registered(checksum_address)``: is this a registered (staked) key?  Called in the p2p
thread for every gated envelope, so it must be a fast, non-blocking lookup (a cache the roles
keep current from the chain)."""


class Validator:
    """Every check an inbound envelope passes before anything acts on it.

    Order is cheapest first; the signature (≈ 0.1 ms of ECDSA recovery) runs only on messages
    that are well-formed, fresh and not yet seen.  Not thread-safe: it lives in the p2p thread,
    except :meth:`set_committee`, whose dict assignment is atomic under the GIL.
    """

    def __init__(
        self,
        config: ValidatorConfig | None = None,
        *,
        vote_domain: VoteDomain | None = None,
        clock: Callable[[], float] = time.time,
        is_registered: Registered | None = None,
    ) -> None:
        self.config = config or ValidatorConfig()
        self.vote_domain = vote_domain
        self.is_registered = is_registered
        self._clock = clock
        self._seen: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self._committees: dict[bytes, frozenset[str]] = {}

    def set_committee(self, dispute_id: bytes, members: frozenset[str]) -> None:
        self._committees[dispute_id] = frozenset(to_checksum_address(m) for m in members)

    def drop_committee(self, dispute_id: bytes) -> None:
        self._committees.pop(dispute_id, None)

    def committee(self, dispute_id: bytes) -> frozenset[str] | None:
        return self._committees.get(dispute_id)

    def validate(self, topic: str, data: bytes, *, origin_peer: str | None = None) -> Envelope:
        """Return the envelope or raise :class:`EnvelopeError` with the rejection reason."""
        cfg = self.config
        if len(data) > cfg.max_bytes:
            raise EnvelopeError(Rejection.OVERSIZE, f"{len(data)} > {cfg.max_bytes}")
        env = parse(data)
        if env.kind not in TopicKinds.allowed(topic):
            raise EnvelopeError(Rejection.WRONG_TOPIC, f"kind {env.kind} on {topic}")
        now = self._clock()
        age = now - env.timestamp_ms / 1000
        if age > cfg.freshness_s:
            raise EnvelopeError(Rejection.STALE, f"{age:.1f}s old")
        if age < -cfg.max_future_s:
            raise EnvelopeError(Rejection.FUTURE, f"{-age:.1f}s ahead")
        key = (env.sender, env.nonce)
        if key in self._seen:
            raise EnvelopeError(Rejection.REPLAY)
        # Before the signature: a lookup is cheaper than ECDSA recovery, and a claimed
        # registered sender is still proven by the signature below.
        registered = self.is_registered
        gated = registered is not None and env.kind in cfg.registered_kinds
        if gated and registered is not None and not registered(env.sender):
            raise EnvelopeError(Rejection.NOT_REGISTERED, env.sender)
        digest = signing_digest(topic, env.signed_prefix)
        try:
            signer = Account.recover_message(
                encode_defunct(primitive=digest), signature=env.signature
            )
        except Exception as e:  # malformed r/s/v values
            raise EnvelopeError(Rejection.BAD_SIGNATURE, str(e)) from e
        if signer != env.sender:
            raise EnvelopeError(Rejection.BAD_SIGNATURE, "signer is not the sender")
        self._check_semantics(env, origin_peer)
        self._remember(key, now)
        return env

    def _check_semantics(self, env: Envelope, origin_peer: str | None) -> None:
        body = env.body
        if isinstance(body, NodeRecord) and origin_peer is not None and body.peer_id != origin_peer:
            raise EnvelopeError(Rejection.PEER_MISMATCH, "record names another peer")
        if isinstance(body, VoteMessage):
            # Membership is enforced where the committee is known (its members, the aggregator,
            # the parties).  Other nodes relay a vote for an unknown dispute after the signature
            # checks, so a vote is always attributable to a staked address; the committee
            # channel filters by membership again before anything counts it.
            members = self._committees.get(body.dispute_id)
            if members is not None and env.sender not in members:
                raise EnvelopeError(Rejection.NOT_MEMBER, env.sender)
            if self.vote_domain is None:
                raise EnvelopeError(Rejection.INTERNAL, "no vote domain configured")
            try:
                voter = recover_vote(self.vote_domain, body)
            except Exception as e:
                raise EnvelopeError(Rejection.BAD_VOTE_SIGNATURE, str(e)) from e
            if voter != env.sender:
                raise EnvelopeError(Rejection.BAD_VOTE_SIGNATURE, "vote signed by another key")

    def _remember(self, key: tuple[str, bytes], now: float) -> None:
        # Entries older than the freshness window can go: such envelopes fail as stale anyway.
        self._seen[key] = now
        horizon = now - self.config.freshness_s - self.config.max_future_s
        while self._seen:
            k, t = next(iter(self._seen.items()))
            if t >= horizon and len(self._seen) <= self.config.replay_cache_size:
                break
            del self._seen[k]


def message_name(kind: int) -> str:
    cls = MESSAGE_TYPES.get(kind)
    return cls.__name__ if cls is not None else "unknown"


def as_mapping(msg: Message) -> Mapping[str, Any]:
    return {f.name: getattr(msg, f.name) for f in fields(msg)}
