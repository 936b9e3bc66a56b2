"""Attacks on the challenge queue, against the real contracts: a prover shielding its cheat with
a challenge of its own (timing out, or losing the vote on purpose) and votes replayed from an
earlier dispute of the same result. Each time the attacker loses and the honest challenger that
comes next wins."""

from __future__ import annotations

import pytest

from taonode.chain.bindings.coordinator import DisputeOpened, DisputeResolved, ResultReopened
from taonode.chain.states import NOT_VOTED, Outcome, Phase, Reason, ResultStatus
from taonode.chain.tx import ContractRevert
from taonode.protocol.votes import Verdict, dispute_id
from tests.chain.helpers import (
    CHALLENGER,
    CLIENT,
    ETHER,
    PROVER,
    Env,
    Trace,
    assert_solvent,
    draw,
    h,
    key_of,
    open_job,
    play_to_leaf,
    submit_all,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
JOB = h("job")
FEE = ETHER // 10
SYBIL = 18  # a second key of the prover's
VOTER_STAKES = [2] * 8
NUM_OPS = 9


async def cheating_job(env: Env) -> tuple[Trace, Trace]:
    """A committed cheat (op 0 wrong, every later op computed from it): (claimed, honest)."""
    await env.register_voters(VOTER_STAKES)
    honest = Trace.honest(NUM_OPS)
    claimed = honest.cheat_from(0)
    await open_job(env, JOB, claimed, fee=FEE)
    return claimed, honest


async def honest_challenger_wins(env: Env, claimed: Trace, honest: Trace, attempt: int) -> None:
    """The honest challenger disputes the re-opened result, descends to op 0 and the committee
    finds the violation: the result is rejected and the prover's bond goes to the challenger."""
    co = env.c.coordinator
    game = await play_to_leaf(env, JOB, claimed, honest)
    (opened,) = co.events_of(game.receipts[0], DisputeOpened)
    assert (opened.attempt, opened.challenger) == (attempt, env.addr(CHALLENGER))
    assert opened.dispute_id == dispute_id(JOB, attempt) == await co.dispute_id_of(JOB)
    assert game.leaf_op == 0
    members = await draw(env, JOB)
    await submit_all(env, JOB, members, Verdict.THEORETICAL_VIOLATION)
    receipt = await co.resolve(JOB)
    (ev,) = co.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.winner) == (Outcome.CHALLENGER_WON, env.addr(CHALLENGER))
    assert not co.events_of(receipt, ResultReopened)
    assert (await co.result_of(JOB)).status == ResultStatus.REJECTED
    p = env.params
    share = p.proverBond * p.voterRewardBps // 10_000 // len(members)
    assert await co.pending(env.addr(CHALLENGER)) == (
        p.challengerBond + p.proverBond - len(members) * share
    )
    assert await co.pending(env.addr(CLIENT)) == FEE  # the fee goes back to its payer


async def test_timeout_self_challenge_reopens_succeeds(env: Env) -> None:
    """Self-challenge shield, by timeout: the prover's sybil challenges its cheat and never
    moves. The timeout re-opens the result (it is not finalized), the sybil's bond goes to the
    treasury (the prover gets none of it), and the honest challenger then wins."""
    claimed, honest = await cheating_job(env)
    co, p = env.c.coordinator, env.params
    co_p = env.as_(PROVER).coordinator
    await env.as_(SYBIL).coordinator.challenge(JOB, value=p.challengerBond)
    # while the sybil's dispute is open, nobody can challenge or finalize (queued)
    with pytest.raises(ContractRevert, match="NotPending"):
        await env.as_(CHALLENGER).coordinator.challenge(JOB, value=p.challengerBond)
    await co_p.prover_move(JOB, *claimed.move(await co_p.expected_cuts(JOB)))
    await env.mine(p.moveTimeout + 1)
    receipt = await co_p.timeout(JOB)  # the prover claims its sybil's timeout
    (ev,) = co.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.reason) == (Outcome.PROVER_WON, Reason.CHALLENGER_TIMEOUT)
    (reopened,) = co.events_of(receipt, ResultReopened)
    assert (reopened.attempt, reopened.window_end) == (
        1,
        receipt["blockNumber"] + p.challengeWindow,
    )
    r = await co.result_of(JOB)
    assert (r.status, r.attempts) == (ResultStatus.PENDING, 1)
    assert await co.pending(env.addr(PROVER)) == 0
    assert await co.pending(env.addr(SYBIL)) == 0
    assert await co.pending(await co.treasury()) == p.challengerBond
    with pytest.raises(ContractRevert, match="WindowOpen"):
        await co.finalize(JOB)
    await assert_solvent(env)
    await honest_challenger_wins(env, claimed, honest, attempt=2)
    assert await co.pending(env.addr(PROVER)) == 0
    await assert_solvent(env)


async def test_resolve_sybil_loses_on_purpose_reopens_succeeds(env: Env) -> None:
    """Self-challenge shield, by vote: the sybil steers the game to an op that is honest in
    itself (the last one, computed from the tampered values) and the committee finds it within
    tolerance. The result re-opens; the sybil's bond pays the majority and the treasury, none
    goes to the prover; the honest challenger then wins."""
    claimed, honest = await cheating_job(env)
    co, p = env.c.coordinator, env.params
    # the sybil "agrees" with every digest of the claim: it descends to the last sub-segment
    game = await play_to_leaf(env, JOB, claimed, claimed, challenger=SYBIL)
    assert game.leaf_op == NUM_OPS - 1
    members = await draw(env, JOB)
    await submit_all(env, JOB, members, Verdict.WITHIN_TOLERANCE)
    receipt = await co.resolve(JOB)
    (ev,) = co.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.reason, ev.winner) == (Outcome.PROVER_WON, Reason.VOTE, env.addr(PROVER))
    assert len(co.events_of(receipt, ResultReopened)) == 1
    share = p.challengerBond * p.voterRewardBps // 10_000 // len(members)
    assert await co.pending(env.addr(PROVER)) == 0
    assert await co.pending(await co.treasury()) == p.challengerBond - len(members) * share
    assert (await co.result_of(JOB)).status == ResultStatus.PENDING
    await assert_solvent(env)
    await honest_challenger_wins(env, claimed, honest, attempt=2)
    assert await co.pending(env.addr(PROVER)) == 0
    await assert_solvent(env)


async def test_submit_votes_previous_attempt_reverts(env: Env) -> None:
    """Votes signed in dispute 1 of a result do not count in dispute 2: the vote binds the
    dispute id keccak(jobId, attempt). The committee and ballots start empty per attempt."""
    claimed, honest = await cheating_job(env)
    co, p = env.c.coordinator, env.params
    await play_to_leaf(env, JOB, claimed, claimed, challenger=SYBIL)
    first = await draw(env, JOB)
    await submit_all(env, JOB, first[:1], Verdict.WITHIN_TOLERANCE)
    await env.mine(p.voteWindow + 1)
    receipt = await co.resolve(JOB)  # one vote of three: no decision, the result re-opens
    (ev,) = co.events_of(receipt, DisputeResolved)
    assert ev.outcome == Outcome.NO_QUORUM
    assert await co.pending(env.addr(SYBIL)) == p.challengerBond  # refunded
    await play_to_leaf(env, JOB, claimed, honest)
    assert await co.committee_of(JOB) == []  # the first dispute's seats are gone
    second = await draw(env, JOB)
    t = await co.tally_of(JOB)
    assert (t.size, t.votes_cast, t.slash_votes, t.tolerant_votes) == (len(second), 0, 0, 0)
    assert all([await co.ballot_of(JOB, m) == NOT_VOTED for m in second])
    # every member's vote as signed for attempt 1 recovers someone else in attempt 2
    for seat, member in enumerate(second):
        stale = env.vote_sig(key_of(env, member), JOB, Verdict.WITHIN_TOLERANCE, attempt=1)
        with pytest.raises(ContractRevert, match="NotMember"):
            await co.submit_votes(JOB, [seat], [int(Verdict.WITHIN_TOLERANCE)], [stale])
    await submit_all(env, JOB, second, Verdict.THEORETICAL_VIOLATION)
    receipt = await co.resolve(JOB)
    (ev,) = co.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.winner) == (Outcome.CHALLENGER_WON, env.addr(CHALLENGER))
    await assert_solvent(env)


async def test_challenge_reopened_after_window_reverts(env: Env) -> None:
    """The renewed window is a real window: once it closes with no dispute the result can be
    finalized and no longer challenged."""
    claimed, _ = await cheating_job(env)
    co, p = env.c.coordinator, env.params
    co_p = env.as_(PROVER).coordinator
    await env.as_(SYBIL).coordinator.challenge(JOB, value=p.challengerBond)
    await co_p.prover_move(JOB, *claimed.move(await co_p.expected_cuts(JOB)))
    await env.mine(p.moveTimeout + 1)
    receipt = await co.timeout(JOB)
    (reopened,) = co.events_of(receipt, ResultReopened)
    await env.mine(reopened.window_end - await env.block() + 1)
    with pytest.raises(ContractRevert, match="WindowClosed"):
        await env.as_(CHALLENGER).coordinator.challenge(JOB, value=p.challengerBond)
    assert (await co.dispute_of(JOB)).phase == Phase.RESOLVED
