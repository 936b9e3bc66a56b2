"""The dispute game: complete games, timeouts at each stage, wrong moves, the committee vote."""

from __future__ import annotations

import pytest
from eth_account import Account

from taonode.chain.bindings.coordinator import (
    CommitteeDrawn,
    DisputeResolved,
    LeafReached,
    NonVoterPenalized,
    ResultFinalized,
    ResultReopened,
    SeedReanchored,
)
from taonode.chain.states import NOT_VOTED, Outcome, Phase, Reason, ResultStatus
from taonode.chain.tx import ContractRevert
from taonode.protocol import schedule
from taonode.protocol.votes import Verdict, VoteDomain, sign_vote
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
# eight equal stakes: fewer than 3 distinct members in 12 samples has probability ~2e-6
VOTER_STAKES = [2] * 8


async def setup_game(env: Env, num_ops: int, cheat_at: int | None) -> tuple[Trace, Trace]:
    """Voters registered, the job committed; returns (prover's trace, challenger's reference)."""
    await env.register_voters(VOTER_STAKES)
    honest = Trace.honest(num_ops)
    claimed = honest if cheat_at is None else honest.cheat_from(cheat_at)
    await open_job(env, JOB, claimed, fee=FEE)
    # an honest prover meets a mistaken challenger who believes op 0 is wrong
    reference = honest if cheat_at is not None else honest.cheat_from(0)
    return claimed, reference


@pytest.mark.parametrize("num_ops", [1, 2, 3, 28], ids=["N1", "N2", "Nk", "Nk3p1"])
async def test_dispute_cheating_prover_loses_succeeds(env: Env, num_ops: int) -> None:
    cheat_at = num_ops - 1  # the last op: the longest path (max_rounds) for these N
    claimed, reference = await setup_game(env, num_ops, cheat_at)
    game = await play_to_leaf(env, JOB, claimed, reference)
    assert game.leaf_op == cheat_at
    assert game.rounds == schedule.max_rounds(num_ops, env.params.k)
    assert await env.c.coordinator.trace_root_of(JOB) == claimed.root  # revealed, checked
    leaf = env.c.coordinator.events_of(game.receipts[-1], LeafReached)[0]
    assert leaf.op == cheat_at
    assert leaf.input_frontier == claimed.digests[cheat_at]
    assert leaf.output_frontier == claimed.digests[cheat_at + 1]
    members = await draw(env, JOB)
    assert len(members) == env.params.committeeSize
    await submit_all(env, JOB, members, Verdict.THEORETICAL_VIOLATION)
    receipt = await env.as_(CLIENT).coordinator.resolve(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.reason, ev.winner) == (
        Outcome.CHALLENGER_WON,
        Reason.VOTE,
        env.addr(CHALLENGER),
    )
    assert (ev.slash_votes, ev.tolerant_votes, ev.votes_cast) == (3, 0, 3)
    p = env.params
    share = p.proverBond * p.voterRewardBps // 10_000 // 3
    co = env.c.coordinator
    assert (await co.result_of(JOB)).status == ResultStatus.REJECTED
    assert await co.pending(env.addr(CHALLENGER)) == p.challengerBond + p.proverBond - 3 * share
    assert await co.pending(env.addr(PROVER)) == 0
    assert await co.pending(env.addr(CLIENT)) == FEE  # fee refunded
    for m in members:
        assert await co.pending(m) == share
    await assert_solvent(env)


@pytest.mark.parametrize("num_ops", [1, 2, 3, 28], ids=["N1", "N2", "Nk", "Nk3p1"])
async def test_dispute_honest_prover_wins_succeeds(env: Env, num_ops: int) -> None:
    """An honest prover falsely challenged wins the vote: the result re-opens with a renewed
    window, and once that closes with no dispute it is finalized with the prover's bond back
    and the fee. The prover is never slashed; the challenger's bond pays the majority and
    the treasury, never the prover."""
    claimed, reference = await setup_game(env, num_ops, None)
    game = await play_to_leaf(env, JOB, claimed, reference)
    assert game.leaf_op == 0
    members = await draw(env, JOB)
    await submit_all(env, JOB, members, Verdict.WITHIN_TOLERANCE)
    receipt = await env.as_(CLIENT).coordinator.resolve(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.winner) == (Outcome.PROVER_WON, env.addr(PROVER))
    (reopened,) = env.c.coordinator.events_of(receipt, ResultReopened)
    p = env.params
    assert (reopened.attempt, reopened.window_end) == (
        1,
        receipt["blockNumber"] + p.challengeWindow,
    )
    share = p.challengerBond * p.voterRewardBps // 10_000 // 3
    co = env.c.coordinator
    r = await co.result_of(JOB)
    assert (r.status, r.window_end) == (ResultStatus.PENDING, reopened.window_end)
    assert await co.pending(env.addr(PROVER)) == 0
    assert await co.pending(env.addr(CHALLENGER)) == 0
    assert await co.pending(await co.treasury()) == p.challengerBond - 3 * share
    for m in members:
        assert await co.pending(m) == share
    await assert_solvent(env)
    with pytest.raises(ContractRevert, match="WindowOpen"):
        await co.finalize(JOB)
    await env.mine(reopened.window_end - await env.block() + 1)
    receipt = await env.as_(CLIENT).coordinator.finalize(JOB)
    (fin,) = env.c.coordinator.events_of(receipt, ResultFinalized)
    assert (fin.prover, fin.fee) == (env.addr(PROVER), FEE)
    assert (await co.result_of(JOB)).status == ResultStatus.FINALIZED
    assert await co.pending(env.addr(PROVER)) == p.proverBond + FEE
    await assert_solvent(env)


async def test_timeout_prover_first_move_succeeds(env: Env) -> None:
    await setup_game(env, 9, 3)
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    await env.mine(env.params.moveTimeout + 1)
    receipt = await env.as_(CLIENT).coordinator.timeout(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.reason) == (Outcome.CHALLENGER_WON, Reason.PROVER_TIMEOUT)
    p = env.params
    co = env.c.coordinator
    assert await co.pending(env.addr(CHALLENGER)) == p.challengerBond + p.proverBond
    assert (await co.result_of(JOB)).status == ResultStatus.REJECTED
    await assert_solvent(env)


async def test_timeout_challenger_move_succeeds(env: Env) -> None:
    """A challenger timeout re-opens the result; the whole forfeited bond goes to the
    treasury (none to the prover), the prover's bond and the fee stay escrowed."""
    claimed, _ = await setup_game(env, 9, 3)
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    cuts = await env.c.coordinator.expected_cuts(JOB)
    await env.as_(PROVER).coordinator.prover_move(JOB, *claimed.move(cuts))
    await env.mine(env.params.moveTimeout + 1)
    receipt = await env.as_(CLIENT).coordinator.timeout(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.reason) == (Outcome.PROVER_WON, Reason.CHALLENGER_TIMEOUT)
    (reopened,) = env.c.coordinator.events_of(receipt, ResultReopened)
    p = env.params
    co = env.c.coordinator
    assert await co.pending(env.addr(PROVER)) == 0
    assert await co.pending(await co.treasury()) == p.challengerBond
    r = await co.result_of(JOB)
    assert (r.status, r.window_end) == (ResultStatus.PENDING, reopened.window_end)
    assert await co.total_bonds() == p.proverBond
    assert (await co.fee_of(JOB)).amount == FEE
    await assert_solvent(env)


async def test_timeout_prover_later_round_succeeds(env: Env) -> None:
    claimed, _ = await setup_game(env, 9, 3)
    co_p, co_c = env.as_(PROVER).coordinator, env.as_(CHALLENGER).coordinator
    await co_c.challenge(JOB, value=env.params.challengerBond)
    await co_p.prover_move(JOB, *claimed.move(await co_p.expected_cuts(JOB)))
    await co_c.challenger_move(JOB, 1, claimed.cut_digests(0, 9, env.params.k))
    d = await co_p.dispute_of(JOB)
    assert (d.a, d.b, d.phase, d.round) == (3, 6, Phase.PROVER_MOVE, 1)
    await env.mine(env.params.moveTimeout + 1)
    with pytest.raises(ContractRevert, match="DeadlinePassed"):
        await co_p.prover_move(JOB, *claimed.move([4, 5]))
    receipt = await co_c.timeout(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.reason) == (Outcome.CHALLENGER_WON, Reason.PROVER_TIMEOUT)


async def test_timeout_before_deadline_reverts(env: Env) -> None:
    await setup_game(env, 9, 3)
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    with pytest.raises(ContractRevert, match="DeadlineNotPassed"):
        await env.c.coordinator.timeout(JOB)


async def test_timeout_at_leaf_reverts(env: Env) -> None:
    claimed, reference = await setup_game(env, 2, 1)
    await play_to_leaf(env, JOB, claimed, reference)
    await env.mine(env.params.moveTimeout + 1)
    with pytest.raises(ContractRevert, match="WrongPhase"):
        await env.c.coordinator.timeout(JOB)


async def test_challenger_move_after_deadline_reverts(env: Env) -> None:
    claimed, _ = await setup_game(env, 9, 3)
    co_p, co_c = env.as_(PROVER).coordinator, env.as_(CHALLENGER).coordinator
    await co_c.challenge(JOB, value=env.params.challengerBond)
    await co_p.prover_move(JOB, *claimed.move(await co_p.expected_cuts(JOB)))
    await env.mine(env.params.moveTimeout + 1)
    with pytest.raises(ContractRevert, match="DeadlinePassed"):
        await co_c.challenger_move(JOB, 0, claimed.cut_digests(0, 9, env.params.k))


async def test_prover_move_wrong_proof_reverts(env: Env) -> None:
    claimed, _ = await setup_game(env, 9, 3)
    co_p = env.as_(PROVER).coordinator
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    cuts = await co_p.expected_cuts(JOB)
    digests, proofs = claimed.move(cuts)
    forged = [*digests[:2], h("forged"), *digests[3:]]  # a digest not in the trace
    with pytest.raises(ContractRevert, match="BadProof"):
        await co_p.prover_move(JOB, forged, proofs)
    # a consistent proof against another root, with the committed ends: not the commitment
    other = Trace((claimed.digests[0], *Trace.honest(9, seed="o").digests[1:9], claimed.digests[9]))
    with pytest.raises(ContractRevert, match="CommitmentMismatch"):
        await co_p.prover_move(JOB, *other.move(cuts))


async def test_prover_move_ends_not_committed_reverts(env: Env) -> None:
    """Attack: the prover returns a manipulated output but commits an honest (recycled) trace.
    Its first move cannot bind cut N to anything but the committed output digest: the trace's
    own end is refused (CommitmentMismatch) and the committed digest has no proof (BadProof), so
    the prover can only time out and lose its bond to the challenger."""
    await env.register_voters(VOTER_STAKES)
    honest = Trace.honest(9)
    await env.commit(JOB, honest, ends=(honest.digests[0], h("manipulated output")))
    co_p, co_c = env.as_(PROVER).coordinator, env.as_(CHALLENGER).coordinator
    await co_c.challenge(JOB, value=env.params.challengerBond)
    cuts = await co_p.expected_cuts(JOB)
    with pytest.raises(ContractRevert, match="CommitmentMismatch"):
        await co_p.prover_move(JOB, *honest.move(cuts))
    digests, proofs = honest.move(cuts)
    with pytest.raises(ContractRevert, match="BadProof"):
        await co_p.prover_move(JOB, [digests[0], h("manipulated output"), *digests[2:]], proofs)
    await env.mine(env.params.moveTimeout + 1)
    receipt = await co_c.timeout(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert (ev.outcome, ev.winner) == (Outcome.CHALLENGER_WON, env.addr(CHALLENGER))
    assert (await co_p.result_of(JOB)).status == ResultStatus.REJECTED
    p = env.params
    assert await co_p.pending(env.addr(CHALLENGER)) == p.challengerBond + p.proverBond
    assert await co_p.pending(env.addr(PROVER)) == 0
    await assert_solvent(env)


async def test_prover_move_wrong_shape_reverts(env: Env) -> None:
    claimed, _ = await setup_game(env, 9, 3)
    co_p = env.as_(PROVER).coordinator
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    digests, proofs = claimed.move(await co_p.expected_cuts(JOB))
    with pytest.raises(ContractRevert, match="WrongDigestCount"):
        await co_p.prover_move(JOB, digests[:-1], proofs)
    with pytest.raises(ContractRevert, match="WrongProofLength"):
        await co_p.prover_move(JOB, digests, proofs[:-1])


async def test_prover_move_not_prover_reverts(env: Env) -> None:
    claimed, _ = await setup_game(env, 9, 3)
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    cuts = await env.c.coordinator.expected_cuts(JOB)
    with pytest.raises(ContractRevert, match="NotParty"):
        await env.as_(CHALLENGER).coordinator.prover_move(JOB, *claimed.move(cuts))


async def test_challenger_move_bad_index_reverts(env: Env) -> None:
    claimed, _ = await setup_game(env, 9, 3)
    co_p, co_c = env.as_(PROVER).coordinator, env.as_(CHALLENGER).coordinator
    await co_c.challenge(JOB, value=env.params.challengerBond)
    cut_digests = claimed.cut_digests(0, 9, env.params.k)
    with pytest.raises(ContractRevert, match="WrongPhase"):
        await co_c.challenger_move(JOB, 0, cut_digests)
    await co_p.prover_move(JOB, *claimed.move(await co_p.expected_cuts(JOB)))
    with pytest.raises(ContractRevert, match="BadIndex"):
        await co_c.challenger_move(JOB, env.params.k, cut_digests)
    with pytest.raises(ContractRevert, match="NotParty"):
        await co_p.challenger_move(JOB, 0, cut_digests)
    with pytest.raises(ContractRevert, match="WrongCutDigests"):
        await co_c.challenger_move(JOB, 0, [h("x"), *cut_digests[1:]])
    with pytest.raises(ContractRevert, match="WrongCutDigests"):
        await co_c.challenger_move(JOB, 0, cut_digests[:-1])


async def test_draw_committee_before_seed_reverts(env: Env) -> None:
    claimed, reference = await setup_game(env, 2, 1)
    await play_to_leaf(env, JOB, claimed, reference)
    with pytest.raises(ContractRevert, match="SeedNotReady"):
        await env.c.coordinator.draw_committee(JOB)


async def test_draw_committee_stale_seed_succeeds(env: Env) -> None:
    """A seed block older than 256 blocks is re-anchored to the next block, then drawn."""
    claimed, reference = await setup_game(env, 2, 1)
    await play_to_leaf(env, JOB, claimed, reference)
    await env.mine(300)
    receipt = await env.c.coordinator.draw_committee(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, SeedReanchored)
    assert ev.seed_block == receipt["blockNumber"] + 1
    assert (await env.c.coordinator.dispute_of(JOB)).phase == Phase.AWAIT_DRAW
    members = await draw(env, JOB)
    assert len(members) == env.params.committeeSize


async def test_draw_committee_excludes_parties_succeeds(env: Env) -> None:
    """Prover and challenger hold almost all stake, yet are never drawn."""
    claimed, reference = await setup_game(env, 2, 1)
    for who in (PROVER, CHALLENGER):
        await env.as_(who).stakes.register(b"p", [], value=1000 * ETHER)
    await play_to_leaf(env, JOB, claimed, reference)
    await env.mine(2)
    receipt = await env.c.coordinator.draw_committee(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, CommitteeDrawn)
    assert ev.members
    assert len(set(ev.members)) == len(ev.members)
    assert env.addr(PROVER) not in ev.members
    assert env.addr(CHALLENGER) not in ev.members
    assert ev.vote_deadline == receipt["blockNumber"] + env.params.voteWindow


async def voting(env: Env) -> list[str]:
    claimed, reference = await setup_game(env, 2, 1)
    await play_to_leaf(env, JOB, claimed, reference)
    return list(await draw(env, JOB))


def non_member(env: Env, members: list[str]) -> int:
    return next(v for v in env.voters if env.addr(v) not in members)


async def test_submit_votes_forged_reverts(env: Env) -> None:
    members = await voting(env)
    stranger = Account.create().key
    sig = sign_vote(stranger, env.domain, JOB, Verdict.WITHIN_TOLERANCE)
    with pytest.raises(ContractRevert, match="NotMember"):
        await env.c.coordinator.submit_votes(JOB, [0], [3], [sig])
    # a member's signature over another verdict recovers someone else
    sig = env.vote_sig(key_of(env, members[0]), JOB, Verdict.WITHIN_TOLERANCE)
    with pytest.raises(ContractRevert, match="NotMember"):
        await env.c.coordinator.submit_votes(JOB, [0], [int(Verdict.THEORETICAL_VIOLATION)], [sig])
    # a member's signature presented for another seat
    with pytest.raises(ContractRevert, match="NotMember"):
        await env.c.coordinator.submit_votes(JOB, [1], [3], [sig])
    with pytest.raises(ContractRevert, match="BadSeat"):
        await env.c.coordinator.submit_votes(JOB, [7], [3], [sig])


async def test_submit_votes_replayed_reverts(env: Env) -> None:
    members = await voting(env)
    who = key_of(env, members[0])
    other_dispute = env.vote_sig(who, h("another job"), Verdict.WITHIN_TOLERANCE)
    with pytest.raises(ContractRevert, match="NotMember"):
        await env.c.coordinator.submit_votes(JOB, [0], [3], [other_dispute])
    sig = env.vote_sig(who, JOB, Verdict.WITHIN_TOLERANCE)
    await env.c.coordinator.submit_votes(JOB, [0], [3], [sig])
    with pytest.raises(ContractRevert, match="AlreadyVoted"):
        await env.c.coordinator.submit_votes(JOB, [0], [3], [sig])


async def test_submit_votes_duplicate_reverts(env: Env) -> None:
    members = await voting(env)
    sig = env.vote_sig(key_of(env, members[0]), JOB, Verdict.EMPIRICAL_VIOLATION)
    with pytest.raises(ContractRevert, match="AlreadyVoted"):
        await env.c.coordinator.submit_votes(JOB, [0, 0], [2, 2], [sig, sig])
    assert (await env.c.coordinator.tally_of(JOB)).votes_cast == 0


async def test_submit_votes_wrong_domain_reverts(env: Env) -> None:
    members = await voting(env)
    key = env.chain.keys[key_of(env, members[0])]
    d = env.domain
    for domain in (
        VoteDomain(d.chain_id + 1, d.verifying_contract),
        VoteDomain(d.chain_id, env.c.stakes.address),
    ):
        sig = sign_vote(key, domain, JOB, Verdict.WITHIN_TOLERANCE)
        with pytest.raises(ContractRevert, match="NotMember"):
            await env.c.coordinator.submit_votes(JOB, [0], [3], [sig])


async def test_submit_votes_non_member_reverts(env: Env) -> None:
    members = await voting(env)
    outsider = non_member(env, members)  # registered and staked, but not drawn
    sig = env.vote_sig(outsider, JOB, Verdict.WITHIN_TOLERANCE)
    for seat in range(len(members)):
        with pytest.raises(ContractRevert, match="NotMember"):
            await env.c.coordinator.submit_votes(JOB, [seat], [3], [sig])
        with pytest.raises(ContractRevert, match="NotMember"):
            await env.as_(outsider).coordinator.vote(JOB, seat, 3)


async def test_submit_votes_malleable_signature_reverts(env: Env) -> None:
    members = await voting(env)
    sig = env.vote_sig(key_of(env, members[0]), JOB, Verdict.WITHIN_TOLERANCE)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(ContractRevert, match="BadSignature"):
        await env.c.coordinator.submit_votes(JOB, [0], [3], [flipped])


async def test_vote_bad_verdict_reverts(env: Env) -> None:
    members = await voting(env)
    member = env.as_(key_of(env, members[0])).coordinator
    for verdict in (0, 5):
        with pytest.raises(ContractRevert, match="BadVerdict"):
            await member.vote(JOB, 0, verdict)


async def test_vote_direct_succeeds(env: Env) -> None:
    members = await voting(env)
    who = key_of(env, members[0])
    await env.as_(who).coordinator.vote(JOB, 0, int(Verdict.DATA_UNAVAILABLE))
    assert await env.c.coordinator.ballot_of(JOB, members[0]) == Verdict.DATA_UNAVAILABLE
    assert await env.c.coordinator.ballot_of(JOB, members[1]) == NOT_VOTED
    t = await env.c.coordinator.tally_of(JOB)
    assert (t.size, t.votes_cast, t.slash_votes, t.tolerant_votes) == (3, 1, 1, 0)
    with pytest.raises(ContractRevert, match="AlreadyVoted"):
        await env.as_(who).coordinator.vote(JOB, 0, int(Verdict.DATA_UNAVAILABLE))


async def test_vote_after_deadline_reverts(env: Env) -> None:
    members = await voting(env)
    await env.mine(env.params.voteWindow + 1)
    with pytest.raises(ContractRevert, match="DeadlinePassed"):
        await env.as_(key_of(env, members[0])).coordinator.vote(JOB, 0, 3)


async def test_resolve_while_voting_reverts(env: Env) -> None:
    members = await voting(env)
    await env.as_(key_of(env, members[0])).coordinator.vote(JOB, 0, 3)
    with pytest.raises(ContractRevert, match="VotingOpen"):
        await env.c.coordinator.resolve(JOB)


async def test_resolve_no_votes_reopens_succeeds(env: Env) -> None:
    """Nobody votes: no decision. The challenger's bond is refunded, the result re-opens (the
    prover's bond and the fee stay escrowed), every member is penalized to the treasury."""
    members = await voting(env)
    await env.mine(env.params.voteWindow + 1)
    receipt = await env.c.coordinator.resolve(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert ev.outcome == Outcome.NO_QUORUM
    assert len(env.c.coordinator.events_of(receipt, ResultReopened)) == 1
    penalties = env.c.coordinator.events_of(receipt, NonVoterPenalized)
    assert sorted(p.voter for p in penalties) == sorted(members)
    assert all(p.amount == env.params.nonVoterPenalty for p in penalties)
    co, p = env.c.coordinator, env.params
    assert (await co.result_of(JOB)).status == ResultStatus.PENDING
    assert await co.pending(env.addr(PROVER)) == 0
    assert await co.pending(env.addr(CHALLENGER)) == p.challengerBond
    assert (await co.fee_of(JOB)).amount == FEE
    treasury = await co.treasury()
    assert await env.c.stakes.credits(treasury) == 3 * p.nonVoterPenalty
    await assert_solvent(env)


async def test_resolve_partial_quorum_succeeds(env: Env) -> None:
    """Two of three vote to slash: decided; the silent member's penalty goes to the winner."""
    members = await voting(env)
    await submit_all(env, JOB, members[:2], Verdict.EMPIRICAL_VIOLATION)
    await env.mine(env.params.voteWindow + 1)
    receipt = await env.c.coordinator.resolve(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert ev.outcome == Outcome.CHALLENGER_WON
    (pen,) = env.c.coordinator.events_of(receipt, NonVoterPenalized)
    assert pen.voter == members[2]
    assert await env.c.stakes.credits(env.addr(CHALLENGER)) == env.params.nonVoterPenalty
    share = env.params.proverBond * env.params.voterRewardBps // 10_000 // 2
    assert await env.c.coordinator.pending(members[0]) == share
    assert await env.c.coordinator.pending(members[2]) == 0
    await assert_solvent(env)


async def test_resolve_split_vote_no_quorum_succeeds(env: Env) -> None:
    """One slash, one tolerant, one silent with quorum 2: no decision."""
    members = await voting(env)
    await submit_all(env, JOB, members[:1], Verdict.THEORETICAL_VIOLATION)
    await submit_all(env, JOB, members[1:2], Verdict.WITHIN_TOLERANCE)
    await env.mine(env.params.voteWindow + 1)
    receipt = await env.c.coordinator.resolve(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, DisputeResolved)
    assert ev.outcome == Outcome.NO_QUORUM
    await assert_solvent(env)
