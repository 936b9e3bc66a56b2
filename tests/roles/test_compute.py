from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry

from taonode.roles.compute import ComputeWorker, QueueFull
from taonode.roles.metrics import RoleMetrics


async def test_compute_worker_runs_off_loop_and_bounds_queue_succeeds() -> None:
    registry = CollectorRegistry()
    worker = ComputeWorker(RoleMetrics(registry), threads=1, max_queue=2)
    await worker.start()
    try:
        loop_thread = threading.get_ident()
        assert await worker.inference.submit(threading.get_ident) != loop_thread
        gate = threading.Event()
        first = asyncio.create_task(worker.inference.submit(gate.wait, 5))
        second = asyncio.create_task(worker.inference.submit(gate.wait, 5))
        await asyncio.sleep(0.05)
        assert registry.get_sample_value("taonode_compute_queue_depth", {"pool": "inference"}) == 2
        with pytest.raises(QueueFull):
            await worker.inference.submit(gate.wait, 5)
        gate.set()
        assert await first
        assert await second
        assert worker.ready()
    finally:
        await worker.stop()
    assert not worker.ready()
