"""The prover: serves inference over HTTP, commits every result on chain, defends disputes.

The forward pass runs on the compute worker and the client gets its output as soon as it is
computed. Hashing the trace, storing it in the blob store (where peers fetch it) and sending
``commitResult`` happen afterwards on the background pool, off the response path.

Job states (``GET /v1/jobs/{id}``): ``computed`` (answered; the trace is only in memory),
``committing`` (trace stored; ``commitResult`` being sent), ``committed``, ``failed``. Every
answered job ends ``committed`` or ``failed`` even across a crash: the job id goes to an
append-only answer log before the client gets its output (one unsynced write, which survives a
SIGKILL; power loss can still lose it), and :meth:`ProverService.start` settles whatever the
last run left: a ``computed`` job (or one only in the answer log) is failed, its trace died
with the process; a ``committing`` job follows its journaled ``commit:`` transaction (the
sender re-broadcasts it) to ``committed`` or ``failed``, and fails if nothing was journaled
(no transaction can appear any more). Every such failure is logged and counted
(``taonode_jobs{role="prover",outcome="failed_at_restart"}``). Re-committing a ``committing``
job without a journal entry would be possible (its trace is stored) but is not done: the
client was told nothing about timing, and failing it keeps a crash's outcome one rule.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import torch
from aiohttp import web
from torch import fx

from taonode.api.app import Route, json_error
from taonode.api.body import (
    JSON_BODY_LIMIT,
    SAFETENSORS_BODY_LIMIT,
    BodyError,
    DecodeGate,
    check_charset,
    decode_json,
    dumps,
    json_body,
    read_body,
)
from taonode.api.tensors import (
    DTYPES,
    MAX_DIMS,
    MAX_JSON_ELEMENTS,
    MAX_TENSORS,
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
from taonode.roles.profilecheck import ActiveProfiles, ChainUnavailable, ProfileChanged
from taonode.runtime.commit import commit
from taonode.runtime.execute import Trace, check_inputs, run_traced
from taonode.runtime.graph import Model, ModelError
from taonode.runtime.merkle import merkle_proof
from taonode.store.state import FINAL_TX, Job, StateStore, TxStatus

log = structlog.get_logger("taonode.prover")


COMMIT_RETRY_AFTER_S = 30.0
"""How long a prover whose last commitment failed refuses jobs before it tries again."""


@dataclass
class CommitHealth:
    """Whether the prover's commitments are landing (issue 12 item 8).

    Why: after a restart on a fresh embedded chain the sender used a journaled nonce the chain
    had never seen, every ``commitResult`` timed out, and the node stayed ready and kept
    answering 200 — results nobody could ever challenge or pay for. A failed commitment makes
    the prover *not ready* and makes ``/v1/infer`` answer 503 + ``Retry-After``. After
    ``retry_after_s`` it accepts jobs again (half-open): the next commitment's outcome decides,
    so a node that recovers (RPC back, funds topped up) returns to service by itself.
    """

    retry_after_s: float = COMMIT_RETRY_AFTER_S
    consecutive_failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.last_error = None
        self.last_failure_at = None

    def failed(self, error: str, now: float) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        self.last_failure_at = now

    def failing(self, now: float) -> bool:
        return self.last_failure_at is not None and now - self.last_failure_at < self.retry_after_s

    def reason(self, now: float) -> str | None:
        if not self.failing(now):
            return None
        return f"commitments failing: {self.consecutive_failures} in a row, last: {self.last_error}"


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
        self._gate = DecodeGate()
        self.commit_health = CommitHealth()
        self.ctx.metrics.commitments_failing.set_function(
            lambda: float(self.commit_health.failing(time.monotonic()))
        )
        self._answers_path = store.path.with_name("answered.log")
        self._answers: int | None = None
        # The chain's active profile per model, read once per head block (profilecheck.py).
        self.profiles = ActiveProfiles(ctx.contracts.models.profile_of, ctx.views.head)
        self._following: set[asyncio.Task[None]] = set()
        self.journal_poll_s = 0.5

    # -- component ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._recover()
        self._answers = os.open(
            self._answers_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600
        )
        self._running = True

    async def _recover(self) -> None:
        """Settle every job the last run answered but did not see through (module docstring)."""
        answered: dict[str, str] = {}
        if self._answers_path.exists():
            for line in self._answers_path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 2:
                    answered[parts[0]] = parts[1]
        for job_hex, model_hex in answered.items():
            if await self.store.run(self.store.get_job, job_hex) is None:
                await self._fail_at_restart(
                    Job(job_hex, model_hex, "computed", {"prover": self.ctx.me}),
                    "the node stopped after answering, before the job was recorded",
                )
        for job in await self.store.run(self.store.jobs, "computed"):
            await self._fail_at_restart(job, "the node stopped before the trace was stored")
        for job in await self.store.run(self.store.jobs, "committing"):
            record = await self.store.run(self.store.journal_get, f"commit:{job.job_id}")
            if record is None:
                await self._fail_at_restart(
                    job, "the node stopped before the commit transaction was journaled"
                )
            elif record.status in FINAL_TX:
                await self._settle_commit(job, record.status, record.tx_hash, record.error)
            else:
                task = asyncio.create_task(self._follow_commit(job), name="commit-follow")
                self._following.add(task)
                task.add_done_callback(self._following.discard)

    async def _follow_commit(self, job: Job) -> None:
        """A commit journaled before the crash: the sender re-broadcasts it; wait for its end."""
        while True:
            record = await self.store.run(self.store.journal_get, f"commit:{job.job_id}")
            if record is not None and record.status in FINAL_TX:
                await self._settle_commit(job, record.status, record.tx_hash, record.error)
                return
            await asyncio.sleep(self.journal_poll_s)

    async def _settle_commit(
        self, job: Job, status: TxStatus, tx_hash: str | None, error: str | None
    ) -> None:
        if status is TxStatus.CONFIRMED:
            data = {**job.data, "commit_tx": tx_hash}
            await self.store.run(self.store.put_job, _with(job, status="committed", data=data))
            log.info("result committed (after a restart)", job=job.job_id, tx=tx_hash)
        else:
            await self._fail_at_restart(job, f"commit transaction {status.value}: {error}")

    async def _fail_at_restart(self, job: Job, reason: str) -> None:
        log.error("answered job failed at restart: not committed", job=job.job_id, reason=reason)
        self.ctx.metrics.jobs.labels(role="prover", outcome="failed_at_restart").inc()
        data = {**job.data, "error": reason}
        await self.store.run(self.store.put_job, _with(job, status="failed", data=data))

    async def run(self) -> None:
        return None

    async def stop(self) -> None:
        self._running = False
        for task in self._following:  # the journal outlives us: the next start follows on
            task.cancel()
        await asyncio.gather(*self._following, return_exceptions=True)
        # Commitments already computing are allowed to finish inside the stop budget.
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._answers is not None:
            os.close(self._answers)
            self._answers = None

    def ready(self) -> bool:
        return self._running and not self.commit_health.failing(time.monotonic())

    def not_ready_reason(self) -> str | None:
        if not self._running:
            return "stopped"
        return self.commit_health.reason(time.monotonic())

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
        try:
            # Never a 200 for a job whose commit must revert ProfileMismatch.
            await self.profiles.check(model_id, served.profile_id)
        except ProfileChanged as exc:
            self.ctx.metrics.jobs.labels(role="prover", outcome="refused_profile").inc()
            log.error("job refused: profile changed on chain", error=str(exc))
            raise
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
        if self._answers is not None:
            # Before the client sees the output: a crash from here on leaves a trace of the job
            # that the next start settles (one append, no fsync: ~µs, SIGKILL-safe).
            os.write(self._answers, f"{job_id.hex()} {model_id.hex()}\n".encode())
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
                value=self.ctx.params.prover_bond,
            )
            record = await self.ctx.sender.submit(f"commit:{hexid}", tx)
            data["commit_tx"] = getattr(record, "tx_hash", None)
            await self.store.run(
                self.store.put_job, Job(hexid, model.model_id.hex(), "committed", data)
            )
            self.commit_health.succeeded()
            log.info("result committed", job=hexid, ops=commitment.num_ops, tx=data["commit_tx"])
        except Exception as exc:
            error = repr(exc) if str(exc) else type(exc).__name__
            self.commit_health.failed(error, time.monotonic())
            log.error("commit failed", job=hexid, error=error)
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
                    408: "request body too slow",
                    409: "the chain's active profile for the model is not the one served",
                    413: "request too large",
                    415: "unsupported media type or charset",
                    503: "queue full, busy decoding or chain unreadable (see Retry-After)",
                },
                response_schema=INFER_RESPONSE_SCHEMA,
                request_schema=INFER_REQUEST_SCHEMA,
                request_content={
                    "application/octet-stream": {
                        "type": "string",
                        "format": "binary",
                        "description": "safetensors; the model id goes in the model_id query",
                    }
                },
                parameters={"query:model_id": ID_SCHEMA},
                tag="prover",
            ),
            Route(
                "GET",
                "/v1/jobs/{job_id}",
                self._handle_job,
                "A job's status, digests and commitment transaction",
                {200: "job", 400: "malformed job id", 404: "unknown job"},
                parameters={"job_id": ID_SCHEMA},
                tag="prover",
            ),
        ]

    async def _handle_infer(self, request: web.Request) -> web.Response:
        # Checked before the body is read: a prover whose commitments fail takes no jobs.
        reason = self.commit_health.reason(time.monotonic())
        if reason is not None:
            return json_error(
                503,
                "not accepting jobs",
                reason,
                headers={"Retry-After": str(int(self.commit_health.retry_after_s))},
            )
        ctype = request.content_type
        if ctype not in ("application/json", "application/octet-stream"):
            raise BodyError(
                415, "unsupported media type", "send application/json or application/octet-stream"
            )
        # Body read and decode hold a gate slot; queued requests have not read their bodies.
        async with self._gate.slot():
            try:
                if ctype == "application/octet-stream":
                    model_hex = request.query.get("model_id", "")
                    raw = await read_body(request, SAFETENSORS_BODY_LIMIT)
                    inputs = await self._gate.run(tensors_from_safetensors, raw)
                else:
                    check_charset(request)
                    raw = await read_body(request, JSON_BODY_LIMIT)
                    model_hex, inputs = await self._gate.run(_decode_infer_json, raw)
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
        except ProfileChanged as exc:
            return json_error(409, "profile changed on chain", str(exc))
        except ChainUnavailable as exc:
            return json_error(503, "chain unavailable", str(exc))
        # Encoding large outputs is CPU work too: off the loop.
        payload = await asyncio.to_thread(_encode_result, result)
        return web.Response(body=payload, content_type="application/json")

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
        return json_body(body)


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


ID_PATTERN = "^0x[0-9a-fA-F]{64}$"
ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": ID_PATTERN}
_ID = re.compile(ID_PATTERN)


def _bytes32(text: str) -> bytes:
    # The same pattern the OpenAPI schema states (``bytes.fromhex`` alone would also take
    # spaces and a missing prefix).
    if not _ID.fullmatch(text):
        raise ValueError("id must be 32 bytes of hex")
    return bytes.fromhex(text[2:])


_DTYPE_NAMES = sorted(DTYPES)
_NUMBER_OR_NONFINITE = {
    "oneOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}],
}
TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["shape", "data"],
    "additionalProperties": False,
    "properties": {
        "dtype": {"type": "string", "enum": _DTYPE_NAMES, "default": "float32"},
        "shape": {
            "type": "array",
            "maxItems": MAX_DIMS,
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_JSON_ELEMENTS},
        },
        "data": {
            "description": "nested lists matching shape (a bare number for shape []); "
            "finite numbers within the dtype's range",
        },
    },
}
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_id", "inputs"],
    "additionalProperties": False,
    "properties": {
        "model_id": ID_SCHEMA,
        "inputs": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_TENSORS,
            "additionalProperties": TENSOR_SCHEMA,
        },
    },
}
INFER_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["job_id", "model_id", "outputs", "seconds", "status"],
    "properties": {
        "job_id": ID_SCHEMA,
        "model_id": ID_SCHEMA,
        "outputs": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["dtype", "shape", "data"],
                "properties": {
                    "dtype": {"type": "string", "enum": _DTYPE_NAMES},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "data": {
                        "description": "nested lists; non-finite values are the strings "
                        '"NaN", "Infinity", "-Infinity"',
                        "anyOf": [
                            {"type": "array"},
                            *_NUMBER_OR_NONFINITE["oneOf"],
                            {"type": "boolean"},
                        ],
                    },
                },
            },
        },
        "seconds": {"type": "number", "minimum": 0},
        "status": {"type": "string"},
    },
}


def _decode_infer_json(raw: bytes) -> tuple[str, dict[str, torch.Tensor]]:
    """Body → (model id text, tensors); runs on a worker thread."""
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise BodyError(400, "body must be an object")
    unknown = set(body) - {"model_id", "inputs"}
    if unknown:
        raise BodyError(400, "unknown fields", ", ".join(sorted(unknown)))
    model_hex = body.get("model_id", "")
    if not isinstance(model_hex, str):
        raise ValueError("id must be 32 bytes of hex")
    return model_hex, tensors_from_json(body.get("inputs"))


def _encode_result(result: InferResult) -> bytes:
    return dumps(
        {
            "job_id": "0x" + result.job_id.hex(),
            "model_id": "0x" + result.model_id.hex(),
            "outputs": {k: tensor_to_json(v) for k, v in result.outputs.items()},
            "seconds": result.seconds,
            "status": "committing",
        }
    )


def _with(job: Job, **changes: Any) -> Job:
    return Job(
        changes.get("job_id", job.job_id),
        changes.get("model_id", job.model_id),
        changes.get("status", job.status),
        changes.get("data", job.data),
    )
