"""What each role should do next: pure functions of a job's view, the head block and the role's
own persisted facts. The role services execute the returned actions through the adapters;
each action carries an idempotency key, so asking again after a restart never doubles a
transaction (the sender journals by that key). A result can be disputed more than once (queued
challenges); every per-dispute key names the dispute's ``attempt``, so the second dispute's
transactions are never taken for the first's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eth_hash.auto import keccak

from taonode.protocol.dispute import JobView, Outcome, Phase, ResultStatus
from taonode.protocol.votes import Verdict


def _hex(job_id: bytes) -> str:
    return job_id.hex()


@dataclass(frozen=True)
class Finalize:
    job_id: bytes

    @property
    def key(self) -> str:
        return f"finalize:{_hex(self.job_id)}"


@dataclass(frozen=True)
class PostProverMove:
    job_id: bytes
    round: int
    a: int
    b: int
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"move:{_hex(self.job_id)}:{self.attempt}:{self.round}:p"


@dataclass(frozen=True)
class ChooseSubsegment:
    job_id: bytes
    round: int
    a: int
    b: int
    cuts: tuple[int, ...]
    cut_digests: tuple[bytes, ...]
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"move:{_hex(self.job_id)}:{self.attempt}:{self.round}:c"


@dataclass(frozen=True)
class Evaluate:
    """Challenger: decide whether to sample the result and, if so, re-execute it."""

    job_id: bytes

    @property
    def key(self) -> str:
        return f"evaluate:{_hex(self.job_id)}"


@dataclass(frozen=True)
class Challenge:
    job_id: bytes
    attempt: int = 1
    """The dispute this challenge opens (one more than the disputes opened so far)."""

    @property
    def key(self) -> str:
        return f"challenge:{_hex(self.job_id)}:{self.attempt}"


@dataclass(frozen=True)
class ClaimTimeout:
    job_id: bytes
    phase: Phase
    round: int
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"timeout:{_hex(self.job_id)}:{self.attempt}:{self.phase.value}:{self.round}"


@dataclass(frozen=True)
class DrawCommittee:
    job_id: bytes
    seed_block: int
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"draw:{_hex(self.job_id)}:{self.attempt}:{self.seed_block}"


@dataclass(frozen=True)
class Adjudicate:
    """Voter: fetch the leaf op's inputs and claimed output and judge them."""

    job_id: bytes
    op: int
    input_frontier: bytes
    output_frontier: bytes
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"adjudicate:{_hex(self.job_id)}:{self.attempt}"


@dataclass(frozen=True)
class GossipVote:
    job_id: bytes
    verdict: Verdict
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"gossip:{_hex(self.job_id)}:{self.attempt}"


@dataclass(frozen=True)
class SubmitVotes:
    """Voter: submit the collected EIP-712 votes not yet on chain in one transaction.

    Keyed by how many votes are on chain already, so a submission that lost a race (another
    member's landed first) is followed by one for the votes still missing.
    """

    job_id: bytes
    on_chain: int = 0
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"votes:{_hex(self.job_id)}:{self.attempt}:{self.on_chain}"


@dataclass(frozen=True)
class DirectVote:
    job_id: bytes
    verdict: Verdict
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"vote:{_hex(self.job_id)}:{self.attempt}"


@dataclass(frozen=True)
class Resolve:
    job_id: bytes
    attempt: int = 1

    @property
    def key(self) -> str:
        return f"resolve:{_hex(self.job_id)}:{self.attempt}"


Action = (
    Finalize
    | PostProverMove
    | ChooseSubsegment
    | Evaluate
    | Challenge
    | ClaimTimeout
    | DrawCommittee
    | Adjudicate
    | GossipVote
    | SubmitVotes
    | DirectVote
    | Resolve
)


class Assessment(enum.Enum):
    """A challenger's own finding about a result (persisted once made)."""

    NOT_SAMPLED = "not_sampled"
    WITHIN_TOLERANCE = "within_tolerance"
    DEVIATES = "deviates"
    UNAVAILABLE = "unavailable"
    """Input or output could not be fetched or did not match its digest."""


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


# Anyone may draw the committee or resolve the vote; the challenger does it first and the
# others only after a few blocks' grace, so one transaction does the job instead of a burst of
# identical ones that all but one revert (each costing gas and, on local chains, a block).
CHALLENGER_GRACE = 0
PROVER_GRACE = 2
VOTER_GRACE = 4


def _housekeeping(job: JobView, head: int, grace: int) -> list[Action]:
    """Steps anyone may take to move a dispute on: draw the committee, resolve the vote."""
    dispute = job.dispute
    if dispute is None:
        return []
    seed = dispute.seed_block
    if dispute.phase is Phase.AWAIT_DRAW and seed is not None and head > seed + grace:
        return [DrawCommittee(job.job_id, seed, dispute.attempt)]
    if dispute.phase is Phase.VOTING:
        everyone_voted = bool(dispute.committee) and len(dispute.votes) >= len(dispute.committee)
        if head > dispute.deadline + grace or (
            everyone_voted and head >= dispute.last_vote_block + grace
        ):
            return [Resolve(job.job_id, dispute.attempt)]
    return []


def prover_decide(job: JobView, me: str, head: int) -> list[Action]:
    """The prover of ``job`` (``me``) finalizes, moves before deadlines and claims timeouts."""
    if not _same(job.prover, me):
        return []
    if job.status is ResultStatus.PENDING:
        return [Finalize(job.job_id)] if head > job.window_end else []
    dispute = job.dispute
    if job.status is not ResultStatus.DISPUTED or dispute is None:
        return []
    if dispute.phase is Phase.PROVER_MOVE and head <= dispute.deadline:
        return [PostProverMove(job.job_id, dispute.round, dispute.a, dispute.b, dispute.attempt)]
    if dispute.phase is Phase.CHALLENGER_MOVE and head > dispute.deadline:
        return [ClaimTimeout(job.job_id, dispute.phase, dispute.round, dispute.attempt)]
    return _housekeeping(job, head, PROVER_GRACE)


def challenger_decide(
    job: JobView, me: str, head: int, assessment: Assessment | None
) -> list[Action]:
    """A challenger evaluates fresh results, challenges deviating ones and plays its disputes."""
    if _same(job.prover, me):
        return []
    if job.status is ResultStatus.PENDING:
        if head > job.window_end:
            return []
        if assessment is None:
            return [Evaluate(job.job_id)]
        if assessment in (Assessment.DEVIATES, Assessment.UNAVAILABLE):
            if lost_vote_on(job, me):
                # The committee already judged the leaf this challenger's (deterministic) game
                # leads to within tolerance: challenging again would only lose another bond,
                # and an honest prover would be held in disputes for nothing.
                return []
            # After a re-open this challenges again: another party's dispute ending (a sybil
            # timing out or losing on purpose) must not stop an honest challenger.
            return [Challenge(job.job_id, job.attempt + 1)]
        return []
    dispute = job.dispute
    if job.status is not ResultStatus.DISPUTED or dispute is None:
        return []
    if not _same(dispute.challenger, me):
        return []
    if dispute.phase is Phase.CHALLENGER_MOVE and head <= dispute.deadline:
        return [
            ChooseSubsegment(
                job.job_id,
                dispute.round,
                dispute.a,
                dispute.b,
                dispute.cuts,
                dispute.cut_digests,
                dispute.attempt,
            )
        ]
    if dispute.phase is Phase.PROVER_MOVE and head > dispute.deadline:
        return [ClaimTimeout(job.job_id, dispute.phase, dispute.round, dispute.attempt)]
    return _housekeeping(job, head, CHALLENGER_GRACE)


def voter_decide(
    job: JobView,
    me: str,
    head: int,
    verdict: Verdict | None,
    collected: int,
    quorum: int,
    direct_vote_margin: int,
) -> list[Action]:
    """A committee member judges the leaf, gossips its vote and makes sure it lands on chain.

    ``collected`` counts the valid member votes this node holds (its own included). With a
    quorum in hand it submits them all at once; when the deadline is ``direct_vote_margin``
    blocks away and its own vote is still not on chain, it votes directly.
    """
    dispute = job.dispute
    if job.status is not ResultStatus.DISPUTED or dispute is None:
        return []
    if dispute.phase is Phase.VOTING and any(_same(m, me) for m in dispute.committee):
        if head > dispute.deadline:
            return _housekeeping(job, head, VOTER_GRACE)
        if job.voted(me):
            return _housekeeping(job, head, VOTER_GRACE)
        if verdict is None:
            assert dispute.leaf_op is not None
            assert dispute.input_frontier is not None
            assert dispute.output_frontier is not None
            return [
                Adjudicate(
                    job.job_id,
                    dispute.leaf_op,
                    dispute.input_frontier,
                    dispute.output_frontier,
                    dispute.attempt,
                )
            ]
        if head >= dispute.deadline - direct_vote_margin:
            return [DirectVote(job.job_id, verdict, dispute.attempt)]
        actions: list[Action] = [GossipVote(job.job_id, verdict, dispute.attempt)]
        if collected >= quorum and collected > len(dispute.votes):
            actions.append(SubmitVotes(job.job_id, len(dispute.votes), dispute.attempt))
        return actions
    return _housekeeping(job, head, VOTER_GRACE)


def lost_vote_on(job: JobView, me: str) -> bool:
    """Whether ``me`` challenged ``job`` before and the committee decided for the prover."""
    return any(
        _same(d.challenger, me) and d.outcome is Outcome.PROVER_WON and d.reason == "vote"
        for d in job.history
    )


def index_problem(job: JobView, num_ops: int) -> str | None:
    """Why the indices a view took from chain data cannot be used with the local model of
    ``num_ops`` ops (None when they can).

    The coordinator takes N from the model's registration, but a node must not trust that its
    local model is the registered one: a view whose N differs, or whose segment, cuts or leaf
    lie outside the model, is refused by the roles instead of indexing the model with them
    (which raised IndexError on every retry: a challenger that could never move, and lost).
    """
    if job.num_ops != num_ops:
        return f"the result claims {job.num_ops} ops, the local model has {num_ops}"
    d = job.dispute
    if d is None:
        return None
    if not 0 <= d.a < d.b <= num_ops:
        return f"segment [{d.a}, {d.b}) outside [0, {num_ops}]"
    if any(not d.a < c < d.b for c in d.cuts) or len(d.cuts) != len(d.cut_digests):
        return f"cuts {d.cuts} do not lie inside [{d.a}, {d.b})"
    if d.leaf_op is not None and not 0 <= d.leaf_op < num_ops:
        return f"leaf op {d.leaf_op} outside [0, {num_ops})"
    return None


def should_sample(own_signature_over_job: bytes, sample_rate: float) -> bool:
    """Sampling the prover cannot predict: the challenger's deterministic signature over the
    job id (RFC 6979, so repeatable across restarts) is hashed into a uniform 256-bit draw."""
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError("sample_rate must lie in [0, 1]")
    draw = int.from_bytes(keccak(own_signature_over_job), "big")
    return draw < int(sample_rate * 2**256)
