"""The result and dispute lifecycle as a pure state machine over chain events.

The contracts are the source of truth; this module mirrors their state from the events they
emit, so every role decides from a local, persisted copy (``state × event → state``) and a
restarted node rebuilds the same view from the store. Block numbers are the only clock:
deadlines are inclusive (a move is valid while ``block <= deadline``) and ``timeout`` becomes
callable at ``block > deadline``, as in ``TaoCoordinator``.

Challenges are queued: a result has at most one open dispute, numbered by its ``attempt``
(1, 2, ...). A dispute that does not reject the result (the prover won the vote, the
challenger timed out, the committee reached no decision) is followed by ``ResultReopened``:
the result is PENDING again with a renewed window and no dispute; the ended dispute is kept in
``JobView.history``. Only ``ResultFinalized`` (a window that closed with no dispute) finalizes.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from taonode.protocol.schedule import cuts as schedule_cuts


class ResultStatus(enum.Enum):
    PENDING = "pending"
    DISPUTED = "disputed"
    FINALIZED = "finalized"
    REJECTED = "rejected"
    VOIDED = "voided"


class Phase(enum.Enum):
    PROVER_MOVE = "prover_move"
    CHALLENGER_MOVE = "challenger_move"
    AWAIT_DRAW = "await_draw"
    VOTING = "voting"
    RESOLVED = "resolved"


class Outcome(enum.Enum):
    PROVER_WON = "prover_won"
    CHALLENGER_WON = "challenger_won"
    NO_QUORUM = "no_quorum"


# --- events (decoded from the coordinator's logs by the chain adapter) -----------------------


@dataclass(frozen=True)
class ResultCommitted:
    job_id: bytes
    prover: str
    model_id: bytes
    profile_id: bytes
    input_digest: bytes
    output_digest: bytes
    trace_root: bytes
    num_ops: int
    window_end: int
    block: int


@dataclass(frozen=True)
class ResultFinalized:
    job_id: bytes
    block: int


@dataclass(frozen=True)
class ResultReopened:
    job_id: bytes
    attempt: int
    """The dispute that just ended without rejecting the result."""
    window_end: int
    block: int


@dataclass(frozen=True)
class DisputeOpened:
    job_id: bytes
    challenger: str
    deadline: int
    block: int
    attempt: int = 1


@dataclass(frozen=True)
class ProverMoved:
    job_id: bytes
    round: int
    a: int
    b: int
    cuts: tuple[int, ...]
    digests: tuple[bytes, ...]
    deadline: int
    block: int


@dataclass(frozen=True)
class ChallengerMoved:
    job_id: bytes
    round: int
    index: int
    a: int
    b: int
    deadline: int
    block: int


@dataclass(frozen=True)
class LeafReached:
    job_id: bytes
    op: int
    input_frontier: bytes
    output_frontier: bytes
    seed_block: int
    block: int


@dataclass(frozen=True)
class SeedReanchored:
    job_id: bytes
    seed_block: int
    block: int


@dataclass(frozen=True)
class CommitteeDrawn:
    job_id: bytes
    members: tuple[str, ...]
    vote_deadline: int
    block: int


@dataclass(frozen=True)
class VoteCast:
    job_id: bytes
    voter: str
    verdict: int
    block: int


@dataclass(frozen=True)
class DisputeResolved:
    job_id: bytes
    outcome: Outcome
    winner: str
    reason: str
    block: int


ChainEvent = (
    ResultCommitted
    | ResultFinalized
    | ResultReopened
    | DisputeOpened
    | ProverMoved
    | ChallengerMoved
    | LeafReached
    | SeedReanchored
    | CommitteeDrawn
    | VoteCast
    | DisputeResolved
)


# --- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisputeView:
    challenger: str
    phase: Phase
    a: int
    b: int
    round: int
    deadline: int
    cuts: tuple[int, ...] = ()
    """Interior cuts of ``[a, b)`` posted by the prover this round (ends excluded)."""
    cut_digests: tuple[bytes, ...] = ()
    ends_bound: bool = False
    digest_a: bytes | None = None
    """Frontier digest at ``a`` (the segment's inputs) once bound by the prover's first move."""
    digest_b: bytes | None = None
    leaf_op: int | None = None
    input_frontier: bytes | None = None
    output_frontier: bytes | None = None
    seed_block: int | None = None
    committee: tuple[str, ...] = ()
    votes: tuple[tuple[str, int], ...] = ()
    last_vote_block: int = 0
    outcome: Outcome | None = None
    winner: str | None = None
    reason: str | None = None
    attempt: int = 1
    """Which dispute of the result this is (votes sign ``dispute_id(job_id, attempt)``)."""


@dataclass(frozen=True)
class JobView:
    """Everything a node knows about one committed result, rebuilt purely from events."""

    job_id: bytes
    prover: str
    model_id: bytes
    profile_id: bytes
    input_digest: bytes
    output_digest: bytes
    trace_root: bytes
    num_ops: int
    window_end: int
    status: ResultStatus
    dispute: DisputeView | None = None
    attempt: int = 0
    """Disputes opened so far (the current or last one is number ``attempt``)."""
    history: tuple[DisputeView, ...] = ()
    """Disputes that ended and re-opened the result, oldest first."""

    def voted(self, voter: str) -> bool:
        return self.dispute is not None and any(
            v.lower() == voter.lower() for v, _ in self.dispute.votes
        )


class ProtocolError(ValueError):
    """An event that cannot follow the current state (a bug or a forked view)."""


def apply(job: JobView | None, event: ChainEvent) -> JobView:
    """The next view of a job after ``event``."""
    if isinstance(event, ResultCommitted):
        if job is not None:
            raise ProtocolError("result committed twice")
        return JobView(
            job_id=event.job_id,
            prover=event.prover,
            model_id=event.model_id,
            profile_id=event.profile_id,
            input_digest=event.input_digest,
            output_digest=event.output_digest,
            trace_root=event.trace_root,
            num_ops=event.num_ops,
            window_end=event.window_end,
            status=ResultStatus.PENDING,
        )
    if job is None:
        raise ProtocolError(f"{type(event).__name__} for an unknown job")
    if isinstance(event, ResultFinalized):
        return dataclasses.replace(job, status=ResultStatus.FINALIZED)
    if isinstance(event, ResultReopened):
        ended = job.dispute
        if ended is None or ended.phase is not Phase.RESOLVED or event.attempt != job.attempt:
            raise ProtocolError(f"result re-opened after attempt {event.attempt} out of order")
        return dataclasses.replace(
            job,
            status=ResultStatus.PENDING,
            window_end=event.window_end,
            dispute=None,
            history=(*job.history, ended),
        )
    if isinstance(event, DisputeOpened):
        if job.status is not ResultStatus.PENDING or event.attempt != job.attempt + 1:
            raise ProtocolError(f"dispute {event.attempt} opened on a {job.status.value} result")
        return dataclasses.replace(
            job,
            status=ResultStatus.DISPUTED,
            attempt=event.attempt,
            dispute=DisputeView(
                challenger=event.challenger,
                phase=Phase.PROVER_MOVE,
                a=0,
                b=job.num_ops,
                round=0,
                deadline=event.deadline,
                attempt=event.attempt,
            ),
        )
    dispute = job.dispute
    if dispute is None:
        raise ProtocolError(f"{type(event).__name__} without a dispute")
    if isinstance(event, ProverMoved):
        cuts, digests = event.cuts, event.digests
        digest_a, digest_b = dispute.digest_a, dispute.digest_b
        if not dispute.ends_bound:
            # The first move also binds the frontier digests at 0 and N (posted first).
            digest_a, digest_b = digests[0], digests[1]
            cuts, digests = cuts[2:], digests[2:]
        dispute = dataclasses.replace(
            dispute,
            phase=Phase.CHALLENGER_MOVE,
            a=event.a,
            b=event.b,
            round=event.round,
            cuts=tuple(cuts),
            cut_digests=tuple(digests),
            ends_bound=True,
            digest_a=digest_a,
            digest_b=digest_b,
            deadline=event.deadline,
        )
    elif isinstance(event, ChallengerMoved):
        digest_a, digest_b = dispute.digest_a, dispute.digest_b
        if event.index > 0:
            digest_a = dispute.cut_digests[event.index - 1]
        if event.index < len(dispute.cut_digests):
            digest_b = dispute.cut_digests[event.index]
        dispute = dataclasses.replace(
            dispute,
            phase=Phase.PROVER_MOVE,
            a=event.a,
            b=event.b,
            round=event.round + 1,
            cuts=(),
            cut_digests=(),
            digest_a=digest_a,
            digest_b=digest_b,
            deadline=event.deadline,
        )
    elif isinstance(event, LeafReached):
        dispute = dataclasses.replace(
            dispute,
            phase=Phase.AWAIT_DRAW,
            a=event.op,
            b=event.op + 1,
            leaf_op=event.op,
            digest_a=event.input_frontier,
            digest_b=event.output_frontier,
            input_frontier=event.input_frontier,
            output_frontier=event.output_frontier,
            seed_block=event.seed_block,
        )
    elif isinstance(event, SeedReanchored):
        dispute = dataclasses.replace(dispute, seed_block=event.seed_block)
    elif isinstance(event, CommitteeDrawn):
        dispute = dataclasses.replace(
            dispute, phase=Phase.VOTING, committee=event.members, deadline=event.vote_deadline
        )
    elif isinstance(event, VoteCast):
        dispute = dataclasses.replace(
            dispute,
            votes=(*dispute.votes, (event.voter, event.verdict)),
            last_vote_block=event.block,
        )
    elif isinstance(event, DisputeResolved):
        dispute = dataclasses.replace(
            dispute,
            phase=Phase.RESOLVED,
            outcome=event.outcome,
            winner=event.winner,
            reason=event.reason,
        )
        # Only a challenger win settles the result; any other end is followed (in the same
        # transaction) by ResultReopened, until then the result stays DISPUTED.
        if event.outcome is Outcome.CHALLENGER_WON:
            return dataclasses.replace(job, status=ResultStatus.REJECTED, dispute=dispute)
        return dataclasses.replace(job, dispute=dispute)
    return dataclasses.replace(job, dispute=dispute)


def expected_cuts(dispute: DisputeView, k: int) -> list[int]:
    """The cuts the prover posts this round, in the contract's order: the first move binds
    the ends (cut ``a = 0`` and cut ``b = N``) before the interior cuts."""
    interior = schedule_cuts(dispute.a, dispute.b, k) if dispute.b - dispute.a >= 2 else []
    return ([dispute.a, dispute.b] if not dispute.ends_bound else []) + interior
