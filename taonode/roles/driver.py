"""The protocol driver: folds chain events into job views and runs what the roles decide.

On every batch from the event feed (new events, retractions after a reorg, the new head) the
driver updates its views with the pure reducer, asks each of the node's roles for actions, and
starts each action that is not already running or done. Actions are idempotent by key: a
transaction key is journaled by the sender, so asking again after a crash never sends twice.
A failed action is retried on a later head unless its handler says it is settled.

Restart: the views are rebuilt from every kept event of the jobs the node still follows (the
feed keeps a job's events until the driver tells it the job is closed), then the feed catches
up from its cursor. No action starts before the feed has caught up with the chain (decisions
taken on a half-replayed history would act on a past the chain has left), and an event that
does not fit (a job the node never saw, a repeat) is counted and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from taonode.chain.contract import Event
from taonode.protocol.decisions import Action
from taonode.protocol.dispute import (
    ChainEvent,
    DisputeOpened,
    DisputeResolved,
    JobView,
    Outcome,
    Phase,
    ProtocolError,
    ResultFinalized,
    ResultStatus,
    apply,
)
from taonode.roles.chain import to_protocol
from taonode.roles.metrics import RoleMetrics

Policy = Callable[[JobView, int], list[Action]]
Handler = Callable[[Any], Awaitable[None]]
log = structlog.get_logger("taonode.roles")


class Settled(Exception):
    """An action that must not be retried (the chain moved on, or the step is moot)."""


@dataclass(frozen=True)
class FeedBatch:
    head: int
    events: Sequence[Event] = ()
    retracted: Sequence[Event] = ()


class EventFeed(Protocol):
    async def history(self) -> list[Event]:
        """Every kept event (oldest first), to rebuild the views after a restart."""
        ...

    async def next_batch(self) -> FeedBatch: ...

    @property
    def caught_up(self) -> bool:
        """True once the feed has delivered the chain up to its head (minus confirmations)."""
        ...

    async def forget(self, job_ids: Sequence[bytes]) -> None:
        """The jobs are closed: their events need not be kept for a restart any more."""
        ...


@dataclass
class DriverState:
    views: dict[bytes, JobView] = field(default_factory=dict)
    raw: list[Event] = field(default_factory=list)
    """Every chain event folded into the views, in order (a reorg removes some)."""
    head: int = 0


def _identity(event: Event) -> tuple[int, int, bytes]:
    return (event.block_number, event.log_index, event.tx_hash)


def _fold_one(
    views: dict[bytes, JobView], event: ChainEvent, metrics: RoleMetrics | None
) -> JobView | None:
    """Apply one event; an event that does not fit is counted and skipped (never fatal)."""
    try:
        view = apply(views.get(event.job_id), event)
    except ProtocolError as exc:
        # Not `event=`: structlog's first positional argument is named `event`.
        kind = type(event).__name__
        if event.job_id not in views:
            # A job the node does not follow: it closed and was forgotten, or it started
            # before the node's first block. Nothing of this node's depends on it.
            reason = "unknown_job"
            log.debug("event for an unknown job ignored", kind=kind, job=event.job_id.hex())
        else:
            reason = "invalid"
            log.warning("event ignored", kind=kind, job=event.job_id.hex(), error=str(exc))
        if metrics is not None:
            metrics.events_ignored.labels(reason=reason).inc()
        return None
    views[event.job_id] = view
    return view


def fold(
    events: Sequence[Event], move_timeout: int, metrics: RoleMetrics | None = None
) -> dict[bytes, JobView]:
    views: dict[bytes, JobView] = {}
    for raw in events:
        event = to_protocol(raw, move_timeout)
        if event is not None:
            _fold_one(views, event, metrics)
    return views


class ProtocolDriver:
    name = "protocol"

    def __init__(
        self,
        feed: EventFeed,
        policies: Sequence[tuple[str, Policy]],
        handlers: dict[type[Any], Handler],
        metrics: RoleMetrics,
        *,
        move_timeout: int,
        me: str = "",
        max_concurrent: int = 16,
        retain_blocks: int = 256,
        prune_every: int = 64,
    ) -> None:
        self.feed = feed
        self.policies = list(policies)
        self.handlers = handlers
        self.metrics = metrics
        self.move_timeout = move_timeout
        self.me = me.lower()
        self.state = DriverState()
        self._opened_at: dict[bytes, float] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._settled: set[str] = set()
        # A failed action waits for the next head before it is tried again.
        self._failed_at: dict[str, int] = {}
        self._limit = asyncio.Semaphore(max_concurrent)
        self._ready = False
        self._stopping = False
        # A closed job's events are forgotten once it has been closed for `retain_blocks`
        # (deeper than any reorg that could re-open it); open jobs are never forgotten.
        self.retain_blocks = retain_blocks
        self.prune_every = prune_every
        self._pruned_at = 0
        self._seen: set[tuple[int, int, bytes]] = set()
        self._last_block: dict[bytes, int] = {}
        self._started_at = time.monotonic()

    # -- component ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._started_at = time.monotonic()
        self.state.raw = list(await self.feed.history())
        self._refold()
        open_jobs = [v for v in self.state.views.values() if not _closed(v)]
        log.info("protocol state rebuilt", events=len(self.state.raw), open_jobs=len(open_jobs))

    async def run(self) -> None:
        try:
            while True:
                batch = await self.feed.next_batch()
                self.ingest(batch)
                if not self.feed.caught_up:
                    continue  # still replaying the chain: no decisions on a stale past
                if not self._ready:
                    self._ready = True
                    log.info(
                        "protocol views caught up",
                        head=self.state.head,
                        open_jobs=sum(not _closed(v) for v in self.state.views.values()),
                        seconds=round(time.monotonic() - self._started_at, 3),
                    )
                self.step()
                if self.state.head - self._pruned_at >= self.prune_every:
                    await self.prune()
        finally:
            self._stopping = True
            await self._cancel_all()

    async def stop(self) -> None:
        # No new actions from here on: a cancelled action's cleanup schedules a step, which
        # would otherwise start actions against components that are stopping after us.
        self._stopping = True
        await self._cancel_all()

    def ready(self) -> bool:
        return self._ready

    # -- core --------------------------------------------------------------------------------

    def _refold(self) -> None:
        self.state.views = fold(self.state.raw, self.move_timeout, self.metrics)
        self._seen = {_identity(e) for e in self.state.raw}
        self._last_block = {}
        for raw in self.state.raw:
            job_id = getattr(raw, "job_id", None)
            if isinstance(job_id, bytes) and job_id in self.state.views:
                self._last_block[job_id] = raw.block_number
        self._update_counts()

    def ingest(self, batch: FeedBatch) -> None:
        self.state.head = batch.head if batch.retracted else max(self.state.head, batch.head)
        if batch.retracted:
            gone = {_identity(e) for e in batch.retracted}
            self.state.raw = [e for e in self.state.raw if _identity(e) not in gone]
            self._refold()
            log.warning("events retracted by a reorg", count=len(batch.retracted))
        for raw in batch.events:
            identity = _identity(raw)
            if identity in self._seen:
                # Delivery is at-least-once (a crash between keeping an event and moving the
                # cursor delivers it again): applying it twice would corrupt the view.
                self.metrics.events_ignored.labels(reason="duplicate").inc()
                continue
            event = to_protocol(raw, self.move_timeout)
            if event is None:
                continue
            view = _fold_one(self.state.views, event, self.metrics)
            if view is None:
                continue
            self._seen.add(identity)
            self.state.raw.append(raw)
            self._last_block[event.job_id] = raw.block_number
            self._observe(view, event)
        self._update_slack()
        self._update_counts()

    async def prune(self) -> list[bytes]:
        """Forget jobs closed for more than ``retain_blocks`` (here and in the feed's store)."""
        self._pruned_at = self.state.head
        horizon = self.state.head - self.retain_blocks
        gone = [
            job_id
            for job_id, view in self.state.views.items()
            if _closed(view) and self._last_block.get(job_id, horizon) < horizon
        ]
        if not gone:
            return []
        await self.feed.forget(gone)
        drop = set(gone)
        self.state.raw = [e for e in self.state.raw if getattr(e, "job_id", None) not in drop]
        for job_id in gone:
            self.state.views.pop(job_id, None)
            self._last_block.pop(job_id, None)
            self._opened_at.pop(job_id, None)
        self._seen = {_identity(e) for e in self.state.raw}
        self._update_counts()
        log.info("closed jobs forgotten", count=len(gone), kept=len(self.state.views))
        return gone

    def _update_counts(self) -> None:
        closed = sum(_closed(v) for v in self.state.views.values())
        self.metrics.jobs_followed.labels(state="open").set(len(self.state.views) - closed)
        self.metrics.jobs_followed.labels(state="closed").set(closed)

    # -- metrics -----------------------------------------------------------------------------

    def _parties(self, view: JobView) -> list[str]:
        roles = []
        if view.prover.lower() == self.me:
            roles.append("prover")
        dispute = view.dispute
        if dispute is not None and dispute.challenger.lower() == self.me:
            roles.append("challenger")
        if dispute is not None and any(m.lower() == self.me for m in dispute.committee):
            roles.append("voter")
        return roles

    def _observe(self, view: JobView, event: ChainEvent) -> None:
        if isinstance(event, DisputeOpened):
            self._opened_at[view.job_id] = time.monotonic()
        elif isinstance(event, ResultFinalized) and view.dispute is None:
            if view.prover.lower() == self.me:
                self.metrics.jobs.labels(role="prover", outcome="finalized").inc()
        elif isinstance(event, DisputeResolved) and view.dispute is not None:
            self.metrics.dispute_rounds.observe(view.dispute.round + 1)
            opened = self._opened_at.pop(view.job_id, None)
            if opened is not None:
                self.metrics.resolution_seconds.observe(time.monotonic() - opened)
            for role in self._parties(view):
                if event.outcome is Outcome.NO_QUORUM:
                    outcome = "no_quorum"
                elif role == "voter":
                    outcome = "resolved"
                else:
                    outcome = "won" if event.winner.lower() == self.me else "lost"
                self.metrics.disputes.labels(role=role, outcome=outcome).inc()

    def _update_slack(self) -> None:
        """Blocks left before the nearest deadline this node must act on, per role."""
        nearest: dict[str, int] = {}
        for view in self.state.views.values():
            dispute = view.dispute
            if dispute is None or _closed(view):
                continue
            due: str | None = None
            if dispute.phase is Phase.PROVER_MOVE and view.prover.lower() == self.me:
                due = "prover"
            elif dispute.phase is Phase.CHALLENGER_MOVE and dispute.challenger.lower() == self.me:
                due = "challenger"
            elif (
                dispute.phase is Phase.VOTING
                and any(m.lower() == self.me for m in dispute.committee)
                and not view.voted(self.me)
            ):
                due = "voter"
            if due is not None:
                slack = dispute.deadline - self.state.head
                nearest[due] = min(nearest.get(due, slack), slack)
        for role in ("prover", "challenger", "voter"):
            if role in nearest:
                self.metrics.deadline_slack.labels(role=role).set(nearest[role])
            else:
                with contextlib.suppress(KeyError):
                    self.metrics.deadline_slack.remove(role)

    def step(self) -> list[Action]:
        """Start every action the roles want now; returns the ones started."""
        started: list[Action] = []
        if self._stopping:
            return started
        for view in list(self.state.views.values()):
            if _closed(view):
                continue
            for role, policy in self.policies:
                for action in policy(view, self.state.head):
                    if action.key in self._inflight or action.key in self._settled:
                        continue
                    if self._failed_at.get(action.key) == self.state.head:
                        continue
                    handler = self.handlers.get(type(action))
                    if handler is None:
                        continue
                    self._inflight[action.key] = asyncio.create_task(
                        self._execute(role, action, handler), name=action.key
                    )
                    started.append(action)
        return started

    def kick(self) -> None:
        """Re-run the decisions now (a role learned something: an assessment, a verdict)."""
        if self._ready:
            self.step()

    async def _execute(self, role: str, action: Action, handler: Handler) -> None:
        kind = type(action).__name__
        started = time.monotonic()
        try:
            async with self._limit:
                await handler(action)
            self._settled.add(action.key)
            self.metrics.actions.labels(kind=kind, result="ok").inc()
            log.info(
                "action done",
                role=role,
                action=action.key,
                seconds=round(time.monotonic() - started, 3),
            )
        except Settled as exc:
            self._settled.add(action.key)
            self.metrics.actions.labels(kind=kind, result="settled").inc()
            log.info("action settled", role=role, action=action.key, reason=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Left unsettled: the next head asks again (a transient RPC or peer failure).
            self._failed_at[action.key] = self.state.head
            self.metrics.actions.labels(kind=kind, result="error").inc()
            log.warning("action failed; will retry", role=role, action=action.key, error=repr(exc))
        finally:
            self._inflight.pop(action.key, None)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self.step)

    async def _cancel_all(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._inflight.clear()

    async def idle(self) -> None:
        """Wait until no action is running (tests and the devnet use it to settle)."""
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)


def _closed(view: JobView) -> bool:
    return view.status in (ResultStatus.FINALIZED, ResultStatus.REJECTED, ResultStatus.VOIDED)
