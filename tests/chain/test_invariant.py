"""Hypothesis stateful test: whatever anyone does, every wei is accounted for.

Coordinator: balance == open bonds + escrowed fees + credits, where each term is summed from
per-job and per-account state (resultOf/disputeOf/feeOf/pending), independently of the
contract's own totals (which must agree too). Stake registry: balance == Σ stake + Σ unbonding
+ Σ credits over every account. Runs on both backends, each in its own event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from taonode.chain.anvil import AnvilChain
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import LocalChain
from taonode.chain.states import NOT_VOTED, Phase, ResultStatus
from taonode.chain.tx import ContractRevert
from taonode.protocol import schedule
from taonode.protocol.votes import Verdict
from tests.chain.helpers import (
    CHALLENGER,
    CLIENT,
    ETHER,
    FIRST_VOTER,
    PROVER,
    TEST_PARAMS,
    Env,
    Trace,
    h,
    key_of,
    make_env,
)

T = TypeVar("T")
VOTERS = list(range(FIRST_VOTER, FIRST_VOTER + 5))
ACTORS = [PROVER, CHALLENGER, CLIENT, *VOTERS, 0]
MAX_JOBS = 3
EXAMPLES, STEPS = 8, 20
REACHED: dict[str, int] = {}
UNSETTLED = ((ResultStatus.PENDING, None), (ResultStatus.DISPUTED, None))
IN_GAME = (
    (ResultStatus.PENDING, None),
    (None, Phase.PROVER_MOVE),
    (None, Phase.CHALLENGER_MOVE),
    (None, Phase.AWAIT_DRAW),
)
JOB = st.integers(0, MAX_JOBS - 1)


class Runner(Protocol):
    def __call__(self, aw: Awaitable[T], /) -> T: ...


def machine_for(env: Env, run: Runner) -> type[RuleBasedStateMachine]:
    p = env.params

    class Accounting(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = run(env.chain.snapshot())
            self.traces: dict[bytes, Trace] = {}
            self.seen: dict[bytes, tuple[int, int]] = {}  # job -> (status, phase), per step

        def with_state(self, j: int, *states: tuple[int | None, int | None]) -> bytes | None:
            """The ``j``-th (modulo) job whose (status, phase) matches one of ``states``."""
            jobs = [
                job
                for job, (status, phase) in self.seen.items()
                if any(s in (None, status) and f in (None, phase) for s, f in states)
            ]
            return jobs[j % len(jobs)] if jobs else None

        def any_state(self, *states: tuple[int | None, int | None]) -> bool:
            return self.with_state(0, *states) is not None

        def teardown(self) -> None:
            try:
                run(self.check_accounts())
                self.drain()
                run(self.check_accounts())
            finally:
                run(env.chain.revert(self.snapshot))

        def drain(self) -> None:
            """Play every open job to its end (votes, timeouts, the window), everyone withdraws:
            the coordinator must then hold exactly nothing."""
            co = env.c.coordinator
            for job in self.traces:
                for _ in range(24):  # disputes that do not reject re-open the result
                    r = run(co.result_of(job))
                    if r.status not in (ResultStatus.PENDING, ResultStatus.DISPUTED):
                        break
                    d = run(co.dispute_of(job))
                    if d.phase == Phase.VOTING:
                        members = run(co.committee_of(job))
                        seats = [
                            i
                            for i, m in enumerate(members)
                            if run(co.ballot_of(job, m)) == NOT_VOTED
                        ]
                        if seats:
                            v = Verdict.THEORETICAL_VIOLATION
                            n = run(env.attempt(job))
                            sigs = [env.vote_sig(key_of(env, members[i]), job, v, n) for i in seats]
                            self.attempt(co.submit_votes(job, seats, [int(v)] * len(seats), sigs))
                        if not self.attempt(co.resolve(job)):
                            run(env.mine(p.voteWindow + 1))
                    elif d.phase == Phase.AWAIT_DRAW:
                        self.move(job, 0)
                    else:
                        run(env.mine(max(p.challengeWindow, p.moveTimeout) + 1))
                        for end in (co.finalize, co.timeout):
                            if self.attempt(end(job)):
                                break
                status = run(co.result_of(job)).status
                assert status not in (ResultStatus.PENDING, ResultStatus.DISPUTED), status
            for a in ACTORS:
                if run(co.pending(env.addr(a))):
                    assert self.attempt(env.as_(a).coordinator.withdraw())
            run(self.check())
            assert run(env.balance(co.address)) == 0

        def attempt(self, coro: Coroutine[Any, Any, Any]) -> bool:
            name = str(getattr(coro, "__qualname__", "?"))
            try:
                run(coro)
            except ContractRevert:
                return False
            REACHED[name] = REACHED.get(name, 0) + 1
            return True

        @initialize()
        def disputed_job(self) -> None:
            """Every example starts with one job already in the committee vote."""
            job = h("job0")
            self.traces[job] = Trace.honest(5).cheat_from(2)
            run(env.commit(job, self.traces[job]))
            run(env.as_(CHALLENGER).coordinator.challenge(job, value=p.challengerBond))
            for _ in range(8):
                if not self.move(job, 0):
                    break
            assert run(env.c.coordinator.dispute_of(job)).phase == Phase.VOTING

        # -- stake registry
        @rule(i=st.sampled_from(VOTERS), amount=st.integers(1, 3))
        def top_up(self, i: int, amount: int) -> None:
            self.attempt(env.as_(i).stakes.top_up(value=amount * ETHER // 2))

        @rule(i=st.sampled_from(VOTERS), amount=st.integers(1, 4))
        def unbond(self, i: int, amount: int) -> None:
            self.attempt(env.as_(i).stakes.unbond(amount * ETHER // 2))

        @rule(i=st.sampled_from(VOTERS))
        def withdraw_stake(self, i: int) -> None:
            self.attempt(env.as_(i).stakes.withdraw())

        # -- results
        @precondition(lambda self: len(self.traces) < MAX_JOBS)
        @rule(n=st.sampled_from([1, 2, 5, 9]), cheat=st.booleans())
        def commit(self, n: int, cheat: bool) -> None:
            job = h(f"job{len(self.traces)}")
            trace = Trace.honest(n).cheat_from(n - 1) if cheat else Trace.honest(n)
            if self.attempt(env.commit(job, trace)):
                self.traces[job] = trace

        @precondition(lambda self: self.any_state(*UNSETTLED))
        @rule(j=JOB, fee=st.integers(1, 5))
        def fund(self, j: int, fee: int) -> None:
            job = self.with_state(j, *UNSETTLED)
            assert job is not None
            self.attempt(env.as_(CLIENT).coordinator.fund_job(job, value=fee * ETHER // 10))

        @rule(blocks=st.sampled_from([1, 10, 45]))
        def mine(self, blocks: int) -> None:
            run(env.mine(blocks))

        @precondition(lambda self: self.any_state(*UNSETTLED))
        @rule(j=JOB)
        def settle(self, j: int) -> None:
            """Whatever ends the job now: finalize, timeout or resolve."""
            co = env.c.coordinator
            job = self.with_state(j, *UNSETTLED)
            assert job is not None
            for end in (co.finalize, co.timeout, co.resolve):
                if self.attempt(end(job)):
                    return

        @precondition(lambda self: self.any_state(*IN_GAME))
        @rule(j=JOB, pick=st.integers(0, 7), moves=st.integers(1, 10))
        def dispute(self, j: int, pick: int, moves: int) -> None:
            """Challenge the job if it is open, then make up to ``moves`` game moves."""
            job = self.with_state(j, *IN_GAME)
            assert job is not None
            if self.seen[job][0] == ResultStatus.PENDING:
                co = env.as_(CHALLENGER).coordinator
                self.attempt(co.challenge(job, value=p.challengerBond))
            for _ in range(moves):
                if not self.move(job, pick):
                    return

        def move(self, job: bytes, pick: int) -> bool:
            """The next move of whoever is to move (prover posts its trace; the challenger
            picks a sub-segment; anyone draws)."""
            trace = self.traces.get(job)
            if trace is None:
                return False
            d = run(env.c.coordinator.dispute_of(job))
            if d.phase == Phase.PROVER_MOVE:
                co = env.as_(PROVER).coordinator
                cuts = run(co.expected_cuts(job))
                return self.attempt(co.prover_move(job, *trace.move(cuts)))
            if d.phase == Phase.CHALLENGER_MOVE:
                s = schedule.num_subsegments(d.a, d.b, p.k)
                digests = trace.cut_digests(d.a, d.b, p.k)
                co = env.as_(CHALLENGER).coordinator
                return self.attempt(co.challenger_move(job, pick % s, digests))
            if d.phase == Phase.AWAIT_DRAW:
                run(env.mine(2))
                return self.attempt(env.c.coordinator.draw_committee(job))
            return False

        @precondition(lambda self: self.any_state((None, Phase.VOTING)))
        @rule(
            j=JOB,
            verdict=st.sampled_from([Verdict.WITHIN_TOLERANCE, Verdict.DATA_UNAVAILABLE]),
            count=st.sampled_from([1, 3]),
        )
        def vote(self, j: int, verdict: Verdict, count: int) -> None:
            """The first ``count`` seats vote ``verdict`` (one aggregated submission)."""
            job = self.with_state(j, (None, Phase.VOTING))
            assert job is not None
            co = env.c.coordinator
            committee = run(co.committee_of(job))
            seats = [i for i, m in enumerate(committee) if run(co.ballot_of(job, m)) == NOT_VOTED]
            seats = seats[:count]
            n = run(env.attempt(job))
            sigs = [env.vote_sig(key_of(env, committee[i]), job, verdict, n) for i in seats]
            if sigs:
                self.attempt(co.submit_votes(job, seats, [int(verdict)] * len(sigs), sigs))
                self.attempt(co.resolve(job))  # succeeds once every member has voted

        @rule(who=st.sampled_from(ACTORS))
        def withdraw(self, who: int) -> None:
            self.attempt(env.as_(who).coordinator.withdraw())

        # -- the invariant
        @invariant()
        def every_wei_accounted_for(self) -> None:
            run(self.check())

        async def check(self) -> None:
            """Bonds and fees summed per job; credits and stake by the contracts' totals."""
            co, stakes = env.c.coordinator, env.c.stakes
            bonds = fees = 0
            for job in self.traces:
                r = await co.result_of(job)
                self.seen[job] = (r.status, (await co.dispute_of(job)).phase)
                if r.status == ResultStatus.PENDING:
                    bonds += p.proverBond
                elif r.status == ResultStatus.DISPUTED:
                    bonds += p.proverBond + p.challengerBond
                fees += (await co.fee_of(job)).amount
            balance = await env.balance(co.address)
            assert balance == bonds + fees + await co.total_pending()
            assert (await co.total_bonds(), await co.total_fees()) == (bonds, fees)
            staked = await stakes.total_stake() + await stakes.total_unbonding()
            assert await env.balance(stakes.address) == staked + await stakes.total_credits()

        async def check_accounts(self) -> None:
            """The totals equal the sums over every account."""
            co, stakes = env.c.coordinator, env.c.stakes
            pending = sum([await co.pending(env.addr(a)) for a in ACTORS])
            assert await co.total_pending() == pending
            stake = unbonding = 0
            for a in VOTERS:
                info = await stakes.node_info(env.addr(a))
                stake += info.stake
                unbonding += info.unbonding
            assert (await stakes.total_stake(), await stakes.total_unbonding()) == (
                stake,
                unbonding,
            )
            credits = sum([await stakes.credits(env.addr(a)) for a in ACTORS])
            assert await stakes.total_credits() == credits

    return Accounting


async def open_chain(backend: str) -> LocalChain:
    if backend == "anvil":
        return await AnvilChain.start(num_keys=20)
    return EmbeddedChain(num_keys=20)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def test_balance_invariant_stateful_succeeds(backend: str) -> None:
    REACHED.clear()
    loop = asyncio.new_event_loop()

    def run(aw: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await aw

        return loop.run_until_complete(wrap())

    chain = run(open_chain(backend))
    try:
        params = replace(
            TEST_PARAMS, challengeWindow=40, moveTimeout=25, voteWindow=25, unbondDelay=10
        )
        env = run(make_env(chain, params))
        for n in (1, 2, 5, 9):
            run(env.register_model(n))
        run(env.register_voters([1, 2, 3, 2, 1]))
        run_state_machine_as_test(
            machine_for(env, run),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                derandomize=True,
            ),
        )
    finally:
        run(chain.close())
        loop.close()
    # the examples (derandomized: the same every run) must reach the interesting paths
    for reached in ("challenger_move", "draw_committee", "submit_votes", "resolve", "withdraw"):
        assert any(name.endswith(reached) for name in REACHED), (reached, REACHED)
