"""The prover's HTTP API against a real prover node: the embedded chain with the contracts
deployed, the reference transformer registered with its calibrated profile, the node's own
state store, blob store, journaling sender, event watcher and libp2p host."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import torch
from prometheus_client import CollectorRegistry

from taonode.api.app import ApiServer, build_app
from taonode.api.tensors import tensor_to_json, tensors_to_safetensors
from taonode.chain.anvil import free_port
from taonode.chain.bindings import coordinator as co
from taonode.chain.deploy import Contracts, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock
from taonode.chain.tx import DirectTransactor
from taonode.devnet import (
    DEVNET_PARAMS,
    calibrate_profile,
    inputs_like,
    prepare_model,
)
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.runtime.commit import commit
from taonode.runtime.execute import run_plain, run_traced
from taonode.runtime.graph import Model
from taonode.service import ReadinessProbe, SupervisionResult, supervise
from taonode.signer import LocalSigner

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Prover:
    node: RoleNode
    model: Model
    example: tuple[torch.Tensor, ...]
    url: str
    session: aiohttp.ClientSession
    contracts: Contracts

    @property
    def model_hex(self) -> str:
        return "0x" + self.model.model_id.hex()

    async def post_json(self, body: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"{self.url}/v1/infer", json=body) as resp:
            return resp.status, await resp.json()

    async def post_raw(
        self, data: bytes, content_type: str, query: str = ""
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": content_type}
        async with self.session.post(
            f"{self.url}/v1/infer{query}", data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.url}{path}") as resp:
            return resp.status, await resp.json()

    async def committed_job(self, job_hex: str, timeout_s: float = 30.0) -> dict[str, Any]:
        for _ in range(int(timeout_s / 0.1)):
            status, body = await self.get(f"/v1/jobs/{job_hex}")
            assert status == 200, body
            assert body["status"] in ("computed", "committing", "committed"), body
            if body["status"] == "committed":
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {job_hex} not committed in {timeout_s} s")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def prover(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Prover]:
    workdir = tmp_path_factory.mktemp("prover-api")
    chain = EmbeddedChain(num_keys=3)
    deployer = LocalSigner(chain.keys[0])
    transactor = DirectTransactor(chain.w3, deployer)
    deployment = await deploy(chain.w3, transactor, DEVNET_PARAMS)
    model, example = await asyncio.to_thread(prepare_model, "transformer", workdir)
    profile = await asyncio.to_thread(calibrate_profile, model, example, DEVNET_PARAMS.k)
    contracts = Contracts.connect(chain.w3, deployment, transactor)
    await contracts.models.register_model(
        model.model_id, profile.profile_id, model.num_ops, "test:transformer"
    )
    judge = ProfileJudge(model, profile, DEVNET_PARAMS.k)
    spec = RoleNodeSpec(
        name="prover",
        roles=frozenset({"prover"}),
        data_dir=workdir / "prover",
        signer=LocalSigner(chain.keys[1]),
        deployment=deployment,
        models={model.model_id: ServedModel(model, profile.profile_id, judge)},
        listen=(f"/ip4/127.0.0.1/tcp/{free_port()}",),
        poll_interval_s=0.2,
        start_block=deployment.block,
    )
    node = await build_role_node(spec, chain.w3, CollectorRegistry())
    probe = ReadinessProbe(node.components)
    api = ApiServer(build_app(node.routes, probe, CollectorRegistry(), dict), "127.0.0.1", 0)
    stop = asyncio.Event()
    components = [*node.components, api, BlockClock(chain, 0.25)]
    running: asyncio.Task[SupervisionResult] = asyncio.create_task(
        supervise(components, stop, start_timeout_s=60, stop_timeout_s=10)
    )
    try:
        for _ in range(600):
            if api.bound_port is not None and probe.ready():
                break
            assert not running.done(), running.result()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"prover node not ready: {probe.states()}")
        async with aiohttp.ClientSession() as session:
            yield Prover(
                node, model, example, f"http://127.0.0.1:{api.bound_port}", session, contracts
            )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            result = await asyncio.wait_for(running, 30)
            assert result.crashed is None, result
        await chain.close()


def json_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {name: tensor_to_json(t) for name, t in inputs.items()}


def output_tensor(spec: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, spec["dtype"])
    return torch.tensor(spec["data"], dtype=dtype).reshape(spec["shape"])


def assert_plain_forward(
    model: Model, inputs: dict[str, torch.Tensor], outputs: dict[str, Any]
) -> None:
    plain = run_plain(model, inputs)
    assert set(outputs) == set(model.outputs)
    for name, expected in zip(model.outputs, plain, strict=True):
        got = output_tensor(outputs[name])
        assert got.dtype == expected.dtype
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


async def test_infer_json_outputs_and_committed_job_succeeds(prover: Prover) -> None:
    model = prover.model
    inputs = inputs_like(model, prover.example, 7)
    status, body = await prover.post_json(
        {"model_id": prover.model_hex, "inputs": json_inputs(inputs)}
    )
    assert status == 200, body
    assert body["model_id"] == prover.model_hex
    assert_plain_forward(model, inputs, body["outputs"])
    job_hex = body["job_id"]
    assert isinstance(job_hex, str)
    assert job_hex.startswith("0x")
    assert len(job_hex) == 66

    job = await prover.committed_job(job_hex)
    expected = commit(model, run_traced(model, inputs))
    assert job["job_id"] == job_hex
    assert job["input_digest"] == "0x" + expected.input_digest.hex()
    assert job["output_digest"] == "0x" + expected.output_digest.hex()
    assert job["trace_root"] == "0x" + expected.trace_root.hex()
    assert job["num_ops"] == model.num_ops

    # The chain says the same: one ResultCommitted for the job, in the reported transaction.
    job_id = bytes.fromhex(job_hex[2:])
    events = [
        e
        for e in await prover.contracts.coordinator.get_events(co.ResultCommitted)
        if e.job_id == job_id
    ]
    assert len(events) == 1
    event = events[0]
    assert event.prover == prover.node.address
    assert event.model_id == model.model_id
    assert event.input_digest == expected.input_digest
    assert event.output_digest == expected.output_digest
    assert event.trace_root == expected.trace_root
    assert event.num_ops == model.num_ops
    commit_tx = str(job["commit_tx"])
    assert commit_tx.removeprefix("0x") == event.tx_hash.hex()
    # Once the watcher has seen it, the job's chain status shows up too.
    for _ in range(100):
        _, job = await prover.get(f"/v1/jobs/{job_hex}")
        if job["chain_status"] is not None:
            break
        await asyncio.sleep(0.1)
    assert job["chain_status"] in ("pending", "finalized")


async def test_infer_safetensors_request_succeeds(prover: Prover) -> None:
    model = prover.model
    inputs = inputs_like(model, prover.example, 8)
    status, body = await prover.post_raw(
        tensors_to_safetensors(inputs),
        "application/octet-stream",
        f"?model_id={prover.model_hex}",
    )
    assert status == 200, body
    assert_plain_forward(model, inputs, body["outputs"])
    job = await prover.committed_job(body["job_id"])
    expected = commit(model, run_traced(model, inputs))
    assert job["output_digest"] == "0x" + expected.output_digest.hex()


async def test_infer_bad_requests_clear_errors_node_healthy_reverts(prover: Prover) -> None:
    model = prover.model
    inputs = inputs_like(model, prover.example, 9)
    (name,) = model.input_names
    good = json_inputs(inputs)
    spec = good[name]
    unknown_model = "0x" + os.urandom(32).hex()

    cases: list[tuple[str, int, str, Any]] = [
        ("malformed JSON", 400, "body is not JSON", b'{"model_id": "0x'),
        ("not an object", 400, "body must be an object", [1, 2]),
        ("no inputs", 400, "bad tensors", {"model_id": prover.model_hex}),
        (
            "malformed model id",
            400,
            "id must be 32 bytes of hex",
            {"model_id": "0x12", "inputs": good},
        ),
        ("unknown model", 404, "unknown model", {"model_id": unknown_model, "inputs": good}),
        (
            "wrong input name",
            400,
            "inputs do not fit the model",
            {"model_id": prover.model_hex, "inputs": {"tokens": spec}},
        ),
        (
            "extra input",
            400,
            "inputs do not fit the model",
            {"model_id": prover.model_hex, "inputs": {**good, "extra": spec}},
        ),
        (
            "wrong shape",
            400,
            "inputs do not fit the model",
            {
                "model_id": prover.model_hex,
                "inputs": {
                    name: {**spec, "shape": [1, 64], "data": [inputs[name].flatten().tolist()]}
                },
            },
        ),
        (
            "wrong dtype",
            400,
            "inputs do not fit the model",
            {"model_id": prover.model_hex, "inputs": {name: {**spec, "dtype": "int32"}}},
        ),
        (
            "unknown dtype",
            400,
            "bad tensors",
            {"model_id": prover.model_hex, "inputs": {name: {**spec, "dtype": "complex64"}}},
        ),
        (
            "oversize tensor claim",
            400,
            "bad tensors",
            {
                "model_id": prover.model_hex,
                "inputs": {name: {"dtype": "int64", "shape": [1 << 20, 1 << 20], "data": []}},
            },
        ),
        (
            "data disagrees with shape",
            400,
            "bad tensors",
            {"model_id": prover.model_hex, "inputs": {name: {**spec, "shape": [2, 33]}}},
        ),
        (
            "token id outside the vocabulary",
            400,
            "inputs do not fit the model",
            {
                "model_id": prover.model_hex,
                "inputs": {
                    name: tensor_to_json(torch.full_like(inputs[name], 1 << 40)),
                },
            },
        ),
    ]
    for label, code, error, body in cases:
        if isinstance(body, bytes):
            status, reply = await prover.post_raw(body, "application/json")
        else:
            status, reply = await prover.post_json(body)
        assert (status, reply.get("error")) == (code, error), (label, reply)

    # safetensors: garbage, and a header that claims a huge tensor the body does not hold.
    query = f"?model_id={prover.model_hex}"
    status, reply = await prover.post_raw(b"\x00" * 16, "application/octet-stream", query)
    assert (status, reply["error"]) == (400, "bad tensors"), reply
    header = (
        b'{"ids":{"dtype":"I64","shape":[1099511627776,1024],"data_offsets":[0,8796093022208]}}'
    )
    claim = len(header).to_bytes(8, "little") + header + b"\x00" * 8
    status, reply = await prover.post_raw(claim, "application/octet-stream", query)
    assert (status, reply["error"]) == (400, "bad tensors"), reply
    status, reply = await prover.post_raw(
        tensors_to_safetensors(inputs), "application/octet-stream", "?model_id=nope"
    )
    assert (status, reply["error"]) == (400, "id must be 32 bytes of hex"), reply

    # Job lookups.
    status, reply = await prover.get("/v1/jobs/0xnot-hex")
    assert (status, reply["error"]) == (400, "id must be 32 bytes of hex"), reply
    status, reply = await prover.get("/v1/jobs/0x" + "ab" * 31)
    assert (status, reply["error"]) == (400, "id must be 32 bytes of hex"), reply
    status, reply = await prover.get("/v1/jobs/0x" + os.urandom(32).hex())
    assert (status, reply["error"]) == (404, "unknown job"), reply

    # Still healthy and serving: every component ready, a good request still answered.
    status, reply = await prover.get("/readyz")
    assert status == 200, reply
    assert reply["ready"] is True, reply
    status, reply = await prover.post_json({"model_id": prover.model_hex, "inputs": good})
    assert status == 200, reply
    assert_plain_forward(model, inputs, reply["outputs"])


async def test_infer_after_profile_change_on_chain_refused_then_served_again_succeeds(
    prover: Prover,
) -> None:
    """Issue 13: after `model add` changed the profile on chain, a running prover answered
    200 and every commit reverted ProfileMismatch. Now it refuses before computing."""
    model = prover.model
    registry = prover.contracts.models
    served = await registry.profile_of(model.model_id)
    body = {
        "model_id": prover.model_hex,
        "inputs": json_inputs(inputs_like(model, prover.example, 9)),
    }

    async def wait_head_past(block: int) -> None:
        for _ in range(200):
            if prover.node.driver.state.head > block:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the prover's head did not move")

    other = b"\x77" * 32
    # Profiles change only through the registry's timelock: the change is live once active.
    delay = DEVNET_PARAMS.profileDelay
    receipt = await registry.propose_profile(model.model_id, other, "test:changed")
    try:
        await wait_head_past(int(receipt["blockNumber"]) + delay)
        status, refused = await prover.post_json(body)
        assert status == 409, refused
        assert refused["error"] == "profile changed on chain"
        assert "0x" + other.hex() in refused["detail"]
        assert "taonode model add" in refused["detail"]
    finally:
        receipt = await registry.propose_profile(model.model_id, served, "test:transformer")
    # The honest case: the chain's profile is the served one again, the job is served and
    # committed (no refusal left over from the cache).
    await wait_head_past(int(receipt["blockNumber"]) + delay)
    status, answered = await prover.post_json(body)
    assert status == 200, answered
    await prover.committed_job(str(answered["job_id"]))
