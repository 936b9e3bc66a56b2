"""Honest job states across a crash: every job the prover answered ends ``committed`` or
``failed`` (logged, counted, and visible at ``GET /v1/jobs/{id}``), never ``committing``.

A real prover node (embedded chain, contracts, journaling sender, watcher, p2p) is stopped
abruptly at three points — after answering but before the job was recorded, after the trace
was stored but before the commit transaction was journaled, and after the commit was mined but
before its status was written — then a second node starts on the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from taonode.api.app import ApiServer, build_app
from taonode.chain.anvil import free_port
from taonode.chain.deploy import Contracts, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock
from taonode.chain.tx import DirectTransactor, TxRequest
from taonode.devnet import DEVNET_PARAMS, calibrate_profile, inputs_like, prepare_model
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.roles.prover import ProverService
from taonode.service import ReadinessProbe, SupervisionResult, supervise
from taonode.signer import LocalSigner

pytestmark = [pytest.mark.slow]


class GatedSender:
    """The node's sender; once ``hold`` is set, a commit never reaches the journal."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hold = False
        self.reached = asyncio.Event()

    @property
    def address(self) -> str:
        return str(self.inner.address)

    async def submit(self, key: str, tx: TxRequest) -> Any:
        if self.hold and key.startswith("commit:"):
            self.reached.set()
            await asyncio.Event().wait()  # the process dies here
        return await self.inner.submit(key, tx)


@contextlib.asynccontextmanager
async def running(node: RoleNode, chain: EmbeddedChain) -> AsyncIterator[str]:
    probe = ReadinessProbe(node.components)
    api = ApiServer(build_app(node.routes, probe, CollectorRegistry(), dict), "127.0.0.1", 0)
    stop = asyncio.Event()
    task: asyncio.Task[SupervisionResult] = asyncio.create_task(
        supervise(
            [*node.components, api, BlockClock(chain, 0.2)],
            stop,
            start_timeout_s=60,
            stop_timeout_s=10,
        )
    )
    try:
        for _ in range(600):
            if api.bound_port is not None and probe.ready():
                break
            assert not task.done(), task.result()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"node not ready: {probe.states()}")
        yield f"http://127.0.0.1:{api.bound_port}"
    finally:
        stop.set()
        result = await asyncio.wait_for(task, 30)
        assert result.crashed is None, result


async def _status(prover: ProverService, job_hex: str) -> str:
    job = await prover.store.run(prover.store.get_job, job_hex)
    return "" if job is None else job.status


async def _until(predicate: Any, what: str, timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def test_prover_crash_between_answer_and_journal_job_failed_not_committing_succeeds(
    tmp_path: Path,
) -> None:
    chain = EmbeddedChain(num_keys=3)
    try:
        transactor = DirectTransactor(chain.w3, LocalSigner(chain.keys[0]))
        deployment = await deploy(chain.w3, transactor, DEVNET_PARAMS)
        model, example = await asyncio.to_thread(prepare_model, "transformer", tmp_path)
        profile = await asyncio.to_thread(calibrate_profile, model, example, DEVNET_PARAMS.k)
        contracts = Contracts.connect(chain.w3, deployment, transactor)
        await contracts.models.register_model(
            model.model_id, profile.profile_id, model.num_ops, "test"
        )
        spec = RoleNodeSpec(
            name="prover",
            roles=frozenset({"prover"}),
            data_dir=tmp_path / "prover",
            signer=LocalSigner(chain.keys[1]),
            deployment=deployment,
            models={
                model.model_id: ServedModel(
                    model, profile.profile_id, ProfileJudge(model, profile, DEVNET_PARAMS.k)
                )
            },
            listen=(f"/ip4/127.0.0.1/tcp/{free_port()}",),
            poll_interval_s=0.2,
            start_block=deployment.block,
        )

        first = await build_role_node(spec, chain.w3, CollectorRegistry())
        prover = first.prover
        assert prover is not None
        gate = GatedSender(prover.ctx.sender)
        prover.ctx.sender = gate
        async with running(first, chain):
            # 1. Committed, then the status write is undone: a crash after the commit was
            # mined but before `committed` was recorded.
            done = await prover.infer(model.model_id, inputs_like(model, example, 1))
            done_hex = done.job_id.hex()
            await _until(lambda: _is(prover, done_hex, "committed"), "first job committed")
            job = await prover.store.run(prover.store.get_job, done_hex)
            assert job is not None
            await prover.store.run(prover.store.put_job, replace(job, status="committing"))
            # 2. Answered; the process dies before the commit task wrote anything.
            lost = await prover.infer(model.model_id, inputs_like(model, example, 2))
            for task in list(prover._background):
                task.cancel()
            # 3. Answered, trace stored, `committing`; dies before the journal write.
            gate.hold = True
            stuck = await prover.infer(model.model_id, inputs_like(model, example, 3))
            stuck_id = stuck.job_id.hex()
            await asyncio.wait_for(gate.reached.wait(), 60)
            assert await _status(prover, stuck_id) == "committing"
            for task in list(prover._background):
                task.cancel()
            await asyncio.sleep(0)
            assert await _status(prover, lost.job_id.hex()) == ""
            assert await prover.store.run(prover.store.journal_get, f"commit:{stuck_id}") is None

        registry = CollectorRegistry()
        second = await build_role_node(
            replace(spec, listen=(f"/ip4/127.0.0.1/tcp/{free_port()}",)), chain.w3, registry
        )
        assert second.prover is not None
        async with running(second, chain) as url, aiohttp.ClientSession() as session:

            async def api_status(job_hex: str) -> tuple[int, dict[str, Any]]:
                async with session.get(f"{url}/v1/jobs/0x{job_hex}") as resp:
                    body: dict[str, Any] = await resp.json()
                    return resp.status, body

            code, body = await api_status(done_hex)
            assert code == 200, body
            assert body["status"] == "committed"
            assert body["commit_tx"]
            for job_hex, reason in (
                (lost.job_id.hex(), "before the job was recorded"),
                (stuck_id, "before the commit transaction was journaled"),
            ):
                code, body = await api_status(job_hex)
                assert code == 200, body
                assert body["status"] == "failed", body
                job = await second.store.run(second.store.get_job, job_hex)
                assert job is not None
                assert reason in str(job.data["error"])
            failed = registry.get_sample_value(
                "taonode_jobs_total", {"role": "prover", "outcome": "failed_at_restart"}
            )
            assert failed == 2
            # A new job after the restart is served and committed as usual.
            fresh = await second.prover.infer(model.model_id, inputs_like(model, example, 4))
            await _until(lambda: _is(second.prover, fresh.job_id.hex(), "committed"), "fresh job")
    finally:
        await chain.close()


async def _is(prover: ProverService | None, job_hex: str, status: str) -> bool:
    assert prover is not None
    return await _status(prover, job_hex) == status
