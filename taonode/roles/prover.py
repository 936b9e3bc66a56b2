"""The prover: serves inference over HTTP, commits every result on chain, defends disputes.

The forward pass runs on the compute worker and the client gets its output as soon as it is
computed. Hashing the trace, storing it in the blob store (where peers fetch it) and sending
``commitResult`` happen afterwards on the background pool, off the response path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import torch
from aiohttp import web
from torch import fx

from taonode.api.app import Route, json_error
from taonode.api.tensors import (
    TensorCodecError,
    tensor_to_json,
    tensors_from_json,
    tensors_from_safetensors,
)
from taonode.protocol.decisions import PostProverMove
from taonode.protocol.dispute import expected_cuts
from taonode.roles.behaviour import ProverBehaviour, ProverJob, ProverMove
from taonode.roles.compute import QueueFull
from taonode.roles.context import RoleContext, ServedModel
from taonode.roles.driver import Settled
from taonode.roles.jobdata import LocalBlobs, store_trace
from taonode.runtime.commit import commit
from taonode.runtime.execute import Trace, check_inputs, run_traced
from taonode.runtime.graph import Model, ModelError
from taonode.runtime.merkle import merkle_proof
from taonode.store.state import Job, StateStore

log = structlog.get_logger("taonode.prover")


@dataclass(frozen=True)
class InferResult:
    job_id: bytes
    model_id: bytes
    outputs: dict[str, torch.Tensor]
    seconds: float


class ProverService:
    """HTTP inference, background commitment and the prover's dispute moves."""

    name = "prover"

    def __init__(
        self,
        ctx: RoleContext,
        store: StateStore,
        blobs: LocalBlobs,
        behaviour: ProverBehaviour | None = None,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.blobs = blobs
        self.behaviour = behaviour or ProverBehaviour()
        self.behaviour.attach(ctx)
        self.behaviour.attach_blobs(blobs)
        self._background: set[asyncio.Task[None]] = set()
        self._running = False
        self._computed: dict[bytes, bytes] = {}
        """Jobs answered whose record the commit task has not written yet (job → model id)."""

    # -- component ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        # Jobs computed but not yet committed when the node last stopped: their traces are gone
        # (only committed traces are stored), so they are marked failed rather than left hanging.
        for job in await self.store.run(self.store.jobs, "computed"):
            await self.store.run(self.store.put_job, _with(job, status="failed"))

    async def run(self) -> None:
        return None

    async def stop(self) -> None:
        self._running = False
        # Commitments already computing are allowed to finish inside the stop budget.
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def ready(self) -> bool:
        return self._running

    # -- inference ---------------------------------------------------------------------------

    def serves(self, digest: bytes, peer: str | None = None) -> bool:
        """Whether the blob server hands ``digest`` to ``peer``."""
        return self.behaviour.serves(digest, peer)

    async def infer(self, model_id: bytes, inputs: dict[str, torch.Tensor]) -> InferResult:
        served = self.ctx.models.get(model_id)
        if served is None:
            raise KeyError(model_id.hex())
        job_id = os.urandom(32)
        job = ProverJob(job_id, served.model, inputs)
        model = self.behaviour.model_for(job)
        check_inputs(served.model, inputs)
        check_token_ids(served.model, inputs)
        started = time.perf_counter()
        try:
            trace = await self.ctx.compute.inference.submit(
                run_traced, model, inputs, self.ctx.device
            )
        except IndexError as exc:  # an index op the pre-flight checks do not know about
            raise ModelError(f"an input indexes out of range: {exc}") from None
        seconds = time.perf_counter() - started
        self.ctx.metrics.inference_seconds.observe(seconds)
        outputs = self.behaviour.answer(
            job, {name: trace.values[name] for name in served.model.outputs}
        )
        # The job record is written by the commit task, off the answer path (an fsynced SQLite
        # write costs 4-12 ms here); until then GET /v1/jobs/{id} answers from memory.
        self._computed[job_id] = model_id
        task = asyncio.create_task(self._commit(job, served, trace), name="commit")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self.ctx.metrics.jobs.labels(role="prover", outcome="served").inc()
        return InferResult(job_id, model_id, outputs, seconds)

    async def _commit(self, job: ProverJob, served: ServedModel, trace: Trace) -> None:
        model = served.model
        job_id = job.job_id
        hexid = job_id.hex()
        try:
            await self.store.run(
                self.store.put_job,
                Job(hexid, model.model_id.hex(), "computed", {"prover": self.ctx.me}),
            )
            self._computed.pop(job_id, None)
            trace = await self.ctx.compute.background.submit(
                self.behaviour.rewrite_trace, job, trace
            )
            commitment = await self.ctx.compute.background.submit(commit, model, trace)
            stored = await self.ctx.compute.background.submit(
                store_trace, self.blobs, model, trace, commitment
            )
            await self.store.run(self.store.pin, list(stored.blobs), f"job:{hexid}")
            chosen = await self.ctx.compute.background.submit(
                self.behaviour.commitment, job, trace, commitment
            )
            if chosen is None:
                raise Settled("the behaviour chose not to commit")
            commitment = chosen
            data: dict[str, Any] = {
                "prover": self.ctx.me,
                "frontier_digests": [d.hex() for d in commitment.frontier_digests],
                "input_digest": commitment.input_digest.hex(),
                "output_digest": commitment.output_digest.hex(),
                "trace_root": commitment.trace_root.hex(),
                "num_ops": commitment.num_ops,
            }
            await self.store.run(
                self.store.put_job, Job(hexid, model.model_id.hex(), "committing", data)
            )
            tx = self.ctx.contracts.coordinator.commit_result_tx(
                job_id,
                model.model_id,
                served.profile_id,
                commitment.input_digest,
                commitment.output_digest,
                commitment.trace_root,
                commitment.num_ops,
                value=self.ctx.params.prover_bond,
            )
            record = await self.ctx.sender.submit(f"commit:{hexid}", tx)
            data["commit_tx"] = getattr(record, "tx_hash", None)
            await self.store.run(
                self.store.put_job, Job(hexid, model.model_id.hex(), "committed", data)
            )
            log.info("result committed", job=hexid, ops=commitment.num_ops, tx=data["commit_tx"])
        except Exception as exc:
            log.error("commit failed", job=hexid, error=repr(exc))
            self._computed.pop(job_id, None)
            self.ctx.metrics.jobs.labels(role="prover", outcome="commit_failed").inc()
            await self.store.run(
                self.store.put_job,
                Job(hexid, model.model_id.hex(), "failed", {"error": repr(exc)}),
            )

    async def settle_background(self) -> None:
        """Wait for every pending commitment (the devnet and tests use it)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- dispute moves -----------------------------------------------------------------------

    async def post_move(self, action: PostProverMove) -> None:
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None:
            raise Settled("no dispute in view")
        job = await self.store.run(self.store.get_job, action.job_id.hex())
        if job is None or "frontier_digests" not in job.data:
            raise Settled("job unknown to this prover")
        frontiers = [bytes.fromhex(d) for d in job.data["frontier_digests"]]
        cuts = expected_cuts(view.dispute, self.ctx.params.k)
        honest = ProverMove(
            tuple(frontiers[c] for c in cuts),
            tuple(p for c in cuts for p in merkle_proof(frontiers, c)),
        )
        move = await self.behaviour.move(action, honest)
        if move is None:
            raise Settled("the behaviour chose not to move")
        tx = self.ctx.contracts.coordinator.prover_move_tx(
            action.job_id, list(move.digests), list(move.proofs)
        )
        await self.ctx.sender.submit(action.key, tx)

    # -- HTTP --------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/infer",
                self._handle_infer,
                "Run a model on inputs; the result is committed on chain afterwards",
                {
                    200: "outputs and job id",
                    400: "malformed request",
                    404: "unknown model",
                    413: "request too large",
                    503: "compute queue full",
                },
                request_schema={
                    "type": "object",
                    "required": ["model_id", "inputs"],
                    "properties": {
                        "model_id": {"type": "string", "description": "0x-prefixed bytes32"},
                        "inputs": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "dtype": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                    },
                },
                tag="prover",
            ),
            Route(
                "GET",
                "/v1/jobs/{job_id}",
                self._handle_job,
                "A job's status, digests and commitment transaction",
                {200: "job", 400: "malformed job id", 404: "unknown job"},
                tag="prover",
            ),
        ]

    async def _handle_infer(self, request: web.Request) -> web.Response:
        try:
            if request.content_type == "application/octet-stream":
                model_hex = request.query.get("model_id", "")
                # Decoding (up to the element cap) is CPU work: off the event loop.
                inputs = await asyncio.to_thread(tensors_from_safetensors, await request.read())
            else:
                try:
                    body = await request.json()
                except ValueError:
                    return json_error(400, "body is not JSON")
                if not isinstance(body, dict):
                    return json_error(400, "body must be an object")
                model_hex = str(body.get("model_id", ""))
                inputs = await asyncio.to_thread(tensors_from_json, body.get("inputs"))
            model_id = _bytes32(model_hex)
        except TensorCodecError as exc:
            return json_error(400, "bad tensors", str(exc))
        except ValueError as exc:
            return json_error(400, str(exc))
        try:
            result = await self.infer(model_id, inputs)
        except KeyError:
            return json_error(404, "unknown model", model_hex)
        except ModelError as exc:
            return json_error(400, "inputs do not fit the model", str(exc))
        except QueueFull:
            return json_error(503, "compute queue full")
        outputs = await asyncio.to_thread(
            lambda: {k: tensor_to_json(v) for k, v in result.outputs.items()}
        )
        return web.json_response(
            {
                "job_id": "0x" + result.job_id.hex(),
                "model_id": "0x" + result.model_id.hex(),
                "outputs": outputs,
                "seconds": result.seconds,
                "status": "committing",
            }
        )

    async def _handle_job(self, request: web.Request) -> web.Response:
        try:
            job_id = _bytes32(request.match_info["job_id"])
        except ValueError as exc:
            return json_error(400, str(exc))
        job = await self.store.run(self.store.get_job, job_id.hex())
        if job is None and job_id in self._computed:
            job = Job(job_id.hex(), self._computed[job_id].hex(), "computed", {})
        if job is None:
            return json_error(404, "unknown job")
        view = self.ctx.views.view(job_id)
        body: dict[str, Any] = {
            "job_id": "0x" + job.job_id,
            "model_id": "0x" + job.model_id,
            "status": job.status,
            "chain_status": view.status.value if view is not None else None,
        }
        for key in ("input_digest", "output_digest", "trace_root", "commit_tx", "num_ops"):
            if key in job.data:
                value = job.data[key]
                body[key] = "0x" + value if isinstance(value, str) and key != "commit_tx" else value
        return web.json_response(body)


def check_token_ids(model: Model, inputs: Mapping[str, torch.Tensor]) -> None:
    """Refuse token ids outside the vocabulary of an embedding that reads them directly.

    Checked before the forward pass: on CPU an out-of-range index raises ``IndexError``, but on
    CUDA it is a device-side assert that poisons the whole context for every later job.
    """
    for op, body in zip(model.ops, model.closures, strict=True):
        if op.target != "aten.embedding.default":
            continue
        node = body[-1]
        weight, index = node.args[0], node.args[1]
        if not (isinstance(weight, fx.Node) and isinstance(index, fx.Node)):
            continue
        if weight.name not in model.weights or index.name not in inputs:
            continue
        ids = inputs[index.name]
        vocab = int(model.weights[weight.name].shape[0])
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ModelError(
                f"input {index.name}: token ids must lie in [0, {vocab}), "
                f"got [{int(ids.min())}, {int(ids.max())}]"
            )


def _bytes32(text: str) -> bytes:
    raw = text[2:] if text.startswith("0x") else text
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise ValueError("id must be 32 bytes of hex") from None
    if len(value) != 32:
        raise ValueError("id must be 32 bytes of hex")
    return value


def _with(job: Job, **changes: Any) -> Job:
    return Job(
        changes.get("job_id", job.job_id),
        changes.get("model_id", job.model_id),
        changes.get("status", job.status),
        changes.get("data", job.data),
    )
