"""The compute worker: torch runs on dedicated threads, never on the event loop.

Two pools: ``inference`` (the client-visible forward passes and re-executions, one at a time so
they don't fight over cores) and ``background`` (trace hashing and commitment building, which
the prover moves off the response path). Each queue is bounded: a full queue is refused at once
instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import torch

from taonode.roles.metrics import RoleMetrics

P = ParamSpec("P")
T = TypeVar("T")


class QueueFull(RuntimeError):
    """The worker's queue is at its bound; the caller should shed the request."""


class _Pool:
    def __init__(self, name: str, threads: int, max_queue: int, metrics: RoleMetrics) -> None:
        self.name = name
        self.max_queue = max_queue
        self.depth = 0
        self._threads = threads
        self._gauge = metrics.compute_queue.labels(pool=name)
        self.executor: ThreadPoolExecutor | None = None

    def open(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"taonode-{self.name}")
        # torch's intra-op thread count is process-wide; set it once from the worker thread.
        self.executor.submit(torch.set_num_threads, self._threads).result()

    async def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.executor is None:
            raise RuntimeError(f"compute pool {self.name} is not running")
        if self.depth >= self.max_queue:
            raise QueueFull(f"{self.name} queue is full ({self.max_queue})")
        self.depth += 1
        self._gauge.set(self.depth)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
        finally:
            self.depth -= 1
            self._gauge.set(self.depth)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


class ComputeWorker:
    name = "compute"

    def __init__(self, metrics: RoleMetrics, threads: int, max_queue: int) -> None:
        self.inference = _Pool("inference", threads, max_queue, metrics)
        self.background = _Pool("background", 1, max_queue * 4, metrics)

    async def start(self) -> None:
        await asyncio.to_thread(self.inference.open)
        await asyncio.to_thread(self.background.open)

    async def run(self) -> None:
        return None

    async def stop(self) -> None:
        # Running torch calls cannot be interrupted; queued ones are dropped.
        await asyncio.to_thread(self.inference.close)
        await asyncio.to_thread(self.background.close)

    def ready(self) -> bool:
        return self.inference.executor is not None and self.background.executor is not None
