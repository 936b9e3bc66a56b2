"""Readiness tells the truth about commitments (issue 12 item 8).

A prover restarted on its embedded chain commits again (the previous chain's journal is moved
aside instead of resumed); a prover whose commitments fail is not ready, says why, refuses new
jobs with 503 + Retry-After, and returns to service by itself once commitments land again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from eth_account import Account
from prometheus_client import CollectorRegistry

from taonode.api.app import ApiServer, build_app
from taonode.api.tensors import tensor_to_json
from taonode.chain.anvil import free_port
from taonode.chain.deploy import Contracts, DeployParams, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock
from taonode.chain.tx import DirectTransactor, TxRequest
from taonode.chainbinding import ChainIdentity, bind_rpc_chain
from taonode.devnet import DEVNET_PARAMS, calibrate_profile, inputs_like, prepare_model
from taonode.modelstore import add_model
from taonode.roles.assemble import RoleNodeSpec, build_role_node
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.runtime.profile import save_profile
from taonode.service import ReadinessProbe, StartupError, SupervisionResult, supervise
from taonode.signer import LocalSigner
from tests.node.daemon import Daemon

pytestmark = pytest.mark.slow


def _http(port: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def _until(what: str, check: Any, limit_s: float) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {limit_s} s")


def test_embedded_restart_starts_fresh_journal_and_commits_succeeds(tmp_path: Path) -> None:
    model, example = prepare_model("transformer", tmp_path)
    profile = calibrate_profile(model, example, DeployParams().k)
    save_profile(profile, tmp_path / "p.json")
    data = tmp_path / "data"
    add_model(data / "models", tmp_path / "transformer.pt2", tmp_path / "p.json")
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{data}"\nroles = ["prover"]\nshutdown_stage_timeout_s = 3.0\n'
        '[api]\nport = 0\n[log]\nformat = "json"\n'
        "[chain]\npoll_interval_s = 0.25\ntx_timeout_s = 10.0\n"
    )
    body = {
        "model_id": "0x" + model.model_id.hex(),
        "inputs": {n: tensor_to_json(t) for n, t in inputs_like(model, example, 3).items()},
    }

    def ready(port: int) -> bool:
        return _http(port, "GET", "/readyz")[0] == 200

    def settled(port: int, job: str) -> Any:
        _, _, state = _http(port, "GET", f"/v1/jobs/{job}")
        return state if state["status"] in ("committed", "failed") else None

    for run in range(2):
        with Daemon(config) as node:
            port = node.wait_port(120)
            _until("ready", lambda p=port: ready(p), 60)
            status, _, reply = _http(port, "POST", "/v1/infer", body)
            assert status == 200, reply
            job = reply["job_id"]
            # Before the fix the second run resumed the first chain's nonce: it timed out.
            final = _until(f"run {run}: job settled", lambda p=port, j=job: settled(p, j), 60)
            assert final["status"] == "committed", (run, final, node.lines[-10:])
            node.proc.send_signal(signal.SIGTERM)
            assert node.proc.wait(30) == 0
    archived = list((data / "previous-chains").glob("*/state.sqlite"))
    assert len(archived) == 1, archived  # the first run's state, kept, not deleted


def test_rpc_chain_binding_refuses_other_genesis_reverts(tmp_path: Path) -> None:
    first = ChainIdentity(31337, "0x" + "aa" * 32)
    bind_rpc_chain(tmp_path, first)
    bind_rpc_chain(tmp_path, first)  # the same chain again: an honest restart is not refused
    with pytest.raises(StartupError, match="restarted from genesis"):
        bind_rpc_chain(tmp_path, ChainIdentity(31337, "0x" + "bb" * 32))
    with pytest.raises(StartupError, match="belongs to chain 31337"):
        bind_rpc_chain(tmp_path, ChainIdentity(1, "0x" + "aa" * 32))


@pytest_asyncio.fixture(loop_scope="function")
async def unfunded_prover(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A real prover node whose key holds no ETH: its commitResult (with a bond) cannot pay."""
    chain = EmbeddedChain(num_keys=2)
    deployer = LocalSigner(chain.keys[0])
    transactor = DirectTransactor(chain.w3, deployer)
    deployment = await deploy(chain.w3, transactor, DEVNET_PARAMS)
    model, example = await asyncio.to_thread(prepare_model, "transformer", tmp_path)
    profile = await asyncio.to_thread(calibrate_profile, model, example, DEVNET_PARAMS.k)
    contracts = Contracts.connect(chain.w3, deployment, transactor)
    await contracts.models.register_model(model.model_id, profile.profile_id, model.num_ops, "test")
    key = os.urandom(32)
    registry = CollectorRegistry()
    spec = RoleNodeSpec(
        name="prover",
        roles=frozenset({"prover"}),
        data_dir=tmp_path / "prover",
        signer=LocalSigner(key),
        deployment=deployment,
        models={
            model.model_id: ServedModel(
                model, profile.profile_id, ProfileJudge(model, profile, DEVNET_PARAMS.k)
            )
        },
        listen=(f"/ip4/127.0.0.1/tcp/{free_port()}",),
        poll_interval_s=0.2,
        tx_timeout_s=10.0,
        start_block=deployment.block,
    )
    node = await build_role_node(spec, chain.w3, registry)
    probe = ReadinessProbe(node.components)
    api = ApiServer(build_app(node.routes, probe, registry, dict), "127.0.0.1", 0)
    stop = asyncio.Event()
    running: asyncio.Task[SupervisionResult] = asyncio.create_task(
        supervise(
            [*node.components, api, BlockClock(chain, 0.25)],
            stop,
            start_timeout_s=60,
            stop_timeout_s=10,
        )
    )
    try:
        for _ in range(600):
            if api.bound_port is not None and probe.ready():
                break
            assert not running.done(), running.result()
            await asyncio.sleep(0.1)
        yield {
            "url": f"http://127.0.0.1:{api.bound_port}",
            "node": node,
            "registry": registry,
            "address": Account.from_key(key).address,
            "transactor": transactor,
            "body": {
                "model_id": "0x" + model.model_id.hex(),
                "inputs": {n: tensor_to_json(t) for n, t in inputs_like(model, example, 4).items()},
            },
        }
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await chain.close()


@pytest.mark.asyncio(loop_scope="function")
async def test_failing_commitments_make_prover_not_ready_then_recover_succeeds(
    unfunded_prover: dict[str, Any],
) -> None:
    url = unfunded_prover["url"]
    registry: CollectorRegistry = unfunded_prover["registry"]
    prover = next(s for s in unfunded_prover["node"].components if s.name == "prover")
    async with aiohttp.ClientSession() as session:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
            async with session.request(method, url + path, json=body) as resp:
                return resp.status, resp.headers, await resp.json()

        async def job_status(job: str) -> str:
            for _ in range(300):
                _, _, state = await call("GET", f"/v1/jobs/{job}")
                if state["status"] in ("committed", "failed"):
                    return str(state["status"])
                await asyncio.sleep(0.1)
            raise AssertionError("job never settled")

        body = unfunded_prover["body"]
        assert (await call("GET", "/readyz"))[0] == 200
        assert registry.get_sample_value("taonode_prover_commitments_failing") == 0.0
        status, _, reply = await call("POST", "/v1/infer", body)
        assert status == 200, reply
        assert await job_status(reply["job_id"]) == "failed"  # no ETH for the bond

        status, headers, ready = await call("GET", "/readyz")
        assert status == 503, ready
        assert ready["components"]["prover"] is False
        assert "commitments failing: 1 in a row" in ready["reasons"]["prover"]
        assert int(headers["Retry-After"]) > 0
        assert registry.get_sample_value("taonode_prover_commitments_failing") == 1.0
        status, headers, reply = await call("POST", "/v1/infer", body)
        assert (status, reply["error"]) == (503, "not accepting jobs"), reply
        assert int(headers["Retry-After"]) > 0

        # The operator funds the key; after the retry window the next job commits and the
        # prover is ready again without a restart.
        await unfunded_prover["transactor"].send(
            TxRequest(unfunded_prover["address"], b"", 100 * 10**18, label="fund")
        )
        prover.commit_health.retry_after_s = 0.5
        await asyncio.sleep(0.6)
        status, _, reply = await call("POST", "/v1/infer", body)
        assert status == 200, reply
        assert await job_status(reply["job_id"]) == "committed"
        status, _, ready = await call("GET", "/readyz")
        assert status == 200, ready
        assert "reasons" not in ready
        assert registry.get_sample_value("taonode_prover_commitments_failing") == 0.0
