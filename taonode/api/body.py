"""Request bodies: a size limit per content type, bounded JSON, and a gate on decoding.

Why a gate: decoding a 16 MB JSON tensor costs ~1 s of CPU and a few hundred MB of Python
objects. Four such bodies decoded on the event loop stalled ``/healthz`` for 4.4 s and took
the node from 0.5 to 3.6 GB (issue 12). Bodies are therefore decoded on worker threads, at most
``slots`` at a time; a request waits for a slot *before* its body is read (so a queued request
holds no body in memory), at most ``queue`` requests wait, and the rest are told to retry
(503 + ``Retry-After``). A client that sends its body slower than ``read_timeout_s`` loses its
slot (408), so slow senders cannot hold the gate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from taonode.runtime.safejson import JsonLimitError, JsonLimits, loads

T = TypeVar("T")

JSON_BODY_LIMIT = 16 << 20
"""JSON tensors are for small inputs; large ones go as safetensors (8 bytes per float32 value
in JSON at best, 4 in safetensors, and no Python object per value)."""
SAFETENSORS_BODY_LIMIT = 64 << 20
JSON_LIMITS = JsonLimits(max_bytes=JSON_BODY_LIMIT, max_depth=16, max_elements=4 << 20)
"""Depth 16: body → inputs → tensor → data plus at most 8 shape dimensions, with room."""
DECODE_SLOTS = 2
DECODE_QUEUE = 8
READ_TIMEOUT_S = 30.0
RETRY_AFTER_S = 1


class BodyError(Exception):
    """A request body is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, detail: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass
class DecodeGate:
    """At most ``slots`` bodies read-and-decoded at once, ``queue`` more waiting."""

    slots: int = DECODE_SLOTS
    queue: int = DECODE_QUEUE

    def __post_init__(self) -> None:
        self._sem = asyncio.Semaphore(self.slots)
        self._waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem.locked() and self._waiting >= self.queue:
            raise BodyError(503, "busy decoding other requests", f"retry in {RETRY_AFTER_S} s")
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._sem.release()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work for a request that holds a slot on a worker thread."""
        return await asyncio.to_thread(fn, *args)


def check_charset(request: web.Request) -> None:
    # RFC 8259: JSON on the wire is UTF-8. Any other declared charset is refused up front
    # instead of failing inside the decoder (``charset=nonexistent`` was a 500).
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise BodyError(415, "unsupported charset", f"JSON must be UTF-8, got {charset!r}")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyError(413, "request too large", f"{declared} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            while True:
                chunk = await request.content.read(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, "request too large", f"the limit is {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyError(
            408, "request body too slow", f"not received in {READ_TIMEOUT_S} s"
        ) from None
    return b"".join(chunks)


def decode_json(raw: bytes) -> Any:
    """Bounded, strict JSON (see :mod:`taonode.runtime.safejson`); refusals are 400s."""
    try:
        return loads(raw, JSON_LIMITS)
    except JsonLimitError as exc:
        raise BodyError(400, "body is not JSON", str(exc)) from None


def dumps(body: Any) -> bytes:
    """Strict JSON out: a non-finite float is a bug in the caller, never a bare ``NaN``."""
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def json_body(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, headers=headers, content_type="application/json"
    )
