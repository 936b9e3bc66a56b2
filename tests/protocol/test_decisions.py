"""The pure protocol core: event reducer and each role's decisions, without chain or network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taonode.protocol.decisions import (
    PROVER_GRACE,
    Adjudicate,
    Assessment,
    Challenge,
    ChooseSubsegment,
    ClaimTimeout,
    DirectVote,
    DrawCommittee,
    Evaluate,
    Finalize,
    GossipVote,
    PostProverMove,
    Resolve,
    SubmitVotes,
    challenger_decide,
    prover_decide,
    should_sample,
    voter_decide,
)
from taonode.protocol.dispute import (
    ChainEvent,
    ChallengerMoved,
    CommitteeDrawn,
    DisputeOpened,
    DisputeResolved,
    JobView,
    LeafReached,
    Outcome,
    Phase,
    ProtocolError,
    ProverMoved,
    ResultCommitted,
    ResultStatus,
    VoteCast,
    apply,
    expected_cuts,
)
from taonode.protocol.schedule import cuts, subsegment
from taonode.protocol.votes import Verdict

JOB = bytes(range(32))
PROVER = "0x" + "aa" * 20
CHALLENGER = "0x" + "cc" * 20
VOTERS = tuple("0x" + f"{i:02x}" * 20 for i in range(1, 6))
K = 4


def _committed(num_ops: int = 10, window_end: int = 20) -> JobView:
    return apply(
        None,
        ResultCommitted(
            JOB,
            PROVER,
            b"m" * 32,
            b"p" * 32,
            b"i" * 32,
            b"o" * 32,
            b"t" * 32,
            num_ops,
            window_end,
            1,
        ),
    )


def _run(job: JobView | None, events: list[ChainEvent]) -> JobView:
    assert events
    for event in events:
        job = apply(job, event)
    assert job is not None
    return job


def test_prover_decide_finalizes_after_window_succeeds() -> None:
    job = _committed(window_end=20)
    assert prover_decide(job, PROVER, 20) == []
    assert prover_decide(job, PROVER, 21) == [Finalize(JOB)]
    assert prover_decide(job, CHALLENGER, 21) == []


def test_challenger_decide_evaluates_then_challenges_inside_window_succeeds() -> None:
    job = _committed(window_end=20)
    assert challenger_decide(job, CHALLENGER, 5, None) == [Evaluate(JOB)]
    assert challenger_decide(job, CHALLENGER, 5, Assessment.DEVIATES) == [Challenge(JOB)]
    assert challenger_decide(job, CHALLENGER, 5, Assessment.UNAVAILABLE) == [Challenge(JOB)]
    assert challenger_decide(job, CHALLENGER, 5, Assessment.WITHIN_TOLERANCE) == []
    assert challenger_decide(job, CHALLENGER, 5, Assessment.NOT_SAMPLED) == []
    # Past the window a challenge would revert: nothing to do.
    assert challenger_decide(job, CHALLENGER, 21, Assessment.DEVIATES) == []
    # Never challenge your own result.
    assert challenger_decide(job, PROVER, 5, Assessment.DEVIATES) == []


def _play_to_leaf(num_ops: int, choose: int) -> tuple[JobView, int]:
    """Plays moves with the decisions' own actions; returns the view at the leaf and the head."""
    job = apply(_committed(num_ops), DisputeOpened(JOB, CHALLENGER, 15, 10))
    head, round_ = 10, 0
    while True:
        assert job.dispute is not None
        (move,) = prover_decide(job, PROVER, head)
        assert isinstance(move, PostProverMove)
        assert (move.a, move.b, move.round) == (job.dispute.a, job.dispute.b, round_)
        posted = tuple(expected_cuts(job.dispute, K))
        interior = tuple(cuts(move.a, move.b, K))
        assert posted[len(posted) - len(interior) :] == interior
        assert (round_ == 0) == (posted[:2] == (0, num_ops))
        digests = tuple(bytes([round_, i]) * 16 for i in range(len(posted)))
        head += 1
        job = apply(job, ProverMoved(JOB, round_, move.a, move.b, posted, digests, head + 5, head))
        assert job.dispute is not None
        if round_ == 0:
            assert (job.dispute.digest_a, job.dispute.digest_b) == digests[:2]
        (pick,) = challenger_decide(job, CHALLENGER, head, Assessment.DEVIATES)
        assert isinstance(pick, ChooseSubsegment)
        assert pick.cuts == interior
        index = min(choose, len(interior))
        bound = (job.dispute.digest_a, *job.dispute.cut_digests, job.dispute.digest_b)
        a, b = subsegment(move.a, move.b, K, index)
        head += 1
        if b - a == 1:
            job = apply(job, LeafReached(JOB, a, b"x" * 32, b"y" * 32, head + 1, head))
            return job, head
        job = apply(job, ChallengerMoved(JOB, round_, index, a, b, head + 5, head))
        assert job.dispute is not None
        # The chosen sub-segment's end digests are the ones bound around it.
        assert (job.dispute.digest_a, job.dispute.digest_b) == (bound[index], bound[index + 1])
        round_ += 1


@pytest.mark.parametrize(("num_ops", "choose"), [(2, 0), (10, 3), (65, 1), (100, 7)])
def test_full_dispute_reaches_leaf_and_vote_succeeds(num_ops: int, choose: int) -> None:
    job, head = _play_to_leaf(num_ops, choose)
    dispute = job.dispute
    assert dispute is not None
    assert dispute.phase is Phase.AWAIT_DRAW
    assert dispute.b - dispute.a == 1
    assert dispute.seed_block is not None
    # The draw waits for a block after the seed block exists: the challenger draws at once,
    # the prover only after its grace, so one transaction does it.
    seed = dispute.seed_block
    assert challenger_decide(job, CHALLENGER, seed, Assessment.DEVIATES) == []
    assert challenger_decide(job, CHALLENGER, seed + 1, Assessment.DEVIATES) == [
        DrawCommittee(JOB, seed)
    ]
    assert prover_decide(job, PROVER, seed + PROVER_GRACE) == []
    assert prover_decide(job, PROVER, seed + PROVER_GRACE + 1) == [DrawCommittee(JOB, seed)]
    head = dispute.seed_block + 1
    job = apply(job, CommitteeDrawn(JOB, VOTERS, head + 20, head))
    me = VOTERS[0]
    (adjudicate,) = voter_decide(job, me, head, None, 0, 3, 3)
    assert isinstance(adjudicate, Adjudicate)
    assert adjudicate.op == dispute.leaf_op
    assert voter_decide(job, me, head, Verdict.EMPIRICAL_VIOLATION, 1, 3, 3) == [
        GossipVote(JOB, Verdict.EMPIRICAL_VIOLATION)
    ]
    assert voter_decide(job, me, head, Verdict.EMPIRICAL_VIOLATION, 3, 3, 3) == [
        GossipVote(JOB, Verdict.EMPIRICAL_VIOLATION),
        SubmitVotes(JOB, 0),
    ]
    # One vote already landed: a new submission (new key) carries the missing ones.
    with_one = apply(job, VoteCast(JOB, VOTERS[1], 2, head))
    (_, again) = voter_decide(with_one, me, head, Verdict.EMPIRICAL_VIOLATION, 3, 3, 3)
    assert again == SubmitVotes(JOB, 1)
    assert again.key != SubmitVotes(JOB, 0).key
    # Close to the deadline without its vote on chain, the member votes directly.
    assert voter_decide(job, me, head + 17, Verdict.EMPIRICAL_VIOLATION, 1, 3, 3) == [
        DirectVote(JOB, Verdict.EMPIRICAL_VIOLATION)
    ]
    # Not a member: only housekeeping.
    assert voter_decide(job, "0x" + "ee" * 20, head, None, 0, 3, 3) == []
    for voter in VOTERS:
        job = apply(job, VoteCast(JOB, voter, 2, head + 1))
    assert job.voted(me)
    assert challenger_decide(job, CHALLENGER, head + 1, Assessment.DEVIATES) == [Resolve(JOB)]
    assert prover_decide(job, PROVER, head + 1) == []
    assert prover_decide(job, PROVER, head + 1 + PROVER_GRACE) == [Resolve(JOB)]
    job = apply(job, DisputeResolved(JOB, Outcome.CHALLENGER_WON, CHALLENGER, "vote", head + 2))
    assert job.status is ResultStatus.REJECTED
    assert prover_decide(job, PROVER, head + 30) == []
    assert challenger_decide(job, CHALLENGER, head + 30, Assessment.DEVIATES) == []


def test_timeouts_are_claimed_by_the_waiting_side_succeeds() -> None:
    job = apply(_committed(), DisputeOpened(JOB, CHALLENGER, 15, 10))
    assert challenger_decide(job, CHALLENGER, 15, Assessment.DEVIATES) == []
    assert challenger_decide(job, CHALLENGER, 16, Assessment.DEVIATES) == [
        ClaimTimeout(JOB, Phase.PROVER_MOVE, 0)
    ]
    # The prover no longer moves once its deadline passed.
    assert prover_decide(job, PROVER, 16) == []
    job = apply(job, ProverMoved(JOB, 0, 0, 10, (0, 10, 2, 5, 7), (b"d" * 32,) * 5, 20, 12))
    assert prover_decide(job, PROVER, 20) == []
    assert prover_decide(job, PROVER, 21) == [ClaimTimeout(JOB, Phase.CHALLENGER_MOVE, 0)]
    assert challenger_decide(job, CHALLENGER, 21, Assessment.DEVIATES) == []


def test_action_keys_are_unique_per_step_succeeds() -> None:
    keys = {
        PostProverMove(JOB, 0, 0, 10).key,
        PostProverMove(JOB, 1, 0, 3).key,
        ChooseSubsegment(JOB, 0, 0, 10, (), ()).key,
        ClaimTimeout(JOB, Phase.PROVER_MOVE, 0).key,
        ClaimTimeout(JOB, Phase.CHALLENGER_MOVE, 0).key,
        DrawCommittee(JOB, 5).key,
        DrawCommittee(JOB, 300).key,
        Finalize(JOB).key,
        Challenge(JOB).key,
    }
    assert len(keys) == 9


def test_apply_out_of_order_events_reverts() -> None:
    with pytest.raises(ProtocolError):
        apply(None, DisputeOpened(JOB, CHALLENGER, 1, 1))
    job = _committed()
    with pytest.raises(ProtocolError):
        apply(job, ProverMoved(JOB, 0, 0, 10, (), (), 5, 5))
    with pytest.raises(ProtocolError):
        apply(job, ResultCommitted(JOB, PROVER, b"", b"", b"", b"", b"", 1, 1, 1))


@given(st.binary(min_size=65, max_size=65))
def test_should_sample_extremes_succeeds(signature: bytes) -> None:
    assert should_sample(signature, 1.0)
    assert not should_sample(signature, 0.0)


def test_should_sample_rate_is_respected_succeeds() -> None:
    hits = sum(should_sample(i.to_bytes(65, "big"), 0.25) for i in range(4000))
    assert 850 < hits < 1150  # 4000 × 0.25 = 1000, ±5σ ≈ ±137
