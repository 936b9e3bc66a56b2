"""The committee voter: registers with stake, judges the leaf op when drawn, and makes sure
its vote lands on chain (gossiped for one aggregated submission, or cast directly)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
import torch

from taonode.chain.tx import TxRequest
from taonode.p2p.committee import CommitteeChannel, CommitteeRound
from taonode.protocol.decisions import Adjudicate, DirectVote, GossipVote, SubmitVotes
from taonode.protocol.dispute import Phase
from taonode.protocol.votes import Verdict
from taonode.roles.behaviour import VoterBehaviour
from taonode.roles.context import RoleContext, ServedModel
from taonode.roles.driver import Settled
from taonode.roles.jobdata import DataUnavailable
from taonode.store.state import Result, StateStore, Vote

log = structlog.get_logger("taonode.voter")


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
        self.verdicts: dict[bytes, Verdict] = {}
        self._rounds: dict[bytes, tuple[contextlib.AsyncExitStack, CommitteeRound]] = {}
        self._running = False

    async def start(self) -> None:
        for result in await self.store.run(self.store.results):
            if result.data.get("role") == "voter":
                self.verdicts[bytes.fromhex(result.job_id)] = Verdict[result.status]
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
        for job_id, (_, round_) in list(self._rounds.items()):
            view = self.ctx.views.view(job_id)
            if view is None or view.dispute is None or view.dispute.phase is Phase.RESOLVED:
                await self.close_round(job_id)
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

    def verdict(self, job_id: bytes) -> Verdict | None:
        return self.verdicts.get(job_id)

    def collected(self, job_id: bytes) -> int:
        entry = self._rounds.get(job_id)
        return len(entry[1].votes) if entry is not None else 0

    # -- actions -----------------------------------------------------------------------------

    async def adjudicate(self, action: Adjudicate) -> None:
        view = self.ctx.views.view(action.job_id)
        if view is None:
            raise Settled("unknown job")
        served = self.ctx.models.get(view.model_id)
        started = time.perf_counter()
        if served is None:
            # A member that does not hold the model cannot judge; voting "unavailable" would
            # slash an honest prover, so it abstains (and is penalized as a non-voter).
            raise Settled("model not served here: abstaining")
        peers = list(self.ctx.peers.peers_of(view.prover))
        op = served.model.ops[action.op]
        try:
            inputs = await self.ctx.data.frontier(action.input_frontier, peers, op.inputs)
            claimed = await self.ctx.data.frontier(action.output_frontier, peers, op.outputs)
        except (DataUnavailable, KeyError, ValueError) as exc:
            log.warning("leaf data unavailable", job=action.job_id.hex(), error=repr(exc))
            verdict = Verdict.DATA_UNAVAILABLE
        else:
            verdict = await self.ctx.compute.inference.submit(
                self._judge, served, action.op, inputs, claimed
            )
        self.ctx.metrics.reexecution_seconds.labels(role="voter").observe(
            time.perf_counter() - started
        )
        verdict = self.behaviour.verdict(view, verdict)
        log.info("leaf judged", job=action.job_id.hex(), op=action.op, verdict=verdict.name)
        # Persisted before it is used: a restarted voter must vote what it judged.
        await self.store.run(
            self.store.put_result,
            Result(
                f"vote:{action.job_id.hex()}",
                action.job_id.hex(),
                verdict.name,
                data={"role": "voter"},
            ),
        )
        self.verdicts[action.job_id] = verdict
        self.on_change()

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
        if view is None or view.dispute is None:
            raise Settled("no dispute in view")
        if action.job_id not in self._rounds:
            stack = contextlib.AsyncExitStack()
            round_ = await stack.enter_async_context(
                self.committee.join(action.job_id, view.dispute.committee)
            )
            self._rounds[action.job_id] = (stack, round_)
        _, round_ = self._rounds[action.job_id]
        own = await round_.cast(action.verdict)
        await self.store.run(
            self.store.put_vote,
            Vote(action.job_id.hex(), own.voter, action.verdict.name, own.signature),
        )

    async def submit(self, action: SubmitVotes) -> None:
        entry = self._rounds.get(action.job_id)
        if entry is None:
            raise Settled("no votes collected here")
        view = self.ctx.views.view(action.job_id)
        if view is None or view.dispute is None:
            raise Settled("no dispute in view")
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
        if view is None or view.dispute is None:
            raise Settled("no dispute in view")
        seats = [m.lower() for m in view.dispute.committee]
        if self.ctx.me.lower() not in seats:
            raise Settled("not a member")
        seat = seats.index(self.ctx.me.lower())
        tx = self.ctx.contracts.coordinator.vote_tx(action.job_id, seat, int(action.verdict))
        await self.ctx.sender.submit(action.key, tx)
        log.info("voted directly", job=action.job_id.hex(), verdict=action.verdict.name)

    async def close_round(self, job_id: bytes) -> None:
        entry = self._rounds.pop(job_id, None)
        if entry is not None:
            await entry[0].aclose()
