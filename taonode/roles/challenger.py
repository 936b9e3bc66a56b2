"""The challenger: samples committed results, re-executes them, and plays the dispute game.

Sampling uses the challenger's own deterministic signature over the job id, so the prover
cannot predict which results are checked and a restart repeats the same choice. In a dispute
the challenger re-executes every sub-segment from the *prover's* frontier at its start and
picks the one whose claimed end frontier deviates most relative to its calibrated threshold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog
import torch
from eth_account.messages import encode_defunct

from taonode.protocol.decisions import Assessment, Challenge, ChooseSubsegment, Evaluate
from taonode.protocol.decisions import should_sample as sample_draw
from taonode.roles.behaviour import ChallengerBehaviour
from taonode.roles.context import RoleContext, ServedModel
from taonode.roles.driver import Settled
from taonode.roles.jobdata import DataUnavailable
from taonode.runtime.execute import run_segment, run_traced
from taonode.store.state import Result, StateStore

log = structlog.get_logger("taonode.challenger")


class ChallengerService:
    name = "challenger"

    def __init__(
        self,
        ctx: RoleContext,
        store: StateStore,
        sample_rate: float,
        on_change: Callable[[], None] = lambda: None,
        fetch_attempts: int = 3,
        behaviour: ChallengerBehaviour | None = None,
    ) -> None:
        self.ctx = ctx
        self.behaviour = behaviour or ChallengerBehaviour()
        self.behaviour.attach(ctx)
        self.store = store
        self.sample_rate = sample_rate
        self.on_change = on_change
        self.fetch_attempts = fetch_attempts
        self.assessments: dict[bytes, Assessment] = {}
        self._running = False

    async def start(self) -> None:
        # Assessments are facts the node must not forget: re-deciding after a restart could
        # challenge twice or not at all.
        for result in await self.store.run(self.store.results):
            if result.data.get("role") == "challenger":
                self.assessments[bytes.fromhex(result.job_id)] = Assessment(result.status)
        self._running = True

    async def run(self) -> None:
        return None

    async def stop(self) -> None:
        self._running = False

    def ready(self) -> bool:
        return self._running

    def assessment(self, job_id: bytes) -> Assessment | None:
        return self.assessments.get(job_id)

    async def _remember(self, job_id: bytes, assessment: Assessment, **data: object) -> None:
        self.assessments[job_id] = assessment
        await self.store.run(
            self.store.put_result,
            Result(
                job_id.hex(), job_id.hex(), assessment.value, data={"role": "challenger", **data}
            ),
        )
        self.ctx.metrics.jobs.labels(role="challenger", outcome=assessment.value).inc()
        self.on_change()

    # -- evaluation --------------------------------------------------------------------------

    async def evaluate(self, action: Evaluate) -> None:
        view = self.ctx.views.view(action.job_id)
        if view is None:
            raise Settled("unknown job")
        chosen = self.behaviour.assess(view)
        if chosen is not None:
            await self._remember(action.job_id, chosen, chosen_by="behaviour")
            return
        served = self.ctx.models.get(view.model_id)
        signature = self.ctx.signer.sign_message(encode_defunct(primitive=action.job_id))
        if served is None or not sample_draw(signature, self.sample_rate):
            await self._remember(action.job_id, Assessment.NOT_SAMPLED)
            return
        peers = self.ctx.peers.peers_of(view.prover)
        started = time.perf_counter()
        try:
            inputs = await self._fetch(view.input_digest, peers, served.model.input_names)
            claimed = await self._fetch(view.output_digest, peers, served.model.outputs)
        except DataUnavailable as exc:
            log.warning("prover withholds data", job=action.job_id.hex(), error=str(exc))
            await self._remember(action.job_id, Assessment.UNAVAILABLE)
            return
        excess = await self.ctx.compute.inference.submit(self._reexecute, served, inputs, claimed)
        self.ctx.metrics.reexecution_seconds.labels(role="challenger").observe(
            time.perf_counter() - started
        )
        verdict = Assessment.DEVIATES if excess > 1.0 else Assessment.WITHIN_TOLERANCE
        log.info("result assessed", job=action.job_id.hex(), excess=excess, verdict=verdict.value)
        await self._remember(action.job_id, verdict, excess=excess)

    def _reexecute(
        self,
        served: ServedModel,
        inputs: dict[str, torch.Tensor],
        claimed: dict[str, torch.Tensor],
    ) -> float:
        trace = run_traced(served.model, inputs, self.ctx.device)
        own = {name: trace.values[name] for name in served.model.outputs}
        return served.judge.end_to_end_excess(claimed, own)

    async def _fetch(
        self,
        frontier_digest: bytes,
        peers: Sequence[str],
        names: Sequence[str],
        attempts: int | None = None,
    ) -> dict[str, torch.Tensor]:
        last: Exception | None = None
        for attempt in range(attempts or self.fetch_attempts):
            try:
                return await self.ctx.data.frontier(frontier_digest, peers, names)
            except (DataUnavailable, KeyError) as exc:
                last = exc
                await asyncio.sleep(0.2 * (attempt + 1))
        raise DataUnavailable(str(last))

    async def challenge(self, action: Challenge) -> None:
        tx = self.ctx.contracts.coordinator.challenge_tx(
            action.job_id, value=self.ctx.params.challenger_bond
        )
        await self.ctx.sender.submit(action.key, tx)
        log.info("challenge sent", job=action.job_id.hex())

    # -- dispute moves -----------------------------------------------------------------------

    async def choose(self, action: ChooseSubsegment) -> None:
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None:
            raise Settled("no dispute in view")
        dispute = view.dispute
        served = self.ctx.models.get(view.model_id)
        if served is None or dispute.digest_a is None or dispute.digest_b is None:
            raise Settled("cannot judge this dispute")
        bounds = [action.a, *action.cuts, action.b]
        digests = [dispute.digest_a, *action.cut_digests, dispute.digest_b]
        peers = list(self.ctx.peers.peers_of(view.prover))
        model = served.model
        started = time.perf_counter()
        # Every bound frontier is fetched once, all at the same time (each serves as the end of
        # one sub-segment and the start of the next).
        fetched = await asyncio.gather(
            # One attempt: a frontier the prover withholds during its own dispute is simply
            # treated as the worst deviation, there is no time to spend on retries.
            *(
                self._fetch(digests[j], peers, model.frontiers[c], attempts=1)
                for j, c in enumerate(bounds)
            ),
            return_exceptions=True,
        )
        excesses: list[float] = []
        for j in range(len(bounds) - 1):
            lo, hi = bounds[j], bounds[j + 1]
            start, claimed = fetched[j], fetched[j + 1]
            if isinstance(start, BaseException) or isinstance(claimed, BaseException):
                # Missing data is the prover's fault: follow it down to a leaf the committee
                # will find unavailable.
                excesses.append(float("inf"))
                continue
            excesses.append(
                await self.ctx.compute.inference.submit(
                    self._segment_excess, served, lo, hi, start, claimed
                )
            )
        self.ctx.metrics.reexecution_seconds.labels(role="challenger").observe(
            time.perf_counter() - started
        )
        index = self.behaviour.choose(action, excesses)
        log.info(
            "sub-segment chosen",
            job=action.job_id.hex(),
            round=action.round,
            segment=(bounds[index], bounds[index + 1]),
            excess=excesses[index],
        )
        tx = self.ctx.contracts.coordinator.challenger_move_tx(
            action.job_id, index, list(action.cut_digests)
        )
        await self.ctx.sender.submit(action.key, tx)

    def _segment_excess(
        self,
        served: ServedModel,
        a: int,
        b: int,
        start: dict[str, torch.Tensor],
        claimed: dict[str, torch.Tensor],
    ) -> float:
        own = run_segment(served.model, a, b, start, self.ctx.device)
        return served.judge.segment_excess(a, b, claimed, own)
