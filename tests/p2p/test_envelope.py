"""Envelope encoding and every validation rejection, without a network."""

from __future__ import annotations

import os
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taonode.p2p.envelope import (
    DisputeNotice,
    EnvelopeError,
    Message,
    NodeRecord,
    Rejection,
    ResultAnnouncement,
    TopicKinds,
    Validator,
    ValidatorConfig,
    VoteMessage,
    parse,
    seal,
    sign_vote_with,
)
from taonode.protocol.votes import Verdict, VoteDomain, dispute_id, recover_voter
from taonode.signer import LocalSigner

DOMAIN = VoteDomain(chain_id=31337, verifying_contract="0x" + "11" * 20)
DISPUTE = bytes(range(32))
RESULTS = TopicKinds.RESULTS


def _signer() -> LocalSigner:
    return LocalSigner(os.urandom(32))


def _result(n: int = 3) -> ResultAnnouncement:
    return ResultAnnouncement(
        job_id=b"\x01" * 32,
        model_id=b"\x02" * 32,
        profile_id=b"\x03" * 32,
        input_digest=b"\x04" * 32,
        output_digest=b"\x05" * 32,
        trace_root=b"\x06" * 32,
        n_ops=n,
    )


def _reason(v: Validator, topic: str, data: bytes, origin: str | None = None) -> Rejection:
    with pytest.raises(EnvelopeError) as e:
        v.validate(topic, data, origin_peer=origin)
    return e.value.reason


def test_roundtrip_every_kind_succeeds() -> None:
    s = _signer()
    v = Validator(vote_domain=DOMAIN)
    v.set_committee(DISPUTE, frozenset({s.address}))
    vote_sig = sign_vote_with(s, DOMAIN, DISPUTE, Verdict.WITHIN_TOLERANCE)
    cases: list[tuple[str, Message]] = [
        (TopicKinds.NODES, NodeRecord("12D3KooWabc", ("voter",), ("cpu",), (b"\x07" * 32,), ())),
        (RESULTS, _result()),
        (TopicKinds.DISPUTES, DisputeNotice(DISPUTE, b"\x01" * 32, 5, (s.address,), 99)),
        (TopicKinds.VOTES, VoteMessage(DISPUTE, 3, vote_sig)),
    ]
    for topic, msg in cases:
        env = v.validate(topic, seal(s, topic, msg), origin_peer="12D3KooWabc")
        assert env.body == msg
        assert env.sender == s.address


def test_vote_signature_is_the_contracts_eip712() -> None:
    s = _signer()
    sig = sign_vote_with(s, DOMAIN, DISPUTE, Verdict.EMPIRICAL_VIOLATION)
    assert recover_voter(DOMAIN, DISPUTE, Verdict.EMPIRICAL_VIOLATION, sig) == s.address


def test_each_hostile_envelope_is_rejected_with_its_reason() -> None:
    s, other = _signer(), _signer()
    now = [1_000_000.0]
    v = Validator(ValidatorConfig(max_bytes=4096), vote_domain=DOMAIN, clock=lambda: now[0])
    ms = int(now[0] * 1000)
    good = seal(s, RESULTS, _result(), now_ms=ms)

    assert _reason(v, RESULTS, good + b"x" * 5000) is Rejection.OVERSIZE
    assert _reason(v, RESULTS, b"\x01\x02") is Rejection.MALFORMED
    assert _reason(v, RESULTS, b"\x02" + good[1:]) is Rejection.VERSION
    assert _reason(v, RESULTS, good[:-70] + good[-65:]) is Rejection.MALFORMED
    bad_kind = bytearray(good)
    bad_kind[1] = 77
    assert _reason(v, RESULTS, bytes(bad_kind)) is Rejection.SCHEMA
    assert _reason(v, TopicKinds.NODES, good) is Rejection.WRONG_TOPIC
    stale = seal(s, RESULTS, _result(), now_ms=ms - 121_000)
    assert _reason(v, RESULTS, stale) is Rejection.STALE
    future = seal(s, RESULTS, _result(), now_ms=ms + 11_000)
    assert _reason(v, RESULTS, future) is Rejection.FUTURE
    # The same bytes on another topic fail the signature: the topic is signed.
    other_topic = "/tao/app/x"
    assert _reason(v, other_topic, good) is Rejection.BAD_SIGNATURE
    # Claims to be ``other`` but is signed by ``s``.
    forged = bytearray(good)
    forged[26:46] = bytes.fromhex(other.address[2:])
    assert _reason(v, RESULTS, bytes(forged)) is Rejection.BAD_SIGNATURE
    tampered = bytearray(good)
    tampered[-70] ^= 1  # inside the JSON body, still valid hex
    assert _reason(v, RESULTS, bytes(tampered)) in {Rejection.BAD_SIGNATURE, Rejection.SCHEMA}

    v.validate(RESULTS, good)
    assert _reason(v, RESULTS, good) is Rejection.REPLAY

    rec = NodeRecord("12D3KooWother", (), (), (), ())
    data = seal(s, TopicKinds.NODES, rec, now_ms=ms)
    assert _reason(v, TopicKinds.NODES, data, "12D3KooWme") is Rejection.PEER_MISMATCH


def test_schema_violations_are_rejected() -> None:
    s = _signer()
    v = Validator()
    body = b'{"job_id":"0x01"}'
    hdr = struct.pack(">BBQ16s20sI", 1, 2, 0, os.urandom(16), b"\0" * 20, len(body))
    assert _reason(v, RESULTS, hdr + body + b"\0" * 65) is Rejection.SCHEMA
    short = replace(_result(), n_ops=1)
    object.__setattr__(short, "job_id", b"\x01")  # bypass __post_init__ to craft a bad field
    assert _reason(v, RESULTS, seal(s, RESULTS, short)) is Rejection.SCHEMA
    with pytest.raises(EnvelopeError):
        VoteMessage(DISPUTE, 9, b"\0" * 65)


def test_vote_membership_and_vote_signature() -> None:
    member, outsider = _signer(), _signer()
    v = Validator(vote_domain=DOMAIN)
    topic = TopicKinds.VOTES

    def vote(signer: LocalSigner, vote_key: LocalSigner, verdict: Verdict) -> bytes:
        sig = sign_vote_with(vote_key, DOMAIN, DISPUTE, verdict)
        return seal(signer, topic, VoteMessage(DISPUTE, int(verdict), sig))

    # A node that does not know the dispute relays a vote whose signatures check out ...
    v.validate(topic, vote(outsider, outsider, Verdict.WITHIN_TOLERANCE))
    # ... but never one whose EIP-712 signature is someone else's.
    assert _reason(v, topic, vote(outsider, member, Verdict.WITHIN_TOLERANCE)) is (
        Rejection.BAD_VOTE_SIGNATURE
    )
    v.set_committee(DISPUTE, frozenset({member.address}))
    assert _reason(v, topic, vote(outsider, outsider, Verdict.WITHIN_TOLERANCE)) is (
        Rejection.NOT_MEMBER
    )
    # A member relaying someone else's EIP-712 vote as its own.
    assert _reason(v, topic, vote(member, outsider, Verdict.WITHIN_TOLERANCE)) is (
        Rejection.BAD_VOTE_SIGNATURE
    )
    env = v.validate(topic, vote(member, member, Verdict.THEORETICAL_VIOLATION))
    assert isinstance(env.body, VoteMessage)


def test_replay_cache_forgets_only_expired_entries() -> None:
    s = _signer()
    now = [0.0]
    v = Validator(ValidatorConfig(freshness_s=5, max_future_s=1), clock=lambda: now[0])
    first = seal(s, RESULTS, _result(), now_ms=0)
    v.validate(RESULTS, first)
    now[0] = 3
    v.validate(RESULTS, seal(s, RESULTS, _result(), now_ms=3000))
    assert _reason(v, RESULTS, first) is Rejection.REPLAY
    now[0] = 10
    assert _reason(v, RESULTS, first) is Rejection.STALE
    assert len(v._seen) <= 2


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_bit_flips_never_crash_the_validator(pos: int, byte: int) -> None:
    s = _signer()
    data = bytearray(seal(s, RESULTS, _result()))
    data[pos % len(data)] = byte
    v = Validator()
    try:
        env = v.validate(RESULTS, bytes(data))
    except EnvelopeError:
        return
    # Accepted only if the flip was a no-op.
    assert env.sender == s.address
    assert parse(bytes(data)).body == _result()


def test_vote_of_an_earlier_attempt_is_rejected() -> None:
    """A result can be disputed again; a member's vote signed in attempt 1 cannot be passed
    off as its vote in attempt 2 (the EIP-712 vote signs dispute_id(job, attempt))."""
    member = _signer()
    job = b"\x09" * 32
    first, second = dispute_id(job, 1), dispute_id(job, 2)
    v = Validator(vote_domain=DOMAIN)
    v.set_committee(second, frozenset({member.address}))
    topic = TopicKinds.VOTES
    stale = sign_vote_with(member, DOMAIN, first, Verdict.WITHIN_TOLERANCE)
    replayed = seal(member, topic, VoteMessage(second, int(Verdict.WITHIN_TOLERANCE), stale))
    assert _reason(v, topic, replayed) is Rejection.BAD_VOTE_SIGNATURE
    fresh = sign_vote_with(member, DOMAIN, second, Verdict.WITHIN_TOLERANCE)
    env = v.validate(topic, seal(member, topic, VoteMessage(second, 3, fresh)))
    assert isinstance(env.body, VoteMessage)
    assert env.body.dispute_id == second
