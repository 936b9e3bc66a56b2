"""Queued challenges in the pure core: a dispute that does not reject the result re-opens it,
the next dispute has its own attempt number (and so its own idempotency keys), and indices
taken from chain data are range-checked against the local model."""

from __future__ import annotations

import dataclasses

import pytest

from taonode.protocol.decisions import (
    Adjudicate,
    Assessment,
    Challenge,
    ClaimTimeout,
    DrawCommittee,
    Finalize,
    GossipVote,
    PostProverMove,
    Resolve,
    challenger_decide,
    index_problem,
    prover_decide,
    voter_decide,
)
from taonode.protocol.dispute import (
    ChainEvent,
    CommitteeDrawn,
    DisputeOpened,
    DisputeResolved,
    JobView,
    LeafReached,
    Outcome,
    Phase,
    ProtocolError,
    ResultCommitted,
    ResultFinalized,
    ResultReopened,
    ResultStatus,
    apply,
)
from taonode.protocol.votes import Verdict

JOB = bytes(range(32))
PROVER = "0x" + "aa" * 20
SYBIL = "0x" + "5b" * 20
HONEST = "0x" + "cc" * 20
VOTERS = tuple("0x" + f"{i:02x}" * 20 for i in range(1, 4))
N = 10


def _run(job: JobView | None, events: list[ChainEvent]) -> JobView:
    for event in events:
        job = apply(job, event)
    assert job is not None
    return job


def _committed() -> JobView:
    return _run(
        None,
        [
            ResultCommitted(
                JOB, PROVER, b"m" * 32, b"p" * 32, b"i" * 32, b"o" * 32, b"t" * 32, N, 20, 1
            )
        ],
    )


def _ended(job: JobView, challenger: str, attempt: int, outcome: Outcome, reason: str) -> JobView:
    """Dispute ``attempt`` by ``challenger`` opened at block 10·attempt and ended as given,
    followed by the re-open the contract emits in the same transaction."""
    at = 10 * attempt
    job = _run(job, [DisputeOpened(JOB, challenger, at + 4, at, attempt)])
    winner = PROVER if outcome is Outcome.PROVER_WON else ""
    job = apply(job, DisputeResolved(JOB, outcome, winner, reason, at + 5))
    assert job.status is ResultStatus.DISPUTED  # not settled: the re-open follows
    assert job.dispute is not None
    assert job.dispute.phase is Phase.RESOLVED
    return apply(job, ResultReopened(JOB, attempt, at + 5 + 20, at + 5))


def test_apply_reopened_result_is_pending_succeeds() -> None:
    job = _ended(_committed(), SYBIL, 1, Outcome.PROVER_WON, "challenger_timeout")
    assert (job.status, job.window_end, job.dispute, job.attempt) == (
        ResultStatus.PENDING,
        35,
        None,
        1,
    )
    assert [d.challenger for d in job.history] == [SYBIL]
    # the prover finalizes only after the renewed window, not the original one
    assert prover_decide(job, PROVER, 21) == []
    assert prover_decide(job, PROVER, 36) == [Finalize(JOB)]
    # the honest challenger that found the result deviating challenges again
    (challenge,) = challenger_decide(job, HONEST, 30, Assessment.DEVIATES)
    assert challenge == Challenge(JOB, 2)
    assert challenge.key != Challenge(JOB, 1).key
    assert challenger_decide(job, HONEST, 36, Assessment.DEVIATES) == []  # window closed
    job = apply(job, DisputeOpened(JOB, HONEST, 34, 30, 2))
    assert job.dispute is not None
    assert (job.status, job.attempt, job.dispute.attempt) == (ResultStatus.DISPUTED, 2, 2)
    (move,) = prover_decide(job, PROVER, 31)
    assert move == PostProverMove(JOB, 0, 0, N, 2)
    assert move.key != PostProverMove(JOB, 0, 0, N, 1).key
    assert challenger_decide(job, HONEST, 35, Assessment.DEVIATES) == [
        ClaimTimeout(JOB, Phase.PROVER_MOVE, 0, 2)
    ]


def test_keys_of_second_dispute_differ_succeeds() -> None:
    """Every per-dispute step of attempt 2 has a key no step of attempt 1 had: a journaled
    transaction of the first dispute is never mistaken for the second's."""
    keys: dict[int, set[str]] = {}
    job = _committed()
    for attempt in (1, 2):
        at = 10 * attempt
        job = _run(
            job,
            [
                DisputeOpened(JOB, HONEST, at + 4, at, attempt),
                LeafReached(JOB, 3, b"x" * 32, b"y" * 32, at + 2, at + 1),
            ],
        )
        seen = {a.key for a in challenger_decide(job, HONEST, at + 3, Assessment.DEVIATES)}
        job = apply(job, CommitteeDrawn(JOB, VOTERS, at + 8, at + 3))
        seen |= {a.key for a in voter_decide(job, VOTERS[0], at + 3, None, 0, 2, 1)}
        seen |= {
            a.key for a in voter_decide(job, VOTERS[0], at + 3, Verdict.WITHIN_TOLERANCE, 2, 2, 1)
        }
        seen |= {a.key for a in challenger_decide(job, HONEST, at + 9, Assessment.DEVIATES)}
        keys[attempt] = seen
        if attempt == 1:
            job = apply(job, DisputeResolved(JOB, Outcome.NO_QUORUM, "", "vote", at + 9))
            job = apply(job, ResultReopened(JOB, 1, at + 29, at + 9))
    assert len(keys[1]) == 5  # draw, adjudicate, gossip, submit, resolve
    assert not keys[1] & keys[2]
    actions = voter_decide(job, VOTERS[0], 23, Verdict.WITHIN_TOLERANCE, 2, 2, 1)
    assert GossipVote(JOB, Verdict.WITHIN_TOLERANCE, 2) in actions
    assert challenger_decide(job, HONEST, 29, Assessment.DEVIATES) == [Resolve(JOB, 2)]
    leaf = voter_decide(job, VOTERS[1], 23, None, 0, 2, 1)
    assert leaf == [Adjudicate(JOB, 3, b"x" * 32, b"y" * 32, 2)]
    assert DrawCommittee(JOB, 22, 2).key != DrawCommittee(JOB, 22, 1).key


def test_challenger_decide_after_own_lost_vote_succeeds() -> None:
    """A challenger whose own dispute the committee decided for the prover does not challenge
    again (its deterministic game leads to the same leaf); after a no-decision, or another
    party's lost dispute, it does."""
    job = _ended(_committed(), HONEST, 1, Outcome.PROVER_WON, "vote")
    assert challenger_decide(job, HONEST, 30, Assessment.DEVIATES) == []
    assert challenger_decide(job, SYBIL, 30, Assessment.DEVIATES) == [Challenge(JOB, 2)]
    job = _ended(_committed(), HONEST, 1, Outcome.NO_QUORUM, "vote")
    assert challenger_decide(job, HONEST, 30, Assessment.DEVIATES) == [Challenge(JOB, 2)]
    job = _ended(_committed(), SYBIL, 1, Outcome.PROVER_WON, "vote")
    assert challenger_decide(job, HONEST, 30, Assessment.UNAVAILABLE) == [Challenge(JOB, 2)]


def test_apply_finalized_after_reopen_succeeds() -> None:
    job = _ended(_committed(), SYBIL, 1, Outcome.PROVER_WON, "vote")
    job = apply(job, ResultFinalized(JOB, 40))
    assert job.status is ResultStatus.FINALIZED
    assert prover_decide(job, PROVER, 50) == []


def test_apply_reopen_out_of_order_reverts() -> None:
    job = _committed()
    with pytest.raises(ProtocolError):
        apply(job, ResultReopened(JOB, 1, 40, 30))  # no dispute ended
    with pytest.raises(ProtocolError):
        apply(job, DisputeOpened(JOB, HONEST, 14, 10, 2))  # skips attempt 1
    job = apply(job, DisputeOpened(JOB, HONEST, 14, 10, 1))
    with pytest.raises(ProtocolError):
        apply(job, DisputeOpened(JOB, SYBIL, 14, 10, 2))  # one dispute at a time
    with pytest.raises(ProtocolError):
        apply(job, ResultReopened(JOB, 1, 40, 30))  # the dispute has not ended


def test_index_problem_refuses_foreign_indices_reverts() -> None:
    """Chain data that does not fit the local model is refused, not used as an index."""
    job = _committed()
    assert index_problem(job, N) is None
    assert index_problem(job, N + 1) == f"the result claims {N} ops, the local model has {N + 1}"
    job = apply(job, DisputeOpened(JOB, HONEST, 14, 10, 1))
    assert index_problem(job, N) is None
    assert job.dispute is not None
    beyond = dataclasses.replace(job, dispute=dataclasses.replace(job.dispute, b=N + 1))
    assert index_problem(beyond, N) is not None
    cuts = dataclasses.replace(
        job, dispute=dataclasses.replace(job.dispute, cuts=(0, 12), cut_digests=(b"", b""))
    )
    assert index_problem(cuts, N) is not None
    leaf = dataclasses.replace(job, dispute=dataclasses.replace(job.dispute, leaf_op=N))
    assert index_problem(leaf, N) is not None
