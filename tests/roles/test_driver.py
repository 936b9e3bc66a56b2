"""The protocol driver over a scripted event feed (a test double at the feed boundary; the real
watcher feed is exercised end to end by the devnet test). The policies are the real role
decisions; the handlers record what the driver asked them to do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from eth_typing import ChecksumAddress
from prometheus_client import CollectorRegistry
from web3 import Web3

from taonode.chain.bindings import coordinator as co
from taonode.chain.contract import Event
from taonode.protocol import decisions as d
from taonode.protocol.dispute import JobView, ResultStatus
from taonode.roles import driver as driver_module
from taonode.roles.driver import FeedBatch, Handler, ProtocolDriver, Settled
from taonode.roles.metrics import RoleMetrics

PROVER: ChecksumAddress = Web3.to_checksum_address("0x" + "11" * 20)
COORDINATOR: ChecksumAddress = Web3.to_checksum_address("0x" + "cc" * 20)
JOB_A = b"\xaa" * 32
JOB_B = b"\xbb" * 32
WINDOW_END = 10


class ScriptedFeed:
    """An in-memory event feed: a fixed history, then whatever batches the test pushes."""

    def __init__(self, history: Sequence[Event] = ()) -> None:
        self._history = list(history)
        self.queue: asyncio.Queue[FeedBatch] = asyncio.Queue()
        self.caught_up = True
        self.forgotten: list[bytes] = []

    async def history(self) -> list[Event]:
        return list(self._history)

    async def next_batch(self) -> FeedBatch:
        return await self.queue.get()

    async def forget(self, job_ids: Sequence[bytes]) -> None:
        self.forgotten.extend(job_ids)


def committed(job_id: bytes, block: int, log_index: int = 0) -> co.ResultCommitted:
    return co.ResultCommitted(
        address=COORDINATOR,
        block_number=block,
        tx_hash=bytes([block]) * 32,
        log_index=log_index,
        job_id=job_id,
        prover=PROVER,
        model_id=b"\x01" * 32,
        profile_id=b"\x02" * 32,
        input_digest=b"\x03" * 32,
        output_digest=b"\x04" * 32,
        trace_root=b"\x05" * 32,
        num_ops=8,
        window_end=WINDOW_END,
    )


def finalized(job_id: bytes, block: int, log_index: int = 0) -> co.ResultFinalized:
    return co.ResultFinalized(
        address=COORDINATOR,
        block_number=block,
        tx_hash=bytes([block]) * 32,
        log_index=log_index,
        job_id=job_id,
        prover=PROVER,
        fee=0,
    )


class Recorder:
    """A Finalize handler that fails, settles or succeeds as scripted, and counts its calls."""

    def __init__(self, script: Sequence[str] = ()) -> None:
        self.script = list(script)
        self.calls: list[tuple[bytes, int]] = []
        self.driver: ProtocolDriver | None = None

    async def __call__(self, action: d.Finalize) -> None:
        assert self.driver is not None
        self.calls.append((action.job_id, self.driver.state.head))
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "fail":
            raise RuntimeError("transient RPC failure")
        if outcome == "settled":
            raise Settled("the chain moved on")


def make_driver(feed: ScriptedFeed, recorder: Recorder) -> ProtocolDriver:
    handler: Handler = recorder.__call__
    driver = ProtocolDriver(
        feed,
        [("prover", lambda job, head: d.prover_decide(job, PROVER, head))],
        {d.Finalize: handler},
        RoleMetrics(CollectorRegistry()),
        move_timeout=20,
    )
    recorder.driver = driver
    return driver


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def settle(driver: ProtocolDriver) -> None:
    """Let every started action and the step it schedules afterwards run."""
    for _ in range(3):
        await driver.idle()
        await asyncio.sleep(0.02)


def status(driver: ProtocolDriver, job_id: bytes) -> ResultStatus:
    view: JobView | None = driver.state.views.get(job_id)
    assert view is not None
    return view.status


async def test_driver_restart_rebuilds_views_from_history_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3), committed(JOB_B, 4), finalized(JOB_B, 12)])
    recorder = Recorder()
    driver = make_driver(feed, recorder)
    await driver.start()
    assert len(driver.state.raw) == 3
    assert status(driver, JOB_A) is ResultStatus.PENDING
    assert status(driver, JOB_B) is ResultStatus.FINALIZED
    # The rebuilt view drives the same decision as before the restart: only the open job is
    # finalized once its window has passed; the closed one is left alone.
    driver.ingest(FeedBatch(head=WINDOW_END + 1))
    started = driver.step()
    assert started == [d.Finalize(JOB_A)]
    await settle(driver)
    assert recorder.calls == [(JOB_A, WINDOW_END + 1)]


async def test_driver_reorg_retraction_refolds_views_succeeds() -> None:
    feed = ScriptedFeed()
    recorder = Recorder()
    driver = make_driver(feed, recorder)
    await driver.start()
    commit_a, final_a, commit_b = committed(JOB_A, 3), finalized(JOB_A, 12), committed(JOB_B, 5)
    driver.ingest(FeedBatch(head=12, events=[commit_a, commit_b, final_a]))
    assert status(driver, JOB_A) is ResultStatus.FINALIZED
    # The block holding the finalization is reorged out: the event goes, job A is open again.
    driver.ingest(FeedBatch(head=11, retracted=[final_a]))
    assert final_a not in driver.state.raw
    assert driver.state.raw == [commit_a, commit_b]
    assert status(driver, JOB_A) is ResultStatus.PENDING
    assert status(driver, JOB_B) is ResultStatus.PENDING
    assert driver.state.head == 11
    # Retracting the commitment itself removes the job's view altogether.
    driver.ingest(FeedBatch(head=11, retracted=[commit_b]))
    assert JOB_B not in driver.state.views
    assert set(driver.state.views) == {JOB_A}


async def test_driver_failed_action_retried_on_next_head_only_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3)])
    recorder = Recorder(["fail", "fail", "ok"])
    driver = make_driver(feed, recorder)
    await driver.start()
    runner = asyncio.create_task(driver.run())
    try:
        await feed.queue.put(FeedBatch(head=WINDOW_END + 1))
        await until(lambda: len(recorder.calls) == 1)
        await settle(driver)
        # The failure schedules another step, and kicks re-run the decisions, but the same
        # head never starts the failed action again.
        driver.kick()
        driver.kick()
        await settle(driver)
        assert recorder.calls == [(JOB_A, WINDOW_END + 1)]
        # Heads that repeat (no new block) do not retry either.
        await feed.queue.put(FeedBatch(head=WINDOW_END + 1))
        await settle(driver)
        assert len(recorder.calls) == 1
        await feed.queue.put(FeedBatch(head=WINDOW_END + 2))
        await until(lambda: len(recorder.calls) == 2)
        await feed.queue.put(FeedBatch(head=WINDOW_END + 3))
        await until(lambda: len(recorder.calls) == 3)
        await settle(driver)
        # Done now: later heads leave it alone.
        for head in range(WINDOW_END + 4, WINDOW_END + 8):
            await feed.queue.put(FeedBatch(head=head))
        await until(lambda: feed.queue.empty())
        await settle(driver)
        assert [head for _, head in recorder.calls] == [
            WINDOW_END + 1,
            WINDOW_END + 2,
            WINDOW_END + 3,
        ]
        assert driver.ready()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_driver_settled_action_not_retried_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3)])
    recorder = Recorder(["settled"])
    driver = make_driver(feed, recorder)
    await driver.start()
    runner = asyncio.create_task(driver.run())
    try:
        for head in range(WINDOW_END + 1, WINDOW_END + 6):
            await feed.queue.put(FeedBatch(head=head))
            await until(lambda: feed.queue.empty())
            await settle(driver)
        assert recorder.calls == [(JOB_A, WINDOW_END + 1)]
        # A job the chain has not closed is still in view; the driver simply has nothing to do.
        assert status(driver, JOB_A) is ResultStatus.PENDING
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_driver_stop_starts_no_new_actions_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3), committed(JOB_B, 4)])
    gate = asyncio.Event()
    calls: list[bytes] = []

    async def blocking(action: d.Finalize) -> None:
        calls.append(action.job_id)
        await gate.wait()

    driver = ProtocolDriver(
        feed,
        [("prover", lambda job, head: d.prover_decide(job, PROVER, head))],
        {d.Finalize: blocking},
        RoleMetrics(CollectorRegistry()),
        move_timeout=20,
        max_concurrent=1,
    )
    await driver.start()
    driver.ingest(FeedBatch(head=WINDOW_END + 1))
    assert len(driver.step()) == 2
    await until(lambda: len(calls) == 1)
    # Stopping cancels both (one running, one waiting for the concurrency slot); the step each
    # one's cleanup schedules must not start them again against a stopping node.
    await driver.stop()
    await asyncio.sleep(0.05)
    assert driver.step() == []
    # Nothing left running (a restarted action would block on the gate forever).
    await asyncio.wait_for(driver.idle(), 5)
    assert calls == [calls[0]]


def committee_drawn(job_id: bytes, block: int, log_index: int = 0) -> co.CommitteeDrawn:
    return co.CommitteeDrawn(
        address=COORDINATOR,
        block_number=block,
        tx_hash=bytes([block]) * 32,
        log_index=log_index,
        job_id=job_id,
        members=[PROVER],
        vote_deadline=block + 10,
    )


def ignored(driver: ProtocolDriver, reason: str) -> float:
    value = driver.metrics.events_ignored.labels(reason=reason)._value.get()
    return float(value)


async def test_driver_restart_history_with_unknown_job_event_ignored_succeeds() -> None:
    # The crash of issue 13: the history starts mid-game (the job's commitment is missing).
    # The event is counted and skipped; the node starts and follows the jobs it does know.
    feed = ScriptedFeed([committee_drawn(JOB_B, 2), committed(JOB_A, 3)])
    recorder = Recorder()
    driver = make_driver(feed, recorder)
    await driver.start()
    assert set(driver.state.views) == {JOB_A}
    assert ignored(driver, "unknown_job") == 1
    # The same event arriving live takes the same path.
    driver.ingest(FeedBatch(head=5, events=[committee_drawn(JOB_B, 5)]))
    assert ignored(driver, "unknown_job") == 2
    assert set(driver.state.views) == {JOB_A}


async def test_driver_invalid_event_for_known_job_ignored_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3)])
    driver = make_driver(feed, Recorder())
    await driver.start()
    # A committee for a job with no dispute does not fit its state: logged, counted, skipped.
    driver.ingest(FeedBatch(head=6, events=[committee_drawn(JOB_A, 6)]))
    assert ignored(driver, "invalid") == 1
    assert status(driver, JOB_A) is ResultStatus.PENDING
    assert driver.state.views[JOB_A].dispute is None


async def test_driver_duplicate_delivery_applied_once_succeeds() -> None:
    # At-least-once delivery: the event kept before a crash arrives again after the restart.
    commit_a = committed(JOB_A, 3)
    feed = ScriptedFeed([commit_a])
    driver = make_driver(feed, Recorder())
    await driver.start()
    driver.ingest(FeedBatch(head=4, events=[commit_a]))
    assert ignored(driver, "duplicate") == 1
    assert ignored(driver, "invalid") == 0  # not applied (it would be "committed twice")
    assert driver.state.raw == [commit_a]


async def test_driver_no_actions_before_feed_caught_up_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3)])
    feed.caught_up = False
    recorder = Recorder()
    driver = make_driver(feed, recorder)
    await driver.start()
    runner = asyncio.create_task(driver.run())
    try:
        await feed.queue.put(FeedBatch(head=WINDOW_END + 1))
        await until(lambda: feed.queue.empty())
        await settle(driver)
        driver.kick()
        await settle(driver)
        # Replaying the chain: no decision yet, and not ready.
        assert recorder.calls == []
        assert not driver.ready()
        feed.caught_up = True
        await feed.queue.put(FeedBatch(head=WINDOW_END + 2))
        await until(lambda: len(recorder.calls) == 1)
        assert driver.ready()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_driver_prune_forgets_only_jobs_closed_long_ago_succeeds() -> None:
    feed = ScriptedFeed([committed(JOB_A, 3), committed(JOB_B, 4), finalized(JOB_B, 12)])
    driver = make_driver(feed, Recorder())
    driver.retain_blocks = 100
    await driver.start()
    driver.ingest(FeedBatch(head=100))
    assert await driver.prune() == []  # B closed 88 blocks ago: kept (a reorg may re-open it)
    driver.ingest(FeedBatch(head=500))
    # A is still open after 500 blocks: never forgotten, whatever its age.
    assert await driver.prune() == [JOB_B]
    assert feed.forgotten == [JOB_B]
    assert set(driver.state.views) == {JOB_A}
    assert all(getattr(e, "job_id", None) == JOB_A for e in driver.state.raw)


def test_no_log_call_passes_event_keyword_succeeds() -> None:
    """structlog's first positional argument is ``event``: ``log.warning("…", event=…)``
    raises TypeError inside the error path it was meant to report (issue 13)."""
    import ast
    from pathlib import Path

    root = Path(driver_module.__file__).resolve().parents[2]
    bad = []
    for path in [*root.joinpath("taonode").rglob("*.py"), *root.joinpath("bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"debug", "info", "warning", "error", "exception", "bind"}
                and any(k.arg == "event" for k in node.keywords)
            ):
                bad.append(f"{path.relative_to(root)}:{node.lineno}")
    assert bad == []
