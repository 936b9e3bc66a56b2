"""Supervision in-process: a crashing component stops the node, stop order and budgets hold."""

from __future__ import annotations

import asyncio
import io
import json

import structlog

from taonode.logs import REDACTED, configure_logging, get_logger
from taonode.service import ReadinessProbe, supervise


class Recorder:
    """A component that records its lifecycle into a shared journal."""

    def __init__(
        self, name: str, journal: list[str], *, crash: bool = False, hang_stop: bool = False
    ) -> None:
        self.name = name
        self.journal = journal
        self.crash = crash
        self.hang_stop = hang_stop
        self.running = False

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")
        self.running = True

    async def run(self) -> None:
        if self.crash:
            await asyncio.sleep(0.01)
            raise RuntimeError(f"{self.name} exploded")
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        self.running = False
        if self.hang_stop:
            await asyncio.sleep(3600)

    def ready(self) -> bool:
        return self.running


async def test_supervise_stop_request_stops_in_reverse_order_succeeds() -> None:
    journal: list[str] = []
    parts = [Recorder("a", journal), Recorder("b", journal), Recorder("c", journal)]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    result = await supervise(parts, stop, start_timeout_s=1, stop_timeout_s=1)
    assert result.crashed is None
    assert result.stop_timeouts == ()
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_supervise_crash_stops_the_node_reverts() -> None:
    journal: list[str] = []
    parts = [Recorder("store", journal), Recorder("worker", journal, crash=True)]
    result = await asyncio.wait_for(
        supervise(parts, asyncio.Event(), start_timeout_s=1, stop_timeout_s=1), 5
    )
    assert result.crashed == "worker"
    assert isinstance(result.error, RuntimeError)
    assert journal[-2:] == ["stop worker", "stop store"]


async def test_supervise_hung_stop_is_bounded_reverts() -> None:
    journal: list[str] = []
    parts = [Recorder("ok", journal), Recorder("stuck", journal, hang_stop=True)]
    stop = asyncio.Event()
    stop.set()
    result = await asyncio.wait_for(
        supervise(parts, stop, start_timeout_s=1, stop_timeout_s=0.1), 5
    )
    assert result.stop_timeouts == ("stuck",)
    assert journal[-1] == "stop ok"


def test_readiness_probe_all_components_succeeds() -> None:
    journal: list[str] = []
    a, b = Recorder("a", journal), Recorder("b", journal)
    probe = ReadinessProbe([a, b])
    assert not probe.ready()
    a.running = b.running = True
    assert probe.ready()
    assert not ReadinessProbe([]).ready()


def test_logs_redact_secrets_succeeds() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    key = "ab" * 32
    get_logger("t").info("loaded", password="hunter2", detail=f"private key {key}")
    structlog.reset_defaults()
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["password"] == REDACTED
    assert key not in line["detail"]
    assert REDACTED in line["detail"]
    assert "hunter2" not in stream.getvalue()
