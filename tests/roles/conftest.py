"""Fixtures of the role tests: the reference transformer's world and a compute worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from taonode.roles.compute import ComputeWorker
from taonode.roles.metrics import RoleMetrics
from tests.roles.rolekit import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


@pytest_asyncio.fixture
async def compute() -> AsyncIterator[ComputeWorker]:
    worker = ComputeWorker(RoleMetrics(CollectorRegistry()), 1, 16)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
