"""``/tao/blob/1.0.0``: fetch a tensor blob by digest (trio side of the request/response).

Request:  ``0x01 | digest 32B | max_len u64``.
Response: ``status u8 | length u64`` then ``length`` payload bytes, written in chunks.
Status: 0 ok, 1 not found, 2 larger than ``max_len``, 3 server busy.

The payload is opaque (the runtime's canonical tensor encoding); the client checks it with an
injectable verifier, BLAKE3 of the payload by default, before handing it to anyone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import blake3
import trio

PROTOCOL = "/tao/blob/1.0.0"
_REQ = struct.Struct(">B32sQ")
_RESP = struct.Struct(">BQ")
OK, NOT_FOUND, TOO_LARGE, BUSY = 0, 1, 2, 3
CHUNK = 1 << 20


class BlobSource(Protocol):
    """What the server side reads from: the node's content-addressed blob store."""

    def get(self, digest: bytes) -> bytes | None: ...


Verifier = Callable[[bytes, bytes], bool]


def blake3_verifier(digest: bytes, payload: bytes) -> bool:
    return bool(blake3.blake3(payload).digest() == digest)


class BlobError(RuntimeError):
    reason = "error"


class BlobNotFound(BlobError):
    reason = "not_found"


class BlobTooLarge(BlobError):
    reason = "too_large"


class BlobBusy(BlobError):
    reason = "busy"


class BlobDigestMismatch(BlobError):
    reason = "digest_mismatch"


class BlobTimeout(BlobError):
    reason = "timeout"


async def read_exactly(stream: Any, n: int, idle_timeout: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        with trio.fail_after(idle_timeout):
            try:
                chunk = await stream.read(min(n - len(buf), CHUNK))
            except Exception as e:  # EOF / reset from the muxer
                raise BlobError(f"stream failed after {len(buf)} of {n} bytes: {e!r}") from e
        if not chunk:
            raise BlobError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


@dataclass
class ServeLimits:
    """How much of the server one transfer, and one peer, may hold.

    A single slow reader used to hold every slot (8 shared, a 10 s per-chunk idle timeout
    only): the whole committee got BUSY for as long as it kept reading (issue 12, item 3).
    Now a peer holds at most ``per_peer`` slots, and a transfer that falls below
    ``min_rate_bps`` on average (after ``grace_s``) is cut off.
    """

    slots: int = 8
    per_peer: int = 2
    idle_s: float = 10.0
    min_rate_bps: float = 1024 * 1024
    grace_s: float = 10.0

    def deadline_s(self, length: int) -> float:
        return self.grace_s + length / self.min_rate_bps


class ServeSlots:
    """Global and per-peer transfer slots (trio side: one thread, no locking)."""

    def __init__(self, limits: ServeLimits) -> None:
        self.limits = limits
        self.active = 0
        self._by_peer: dict[str, int] = {}

    def try_acquire(self, peer: str) -> bool:
        mine = self._by_peer.get(peer, 0)
        if self.active >= self.limits.slots or mine >= self.limits.per_peer:
            return False
        self.active += 1
        self._by_peer[peer] = mine + 1
        return True

    def release(self, peer: str) -> None:
        self.active -= 1
        left = self._by_peer.get(peer, 1) - 1
        if left > 0:
            self._by_peer[peer] = left
        else:
            self._by_peer.pop(peer, None)  # the map holds only peers with a transfer running


class BlobTooSlow(BlobError):
    reason = "too_slow"


@dataclass(frozen=True)
class Served:
    """The outcome of one request (a metrics label) and the payload bytes sent."""

    outcome: str
    sent: int = 0


async def serve(stream: Any, peer: str, source: BlobSource, slots: ServeSlots) -> Served:
    """Answer one request on ``stream``.  Raises :class:`BlobTooSlow` when the reader is below
    the minimum rate (the caller resets the stream)."""
    limits = slots.limits
    req = await read_exactly(stream, _REQ.size, limits.idle_s)
    op, digest, max_len = _REQ.unpack(req)
    if op != 1:
        raise BlobError(f"unknown op {op}")
    if not slots.try_acquire(peer):
        await stream.write(_RESP.pack(BUSY, 0))
        return Served("busy")
    try:
        # The store call is synchronous: a memory or mmap'd store answers in microseconds.
        payload = source.get(digest)
        if payload is None:
            await stream.write(_RESP.pack(NOT_FOUND, 0))
            return Served("not_found")
        if len(payload) > max_len:
            await stream.write(_RESP.pack(TOO_LARGE, len(payload)))
            return Served("too_large")
        sent = 0
        with trio.move_on_after(limits.deadline_s(len(payload))) as scope:
            await stream.write(_RESP.pack(OK, len(payload)))
            view = memoryview(payload)
            for off in range(0, len(payload), CHUNK):
                with trio.fail_after(limits.idle_s):
                    await stream.write(bytes(view[off : off + CHUNK]))
                sent = min(len(payload), off + CHUNK)
        if scope.cancelled_caught:
            raise BlobTooSlow(f"{sent} of {len(payload)} bytes by the deadline")
        return Served("ok", len(payload))
    finally:
        slots.release(peer)


async def fetch(stream: Any, digest: bytes, max_len: int, verifier: Verifier, idle: float) -> bytes:
    """Client side on an open stream; raises a :class:`BlobError` subclass on any failure."""
    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    await stream.write(_REQ.pack(1, digest, max_len))
    status, length = _RESP.unpack(await read_exactly(stream, _RESP.size, idle))
    if status == NOT_FOUND:
        raise BlobNotFound(digest.hex())
    if status == TOO_LARGE or (status == OK and length > max_len):
        raise BlobTooLarge(f"{length} > {max_len}")
    if status == BUSY:
        raise BlobBusy("server at its concurrent-transfer limit")
    if status != OK:
        raise BlobError(f"status {status}")
    payload = await read_exactly(stream, length, idle)
    if not verifier(digest, payload):
        raise BlobDigestMismatch(digest.hex())
    return payload
