"""The challenger: samples committed results, re-executes them, and plays the dispute game.

Sampling uses the challenger's own deterministic signature over the job id, so the prover
cannot predict which results are checked and a restart repeats the same choice. In a dispute
the challenger first checks the manifests of every posted cut against the cut rule
(:mod:`taonode.protocol.consistency`: exact frontier names, carried values keep their digest),
then re-executes every consistent sub-segment from the *prover's* frontier at its start and
compares the values the sub-segment produces with the prover's, relative to the calibrated
threshold; :func:`taonode.protocol.choice.choose_subsegment` picks the one to descend into.
Every fetch is retried until the phase's deadline minus ``deadline_margin`` blocks
(:mod:`taonode.roles.availability`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence

import structlog
import torch
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

from taonode.protocol.choice import Evidence, SubsegmentScore, choose_subsegment
from taonode.protocol.consistency import (
    manifest_names_problem,
    produced_values,
    segment_inconsistencies,
)
from taonode.protocol.decisions import Assessment, Challenge, ChooseSubsegment, Evaluate
from taonode.protocol.decisions import should_sample as sample_draw
from taonode.protocol.dispute import JobView
from taonode.protocol.manifest import FrontierManifest
from taonode.roles.availability import DEFAULT_RETRY, RetryPolicy, fetch_until
from taonode.roles.behaviour import ChallengerBehaviour
from taonode.roles.context import ProfileUnavailable, RoleContext, ServedModel, judge_for
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
        *,
        deadline_margin: int = 3,
        retry: RetryPolicy = DEFAULT_RETRY,
        behaviour: ChallengerBehaviour | None = None,
    ) -> None:
        self.ctx = ctx
        self.behaviour = behaviour or ChallengerBehaviour()
        self.behaviour.attach(ctx)
        self.store = store
        self.sample_rate = sample_rate
        self.on_change = on_change
        self.deadline_margin = deadline_margin
        """Blocks before a deadline at which fetching stops (the move must still land)."""
        self.retry = retry
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
        served = await self._committed(view, served, peers)
        model = served.model
        started = time.perf_counter()
        # The challenge must land before the window closes: retry for half the time left (at
        # least a margin before the end), so the challenge itself still has time to be mined.
        left = view.window_end - self.ctx.views.head()
        give_up = view.window_end - max(self.deadline_margin, left // 2)
        try:
            ends = await asyncio.gather(
                self._manifest(view.input_digest, peers, give_up),
                self._manifest(view.output_digest, peers, give_up),
            )
        except DataUnavailable as exc:
            log.warning("prover withholds data", job=action.job_id.hex(), error=str(exc))
            await self._remember(action.job_id, Assessment.UNAVAILABLE)
            return
        for cut, manifest in zip((0, model.num_ops), ends, strict=True):
            problem = manifest_names_problem(model.frontiers, cut, manifest)
            if problem is not None:
                # Committed input/output that do not even name the model's values: challenge
                # (the game's manifests at cut 0 and N are the same digests).
                log.warning(
                    "result breaks the manifest rule",
                    job=action.job_id.hex(),
                    problem=problem.detail,
                )
                await self._remember(action.job_id, Assessment.DEVIATES, excess=float("inf"))
                return
        try:
            inputs, claimed = await asyncio.gather(
                self._tensors(ends[0], model.input_names, peers, give_up),
                self._tensors(ends[1], model.outputs, peers, give_up),
            )
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

    async def _committed(
        self, view: JobView, served: ServedModel, peers: Sequence[str]
    ) -> ServedModel:
        """``served`` with the judge of the profile the result names on chain.

        Without that profile the challenger does not judge at all (the action is retried on a
        later head while the phase lasts); it never falls back to its local profile.
        """
        judge = await judge_for(self.ctx, view, peers)
        if judge is None:
            raise ProfileUnavailable(
                f"profile 0x{view.profile_id.hex()[:16]} named by the result is unknown here"
            )
        return ServedModel(served.model, view.profile_id, judge)

    def _reexecute(
        self,
        served: ServedModel,
        inputs: dict[str, torch.Tensor],
        claimed: dict[str, torch.Tensor],
    ) -> float:
        trace = run_traced(served.model, inputs, self.ctx.device)
        own = {name: trace.values[name] for name in served.model.outputs}
        return served.judge.end_to_end_excess(claimed, own)

    async def _manifest(
        self, frontier_digest: bytes, peers: Sequence[str], give_up_block: int
    ) -> FrontierManifest:
        return await fetch_until(
            lambda: self.ctx.data.manifest(frontier_digest, peers),
            head=self.ctx.views.head,
            give_up_block=give_up_block,
            what=f"manifest {frontier_digest.hex()[:12]}",
            policy=self.retry,
        )

    async def _tensors(
        self,
        manifest: FrontierManifest,
        names: Sequence[str],
        peers: Sequence[str],
        give_up_block: int,
    ) -> dict[str, torch.Tensor]:
        return await fetch_until(
            lambda: self.ctx.data.tensors(manifest, names, peers),
            head=self.ctx.views.head,
            give_up_block=give_up_block,
            what=f"tensors of {manifest.digest.hex()[:12]}",
            policy=self.retry,
        )

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
        served = await self._committed(view, served, self.ctx.peers.peers_of(view.prover))
        model = served.model
        if (
            len(bounds) != len(digests)
            or not all(0 <= c <= model.num_ops for c in bounds)
            or any(lo >= hi for lo, hi in itertools.pairwise(bounds))
        ):
            raise Settled(f"cuts {bounds} do not fit the model's {model.num_ops} ops")
        started = time.perf_counter()
        scores = await self.score_subsegments(
            served, view.prover, bounds, digests, dispute.deadline - self.deadline_margin
        )
        self.ctx.metrics.reexecution_seconds.labels(role="challenger").observe(
            time.perf_counter() - started
        )
        index = self.behaviour.choose(
            action, scores, choose_subsegment(scores, self._draw(action.job_id, action.round))
        )
        log.info(
            "sub-segment chosen",
            job=action.job_id.hex(),
            round=action.round,
            segment=(bounds[index], bounds[index + 1]),
            evidence=scores[index].evidence.value,
            excess=scores[index].excess,
            detail=scores[index].detail or None,
        )
        tx = self.ctx.contracts.coordinator.challenger_move_tx(
            action.job_id, index, list(action.cut_digests)
        )
        await self.ctx.sender.submit(action.key, tx)

    async def score_subsegments(
        self,
        served: ServedModel,
        prover: str,
        bounds: Sequence[int],
        digests: Sequence[bytes],
        give_up_block: int,
    ) -> list[SubsegmentScore]:
        """Score every sub-segment ``[bounds[j], bounds[j+1])``: the cut rule on manifests
        (digests only) first, then re-execution of the consistent, available ones."""
        model = served.model
        peers = list(self.ctx.peers.peers_of(prover))
        last = len(bounds) - 1
        # Tensors: every value of a sub-segment's start (re-execution reads them), but at the
        # segment's own end only the values its last sub-segment produces (carried values are
        # judged by digest).
        wanted = [
            produced_values(model.frontiers, bounds[j - 1], c)
            if j == last
            else tuple(model.frontiers[c])
            for j, c in enumerate(bounds)
        ]

        async def fetch_bound(
            j: int,
        ) -> tuple[FrontierManifest | None, dict[str, torch.Tensor] | None]:
            # Each bound is the end of one sub-segment and the start of the next: fetched once,
            # manifest then tensors, each retried for the whole decision window.
            try:
                manifest = await self._manifest(digests[j], peers, give_up_block)
            except DataUnavailable:
                return None, None
            if manifest_names_problem(model.frontiers, bounds[j], manifest) is not None:
                return manifest, None  # a rule break: its tensors are not needed
            try:
                return manifest, await self._tensors(manifest, wanted[j], peers, give_up_block)
            except DataUnavailable:
                return manifest, None

        fetched = await asyncio.gather(*(fetch_bound(j) for j in range(len(bounds))))
        scores: list[SubsegmentScore | None] = [None] * last
        for j in range(last):
            lo, hi = bounds[j], bounds[j + 1]
            (start, _), (end, _) = fetched[j], fetched[j + 1]
            if start is None or end is None:
                cut = lo if start is None else hi
                scores[j] = SubsegmentScore.unavailable(f"manifest at cut {cut}")
                continue
            problems = segment_inconsistencies(model.frontiers, lo, hi, start, end)
            if problems:
                scores[j] = SubsegmentScore.rule_break(problems[0].detail)
        if any(s is not None and s.evidence is Evidence.RULE_BREAK for s in scores):
            # A provable break decides the move: no re-execution needed.
            return [s or SubsegmentScore.measured(0.0) for s in scores]
        out: list[SubsegmentScore] = []
        for j in range(last):
            lo, hi = bounds[j], bounds[j + 1]
            known = scores[j]
            start_t, end_t = fetched[j][1], fetched[j + 1][1]
            if known is not None:
                out.append(known)
            elif start_t is None or end_t is None:
                out.append(SubsegmentScore.unavailable(f"tensors around [{lo}, {hi})"))
            else:
                claimed = {n: end_t[n] for n in produced_values(model.frontiers, lo, hi)}
                excess = await self.ctx.compute.inference.submit(
                    self._segment_excess, served, lo, hi, start_t, claimed
                )
                out.append(SubsegmentScore.measured(excess))
        return out

    def _draw(self, job_id: bytes, round_: int) -> int:
        """A number the prover cannot predict (the challenger's deterministic signature)."""
        signature = self.ctx.signer.sign_message(
            encode_defunct(primitive=b"subsegment" + job_id + round_.to_bytes(32, "big"))
        )
        return int.from_bytes(keccak(signature), "big")

    def _segment_excess(
        self,
        served: ServedModel,
        a: int,
        b: int,
        start: dict[str, torch.Tensor],
        claimed: dict[str, torch.Tensor],
    ) -> float:
        """Deviation of the values ``[a, b)`` produces (``claimed``) from re-execution."""
        own = run_segment(served.model, a, b, start, self.ctx.device)
        produced = {name: own[name] for name in claimed}
        return served.judge.segment_excess(a, b, claimed, produced)
