"""The committee voter: registers with stake, judges the leaf op when drawn, and makes sure
its vote lands on chain (gossiped for one aggregated submission, or cast directly).

Judging a leaf ``a``: fetch the manifests behind the bound frontier digests at ``a`` and
``a+1`` and apply the leaf rule (:mod:`taonode.protocol.consistency`) before any tensor math;
a break is THEORETICAL_VIOLATION. Then op ``a``'s inputs and outputs are fetched and judged
(FP64 reference, bound, profile). Every fetch is retried until ``direct_vote_margin`` blocks
before the vote deadline, from the prover and from the other members and the challenger, who
serve what they fetched; only then is the data DATA_UNAVAILABLE (``docs/availability.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog
import torch

from taonode.chain.tx import TxRequest
from taonode.p2p.committee import CommitteeChannel, CommitteeRound
from taonode.protocol.consistency import leaf_inconsistencies
from taonode.protocol.decisions import Adjudicate, DirectVote, GossipVote, SubmitVotes
from taonode.protocol.dispute import JobView, Phase
from taonode.protocol.votes import Verdict, dispute_id
from taonode.roles.availability import DEFAULT_RETRY, RetryPolicy, fetch_until
from taonode.roles.behaviour import VoterBehaviour
from taonode.roles.context import ProfileUnavailable, RoleContext, ServedModel, judge_for
from taonode.roles.driver import Settled
from taonode.roles.jobdata import DataUnavailable
from taonode.store.state import Result, StateStore, Vote

log = structlog.get_logger("taonode.voter")
T = TypeVar("T")


class VoterService:
    name = "voter"

    def __init__(
        self,
        ctx: RoleContext,
        store: StateStore,
        committee: CommitteeChannel | None,
        on_change: Callable[[], None] = lambda: None,
        *,
        register_stake: int | None = None,
        peer_record: tuple[bytes, list[str]] | None = None,
        direct_vote_margin: int = 3,
        retry: RetryPolicy = DEFAULT_RETRY,
        behaviour: VoterBehaviour | None = None,
    ) -> None:
        self.ctx = ctx
        self.behaviour = behaviour or VoterBehaviour()
        self.behaviour.attach(ctx)
        self.store = store
        self.committee = committee
        self.on_change = on_change
        self.register_stake = register_stake
        self.peer_record = peer_record
        self.direct_vote_margin = direct_vote_margin
        self.retry = retry
        # Keyed by (job id, attempt): a result may be disputed again, with another leaf, and
        # each dispute's votes sign its own dispute id.
        self.verdicts: dict[tuple[bytes, int], Verdict] = {}
        self._rounds: dict[tuple[bytes, int], tuple[contextlib.AsyncExitStack, CommitteeRound]] = {}
        self._running = False

    async def start(self) -> None:
        for result in await self.store.run(self.store.results):
            if result.data.get("role") == "voter":
                attempt = int(result.data.get("attempt", 1))
                self.verdicts[(bytes.fromhex(result.job_id), attempt)] = Verdict[result.status]
        self._running = True

    async def run(self) -> None:
        # Registration waits for its receipt, which needs the sender's loop running: it
        # happens here, after every component started, not in start().
        if self.register_stake is not None:
            await self._register(self.register_stake)
        while True:
            await asyncio.sleep(1.0)
            await self.tidy_rounds()

    async def tidy_rounds(self) -> None:
        """Stop re-broadcasting a vote once it is on chain; leave a round once it is resolved."""
        for (job_id, attempt), (_, round_) in list(self._rounds.items()):
            view = self.ctx.views.view(job_id)
            if (
                view is None
                or view.dispute is None
                or view.dispute.attempt != attempt
                or view.dispute.phase is Phase.RESOLVED
            ):
                await self.close_round(job_id, attempt)
            elif view.voted(self.ctx.me):
                round_.stop_rebroadcast()

    async def stop(self) -> None:
        self._running = False
        for stack, _ in list(self._rounds.values()):
            with contextlib.suppress(Exception):
                await stack.aclose()
        self._rounds.clear()

    def ready(self) -> bool:
        return self._running

    async def _register(self, stake: int) -> None:
        stakes = self.ctx.contracts.stakes
        if await stakes.stake_of(self.ctx.me) > 0:
            return
        peer_id, addrs = self.peer_record or (b"", [])
        await self.ctx.sender.submit(
            f"register:{self.ctx.me.lower()}", stakes.register_tx(peer_id, addrs, value=stake)
        )
        log.info("registered as voter", stake=stake)

    # -- decisions' inputs -------------------------------------------------------------------

    def verdict(self, job_id: bytes, attempt: int = 1) -> Verdict | None:
        return self.verdicts.get((job_id, attempt))

    def collected(self, job_id: bytes, attempt: int = 1) -> int:
        entry = self._rounds.get((job_id, attempt))
        return len(entry[1].votes) if entry is not None else 0

    # -- actions -----------------------------------------------------------------------------

    async def adjudicate(self, action: Adjudicate) -> None:
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None:
            raise Settled("unknown job")
        served = self.ctx.models.get(view.model_id)
        started = time.perf_counter()
        if served is None:
            # A member that does not hold the model cannot judge; voting "unavailable" would
            # slash an honest prover, so it abstains (and is penalized as a non-voter).
            raise Settled("model not served here: abstaining")
        model = served.model
        if not 0 <= action.op < model.num_ops:
            raise Settled(f"leaf op {action.op} outside the model's {model.num_ops} ops")
        peers = self.leaf_peers(view)
        # Fetch until the point where the vote must go out directly; unavailability is a
        # verdict only once that whole time has passed (one BUSY or timeout is not).
        give_up = view.dispute.deadline - self.direct_vote_margin
        verdict, detail = await self._leaf_verdict(view, served, action, peers, give_up)
        self.ctx.metrics.reexecution_seconds.labels(role="voter").observe(
            time.perf_counter() - started
        )
        verdict = self.behaviour.verdict(view, verdict)
        log.info(
            "leaf judged",
            job=action.job_id.hex(),
            op=action.op,
            verdict=verdict.name,
            detail=detail or None,
        )
        # Persisted before it is used: a restarted voter must vote what it judged.
        await self.store.run(
            self.store.put_result,
            Result(
                f"vote:{action.job_id.hex()}:{action.attempt}",
                action.job_id.hex(),
                verdict.name,
                data={"role": "voter", "attempt": action.attempt, "detail": detail},
            ),
        )
        self.verdicts[(action.job_id, action.attempt)] = verdict
        self.on_change()

    def leaf_peers(self, view: JobView) -> list[str]:
        """Where leaf data may be found: the prover first, then the other committee members
        and the challenger (each serves what it fetched), never this node itself.

        A prover that serves only some members gains nothing: the others fetch from them.
        """
        mine = set(self.ctx.peers.peers_of(self.ctx.me))
        parties = [view.prover]
        if view.dispute is not None:
            parties += [m for m in view.dispute.committee if m.lower() != self.ctx.me.lower()]
            parties.append(view.dispute.challenger)
        out: list[str] = []
        for party in parties:
            for peer in self.ctx.peers.peers_of(party):
                if peer not in mine and peer not in out:
                    out.append(peer)
        return out

    async def _leaf_verdict(
        self,
        view: JobView,
        served: ServedModel,
        action: Adjudicate,
        peers: Sequence[str],
        give_up: int,
    ) -> tuple[Verdict, str]:
        """Manifests and the leaf rule first (digests only, no profile needed), then the op's
        tensors and math under the profile the result names."""
        model = served.model
        op = model.ops[action.op]

        def fetch(what: str, attempt: Callable[[], Awaitable[T]]) -> Awaitable[T]:
            return fetch_until(
                attempt,
                head=self.ctx.views.head,
                give_up_block=give_up,
                what=what,
                policy=self.retry,
            )

        try:
            before, after = await asyncio.gather(
                fetch("S_a manifest", lambda: self.ctx.data.manifest(action.input_frontier, peers)),
                fetch(
                    "S_a+1 manifest", lambda: self.ctx.data.manifest(action.output_frontier, peers)
                ),
            )
        except DataUnavailable as exc:
            return Verdict.DATA_UNAVAILABLE, str(exc)
        problems = leaf_inconsistencies(model.frontiers, action.op, before, after)
        if problems:
            # A provable break of the leaf rule (wrong names, a carried value rewritten):
            # no tolerance applies, whatever op a's own numbers are.
            return Verdict.THEORETICAL_VIOLATION, "; ".join(p.detail for p in problems)
        if not set(op.outputs) <= set(after.names()):
            # Only a model with a dead op output gets here: no honest prover could serve it.
            raise Settled(f"op {action.op} has outputs outside S_{action.op + 1}: abstaining")
        judge = await judge_for(self.ctx, view, peers)
        if judge is None:
            # Never judged with another profile: retried on later heads, and if nobody ever
            # serves the named profile this member abstains (a non-voter).
            raise ProfileUnavailable(
                f"profile 0x{view.profile_id.hex()[:16]} named by the result is unknown here"
            )
        served = ServedModel(model, view.profile_id, judge)
        try:
            inputs, claimed = await asyncio.gather(
                fetch("op inputs", lambda: self.ctx.data.tensors(before, op.inputs, peers)),
                fetch("op outputs", lambda: self.ctx.data.tensors(after, op.outputs, peers)),
            )
        except DataUnavailable as exc:
            return Verdict.DATA_UNAVAILABLE, str(exc)
        verdict = await self.ctx.compute.inference.submit(
            self._judge, served, action.op, inputs, claimed
        )
        return verdict, ""

    @staticmethod
    def _judge(
        served: ServedModel,
        op: int,
        inputs: dict[str, torch.Tensor],
        claimed: dict[str, torch.Tensor],
    ) -> Verdict:
        return served.judge.op_verdict(op, inputs, claimed)

    async def gossip(self, action: GossipVote) -> None:
        if self.committee is None:
            raise Settled("no p2p: vote directly")
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None or view.dispute.attempt != action.attempt:
            raise Settled("no such dispute in view")
        key = (action.job_id, action.attempt)
        if key not in self._rounds:
            stack = contextlib.AsyncExitStack()
            round_ = await stack.enter_async_context(
                self.committee.join(
                    dispute_id(action.job_id, action.attempt), view.dispute.committee
                )
            )
            self._rounds[key] = (stack, round_)
        _, round_ = self._rounds[key]
        own = await round_.cast(action.verdict)
        await self.store.run(
            self.store.put_vote,
            Vote(round_.dispute_id.hex(), own.voter, action.verdict.name, own.signature),
        )

    async def submit(self, action: SubmitVotes) -> None:
        entry = self._rounds.get((action.job_id, action.attempt))
        if entry is None:
            raise Settled("no votes collected here")
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None or view.dispute.attempt != action.attempt:
            raise Settled("no such dispute in view")
        already = {v.lower() for v, _ in view.dispute.votes}
        seats = {m.lower(): i for i, m in enumerate(view.dispute.committee)}
        votes = [
            v
            for v in entry[1].votes.values()
            if v.voter.lower() not in already and v.voter.lower() in seats
        ]
        votes.sort(key=lambda v: seats[v.voter.lower()])
        if not votes:
            raise Settled("every collected vote is on chain")
        tx: TxRequest = self.ctx.contracts.coordinator.submit_votes_tx(
            action.job_id,
            [seats[v.voter.lower()] for v in votes],
            [int(v.verdict) for v in votes],
            [v.signature for v in votes],
        )
        await self.ctx.sender.submit(action.key, tx)
        log.info("votes submitted", job=action.job_id.hex(), count=len(votes))

    async def direct(self, action: DirectVote) -> None:
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None or view.dispute.attempt != action.attempt:
            raise Settled("no such dispute in view")
        seats = [m.lower() for m in view.dispute.committee]
        if self.ctx.me.lower() not in seats:
            raise Settled("not a member")
        seat = seats.index(self.ctx.me.lower())
        tx = self.ctx.contracts.coordinator.vote_tx(action.job_id, seat, int(action.verdict))
        await self.ctx.sender.submit(action.key, tx)
        log.info("voted directly", job=action.job_id.hex(), verdict=action.verdict.name)

    async def close_round(self, job_id: bytes, attempt: int = 1) -> None:
        entry = self._rounds.pop((job_id, attempt), None)
        if entry is not None:
            await entry[0].aclose()
