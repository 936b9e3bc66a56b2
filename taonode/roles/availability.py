"""Fetching for a whole phase: withheld data never decides a move or a vote by one failure.

Attack stopped (issue 11, items 4 and 6): the challenger used to fetch each frontier once and
score a miss as infinite excess, so a prover withholding the frontier that ends an honest
sub-segment only while the challenger decides walked the game to an honest op; and one BUSY
reply or timeout made a voter persist DATA_UNAVAILABLE for good, slashing an honest prover for
a hiccup. Here a fetch is retried, with exponential backoff, until the head block reaches the
phase's deadline minus a safety margin (the blocks the role still needs to compute and land its
transaction). Only then is the data unavailable. The rule a prover must follow is in
``docs/availability.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from taonode.roles.jobdata import DataUnavailable

log = structlog.get_logger("taonode.availability")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try again while the phase lasts (delays in seconds, deadlines in blocks)."""

    first_delay_s: float = 0.25
    max_delay_s: float = 4.0


DEFAULT_RETRY = RetryPolicy()


async def fetch_until(
    attempt: Callable[[], Awaitable[T]],
    *,
    head: Callable[[], int],
    give_up_block: int,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> T:
    """Run ``attempt`` until it succeeds or, after a failure, ``head() >= give_up_block``.

    Only :class:`DataUnavailable` is retried (every peer failed, BUSY, timed out or served
    bytes that do not match the digest); anything else is a bug or a permanent answer and
    propagates at once. The last attempt always runs, even when the phase is already over,
    so a role that starts late still tries once.
    """
    delay = policy.first_delay_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt()
        except DataUnavailable as exc:
            if head() >= give_up_block:
                raise DataUnavailable(
                    f"{what}: unavailable after {attempts} attempt(s) up to block "
                    f"{give_up_block}: {exc}"
                ) from exc
            log.debug("fetch failed; retrying", what=what, attempt=attempts, error=str(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, policy.max_delay_s)
